//! Roles: which verified identities may use which target, as which database
//! user, for how long. Matched on the token's claims.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::config::{ClaimPattern, RoleConfig, RoleTarget};

/// What a role grants for one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleGrant {
    pub role: String,
    pub target: String,
    /// The database user to log in as; None: the target's own user.
    pub upstream_user: Option<String>,
    /// Databases a session may start in; None: any.
    pub databases: Option<Vec<String>>,
    /// The longest session, in seconds.
    pub max_session_secs: Option<u64>,
    pub jit_max_ttl_secs: u64,
    /// The guardrail policy of the role.
    #[serde(default)]
    pub policy: Option<String>,
}

/// Why no role applies. Goes to the log and the audit record, never to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoRole {
    #[error("no role matches the identity's claims")]
    NoMatch,
    #[error("role(s) {roles} match but none grants target '{target}'")]
    TargetNotGranted { roles: String, target: String },
}

struct Role {
    name: String,
    issuer: Option<String>,
    conditions: Vec<(Vec<String>, Vec<String>)>,
    targets: BTreeMap<String, RoleTarget>,
    max_session_secs: Option<u64>,
    jit_max_ttl_secs: u64,
    policy: Option<String>,
}

/// The configured roles, most specific first: a role with more claim conditions
/// is tried before one with fewer, ties in name order. The first matching role
/// that grants the target wins, so a narrow role (one workflow, one service
/// account) takes precedence over a broad one (the whole organisation).
pub struct Roles {
    roles: Vec<Role>,
}

impl Roles {
    pub fn from_config(roles: &BTreeMap<String, RoleConfig>) -> Self {
        let mut roles: Vec<Role> = roles
            .iter()
            .map(|(name, r)| Role {
                name: name.clone(),
                issuer: r.issuer.clone(),
                conditions: r
                    .claims
                    .iter()
                    .map(|(claim, p)| {
                        let path = claim.split('/').map(str::to_string).collect();
                        let patterns = match p {
                            ClaimPattern::One(s) => vec![s.clone()],
                            ClaimPattern::AnyOf(v) => v.clone(),
                        };
                        (path, patterns)
                    })
                    .collect(),
                targets: r.targets.clone(),
                max_session_secs: r.max_session_secs,
                jit_max_ttl_secs: r.jit_max_ttl_secs,
                policy: r.policy.clone(),
            })
            .collect();
        // Stable: equal specificity keeps name order.
        roles.sort_by_key(|r| std::cmp::Reverse(r.conditions.len()));
        Roles { roles }
    }

    /// The grant for `target`, for an identity from issuer `issuer` (the key of
    /// `[issuers.*]`) with these claims.
    pub fn resolve(
        &self,
        issuer: &str,
        claims: &serde_json::Map<String, Value>,
        target: &str,
    ) -> Result<RoleGrant, NoRole> {
        let mut matching = Vec::new();
        for role in &self.roles {
            if role.issuer.as_deref().is_some_and(|i| i != issuer) {
                continue;
            }
            let all = role.conditions.iter().all(|(path, patterns)| {
                lookup(claims, path).is_some_and(|v| value_matches(v, patterns))
            });
            if !all {
                continue;
            }
            if let Some(t) = role.targets.get(target) {
                return Ok(RoleGrant {
                    role: role.name.clone(),
                    target: target.to_string(),
                    upstream_user: t.upstream_user.clone(),
                    databases: t.databases.clone(),
                    max_session_secs: role.max_session_secs,
                    jit_max_ttl_secs: role.jit_max_ttl_secs,
                    policy: role.policy.clone(),
                });
            }
            matching.push(role.name.as_str());
        }
        if matching.is_empty() {
            Err(NoRole::NoMatch)
        } else {
            Err(NoRole::TargetNotGranted {
                roles: matching.join(", "),
                target: target.to_string(),
            })
        }
    }
}

impl RoleGrant {
    pub fn max_session(&self) -> Option<Duration> {
        self.max_session_secs.map(Duration::from_secs)
    }
}

fn lookup<'a>(claims: &'a serde_json::Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for key in rest {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

/// A claim matches when its value (or, for a list, any element) matches any
/// pattern. Numbers and booleans match their JSON text; objects never match.
fn value_matches(value: &Value, patterns: &[String]) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| scalar_matches(v, patterns)),
        v => scalar_matches(v, patterns),
    }
}

fn scalar_matches(value: &Value, patterns: &[String]) -> bool {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return false,
    };
    patterns.iter().any(|p| glob_matches(p, &text))
}

/// `*` matches any run of characters (including `/`), `?` one character;
/// everything else matches itself. A pattern without either is an exact match.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("acme/orders", "acme/orders"));
        assert!(!glob_matches("acme/orders", "acme/orders2"));
        assert!(glob_matches("acme/*", "acme/orders"));
        assert!(glob_matches(
            "acme/orders/.github/workflows/*.yml@refs/heads/main",
            "acme/orders/.github/workflows/migrate.yml@refs/heads/main"
        ));
        assert!(!glob_matches(
            "acme/*@refs/heads/main",
            "acme/x@refs/heads/dev"
        ));
        assert!(glob_matches("v?", "v1"));
        assert!(!glob_matches("v?", "v12"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("", "x"));
    }

    fn roles() -> Roles {
        let text = r#"
            [ci]
            issuer = "github"
            claims = { repository = "acme/orders", ref = ["refs/heads/main", "refs/tags/v*"] }
            max_session_secs = 600
            [ci.targets.orders]
            upstream_user = "migrator"
            [k8s]
            claims = { "kubernetes.io/namespace" = "shop", groups = "db-readers" }
            [k8s.targets.orders-ro]
            databases = ["shop"]
        "#;
        let cfg: BTreeMap<String, RoleConfig> = toml::from_str(text).unwrap();
        Roles::from_config(&cfg)
    }

    fn claims(v: serde_json::Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn exact_glob_list_and_nested_claims() {
        let r = roles();
        let gh = claims(serde_json::json!({"repository": "acme/orders", "ref": "refs/tags/v1.2"}));
        let g = r.resolve("github", &gh, "orders").unwrap();
        assert_eq!(g.role, "ci");
        assert_eq!(g.upstream_user.as_deref(), Some("migrator"));
        assert_eq!(g.max_session_secs, Some(600));
        // Same claims from another issuer: the role is pinned to github.
        assert!(matches!(
            r.resolve("other", &gh, "orders"),
            Err(NoRole::NoMatch)
        ));
        let dev = claims(serde_json::json!({"repository": "acme/orders", "ref": "refs/heads/dev"}));
        assert!(r.resolve("github", &dev, "orders").is_err());
        let k8s = claims(serde_json::json!({
            "kubernetes.io": {"namespace": "shop"}, "groups": ["a", "db-readers"]
        }));
        assert_eq!(r.resolve("k", &k8s, "orders-ro").unwrap().role, "k8s");
        let err = r.resolve("k", &k8s, "orders").unwrap_err().to_string();
        assert!(err.contains("k8s") && err.contains("orders"), "{err}");
        let other_ns = claims(
            serde_json::json!({"kubernetes.io": {"namespace": "x"}, "groups": ["db-readers"]}),
        );
        assert!(matches!(
            r.resolve("k", &other_ns, "orders-ro"),
            Err(NoRole::NoMatch)
        ));
    }
}
