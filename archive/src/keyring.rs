//! The keys a verifier trusts to have signed manifests and lifecycle records,
//! each for a period: what makes signing-key rotation checkable.
//!
//! Every signature names its public key (and its [`key_id`]); a keyring says
//! which of those keys are trusted and when. After a rotation the old key gets a
//! `not_after` (the switch time) and the new one a `not_before`, so a manifest
//! sealed after the switch but signed with the old key (a stolen key, say) fails.
//!
//! ```toml
//! [[key]]
//! public_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
//! not_after = "2025-06-01T00:00:00Z"
//! note = "2024-2025 key, retired"
//!
//! [[key]]
//! public_key = "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"
//! not_before = "2025-06-01T00:00:00Z"
//! ```

use std::path::Path;

use chaperone_schemas::manifest::{key_id, parse_verifying_key};
use serde::Deserialize;

/// A keyring does not load.
#[derive(Debug, thiserror::Error)]
#[error("keyring {source_name}: {message}")]
pub struct KeyringError {
    pub source_name: String,
    pub message: String,
}

/// One trusted key and the period its signatures count for.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: ed25519_dalek::VerifyingKey,
    /// Signed objects dated before this (Unix ns) are not accepted from this key.
    pub not_before_ns: Option<i64>,
    /// Signed objects dated after this (Unix ns) are not accepted from this key.
    pub not_after_ns: Option<i64>,
    pub note: Option<String>,
}

/// The trusted keys.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub keys: Vec<TrustedKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    public_key: String,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

impl Keyring {
    /// Keys trusted for all time (`--public-key`).
    pub fn always(keys: Vec<ed25519_dalek::VerifyingKey>) -> Keyring {
        Keyring {
            keys: keys
                .into_iter()
                .map(|key| TrustedKey {
                    key,
                    not_before_ns: None,
                    not_after_ns: None,
                    note: None,
                })
                .collect(),
        }
    }

    /// Reads a keyring file (TOML, `[[key]]` entries).
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let err = |message: String| KeyringError {
            source_name: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(|e| err(e.message))
    }

    /// Parses keyring text.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let err = |message: String| KeyringError {
            source_name: "(text)".into(),
            message,
        };
        let file: KeyringFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.key.is_empty() {
            return Err(err("no [[key]] entries".into()));
        }
        let time = |t: &Option<String>, what: &str| -> Result<Option<i64>, KeyringError> {
            t.as_ref()
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .ok()
                        .and_then(|t| t.timestamp_nanos_opt())
                        .ok_or_else(|| {
                            err(format!(
                                "{what} {t:?} is not an RFC 3339 time (2025-06-01T00:00:00Z)"
                            ))
                        })
                })
                .transpose()
        };
        let mut keys = Vec::new();
        for entry in &file.key {
            let key = parse_verifying_key(&entry.public_key)
                .map_err(|e| err(format!("public_key {:?}: {e}", entry.public_key)))?;
            keys.push(TrustedKey {
                key,
                not_before_ns: time(&entry.not_before, "not_before")?,
                not_after_ns: time(&entry.not_after, "not_after")?,
                note: entry.note.clone(),
            });
        }
        Ok(Keyring { keys })
    }

    /// Is `signer` (hex public key, as a verified signature names it) trusted
    /// for an object dated `at_ns`? Err says why not.
    pub fn check(&self, signer_hex: &str, at_ns: i64) -> Result<(), String> {
        let matching: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| hex::encode(k.key.as_bytes()) == signer_hex)
            .collect();
        let Some(first) = matching.first() else {
            return Err(format!(
                "signed by key {signer_hex}, which is not a trusted key"
            ));
        };
        if matching.iter().any(|k| {
            k.not_before_ns.is_none_or(|t| at_ns >= t) && k.not_after_ns.is_none_or(|t| at_ns <= t)
        }) {
            return Ok(());
        }
        Err(format!(
            "signed by key {} at {}, outside the period the keyring trusts it for ({} .. {})",
            key_id(&first.key),
            chaperone_schemas::time::rfc3339_ns(at_ns),
            first
                .not_before_ns
                .map(chaperone_schemas::time::rfc3339_ns)
                .unwrap_or_else(|| "any time".into()),
            first
                .not_after_ns
                .map(chaperone_schemas::time::rfc3339_ns)
                .unwrap_or_else(|| "any time".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_enforced() {
        let old = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let new = ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key();
        let ring = Keyring::parse(&format!(
            "[[key]]\npublic_key = \"{}\"\nnot_after = \"2025-06-01T00:00:00Z\"\n\
             [[key]]\npublic_key = \"{}\"\nnot_before = \"2025-06-01T00:00:00Z\"\n",
            hex::encode(old.as_bytes()),
            hex::encode(new.as_bytes())
        ))
        .unwrap();
        let switch = 1_748_736_000_000_000_000; // 2025-06-01T00:00:00Z
        let old_hex = hex::encode(old.as_bytes());
        let new_hex = hex::encode(new.as_bytes());
        assert!(ring.check(&old_hex, switch - 1).is_ok());
        assert!(ring.check(&new_hex, switch + 1).is_ok());
        let late = ring.check(&old_hex, switch + 1).unwrap_err();
        assert!(late.contains("outside the period"), "{late}");
        assert!(ring.check(&new_hex, switch - 1).is_err());
        let stranger = hex::encode([9u8; 32]);
        assert!(ring
            .check(&stranger, 0)
            .unwrap_err()
            .contains("not a trusted key"));
        assert!(Keyring::parse("[[key]]\npublic_key = \"xyz\"").is_err());
        assert!(Keyring::parse("").is_err());
    }
}
