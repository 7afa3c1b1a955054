//! The head of a gateway's archive: a small signed object each gateway
//! rewrites after every upload, at `<prefix>/v1/heads/<gateway>.json`.
//!
//! Manifests prove what is in the archive; the head says how far it should
//! reach. A chain that stops short of its head (its last manifests removed), a
//! segment the gateway sealed but never uploaded, or a gateway whose head is
//! gone can then be named by `verify` instead of passing as a shorter archive.
//! Signed like a manifest ([`crate::manifest::sign_value`]): canonical JSON
//! without `signature`, Ed25519.

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, Signature};

/// Value of [`Head::format`].
pub const HEAD_FORMAT: &str = "chaperone.archive.head";
/// Folder of the heads under `<prefix>/v1`.
pub const HEADS_DIR: &str = "heads";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Always [`HEAD_FORMAT`].
    pub format: String,
    pub format_version: String,
    pub gateway_id: String,
    /// The last segment the gateway sealed (0: none yet). Segments past
    /// `last_uploaded_segment` are sealed in its spool, not yet in the store.
    pub last_sealed_segment: u64,
    /// Every segment up to this one was uploaded (or set aside as broken,
    /// which `verify` then reports as a missing manifest).
    pub last_uploaded_segment: u64,
    /// Hex SHA-256 of the manifest of `last_uploaded_segment`, as stored.
    pub last_uploaded_manifest_sha256: Option<String>,
    /// Statements the gateway acknowledged (recorded) since it started, and
    /// when it last wrote the head (Unix ns): how recent the head is.
    pub statements_recorded: u64,
    pub updated_at_ns: i64,
    #[serde(default)]
    pub signature: Option<Signature>,
}

impl Head {
    /// Signs the head and returns the bytes to store.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        self.signature = None;
        let value = serde_json::to_value(&*self).expect("a head serializes");
        self.signature = Some(crate::manifest::sign_value(&value, key));
        let mut bytes = serde_json::to_vec_pretty(&*self).expect("a head serializes");
        bytes.push(b'\n');
        bytes
    }

    pub fn parse(bytes: &[u8]) -> Result<Head, ManifestError> {
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        if head.format != HEAD_FORMAT {
            return Err(ManifestError::Parse(format!(
                "format {:?} is not {HEAD_FORMAT:?}",
                head.format
            )));
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_head_verifies_and_parses() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut head = Head {
            format: HEAD_FORMAT.into(),
            format_version: crate::FORMAT_VERSION.into(),
            gateway_id: "gw".into(),
            last_sealed_segment: 3,
            last_uploaded_segment: 2,
            last_uploaded_manifest_sha256: Some("ab".into()),
            statements_recorded: 10,
            updated_at_ns: 1,
            signature: None,
        };
        let bytes = head.sign(&key);
        assert!(crate::manifest::verify_signature(&bytes, Some(&key.verifying_key())).is_ok());
        assert_eq!(Head::parse(&bytes).unwrap(), head);
        let tampered = String::from_utf8(bytes)
            .unwrap()
            .replace("\"last_sealed_segment\": 3", "\"last_sealed_segment\": 2");
        assert!(crate::manifest::verify_signature(tampered.as_bytes(), None).is_err());
    }
}
