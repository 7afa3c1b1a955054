//! The `[ui]` section of the gateway config.

use std::net::SocketAddr;

use serde::Deserialize;

/// How the audit service runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Where the API and web UI listen.
    pub listen: SocketAddr,
    /// Bearer tokens for automation and people, each with a name (recorded in
    /// the access log) and a role: `auditor` (read), `approver`, `admin`.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Local demo mode: requests from loopback need no token. Refused on
    /// non-loopback listeners.
    #[serde(default)]
    pub demo_mode: bool,
    /// Longest a SQL query may run.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_secs: u64,
    /// Most rows a SQL query returns (the result says when it was cut).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// `[ui.login]`: people sign in with the organisation's identity provider.
    #[serde(default)]
    pub login: Option<crate::login::LoginConfig>,
    /// Most memory all running SQL queries may hold together, in MiB (hash
    /// tables, sorts, aggregates). A query that needs more fails with a clear
    /// error; nothing spills to disk.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: usize,
    /// Where exports started through the API are written, one directory per
    /// export (default: `chaperone-exports` in the system temp directory).
    #[serde(default)]
    pub export_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    /// The token itself, from the environment (preferred) or inline.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_role")]
    pub role: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish()
    }
}

impl ApiToken {
    /// The token's value (from `token_env` or `token`).
    pub fn value(&self) -> Option<String> {
        let source = chaperone_config::SecretSource::of(
            "token",
            self.token_env.clone(),
            None,
            self.token.clone(),
        );
        let secret = source.resolve_optional("ui.tokens").ok().flatten()?;
        String::from_utf8(secret.expose().to_vec()).ok()
    }
}

fn default_query_timeout() -> u64 {
    30
}
fn default_max_rows() -> usize {
    10_000
}
fn default_memory_limit_mb() -> usize {
    512
}
fn default_role() -> String {
    "auditor".into()
}

impl UiConfig {
    pub fn from_toml(table: &toml::Table) -> Result<Self, crate::UiError> {
        let config: UiConfig = table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| crate::UiError::Config(e.to_string()))?;
        if config.demo_mode && !config.listen.ip().is_loopback() {
            return Err(crate::UiError::Config(
                "demo_mode = true is only allowed on a loopback listen address".into(),
            ));
        }
        for t in &config.tokens {
            if !matches!(t.role.as_str(), "auditor" | "approver" | "admin") {
                return Err(crate::UiError::Config(format!(
                    "tokens: {} has role {:?}; use auditor, approver or admin",
                    t.name, t.role
                )));
            }
            if t.value().is_none() {
                return Err(crate::UiError::Config(format!(
                    "tokens: {} has no value (set token_env to a set variable, or token)",
                    t.name
                )));
            }
        }
        if let Some(login) = &config.login {
            login.check().map_err(crate::UiError::Config)?;
        }
        if config.memory_limit_mb == 0 {
            return Err(crate::UiError::Config(
                "memory_limit_mb = 0: no query could run (the default is 512)".into(),
            ));
        }
        if !config.demo_mode && config.tokens.is_empty() && config.login.is_none() {
            return Err(crate::UiError::Config(
                "no [[ui.tokens]], no [ui.login] and demo_mode is off: nobody could use the service"
                    .into(),
            ));
        }
        Ok(config)
    }
}
