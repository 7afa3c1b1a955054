//! `[ui.login]`: the identity provider people sign in with, and the browser
//! sessions it opens. One type for the audit service's config and the login
//! flow (it used to be copied field by field between the two).

use std::path::PathBuf;

use serde::Deserialize;

/// `[ui.login]`: the identity provider people log in with.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The provider's issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// The client secret: from the environment (preferred), a file, or inline
    /// (tests and demos). None: a public client (PKCE only).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// This UI's callback, as registered at the provider: `https://HOST/auth/callback`
    /// (`http://` only on loopback). Its origin is the UI's origin.
    pub redirect_url: String,
    /// Scopes beyond `openid` (default: profile, email, groups).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The ID token claim that lists the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Groups whose members get each role (an admin is also an approver and an
    /// auditor; an approver is also an auditor).
    #[serde(default)]
    pub auditor_groups: Vec<String>,
    #[serde(default)]
    pub approver_groups: Vec<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// The key that signs session cookies (at least 32 bytes): the same on every
    /// replica. Without it, a random key per start (everyone logs in again after
    /// a restart).
    #[serde(default)]
    pub session_key_env: Option<String>,
    #[serde(default)]
    pub session_key_file: Option<PathBuf>,
    /// Longest a browser session lasts.
    #[serde(default = "default_session_secs")]
    pub session_secs: u64,
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// Scopes beyond `openid` when `scopes` is not set.
pub fn default_scopes() -> Vec<String> {
    vec!["profile".into(), "email".into(), "groups".into()]
}
fn default_session_secs() -> u64 {
    8 * 3600
}

impl std::fmt::Debug for LoginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .field("groups_claim", &self.groups_claim)
            .finish_non_exhaustive()
    }
}

impl LoginConfig {
    /// Checks what can be checked without the provider; resolves the secrets.
    pub fn check(&self) -> Result<(), String> {
        if self.auditor_groups.is_empty()
            && self.approver_groups.is_empty()
            && self.admin_groups.is_empty()
        {
            return Err(
                "login: no auditor_groups, approver_groups or admin_groups: nobody could log in"
                    .into(),
            );
        }
        let origin = origin_of(&self.redirect_url)?;
        if !self.redirect_url[origin.len()..].starts_with("/auth/callback") {
            return Err(format!(
                "login: redirect_url {:?} must be this UI's /auth/callback",
                self.redirect_url
            ));
        }
        if origin.starts_with("http://") && !is_loopback_origin(&origin) {
            return Err(format!(
                "login: redirect_url {:?} is plain HTTP on a non-loopback host: use https",
                self.redirect_url
            ));
        }
        if self.session_secs == 0 {
            return Err("login: session_secs must be more than 0".into());
        }
        self.client_secret()?;
        self.session_key()?;
        Ok(())
    }

    /// The client secret, resolved (None: a public client).
    pub fn client_secret(&self) -> Result<Option<String>, String> {
        let secret = chaperone_config::SecretSource::of(
            "client_secret",
            self.client_secret_env.clone(),
            self.client_secret_file.clone(),
            self.client_secret.clone(),
        )
        .resolve_optional("ui.login.client_secret")
        .map_err(|e| e.to_string())?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        String::from_utf8(secret.expose().to_vec())
            .map(Some)
            .map_err(|_| "ui.login.client_secret is not UTF-8".into())
    }

    /// The cookie-signing key, resolved (None: a random key per start).
    pub fn session_key(&self) -> Result<Option<Vec<u8>>, String> {
        if self.session_key_env.is_none() && self.session_key_file.is_none() {
            return Ok(None);
        }
        let key = chaperone_config::SecretSource::of(
            "session_key",
            self.session_key_env.clone(),
            self.session_key_file.clone(),
            None,
        )
        .resolve("ui.login.session_key")
        .map_err(|e| e.to_string())?;
        if key.expose().len() < 32 {
            return Err("ui.login.session_key is shorter than 32 bytes".into());
        }
        Ok(Some(key.expose().to_vec()))
    }
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> Result<String, String> {
    let bad = || format!("login: redirect_url {url:?} is not an http(s) URL");
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host_len = rest.find('/').unwrap_or(rest.len());
    if host_len == 0 {
        return Err(bad());
    }
    Ok(url[..url.len() - rest.len() + host_len].to_string())
}

pub fn is_loopback_origin(origin: &str) -> bool {
    let host = origin.trim_start_matches("http://");
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}
