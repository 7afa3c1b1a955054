//! The uploader: sealed segments, in order, from the spool to the object store.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fsutil;
use crate::recorder::{lock, sealed_segments, Inner, UploadList, UPLOAD_LIST};

/// Uploads sealed segments in order, forever (until shutdown).
pub(crate) fn upload_loop(inner: Arc<Inner>, runtime: tokio::runtime::Runtime) {
    let mut backoff = Duration::from_millis(100);
    let mut last_failed = false;
    loop {
        let next = sealed_segments(&inner.sealed_dir).into_iter().next();
        let Some((segment, dir)) = next else {
            if inner.stop_uploads.load(Ordering::SeqCst) {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(500));
            continue;
        };
        if last_failed {
            inner.stats.upload_retries.fetch_add(1, Ordering::Relaxed);
        }
        let result = runtime.block_on(upload_segment(&inner, &dir));
        last_failed = result.is_err();
        match result {
            Ok(()) => {
                let size = fsutil::dir_size(&dir);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::error!(error = %e, dir = %dir.display(), "archive: cannot remove an uploaded segment from the spool");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                inner.sub_spool(size);
                let _ =
                    inner
                        .segments_pending
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                            Some(v.saturating_sub(1))
                        });
                inner
                    .stats
                    .segments_uploaded
                    .fetch_add(1, Ordering::Relaxed);
                if let Some((_, since)) = lock(&inner.upload_error).take() {
                    tracing::info!(
                        segment,
                        down_for_s = since.elapsed().as_secs(),
                        "archive: object storage reachable again; uploading the queued segments in order"
                    );
                }
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
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
                if inner.stop_uploads.load(Ordering::SeqCst) {
                    // Shutdown gives up on a store that is down; the spool keeps it.
                    return;
                }
                std::thread::park_timeout(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn upload_segment(inner: &Inner, dir: &Path) -> Result<(), String> {
    let list: UploadList = serde_json::from_slice(
        &std::fs::read(dir.join(UPLOAD_LIST)).map_err(|e| format!("{}: {e}", dir.display()))?,
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    for (local, path) in &list.files {
        inner
            .store
            .upload_file(&dir.join(local), path)
            .await
            .map_err(|e| e.to_string())?;
    }
    // The manifest last: its presence says the segment is complete.
    inner
        .store
        .upload_file(&dir.join("manifest.json"), &list.manifest_path)
        .await
        .map_err(|e| e.to_string())
}
