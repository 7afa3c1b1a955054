//! What a statement does that its class and tables do not say, read from its
//! tokens the way the server reads them: its [`StatementKind`] (from its leading
//! keywords) and its [`Features`] (file access, dynamic SQL, privilege changes,
//! `SET GLOBAL`, ...).
//!
//! This is deliberately lexical, not a second parser: it works on the gateway's
//! own [lexer](super::lexer) (strings, comments and executable comments as the
//! server has them), so it also covers statements the SQL parser cannot read
//! (`HANDLER`, `SHUTDOWN`, `LOAD DATA`, `SELECT ... INTO OUTFILE`,
//! `PREPARE s FROM @v`, `CREATE USER 'u'@'%'`), and a parser gap cannot hide a
//! `LOAD_FILE(` inside an expression. Guardrails act on these facts; the record
//! keeps the class and tables.
//!
//! Rules (a word matches case-insensitively, unquoted or in backticks):
//! - `file`: `INTO OUTFILE`, `INTO DUMPFILE`, `LOAD_FILE(`, `LOAD DATA`, `LOAD XML`;
//! - `handler`: a `HANDLER` statement;
//! - `set_global`: a `SET` with `GLOBAL`, `PERSIST`, `PERSIST_ONLY`, `@@global.`,
//!   `@@persist.` or `@@persist_only.`;
//! - `sql_log_bin`: a `SET` naming `sql_log_bin` (or `@@[session.]sql_log_bin`);
//! - `kill`: a `KILL` statement; `shutdown`: `SHUTDOWN` or `RESTART`;
//! - `dynamic_sql`: `PREPARE ... FROM`, `EXECUTE`, `EXECUTE IMMEDIATE`, `CALL`:
//!   code the gateway cannot see in the text;
//! - `privileges`: `GRANT`, `REVOKE`, `CREATE | ALTER | DROP | RENAME USER | ROLE`
//!   (with `OR REPLACE`, `IF [NOT] EXISTS`), `SET PASSWORD`, `SET [DEFAULT] ROLE`;
//! - `sleep`: `SLEEP(`, `BENCHMARK(`, `GET_LOCK(`: reads that hold a connection
//!   or a lock;
//! - `without_where`: an `UPDATE` or `DELETE` without a `WHERE`, or whose
//!   `WHERE` names no column (`WHERE 1`, `WHERE 1 = 1`, `WHERE TRUE`).

use std::fmt;

use super::lexer::{Lexer, Token, TokenKind};
use super::StatementClass;

/// Things a statement does that guardrails treat specially (a set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u32);

impl Features {
    pub const NONE: Features = Features(0);
    pub const FILE: Features = Features(1);
    pub const HANDLER: Features = Features(1 << 1);
    pub const SET_GLOBAL: Features = Features(1 << 2);
    pub const SQL_LOG_BIN: Features = Features(1 << 3);
    pub const KILL: Features = Features(1 << 4);
    pub const SHUTDOWN: Features = Features(1 << 5);
    pub const DYNAMIC_SQL: Features = Features(1 << 6);
    pub const PRIVILEGES: Features = Features(1 << 7);
    pub const SLEEP: Features = Features(1 << 8);
    pub const WITHOUT_WHERE: Features = Features(1 << 9);

    /// Every feature with its name, in a stable order.
    pub const ALL: [(Features, &'static str); 10] = [
        (Features::FILE, "file"),
        (Features::HANDLER, "handler"),
        (Features::SET_GLOBAL, "set_global"),
        (Features::SQL_LOG_BIN, "sql_log_bin"),
        (Features::KILL, "kill"),
        (Features::SHUTDOWN, "shutdown"),
        (Features::DYNAMIC_SQL, "dynamic_sql"),
        (Features::PRIVILEGES, "privileges"),
        (Features::SLEEP, "sleep"),
        (Features::WITHOUT_WHERE, "without_where"),
    ];

    pub fn from_name(name: &str) -> Option<Features> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }

    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Features) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    pub fn minus(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }

    /// The names of the features in the set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Features {
    fn bitor_assign(&mut self, rhs: Features) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// What a statement is, by its leading keywords. Policies name kinds (`drop`,
/// `truncate`, ...) in their approval rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    Select,
    Insert,
    Replace,
    Update,
    Delete,
    Load,
    Create,
    Alter,
    Drop,
    Truncate,
    Rename,
    Grant,
    Revoke,
    /// CREATE / ALTER / DROP / RENAME USER or ROLE, SET PASSWORD, SET [DEFAULT] ROLE.
    User,
    Set,
    Use,
    Prepare,
    Execute,
    Deallocate,
    Call,
    Do,
    Handler,
    Kill,
    Shutdown,
    Show,
    Describe,
    Explain,
    /// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, XA.
    Transaction,
    /// LOCK / UNLOCK TABLES (and MariaDB's LOCK TABLE).
    Lock,
    /// Server administration: FLUSH, RESET, PURGE, INSTALL, UNINSTALL, CHANGE
    /// MASTER / REPLICATION, START / STOP SLAVE | REPLICA, BINLOG, CACHE INDEX,
    /// LOAD INDEX, OPTIMIZE / ANALYZE / CHECK / REPAIR / CHECKSUM TABLE.
    Admin,
    /// Anything else, or no statement.
    Other,
}

impl StatementKind {
    pub const ALL: [StatementKind; 31] = {
        use StatementKind::*;
        [
            Select,
            Insert,
            Replace,
            Update,
            Delete,
            Load,
            Create,
            Alter,
            Drop,
            Truncate,
            Rename,
            Grant,
            Revoke,
            User,
            Set,
            Use,
            Prepare,
            Execute,
            Deallocate,
            Call,
            Do,
            Handler,
            Kill,
            Shutdown,
            Show,
            Describe,
            Explain,
            Transaction,
            Lock,
            Admin,
            Other,
        ]
    };

    pub fn as_str(self) -> &'static str {
        use StatementKind::*;
        match self {
            Select => "select",
            Insert => "insert",
            Replace => "replace",
            Update => "update",
            Delete => "delete",
            Load => "load",
            Create => "create",
            Alter => "alter",
            Drop => "drop",
            Truncate => "truncate",
            Rename => "rename",
            Grant => "grant",
            Revoke => "revoke",
            User => "user",
            Set => "set",
            Use => "use",
            Prepare => "prepare",
            Execute => "execute",
            Deallocate => "deallocate",
            Call => "call",
            Do => "do",
            Handler => "handler",
            Kill => "kill",
            Shutdown => "shutdown",
            Show => "show",
            Describe => "describe",
            Explain => "explain",
            Transaction => "transaction",
            Lock => "lock",
            Admin => "admin",
            Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The least class a statement of this kind has, whatever the parser makes
    /// of it: a statement that starts with DROP is DDL at least. The parser's
    /// class is raised to this, so that a parser that reads a text differently
    /// from the server can only make a statement look more consequential.
    pub fn class_floor(self) -> Option<StatementClass> {
        use StatementKind::*;
        Some(match self {
            Insert | Replace | Update | Delete | Load => StatementClass::Write,
            Create | Alter | Drop | Truncate | Rename => StatementClass::Ddl,
            Grant | Revoke | User | Kill | Shutdown | Admin => StatementClass::Admin,
            Prepare | Execute | Call | Do => StatementClass::Other,
            Transaction | Lock => StatementClass::Transaction,
            _ => return None,
        })
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lexical facts of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexicalFacts {
    pub kind: StatementKind,
    pub features: Features,
    /// For `USE db`: the database.
    pub use_database: Option<String>,
}

/// A word token's text without backticks, for keyword comparison.
fn word<'a>(sql: &'a str, t: &Token) -> Option<&'a str> {
    let text = &sql[t.start..t.end];
    match t.kind {
        TokenKind::Word => Some(text),
        TokenKind::QuotedIdent => text.get(1..text.len().saturating_sub(1)),
        _ => None,
    }
}

fn is(sql: &str, t: Option<&Token>, keyword: &str) -> bool {
    t.and_then(|t| (t.kind == TokenKind::Word).then(|| &sql[t.start..t.end]))
        .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// Words with no column meaning in a WHERE clause.
const CONDITION_WORDS: &[&str] = &[
    "AND", "OR", "NOT", "XOR", "IS", "NULL", "TRUE", "FALSE", "UNKNOWN", "LIKE", "IN", "BETWEEN",
    "DIV", "MOD", "REGEXP", "RLIKE", "BINARY", "ESCAPE", "SOUNDS", "CASE", "WHEN", "THEN", "ELSE",
    "END", "INTERVAL", "COLLATE",
];

/// Clauses that end a WHERE condition at the top level.
const AFTER_WHERE: &[&str] = &["ORDER", "LIMIT", "RETURNING", "GROUP", "HAVING", "WINDOW"];

/// The lexical facts of one statement (a text with its executable comments
/// already opened, see [`super::lexer::open_executable_comments`]). A text that
/// cannot be lexed gets the facts of the tokens before the error.
pub fn scan(sql: &str) -> LexicalFacts {
    let tokens: Vec<Token> = Lexer::new(sql)
        .map_while(Result::ok)
        .filter(|t| !matches!(t.kind, TokenKind::ExecOpen | TokenKind::ExecClose))
        .collect();
    let mut facts = LexicalFacts {
        kind: StatementKind::Other,
        features: Features::NONE,
        use_database: None,
    };
    // The leading keywords, after any opening parentheses (`(SELECT ...)`).
    let start = tokens
        .iter()
        .position(|t| t.kind != TokenKind::LParen)
        .unwrap_or(tokens.len());
    let lead = &tokens[start..];
    let kw = |i: usize| -> String {
        lead.get(i)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| sql[t.start..t.end].to_ascii_uppercase())
            .unwrap_or_default()
    };
    let first = kw(0);
    let second = kw(1);
    // CREATE/ALTER/DROP/RENAME [OR REPLACE] [IF [NOT] EXISTS] USER|ROLE
    let object = {
        let mut i = 1;
        if kw(i) == "OR" && kw(i + 1) == "REPLACE" {
            i += 2;
        }
        kw(i)
    };
    use StatementKind as K;
    facts.kind = match first.as_str() {
        "SELECT" | "WITH" | "TABLE" | "VALUES" => K::Select,
        "INSERT" => K::Insert,
        "REPLACE" => K::Replace,
        "UPDATE" => K::Update,
        "DELETE" => K::Delete,
        "LOAD" if matches!(second.as_str(), "DATA" | "XML") => K::Load,
        "LOAD" => K::Admin,
        "CREATE" | "ALTER" | "DROP" | "RENAME" if matches!(object.as_str(), "USER" | "ROLE") => {
            K::User
        }
        "CREATE" => K::Create,
        "ALTER" => K::Alter,
        "DROP" => K::Drop,
        "TRUNCATE" => K::Truncate,
        "RENAME" => K::Rename,
        "GRANT" => K::Grant,
        "REVOKE" => K::Revoke,
        "SET"
            if matches!(second.as_str(), "PASSWORD" | "ROLE")
                || (second == "DEFAULT" && kw(2) == "ROLE") =>
        {
            K::User
        }
        "SET" => K::Set,
        "USE" => K::Use,
        "PREPARE" => K::Prepare,
        "EXECUTE" => K::Execute,
        "DEALLOCATE" => K::Deallocate,
        "CALL" => K::Call,
        "DO" => K::Do,
        "HANDLER" => K::Handler,
        "KILL" => K::Kill,
        "SHUTDOWN" | "RESTART" => K::Shutdown,
        "SHOW" => K::Show,
        "DESCRIBE" | "DESC" => K::Describe,
        "EXPLAIN" => K::Explain,
        "BEGIN" | "START" if first == "BEGIN" || second == "TRANSACTION" => K::Transaction,
        "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "XA" => K::Transaction,
        "LOCK" | "UNLOCK" => K::Lock,
        "FLUSH" | "RESET" | "PURGE" | "INSTALL" | "UNINSTALL" | "CHANGE" | "START" | "STOP"
        | "BINLOG" | "CACHE" | "OPTIMIZE" | "ANALYZE" | "CHECK" | "REPAIR" | "CHECKSUM" => K::Admin,
        _ => K::Other,
    };
    let mut f = Features::NONE;
    match facts.kind {
        K::Load => f |= Features::FILE,
        K::Handler => f |= Features::HANDLER,
        K::Kill => f |= Features::KILL,
        K::Shutdown => f |= Features::SHUTDOWN,
        K::Execute | K::Call => f |= Features::DYNAMIC_SQL,
        K::Prepare => f |= Features::DYNAMIC_SQL,
        K::Grant | K::Revoke | K::User => f |= Features::PRIVILEGES,
        K::Use => {
            facts.use_database = lead.get(1).and_then(|t| {
                let text = &sql[t.start..t.end];
                match t.kind {
                    TokenKind::Word => Some(text.to_string()),
                    TokenKind::QuotedIdent => text
                        .get(1..text.len() - 1)
                        .map(|inner| inner.replace("``", "`")),
                    _ => None,
                }
            });
        }
        _ => {}
    }
    // Features anywhere in the statement.
    let mut depth = 0usize;
    let mut where_at: Option<usize> = None;
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            TokenKind::LParen => depth += 1,
            TokenKind::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        let next = tokens.get(i + 1);
        let calls = next.is_some_and(|n| n.kind == TokenKind::LParen);
        if let Some(w) = word(sql, t) {
            if calls
                && ["LOAD_FILE", "SLEEP", "BENCHMARK", "GET_LOCK"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
            {
                f |= if w.eq_ignore_ascii_case("LOAD_FILE") {
                    Features::FILE
                } else {
                    Features::SLEEP
                };
            }
            if t.kind == TokenKind::Word {
                if w.eq_ignore_ascii_case("INTO")
                    && (is(sql, next, "OUTFILE") || is(sql, next, "DUMPFILE"))
                {
                    f |= Features::FILE;
                }
                if depth == 0 && where_at.is_none() && w.eq_ignore_ascii_case("WHERE") {
                    where_at = Some(i);
                }
            }
        }
        if facts.kind == K::Set {
            let text = &sql[t.start..t.end];
            match t.kind {
                TokenKind::Word => {
                    if ["GLOBAL", "PERSIST", "PERSIST_ONLY"]
                        .iter()
                        .any(|k| text.eq_ignore_ascii_case(k))
                    {
                        f |= Features::SET_GLOBAL;
                    }
                    if text.eq_ignore_ascii_case("sql_log_bin") {
                        f |= Features::SQL_LOG_BIN;
                    }
                }
                TokenKind::Variable if text.starts_with("@@") => {
                    let lower = text.to_ascii_lowercase();
                    if ["@@global.", "@@persist.", "@@persist_only."]
                        .iter()
                        .any(|p| lower.starts_with(p))
                    {
                        f |= Features::SET_GLOBAL;
                    }
                    if lower.ends_with("sql_log_bin") {
                        f |= Features::SQL_LOG_BIN;
                    }
                }
                _ => {}
            }
        }
    }
    if matches!(facts.kind, K::Update | K::Delete)
        && !where_at.is_some_and(|at| condition_names_a_column(sql, &tokens[at + 1..]))
    {
        f |= Features::WITHOUT_WHERE;
    }
    facts.features = f;
    facts
}

/// Does a WHERE condition (the tokens after `WHERE`) refer to any column? A
/// column is a word that is not a condition keyword, not a function name (a
/// word before `(`), and not after `INTERVAL`; or any quoted identifier.
fn condition_names_a_column(sql: &str, tokens: &[Token]) -> bool {
    let mut depth = 0usize;
    // After INTERVAL, the next plain word is a unit (`INTERVAL 1 DAY`).
    let mut unit_pending = false;
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            TokenKind::LParen => depth += 1,
            TokenKind::RParen => depth = depth.saturating_sub(1),
            TokenKind::Word => {
                let w = &sql[t.start..t.end];
                if depth == 0 && AFTER_WHERE.iter().any(|k| w.eq_ignore_ascii_case(k)) {
                    return false;
                }
                let calls = tokens
                    .get(i + 1)
                    .is_some_and(|n| n.kind == TokenKind::LParen);
                if w.eq_ignore_ascii_case("INTERVAL") {
                    unit_pending = true;
                    continue;
                }
                if !calls && unit_pending {
                    unit_pending = false;
                    continue;
                }
                if !calls && !CONDITION_WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) {
                    return true;
                }
            }
            TokenKind::QuotedIdent => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(sql: &str) -> Vec<&'static str> {
        scan(&super::super::lexer::open_executable_comments(sql))
            .features
            .names()
            .collect()
    }

    fn kind(sql: &str) -> StatementKind {
        scan(sql).kind
    }

    #[test]
    fn kinds_by_leading_keywords() {
        use StatementKind::*;
        for (sql, k) in [
            ("SELECT 1", Select),
            ("(SELECT 1) UNION (SELECT 2)", Select),
            ("with c as (select 1) select * from c", Select),
            ("DROP TABLE t", Drop),
            ("drop/**/table t", Drop),
            ("DROP USER x", User),
            ("CREATE OR REPLACE USER x", User),
            ("create role r", User),
            ("RENAME USER a TO b", User),
            ("SET PASSWORD = 'x'", User),
            ("SET DEFAULT ROLE r FOR u", User),
            ("SET @a = 1", Set),
            ("LOAD DATA INFILE 'x' INTO TABLE t", Load),
            ("LOAD INDEX INTO CACHE t", Admin),
            ("START TRANSACTION", Transaction),
            ("START SLAVE", Admin),
            ("XA START 'x'", Transaction),
            ("HANDLER t OPEN", Handler),
            ("restart", Shutdown),
            ("FLUSH PRIVILEGES", Admin),
            ("TRUNCATE t", Truncate),
            ("", Other),
        ] {
            assert_eq!(kind(sql), k, "{sql}");
        }
    }

    #[test]
    fn features_anywhere_in_the_text() {
        assert_eq!(features("SELECT * FROM t INTO OUTFILE '/tmp/x'"), ["file"]);
        assert_eq!(
            features("SELECT * INTO\nDUMPFILE '/tmp/x' FROM t"),
            ["file"]
        );
        assert_eq!(
            features("SELECT a FROM t WHERE b = LOAD_FILE /**/ ('/etc/passwd')"),
            ["file"]
        );
        assert_eq!(features("SELECT `load_file`('/etc/passwd')"), ["file"]);
        assert_eq!(
            features("SELECT 1 /*!50000 INTO OUTFILE '/tmp/x' */"),
            ["file"]
        );
        assert!(features("SELECT 'INTO OUTFILE', load_file FROM t").is_empty());
        assert!(features("SELECT a INTO @v FROM t").is_empty());
        assert_eq!(features("SELECT SLEEP(5)"), ["sleep"]);
        assert_eq!(features("SELECT benchmark(1e6, md5('a'))"), ["sleep"]);
        assert_eq!(features("SET GLOBAL max_connections = 1"), ["set_global"]);
        assert_eq!(features("SET @@global.max_connections = 1"), ["set_global"]);
        assert_eq!(features("set persist x = 1"), ["set_global"]);
        assert_eq!(features("SET sql_log_bin = 0"), ["sql_log_bin"]);
        assert_eq!(features("SET @@session.sql_log_bin = 0"), ["sql_log_bin"]);
        assert!(features("SET @global = 1, @sql_log_bin = 2").is_empty());
        assert!(features("SELECT @@global.max_connections").is_empty());
        assert_eq!(features("PREPARE s FROM @q"), ["dynamic_sql"]);
        assert_eq!(
            features("EXECUTE IMMEDIATE 'DROP TABLE t'"),
            ["dynamic_sql"]
        );
        assert_eq!(features("call p()"), ["dynamic_sql"]);
        assert_eq!(features("GRANT ALL ON *.* TO x"), ["privileges"]);
        assert_eq!(features("CREATE USER 'x'@'%'"), ["privileges"]);
        assert_eq!(features("KILL QUERY 7"), ["kill"]);
        assert_eq!(features("SHUTDOWN"), ["shutdown"]);
        assert_eq!(features("HANDLER t READ FIRST"), ["handler"]);
    }

    #[test]
    fn updates_and_deletes_without_a_real_where() {
        for sql in [
            "DELETE FROM t",
            "DELETE FROM t LIMIT 10",
            "UPDATE t SET a = 1",
            "UPDATE t SET a = 1 WHERE 1",
            "UPDATE t SET a = 1 WHERE 1 = 1",
            "DELETE FROM t WHERE TRUE ORDER BY id",
            "DELETE FROM t WHERE NOT FALSE AND 'a' = 'a'",
            "DELETE FROM t WHERE NOW() > '2020-01-01' - INTERVAL 1 DAY",
            "UPDATE t SET a = (SELECT 1 FROM u WHERE u.id = 2)",
        ] {
            assert_eq!(features(sql), ["without_where"], "{sql}");
        }
        for sql in [
            "DELETE FROM t WHERE id = 1",
            "UPDATE t SET a = 1 WHERE `id` = 2",
            "DELETE t FROM t JOIN u ON t.id = u.id WHERE u.gone",
            "UPDATE t SET a = 1 WHERE id IN (SELECT id FROM u)",
            "SELECT * FROM t",
        ] {
            assert!(features(sql).is_empty(), "{sql}");
        }
    }

    #[test]
    fn use_names_its_database() {
        assert_eq!(scan("USE shop").use_database.as_deref(), Some("shop"));
        assert_eq!(scan("use `my db`").use_database.as_deref(), Some("my db"));
        assert_eq!(scan("USE `a``b`").use_database.as_deref(), Some("a`b"));
    }
}
