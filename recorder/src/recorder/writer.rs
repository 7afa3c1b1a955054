//! The writer thread: writes the buffer out every few ms, fsyncs at group
//! commit, rotates the log by size or age (handing the old one to the
//! sealer), and what `record_request` waits on (`ensure_written`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaperone_archive::fsutil;
use chaperone_schemas::event::now_ns;

use super::{lock, log_file_name, ActiveLog, Inner, SealJob, FLUSH_INTERVAL};
use crate::config::Durability;
use crate::segment::{self, LogEnd, SessionTable};
use crate::spool::{self, LogHeader};

impl Inner {
    /// Makes sure everything up to logical offset `end` is written (and fsync'd
    /// with `sync`).
    pub(super) fn ensure_written(&self, end: u64, sync: bool) -> std::io::Result<()> {
        let done = |inner: &Inner| {
            inner.written.load(Ordering::Acquire) >= end
                && (!sync || inner.synced.load(Ordering::Acquire) >= end)
        };
        if done(self) {
            return Ok(());
        }
        let mut log = lock(&self.log);
        if self.written.load(Ordering::Acquire) < end {
            self.write_out(&mut log)?;
        }
        if sync && self.synced.load(Ordering::Acquire) < end {
            let (handle, written) = (
                log.sync_handle.clone(),
                self.written.load(Ordering::Acquire),
            );
            // Others keep appending and writing while this waits on the disk.
            drop(log);
            self.fsync(&handle, written)?;
        }
        Ok(())
    }

    /// Writes the buffer to the log file. On failure the file is cut back to its
    /// last whole record and the bytes stay buffered for the next try.
    pub(super) fn write_out(&self, log: &mut ActiveLog) -> std::io::Result<()> {
        let (mut bytes, end) = {
            let mut b = lock(&self.buffer);
            let spare = std::mem::take(&mut log.spare);
            (std::mem::replace(&mut b.bytes, spare), b.end)
        };
        if bytes.is_empty() {
            log.spare = bytes;
            return Ok(());
        }
        match log.file.write_all(&bytes) {
            Ok(()) => {
                log.size += bytes.len() as u64;
                log.write_error = None;
                self.fail_open.write_result(true);
                bytes.clear();
                log.spare = bytes;
                self.written.store(end, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = log.file.set_len(log.size);
                let _ = std::io::Seek::seek(&mut log.file, std::io::SeekFrom::Start(log.size));
                let mut b = lock(&self.buffer);
                bytes.extend_from_slice(&b.bytes);
                b.bytes = bytes;
                if log.write_error.is_none() {
                    tracing::error!(error = %e, log = %log.path.display(), "archive spool write failed; retrying");
                }
                log.write_error = Some(e.to_string());
                self.fail_open.write_result(false);
                Err(e)
            }
        }
    }

    /// Fsyncs the log through `handle`; everything up to `written` is then durable.
    pub(super) fn fsync(&self, handle: &File, written: u64) -> std::io::Result<()> {
        handle.sync_data()?;
        self.synced.fetch_max(written, Ordering::AcqRel);
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the current log (written and fsync'd), opens a new one with a
    /// checkpoint of the open sessions, and hands the old one to the sealer.
    pub(super) fn rotate(&self, log: &mut ActiveLog, end: LogEnd) -> std::io::Result<()> {
        self.write_out(log)?;
        let (checkpoint_sessions, had_records) = {
            let mut b = lock(&self.buffer);
            // The log being closed declares what it misses.
            self.close_gaps(&mut b);
            // Anything appended since write_out above.
            if !b.bytes.is_empty() {
                log.file.write_all(&b.bytes)?;
                log.size += b.bytes.len() as u64;
                b.bytes.clear();
                self.written.store(b.end, Ordering::Release);
            }
            let had = b.records_in_log > 0;
            if !had && end == LogEnd::Rotated {
                return Ok(());
            }
            b.records_in_log = 0;
            // While the buffer is locked nothing is appended: the checkpoint is
            // exactly the state at the end of the old log.
            let sessions = if end == LogEnd::Interrupted {
                SessionTable::new()
            } else {
                b.sessions.clone()
            };
            (sessions, had)
        };
        // Outside the buffer lock: the gateway keeps appending while the disk
        // works (the log lock, held, keeps those appends out of the old file).
        log.file.sync_all()?;
        crate::commit::mark(
            &log.path,
            log.size,
            self.config.durability == Durability::Sync,
        )?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.synced
            .store(self.written.load(Ordering::Acquire), Ordering::Release);
        let path = self.log_dir.join(log_file_name());
        let file = create_log(&path, &self.gateway_id, &checkpoint_sessions)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.spool_bytes.fetch_add(size, Ordering::Relaxed);
        let spare = std::mem::take(&mut log.spare);
        let sync_handle = Arc::new(file.try_clone()?);
        let old = std::mem::replace(
            log,
            ActiveLog {
                sync_handle,
                file,
                path,
                opened: Instant::now(),
                size,
                spare,
                last_fsync: Instant::now(),
                write_error: None,
            },
        );
        let open_sessions = !lock(&self.buffer).sessions.is_empty();
        if had_records || (end == LogEnd::Interrupted && open_sessions) {
            let job = SealJob {
                log: old.path.clone(),
                end,
            };
            match lock(&self.seal_tx).as_ref() {
                Some(tx) => {
                    let _ = tx.send(job);
                }
                None => {
                    tracing::warn!(log = %old.path.display(), "archive: sealer stopped; log left for recovery at the next start");
                }
            }
        } else {
            let size = old.size;
            drop(old.file);
            if std::fs::remove_file(&old.path).is_ok() {
                self.spool_bytes.fetch_sub(
                    size.min(self.spool_bytes.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
        if end == LogEnd::Interrupted {
            // Sessions cut by the stop are ended in the sealed segment.
            lock(&self.buffer).sessions.clear();
        }
        Ok(())
    }
}

pub(super) fn create_log(
    path: &Path,
    gateway_id: &str,
    sessions: &SessionTable,
) -> std::io::Result<File> {
    let mut file = File::options().create_new(true).append(true).open(path)?;
    let preamble = spool::log_preamble(
        &LogHeader {
            gateway_id: gateway_id.to_string(),
            created_at_ns: now_ns(),
        },
        &segment::checkpoint_of(sessions),
    );
    file.write_all(&preamble)?;
    file.sync_all()?;
    // A watermark from the start: a host crash before the first group commit
    // is then still told apart from a process crash (crate::commit).
    crate::commit::mark(path, preamble.len() as u64, false)?;
    if let Some(dir) = path.parent() {
        fsutil::sync_dir(dir)?;
    }
    Ok(file)
}

pub(super) fn writer_loop(inner: Arc<Inner>) {
    let fsync_every = inner.config.fsync_interval();
    let max_age = inner.config.segment_max_age();
    let max_bytes = inner.config.segment_max_bytes;
    let mut last_error_log = Instant::now() - Duration::from_secs(60);
    let sync_mode = inner.config.durability == Durability::Sync;
    let mut marked: Option<(PathBuf, u64)> = None;
    while !inner.closing.load(Ordering::SeqCst) {
        std::thread::park_timeout(FLUSH_INTERVAL);
        let mut log = lock(&inner.log);
        if inner.closing.load(Ordering::SeqCst) {
            break;
        }
        let result = (|| {
            inner.write_out(&mut log)?;
            let mut group_commit = None;
            // Also when `sync` fsync'd everything already: the commit watermark
            // (crate::commit) must follow.
            let unmarked = marked.as_ref() != Some(&(log.path.clone(), log.size));
            if (inner.synced.load(Ordering::Acquire) < inner.written.load(Ordering::Acquire)
                || unmarked)
                && log.last_fsync.elapsed() >= fsync_every
                && !inner.closing.load(Ordering::SeqCst)
            {
                log.last_fsync = Instant::now();
                group_commit = Some((
                    log.sync_handle.clone(),
                    inner.written.load(Ordering::Acquire),
                    (log.path.clone(), log.size),
                ));
            }
            let rotate_soon = inner.fail_open.rotate_soon.swap(false, Ordering::AcqRel);
            if log.size >= max_bytes || log.opened.elapsed() >= max_age || rotate_soon {
                inner.rotate(&mut log, LogEnd::Rotated)?;
                log.opened = Instant::now();
            }
            // The group commit runs without the log lock: requests keep being
            // written (not waiting for the disk) while it runs.
            drop(log);
            if let Some((handle, written, (path, size))) = group_commit {
                inner.fsync(&handle, written)?;
                crate::commit::mark(&path, size, sync_mode)?;
                marked = Some((path, size));
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = result {
            if last_error_log.elapsed() > Duration::from_secs(5) {
                tracing::error!(error = %e, "archive spool: write/rotate failed; retrying");
                last_error_log = Instant::now();
            }
        }
    }
}
