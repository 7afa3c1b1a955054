//! The recorder: the gateway's tap, writing to the spool, sealing segments and
//! uploading them.
//!
//! ```text
//! record_request() ─┐ append to the buffer, then write() it (and fsync when
//!                   │ durability = "sync") before returning: the request is in
//!                   │ the spool file before the gateway forwards it
//! record() ─────────┤ append to the buffer only (never waits on I/O)
//!                   ▼
//!           writer thread: write() the buffer every few ms, fsync every
//!           fsync_interval_ms (group commit), rotate the log by size or age
//!                   ▼
//!           sealer thread: log -> Parquet files + signed manifest in
//!           <spool>/sealed/<segment>/, then the log is deleted
//!                   ▼
//!           uploader thread: sealed segments in order -> object store (data
//!           files first, the manifest last); deleted locally once confirmed
//! ```
//!
//! Both appends take the same buffer lock, so the spool holds events in the order
//! the gateway produced them, and a request's write also writes everything
//! appended before it: a killed gateway loses at most the tail of responses that
//! were still in memory, never a forwarded request, and never a frame in the
//! middle of a session.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use chaperone_schemas::event::{now_ns, Direction, TapEvent};
use chaperone_schemas::layout::{valid_gateway_id, Layout};
use chaperone_schemas::tap::{Tap, TapError};

use crate::config::{ArchiveConfig, Durability, FailureMode};
use crate::segment::{self, LogEnd, SegmentSettings, SessionTable};
use crate::spool::{self, CommandRecord, FrameRecord, Kind, OpenSession};
use crate::upload::{self, upload_loop, UploadState};
use chaperone_archive::chain;
use chaperone_archive::fsutil;
use chaperone_store::Store;

mod on_disk;
mod sealer;
mod writer;

pub(crate) use on_disk::sealed_segments;
use on_disk::{initial_chain, list_logs, load_signing_key};
use sealer::Sealer;
use writer::{create_log, writer_loop};

/// How often the writer thread writes the buffer out.
const FLUSH_INTERVAL: Duration = Duration::from_millis(2);
/// A buffer past this size is written by the appending thread itself.
const INLINE_WRITE_BYTES: usize = 8 << 20;
/// A buffer past this size (writes failing) drops frames, recording the gap.
const MAX_BUFFER_BYTES: usize = 256 << 20;

/// The recorder cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("archive spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive spool {0} is in use by another gateway process")]
    Locked(PathBuf),
    #[error("{0}")]
    Store(#[from] chaperone_store::StoreError),
    #[error("manifest signing key: {0}")]
    Key(String),
    #[error("recovering the spool: {0}")]
    Recovery(String),
}

/// Counters of the recorder, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub frames: AtomicU64,
    pub statements: AtomicU64,
    pub bytes_spooled: AtomicU64,
    pub segments_sealed: AtomicU64,
    pub segments_uploaded: AtomicU64,
    pub upload_failures: AtomicU64,
    pub upload_retries: AtomicU64,
    pub requests_refused: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub spool_bytes_lost: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// A point-in-time copy of [`Stats`] plus the spool's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub events: u64,
    pub frames: u64,
    pub statements: u64,
    pub bytes_spooled: u64,
    pub segments_sealed: u64,
    pub segments_uploaded: u64,
    pub upload_failures: u64,
    pub upload_retries: u64,
    pub requests_refused: u64,
    pub frames_dropped: u64,
    pub spool_bytes_lost: u64,
    pub fsyncs: u64,
    /// Bytes in the spool now (logs and sealed segments waiting for upload).
    pub spool_bytes: u64,
    /// Sealed segments waiting for upload.
    pub segments_pending: u64,
    /// Segments found impossible to upload since the start (moved aside to
    /// `sealed/<name>.broken`).
    pub segments_broken: u64,
}

/// Per-session capture accounting for the payload cap.
#[derive(Debug, Default)]
struct CaptureState {
    command_index: u64,
    captured: u64,
    capped: bool,
    dropped: u64,
}

/// Appended records not yet written, and the session state they imply.
pub(crate) struct Buffer {
    pub(crate) bytes: Vec<u8>,
    /// Logical offset (over the recorder's life) just past `bytes`.
    pub(crate) end: u64,
    /// Records appended to the current log.
    pub(crate) records_in_log: u64,
    pub(crate) sessions: SessionTable,
    capture: HashMap<String, CaptureState>,
    /// Open gaps of dropped frames (fail-open), per session.
    pub(crate) gaps: HashMap<String, crate::gap::OpenGap>,
}

/// The log file being appended to.
struct ActiveLog {
    file: File,
    /// A second handle on the same file, to fsync without holding the log lock.
    sync_handle: Arc<File>,
    path: PathBuf,
    opened: Instant,
    /// Bytes in the file.
    size: u64,
    /// A spare vector swapped with the buffer, to keep its capacity.
    spare: Vec<u8>,
    last_fsync: Instant,
    write_error: Option<String>,
}

struct SealJob {
    log: PathBuf,
    end: LogEnd,
}

pub(crate) struct Inner {
    pub(crate) config: ArchiveConfig,
    pub(crate) gateway_id: String,
    spool_dir: PathBuf,
    log_dir: PathBuf,
    pub(crate) sealed_dir: PathBuf,
    pub(crate) settings: SegmentSettings,
    pub(crate) store: Store,
    pub(crate) signing_key: ed25519_dalek::SigningKey,
    pub(crate) head: crate::head::HeadState,
    pub(crate) fail_open: crate::gap::FailOpenState,
    buffer: Mutex<Buffer>,
    log: Mutex<ActiveLog>,
    written: AtomicU64,
    synced: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) segments_pending: AtomicU64,
    /// The newest segment whose chain state (state.json) is saved. The
    /// uploader takes no segment past it: were one uploaded and removed
    /// before its state was saved, a gateway killed then would continue the
    /// chain from the older state and number a second segment the same.
    pub(crate) chain_saved: AtomicU64,
    pub(crate) stats: Stats,
    writer: OnceLock<Thread>,
    uploader: OnceLock<Thread>,
    seal_tx: Mutex<Option<mpsc::Sender<SealJob>>>,
    closing: AtomicBool,
    pub(crate) stop_uploads: AtomicBool,
    pub(crate) upload_error: Mutex<Option<(String, Instant)>>,
    pub(crate) upload: UploadState,
    _spool_lock: File,
}

/// The archive recorder. Create with [`Recorder::open`]; hand to the gateway as
/// its tap; call [`Recorder::shutdown`] when the gateway has stopped.
pub struct Recorder {
    inner: Arc<Inner>,
    threads: Mutex<Threads>,
}

#[derive(Default)]
struct Threads {
    writer: Option<JoinHandle<()>>,
    sealer: Option<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("gateway_id", &self.inner.gateway_id)
            .field("store", &self.inner.store.description)
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a recorder lock leaves consistent data (appends are
    // whole); keep recording rather than cascade the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_file_name() -> String {
    format!("{:020}.{}", now_ns().max(0), spool::LOG_EXTENSION)
}

impl Recorder {
    /// Opens the spool (recovering what a previous process left), the store and
    /// the manifest chain, and starts the writer, sealer and uploader threads.
    pub fn open(config: ArchiveConfig, gateway_id: &str) -> Result<Recorder, OpenError> {
        config.validate()?;
        if !valid_gateway_id(gateway_id) {
            return Err(OpenError::Recovery(format!(
                "gateway.id {gateway_id:?} cannot name archive objects: use letters, digits, '.', '_', '-'"
            )));
        }
        let spool_dir = config.spool_dir.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Spool { path, source }
        };
        let log_dir = spool_dir.join("log");
        let sealed_dir = spool_dir.join("sealed");
        std::fs::create_dir_all(&log_dir).map_err(io(&log_dir))?;
        std::fs::create_dir_all(&sealed_dir).map_err(io(&sealed_dir))?;
        let lock_path = spool_dir.join("LOCK");
        let spool_lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if spool_lock.try_lock().is_err() {
            return Err(OpenError::Locked(spool_dir));
        }
        let signing_key = load_signing_key(&config)?;
        let store = Store::open(&config.store, &config.store_options)?;
        let layout = Layout::new(&store.prefix);
        let settings = SegmentSettings {
            gateway_id: gateway_id.to_string(),
            layout: layout.clone(),
            zstd_level: config.zstd_level,
        };

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(&spool_dir))?;
        let chain = initial_chain(
            &spool_dir,
            &sealed_dir,
            &store,
            &layout,
            gateway_id,
            &runtime,
        )?;
        // The chain as it continues is on disk before any segment of it is
        // uploaded (see `Inner::chain_saved`): a newest sealed segment that
        // state.json did not know yet is written into it now.
        chain::save_local(&spool_dir, &chain).map_err(|source| OpenError::Spool {
            path: chain::state_path(&spool_dir),
            source,
        })?;

        let log_name = log_file_name();
        let log_path = log_dir.join(&log_name);
        let inner = Arc::new(Inner {
            gateway_id: gateway_id.to_string(),
            spool_dir: spool_dir.clone(),
            log_dir: log_dir.clone(),
            sealed_dir: sealed_dir.clone(),
            settings,
            store,
            signing_key,
            head: crate::head::HeadState::new(
                chain.last_segment,
                chain.last_manifest_sha256.clone(),
                sealed_segments(&sealed_dir).first().map(|(n, _)| *n),
            ),
            fail_open: Default::default(),
            buffer: Mutex::new(Buffer {
                bytes: Vec::with_capacity(1 << 20),
                end: 0,
                records_in_log: 0,
                sessions: SessionTable::new(),
                capture: HashMap::new(),
                gaps: HashMap::new(),
            }),
            // Placeholder until recovery is done; replaced below.
            log: Mutex::new(ActiveLog {
                sync_handle: Arc::new(File::open(&lock_path).map_err(io(&lock_path))?),
                file: File::open(&lock_path).map_err(io(&lock_path))?,
                path: PathBuf::new(),
                opened: Instant::now(),
                size: 0,
                spare: Vec::new(),
                last_fsync: Instant::now(),
                write_error: None,
            }),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            segments_pending: AtomicU64::new(0),
            chain_saved: AtomicU64::new(chain.last_segment),
            stats: Stats::default(),
            writer: OnceLock::new(),
            uploader: OnceLock::new(),
            seal_tx: Mutex::new(None),
            closing: AtomicBool::new(false),
            stop_uploads: AtomicBool::new(false),
            upload_error: Mutex::new(None),
            upload: UploadState::open(&sealed_dir),
            _spool_lock: spool_lock,
            config,
        });

        // Recover leftover logs, oldest first, before anything new is written.
        let mut sealer = Sealer {
            inner: inner.clone(),
            chain,
            read_buf: Vec::new(),
        };
        sealer.recover().map_err(OpenError::Recovery)?;
        crate::commit::remove_orphans(&log_dir);

        // The new log.
        let file = create_log(&log_path, &inner.gateway_id, &SessionTable::new())
            .map_err(io(&log_path))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        *lock(&inner.log) = ActiveLog {
            sync_handle: Arc::new(file.try_clone().map_err(io(&log_path))?),
            file,
            path: log_path,
            opened: Instant::now(),
            size,
            spare: Vec::with_capacity(1 << 20),
            last_fsync: Instant::now(),
            write_error: None,
        };
        inner.spool_bytes.store(
            fsutil::dir_size(&log_dir) + fsutil::dir_size(&sealed_dir),
            Ordering::Relaxed,
        );
        inner
            .segments_pending
            .store(sealed_segments(&sealed_dir).len() as u64, Ordering::Relaxed);

        let (seal_tx, seal_rx) = mpsc::channel::<SealJob>();
        *lock(&inner.seal_tx) = Some(seal_tx);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(|e| OpenError::Recovery(format!("cannot start a thread: {e}")))
        };
        let mut threads = Threads::default();
        let uploader = {
            let inner = inner.clone();
            spawn(
                "chaperone-upload",
                Box::new(move || upload_loop(inner, runtime)),
            )?
        };
        let _ = inner.uploader.set(uploader.thread().clone());
        threads.uploader = Some(uploader);
        threads.sealer = Some(spawn(
            "chaperone-seal",
            Box::new(move || sealer.run(seal_rx)),
        )?);
        let writer = {
            let inner = inner.clone();
            spawn("chaperone-spool", Box::new(move || writer_loop(inner)))?
        };
        let _ = inner.writer.set(writer.thread().clone());
        threads.writer = Some(writer);
        tracing::info!(
            store = %inner.store.description,
            spool = %spool_dir.display(),
            gateway = %inner.gateway_id,
            public_key = %hex::encode(inner.signing_key.verifying_key().as_bytes()),
            "archive recorder started"
        );
        Ok(Recorder {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// The public key that verifies this recorder's manifests (hex).
    pub fn public_key(&self) -> String {
        hex::encode(self.inner.signing_key.verifying_key().as_bytes())
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            events: get(&s.events),
            frames: get(&s.frames),
            statements: get(&s.statements),
            bytes_spooled: get(&s.bytes_spooled),
            segments_sealed: get(&s.segments_sealed),
            segments_uploaded: get(&s.segments_uploaded),
            upload_failures: get(&s.upload_failures),
            upload_retries: get(&s.upload_retries),
            requests_refused: get(&s.requests_refused),
            frames_dropped: get(&s.frames_dropped),
            spool_bytes_lost: get(&s.spool_bytes_lost),
            fsyncs: get(&s.fsyncs),
            spool_bytes: get(&self.inner.spool_bytes),
            segments_pending: get(&self.inner.segments_pending),
            segments_broken: get(&self.inner.upload.broken_total),
        }
    }

    /// Whether the archive keeps up, for the gateway's `/readyz`: an error
    /// when the oldest sealed segment has waited for upload longer than
    /// `upload_stuck_after_s`, or a segment could not be uploaded at all.
    pub fn health(&self) -> Result<(), String> {
        upload::health(&self.inner)
    }

    /// The recorder's metrics, for the gateway's `/metrics`
    /// (`chaperone_proxy::metrics::Metrics::register_collector`).
    pub fn metrics_collector(&self) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(crate::metrics::RecorderMetrics {
            inner: self.inner.clone(),
        })
    }

    /// Seals the current log now (if it holds anything), without waiting.
    pub fn rotate(&self) {
        let mut log = lock(&self.inner.log);
        if let Err(e) = self.inner.rotate(&mut log, LogEnd::Rotated) {
            tracing::error!(error = %e, "archive spool: cannot rotate the log");
        }
    }

    /// Waits until everything recorded so far is sealed and uploaded, or the
    /// timeout passes. Returns whether everything was uploaded.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.rotate();
        let deadline = Instant::now() + timeout;
        loop {
            let sealing = list_logs(&self.inner.log_dir).len() > 1;
            if !sealing && self.inner.segments_pending.load(Ordering::Acquire) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if let Some(t) = self.inner.uploader.get() {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops as a killed process would: what is buffered is not written and the
    /// current log is not sealed (the next [`Recorder::open`] recovers it). For
    /// crash tests.
    pub fn abandon(self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.stop_uploads.store(true, Ordering::SeqCst);
        lock(&self.inner.seal_tx).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in [threads.writer, threads.sealer, threads.uploader]
            .into_iter()
            .flatten()
        {
            t.thread().unpark();
            let _ = t.join();
        }
    }

    /// Stops recording: writes and seals everything (sessions still open are
    /// ended as `gateway_stopped`), then gives uploads up to `timeout`. What is
    /// not uploaded by then stays in the spool for the next start.
    pub fn shutdown(&self, timeout: Duration) {
        if self.inner.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut threads = std::mem::take(&mut *lock(&self.threads));
        if let Some(t) = self.inner.writer.get() {
            t.unpark();
        }
        if let Some(writer) = threads.writer.take() {
            let _ = writer.join();
        }
        {
            let mut log = lock(&self.inner.log);
            if let Err(e) = self.inner.rotate(&mut log, LogEnd::Interrupted) {
                tracing::error!(error = %e, "archive spool: cannot seal the last log; it will be recovered at the next start");
            }
        }
        // Closing the channel ends the sealer once it has sealed what it has.
        lock(&self.inner.seal_tx).take();
        if let Some(sealer) = threads.sealer.take() {
            let _ = sealer.join();
        }
        let deadline = Instant::now() + timeout;
        while self.inner.segments_pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    pending = self.inner.segments_pending.load(Ordering::Acquire),
                    "archive: stopping with segments not yet uploaded; they stay in the spool and are uploaded at the next start"
                );
                break;
            }
            if let Some(t) = self.inner.uploader.get() {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.inner.stop_uploads.store(true, Ordering::SeqCst);
        if let Some(t) = self.inner.uploader.get() {
            t.unpark();
        }
        if let Some(uploader) = threads.uploader.take() {
            let _ = uploader.join();
        }
        // The fresh log opened by the last rotation: nothing in it, remove it.
        let log = lock(&self.inner.log);
        if lock(&self.inner.buffer).records_in_log == 0 && log.path.exists() {
            let _ = std::fs::remove_file(&log.path);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.inner.closing.load(Ordering::SeqCst) {
            self.shutdown(Duration::from_secs(0));
        }
    }
}

impl Tap for Recorder {
    fn record_request(&self, event: TapEvent) -> Result<(), TapError> {
        let inner = &self.inner;
        // fail_open while full is handled (degraded) below; this is fail_closed.
        let full = inner.spool_full() && inner.config.on_spool_full == FailureMode::FailClosed;
        let end = {
            let mut b = lock(&inner.buffer);
            if inner.degraded() {
                inner.drop_or_append(&mut b, event);
                return Ok(());
            }
            // The request is appended even when it is refused below: the archive
            // then shows the refused request and the error the client got.
            inner.append(&mut b, event);
            b.end
        };
        if full {
            inner.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
            return Err(TapError(inner.full_message()));
        }
        match inner.ensure_written(end, inner.config.durability == Durability::Sync) {
            Ok(()) => Ok(()),
            Err(e) if inner.config.on_spool_full == FailureMode::FailOpen => {
                if let Some(suppressed) = inner.fail_open.write_log.allow() {
                    tracing::warn!(error = %e, suppressed, "archive spool write failed; command runs (fail_open)");
                }
                Ok(())
            }
            Err(e) => {
                inner.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                Err(TapError(format!(
                    "the archive spool cannot be written ({e}); check the disk of {}",
                    inner.spool_dir.display()
                )))
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        upload::health(&self.inner)
    }

    fn record(&self, event: TapEvent) {
        let inner = &self.inner;
        let degraded = inner.degraded();
        let wake = {
            let mut b = lock(&inner.buffer);
            if degraded || b.bytes.len() > MAX_BUFFER_BYTES {
                inner.drop_or_append(&mut b, event);
            } else {
                inner.append(&mut b, event);
            }
            // A failing disk is retried by the writer, not by every event.
            b.bytes.len() >= INLINE_WRITE_BYTES && !degraded
        };
        if wake {
            // The writer is behind: write here (the gateway's thread pays, the
            // buffer stays bounded).
            let end = lock(&inner.buffer).end;
            if let Err(e) = inner.ensure_written(end, false) {
                if let Some(suppressed) = inner.fail_open.write_log.allow() {
                    tracing::warn!(error = %e, suppressed, "archive spool write failed");
                }
            }
        }
    }
}

impl Inner {
    pub(crate) fn spool_full(&self) -> bool {
        self.spool_bytes.load(Ordering::Relaxed) >= self.config.spool_limit_bytes
    }

    fn full_message(&self) -> String {
        let error = lock(&self.upload_error)
            .as_ref()
            .map(|(e, since)| {
                format!(
                    "; uploads to {} failing for {}s: {e}",
                    self.store.description,
                    since.elapsed().as_secs()
                )
            })
            .unwrap_or_default();
        format!(
            "the archive spool is full ({} MiB waiting, limit {} MiB){error}",
            self.spool_bytes.load(Ordering::Relaxed) >> 20,
            self.config.spool_limit_bytes >> 20
        )
    }

    /// Appends an event to the buffer (with capture cap and session tracking).
    pub(crate) fn append(&self, b: &mut Buffer, event: TapEvent) {
        let before = b.bytes.len();
        match event {
            TapEvent::Frame(frame) => {
                if !b.gaps.is_empty() {
                    if let Some(gap) = b.gaps.remove(&*frame.session_id) {
                        self.append_gap(b, &frame.session_id, gap);
                    }
                }
                let (kept, capped) = self.capture(b, &frame.session_id, &frame);
                if let Some(s) = b.sessions.get_mut(&*frame.session_id) {
                    segment::track_frame(
                        s,
                        frame.seq,
                        frame.command_index,
                        frame.time_ns,
                        frame.direction,
                        &frame.payload,
                    );
                }
                spool::encode_frame(
                    &mut b.bytes,
                    &FrameRecord {
                        session_id: &frame.session_id,
                        seq: frame.seq,
                        command_index: frame.command_index,
                        time_ns: frame.time_ns,
                        direction: frame.direction,
                        payload_length: frame.payload.len() as u64,
                        capped,
                        payload: &frame.payload[..kept],
                    },
                );
                self.stats.frames.fetch_add(1, Ordering::Relaxed);
            }
            TapEvent::Command(mut summary) => {
                crate::gap::fill_sql(&mut summary, &b.sessions);
                let (capped, bytes_dropped) = match b.capture.get_mut(&summary.session_id) {
                    Some(c) if c.command_index == summary.command_index => {
                        let r = (c.capped, c.dropped);
                        *c = CaptureState {
                            command_index: summary.command_index + 1,
                            ..Default::default()
                        };
                        r
                    }
                    _ => (false, 0),
                };
                if let Some(s) = b.sessions.get_mut(&summary.session_id) {
                    segment::track_command(s, summary.command_index);
                }
                self.stats.statements.fetch_add(1, Ordering::Relaxed);
                spool::encode_command(
                    &mut b.bytes,
                    &CommandRecord {
                        summary: *summary,
                        capped,
                        bytes_dropped,
                    },
                );
            }
            TapEvent::SessionStart(start) => {
                spool::encode_json(&mut b.bytes, Kind::SessionStart, &*start);
                b.sessions.insert(
                    start.session_id.clone(),
                    OpenSession {
                        start: *start,
                        next_seq: 0,
                        next_command: 0,
                        pending: None,
                    },
                );
            }
            TapEvent::SessionEnd(end) => {
                if let Some(gap) = b.gaps.remove(&end.session_id) {
                    self.append_gap(b, &end.session_id, gap);
                }
                spool::encode_json(&mut b.bytes, Kind::SessionEnd, &*end);
                b.sessions.remove(&end.session_id);
                b.capture.remove(&end.session_id);
            }
        }
        let added = (b.bytes.len() - before) as u64;
        b.end += added;
        b.records_in_log += 1;
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_spooled.fetch_add(added, Ordering::Relaxed);
        self.spool_bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// How much of a frame's payload to keep under the per-statement cap.
    fn capture(
        &self,
        b: &mut Buffer,
        session_id: &str,
        frame: &chaperone_schemas::Frame,
    ) -> (usize, bool) {
        let len = frame.payload.len();
        let Some(cap) = self.config.payload_cap_bytes else {
            return (len, false);
        };
        // Requests are what ran: always kept whole.
        if frame.direction == Direction::ClientToServer {
            return (len, false);
        }
        let state = match b.capture.get_mut(session_id) {
            Some(s) => s,
            None => b.capture.entry(session_id.to_string()).or_default(),
        };
        if state.command_index != frame.command_index {
            *state = CaptureState {
                command_index: frame.command_index,
                ..Default::default()
            };
        }
        let allowed = cap.saturating_sub(state.captured).min(len as u64) as usize;
        state.captured += allowed as u64;
        if allowed < len {
            state.capped = true;
            state.dropped += (len - allowed) as u64;
            (allowed, true)
        } else {
            (len, false)
        }
    }
}

impl Inner {
    /// Spool log files, and sealed segment directories (for metrics).
    pub(crate) fn spool_files(&self) -> (usize, usize) {
        (
            list_logs(&self.log_dir).len(),
            sealed_segments(&self.sealed_dir).len(),
        )
    }

    /// When the oldest sealed segment still waiting for upload was sealed.
    pub(crate) fn oldest_pending_sealed_at(&self) -> Option<std::time::SystemTime> {
        let (_, dir) = sealed_segments(&self.sealed_dir).into_iter().next()?;
        std::fs::metadata(dir).and_then(|m| m.modified()).ok()
    }

    pub(crate) fn sub_spool(&self, bytes: u64) {
        let _ = self
            .spool_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(bytes))
            });
    }
}

pub(crate) const UPLOAD_LIST: &str = "upload.json";

/// What a sealed segment directory holds, for the uploader.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct UploadList {
    pub(crate) source_log: String,
    pub(crate) manifest_path: String,
    /// Local file name and object path, uploaded in this order.
    pub(crate) files: Vec<(String, String)>,
}
