//! The manifest chain of one gateway: which segment comes next, and the hash of
//! the manifest before it. Kept in `<spool>/state.json` and in the sealed
//! segments waiting for upload; recovered from the store when the spool is new.

use std::path::{Path, PathBuf};

use chaperone_schemas::layout::Layout;
use chaperone_schemas::lifecycle::LifecycleRecord;
use chaperone_schemas::manifest::{sha256_hex, PreviousManifest};
use serde::{Deserialize, Serialize};

use chaperone_store::{Store, StoreError};

/// The last sealed segment of this gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// 0 before the first segment.
    pub last_segment: u64,
    /// Hex SHA-256 of the last manifest's stored bytes.
    pub last_manifest_sha256: Option<String>,
    /// The spool log the last segment was sealed from.
    #[serde(default)]
    pub last_source_log: Option<String>,
}

impl ChainState {
    /// The `previous` entry of the next manifest.
    pub fn previous(&self) -> Option<PreviousManifest> {
        self.last_manifest_sha256
            .as_ref()
            .map(|sha| PreviousManifest {
                segment: self.last_segment,
                sha256: sha.clone(),
            })
    }

    pub fn advance(&mut self, segment: u64, manifest_bytes: &[u8], source_log: &str) {
        self.last_segment = segment;
        self.last_manifest_sha256 = Some(sha256_hex(manifest_bytes));
        self.last_source_log = Some(source_log.to_string());
    }
}

pub fn state_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("state.json")
}

pub fn load_local(spool_dir: &Path) -> std::io::Result<Option<ChainState>> {
    match std::fs::read(state_path(spool_dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::other(format!("{}: {e}", state_path(spool_dir).display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the state atomically (temporary file, fsync, rename, fsync dir).
pub fn save_local(spool_dir: &Path, state: &ChainState) -> std::io::Result<()> {
    let tmp = spool_dir.join("state.json.tmp");
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    crate::fsutil::write_durably(&tmp, &bytes)?;
    std::fs::rename(&tmp, state_path(spool_dir))?;
    crate::fsutil::sync_dir(spool_dir)
}

/// The chain as the store has it: the highest manifest of `gateway_id`, or the
/// highest segment a lifecycle record (retention, compaction) took out of the
/// store, whichever is higher, so that a gateway never reuses a segment number.
pub async fn load_remote(
    store: &Store,
    layout: &Layout,
    gateway_id: &str,
) -> Result<ChainState, StoreError> {
    let listed = store.list(&layout.gateway_manifests(gateway_id)).await?;
    let last = listed
        .iter()
        .filter_map(|(path, _)| layout.parse_manifest(path).map(|(_, n)| (n, path)))
        .max();
    let mut head = match last {
        None => None,
        Some((segment, path)) => Some((segment, sha256_hex(&store.get(path).await?))),
    };
    for (path, _) in store.list(&layout.gateway_lifecycle(gateway_id)).await? {
        if layout.parse_lifecycle_record(&path).is_none() {
            continue;
        }
        let bytes = store.get(&path).await?;
        let record = LifecycleRecord::parse(&bytes).map_err(|e| StoreError::Config {
            store: store.description.clone(),
            message: format!("{path}: {e}"),
        })?;
        for s in record.segments {
            if head.as_ref().is_none_or(|(n, _)| s.segment > *n) {
                head = Some((s.segment, s.manifest_sha256));
            }
        }
    }
    Ok(match head {
        None => ChainState::default(),
        Some((segment, sha)) => ChainState {
            last_segment: segment,
            last_manifest_sha256: Some(sha),
            last_source_log: None,
        },
    })
}
