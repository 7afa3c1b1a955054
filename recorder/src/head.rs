//! Publishing the gateway's head (`chaperone_schemas::head`): after every
//! upload, and once at start, so that `verify` knows how far the archive of
//! this gateway should reach and which sealed segments are still to come.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaperone_schemas::head::{Head, HEAD_FORMAT};

use crate::recorder::{lock, Inner};

/// How often an idle uploader retries a head the store refused.
const IDLE_RETRY: Duration = Duration::from_secs(5);

/// What the head says, kept current by the sealer and the uploader.
#[derive(Debug, Default)]
pub(crate) struct HeadState {
    sealed: AtomicU64,
    uploaded: AtomicU64,
    uploaded_sha: Mutex<Option<String>>,
    published: Mutex<Published>,
}

/// (sealed, uploaded) as last published, and when an idle attempt last ran.
type Published = (Option<(u64, u64)>, Option<Instant>);

impl HeadState {
    /// `sealed`: the chain's last segment; `pending_first`: the oldest sealed
    /// segment still waiting for upload.
    /// `sealed_sha`: the hash of that segment's manifest.
    pub(crate) fn new(
        sealed: u64,
        sealed_sha: Option<String>,
        pending_first: Option<u64>,
    ) -> HeadState {
        let state = HeadState::default();
        state.sealed.store(sealed, Ordering::Relaxed);
        let uploaded = pending_first.map(|p| p.saturating_sub(1)).unwrap_or(sealed);
        state.uploaded.store(uploaded, Ordering::Relaxed);
        if pending_first.is_none() {
            *lock(&state.uploaded_sha) = sealed_sha;
        }
        state
    }

    /// The sealer sealed `segment`.
    pub(crate) fn sealed(&self, segment: u64) {
        self.sealed.fetch_max(segment, Ordering::AcqRel);
    }

    fn current(&self) -> (u64, u64) {
        (
            self.sealed.load(Ordering::Acquire),
            self.uploaded.load(Ordering::Acquire),
        )
    }
}

/// Publishes the head after `segment` (whose stored manifest hashes to
/// `manifest_sha`) was uploaded. An error is a store error: the segment's
/// upload is retried (it is idempotent) until its head is out too.
pub(crate) async fn after_upload(
    inner: &Inner,
    segment: u64,
    manifest_sha: Option<String>,
) -> Result<(), String> {
    inner.head.uploaded.fetch_max(segment, Ordering::AcqRel);
    // None (the local manifest was gone): verify then skips the hash check.
    *lock(&inner.head.uploaded_sha) = manifest_sha;
    publish(inner).await
}

/// Before uploading: a head that says what was sealed since the last one, so
/// that a segment that never makes it to the store (the spool's disk lost, the
/// gateway gone for good) is named by `verify`. Best effort: the upload that
/// follows reports a store that fails.
pub(crate) async fn before_upload(inner: &Inner) {
    let current = inner.head.current();
    let published = lock(&inner.head.published).0;
    if published.is_none_or(|(sealed, _)| sealed < current.0) {
        let _ = publish(inner).await;
    }
}

/// Publishes the head when it changed since the last time (start, or a seal
/// while idle); failures are retried every few seconds.
pub(crate) async fn when_idle(inner: &Inner) {
    let current = inner.head.current();
    {
        let mut p = lock(&inner.head.published);
        if p.0 == Some(current) || p.1.is_some_and(|t| t.elapsed() < IDLE_RETRY) {
            return;
        }
        p.1 = Some(Instant::now());
    }
    if let Err(e) = publish(inner).await {
        tracing::warn!(error = %e, "archive: cannot publish the gateway's head; retrying");
    }
}

async fn publish(inner: &Inner) -> Result<(), String> {
    let (sealed, uploaded) = inner.head.current();
    let mut head = Head {
        format: HEAD_FORMAT.to_string(),
        format_version: chaperone_schemas::FORMAT_VERSION.to_string(),
        gateway_id: inner.gateway_id.clone(),
        last_sealed_segment: sealed,
        last_uploaded_segment: uploaded,
        last_uploaded_manifest_sha256: lock(&inner.head.uploaded_sha).clone(),
        statements_recorded: inner.stats.statements.load(Ordering::Relaxed),
        updated_at_ns: chaperone_schemas::event::now_ns(),
        signature: None,
    };
    let bytes = head.sign(&inner.signing_key);
    let path = inner.settings.layout.head(&inner.gateway_id);
    let limit = inner.config.upload_timeout();
    match tokio::time::timeout(limit, inner.store.put(&path, Bytes::from(bytes))).await {
        Ok(Ok(())) => {
            lock(&inner.head.published).0 = Some((sealed, uploaded));
            Ok(())
        }
        Ok(Err(e)) => Err(format!("{path}: {e}")),
        Err(_) => Err(format!(
            "{path}: no answer from the store within {}s",
            limit.as_secs()
        )),
    }
}
