//! The uploader: sealed segments, in order, from the spool to the object store.
//!
//! A segment's life cycle in `<spool>/sealed/`. Every step is idempotent and
//! the directory's name says which step it is at, so a process killed anywhere
//! resumes where it stopped instead of redoing (or wedging on) a half-done one:
//!
//! ```text
//! <name>.tmp/       being sealed; deleted at start (the log is sealed again)
//! <name>/           sealed: data files are uploaded first, the manifest last.
//!                   A segment whose manifest is already in the store (same
//!                   bytes) is done; a local data file that is gone but whose
//!                   object is in the store (same size and SHA-256) is done
//! <name>.uploaded/  the manifest is confirmed: renamed (atomic), then deleted;
//!                   a leftover is deleted at start
//! <name>.broken/    cannot be completed (a file gone locally and not in the
//!                   store): moved aside so later segments still upload, and
//!                   reported (error log, metrics, `/readyz`) until an operator
//!                   removes it. Its manifest never reaches the store, so
//!                   `chaperone verify` names the segment as missing.
//! ```
//!
//! Uploads stay strictly ordered (the chain is verified in order); only a
//! segment that can never be completed leaves the queue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chaperone_schemas::manifest::{sha256_hex, Manifest};

use crate::recorder::{lock, sealed_segments, Inner, UploadList, UPLOAD_LIST};
use chaperone_archive::fsutil;

/// Suffix of a segment directory whose upload is confirmed, being deleted.
pub(crate) const UPLOADED_SUFFIX: &str = ".uploaded";
/// Suffix of a segment directory that cannot be uploaded.
pub(crate) const BROKEN_SUFFIX: &str = ".broken";
/// Why a segment is broken, inside its `.broken` directory.
const BROKEN_REASON: &str = "BROKEN.txt";

/// The longest backoff between attempts while the store is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// ...and while the spool is full: commands are being refused (fail_closed) or
/// frames dropped (fail_open), so the store's return must be noticed quickly.
const MAX_BACKOFF_SPOOL_FULL: Duration = Duration::from_millis(500);

/// Why a segment was not uploaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// The store failed or did not answer in time: retried, in order.
    #[error("{0}")]
    Store(String),
    /// The segment can never be completed from what is left locally and in
    /// the store.
    #[error("{0}")]
    Broken(String),
}

/// Upload state that readiness and metrics read without touching the disk.
#[derive(Debug, Default)]
pub(crate) struct UploadState {
    /// When the oldest segment waiting for upload was sealed (Unix ms; 0: none).
    oldest_pending_ms: AtomicU64,
    /// Broken segment directories in the spool now.
    pub(crate) broken_now: AtomicU64,
    /// Segments found broken since the start.
    pub(crate) broken_total: AtomicU64,
    /// The "uploads stuck" error was logged for the current outage.
    stuck_logged: AtomicBool,
}

impl UploadState {
    pub(crate) fn open(sealed_dir: &Path) -> UploadState {
        let state = UploadState::default();
        state
            .broken_now
            .store(broken_segments(sealed_dir).len() as u64, Ordering::Relaxed);
        state
    }

    /// How long the oldest segment waiting for upload has waited.
    pub(crate) fn lag(&self) -> Duration {
        match self.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => Duration::from_millis(unix_ms().saturating_sub(ms)),
        }
    }
}

/// Whether the uploads keep up: an error names what is wrong. Reads atomics
/// only (called from the admin endpoint's async handler).
pub(crate) fn health(inner: &Inner) -> Result<(), String> {
    let broken = inner.upload.broken_now.load(Ordering::Relaxed);
    if broken > 0 {
        return Err(format!(
            "{broken} archive segment(s) could not be uploaded and were moved aside to {}/*{BROKEN_SUFFIX}; \
             `chaperone verify` names them; remove them once handled",
            inner.sealed_dir.display()
        ));
    }
    let lag = inner.upload.lag();
    if lag >= inner.config.upload_stuck_after() {
        return Err(format!(
            "archive uploads stuck: the oldest sealed segment has waited {}s (upload_stuck_after_s = {}){}",
            lag.as_secs(),
            inner.config.upload_stuck_after_s,
            lock(&inner.upload_error)
                .as_ref()
                .map(|(e, _)| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sealed_at_ms(dir: &Path) -> u64 {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| (d.as_millis() as u64).max(1))
        .unwrap_or_else(unix_ms)
}

/// `<sealed>/<name>.broken` directories.
pub(crate) fn broken_segments(sealed_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(sealed_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(BROKEN_SUFFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Deletes what a killed process left half-done in `sealed/`: half-sealed
/// (`.tmp`, sealed again from the log) and confirmed-uploaded (`.uploaded`).
pub(crate) fn remove_leftovers(sealed_dir: &Path) {
    let Ok(d) = std::fs::read_dir(sealed_dir) else {
        return;
    };
    for e in d.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") || name.ends_with(UPLOADED_SUFFIX) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "archive: cannot remove a leftover spool directory");
            }
        }
    }
}

/// `dir` with `suffix` appended to its name.
fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Uploads sealed segments in order, forever (until shutdown).
pub(crate) fn upload_loop(inner: Arc<Inner>, runtime: tokio::runtime::Runtime) {
    let mut backoff = Duration::from_millis(100);
    let mut last_failed = false;
    loop {
        // Only segments whose chain state is saved (`Inner::chain_saved`).
        let saved = inner.chain_saved.load(Ordering::Acquire);
        let next = sealed_segments(&inner.sealed_dir)
            .into_iter()
            .next()
            .filter(|(segment, _)| *segment <= saved);
        let Some((segment, dir)) = next else {
            inner.upload.oldest_pending_ms.store(0, Ordering::Relaxed);
            runtime.block_on(crate::head::when_idle(&inner));
            if inner.stop_uploads.load(Ordering::SeqCst) {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(500));
            continue;
        };
        inner
            .upload
            .oldest_pending_ms
            .store(sealed_at_ms(&dir), Ordering::Relaxed);
        if last_failed {
            inner.stats.upload_retries.fetch_add(1, Ordering::Relaxed);
        }
        let result = runtime.block_on(async {
            crate::head::before_upload(&inner).await;
            upload_segment(&inner, segment, &dir).await?;
            // The head follows every upload (before the segment leaves the
            // spool): verify then knows the chain reaches this far.
            let sha = std::fs::read(dir.join("manifest.json"))
                .ok()
                .map(|b| sha256_hex(&b));
            crate::head::after_upload(&inner, segment, sha)
                .await
                .map_err(UploadError::Store)
        });
        last_failed = matches!(result, Err(UploadError::Store(_)));
        match result {
            Ok(()) => {
                if let Err(e) = finish(&inner, &dir) {
                    tracing::error!(error = %e, dir = %dir.display(), "archive: cannot remove an uploaded segment from the spool; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                inner.upload.stuck_logged.store(false, Ordering::Relaxed);
                if let Some((_, since)) = lock(&inner.upload_error).take() {
                    tracing::info!(
                        segment,
                        down_for_s = since.elapsed().as_secs(),
                        "archive: object storage reachable again; uploading the queued segments in order"
                    );
                }
                backoff = Duration::from_millis(100);
            }
            Err(UploadError::Broken(reason)) => {
                if let Err(e) = set_aside(&inner, segment, &dir, &reason) {
                    tracing::error!(error = %e, dir = %dir.display(), "archive: cannot move a broken segment aside; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Err(UploadError::Store(e)) => {
                if !failed(&inner, segment, e, backoff) {
                    // Shutdown gives up on a store that is down; the spool keeps it.
                    return;
                }
                let cap = if inner.spool_full() {
                    MAX_BACKOFF_SPOOL_FULL
                } else {
                    MAX_BACKOFF
                };
                backoff = backoff.min(cap);
                std::thread::park_timeout(backoff);
                backoff = (backoff * 2).min(cap);
            }
        }
    }
}

/// Counts and reports a failed attempt; false when the uploader should stop.
fn failed(inner: &Inner, segment: u64, e: String, backoff: Duration) -> bool {
    inner.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
    let mut err = lock(&inner.upload_error);
    let first = err.is_none();
    let since = err.as_ref().map(|(_, s)| *s).unwrap_or_else(Instant::now);
    *err = Some((e.clone(), since));
    drop(err);
    if first || backoff >= Duration::from_secs(5) {
        tracing::warn!(
            segment,
            error = %e,
            spool_mib = inner.spool_bytes.load(Ordering::Relaxed) >> 20,
            limit_mib = inner.config.spool_limit_bytes >> 20,
            pending_segments = inner.segments_pending.load(Ordering::Relaxed),
            "archive: upload failed; segments stay in the spool and are retried in order"
        );
    }
    let lag = inner.upload.lag();
    if lag >= inner.config.upload_stuck_after()
        && !inner.upload.stuck_logged.swap(true, Ordering::Relaxed)
    {
        tracing::error!(
            segment,
            error = %e,
            waiting_s = lag.as_secs(),
            "archive: upload_stuck: the oldest sealed segment is not uploaded after upload_stuck_after_s; /readyz reports not ready"
        );
    }
    !inner.stop_uploads.load(Ordering::SeqCst)
}

/// Removes an uploaded segment from the spool: renamed first, atomically, to a
/// name the scanner skips, so that a kill during the deletion leaves nothing
/// that looks like a segment still to upload.
fn finish(inner: &Inner, dir: &Path) -> std::io::Result<()> {
    let size = fsutil::dir_size(dir);
    let done = with_suffix(dir, UPLOADED_SUFFIX);
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(dir, &done)?;
    fsutil::sync_dir(&inner.sealed_dir)?;
    // Counted as uploaded before it stops counting as pending: whoever waits
    // for nothing pending (`Recorder::flush`) then sees it uploaded.
    inner
        .stats
        .segments_uploaded
        .fetch_add(1, Ordering::Relaxed);
    count_out(inner, size);
    if let Err(e) = std::fs::remove_dir_all(&done) {
        // Not a segment any more: deleted at the next start.
        tracing::warn!(error = %e, dir = %done.display(), "archive: cannot delete an uploaded segment's directory");
    }
    Ok(())
}

/// The segment no longer waits for upload (nor takes spool space that counts
/// towards the limit).
fn count_out(inner: &Inner, size: u64) {
    inner.sub_spool(size);
    let _ = inner
        .segments_pending
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(v.saturating_sub(1))
        });
}

/// Moves a segment that cannot be completed aside, with the reason beside it.
fn set_aside(inner: &Inner, segment: u64, dir: &Path, reason: &str) -> std::io::Result<()> {
    let size = fsutil::dir_size(dir);
    let broken = with_suffix(dir, BROKEN_SUFFIX);
    let text = format!(
        "segment {segment} of gateway {} cannot be uploaded: {reason}\n",
        inner.gateway_id
    );
    // Best effort: the directory's name already says it is broken.
    let _ = fsutil::write_durably(&dir.join(BROKEN_REASON), text.as_bytes());
    std::fs::rename(dir, &broken)?;
    fsutil::sync_dir(&inner.sealed_dir)?;
    count_out(inner, size);
    inner.upload.broken_now.fetch_add(1, Ordering::Relaxed);
    inner.upload.broken_total.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        segment,
        reason,
        moved_to = %broken.display(),
        "archive: upload_stuck: segment cannot be uploaded; moved aside so later segments upload (the archive misses it: `chaperone verify` reports its manifest missing)"
    );
    Ok(())
}

/// Runs one store call under the configured per-object timeout.
async fn timed<T>(
    inner: &Inner,
    what: &str,
    call: impl std::future::Future<Output = Result<T, chaperone_store::StoreError>>,
) -> Result<T, UploadError> {
    let limit = inner.config.upload_timeout();
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| UploadError::Store(format!("{what}: {e}"))),
        Err(_) => Err(UploadError::Store(format!(
            "{what}: no answer from the store within {}s (upload_timeout_s)",
            limit.as_secs()
        ))),
    }
}

/// Uploads one sealed segment: data files, then the manifest. Safe to run
/// again on a segment that was (partly) uploaded before.
async fn upload_segment(inner: &Inner, segment: u64, dir: &Path) -> Result<(), UploadError> {
    let manifest_path = inner.settings.layout.manifest(&inner.gateway_id, segment);
    let local_manifest = std::fs::read(dir.join("manifest.json")).ok();
    let stored = timed(
        inner,
        &manifest_path,
        inner.store.get_if_exists(&manifest_path),
    )
    .await?;
    if let Some(stored) = stored {
        // The manifest goes last: in the store, the segment is complete.
        return match local_manifest {
            Some(local) if local != stored => Err(UploadError::Broken(format!(
                "the store already holds a different manifest at {manifest_path}"
            ))),
            _ => Ok(()),
        };
    }
    let broken = |what: String| UploadError::Broken(format!("{}: {what}", dir.display()));
    let local_manifest = local_manifest.ok_or_else(|| {
        broken("manifest.json is missing and the store has no manifest for it".into())
    })?;
    let manifest = Manifest::parse(&local_manifest)
        .map_err(|e| broken(format!("manifest.json unreadable: {e}")))?;
    let list: UploadList = std::fs::read(dir.join(UPLOAD_LIST))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| broken(format!("{UPLOAD_LIST}: {e}")))?;
    let mut lost = Vec::new();
    for (local, path) in &list.files {
        let file = dir.join(local);
        match std::fs::read(&file) {
            Ok(data) => timed(inner, path, inner.store.put(path, Bytes::from(data))).await?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !already_stored(inner, &manifest, path).await? {
                    lost.push(local.clone());
                }
            }
            Err(e) => return Err(UploadError::Store(format!("{}: {e}", file.display()))),
        }
    }
    if !lost.is_empty() {
        return Err(broken(format!(
            "{} missing locally and not (intact) in the store",
            lost.join(", ")
        )));
    }
    // The manifest last: its presence says the segment is complete.
    timed(
        inner,
        &manifest_path,
        inner.store.put(&manifest_path, Bytes::from(local_manifest)),
    )
    .await
}

/// Whether the store already holds `path` as the manifest lists it (size and
/// SHA-256): a data file uploaded before its local copy was lost.
async fn already_stored(
    inner: &Inner,
    manifest: &Manifest,
    path: &str,
) -> Result<bool, UploadError> {
    let Some(listed) = manifest.files.iter().find(|f| f.path == path) else {
        return Ok(false);
    };
    let Some(stored) = timed(inner, path, inner.store.get_if_exists(path)).await? else {
        return Ok(false);
    };
    Ok(stored.len() as u64 == listed.bytes && sha256_hex(&stored) == listed.sha256)
}
