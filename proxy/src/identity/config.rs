//! The workload-identity part of `chaperone.toml`: `[identity]`, `[issuers.*]`,
//! `[roles.*]`, `[jit]` and `[api]`.
//!
//! Examples: `deploy/chaperone.toml` (all keys), `deploy/github-actions.toml` and
//! `deploy/kubernetes.toml`; the tests parse each of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[identity]`: settings shared by every issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Accept `mysql_clear_password` (the token as password) on connections
    /// without TLS, but only from a loopback address. For local development: a
    /// token in clear text on a network can be replayed by anyone who sees it.
    #[serde(default)]
    pub allow_cleartext_without_tls: bool,
    /// Tokens longer than this are refused before any decoding.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            allow_cleartext_without_tls: false,
            max_token_bytes: default_max_token_bytes(),
        }
    }
}

/// `[issuers.NAME]`: an OIDC issuer whose tokens the gateway accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer URL, exactly as in the tokens' `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one.
    pub audiences: Vec<String>,
    /// The JWKS URL. Default: `jwks_uri` from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted signature algorithms (`RS256`, `RS384`, `RS512`, `PS256`, `PS384`,
    /// `PS512`, `ES256`, `ES384`, `EdDSA`). Symmetric (`HS*`) and `none` are never
    /// accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Require an `nbf` claim (default). Some providers (Auth0, Keycloak access
    /// tokens) do not send one; set `false` for them. A present `nbf` is always
    /// checked, and one of the wrong type is always refused.
    #[serde(default = "default_true")]
    pub require_nbf: bool,
    /// Accepted authorized parties: when set, the token's `azp` (or, for OAuth
    /// access tokens, `client_id`) must be one of these: the client the token
    /// was issued to, not just the audience it names.
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    /// The claim shown as the identity's display name (default `sub`).
    #[serde(default = "default_display_claim")]
    pub display_name_claim: String,
    /// Claims never recorded (removed from the identity's claim set).
    #[serde(default)]
    pub secret_claims: Vec<String>,
    /// Keys are fetched again after this long, even if no unknown `kid` was seen.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_secs: u64,
    /// At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// A PEM file of CA certificates for the issuer's HTTPS endpoints, in addition
    /// to the public web roots (e.g. an in-cluster Kubernetes API server:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain `http://` issuer and JWKS URLs are refused unless they point to a
    /// loopback address and this is set (tests and the dev issuer only).
    #[serde(default)]
    pub allow_http_loopback: bool,
}

/// `[roles.NAME]`: which identities may use which targets, and how. When several
/// roles match an identity, the one with the most claim conditions that grants
/// the requested target wins (ties: name order).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Only tokens from this issuer (a key of `[issuers.*]`) match. Default: any.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Claim conditions, all of which must hold. A key is a claim name; a `/`
    /// walks into nested objects (`"kubernetes.io/namespace"`). A value is a
    /// string (exact, or a glob with `*` and `?`), or a list of strings (any
    /// one). A claim that is a list matches when any element does.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimPattern>,
    /// The targets this role may use.
    pub targets: BTreeMap<String, RoleTarget>,
    /// The longest a session may last. Default: no limit beyond the idle timeout.
    #[serde(default)]
    pub max_session_secs: Option<u64>,
    /// The longest lifetime of just-in-time credentials for this role.
    #[serde(default = "default_jit_max_ttl")]
    pub jit_max_ttl_secs: u64,
    /// The guardrail policy (`[policies.NAME]`) for this role's sessions.
    #[serde(default)]
    pub policy: Option<String>,
}

/// A claim condition: one pattern or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimPattern {
    One(String),
    AnyOf(Vec<String>),
}

/// `[roles.NAME.targets.TARGET]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTarget {
    /// The database user the gateway logs in as for this role (declared under
    /// `[targets.TARGET.users.USER]`). Default: the target's own `user`.
    #[serde(default)]
    pub upstream_user: Option<String>,
    /// Databases a session may start in. Default: any.
    #[serde(default)]
    pub databases: Option<Vec<String>>,
}

/// `[jit]`: just-in-time credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The lifetime of credentials when the request names none.
    #[serde(default = "default_jit_ttl")]
    pub default_ttl_secs: u64,
    /// Where credentials are kept so that they survive a restart. Only hashes of
    /// the passwords are stored. Default: in memory only.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Most credentials alive at once per identity.
    #[serde(default = "default_jit_per_identity")]
    pub max_per_identity: usize,
}

impl Default for JitConfig {
    fn default() -> Self {
        JitConfig {
            enabled: true,
            default_ttl_secs: default_jit_ttl(),
            store: None,
            max_per_identity: default_jit_per_identity(),
        }
    }
}

/// `[api]`: the gateway's HTTP API for agents (`/v1/credentials`).
///
/// Its own listener, not the admin one: the admin endpoint (metrics, health) is
/// for the operator's network, this one is for agents, and it carries bearer
/// tokens, so it is served over TLS with the gateway's `[tls]` certificate.
/// Plain HTTP only on a loopback address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
}

fn default_true() -> bool {
    true
}
fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_leeway() -> u64 {
    30
}
fn default_display_claim() -> String {
    "sub".into()
}
fn default_jwks_max_age() -> u64 {
    3600
}
fn default_jwks_min_refresh() -> u64 {
    30
}
fn default_jit_max_ttl() -> u64 {
    3600
}
fn default_jit_ttl() -> u64 {
    900
}
fn default_jit_per_identity() -> usize {
    16
}

/// Signature algorithms the gateway accepts, by their JOSE names.
pub fn parse_algorithm(name: &str) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// Checks the identity sections and their references to each other and to
/// `[targets.*]`.
pub fn validate(config: &crate::config::Config) -> Result<(), crate::config::ConfigError> {
    let invalid = |m: String| Err(crate::config::ConfigError::Invalid(m));
    if config.identity.max_token_bytes < 1024 || config.identity.max_token_bytes > 1 << 20 {
        return invalid("identity.max_token_bytes must be between 1 KiB and 1 MiB".into());
    }
    for (name, issuer) in &config.issuers {
        if issuer.audiences.is_empty() {
            return invalid(format!(
                "issuers.{name}.audiences is empty: list the `aud` values this gateway accepts (e.g. [\"chaperone\"])"
            ));
        }
        if issuer.algorithms.is_empty() {
            return invalid(format!("issuers.{name}.algorithms is empty"));
        }
        for alg in &issuer.algorithms {
            if parse_algorithm(alg).is_none() {
                return invalid(format!(
                    "issuers.{name}.algorithms: \"{alg}\" is not accepted; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                ));
            }
        }
        let urls = std::iter::once(&issuer.issuer).chain(issuer.jwks_url.as_ref());
        for url in urls {
            if let Err(e) = crate::identity::issuer::check_url(url, issuer.allow_http_loopback) {
                return invalid(format!("issuers.{name}: {e}"));
            }
        }
        if config
            .issuers
            .values()
            .filter(|i| i.issuer == issuer.issuer)
            .count()
            > 1
        {
            return invalid(format!(
                "issuers.{name}: issuer \"{}\" is configured twice",
                issuer.issuer
            ));
        }
    }
    for (name, role) in &config.roles {
        if role.issuer.is_none() && config.issuers.len() > 1 {
            return invalid(format!(
                "roles.{name}: set `issuer`: with several issuers a claim such as `sub` means different things in each"
            ));
        }
        if let Some(i) = &role.issuer {
            if !config.issuers.contains_key(i) {
                return invalid(format!(
                    "roles.{name}.issuer = \"{i}\" but there is no [issuers.{i}]"
                ));
            }
        }
        if role.targets.is_empty() {
            return invalid(format!("roles.{name}.targets is empty"));
        }
        for (t, rt) in &role.targets {
            let Some(target) = config.targets.get(t) else {
                return invalid(format!(
                    "roles.{name}.targets.{t}: there is no [targets.{t}]"
                ));
            };
            if let Some(u) = &rt.upstream_user {
                if *u != target.user && !target.users.contains_key(u) {
                    return invalid(format!(
                        "roles.{name}.targets.{t}.upstream_user = \"{u}\" but [targets.{t}.users.{u}] (its password) is not configured"
                    ));
                }
            }
        }
        for (claim, pattern) in &role.claims {
            let empty = match pattern {
                ClaimPattern::One(p) => p.is_empty(),
                ClaimPattern::AnyOf(v) => v.is_empty(),
            };
            if empty {
                return invalid(format!("roles.{name}.claims.\"{claim}\" is empty"));
            }
        }
        if role.jit_max_ttl_secs == 0 {
            return invalid(format!("roles.{name}.jit_max_ttl_secs must be positive"));
        }
    }
    if !config.roles.is_empty() && config.issuers.is_empty() {
        return invalid("[roles.*] are configured but no [issuers.*]".into());
    }
    if config.jit.default_ttl_secs == 0 {
        return invalid("jit.default_ttl_secs must be positive".into());
    }
    if let Some(api) = &config.api {
        if config.tls.is_none() && !api.listen.ip().is_loopback() {
            return invalid(format!(
                "api.listen = {}: the API carries bearer tokens; configure [tls] or listen on a loopback address",
                api.listen
            ));
        }
    }
    for name in config.targets.keys() {
        if config.users.contains_key(name) && !config.roles.is_empty() {
            return invalid(format!(
                "users.{name} has the name of a target: the MySQL user name selects either a gateway user or a target for token login, rename one"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::identity::roles::Roles;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_github_actions_example_parses_and_matches_github_claims() {
        let config = Config::parse(include_str!("../../../deploy/github-actions.toml")).unwrap();
        let roles = Roles::from_config(&config.roles);
        // Claims as in a real GitHub Actions token.
        let migrate = claims(json!({
            "sub": "repo:acme/orders:environment:production",
            "repository": "acme/orders", "repository_owner": "acme",
            "ref": "refs/heads/main", "environment": "production", "event_name": "push",
            "job_workflow_ref": "acme/orders/.github/workflows/migrate.yml@refs/heads/main",
            "run_id": "123", "actor": "octocat"
        }));
        let g = roles.resolve("github", &migrate, "orders").unwrap();
        assert_eq!(g.role, "orders-migrations");
        assert_eq!(g.upstream_user.as_deref(), Some("migrator"));
        let mut pr = migrate.clone();
        pr.insert("ref".into(), json!("refs/pull/7/merge"));
        pr.insert("event_name".into(), json!("pull_request"));
        let g = roles.resolve("github", &pr, "orders").unwrap();
        assert_eq!(g.role, "acme-ci-readers");
        assert_eq!(g.upstream_user.as_deref(), Some("reader"));
        let mut fork = pr.clone();
        fork.insert("repository_owner".into(), json!("mallory"));
        assert!(roles.resolve("github", &fork, "orders").is_err());
    }

    #[test]
    fn the_kubernetes_example_parses_and_matches_service_account_claims() {
        let config = Config::parse(include_str!("../../../deploy/kubernetes.toml")).unwrap();
        let roles = Roles::from_config(&config.roles);
        let agent = claims(json!({
            "sub": "system:serviceaccount:shop:orders-agent",
            "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "orders-agent", "uid": "u"}}
        }));
        let g = roles.resolve("cluster", &agent, "shop").unwrap();
        assert_eq!(g.role, "shop-agent");
        assert_eq!(g.upstream_user.as_deref(), Some("shop_app"));
        let analytics = claims(json!({
            "sub": "system:serviceaccount:analytics-eu:reporter",
            "kubernetes.io": {"namespace": "analytics-eu", "serviceaccount": {"name": "reporter"}}
        }));
        assert_eq!(
            roles.resolve("cluster", &analytics, "shop").unwrap().role,
            "analytics-readers"
        );
        let other = claims(json!({
            "sub": "system:serviceaccount:default:default",
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "default"}}
        }));
        assert!(roles.resolve("cluster", &other, "shop").is_err());
    }

    #[test]
    fn references_and_unsafe_settings_are_refused_with_clear_messages() {
        let base = r#"
            [gateway]
            listen = "127.0.0.1:0"
            [targets.db]
            address = "127.0.0.1:3306"
            user = "root"
            password = ""
        "#;
        let bad = [
            (
                "[issuers.x]\nissuer = \"http://issuer.example\"\naudiences = [\"a\"]",
                "use https",
            ),
            (
                "[issuers.x]\nissuer = \"https://i\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]",
                "\"HS256\" is not accepted",
            ),
            ("[issuers.x]\nissuer = \"https://i\"\naudiences = []", "audiences is empty"),
            (
                "[issuers.x]\nissuer = \"https://i\"\naudiences = [\"a\"]\n[roles.r]\nissuer = \"y\"\n[roles.r.targets.db]",
                "no [issuers.y]",
            ),
            (
                "[issuers.x]\nissuer = \"https://i\"\naudiences = [\"a\"]\n[roles.r]\n[roles.r.targets.nope]",
                "there is no [targets.nope]",
            ),
            (
                "[issuers.x]\nissuer = \"https://i\"\naudiences = [\"a\"]\n[roles.r]\n[roles.r.targets.db]\nupstream_user = \"ghost\"",
                "[targets.db.users.ghost]",
            ),
            ("[api]\nlisten = \"0.0.0.0:8443\"", "configure [tls]"),
            (
                "[issuers.x]\nissuer = \"https://i\"\naudiences = [\"a\"]\n[issuers.y]\nissuer = \"https://j\"\naudiences = [\"a\"]\n[roles.r]\nclaims = { sub = \"x\" }\n[roles.r.targets.db]",
                "roles.r: set `issuer`",
            ),
        ];
        for (extra, needle) in bad {
            let err = Config::parse(&format!("{base}\n{extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }
}
