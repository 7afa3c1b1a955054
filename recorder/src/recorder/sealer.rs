//! The sealer thread: each rotated log becomes a segment (zstd Parquet files
//! and a signed manifest continuing the chain) in `<spool>/sealed/`, then the
//! log is deleted; at start, logs left by a killed gateway are sealed first.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use chaperone_archive::chain::{self, ChainState};
use chaperone_archive::fsutil;

use super::on_disk::{file_name, list_logs, sealed_sources, segment_dir_name};
use super::{Inner, SealJob, UploadList, UPLOAD_LIST};
use crate::segment::{self, LogEnd, SessionTable};
/// Seals logs in order, owning the manifest chain.
pub(super) struct Sealer {
    pub(super) inner: Arc<Inner>,
    pub(super) chain: ChainState,
    /// The log being sealed, read into memory; kept between seals.
    pub(super) read_buf: Vec<u8>,
}

impl Sealer {
    pub(super) fn run(mut self, jobs: mpsc::Receiver<SealJob>) {
        while let Ok(job) = jobs.recv() {
            let mut delay = Duration::from_millis(200);
            loop {
                match self.seal(&job.log, None, job.end) {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::error!(log = %job.log.display(), error = %e, "archive: sealing failed; retrying");
                        if self.inner.closing.load(Ordering::SeqCst)
                            && delay > Duration::from_secs(2)
                        {
                            tracing::error!(log = %job.log.display(), "archive: giving up sealing before stop; the log stays in the spool");
                            break;
                        }
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }

    /// Seals the logs a previous process left, oldest first; the newest is the
    /// one that was being written when it stopped.
    pub(super) fn recover(&mut self) -> Result<(), String> {
        let logs = list_logs(&self.inner.log_dir);
        if logs.is_empty() {
            return Ok(());
        }
        // Logs already sealed (a crash between sealing and deleting the log).
        let sealed_sources = sealed_sources(&self.inner.sealed_dir);
        let mut carried: Option<SessionTable> = None;
        let n = logs.len();
        for (i, log) in logs.into_iter().enumerate() {
            let name = file_name(&log);
            if sealed_sources.contains(&name)
                || self.chain.last_source_log.as_deref() == Some(name.as_str())
            {
                tracing::info!(log = %name, "archive: spool log already sealed; removing it");
                let _ = std::fs::remove_file(&log);
                carried = None;
                continue;
            }
            let end = if i + 1 == n {
                LogEnd::Interrupted
            } else {
                LogEnd::Rotated
            };
            tracing::info!(log = %name, "archive: recovering spool log left by a previous run");
            carried = self
                .seal(&log, carried.take(), end)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// Seals one log; returns the sessions open at its end.
    pub(super) fn seal(
        &mut self,
        log: &Path,
        carried: Option<SessionTable>,
        end: LogEnd,
    ) -> Result<Option<SessionTable>, String> {
        let inner = &self.inner;
        let segment = self.chain.last_segment + 1;
        let name = file_name(log);
        let tmp = inner
            .sealed_dir
            .join(format!("{}.tmp", segment_dir_name(segment)));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut sealed = segment::seal_log(
            log,
            carried,
            end,
            &inner.settings,
            segment,
            self.chain.previous(),
            &tmp,
            &mut self.read_buf,
        )
        .map_err(|e| e.to_string())?;
        let lost: u64 = sealed
            .manifest
            .spool_losses
            .iter()
            .map(|l| l.bytes_lost)
            .sum();
        inner
            .stats
            .spool_bytes_lost
            .fetch_add(lost, Ordering::Relaxed);
        if sealed.files.is_empty()
            && sealed.manifest.spool_losses.is_empty()
            && sealed.manifest.gaps.is_empty()
        {
            // Nothing to archive (e.g. only a checkpoint).
            let _ = std::fs::remove_dir_all(&tmp);
            let size = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(log).map_err(|e| e.to_string())?;
            self.inner.sub_spool(size);
            return Ok(Some(sealed.open_sessions));
        }
        let manifest_bytes = sealed.manifest.sign(&inner.signing_key);
        let io = |e: std::io::Error| e.to_string();
        fsutil::write_durably(&tmp.join("manifest.json"), &manifest_bytes).map_err(io)?;
        let upload = UploadList {
            source_log: name.clone(),
            manifest_path: inner.settings.layout.manifest(&inner.gateway_id, segment),
            files: sealed
                .files
                .iter()
                .map(|(local, path)| (file_name(local), path.clone()))
                .collect(),
        };
        fsutil::write_durably(
            &tmp.join(UPLOAD_LIST),
            &serde_json::to_vec_pretty(&upload).expect("serializes"),
        )
        .map_err(io)?;
        fsutil::sync_dir(&tmp).map_err(io)?;
        let dir = inner.sealed_dir.join(segment_dir_name(segment));
        // Counted before it is visible to the uploader, which counts it down.
        inner.segments_pending.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            inner.segments_pending.fetch_sub(1, Ordering::AcqRel);
            return Err(e.to_string());
        }
        fsutil::sync_dir(&inner.sealed_dir).map_err(io)?;
        self.chain.advance(segment, &manifest_bytes, &name);
        inner.head.sealed(segment);
        chain::save_local(&inner.spool_dir, &self.chain).map_err(io)?;
        inner.chain_saved.store(segment, Ordering::Release);
        let log_size = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(log).map_err(io)?;
        crate::commit::remove_orphans(&inner.log_dir);
        let _ = fsutil::sync_dir(&inner.log_dir);
        inner
            .spool_bytes
            .fetch_add(fsutil::dir_size(&dir), Ordering::Relaxed);
        inner.sub_spool(log_size);
        inner.stats.segments_sealed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            segment,
            files = sealed.files.len(),
            rows = ?sealed.rows,
            "archive: segment sealed"
        );
        if let Some(t) = inner.uploader.get() {
            t.unpark();
        }
        Ok(Some(std::mem::take(&mut sealed.open_sessions)))
    }
}
