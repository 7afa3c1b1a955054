//! Lifecycle records: what retention and compaction did to a gateway's segments.
//!
//! A gateway's manifests form a hash chain (see [`crate::manifest`]). Retention
//! (deleting or moving old segments) and compaction (merging small segments
//! into one) take manifests and data files out of the store, which would break
//! that chain. Instead of rewriting anything, each such operation appends one
//! signed record to the gateway's *lifecycle chain*,
//! `<prefix>/v1/lifecycle/<gateway>/<sequence>.json`, naming every segment it
//! took out with its manifest's SHA-256 (and that manifest's own `previous`
//! link), every file it deleted with its SHA-256, and, for compaction, the new
//! files that replace them. `chaperone verify` rebuilds the manifest chain from
//! the manifests still present plus these records: a segment removed *with* a
//! record is reported as removed by retention (or replaced by compaction); one
//! removed *without* a record is still a missing manifest.
//!
//! Records are signed exactly like manifests ([`crate::manifest::sign_value`],
//! same canonical JSON, same domain prefix; the `format` member tells them
//! apart), and chained to the gateway's previous lifecycle record. The gateway
//! itself never writes here, so lifecycle jobs never race its manifest chain.

use serde::{Deserialize, Serialize};

use crate::manifest::{Gap, ManifestFile, PreviousManifest, SessionSeqs, Signature, SpoolLoss};
use crate::FORMAT_VERSION;

/// Value of [`LifecycleRecord::format`].
pub const LIFECYCLE_FORMAT: &str = "chaperone.archive.lifecycle";

/// What a lifecycle record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    /// Segments past the retention period were deleted (or moved elsewhere).
    Retention,
    /// Consecutive segments were merged into one set of larger files.
    Compaction,
}

/// One record of a gateway's lifecycle chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleRecord {
    /// Always [`LIFECYCLE_FORMAT`].
    pub format: String,
    /// The archive format version (`v1`).
    pub format_version: String,
    pub gateway_id: String,
    /// 1 for the gateway's first lifecycle record, then +1 each.
    pub sequence: u64,
    /// The previous lifecycle record of the gateway (its sequence and the
    /// SHA-256 of its stored bytes); None for the first.
    pub previous: Option<PreviousManifest>,
    /// When the operation ran (Unix nanoseconds).
    pub created_at_ns: i64,
    pub action: LifecycleAction,
    /// The policy, in words (`older than 90d (before 2024-03-05T07:00:00Z)`,
    /// `segments under 64 MiB`), and the legal holds that kept segments.
    pub policy: String,
    #[serde(default)]
    pub holds: Vec<String>,
    /// Retention with `--move-to`: where the removed objects were copied first.
    #[serde(default)]
    pub moved_to: Option<String>,
    /// The segments this record takes out of the manifest chain, ascending.
    pub segments: Vec<SegmentRef>,
    /// The data files it deleted (all files of those segments), with the hashes
    /// their manifests gave.
    pub removed_files: Vec<ManifestFile>,
    /// Compaction: the files that hold the removed files' rows now.
    #[serde(default)]
    pub files: Vec<ManifestFile>,
    /// Compaction: the merged frame ranges of each session (what the replaced
    /// manifests said, combined). Retention: the frame ranges removed, so that
    /// `verify` can tell frames removed by policy from frames lost.
    #[serde(default)]
    pub sessions: Vec<SessionSeqs>,
    /// Compaction: the replaced manifests' declared gaps and spool losses,
    /// carried over so that they are never forgotten.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    #[serde(default)]
    pub spool_losses: Vec<SpoolLoss>,
    /// None only in an unsigned draft.
    #[serde(default)]
    pub signature: Option<Signature>,
}

/// A manifest taken out of the chain, as the record remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub segment: u64,
    /// Hex SHA-256 of the manifest's stored bytes (what the next manifest's
    /// `previous.sha256` names).
    pub manifest_sha256: String,
    /// The manifest's own `previous` link, so the chain can be followed through it.
    pub previous: Option<PreviousManifest>,
    pub sealed_at_ns: i64,
    pub min_time_ns: Option<i64>,
    pub max_time_ns: Option<i64>,
    /// The key id / public key that had signed it.
    pub signed_by: Option<String>,
}

impl LifecycleRecord {
    /// A new, unsigned record.
    pub fn new(
        gateway_id: &str,
        sequence: u64,
        previous: Option<PreviousManifest>,
        action: LifecycleAction,
        policy: String,
    ) -> Self {
        LifecycleRecord {
            format: LIFECYCLE_FORMAT.to_string(),
            format_version: FORMAT_VERSION.to_string(),
            gateway_id: gateway_id.to_string(),
            sequence,
            previous,
            created_at_ns: crate::event::now_ns(),
            action,
            policy,
            holds: Vec::new(),
            moved_to: None,
            segments: Vec::new(),
            removed_files: Vec::new(),
            files: Vec::new(),
            sessions: Vec::new(),
            gaps: Vec::new(),
            spool_losses: Vec::new(),
            signature: None,
        }
    }

    /// Signs the record (replacing any signature) and returns the bytes to store.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        self.signature = None;
        let value = serde_json::to_value(&*self).expect("a record serializes");
        self.signature = Some(crate::manifest::sign_value(&value, key));
        let mut bytes = serde_json::to_vec_pretty(&*self).expect("a record serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses stored record bytes.
    pub fn parse(bytes: &[u8]) -> Result<LifecycleRecord, crate::manifest::ManifestError> {
        let record: LifecycleRecord = serde_json::from_slice(bytes)
            .map_err(|e| crate::manifest::ManifestError::Parse(e.to_string()))?;
        if record.format != LIFECYCLE_FORMAT {
            return Err(crate::manifest::ManifestError::Parse(format!(
                "format is {:?}, not {LIFECYCLE_FORMAT:?}",
                record.format
            )));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::verify_signature;

    #[test]
    fn a_record_is_signed_like_a_manifest() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut r = LifecycleRecord::new(
            "gw",
            1,
            None,
            LifecycleAction::Retention,
            "older than 90d".into(),
        );
        r.segments.push(SegmentRef {
            segment: 4,
            manifest_sha256: "ab".repeat(32),
            previous: None,
            sealed_at_ns: 1,
            min_time_ns: Some(1),
            max_time_ns: Some(2),
            signed_by: None,
        });
        let bytes = r.sign(&key);
        assert!(verify_signature(&bytes, Some(&key.verifying_key())).is_ok());
        assert_eq!(LifecycleRecord::parse(&bytes).unwrap(), r);
        let altered = String::from_utf8(bytes)
            .unwrap()
            .replace("\"segment\": 4", "\"segment\": 5");
        assert!(verify_signature(altered.as_bytes(), None).is_err());
    }
}
