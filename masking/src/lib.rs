//! Inline masking: the agent never receives raw regulated values.
//!
//! - [`rules`]: the `[masking]` config, compiled into one [`Policy`] per role;
//! - [`detectors`]: content detectors run on every string value;
//! - [`strategies`]: what a masked value becomes;
//! - [`rewrite`]: re-encodes text and binary rows and ERR packets.
//!
//! [`SessionMasking`] is what a session keeps: its role's policy, each prepared
//! statement's lineage, and each cursor's columns (COM_STMT_FETCH rows carry
//! no metadata: the EXECUTE's column definitions describe them).
//! See `docs/masking.md` for what is and is not covered.

pub mod detectors;
pub mod rewrite;
pub mod rules;
pub mod strategies;

use std::collections::HashMap;
use std::sync::Arc;

pub use rewrite::{ColumnPlan, ResponseMasker};
pub use rules::{Masking, MaskingConfig, Policy, Rule};

use chaperone_sql::{Analysis, SourceColumn, StatementLineage};

#[derive(Debug, thiserror::Error)]
pub enum MaskingError {
    #[error("masking config: {0}")]
    Config(String),
}

/// A session's masking state.
#[derive(Debug, Default)]
pub struct SessionMasking {
    policy: Option<Arc<Policy>>,
    /// Lineage of prepared statements, by statement id.
    prepared: HashMap<u32, Arc<Vec<StatementLineage>>>,
    /// The column plans of the last EXECUTE of each statement (cursor fetches).
    cursors: HashMap<u32, Vec<ColumnPlan>>,
    /// The lineage of the last COM_STMT_PREPARE, kept until its id is known.
    pending_prepare: Option<Arc<Vec<StatementLineage>>>,
}

/// Why strict mode refused a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

impl SessionMasking {
    pub fn new(policy: Option<Arc<Policy>>) -> Self {
        SessionMasking {
            policy,
            ..Default::default()
        }
    }

    /// Takes the role's policy from a reloaded config. Prepared statements keep
    /// their lineage; their next execution is masked by the new rules.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.policy = policy;
    }

    pub fn is_active(&self) -> bool {
        self.policy.is_some()
    }

    /// Checks a statement (COM_QUERY, COM_STMT_PREPARE) by the lineage its
    /// analysis found (no second parse) and returns that lineage; Err: strict
    /// mode denies it. `sql` is the statement's text.
    pub fn check(
        &self,
        sql: &str,
        analysis: &Analysis,
        database: Option<&str>,
    ) -> Result<Arc<Vec<StatementLineage>>, Denial> {
        let Some(policy) = &self.policy else {
            return Ok(Arc::new(Vec::new()));
        };
        let parsed = &analysis.lineage;
        if policy.strict {
            match parsed {
                Ok(statements) => {
                    for st in statements.iter() {
                        for (col, why) in &st.opaque {
                            if let Some(rule) = covering_rule(policy, col, &st.tables, database) {
                                return Err(Denial(format!(
                                    "Chaperone: {why} over the protected column {} (masking rule {:?}) cannot be masked, so the statement is refused in strict mode; select the column itself and it is returned masked",
                                    col.column, rule.name
                                )));
                            }
                        }
                    }
                }
                Err(_) => {
                    let lower = sql.to_ascii_lowercase();
                    if let Some(rule) = policy.rules.iter().find(|r| {
                        !r.column.contains(['*', '?'])
                            && lower.contains(&r.column.to_ascii_lowercase())
                    }) {
                        return Err(Denial(format!(
                            "Chaperone: the statement names the protected column {} (masking rule {:?}) but the gateway cannot analyse it, so it is refused in strict mode; rewrite it as a plain SELECT",
                            rule.column, rule.name
                        )));
                    }
                }
            }
        }
        Ok(parsed.clone().unwrap_or_default())
    }

    /// A masker for a command's response. `lineage`: the statement's, from
    /// [`SessionMasking::check`]; `sql`: to exempt metadata statements.
    pub fn masker(
        &self,
        binary: bool,
        lineage: &[StatementLineage],
        sql: Option<&str>,
        database: Option<&str>,
    ) -> Option<ResponseMasker> {
        let policy = self.policy.clone()?;
        let rules = lineage
            .iter()
            .filter(|st| st.outputs.is_some())
            .map(|st| {
                st.outputs
                    .iter()
                    .flatten()
                    .map(|sources| {
                        sources
                            .iter()
                            .find_map(|s| covering_rule(&policy, s, &st.tables, database))
                            .cloned()
                    })
                    .collect()
            })
            .collect();
        let exempt = sql.is_some_and(is_metadata_statement);
        let db = database.unwrap_or("");
        let tables = lineage
            .iter()
            .flat_map(|st| st.tables.iter())
            .map(|(schema, t)| (schema.as_deref().unwrap_or(db).to_string(), t.clone()))
            .collect();
        Some(ResponseMasker::new(policy, binary, rules, exempt).with_tables(tables))
    }

    /// A masker for COM_STMT_FETCH rows of a statement.
    pub fn cursor_masker(&self, statement: u32) -> Option<ResponseMasker> {
        let policy = self.policy.clone()?;
        let columns = self.cursors.get(&statement).cloned().unwrap_or_default();
        Some(ResponseMasker::for_cursor(policy, columns))
    }

    pub fn prepared(&mut self, lineage: Arc<Vec<StatementLineage>>) {
        self.pending_prepare = Some(lineage);
    }

    pub fn prepared_id(&mut self, id: u32) {
        if let Some(l) = self.pending_prepare.take() {
            self.prepared.insert(id, l);
        }
    }

    pub fn lineage_of(&self, id: u32) -> Arc<Vec<StatementLineage>> {
        self.prepared.get(&id).cloned().unwrap_or_default()
    }

    pub fn executed(&mut self, id: u32, columns: &[ColumnPlan]) {
        if self.policy.is_some() {
            self.cursors.insert(id, columns.to_vec());
        }
    }

    pub fn closed(&mut self, id: u32) {
        self.prepared.remove(&id);
        self.cursors.remove(&id);
    }

    pub fn reset(&mut self) {
        self.prepared.clear();
        self.cursors.clear();
    }
}

/// The rule covering a source column: by its table when known, else by any
/// table the statement reads.
fn covering_rule<'a>(
    policy: &'a Policy,
    col: &SourceColumn,
    tables: &[(Option<String>, String)],
    database: Option<&str>,
) -> Option<&'a Arc<Rule>> {
    let db = database.unwrap_or("");
    match &col.table {
        Some(t) => policy.rule_for(col.schema.as_deref().unwrap_or(db), t, &col.column),
        None => tables.iter().find_map(|(schema, t)| {
            policy.rule_for(schema.as_deref().unwrap_or(db), t, &col.column)
        }),
    }
}

/// Statements whose results are schema metadata, not data: forwarded unmasked.
pub fn is_metadata_statement(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    match words.first().map(String::as_str) {
        Some("DESCRIBE" | "DESC") => true,
        Some("SHOW") => matches!(
            words.get(1).map(String::as_str),
            Some(
                "CREATE"
                    | "TABLES"
                    | "FULL"
                    | "COLUMNS"
                    | "FIELDS"
                    | "INDEX"
                    | "INDEXES"
                    | "KEYS"
                    | "DATABASES"
                    | "SCHEMAS"
                    | "TABLE"
            )
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(strict: bool) -> SessionMasking {
        let config: MaskingConfig = toml::from_str(&format!(
            r#"
            key = "0123456789abcdef0123"
            [roles."*"]
            strict = {strict}
            [[roles."*".rules]]
            name = "mail"
            table = "customers"
            column = "email"
            strategy = "hash"
            "#
        ))
        .unwrap();
        SessionMasking::new(Masking::compile(&config).unwrap().policy(None))
    }

    #[test]
    fn strict_mode_denies_opaque_uses_of_protected_columns() {
        let s = session(true);
        assert!(s
            .check(
                "SELECT email, name FROM customers",
                &chaperone_sql::analyze("SELECT email, name FROM customers"),
                Some("shop")
            )
            .is_ok());
        assert!(s
            .check(
                "SELECT CONCAT(email, 'x') FROM customers",
                &chaperone_sql::analyze("SELECT CONCAT(email, 'x') FROM customers"),
                Some("shop")
            )
            .is_ok());
        let d = s
            .check(
                "SELECT HEX(email) FROM customers",
                &chaperone_sql::analyze("SELECT HEX(email) FROM customers"),
                Some("shop"),
            )
            .unwrap_err();
        assert!(d.0.contains("HEX()"), "{}", d.0);
        assert!(s
            .check(
                "SELECT HEX(email) FROM orders",
                &chaperone_sql::analyze("SELECT HEX(email) FROM orders"),
                Some("shop")
            )
            .is_ok());
        assert!(s
            .check(
                "SELECT email INTO @x FROM customers LIMIT 1",
                &chaperone_sql::analyze("SELECT email INTO @x FROM customers LIMIT 1"),
                None
            )
            .is_err());
        assert!(s
            .check(
                "SELECT REVERSE(c.email) FROM shop.customers c",
                &chaperone_sql::analyze("SELECT REVERSE(c.email) FROM shop.customers c"),
                None
            )
            .is_err());
        assert!(session(false)
            .check(
                "SELECT HEX(email) FROM customers",
                &chaperone_sql::analyze("SELECT HEX(email) FROM customers"),
                None
            )
            .is_ok());
    }

    #[test]
    fn metadata_statements() {
        assert!(is_metadata_statement("show create table customers"));
        assert!(is_metadata_statement("DESCRIBE customers"));
        assert!(!is_metadata_statement("SHOW WARNINGS"));
        assert!(!is_metadata_statement("SELECT 1"));
    }
}
