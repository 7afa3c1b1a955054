//! The gateway's configuration (`chaperone.toml`).
//!
//! A complete, commented example lives in `deploy/chaperone.toml`; the tests load it,
//! so it cannot drift from this code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::policy_source::PolicySource;

pub use chaperone_config::{
    ConfigError, Secret, SecretSource, TargetConfig, TlsConfig, UpstreamTls, UpstreamTlsMode,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Workload identity: `[identity]`, `[issuers.*]`, `[roles.*]`, `[jit]`, `[api]`.
    #[serde(default)]
    pub identity: crate::identity::config::IdentityConfig,
    #[serde(default)]
    pub issuers: BTreeMap<String, crate::identity::config::IssuerConfig>,
    #[serde(default)]
    pub roles: BTreeMap<String, crate::identity::config::RoleConfig>,
    #[serde(default)]
    pub jit: crate::identity::config::JitConfig,
    #[serde(default)]
    pub api: Option<crate::identity::config::ApiConfig>,
    /// Guardrails: `[policies.*]` (named by roles and users) and `[approvals]`
    /// (docs/guardrails.md).
    #[serde(default)]
    pub policies: BTreeMap<String, crate::guardrails::config::PolicyConfig>,
    #[serde(default)]
    pub approvals: Option<crate::guardrails::config::ApprovalsConfig>,
    /// `[archive]`: recording to the archive. Kept as a table here (the recorder
    /// crate gives it its types and checks it: `ArchiveConfig::from_toml`), so
    /// the gateway does not depend on the recorder. Absent: nothing is recorded.
    #[serde(default)]
    pub archive: Option<toml::Table>,
    /// `[ui]`: the audit service (API and web UI) over the archive, in the same
    /// process. Kept as a table here; `chaperone_query_ui::UiConfig` types it.
    #[serde(default)]
    pub ui: Option<toml::Table>,
    /// `[masking]`: what each role may not see (docs/masking.md).
    #[serde(default)]
    pub masking: chaperone_masking::MaskingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's name in the archive (each replica needs its own).
    #[serde(default = "default_gateway_id")]
    pub id: String,
    /// Take `id` from this environment variable instead (e.g. `POD_NAME`, so that
    /// every replica of a Deployment gets its own segment chain).
    #[serde(default)]
    pub id_env: Option<String>,
    /// Where agents connect with MySQL clients.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served. None: not served.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub upstream_connect_timeout_secs: u64,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// The largest packet accepted from either side, in bytes.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Read the config file again every N seconds and apply a changed
    /// `[roles.*]`, `[policies.*]` or `[masking]` (as SIGHUP does): replicas
    /// sharing one file (a Kubernetes ConfigMap, a shared volume) follow it
    /// within N seconds. None: only on SIGHUP.
    #[serde(default)]
    pub config_poll_secs: Option<u64>,
    /// A second file holding only `[roles.*]`, `[policies.*]` and `[masking]`,
    /// merged into this config (relative to this file's directory, or an
    /// `s3://bucket/key` object): the policy source every replica shares while
    /// each keeps its own `[gateway]`. A name defined in both is an error.
    #[serde(default)]
    pub policy_file: Option<String>,
    /// Object store options for an `s3://` policy file (endpoint, region,
    /// credentials), as `[archive.store_options]`.
    #[serde(default)]
    pub policy_file_options: BTreeMap<String, String>,
}

/// A user declared in the gateway's config (the workload-identity issue adds OIDC).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The target this user's sessions go to.
    pub target: String,
    #[serde(flatten)]
    pub password: SecretSource,
    /// `mysql_native_password` or `caching_sha2_password` (default).
    #[serde(default = "default_user_plugin")]
    pub plugin: String,
    /// The guardrail policy (`[policies.NAME]`) for this user's sessions.
    /// Default: none (the session is recorded, not guarded).
    #[serde(default)]
    pub policy: Option<String>,
}

fn default_gateway_id() -> String {
    "gateway-1".to_string()
}
fn default_max_connections() -> usize {
    4096
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    8 * 3600
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_max_packet_size() -> usize {
    64 << 20
}
fn default_log_format() -> String {
    "text".to_string()
}
fn default_user_plugin() -> String {
    chaperone_mysql::protocol::handshake::CACHING_SHA2_PASSWORD.to_string()
}

/// The sections a `[gateway] policy_file` may hold: those a reload applies.
pub const POLICY_FILE_SECTIONS: [&str; 3] = ["roles", "policies", "masking"];

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_effective(path).map(|(config, _)| config)
    }

    /// The config from `path` with its `[gateway] policy_file` merged in, and
    /// that merged content as a table (what a reload diffs).
    pub fn load_effective(path: &Path) -> Result<(Self, toml::Table), ConfigError> {
        let text = read_file(path)?;
        let mut table: toml::Table = toml::from_str(&text)?;
        let Some(source) = PolicySource::of(&table, path)? else {
            // Typed from the text: errors point at the file's lines.
            return Ok((Self::parse(&text)?, table));
        };
        merge_policy_file(&mut table, &source)?;
        Ok((Self::from_table(table.clone())?, table))
    }

    /// The content of `path` with its `[gateway] policy_file` merged in, not
    /// checked: what [`Config::load_effective`] diffs against, also for a
    /// config it rejects.
    pub fn effective_table(path: &Path) -> Result<toml::Table, ConfigError> {
        let mut table: toml::Table = toml::from_str(&read_file(path)?)?;
        if let Some(source) = PolicySource::of(&table, path)? {
            merge_policy_file(&mut table, &source)?;
        }
        Ok(table)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::from_table(toml::from_str(text)?)
    }

    /// Types and checks a config's content.
    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let mut config: Config = toml::Value::Table(table).try_into()?;
        if let Some(var) = &config.gateway.id_env {
            config.gateway.id = std::env::var(var).map_err(|_| ConfigError::MissingEnv {
                what: "gateway.id_env".into(),
                var: var.clone(),
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: references between sections and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.targets.is_empty() {
            return invalid(
                "no [targets.*] configured: the gateway needs at least one database to forward to"
                    .into(),
            );
        }
        for (name, user) in &self.users {
            if !self.targets.contains_key(&user.target) {
                return invalid(format!(
                    "users.{name}.target = \"{}\" but there is no [targets.{}]",
                    user.target, user.target
                ));
            }
            use chaperone_mysql::protocol::handshake::{CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};
            if user.plugin != NATIVE_PASSWORD && user.plugin != CACHING_SHA2_PASSWORD {
                return invalid(format!(
                    "users.{name}.plugin = \"{}\": use \"{NATIVE_PASSWORD}\" or \"{CACHING_SHA2_PASSWORD}\"",
                    user.plugin
                ));
            }
        }
        for (name, target) in &self.targets {
            if target.tls.mode == UpstreamTlsMode::Verify && target.tls.ca.is_none() {
                return invalid(format!(
                    "targets.{name}.tls: mode = \"verify\" needs `ca` (a PEM file of the CA that signed the server's certificate)"
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if !tls.self_signed && (tls.cert.is_none() || tls.key.is_none()) {
                return invalid(
                    "[tls] needs `cert` and `key` (PEM files), or `self_signed = true` for development".into(),
                );
            }
        }
        crate::identity::config::validate(self)?;
        crate::guardrails::config::validate(self)?;
        if self.gateway.max_packet_size < 1024 || self.gateway.max_packet_size > 1 << 30 {
            return invalid("gateway.max_packet_size must be between 1 KiB and 1 GiB".into());
        }
        if self.gateway.config_poll_secs == Some(0) {
            return invalid(
                "gateway.config_poll_secs must be at least 1 (leave it out to reload on SIGHUP only)"
                    .into(),
            );
        }
        if !matches!(self.gateway.log_format.as_str(), "text" | "json") {
            return invalid("gateway.log_format must be \"text\" or \"json\"".into());
        }
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.gateway.handshake_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.gateway.idle_timeout_secs)
    }
    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.gateway.upstream_connect_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.gateway.shutdown_grace_secs)
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Adds the sections of the policy file to the main config's.
fn merge_policy_file(main: &mut toml::Table, source: &PolicySource) -> Result<(), ConfigError> {
    let policies: toml::Table = toml::from_str(&source.read()?)?;
    let path = source;
    for (section, value) in policies {
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError::Invalid(format!(
                "{path}: `{section}` must be a section ([{section}...])"
            )));
        };
        if !POLICY_FILE_SECTIONS.contains(&section.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "{path}: [{section}] cannot be in a policy file; it holds only {}",
                POLICY_FILE_SECTIONS.map(|s| format!("[{s}]")).join(", ")
            )));
        }
        let target = main
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let Some(target) = target.as_table_mut() else {
            return Err(ConfigError::Invalid(format!(
                "`{section}` must be a section"
            )));
        };
        for (name, entry) in entries {
            if target.contains_key(&name) {
                return Err(ConfigError::Invalid(format!(
                    "{section}.{name} is defined both in the config and in the policy file {path}"
                )));
            }
            target.insert(name, entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_example_parses() {
        let text = include_str!("../../deploy/chaperone.toml");
        let config = Config::parse(text).unwrap();
        assert!(!config.targets.is_empty());
    }

    #[test]
    fn dangling_target_is_rejected_with_a_clear_message() {
        let text = r#"
            [gateway]
            listen = "127.0.0.1:0"
            [targets.db]
            address = "127.0.0.1:3306"
            user = "root"
            password = ""
            [users.app]
            target = "nope"
            password = "x"
        "#;
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("users.app.target"), "{err}");
    }

    #[test]
    fn a_policy_file_adds_policies_and_may_hold_nothing_else() {
        let dir = std::env::temp_dir().join(format!("chp_policy_file_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("chaperone.toml");
        std::fs::write(
            &main,
            r#"
            [gateway]
            listen = "127.0.0.1:0"
            policy_file = "policies.toml"
            [targets.db]
            address = "127.0.0.1:3306"
            user = "root"
            password = ""
            [users.app]
            target = "db"
            password = "x"
            policy = "shared"
            "#,
        )
        .unwrap();
        let policies = dir.join("policies.toml");
        std::fs::write(&policies, "[policies.shared]\nclasses = [\"read\"]\n").unwrap();
        let (config, table) = Config::load_effective(&main).unwrap();
        assert_eq!(config.policies["shared"].classes, ["read"]);
        assert!(table["policies"].get("shared").is_some());

        std::fs::write(&policies, "[targets.other]\naddress = \"x:1\"\n").unwrap();
        let err = Config::load(&main).unwrap_err().to_string();
        assert!(
            err.contains("[targets] cannot be in a policy file"),
            "{err}"
        );

        std::fs::write(
            &main,
            std::fs::read_to_string(&main).unwrap() + "[policies.shared]\nclasses = []\n",
        )
        .unwrap();
        std::fs::write(&policies, "[policies.shared]\nclasses = [\"read\"]\n").unwrap();
        let err = Config::load(&main).unwrap_err().to_string();
        assert!(err.contains("policies.shared is defined both"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = SecretSource {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", s.resolve("x").unwrap()).contains("hunter2"));
    }
}
