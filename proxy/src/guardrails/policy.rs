//! A compiled policy and its verdict on a statement.
//!
//! A packet is judged statement by statement; its verdict is the most severe
//! (deny over approve over allow). For one statement, in order:
//! 1. **Features** a policy must allow explicitly (`file`, `handler`,
//!    `set_global`, `sql_log_bin`, `shutdown`, `sleep`, and `kill` of a
//!    connection other than the session's own): denied.
//! 2. **Databases** and **tables**: a statement touching a database outside
//!    `databases`, a table in `deny_tables` or outside `allow_tables`, or a
//!    `USE` of another database: denied.
//! 3. **Approval rules** (`[[policies.P.approve]]`): a match holds the
//!    statement for approval, even when its class is not allowed (that is how
//!    a role gets "DDL, but only with approval").
//! 4. **Class** not in `classes`: denied. Dynamic SQL is judged by 5 instead;
//!    an unparsed statement is denied when its leading keywords imply a class
//!    the policy does not allow, and otherwise follows `unparsed`.
//! 5. **Dynamic SQL** (`PREPARE ... FROM`, `EXECUTE`, `CALL`): `dynamic_sql`.
//! 6. Otherwise allowed; approval rules with `max_rows` ask the session for an
//!    `EXPLAIN` estimate of a single UPDATE or DELETE first.
//!
//! Evaluation only reads the cached [`Analysis`] and the policy: no allocation
//! on the allow path beyond qualifying table names for table rules.

use chaperone_sql::lexer::Lexer;
use chaperone_sql::{Analysis, Features, StatementClass, StatementFacts, StatementKind, TableName};

use super::config::{Action, ApprovalMode, PolicyApprovalConfig, PolicyConfig, UnparsedAction};

/// The verdict on one statement, or the worst of a packet's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    /// The rule that decided: `class`, `feature:file`, `databases`,
    /// `deny_tables`, `allow_tables`, `unparsed`, `dynamic_sql`, the name of an
    /// approval rule, ... Empty when allowed.
    pub rule: String,
    /// Why, in a sentence for the client's error and the approver.
    pub reason: String,
}

impl Verdict {
    pub fn allow() -> Self {
        Verdict {
            action: Action::Allow,
            rule: String::new(),
            reason: String::new(),
        }
    }

    fn deny(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Verdict {
            action: Action::Deny,
            rule: rule.into(),
            reason: reason.into(),
        }
    }

    fn approve(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Verdict {
            action: Action::Approve,
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

/// A row-count approval rule to check with `EXPLAIN` before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub rule: String,
    pub max_rows: u64,
}

/// The decision on a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// When allowed: approval rules that hold the statement if `EXPLAIN`
    /// estimates more rows than they allow.
    pub estimates: Vec<Estimate>,
}

/// What the session adds to the statement's facts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The current database (qualifies unqualified table names).
    pub database: Option<&'a str>,
    /// For KILL: the session's own client-visible connection id, and the id
    /// the statement kills.
    pub connection_id: u32,
    pub kill_target: Option<u64>,
}

struct ApproveRule {
    name: String,
    kinds: Vec<StatementKind>,
    features: Features,
    classes: u16,
    tables: Vec<String>,
    max_rows: Option<u64>,
}

/// A policy, ready to judge statements.
pub struct Policy {
    pub name: String,
    classes: u16,
    class_names: String,
    databases: Option<Vec<String>>,
    allow_tables: Option<Vec<String>>,
    deny_tables: Vec<String>,
    allowed_features: Features,
    unparsed: UnparsedAction,
    dynamic_sql: Action,
    rules: Vec<ApproveRule>,
    pub approval: PolicyApprovalConfig,
}

fn class_bit(c: StatementClass) -> u16 {
    1 << (c as u16)
}

fn class_bits(names: &[String]) -> u16 {
    names
        .iter()
        .filter_map(|n| StatementClass::from_name(n))
        .fold(0, |acc, c| acc | class_bit(c))
}

fn lower(globs: &[String]) -> Vec<String> {
    globs.iter().map(|g| g.to_ascii_lowercase()).collect()
}

/// Case-insensitive glob match (table and database names may be either case
/// on the server; a deny list must not be bypassed by spelling). `globs` are
/// lower-cased when the policy is compiled.
fn any_glob(globs: &[String], text: &str) -> bool {
    globs.iter().any(|g| glob_ci(g.as_bytes(), text.as_bytes()))
}

/// `*` matches any run of bytes, `?` one character; other bytes match
/// themselves, ASCII letters in either case (`pattern` is lower case). No
/// allocation: this runs for every table of every guarded statement.
fn glob_ci(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    let char_len = |b: u8| match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    };
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'?' {
            p += 1;
            t = (t + char_len(text[t])).min(text.len());
        } else if p < pattern.len()
            && pattern[p] != b'*'
            && pattern[p] == text[t].to_ascii_lowercase()
        {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Features with their own sentence in a denial.
const FEATURE_REASONS: [(Features, &str); 7] = [
    (
        Features::FILE,
        "file access (INTO OUTFILE / DUMPFILE, LOAD_FILE(), LOAD DATA) is not allowed",
    ),
    (Features::HANDLER, "HANDLER statements are not allowed"),
    (Features::SET_GLOBAL, "SET GLOBAL / PERSIST is not allowed"),
    (Features::SQL_LOG_BIN, "SET sql_log_bin is not allowed"),
    (Features::SHUTDOWN, "SHUTDOWN / RESTART is not allowed"),
    (
        Features::SLEEP,
        "SLEEP(), BENCHMARK() and GET_LOCK() are not allowed",
    ),
    (
        Features::KILL,
        "KILL of a connection other than this session's is not allowed",
    ),
];

impl Policy {
    pub fn from_config(name: &str, c: &PolicyConfig) -> Self {
        Policy {
            name: name.to_string(),
            classes: class_bits(&c.classes),
            class_names: c.classes.join(", "),
            databases: c.databases.as_deref().map(lower),
            allow_tables: c.allow_tables.as_deref().map(lower),
            deny_tables: lower(&c.deny_tables),
            allowed_features: c
                .allow_features
                .iter()
                .filter_map(|f| Features::from_name(f))
                .fold(Features::NONE, Features::union),
            unparsed: c.unparsed,
            dynamic_sql: c.dynamic_sql,
            rules: c
                .approve
                .iter()
                .map(|r| ApproveRule {
                    name: r.name.clone(),
                    kinds: r
                        .statements
                        .iter()
                        .filter_map(|s| StatementKind::from_name(s))
                        .collect(),
                    features: r
                        .statements
                        .iter()
                        .filter_map(|s| Features::from_name(s))
                        .fold(Features::NONE, Features::union),
                    classes: class_bits(&r.classes),
                    tables: lower(&r.tables),
                    max_rows: r.max_rows,
                })
                .collect(),
            approval: c.approval.clone(),
        }
    }

    pub fn mode(&self) -> ApprovalMode {
        self.approval.mode
    }

    /// The decision on a SQL text (COM_QUERY, or COM_STMT_PREPARE).
    pub fn evaluate(&self, analysis: &Analysis, ctx: &Context<'_>) -> Decision {
        let mut worst = Verdict::allow();
        let mut estimates = Vec::new();
        if analysis.statements.len() > 1
            && analysis.statements.iter().any(|s| s.use_database.is_some())
        {
            // The gateway follows the current database command by command: a USE
            // inside a packet would leave it unsure which database later
            // statements of the packet (and of the session) name.
            return Decision {
                verdict: Verdict::deny(
                    "use",
                    "USE must be sent on its own, not in a multi-statement packet",
                ),
                estimates,
            };
        }
        for s in &analysis.statements {
            let (v, est) = self.statement(s, ctx);
            if v.action > worst.action {
                worst = v;
            }
            if worst.action == Action::Deny {
                break;
            }
            estimates.extend(est);
        }
        if worst.action != Action::Allow {
            estimates.clear();
        } else if !estimates.is_empty() && analysis.statements.len() > 1 {
            // EXPLAIN takes one statement: a packet of several is held.
            let rule = estimates[0].rule.clone();
            return Decision {
                verdict: Verdict::approve(
                    rule,
                    "a write that needs a row estimate is part of a multi-statement packet; the gateway cannot EXPLAIN it",
                ),
                estimates: Vec::new(),
            };
        }
        Decision {
            verdict: worst,
            estimates,
        }
    }

    /// Judges a text that the session found hazardous (it may read differently
    /// on the server, see [`text_hazard`]) as the policy judges unparsed text.
    pub fn hazard(&self, why: &str) -> Verdict {
        let reason = format!("the statement cannot be judged safely: {why}");
        match self.unparsed {
            UnparsedAction::Deny => Verdict::deny("unparsed", reason),
            UnparsedAction::Approve => Verdict::approve("unparsed", reason),
        }
    }

    fn statement(&self, s: &StatementFacts, ctx: &Context<'_>) -> (Verdict, Vec<Estimate>) {
        // 1. Features only an explicit allow permits.
        let mut features = s.features;
        if features.contains(Features::KILL)
            && ctx.kill_target == Some(u64::from(ctx.connection_id))
        {
            features = features.minus(Features::KILL);
        }
        for (f, reason) in FEATURE_REASONS {
            if features.contains(f) && !self.allowed_features.contains(f) {
                let name = f.names().next().unwrap_or("feature");
                return (Verdict::deny(format!("feature:{name}"), reason), Vec::new());
            }
        }
        // 2. Databases and tables.
        if let (Some(dbs), Some(db)) = (&self.databases, &s.use_database) {
            if !any_glob(dbs, db) {
                return (database_denied(db), Vec::new());
            }
        }
        let tables = || s.tables_read.iter().chain(&s.tables_written);
        if self.databases.is_some() || self.allow_tables.is_some() || !self.deny_tables.is_empty() {
            for t in tables() {
                if let Some(v) = self.table_verdict(t, ctx.database) {
                    return (v, Vec::new());
                }
            }
        }
        // 3. Approval rules.
        let class = match &s.parse_error {
            None => Some(s.class),
            Some(_) => s.kind.class_floor(),
        };
        let mut estimates = Vec::new();
        let mut name = String::new();
        for rule in &self.rules {
            let kinds = rule.kinds.is_empty() && rule.features.is_empty()
                || rule.kinds.contains(&s.kind)
                || s.features.intersects(rule.features);
            let classes =
                rule.classes == 0 || class.is_some_and(|c| rule.classes & class_bit(c) != 0);
            let touched = rule.tables.is_empty()
                || tables().any(|t| {
                    qualified_into(&mut name, t, ctx.database);
                    any_glob(&rule.tables, &name)
                });
            if !(kinds && classes && touched) {
                continue;
            }
            match rule.max_rows {
                None => {
                    let what = describe(s, ctx.database);
                    return (
                        Verdict::approve(
                            rule.name.clone(),
                            format!("{what} needs approval (rule '{}')", rule.name),
                        ),
                        Vec::new(),
                    );
                }
                Some(max_rows)
                    if matches!(s.kind, StatementKind::Update | StatementKind::Delete) =>
                {
                    estimates.push(Estimate {
                        rule: rule.name.clone(),
                        max_rows,
                    })
                }
                Some(_) => {}
            }
        }
        // 4. Class, 5. dynamic SQL.
        if s.features.contains(Features::DYNAMIC_SQL) {
            let reason =
                "dynamic SQL (PREPARE ... FROM, EXECUTE, EXECUTE IMMEDIATE, CALL) runs code the gateway cannot see";
            return (
                match self.dynamic_sql {
                    Action::Allow => Verdict::allow(),
                    Action::Deny => {
                        Verdict::deny("dynamic_sql", format!("{reason}; it is not allowed"))
                    }
                    Action::Approve => {
                        Verdict::approve("dynamic_sql", format!("{reason}; it needs approval"))
                    }
                },
                Vec::new(),
            );
        }
        if s.features.contains(Features::KILL) {
            // Its own KILL (the gateway only reaches sessions of the same identity).
            return (Verdict::allow(), Vec::new());
        }
        if let Some(c) = class {
            if self.classes & class_bit(c) == 0 {
                return (
                    Verdict::deny(
                        "class",
                        format!(
                            "statement class '{c}' ({}) is not allowed (allowed: {})",
                            s.kind,
                            if self.class_names.is_empty() {
                                "none"
                            } else {
                                &self.class_names
                            }
                        ),
                    ),
                    Vec::new(),
                );
            }
        }
        if let Some(e) = &s.parse_error {
            let reason = format!("the statement cannot be parsed ({})", short(e));
            return (
                match self.unparsed {
                    UnparsedAction::Deny => Verdict::deny("unparsed", reason),
                    UnparsedAction::Approve => Verdict::approve("unparsed", reason),
                },
                Vec::new(),
            );
        }
        (Verdict::allow(), estimates)
    }

    fn table_verdict(&self, t: &TableName, database: Option<&str>) -> Option<Verdict> {
        let db = t.schema.as_deref().or(database);
        if let (Some(dbs), Some(db)) = (&self.databases, db) {
            if !any_glob(dbs, db) {
                return Some(database_denied(db));
            }
        }
        if self.deny_tables.is_empty() && self.allow_tables.is_none() {
            return None;
        }
        let q = t.qualified(database);
        if any_glob(&self.deny_tables, &q) {
            return Some(Verdict::deny(
                "deny_tables",
                format!("table {q} may not be touched"),
            ));
        }
        if let Some(allow) = &self.allow_tables {
            if !any_glob(allow, &q) {
                return Some(Verdict::deny(
                    "allow_tables",
                    format!("table {q} is not in the tables this role may touch"),
                ));
            }
        }
        None
    }

    /// COM_INIT_DB (and a session's initial database).
    pub fn check_database(&self, db: &str) -> Option<Verdict> {
        match &self.databases {
            Some(dbs) if !any_glob(dbs, db) => Some(database_denied(db)),
            _ => None,
        }
    }

    /// COM_FIELD_LIST: a table of the current database.
    pub fn check_table(&self, database: Option<&str>, table: &str) -> Option<Verdict> {
        self.table_verdict(
            &TableName {
                schema: None,
                name: table.to_string(),
            },
            database,
        )
    }

    /// The verdict once `EXPLAIN` estimated `rows` (None: no estimate).
    pub fn after_estimate(
        estimates: &[Estimate],
        rows: Option<u64>,
        error: Option<&str>,
    ) -> Verdict {
        for e in estimates {
            match rows {
                Some(n) if n <= e.max_rows => continue,
                Some(n) => {
                    return Verdict::approve(
                        e.rule.clone(),
                        format!(
                            "EXPLAIN estimates {n} rows, more than the {} rule '{}' allows without approval",
                            e.max_rows, e.rule
                        ),
                    )
                }
                None => {
                    return Verdict::approve(
                        e.rule.clone(),
                        format!(
                            "no row estimate ({}); rule '{}' needs approval above {} rows",
                            error.unwrap_or("EXPLAIN returned no row count"),
                            e.rule,
                            e.max_rows
                        ),
                    )
                }
            }
        }
        Verdict::allow()
    }
}

/// `db.table` into a reused buffer.
fn qualified_into(buf: &mut String, t: &TableName, database: Option<&str>) {
    buf.clear();
    if let Some(db) = t.schema.as_deref().or(database) {
        buf.push_str(db);
        buf.push('.');
    }
    buf.push_str(&t.name);
}

fn database_denied(db: &str) -> Verdict {
    Verdict::deny(
        "databases",
        format!("database '{db}' is not one this role may use"),
    )
}

/// `DROP on shop.orders`, for approvers.
fn describe(s: &StatementFacts, database: Option<&str>) -> String {
    let kind = s.kind.as_str().to_uppercase();
    let tables: Vec<String> = s
        .tables_written
        .iter()
        .chain(&s.tables_read)
        .map(|t| t.qualified(database))
        .collect();
    if tables.is_empty() {
        kind
    } else {
        format!("{kind} on {}", tables.join(", "))
    }
}

fn short(e: &str) -> &str {
    match e.char_indices().nth(160) {
        Some((i, _)) => &e[..i],
        None => e,
    }
}

/// Reasons a SQL text may read differently on the server than in the gateway's
/// analysis, so that it cannot be judged safely:
/// - the session has `NO_BACKSLASH_ESCAPES` on (the server says so in every
///   OK packet) and the text contains a backslash;
/// - a backslash in a double-quoted string makes the text read differently
///   with `ANSI_QUOTES` (which the server does not report);
/// - the text is not UTF-8 and a backslash follows a non-ASCII byte: in GBK,
///   Big5 or SJIS that byte pair is one character and the backslash escapes
///   nothing (CVE-2006-2753).
pub fn text_hazard(sql: &[u8], no_backslash_escapes: bool) -> Option<&'static str> {
    if !sql.contains(&b'\\') {
        return None;
    }
    if no_backslash_escapes {
        return Some("NO_BACKSLASH_ESCAPES is on and the text contains a backslash");
    }
    let Ok(text) = std::str::from_utf8(sql) else {
        return sql
            .windows(2)
            .any(|w| w[0] >= 0x80 && w[1] == b'\\')
            .then_some("a backslash follows a non-UTF-8 byte (multi-byte character sets)");
    };
    if text.contains('"') {
        let default: Result<Vec<_>, _> = Lexer::new(text).collect();
        let ansi: Result<Vec<_>, _> = Lexer::with_escapes(text, true, false).collect();
        if let (Ok(a), Ok(b)) = (default, ansi) {
            if a != b {
                return Some(
                    "a backslash in a double-quoted string reads differently with ANSI_QUOTES",
                );
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaperone_sql::analyze;

    fn policy(toml_text: &str) -> Policy {
        let c: PolicyConfig = toml::from_str(toml_text).unwrap();
        Policy::from_config("test", &c)
    }

    /// The "no DDL, no privilege changes, no file access" policy of the tests.
    fn guarded() -> Policy {
        policy(
            r#"
            classes = ["read", "write", "transaction", "session"]
            databases = ["shop"]
            deny_tables = ["*.salaries"]
            [[approve]]
            name = "no-where"
            statements = ["without_where"]
            [[approve]]
            name = "big-writes"
            max_rows = 100
            "#,
        )
    }

    fn judge(p: &Policy, sql: &str) -> Decision {
        p.evaluate(
            &analyze(sql),
            &Context {
                database: Some("shop"),
                connection_id: 7,
                kill_target: crate::registry::parse_kill(sql.as_bytes()).map(|k| k.id),
            },
        )
    }

    #[test]
    fn verdicts() {
        let p = guarded();
        for (sql, action, rule) in [
            ("SELECT * FROM orders", Action::Allow, ""),
            ("SELECT 'DROP TABLE t'", Action::Allow, ""),
            ("DROP TABLE orders", Action::Deny, "class"),
            ("/*!50000 DROP TABLE orders */", Action::Deny, "class"),
            ("SELECT 1; DROP TABLE orders", Action::Deny, "class"),
            ("GRANT ALL ON *.* TO x", Action::Deny, "class"),
            (
                "CREATE USER 'x'@'%' IDENTIFIED BY 'y'",
                Action::Deny,
                "class",
            ),
            ("SET PASSWORD = 'x'", Action::Deny, "class"),
            (
                "SELECT * FROM t INTO OUTFILE '/tmp/x'",
                Action::Deny,
                "feature:file",
            ),
            (
                "SELECT LOAD_FILE('/etc/passwd')",
                Action::Deny,
                "feature:file",
            ),
            (
                "LOAD DATA INFILE '/x' INTO TABLE t",
                Action::Deny,
                "feature:file",
            ),
            ("HANDLER t OPEN", Action::Deny, "feature:handler"),
            ("SET GLOBAL x = 1", Action::Deny, "feature:set_global"),
            ("SET sql_log_bin = 0", Action::Deny, "feature:sql_log_bin"),
            ("SHUTDOWN", Action::Deny, "feature:shutdown"),
            ("SELECT SLEEP(3)", Action::Deny, "feature:sleep"),
            ("KILL 8", Action::Deny, "feature:kill"),
            ("KILL QUERY 7", Action::Allow, ""),
            ("PREPARE s FROM @q", Action::Deny, "dynamic_sql"),
            ("EXECUTE IMMEDIATE 'SELECT 1'", Action::Deny, "dynamic_sql"),
            ("CALL p()", Action::Deny, "dynamic_sql"),
            ("USE mysql", Action::Deny, "databases"),
            ("USE shop", Action::Allow, ""),
            ("SELECT * FROM mysql.user", Action::Deny, "databases"),
            (
                "SELECT * FROM `shop`.`SALARIES`",
                Action::Deny,
                "deny_tables",
            ),
            ("DELETE FROM orders", Action::Approve, "no-where"),
            (
                "UPDATE orders SET a = 1 WHERE 1 = 1",
                Action::Approve,
                "no-where",
            ),
            ("DELETE FROM orders WHERE id = 1", Action::Allow, ""),
            (
                "SELECT * FROM t LOCK IN SHARE MODE",
                Action::Deny,
                "unparsed",
            ),
            ("SELECT 1; USE shop", Action::Deny, "use"),
            ("SELECT 1; KILL QUERY 7", Action::Deny, "feature:kill"),
        ] {
            let d = judge(&p, sql);
            assert_eq!(
                (d.verdict.action, d.verdict.rule.as_str()),
                (action, rule),
                "{sql}: {d:?}"
            );
        }
        let d = judge(&p, "DELETE FROM orders WHERE id > 5");
        assert_eq!(d.verdict.action, Action::Allow);
        assert_eq!(d.estimates.len(), 1);
        let v = Policy::after_estimate(&d.estimates, Some(1000), None);
        assert_eq!((v.action, v.rule.as_str()), (Action::Approve, "big-writes"));
        assert_eq!(
            Policy::after_estimate(&d.estimates, Some(3), None).action,
            Action::Allow
        );
        // A multi-statement packet with a write to estimate is held.
        let d = judge(&p, "SELECT 1; DELETE FROM orders WHERE id > 5");
        assert_eq!(d.verdict.action, Action::Approve);
    }

    #[test]
    fn approval_rules_open_classes_and_features_open_denials() {
        let p = policy(
            r#"
            classes = ["read"]
            allow_features = ["file", "sleep"]
            dynamic_sql = "approve"
            unparsed = "approve"
            [[approve]]
            name = "ddl-on-orders"
            statements = ["drop", "alter", "truncate"]
            tables = ["shop.orders"]
            "#,
        );
        assert_eq!(
            judge(&p, "DROP TABLE orders").verdict.action,
            Action::Approve
        );
        assert_eq!(judge(&p, "DROP TABLE other").verdict.action, Action::Deny);
        assert_eq!(judge(&p, "SELECT SLEEP(1)").verdict.action, Action::Allow);
        assert_eq!(
            judge(&p, "SELECT * FROM t INTO OUTFILE '/tmp/x'")
                .verdict
                .action,
            Action::Approve,
            "unparsed, with file access allowed"
        );
        assert_eq!(judge(&p, "CALL p()").verdict.action, Action::Approve);
        assert_eq!(
            judge(&p, "INSERT INTO t VALUES (1)").verdict.action,
            Action::Deny
        );
    }

    #[test]
    fn globs_ignore_ascii_case_and_do_not_allocate() {
        assert!(glob_ci(b"*.salaries", b"shop.SALARIES"));
        assert!(glob_ci(b"shop_*", b"shop_eu"));
        assert!(!glob_ci(b"shop_*", b"shop"));
        assert!(glob_ci(b"s?op", "sçop".as_bytes()));
        assert!(glob_ci(b"*", b""));
        assert!(!glob_ci(b"a", b"ab"));
        assert!(glob_ci(b"a*b*c", b"aXbYbZc"));
    }

    #[test]
    fn hazards() {
        assert_eq!(text_hazard(b"SELECT 'a'", true), None);
        assert!(text_hazard(br"SELECT 'it\'s'", true).is_some());
        assert_eq!(text_hazard(br"SELECT 'it\'s'", false), None);
        assert_eq!(text_hazard(br#"SELECT "C:\\dir""#, false), None);
        assert!(text_hazard(br#"SELECT "a\"; DROP TABLE t; -- ""#, false).is_some());
        assert!(text_hazard(b"SELECT '\xbf\\' OR 1=1 -- '", false).is_some());
        assert_eq!(text_hazard("SELECT 'é\\n'".as_bytes(), false), None);
    }
}
