//! What the spool directory holds and where the chain continues from it: logs,
//! sealed segments, the signing key.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chaperone_archive::chain::{self, ChainState};
use chaperone_schemas::layout::Layout;
use chaperone_store::Store;

use super::{OpenError, UploadList, UPLOAD_LIST};
use crate::config::ArchiveConfig;
use crate::spool;
use crate::upload;
pub(super) fn segment_dir_name(segment: u64) -> String {
    chaperone_schemas::layout::segment_name(segment)
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn list_logs(log_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == spool::LOG_EXTENSION))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}

/// Sealed segment directories, oldest first.
pub(crate) fn sealed_segments(sealed_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(sealed_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n: u64 = name.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

pub(super) fn sealed_sources(sealed_dir: &Path) -> Vec<String> {
    sealed_segments(sealed_dir)
        .into_iter()
        .filter_map(|(_, dir)| {
            let bytes = std::fs::read(dir.join(UPLOAD_LIST)).ok()?;
            let list: UploadList = serde_json::from_slice(&bytes).ok()?;
            Some(list.source_log)
        })
        .collect()
}

/// Where the chain continues: the newest sealed segment waiting in the spool,
/// else the spool's state file, else the store.
pub(super) fn initial_chain(
    spool_dir: &Path,
    sealed_dir: &Path,
    store: &Store,
    layout: &Layout,
    gateway_id: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<ChainState, OpenError> {
    // Half-written sealed directories are redone from their log; uploaded
    // ones whose deletion was cut short are finished.
    upload::remove_leftovers(sealed_dir);
    let local = chain::load_local(spool_dir).map_err(|source| OpenError::Spool {
        path: chain::state_path(spool_dir),
        source,
    })?;
    if let Some((segment, dir)) = sealed_segments(sealed_dir).pop() {
        let bytes = match std::fs::read(dir.join("manifest.json")) {
            Ok(bytes) => bytes,
            // An uploaded segment partly deleted by an older version: the state
            // file, written at every seal, knows the chain at least that far.
            Err(_) if local.as_ref().is_some_and(|l| l.last_segment >= segment) => {
                return Ok(local.unwrap_or_default());
            }
            Err(source) => {
                return Err(OpenError::Spool {
                    path: dir.clone(),
                    source,
                })
            }
        };
        let source_log = std::fs::read(dir.join(UPLOAD_LIST))
            .ok()
            .and_then(|b| serde_json::from_slice::<UploadList>(&b).ok())
            .map(|l| l.source_log);
        let mut state = ChainState::default();
        state.advance(segment, &bytes, source_log.as_deref().unwrap_or(""));
        if local.as_ref().is_some_and(|l| l.last_segment > segment) {
            return Ok(local.unwrap_or_default());
        }
        return Ok(state);
    }
    if let Some(state) = local {
        return Ok(state);
    }
    // A new spool: continue the chain the store has (an empty store starts it).
    runtime
        .block_on(chain::load_remote(store, layout, gateway_id))
        .map_err(|e| {
            OpenError::Recovery(format!(
                "cannot read the archive store to continue gateway {gateway_id}'s manifest chain ({e}); \
                 the store must be reachable when a gateway starts with an empty spool"
            ))
        })
}

pub(super) fn load_signing_key(
    config: &ArchiveConfig,
) -> Result<ed25519_dalek::SigningKey, OpenError> {
    if let Some(key) = config.existing_signing_key().map_err(OpenError::Key)? {
        return Ok(key);
    }
    // No key configured: one is generated and kept beside the spool, so that the
    // chain is at least signed consistently. Production configs set a key.
    let path = config.spool_dir.join("signing-key");
    let seed: [u8; 32] = rand::random();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut f = File::options()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::Key(format!("cannot create {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    f.write_all(hex::encode(seed).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| OpenError::Key(format!("cannot write {}: {e}", path.display())))?;
    tracing::warn!(
        path = %path.display(),
        public_key = %hex::encode(key.verifying_key().as_bytes()),
        "archive: no signing key configured (signing_key_env / signing_key_file); generated one"
    );
    Ok(key)
}
