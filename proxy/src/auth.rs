//! Client authentication: the gateway acting as a MySQL server.
//!
//! The session drives the wire exchange (greeting, auth switch, caching_sha2 full
//! auth); an [`Authenticator`] decides. Whatever the method, what comes out is a
//! [`Grant`]: an [`Identity`] and the target it may use. The workload-identity
//! issue adds OIDC authenticators behind the same trait.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chaperone_schemas::Identity;

use crate::config::{Config, ConfigError, Secret};
use chaperone_mysql::protocol::handshake::{
    CACHING_SHA2_PASSWORD, CLEAR_PASSWORD, NATIVE_PASSWORD, SCRAMBLE_LEN,
};

/// What the session knows about a login attempt.
#[derive(Debug, Clone)]
pub struct LoginContext {
    /// The MySQL user name the client sent.
    pub user: String,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The challenge sent in the greeting (or the auth switch).
    pub nonce: [u8; SCRAMBLE_LEN],
}

/// What the client proved.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A challenge response computed by the named plugin.
    Scramble { plugin: &'a str, data: &'a [u8] },
    /// A password (or token) in clear text, received over a secure channel.
    Cleartext(&'a [u8]),
}

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Grant {
    pub identity: Identity,
    /// The target the session goes to.
    pub target: String,
    /// The database user the gateway logs in as; None: the target's own `user`.
    pub upstream_user: Option<String>,
    /// Databases the session may start in; None: any.
    pub databases: Option<Vec<String>>,
    /// When the session must end (the role's longest session, or the expiry of
    /// the credentials that established it); None: no limit.
    pub deadline: Option<std::time::SystemTime>,
    /// Cancelled when the credentials that established the session are revoked
    /// (just-in-time credentials); the session then ends.
    pub revocation: Option<tokio_util::sync::CancellationToken>,
    /// The guardrail policy for the session (`[policies.NAME]`); None: not guarded.
    pub policy: Option<String>,
}

impl Grant {
    /// A grant without limits: the target's own database user, any database.
    pub fn new(identity: Identity, target: impl Into<String>) -> Self {
        Grant {
            identity,
            target: target.into(),
            upstream_user: None,
            databases: None,
            deadline: None,
            revocation: None,
            policy: None,
        }
    }
}

/// Why authentication failed. The client only ever sees a generic "Access denied";
/// the reason goes to the log and the audit record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("{0}")]
    Refused(String),
    /// Refused after the identity was established (a verified token whose role
    /// does not grant the target, expired credentials): the audit record names
    /// who was refused.
    #[error("{reason}")]
    Denied {
        identity: Box<Identity>,
        reason: String,
    },
}

/// Decides who a client is.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The auth plugin the client must use for `user`; the session switches the
    /// client to it when it started with another one.
    fn plugin_for(&self, user: &str) -> &'static str;

    /// For caching_sha2_password: should the session ask for the full password
    /// (only ever over TLS) instead of accepting the fast-path scramble?
    fn wants_full_auth(&self, _user: &str) -> bool {
        false
    }

    async fn authenticate(&self, ctx: &LoginContext, proof: Proof<'_>) -> Result<Grant, AuthError>;
}

/// Users declared in the `[users.*]` section of the config, with passwords.
///
/// For caching_sha2_password it behaves like the server: the first login of a
/// user over TLS is a full authentication, after which the user is cached and
/// the fast path (challenge-response) is used. Without TLS the fast path is always
/// used: the gateway knows the secret, so the challenge-response is as strong as
/// with a warm cache, and the password never travels.
pub struct ConfigUsers {
    users: BTreeMap<String, ConfigUser>,
    cached: Mutex<HashSet<String>>,
}

struct ConfigUser {
    target: String,
    password: Secret,
    plugin: &'static str,
    policy: Option<String>,
}

impl ConfigUsers {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut users = BTreeMap::new();
        for (name, u) in &config.users {
            let plugin = if u.plugin == NATIVE_PASSWORD {
                NATIVE_PASSWORD
            } else {
                CACHING_SHA2_PASSWORD
            };
            users.insert(
                name.clone(),
                ConfigUser {
                    target: u.target.clone(),
                    password: u.password.resolve(&format!("users.{name}"))?,
                    plugin,
                    policy: u.policy.clone(),
                },
            );
        }
        Ok(ConfigUsers {
            users,
            cached: Mutex::new(HashSet::new()),
        })
    }
}

impl ConfigUsers {
    /// Whether `user` is declared in `[users.*]`.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

#[async_trait::async_trait]
impl Authenticator for ConfigUsers {
    fn plugin_for(&self, user: &str) -> &'static str {
        // Unknown users get the default plugin, so that an attacker cannot tell
        // which names exist from the exchange.
        self.users
            .get(user)
            .map_or(CACHING_SHA2_PASSWORD, |u| u.plugin)
    }

    fn wants_full_auth(&self, user: &str) -> bool {
        !self.cached.lock().expect("cache lock").contains(user)
    }

    async fn authenticate(&self, ctx: &LoginContext, proof: Proof<'_>) -> Result<Grant, AuthError> {
        let user = self.users.get(&ctx.user).ok_or(AuthError::UnknownUser)?;
        let ok = match proof {
            Proof::Scramble { plugin, data } => {
                verify_scramble(plugin, &ctx.nonce, user.password.expose(), data)
            }
            Proof::Cleartext(password) => {
                let ok = constant_time_eq(password, user.password.expose());
                if ok && user.plugin == CACHING_SHA2_PASSWORD {
                    self.cached
                        .lock()
                        .expect("cache lock")
                        .insert(ctx.user.clone());
                }
                ok
            }
        };
        if !ok {
            return Err(AuthError::WrongPassword);
        }
        let mut grant = Grant::new(Identity::config_user(&ctx.user), user.target.clone());
        grant.policy = user.policy.clone();
        Ok(grant)
    }
}

/// Checks a challenge response against a known password.
pub fn verify_scramble(
    plugin: &str,
    nonce: &[u8; SCRAMBLE_LEN],
    password: &[u8],
    response: &[u8],
) -> bool {
    if password.is_empty() {
        return response.is_empty();
    }
    match plugin {
        NATIVE_PASSWORD => {
            mysql_common::auth::plugins::mysql_native_password::scramble_native(nonce, password)
                .is_some_and(|expected| constant_time_eq(&expected, response))
        }
        CACHING_SHA2_PASSWORD => {
            mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(nonce, password)
                .is_some_and(|expected| constant_time_eq(&expected, response))
        }
        CLEAR_PASSWORD => false,
        _ => false,
    }
}

/// Compares two byte strings in time that depends only on their lengths
/// (`subtle`, the one constant-time compare of the project).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrambles_verify_only_with_the_right_password() {
        let nonce = *b"0123456789abcdefghij";
        for plugin in [NATIVE_PASSWORD, CACHING_SHA2_PASSWORD] {
            let good = match plugin {
                NATIVE_PASSWORD => {
                    mysql_common::auth::plugins::mysql_native_password::scramble_native(
                        &nonce, b"s3cret",
                    )
                    .unwrap()
                    .to_vec()
                }
                _ => mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(
                    &nonce, b"s3cret",
                )
                .unwrap()
                .to_vec(),
            };
            assert!(verify_scramble(plugin, &nonce, b"s3cret", &good));
            assert!(!verify_scramble(plugin, &nonce, b"other", &good));
            assert!(!verify_scramble(
                plugin,
                &nonce,
                b"s3cret",
                &good[..good.len() - 1]
            ));
            assert!(!verify_scramble(plugin, &nonce, b"s3cret", &[]));
        }
        assert!(verify_scramble(NATIVE_PASSWORD, &nonce, b"", &[]));
    }
}
