//! The `[archive]` section of `chaperone.toml`.
//!
//! The gateway's config keeps this section as an opaque table (the proxy crate does
//! not depend on the recorder); [`ArchiveConfig::from_toml`] gives it its types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// When a request frame counts as safe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Written to the spool file before the command is forwarded (a killed gateway
    /// process loses nothing); fsync'd as a group commit every `fsync_interval_ms`
    /// (a machine crash may lose that window).
    #[default]
    Group,
    /// Written and fsync'd before the command is forwarded.
    Sync,
}

/// What happens when the spool is full (object storage down for long, or disk full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// New commands get a MySQL error and are not executed.
    #[default]
    FailClosed,
    /// Commands run; their frames are not recorded, and the gap is recorded.
    FailOpen,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Where sealed segments go: a local directory, or a URL
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///dir`). Credentials come from the usual environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub store: String,
    /// Extra object store options (e.g. `aws_endpoint`, `aws_allow_http`,
    /// `aws_region`), as in the object_store crate's config keys.
    #[serde(default)]
    pub store_options: BTreeMap<String, String>,
    /// Local directory for the spool (append-only logs and sealed segments
    /// waiting for upload). Must survive a gateway restart.
    pub spool_dir: PathBuf,
    /// Bytes the spool may hold before `on_spool_full` applies.
    #[serde(default = "default_spool_limit")]
    pub spool_limit_bytes: u64,
    /// A segment is sealed when its spool log reaches this size...
    #[serde(default = "default_segment_bytes")]
    pub segment_max_bytes: u64,
    /// ...or this age, whichever comes first.
    #[serde(default = "default_segment_age")]
    pub segment_max_age_ms: u64,
    #[serde(default)]
    pub durability: Durability,
    /// Group commit interval for `durability = "group"`.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval_ms: u64,
    #[serde(default)]
    pub on_spool_full: FailureMode,
    /// Environment variable holding the Ed25519 manifest signing key (32 bytes,
    /// hex or base64).
    #[serde(default)]
    pub signing_key_env: Option<String>,
    /// File holding the signing key (hex or base64).
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Per-statement cap on stored payload bytes (None: no cap). Frames past the
    /// cap are still recorded with their length, without (all of) their payload.
    #[serde(default)]
    pub payload_cap_bytes: Option<u64>,
    /// zstd level of the Parquet files (1 = fastest).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// The retention policy `chaperone retention --config` applies (flags
    /// override it). The gateway itself never deletes anything.
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    /// One object upload (or store check) taking longer than this counts as a
    /// failed upload: a hung store must not hold the uploader forever.
    #[serde(default = "default_upload_timeout")]
    pub upload_timeout_s: u64,
    /// `/readyz` fails once the oldest sealed segment has waited this long for
    /// upload (and while a segment that cannot be uploaded is in the spool).
    #[serde(default = "default_upload_stuck_after")]
    pub upload_stuck_after_s: u64,
}

/// `[archive.retention]`: what `chaperone retention` removes by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Segments whose newest row is older than this go: `90d`, `12w`, `2160h`.
    pub older_than: String,
    /// A file of legal holds, one per line: `session=<id>` or `subject=<agent>`.
    #[serde(default)]
    pub legal_hold_file: Option<PathBuf>,
    /// Move instead of delete: copy the segments to this store first (a
    /// directory or URL, e.g. a colder bucket), then delete them here.
    #[serde(default)]
    pub move_to: Option<String>,
}

fn default_spool_limit() -> u64 {
    4 << 30
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_segment_age() -> u64 {
    60_000
}
fn default_fsync_interval() -> u64 {
    20
}
fn default_zstd_level() -> i32 {
    3
}
fn default_upload_timeout() -> u64 {
    30
}
fn default_upload_stuck_after() -> u64 {
    120
}

/// The `[archive]` section does not check out.
#[derive(Debug, thiserror::Error)]
#[error("invalid [archive] config: {0}")]
pub struct ConfigError(pub String);

impl ArchiveConfig {
    /// Parses the `[archive]` table of the gateway's config.
    pub fn from_toml(table: &toml::Table) -> Result<Self, ConfigError> {
        let config: ArchiveConfig = table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// A config with defaults, for tests and tools.
    pub fn new(store: &str, spool_dir: &Path) -> Self {
        ArchiveConfig {
            store: store.to_string(),
            store_options: BTreeMap::new(),
            spool_dir: spool_dir.to_path_buf(),
            spool_limit_bytes: default_spool_limit(),
            segment_max_bytes: default_segment_bytes(),
            segment_max_age_ms: default_segment_age(),
            durability: Durability::default(),
            fsync_interval_ms: default_fsync_interval(),
            on_spool_full: FailureMode::default(),
            signing_key_env: None,
            signing_key_file: None,
            payload_cap_bytes: None,
            zstd_level: default_zstd_level(),
            retention: None,
            upload_timeout_s: default_upload_timeout(),
            upload_stuck_after_s: default_upload_stuck_after(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        if self.store.trim().is_empty() {
            return bad("`store` must name a directory or a URL (s3://bucket/prefix, ...)");
        }
        if self.segment_max_bytes < 4096 {
            return bad("`segment_max_bytes` must be at least 4096");
        }
        if self.segment_max_age_ms < 10 {
            return bad("`segment_max_age_ms` must be at least 10");
        }
        if self.spool_limit_bytes < self.segment_max_bytes {
            return bad("`spool_limit_bytes` must be at least `segment_max_bytes`");
        }
        if self.fsync_interval_ms == 0 {
            return bad("`fsync_interval_ms` must be at least 1 (or use durability = \"sync\")");
        }
        if self.signing_key_env.is_some() && self.signing_key_file.is_some() {
            return bad("set one of `signing_key_env` and `signing_key_file`, not both");
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad("`zstd_level` must be between 1 and 22");
        }
        if self.upload_timeout_s == 0 {
            return bad("`upload_timeout_s` must be at least 1");
        }
        if self.upload_stuck_after_s == 0 {
            return bad("`upload_stuck_after_s` must be at least 1");
        }
        if let Some(r) = &self.retention {
            chaperone_archive::since::parse_duration(&r.older_than)
                .map_err(|e| ConfigError(format!("`retention.older_than`: {e}")))?;
        }
        Ok(())
    }

    /// The manifest signing key the config names (`signing_key_env` or
    /// `signing_key_file`), else the one a gateway generated beside its spool
    /// (`<spool_dir>/signing-key`) if there is one.
    pub fn existing_signing_key(&self) -> Result<Option<ed25519_dalek::SigningKey>, String> {
        use chaperone_schemas::manifest::parse_signing_key;
        let parse = |text: &str, what: &str| {
            parse_signing_key(text)
                .map(Some)
                .map_err(|e| format!("{what}: {e}"))
        };
        let configured = chaperone_config::SecretSource::of(
            "signing_key",
            self.signing_key_env.clone(),
            self.signing_key_file.clone(),
            None,
        );
        if let Some(secret) = configured
            .resolve_optional("archive.signing_key")
            .map_err(|e| e.to_string())?
        {
            let text = String::from_utf8_lossy(secret.expose());
            let what = self
                .signing_key_env
                .clone()
                .or_else(|| {
                    self.signing_key_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                })
                .unwrap_or_default();
            return parse(&text, &what);
        }
        let path = self.spool_dir.join("signing-key");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text, &path.display().to_string()),
            Err(_) => Ok(None),
        }
    }

    pub fn segment_max_age(&self) -> Duration {
        Duration::from_millis(self.segment_max_age_ms)
    }

    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }

    pub fn upload_timeout(&self) -> Duration {
        Duration::from_secs(self.upload_timeout_s)
    }

    pub fn upload_stuck_after(&self) -> Duration {
        Duration::from_secs(self.upload_stuck_after_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_example_archive_section_parses() {
        let text = include_str!("../../deploy/chaperone.toml");
        let all: toml::Table = toml::from_str(text).unwrap();
        let section = all["archive"].as_table().expect("[archive] in the example");
        let c = ArchiveConfig::from_toml(section).unwrap();
        assert_eq!(c.on_spool_full, FailureMode::FailClosed);
        assert_eq!(
            c.signing_key_env.as_deref(),
            Some("CHAPERONE_ARCHIVE_SIGNING_KEY")
        );
    }

    #[test]
    fn parses_with_defaults_and_rejects_unknown_keys() {
        let t: toml::Table = toml::from_str(
            r#"store = "s3://bucket/audit"
               spool_dir = "/var/lib/chaperone/spool"
               on_spool_full = "fail_open"
               durability = "sync""#,
        )
        .unwrap();
        let c = ArchiveConfig::from_toml(&t).unwrap();
        assert_eq!(c.on_spool_full, FailureMode::FailOpen);
        assert_eq!(c.durability, Durability::Sync);
        assert_eq!(c.segment_max_bytes, 64 << 20);

        let t: toml::Table =
            toml::from_str("store = \"x\"\nspool_dir = \"y\"\nspool_limit = 5").unwrap();
        let err = ArchiveConfig::from_toml(&t).unwrap_err().to_string();
        assert!(err.contains("spool_limit"), "{err}");
    }
}
