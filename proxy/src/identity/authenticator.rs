//! The gateway's authenticator: one MySQL user name, three ways in, tried in
//! this order:
//! 1. just-in-time credentials (`jit_…` user names minted by the API);
//! 2. users declared in `[users.*]` (password login);
//! 3. a token as the password (`mysql_clear_password`), the user name naming
//!    the target.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::jit::{JitStore, USER_PREFIX};
use super::roles::RoleGrant;
use super::WorkloadIdentity;
use crate::auth::{AuthError, Authenticator, ConfigUsers, Grant, LoginContext, Proof};
use crate::config::{Config, ConfigError};
use chaperone_mysql::protocol::handshake::{
    CACHING_SHA2_PASSWORD, CLEAR_PASSWORD, NATIVE_PASSWORD,
};

pub struct GatewayAuthenticator {
    users: ConfigUsers,
    workload: Option<Arc<WorkloadIdentity>>,
    jit: Option<Arc<JitStore>>,
}

impl GatewayAuthenticator {
    pub fn new(
        users: ConfigUsers,
        workload: Option<Arc<WorkloadIdentity>>,
        jit: Option<Arc<JitStore>>,
    ) -> Self {
        GatewayAuthenticator {
            users,
            workload,
            jit,
        }
    }

    /// Everything from the config: `[users.*]`, issuers and roles, and the JIT
    /// store (opened from `[jit] store`) when tokens and `[jit]` are enabled.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let users = ConfigUsers::from_config(config)?;
        let workload = WorkloadIdentity::from_config(config)?.map(Arc::new);
        let jit = match (&workload, config.jit.enabled) {
            (Some(_), true) => {
                let backend = config.jit.store.as_ref().map(|p| {
                    Box::new(super::jit::FileBackend::new(p))
                        as Box<dyn super::jit::CredentialBackend>
                });
                Some(Arc::new(
                    JitStore::open(backend, config.jit.max_per_identity)
                        .map_err(|e| ConfigError::Invalid(e.to_string()))?,
                ))
            }
            _ => None,
        };
        Ok(Self::new(users, workload, jit))
    }

    pub fn workload(&self) -> Option<&Arc<WorkloadIdentity>> {
        self.workload.as_ref()
    }

    pub fn jit(&self) -> Option<&Arc<JitStore>> {
        self.jit.as_ref()
    }
}

/// The session deadline for a grant: the role's longest session, and no later
/// than `credential_expiry` when the credentials themselves expire.
pub fn deadline(grant: &RoleGrant, credential_expiry: Option<i64>) -> Option<SystemTime> {
    let by_role = grant.max_session().map(|d| SystemTime::now() + d);
    let by_credential =
        credential_expiry.map(|t| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64));
    match (by_role, by_credential) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn grant_of(identity: chaperone_schemas::Identity, g: &RoleGrant, expiry: Option<i64>) -> Grant {
    Grant {
        identity,
        target: g.target.clone(),
        upstream_user: g.upstream_user.clone(),
        databases: g.databases.clone(),
        deadline: deadline(g, expiry),
        revocation: None,
        policy: g.policy.clone(),
    }
}

#[async_trait]
impl Authenticator for GatewayAuthenticator {
    fn plugin_for(&self, user: &str) -> &'static str {
        if let Some(c) = self.jit.as_ref().and_then(|j| j.get(user)) {
            return if c.plugin == NATIVE_PASSWORD {
                NATIVE_PASSWORD
            } else {
                CACHING_SHA2_PASSWORD
            };
        }
        if self.users.contains(user) || self.workload.is_none() || user.starts_with(USER_PREFIX) {
            return self.users.plugin_for(user);
        }
        CLEAR_PASSWORD
    }

    fn wants_full_auth(&self, user: &str) -> bool {
        // JIT credentials are verified from their hashes: the fast path suffices.
        if self.jit.as_ref().is_some_and(|j| j.get(user).is_some()) {
            return false;
        }
        self.users.wants_full_auth(user)
    }

    async fn authenticate(&self, ctx: &LoginContext, proof: Proof<'_>) -> Result<Grant, AuthError> {
        if let Some(cred) = self.jit.as_ref().and_then(|j| j.get(&ctx.user)) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let ok = match proof {
                Proof::Scramble { plugin, data } => cred.verify_scramble(plugin, &ctx.nonce, data),
                Proof::Cleartext(p) => cred.verify_password(p),
            };
            if !ok {
                return Err(AuthError::WrongPassword);
            }
            if cred.is_expired(now) {
                return Err(AuthError::Denied {
                    identity: Box::new(cred.identity.clone()),
                    reason: format!(
                        "just-in-time credentials {} of {} expired at {}",
                        cred.user, cred.identity.subject, cred.expires_at
                    ),
                });
            }
            let mut grant = grant_of(cred.identity.clone(), &cred.grant, Some(cred.expires_at));
            grant.revocation = Some(cred.revocation().clone());
            return Ok(grant);
        }
        if self.users.contains(&ctx.user) {
            return self.users.authenticate(ctx, proof).await;
        }
        if ctx.user.starts_with(USER_PREFIX) {
            return Err(AuthError::Refused(format!(
                "unknown, revoked or expired just-in-time credentials {}",
                ctx.user
            )));
        }
        let Some(workload) = &self.workload else {
            return Err(AuthError::UnknownUser);
        };
        let Proof::Cleartext(token) = proof else {
            return Err(AuthError::Refused(
                "token login needs the mysql_clear_password plugin (e.g. --enable-cleartext-plugin)".into(),
            ));
        };
        match workload.login(token, &ctx.user).await {
            Ok((identity, grant)) => Ok(grant_of(identity, &grant, None)),
            Err(super::Refusal::Role { identity, reason }) => Err(AuthError::Denied {
                reason: format!(
                    "identity {} from {}: {reason}",
                    identity.subject, identity.issuer
                ),
                identity,
            }),
            Err(refusal) => Err(AuthError::Refused(refusal.to_string())),
        }
    }
}
