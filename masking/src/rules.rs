//! The `[masking]` config and its compiled form: one [`Policy`] per role.
//!
//! ```toml
//! [masking]
//! key_env = "CHAPERONE_MASKING_KEY"      # HMAC key of the `hash` strategy
//! [masking.roles.support-agent]           # a role name, or "*" for any other role
//! strict = true
//! detectors = ["email", "card", "iban", "us_ssn", "uk_nino", "phone", "ip", "jwt", "api_key"]
//! detector_strategy = "redact"            # or "hash", "partial"
//! [[masking.roles.support-agent.rules]]
//! name = "customer-email"
//! database = "shop*"                      # globs on the ORIGINAL schema, table, column
//! table = "customers"
//! column = "email"
//! strategy = "partial"
//! keep_prefix = 1
//! keep_domain = true
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::detectors::{Detector, Detectors, BUILTIN};
use super::strategies::{HashKey, Strategy};
use super::MaskingError;

/// `[masking]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// The HMAC key of the `hash` strategy, from this environment variable.
    #[serde(default)]
    pub key_env: Option<String>,
    /// The HMAC key itself (tests; prefer `key_env`).
    #[serde(default)]
    pub key: Option<String>,
    /// `[masking.roles.NAME]`: the profile of a role; `"*"`: of every role not listed
    /// (and of sessions without a role).
    #[serde(default)]
    pub roles: BTreeMap<String, ProfileConfig>,
}

/// `[masking.roles.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Deny queries that compute over protected columns in ways masking cannot
    /// follow (HEX, TO_BASE64, REVERSE, CAST, arithmetic, SUBSTR, INTO @var,
    /// INSERT ... SELECT, ...).
    #[serde(default)]
    pub strict: bool,
    /// Built-in content detectors run on every string value. Default: all.
    #[serde(default = "all_detectors")]
    pub detectors: Vec<String>,
    /// What a detected span becomes: `redact` (`[masked:email]`), `hash` or `partial`.
    #[serde(default = "default_detector_strategy")]
    pub detector_strategy: String,
    /// Custom detectors: name = regular expression.
    #[serde(default)]
    pub patterns: BTreeMap<String, String>,
    /// Deny lists: name = values never shown (case-insensitive).
    #[serde(default)]
    pub deny_lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn all_detectors() -> Vec<String> {
    BUILTIN.iter().map(|s| s.to_string()).collect()
}

fn default_detector_strategy() -> String {
    "redact".into()
}

fn any() -> String {
    "*".into()
}

/// `[[masking.roles.NAME.rules]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default = "any")]
    pub database: String,
    #[serde(default = "any")]
    pub table: String,
    pub column: String,
    /// redact, partial, hash, null, fixed, zero, bucket.
    pub strategy: String,
    #[serde(default)]
    pub keep_prefix: usize,
    #[serde(default)]
    pub keep_suffix: usize,
    #[serde(default)]
    pub keep_domain: bool,
    /// The value of `fixed`.
    #[serde(default)]
    pub value: Option<String>,
    /// The bucket size of `bucket` on numbers (default 10).
    #[serde(default)]
    pub bucket: Option<f64>,
    /// `year` (default) or `month`: `bucket` on dates.
    #[serde(default)]
    pub date_bucket: Option<String>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub database: String,
    pub table: String,
    pub column: String,
    pub strategy: Strategy,
}

impl Rule {
    /// Does the rule cover this column (original schema, table and column names;
    /// case-insensitive as MySQL names are on most systems)?
    pub fn covers(&self, schema: &str, table: &str, column: &str) -> bool {
        glob_ci(&self.column, column)
            && glob_ci(&self.table, table)
            && glob_ci(&self.database, schema)
    }
}

fn glob_ci(pattern: &str, text: &str) -> bool {
    wildmatch::WildMatch::new(&pattern.to_ascii_lowercase()).matches(&text.to_ascii_lowercase())
}

/// A role's masking profile, compiled.
#[derive(Debug)]
pub struct Policy {
    pub role: String,
    pub strict: bool,
    pub detectors: Detectors,
    pub detector_strategy: Strategy,
    pub rules: Vec<Arc<Rule>>,
    pub key: HashKey,
}

impl Policy {
    /// The first rule covering a column.
    pub fn rule_for(&self, schema: &str, table: &str, column: &str) -> Option<&Arc<Rule>> {
        if column.is_empty() {
            return None;
        }
        self.rules.iter().find(|r| r.covers(schema, table, column))
    }
}

/// Every role's policy.
#[derive(Debug, Default)]
pub struct Masking {
    policies: BTreeMap<String, Arc<Policy>>,
}

impl Masking {
    pub fn compile(config: &MaskingConfig) -> Result<Self, MaskingError> {
        if config.roles.is_empty() {
            return Ok(Masking::default());
        }
        // An inline key (tests) wins over `key_env`, as it always has.
        let source = chaperone_config::SecretSource::of(
            "key",
            config.key_env.clone().filter(|_| config.key.is_none()),
            None,
            config.key.clone(),
        );
        let key = match source.resolve_optional("[masking] key") {
            Ok(Some(key)) => key.expose().to_vec(),
            Ok(None) => {
                return Err(MaskingError::Config(
                    "[masking] needs a key for the hash strategy: set `key_env` to the name of an environment variable holding a long random secret".into(),
                ))
            }
            Err(e) => {
                return Err(MaskingError::Config(format!(
                    "{e}; set it to a long random secret"
                )))
            }
        };

        if key.len() < 16 {
            return Err(MaskingError::Config(
                "[masking] key: use at least 16 bytes".into(),
            ));
        }
        let key = HashKey::new(key);
        let mut policies = BTreeMap::new();
        for (role, p) in &config.roles {
            let mut list = Vec::new();
            for d in &p.detectors {
                list.push(Detector::builtin(d)?);
            }
            for (name, pattern) in &p.patterns {
                list.push(Detector::custom(name, pattern)?);
            }
            for (name, values) in &p.deny_lists {
                list.push(Detector::deny_list(name, values)?);
            }
            let detector_strategy = match p.detector_strategy.as_str() {
                "redact" => Strategy::Redact,
                "hash" => Strategy::Hash,
                "partial" => Strategy::Partial {
                    keep_prefix: 1,
                    keep_suffix: 0,
                    keep_domain: true,
                },
                other => {
                    return Err(MaskingError::Config(format!(
                        "[masking.roles.{role}] detector_strategy {other:?}: use redact, hash or partial"
                    )))
                }
            };
            let mut rules = Vec::new();
            for r in &p.rules {
                let strategy = Strategy::from_config(
                    &r.strategy,
                    r.keep_prefix,
                    r.keep_suffix,
                    r.keep_domain,
                    r.value.as_deref(),
                    r.bucket,
                    r.date_bucket.as_deref(),
                )
                .map_err(|e| {
                    MaskingError::Config(format!("[masking.roles.{role}] rule {:?}: {e}", r.name))
                })?;
                rules.push(Arc::new(Rule {
                    name: r.name.clone(),
                    database: r.database.clone(),
                    table: r.table.clone(),
                    column: r.column.clone(),
                    strategy,
                }));
            }
            policies.insert(
                role.clone(),
                Arc::new(Policy {
                    role: role.clone(),
                    strict: p.strict,
                    detectors: Detectors { list },
                    detector_strategy,
                    rules,
                    key: key.clone(),
                }),
            );
        }
        Ok(Masking { policies })
    }

    /// The policy of a role: its own, else `"*"`'s; None: nothing is masked.
    pub fn policy(&self, role: Option<&str>) -> Option<Arc<Policy>> {
        role.and_then(|r| self.policies.get(r))
            .or_else(|| self.policies.get("*"))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented `[masking]` example of `deploy/chaperone.toml` parses and compiles.
    #[test]
    fn the_deploy_example_compiles() {
        let text = include_str!("../../deploy/chaperone.toml");
        let start = text.find("# [masking]").expect("masking example");
        let end = text
            .find("# --- end masking")
            .expect("end of the masking example");
        let body: String = text[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        struct Wrapper {
            masking: MaskingConfig,
        }
        let mut w: Wrapper = toml::from_str(&body).expect("the example parses");
        assert_eq!(w.masking.key_env.as_deref(), Some("CHAPERONE_MASKING_KEY"));
        w.masking.key = Some("a key for the test only".into());
        let m = Masking::compile(&w.masking).expect("the example compiles");
        let p = m
            .policy(Some("support-agent"))
            .expect("support-agent profile");
        assert!(p.strict);
        assert_eq!(p.rules.len(), 4);
        assert!(p.rule_for("shop_eu", "customers", "full_name").is_some());
        assert_eq!(p.detectors.list.len(), BUILTIN.len() + 2);
    }

    #[test]
    fn compiles_and_matches_on_original_names() {
        let config: MaskingConfig = toml::from_str(
            r#"
            key = "0123456789abcdef0123"
            [masking_dummy]
            "#
            .replace("[masking_dummy]", "")
            .as_str(),
        )
        .unwrap();
        assert!(Masking::compile(&config)
            .unwrap()
            .policy(Some("x"))
            .is_none());
        let config: MaskingConfig = toml::from_str(
            r#"
            key = "0123456789abcdef0123"
            [roles.agents]
            strict = true
            [[roles.agents.rules]]
            name = "mail"
            database = "shop*"
            table = "customers"
            column = "email"
            strategy = "partial"
            keep_domain = true
            "#,
        )
        .unwrap();
        let m = Masking::compile(&config).unwrap();
        let p = m.policy(Some("agents")).unwrap();
        assert!(p.strict);
        assert!(p.rule_for("shop_eu", "Customers", "EMAIL").is_some());
        assert!(p.rule_for("shop_eu", "orders", "email").is_none());
        assert!(p.rule_for("crm", "customers", "email").is_none());
        assert!(m.policy(Some("other")).is_none());
        assert_eq!(p.detectors.list.len(), BUILTIN.len());
        let bad: MaskingConfig = toml::from_str(
            r#"
            key = "0123456789abcdef0123"
            [roles."*"]
            [[roles."*".rules]]
            name = "x"
            column = "y"
            strategy = "scramble"
            "#,
        )
        .unwrap();
        assert!(Masking::compile(&bad)
            .unwrap_err()
            .to_string()
            .contains("scramble"));
    }
}
