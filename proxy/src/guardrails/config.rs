//! The guardrail part of `chaperone.toml`: `[policies.*]` (referenced by roles
//! and users as `policy = "NAME"`) and `[approvals]`.
//!
//! Reference and examples: `docs/guardrails.md`; every key appears in
//! `deploy/chaperone.toml`, which a unit test parses.

use serde::Deserialize;

pub use chaperone_approvals::config::{
    ApprovalMode, ApprovalsConfig, ApproverConfig, WebhookConfig, WebhookFormat,
};

use chaperone_sql::{Features, StatementClass, StatementKind};

/// What happens to a statement: it runs, it is refused, or it waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Approve,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Approve => "approve",
            Action::Deny => "deny",
        }
    }
}

/// What cannot be parsed: refused, or held for a human. Never allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnparsedAction {
    #[default]
    Deny,
    Approve,
}

/// `[policies.NAME]`: what sessions under this policy may run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Statement classes allowed: `read`, `write`, `ddl`, `admin`,
    /// `transaction`, `session`, `other`. Others are denied (rule `class`),
    /// unless an approval rule matches the statement.
    #[serde(default = "default_classes")]
    pub classes: Vec<String>,
    /// Databases statements may touch, `USE` and `COM_INIT_DB` switch to, and a
    /// session may start in (globs). Default: any.
    #[serde(default)]
    pub databases: Option<Vec<String>>,
    /// Tables (`db.table` globs) statements may touch; default any.
    #[serde(default)]
    pub allow_tables: Option<Vec<String>>,
    /// Tables (`db.table` globs) statements may never touch.
    #[serde(default)]
    pub deny_tables: Vec<String>,
    /// Features denied to every guarded session unless listed here: `file`,
    /// `handler`, `set_global`, `sql_log_bin`, `kill` (KILL of a connection
    /// other than the session's own), `shutdown`, `sleep`.
    #[serde(default)]
    pub allow_features: Vec<String>,
    /// Statements the parser cannot read: `deny` (default) or `approve`.
    #[serde(default)]
    pub unparsed: UnparsedAction,
    /// `PREPARE ... FROM`, `EXECUTE`, `EXECUTE IMMEDIATE`, `CALL` (code the
    /// gateway cannot see): `deny` (default), `approve`, or `allow` (explicit only).
    #[serde(default = "default_dynamic")]
    pub dynamic_sql: Action,
    /// Statements that need approval.
    #[serde(default)]
    pub approve: Vec<ApproveRuleConfig>,
    /// How approvals work for this policy.
    #[serde(default)]
    pub approval: PolicyApprovalConfig,
}

/// `[[policies.NAME.approve]]`: a rule that holds matching statements for
/// approval. A rule matches when every condition it sets holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRuleConfig {
    /// The rule's name, shown to approvers and recorded.
    pub name: String,
    /// Statement kinds (`drop`, `truncate`, `alter`, `create`, `rename`,
    /// `delete`, `update`, `insert`, `grant`, `revoke`, `user`, `call`, ...) or
    /// features (`without_where`, `privileges`, `dynamic_sql`, ...): any one.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Statement classes: any one.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Tables touched (`db.table` globs): any one.
    #[serde(default)]
    pub tables: Vec<String>,
    /// UPDATE and DELETE estimated (by `EXPLAIN` on the session's own
    /// connection, before forwarding) to touch more rows than this.
    #[serde(default)]
    pub max_rows: Option<u64>,
}

/// `[policies.NAME.approval]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyApprovalConfig {
    /// Approvals needed (from different approvers).
    #[serde(default = "default_required")]
    pub required: u32,
    /// Approvers (keys of `[approvals.approvers]`) who may decide; default any.
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
    #[serde(default)]
    pub mode: ApprovalMode,
    /// Hold mode: how long the client waits for a decision.
    #[serde(default = "default_hold_timeout")]
    pub timeout_secs: u64,
    /// Require an approved access request before a session may open.
    #[serde(default)]
    pub connect: bool,
    /// How long an approved access request lets the identity connect.
    #[serde(default = "default_access_window")]
    pub access_window_secs: u64,
}

impl Default for PolicyApprovalConfig {
    fn default() -> Self {
        PolicyApprovalConfig {
            required: default_required(),
            approvers: None,
            mode: ApprovalMode::Hold,
            timeout_secs: default_hold_timeout(),
            connect: false,
            access_window_secs: default_access_window(),
        }
    }
}

fn default_classes() -> Vec<String> {
    ["read", "write", "transaction", "session"]
        .map(String::from)
        .to_vec()
}
fn default_dynamic() -> Action {
    Action::Deny
}
fn default_required() -> u32 {
    1
}
fn default_hold_timeout() -> u64 {
    300
}
fn default_access_window() -> u64 {
    3600
}

/// Features a policy may allow (the others have their own rules).
pub const ALLOWABLE_FEATURES: Features = Features::FILE
    .union(Features::HANDLER)
    .union(Features::SET_GLOBAL)
    .union(Features::SQL_LOG_BIN)
    .union(Features::KILL)
    .union(Features::SHUTDOWN)
    .union(Features::SLEEP);

/// Checks `[policies.*]`, `[approvals]` and the references to policies.
pub fn validate(config: &crate::config::Config) -> Result<(), crate::config::ConfigError> {
    let invalid = |m: String| Err(crate::config::ConfigError::Invalid(m));
    for (name, p) in &config.policies {
        for c in &p.classes {
            if StatementClass::from_name(c).is_none() || c == "unparsed" {
                return invalid(format!(
                    "policies.{name}.classes: \"{c}\" is not a statement class; use read, write, ddl, admin, transaction, session or other"
                ));
            }
        }
        for f in &p.allow_features {
            match Features::from_name(f) {
                Some(feature) if ALLOWABLE_FEATURES.contains(feature) => {}
                _ => {
                    return invalid(format!(
                        "policies.{name}.allow_features: \"{f}\" cannot be allowed; use file, handler, set_global, sql_log_bin, kill, shutdown or sleep"
                    ))
                }
            }
        }
        for (i, rule) in p.approve.iter().enumerate() {
            let at = format!("policies.{name}.approve[{i}] ({})", rule.name);
            if rule.name.is_empty() {
                return invalid(format!("policies.{name}.approve[{i}]: name is empty"));
            }
            if rule.statements.is_empty()
                && rule.classes.is_empty()
                && rule.tables.is_empty()
                && rule.max_rows.is_none()
            {
                return invalid(format!(
                    "{at}: set at least one of statements, classes, tables, max_rows"
                ));
            }
            for s in &rule.statements {
                if StatementKind::from_name(s).is_none() && Features::from_name(s).is_none() {
                    return invalid(format!(
                        "{at}: \"{s}\" is neither a statement kind (drop, truncate, alter, delete, update, grant, ...) nor a feature (without_where, privileges, dynamic_sql, ...)"
                    ));
                }
            }
            for c in &rule.classes {
                if StatementClass::from_name(c).is_none() {
                    return invalid(format!("{at}: \"{c}\" is not a statement class"));
                }
            }
        }
        let a = &p.approval;
        if a.required == 0 {
            return invalid(format!(
                "policies.{name}.approval.required must be at least 1"
            ));
        }
        if a.timeout_secs == 0 || a.access_window_secs == 0 {
            return invalid(format!(
                "policies.{name}.approval: timeout_secs and access_window_secs must be positive"
            ));
        }
        let needs_approvals = a.connect
            || !p.approve.is_empty()
            || p.unparsed == UnparsedAction::Approve
            || p.dynamic_sql == Action::Approve;
        if needs_approvals {
            let Some(approvals) = &config.approvals else {
                return invalid(format!(
                    "policies.{name} holds statements for approval but there is no [approvals] section (where requests are kept and who decides)"
                ));
            };
            let eligible = match &a.approvers {
                Some(list) => {
                    for n in list {
                        if !approvals.approvers.contains_key(n) {
                            return invalid(format!(
                                "policies.{name}.approval.approvers: \"{n}\" is not in [approvals.approvers]"
                            ));
                        }
                    }
                    list.len()
                }
                None => approvals.approvers.len(),
            };
            if (eligible as u64) < u64::from(a.required) {
                return invalid(format!(
                    "policies.{name}.approval.required = {} but only {eligible} approver(s) may decide",
                    a.required
                ));
            }
        }
    }
    let check_ref = |what: String, policy: &Option<String>| match policy {
        Some(p) if !config.policies.contains_key(p) => invalid(format!(
            "{what}.policy = \"{p}\" but there is no [policies.{p}]"
        )),
        _ => Ok(()),
    };
    for (name, role) in &config.roles {
        check_ref(format!("roles.{name}"), &role.policy)?;
    }
    for (name, user) in &config.users {
        check_ref(format!("users.{name}"), &user.policy)?;
    }
    if let Some(a) = &config.approvals {
        if a.store.is_empty() {
            return invalid("approvals.store is empty".into());
        }
        if a.poll_interval_ms == 0 || a.claim_ttl_secs == 0 || a.pending_ttl_secs == 0 {
            return invalid(
                "approvals: poll_interval_ms, claim_ttl_secs and pending_ttl_secs must be positive"
                    .into(),
            );
        }
        for (name, approver) in &a.approvers {
            let set = [
                approver.token_env.is_some(),
                approver.token_file.is_some(),
                approver.token.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set != 1 {
                return invalid(format!(
                    "approvals.approvers.{name}: set exactly one of token_env, token_file, token"
                ));
            }
        }
        for w in &a.webhooks {
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return invalid(format!(
                    "approvals.webhooks: \"{}\" is not an http(s) URL",
                    w.url
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The commented guardrails block of `deploy/chaperone.toml`, uncommented,
    /// parses and validates with the rest of the example.
    #[test]
    fn the_deploy_example_block_parses() {
        let text = include_str!("../../../deploy/chaperone.toml");
        let start = text
            .find("# --- guardrails")
            .expect("guardrails block in deploy/chaperone.toml");
        let end = text.find("# --- end guardrails").expect("end of the block");
        // From the first table on (the lines before it are prose).
        let block: String = text[start..end]
            .lines()
            .skip_while(|l| !l.starts_with("# ["))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with("--- "))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = crate::Config::parse(&format!("{text}\n{block}")).unwrap();
        assert_eq!(config.policies.len(), 2);
        let m = &config.policies["migrations"];
        assert_eq!(m.approve.len(), 5);
        assert_eq!(m.approve[4].max_rows, Some(10000));
        let a = config.approvals.as_ref().unwrap();
        assert_eq!(a.webhooks.len(), 2);
        assert_eq!(
            config.users["analyst"].policy.as_deref(),
            Some("readonly-analytics")
        );
    }

    #[test]
    fn references_and_values_are_checked() {
        let base = r#"
            [gateway]
            listen = "127.0.0.1:0"
            [targets.db]
            address = "127.0.0.1:3306"
            user = "root"
            password = ""
        "#;
        let err = |extra: &str| {
            crate::Config::parse(&format!("{base}{extra}"))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("[users.u]\ntarget = \"db\"\npassword = \"x\"\npolicy = \"nope\"")
                .contains("users.u.policy")
        );
        assert!(err("[policies.p]\nclasses = [\"reads\"]").contains("not a statement class"));
        assert!(
            err("[policies.p]\nallow_features = [\"privileges\"]").contains("cannot be allowed")
        );
        assert!(err(
            "[policies.p]\n[[policies.p.approve]]\nname = \"x\"\nstatements = [\"dropp\"]"
        )
        .contains("neither a statement kind"));
        assert!(
            err("[policies.p]\n[[policies.p.approve]]\nname = \"x\"\nstatements = [\"drop\"]")
                .contains("no [approvals] section")
        );
        assert!(err(
            "[policies.p]\n[policies.p.approval]\nconnect = true\nrequired = 2\n[approvals]\nstore = \"memory://\"\n[approvals.approvers.a]\ntoken = \"0123456789abcdef\""
        )
        .contains("only 1 approver"));
    }
}
