//! Who is on the other end of a session.

use serde::{Deserialize, Serialize};

/// How an identity proved itself to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A user declared in the gateway's config, with a password
    /// (`mysql_native_password` or `caching_sha2_password`).
    GatewayPassword,
    /// An OIDC token sent as a clear-text password over TLS.
    OidcToken,
    /// Just-in-time credentials minted for an OIDC identity.
    JitCredential,
    /// Not a client: a control-plane record (a config reload), attributed to
    /// the signal's sender or the polled source.
    ControlPlane,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::GatewayPassword => "gateway_password",
            AuthMethod::OidcToken => "oidc_token",
            AuthMethod::JitCredential => "jit_credential",
            AuthMethod::ControlPlane => "control_plane",
        }
    }
}

/// The identity of a session's client, whatever the method that established it.
///
/// This is what gets recorded on every session and attributed to every statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Who vouched for the identity: an OIDC issuer URL, or `chaperone:config` for
    /// users declared in the gateway's config.
    pub issuer: String,
    /// The stable subject within the issuer.
    pub subject: String,
    /// A human-readable name for lists and UIs.
    pub display_name: String,
    pub auth_method: AuthMethod,
    /// The role the identity was mapped to, if roles are configured.
    pub role: Option<String>,
    /// The identity's claims as a JSON object (secrets removed); `{}` when none.
    pub claims: serde_json::Value,
    /// When the credential that established the identity expires (Unix seconds).
    pub expires_at: Option<i64>,
}

impl Identity {
    /// The issuer recorded for users declared in the gateway's own config.
    pub const CONFIG_ISSUER: &'static str = "chaperone:config";

    /// An identity for a user declared in the gateway's config.
    pub fn config_user(user: &str) -> Self {
        Identity {
            issuer: Self::CONFIG_ISSUER.to_string(),
            subject: user.to_string(),
            display_name: user.to_string(),
            auth_method: AuthMethod::GatewayPassword,
            role: None,
            claims: serde_json::Value::Object(Default::default()),
            expires_at: None,
        }
    }
}
