//! Manifests: one per sealed segment, chained and signed.
//!
//! A manifest lists the segment's data files (with SHA-256, size, rows and time
//! range), the frame sequence numbers each session has in the segment, any gap
//! the gateway knowingly left (fail-open mode) and any spool loss found at
//! recovery. It carries the SHA-256 of the previous manifest of the same gateway
//! (a chain: removing, altering or reordering one breaks the next), and an Ed25519
//! signature.
//!
//! The signature covers [`signing_message`]: the bytes
//! `chaperone-manifest-v1\n` followed by the manifest as canonical JSON without its
//! `signature` member (object keys sorted by code point, no insignificant
//! whitespace, integers as integers; Python's
//! `json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! produces the same bytes).

use std::fmt::Write as _;

use base64::Engine as _;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::FORMAT_VERSION;

/// Value of [`Manifest::format`].
pub const MANIFEST_FORMAT: &str = "chaperone.archive.manifest";
/// Prefix of the signed message (domain separation).
pub const SIGNING_CONTEXT: &[u8] = b"chaperone-manifest-v1\n";
/// Value of [`Signature::algorithm`].
pub const SIGNATURE_ALGORITHM: &str = "ed25519";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The archive format version (`v1`).
    pub format_version: String,
    pub gateway_id: String,
    /// The segment number: 1 for a gateway's first segment, then +1 each.
    pub segment: u64,
    /// When the segment was sealed (Unix nanoseconds).
    pub sealed_at_ns: i64,
    /// The previous manifest of the same gateway; None for the first one.
    pub previous: Option<PreviousManifest>,
    pub files: Vec<ManifestFile>,
    /// The earliest and latest row time in the segment (Unix nanoseconds); None
    /// when the segment holds no rows.
    pub min_time_ns: Option<i64>,
    pub max_time_ns: Option<i64>,
    /// Frame sequence numbers per session in this segment, and session bounds.
    pub sessions: Vec<SessionSeqs>,
    /// Frames the gateway knowingly did not record (fail-open mode).
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// Spool damage found at recovery (a crash-torn tail).
    #[serde(default)]
    pub spool_losses: Vec<SpoolLoss>,
    /// None only in an unsigned draft; every stored manifest is signed.
    #[serde(default)]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousManifest {
    pub segment: u64,
    /// Hex SHA-256 of the previous manifest object's bytes, as stored.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// `sessions`, `statements` or `frames`.
    pub table: String,
    /// The object path (with the archive prefix).
    pub path: String,
    /// Hex SHA-256 of the object's bytes.
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
}

/// One session's frames in one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSeqs {
    pub session_id: String,
    /// Inclusive `[first, last]` ranges of frame sequence numbers, ascending and
    /// disjoint.
    pub seq_ranges: Vec<[u64; 2]>,
    /// The session's start row is in this segment.
    #[serde(default)]
    pub started: bool,
    /// The session's end row is in this segment, with this many frames in total.
    #[serde(default)]
    pub ended_with_frames: Option<u64>,
}

/// Frames knowingly not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub session_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub reason: String,
    pub at_ns: i64,
    /// Statement summaries not recorded with these frames (fail-open drops a
    /// dropped request's summary too). Absent (0) in manifests before it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub statements_dropped: u64,
    /// Payload bytes of the frames not recorded. Absent (0) before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Bytes of a spool file that could not be recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolLoss {
    /// The spool file's name.
    pub spool_file: String,
    /// Where the first bad record starts.
    pub offset: u64,
    pub bytes_lost: u64,
    pub reason: String,
    pub detected_at_ns: i64,
    /// The end of a log cut short by a crash while appending. After a process
    /// crash it is a write that never returned: no request in it was
    /// acknowledged or forwarded. (After a host crash with group commit, the
    /// last fsync interval may be in it: durability = "sync" closes that.)
    /// `verify` reports it as a note, not a problem. (Absent in manifests
    /// written before this field: false.)
    #[serde(default)]
    pub cut_write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Always [`SIGNATURE_ALGORITHM`].
    pub algorithm: String,
    /// Hex of the 32-byte Ed25519 public key that signed.
    pub public_key: String,
    /// Short id of that key ([`key_id`]), to pick it from a keyring and to name
    /// it in reports. Not covered by the signature (nothing in `signature` is);
    /// a verifier always checks the key bytes, never the id alone. Absent in
    /// manifests written before key ids existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Base64 (standard, padded) of the 64-byte signature.
    pub value: String,
}

/// Why a manifest does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest: {0}")]
    Parse(String),
    #[error("manifest is not signed")]
    Unsigned,
    #[error("signature algorithm {0:?} is not supported")]
    Algorithm(String),
    #[error("malformed signature or public key: {0}")]
    Malformed(String),
    #[error("signed by key {found}, expected {expected}")]
    WrongKey { found: String, expected: String },
    #[error("signature does not match the manifest's content")]
    BadSignature,
}

impl Manifest {
    /// A new, unsigned manifest for `segment` of `gateway_id`.
    pub fn new(gateway_id: &str, segment: u64, previous: Option<PreviousManifest>) -> Self {
        Manifest {
            format: MANIFEST_FORMAT.to_string(),
            format_version: FORMAT_VERSION.to_string(),
            gateway_id: gateway_id.to_string(),
            segment,
            sealed_at_ns: crate::event::now_ns(),
            previous,
            files: Vec::new(),
            min_time_ns: None,
            max_time_ns: None,
            sessions: Vec::new(),
            gaps: Vec::new(),
            spool_losses: Vec::new(),
            signature: None,
        }
    }

    /// Signs the manifest (replacing any signature) and returns the bytes to store.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        self.signature = None;
        let value = serde_json::to_value(&*self).expect("a manifest serializes");
        self.signature = Some(sign_value(&value, key));
        let mut bytes = serde_json::to_vec_pretty(&*self).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Parses stored manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))
    }
}

/// The signature of a JSON record (a manifest or a lifecycle record, without its
/// `signature` member) by `key`.
pub fn sign_value(value: &serde_json::Value, key: &ed25519_dalek::SigningKey) -> Signature {
    let signature = key.sign(&signing_message(value));
    Signature {
        algorithm: SIGNATURE_ALGORITHM.to_string(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        key_id: Some(key_id(&key.verifying_key())),
        value: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
    }
}

/// The short id of a signing key: `ed25519:` and the first 16 hex digits of the
/// SHA-256 of its 32 public key bytes. Derived from the key, so it needs no
/// registry and cannot name two keys by mistake (short of a 64-bit collision,
/// which is why verification checks the full key).
pub fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    format!("ed25519:{}", &sha256_hex(key.as_bytes())[..16])
}

/// Checks the signature of stored manifest bytes. With `trusted`, the signer must
/// be that key; without, the key named in the manifest is used (which proves
/// integrity, not origin). Returns the signer's public key (hex).
pub fn verify_signature(
    bytes: &[u8],
    trusted: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<String, ManifestError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| ManifestError::Parse("not a JSON object".into()))?;
    let signature = match object.remove("signature") {
        None | Some(serde_json::Value::Null) => return Err(ManifestError::Unsigned),
        Some(s) => serde_json::from_value::<Signature>(s)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?,
    };
    if signature.algorithm != SIGNATURE_ALGORITHM {
        return Err(ManifestError::Algorithm(signature.algorithm));
    }
    let key_bytes: [u8; 32] = hex::decode(&signature.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ManifestError::Malformed("public_key is not 32 hex bytes".into()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if let Some(trusted) = trusted {
        if trusted != &key {
            return Err(ManifestError::WrongKey {
                found: signature.public_key,
                expected: hex::encode(trusted.as_bytes()),
            });
        }
    }
    let sig_bytes: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(&signature.value)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ManifestError::Malformed("value is not a 64-byte base64 signature".into())
        })?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    key.verify(&signing_message(&value), &sig)
        .map_err(|_| ManifestError::BadSignature)?;
    Ok(signature.public_key)
}

/// The bytes a manifest's signature covers: [`SIGNING_CONTEXT`] followed by the
/// canonical JSON of `manifest` without its `signature` member.
pub fn signing_message(manifest: &serde_json::Value) -> Vec<u8> {
    let mut out = String::from_utf8(SIGNING_CONTEXT.to_vec()).expect("ascii");
    match manifest {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().filter(|(k, _)| *k != "signature").collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(&mut out, entries);
        }
        other => write_canonical(&mut out, other),
    }
    out.into_bytes()
}

fn write_object(out: &mut String, entries: Vec<(&String, &serde_json::Value)>) {
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("a string serializes"));
        out.push(':');
        write_canonical(out, v);
    }
    out.push('}');
}

fn write_canonical(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(out, entries);
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("a string serializes")),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// Hex SHA-256 of bytes (files and manifests are identified by it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses a 32-byte Ed25519 secret key (seed) given as hex or base64.
pub fn parse_signing_key(text: &str) -> Result<ed25519_dalek::SigningKey, ManifestError> {
    let text = text.trim();
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .ok_or_else(|| ManifestError::Malformed("the key is neither hex nor base64".into()))?;
    let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        ManifestError::Malformed(format!(
            "an Ed25519 secret key is 32 bytes, this one is {}",
            b.len()
        ))
    })?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Parses a 32-byte Ed25519 public key given as hex or base64.
pub fn parse_verifying_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, ManifestError> {
    let text = text.trim();
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .ok_or_else(|| ManifestError::Malformed("the key is neither hex nor base64".into()))?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ManifestError::Malformed("an Ed25519 public key is 32 bytes".into()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&raw)
        .map_err(|e| ManifestError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[n; 32])
    }

    fn sample() -> Manifest {
        let mut m = Manifest::new("gateway-1", 7, None);
        m.files.push(ManifestFile {
            table: "frames".into(),
            path: "v1/frames/date=2024-01-01/hour=00/gateway-1-0000000007.parquet".into(),
            sha256: sha256_hex(b"x"),
            bytes: 1,
            rows: 2,
            min_time_ns: 1,
            max_time_ns: 2,
        });
        m.sessions.push(SessionSeqs {
            session_id: "s1".into(),
            seq_ranges: vec![[0, 9]],
            started: true,
            ended_with_frames: None,
        });
        m
    }

    #[test]
    fn signed_manifest_verifies_and_detects_changes() {
        let mut m = sample();
        let bytes = m.sign(&key(1));
        let signer = verify_signature(&bytes, Some(&key(1).verifying_key())).unwrap();
        assert_eq!(signer, hex::encode(key(1).verifying_key().as_bytes()));
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);

        let altered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"rows\": 2", "\"rows\": 3");
        assert_ne!(altered.as_bytes(), &bytes[..]);
        assert_eq!(
            verify_signature(altered.as_bytes(), None),
            Err(ManifestError::BadSignature)
        );
        assert!(matches!(
            verify_signature(&bytes, Some(&key(2).verifying_key())),
            Err(ManifestError::WrongKey { .. })
        ));
    }

    #[test]
    fn canonical_form_ignores_formatting_and_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "é"}], "a": null, "signature": 5}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(signing_message(&a)).unwrap(),
            "chaperone-manifest-v1\n{\"a\":null,\"b\":[1,{\"x\":\"é\",\"y\":2}]}"
        );
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex_key = hex::encode([7u8; 32]);
        let b64_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            parse_signing_key(&hex_key).unwrap().to_bytes(),
            parse_signing_key(&b64_key).unwrap().to_bytes()
        );
        assert!(parse_signing_key("abcd").is_err());
    }
}
