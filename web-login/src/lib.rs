//! People's login to Chaperone's web UI (auditors, approvers, admins): the OIDC
//! authorization code flow with PKCE against the organisation's identity
//! provider, and the `groups` claim mapped to Chaperone roles.
//!
//! Agents do not use this: they log in to the gateway with workload tokens
//! (`chaperone_proxy::identity`). People get a browser session from the web UI,
//! which uses this crate in three steps:
//!
//! 1. [`WebLogin::discover`] once at start (strict OIDC discovery: the
//!    `openidconnect` crate's types; providers that people log in to — Okta,
//!    Entra ID, Keycloak, Google, Auth0 — publish complete documents);
//! 2. [`WebLogin::begin`] for each login: the URL to redirect the browser to,
//!    and a [`PendingLogin`] (state, nonce, PKCE verifier) that the web UI keeps
//!    server-side (or in an encrypted, HTTP-only cookie) until the callback;
//! 3. [`WebLogin::finish`] on the callback: checks the state, exchanges the code
//!    with the PKCE verifier, verifies the ID token (signature, issuer, audience,
//!    expiry, nonce) and returns the [`WebUser`] with its roles.

mod config;

use std::collections::BTreeSet;

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

pub use config::{default_scopes, is_loopback_origin, origin_of, LoginConfig};

/// A role in the web UI. Each implies the ones before it: an admin is also an
/// approver and an auditor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebRole {
    /// Reads sessions, statements, replays and exports.
    Auditor,
    /// Decides held statements and connect approvals.
    Approver,
    /// Everything, including settings.
    Admin,
}

#[derive(Debug, thiserror::Error)]
pub enum WebLoginError {
    #[error("web login: {0}")]
    Config(String),
    #[error("web login: discovery of {issuer} failed: {message}")]
    Discovery { issuer: String, message: String },
    #[error("web login: the state does not match the login that was started (replayed or forged callback)")]
    State,
    #[error("web login: code exchange failed: {0}")]
    Exchange(String),
    #[error("web login: the provider returned no ID token")]
    NoIdToken,
    #[error("web login: ID token rejected: {0}")]
    IdToken(String),
    #[error("web login: {subject} is in none of the auditor, approver or admin groups")]
    NoRole { subject: String },
}

/// A login in progress, between [`WebLogin::begin`] and [`WebLogin::finish`].
/// Secret: keep it server-side or in an encrypted, HTTP-only cookie.
#[derive(Serialize, Deserialize)]
pub struct PendingLogin {
    state: String,
    nonce: String,
    pkce_verifier: String,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLogin(<secret>)")
    }
}

/// A person who logged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebUser {
    pub issuer: String,
    pub subject: String,
    /// `name`, else `preferred_username`, else `email`, else the subject.
    pub display_name: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// Never empty: a person without a role is refused at login.
    pub roles: BTreeSet<WebRole>,
    /// When the ID token expires (Unix seconds): the longest the web session
    /// should last without logging in again.
    pub expires_at: i64,
}

impl WebUser {
    pub fn has(&self, role: WebRole) -> bool {
        self.roles.contains(&role)
    }
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The web login for one identity provider.
pub struct WebLogin {
    config: LoginConfig,
    client: Client,
    http: reqwest::Client,
}

impl WebLogin {
    /// Reads the provider's discovery document and keys.
    pub async fn discover(config: LoginConfig) -> Result<Self, WebLoginError> {
        let http = reqwest::Client::builder()
            // The token endpoint must not redirect the code elsewhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| WebLoginError::Config(e.to_string()))?;
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| WebLoginError::Config(format!("issuer: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| WebLoginError::Discovery {
                issuer: config.issuer.clone(),
                message: error_chain(&e),
            })?;
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| WebLoginError::Config(format!("redirect_url: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            config
                .client_secret()
                .map_err(WebLoginError::Config)?
                .map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok(WebLogin {
            config,
            client,
            http,
        })
    }

    /// Starts a login: the URL to send the browser to, and what to keep until
    /// the callback. `extra` are more authorization parameters (`login_hint`,
    /// `prompt`, ...).
    pub fn begin(&self, extra: &[(&str, &str)]) -> (String, PendingLogin) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in self.config.scopes.clone().unwrap_or_else(default_scopes) {
            request = request.add_scope(Scope::new(s.clone()));
        }
        for (k, v) in extra {
            request = request.add_extra_param(*k, *v);
        }
        let (url, state, nonce) = request.url();
        (
            url.to_string(),
            PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        )
    }

    /// Completes a login from the callback's `state` and `code`.
    pub async fn finish(
        &self,
        pending: PendingLogin,
        state: &str,
        code: &str,
    ) -> Result<WebUser, WebLoginError> {
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            state.as_bytes(),
            pending.state.as_bytes(),
        )) {
            return Err(WebLoginError::State);
        }
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| WebLoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| WebLoginError::Exchange(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(WebLoginError::NoIdToken)?;
        let verifier = self.client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce))
            .map_err(|e| WebLoginError::IdToken(e.to_string()))?;
        let subject = claims.subject().as_str().to_string();
        // The groups claim is provider-specific, so the typed claims do not carry
        // it; the token's signature, issuer, audience, expiry and nonce were just
        // verified above, so its payload is read again as plain JSON for it.
        let extra = payload_of(&id_token.to_string())?;
        let groups: Vec<String> = match extra.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(v)) => v
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        let roles = roles_for(&self.config, &groups);
        if roles.is_empty() {
            return Err(WebLoginError::NoRole { subject });
        }
        let email = claims.email().map(|e| e.as_str().to_string());
        let display_name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string())
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_string()))
            .or_else(|| email.clone())
            .unwrap_or_else(|| subject.clone());
        Ok(WebUser {
            issuer: claims.issuer().as_str().to_string(),
            subject,
            display_name,
            email,
            groups,
            roles,
            expires_at: claims.expiration().timestamp(),
        })
    }
}

/// The roles a person's groups give: each role implies the lesser ones.
pub fn roles_for(config: &LoginConfig, groups: &[String]) -> BTreeSet<WebRole> {
    let member = |list: &[String]| groups.iter().any(|g| list.contains(g));
    let mut roles = BTreeSet::new();
    if member(&config.admin_groups) {
        roles.extend([WebRole::Admin, WebRole::Approver, WebRole::Auditor]);
    }
    if member(&config.approver_groups) {
        roles.extend([WebRole::Approver, WebRole::Auditor]);
    }
    if member(&config.auditor_groups) {
        roles.insert(WebRole::Auditor);
    }
    roles
}

fn payload_of(jwt: &str) -> Result<serde_json::Map<String, serde_json::Value>, WebLoginError> {
    use base64::Engine;
    let part = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| WebLoginError::IdToken("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| WebLoginError::IdToken("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| WebLoginError::IdToken("payload is not JSON".into()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_roles_with_implication() {
        let config: LoginConfig = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example", "client_id": "ui",
            "redirect_url": "https://chaperone.example/auth/callback",
            "auditor_groups": ["audit"], "approver_groups": ["dba"], "admin_groups": ["platform"]
        }))
        .unwrap();
        let r = |g: &[&str]| {
            roles_for(
                &config,
                &g.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(r(&["audit"]), BTreeSet::from([WebRole::Auditor]));
        assert_eq!(
            r(&["dba"]),
            BTreeSet::from([WebRole::Auditor, WebRole::Approver])
        );
        assert_eq!(r(&["platform"]).len(), 3);
        assert!(r(&["sales"]).is_empty());
    }
}
