//! The recorder's metrics on the gateway's `/metrics`: spool size, what was
//! recorded, sealing and uploads, fsyncs, and what fail-closed refused.
//!
//! Read from the recorder's counters at each scrape (a Prometheus collector),
//! so recording itself pays nothing for them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::recorder::Inner;

/// Register with `chaperone_proxy::metrics::Metrics::register_collector`
/// (see [`crate::Recorder::metrics_collector`]).
pub struct RecorderMetrics {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for RecorderMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecorderMetrics")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for RecorderMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let s = &inner.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (logs, sealed) = inner.spool_files();
        let pending = get(&inner.segments_pending);
        // Upload lag: how long the oldest sealed segment has waited for upload.
        let lag = inner
            .oldest_pending_sealed_at()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        gauge(
            &mut e,
            "archive_spool_bytes",
            "Bytes in the archive spool now: logs and sealed segments waiting for upload",
            get(&inner.spool_bytes) as f64,
        )?;
        gauge(
            &mut e,
            "archive_spool_limit_bytes",
            "The spool's configured limit (spool_limit_bytes); past it on_spool_full applies",
            inner.config.spool_limit_bytes as f64,
        )?;
        gauge(
            &mut e,
            "archive_spool_log_files",
            "Spool log files (the one being written and those waiting to be sealed)",
            logs as f64,
        )?;
        gauge(
            &mut e,
            "archive_spool_sealed_segments",
            "Sealed segments in the spool waiting for upload",
            (sealed as u64).max(pending) as f64,
        )?;
        gauge(
            &mut e,
            "archive_upload_lag_seconds",
            "Age of the oldest sealed segment not yet uploaded (0: none waiting)",
            lag,
        )?;
        gauge(
            &mut e,
            "archive_upload_stuck",
            "1 while /readyz fails for the archive: the oldest sealed segment waited longer than upload_stuck_after_s, or a segment could not be uploaded",
            if crate::upload::health(inner).is_err() { 1.0 } else { 0.0 },
        )?;
        gauge(
            &mut e,
            "archive_segments_broken",
            "Segments that cannot be uploaded, moved aside in the spool (sealed/*.broken) until an operator removes them",
            get(&inner.upload.broken_now) as f64,
        )?;
        counter(
            &mut e,
            "archive_segments_found_broken",
            "Segments found impossible to upload since the start (each is logged with upload_stuck)",
            get(&inner.upload.broken_total),
        )?;
        counter(
            &mut e,
            "archive_frames_recorded",
            "Frames (MySQL packets) written to the spool",
            get(&s.frames),
        )?;
        counter(
            &mut e,
            "archive_statements_recorded",
            "Command summaries (statements) written to the spool",
            get(&s.statements),
        )?;
        counter(
            &mut e,
            "archive_spooled_bytes",
            "Bytes appended to the spool",
            get(&s.bytes_spooled),
        )?;
        counter(
            &mut e,
            "archive_segments_sealed",
            "Spool logs sealed into Parquet segments",
            get(&s.segments_sealed),
        )?;
        counter(
            &mut e,
            "archive_segments_uploaded",
            "Sealed segments uploaded to the object store (then removed from the spool)",
            get(&s.segments_uploaded),
        )?;
        counter(
            &mut e,
            "archive_upload_failures",
            "Failed segment uploads (each is retried, in order, with backoff)",
            get(&s.upload_failures),
        )?;
        counter(
            &mut e,
            "archive_upload_retries",
            "Segment uploads attempted again after a failure",
            get(&s.upload_retries),
        )?;
        counter(
            &mut e,
            "archive_fsyncs",
            "fsync calls on spool logs (group commits, per-command syncs, rotations)",
            get(&s.fsyncs),
        )?;
        counter(
            &mut e,
            "archive_requests_refused",
            "Commands refused because they could not be recorded (fail_closed)",
            get(&s.requests_refused),
        )?;
        counter(
            &mut e,
            "archive_frames_dropped",
            "Frames not recorded while the spool was full (fail_open; the gaps are recorded)",
            get(&s.frames_dropped),
        )?;
        counter(
            &mut e,
            "archive_spool_bytes_lost",
            "Bytes of damaged (torn) spool logs that could not be recovered",
            get(&s.spool_bytes_lost),
        )?;
        Ok(())
    }
}
