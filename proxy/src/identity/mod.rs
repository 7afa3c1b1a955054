//! Workload identity: agents log in with the OIDC token their platform gives them
//! (GitHub Actions, Kubernetes service accounts, any OIDC provider), never with a
//! database password.
//!
//! - [`issuer`]: a configured issuer, its discovery document and cached JWKS;
//! - [`token`]: JWT validation against the issuers;
//! - [`roles`]: claims → role → target, upstream user, databases, session limits;
//! - [`jit`]: just-in-time credentials for clients that cannot send a token;
//! - [`authenticator`]: the gateway's [`Authenticator`](crate::auth::Authenticator):
//!   JIT credentials, then `[users.*]`, then tokens;
//! - [`api`]: `POST /v1/credentials` and `DELETE /v1/credentials/{user}`;
//! - [`dev_issuer`]: a local issuer for tests and demos (not for production);
//! - [`config`]: the `[identity]`, `[issuers.*]`, `[roles.*]`, `[jit]`, `[api]` sections.

pub mod api;
pub mod authenticator;
pub mod config;
pub mod dev_issuer;
pub mod issuer;
pub mod jit;
pub mod roles;
pub mod token;

use std::sync::Arc;

use chaperone_schemas::identity::{AuthMethod, Identity};

use crate::config::{Config, ConfigError};
use issuer::Issuer;
use roles::{NoRole, RoleGrant, Roles};
use token::{TokenError, TokenValidator, VerifiedToken};

pub use authenticator::GatewayAuthenticator;

/// Why a token login was refused: for the log and the audit record only; the
/// client gets a generic "Access denied".
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("token: {0}")]
    Token(#[from] TokenError),
    #[error("identity {} from {}: {reason}", identity.subject, identity.issuer)]
    Role {
        /// Who was refused (verified, without a role).
        identity: Box<Identity>,
        reason: NoRole,
    },
}

/// Tokens to identities to grants: the issuers and the roles.
pub struct WorkloadIdentity {
    validator: TokenValidator,
    /// Replaced on a config reload (`crate::control`); logins in flight keep
    /// the roles they started with.
    roles: std::sync::RwLock<Arc<Roles>>,
}

impl WorkloadIdentity {
    /// None when no issuer is configured (token login off).
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        if config.issuers.is_empty() {
            return Ok(None);
        }
        let mut issuers = Vec::new();
        for (name, i) in &config.issuers {
            issuers.push(Arc::new(
                Issuer::new(name, i).map_err(ConfigError::Invalid)?,
            ));
        }
        Ok(Some(WorkloadIdentity {
            validator: TokenValidator::new(issuers, config.identity.max_token_bytes),
            roles: std::sync::RwLock::new(Arc::new(Roles::from_config(&config.roles))),
        }))
    }

    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// Installs the roles of a reloaded config: later logins are mapped by them.
    pub fn set_roles(&self, roles: Roles) {
        *self.roles.write().expect("roles lock") = Arc::new(roles);
    }

    fn roles(&self) -> Arc<Roles> {
        self.roles.read().expect("roles lock").clone()
    }

    /// Validates `token` and finds the role granting `target`.
    pub async fn login(
        &self,
        token: &[u8],
        target: &str,
    ) -> Result<(Identity, RoleGrant), Refusal> {
        let verified = self.validator.validate(token).await?;
        let grant = self
            .roles()
            .resolve(&verified.issuer.name, &verified.claims, target)
            .map_err(|reason| Refusal::Role {
                identity: Box::new(identity_of(&verified, None)),
                reason,
            })?;
        Ok((identity_of(&verified, Some(&grant.role)), grant))
    }
}

/// The identity recorded for a verified token: display name from the issuer's
/// `display_name_claim`, claims without the issuer's `secret_claims`.
pub fn identity_of(token: &VerifiedToken, role: Option<&str>) -> Identity {
    let cfg = &token.issuer.config;
    let display_name = match token.claims.get(&cfg.display_name_claim) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(v @ serde_json::Value::Number(_)) => v.to_string(),
        _ => token.subject.clone(),
    };
    let mut claims = token.claims.clone();
    for secret in &cfg.secret_claims {
        claims.remove(secret);
    }
    Identity {
        issuer: cfg.issuer.clone(),
        subject: token.subject.clone(),
        display_name,
        auth_method: AuthMethod::OidcToken,
        role: role.map(str::to_string),
        claims: serde_json::Value::Object(claims),
        expires_at: Some(token.expires_at),
    }
}
