//! Statement facts: what a SQL text is and what it touches, computed on the
//! gateway's data path for the record and for guardrails.
//!
//! For one SQL text (a COM_QUERY packet, or the text of a prepared statement)
//! [`analyze`] returns its [digest](digest) (normalised text and hash), its
//! [`StatementClass`], and the tables it reads and writes
//! ([rules](facts)), statement by statement for multi-statement packets.
//! Executable comments (`/*! ... */`, `/*!50001 ... */`, `/*M! ... */`) are
//! read as code, as the server does. What the parser (sqlparser, MySQL dialect)
//! cannot parse is recorded as [`StatementClass::Unparsed`] with the parser's
//! message, never guessed.
//!
//! OLTP traffic repeats the same statements: [`AnalysisCache`] keeps recent
//! analyses by exact text, so a repeated statement costs a hash lookup.

pub mod cache;
pub mod digest;
pub mod facts;
pub mod features;
pub mod lexer;
pub mod lineage;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chaperone_schemas::CommandSummary;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

pub use cache::AnalysisCache;
pub use facts::StatementFacts;
pub use features::{Features, StatementKind};
pub use lineage::{SourceColumn, StatementLineage};

/// What kind of statement a SQL text is. Guardrails decide on it; the record
/// keeps it as [`StatementClass::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementClass {
    /// Reads data or metadata: SELECT, SHOW, DESCRIBE, EXPLAIN.
    Read,
    /// Session state: SET (session or user variables), SET NAMES, USE, PREPARE,
    /// DEALLOCATE.
    Session,
    /// Transaction control: BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION,
    /// LOCK / UNLOCK TABLES.
    Transaction,
    /// Parsed, but its effect is not visible in the text: CALL, EXECUTE, and
    /// statements of no other class.
    Other,
    /// Changes data: INSERT, REPLACE, UPDATE, DELETE, LOAD DATA.
    Write,
    /// Changes the schema: CREATE, ALTER, DROP, TRUNCATE, RENAME.
    Ddl,
    /// Server administration: GRANT, REVOKE, users and roles, KILL, FLUSH,
    /// SET GLOBAL, OPTIMIZE / ANALYZE TABLE.
    Admin,
    /// The parser could not read the statement.
    Unparsed,
}

impl StatementClass {
    pub const ALL: [StatementClass; 8] = [
        StatementClass::Read,
        StatementClass::Session,
        StatementClass::Transaction,
        StatementClass::Other,
        StatementClass::Write,
        StatementClass::Ddl,
        StatementClass::Admin,
        StatementClass::Unparsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Session => "session",
            StatementClass::Transaction => "transaction",
            StatementClass::Other => "other",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Admin => "admin",
            StatementClass::Unparsed => "unparsed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The class of a multi-statement packet: the most consequential of its
    /// statements' classes (the order of the enum: `unparsed` above `admin`
    /// above `ddl` above `write` ...).
    pub fn combine(self, other: StatementClass) -> StatementClass {
        self.max(other)
    }
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table as named in the statement: the database part only when written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// `db.table`, with the current database for unqualified names (the bare
    /// name when no database is selected).
    pub fn qualified(&self, database: Option<&str>) -> String {
        match (self.schema.as_deref(), database) {
            (Some(s), _) | (None, Some(s)) => format!("{s}.{}", self.name),
            (None, None) => self.name.clone(),
        }
    }
}

/// Texts longer than this are not parsed (recorded as unparsed, with a
/// digest): parsing megabytes of bulk INSERT on the data path would stall the
/// session.
pub const MAX_PARSED_LEN: usize = 1024 * 1024;

/// The facts of one SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The normalised text (None when the text cannot be tokenized).
    pub normalized: Option<String>,
    /// Hex hash of `normalized`.
    pub digest: Option<String>,
    /// The combined class of all statements ([`StatementClass::combine`]).
    pub class: StatementClass,
    /// One entry per statement, in order.
    pub statements: Vec<StatementFacts>,
    /// The first parse error, if any statement could not be parsed.
    pub parse_error: Option<String>,
    /// Where each statement's output columns come from, for masking: from the
    /// same parse as the facts (Err: some statement could not be parsed, or the
    /// text was too long or unreadable to parse).
    pub lineage: Result<Arc<Vec<StatementLineage>>, String>,
}

impl Analysis {
    fn unparsed(normalized: Option<String>, error: String) -> Self {
        Analysis {
            digest: normalized.as_deref().map(digest::digest_of),
            normalized,
            class: StatementClass::Unparsed,
            statements: vec![StatementFacts::unparsed(error.clone())],
            lineage: Err(error.clone()),
            parse_error: Some(error),
        }
    }

    /// The features of all statements together.
    pub fn features(&self) -> Features {
        self.statements
            .iter()
            .fold(Features::NONE, |acc, s| acc | s.features)
    }

    /// Tables read by any statement, qualified with `database`, without duplicates.
    pub fn tables_read(&self, database: Option<&str>) -> Vec<String> {
        Self::qualified(
            self.statements.iter().flat_map(|s| &s.tables_read),
            database,
        )
    }

    /// Tables written by any statement, qualified with `database`, without duplicates.
    pub fn tables_written(&self, database: Option<&str>) -> Vec<String> {
        Self::qualified(
            self.statements.iter().flat_map(|s| &s.tables_written),
            database,
        )
    }

    fn qualified<'a>(
        tables: impl Iterator<Item = &'a TableName>,
        database: Option<&str>,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in tables {
            let q = t.qualified(database);
            if !out.contains(&q) {
                out.push(q);
            }
        }
        out
    }

    /// Writes the facts into a command's record, tables qualified with
    /// `database`: the current database for COM_QUERY, the database at prepare
    /// time for a prepared statement (names are resolved when it is prepared).
    pub fn record_into(&self, summary: &mut CommandSummary, database: Option<&str>) {
        summary.tables_read = self.tables_read(database);
        summary.tables_written = self.tables_written(database);
        summary.digest = self.digest.clone();
        summary.normalized_sql = self.normalized.clone();
        summary.statement_class = Some(self.class.as_str().to_string());
        summary.parse_error = self.parse_error.clone();
    }
}

/// Analyses one SQL text (uncached; see [`AnalysisCache`]).
pub fn analyze(sql: &str) -> Analysis {
    match digest::normalize(sql) {
        Ok(normalized) => analyze_normalized(sql, normalized),
        Err(e) => unreadable(&e),
    }
}

/// The analysis of a text that cannot be tokenized.
fn unreadable(e: &lexer::LexError) -> Analysis {
    Analysis::unparsed(None, format!("cannot read the SQL text: {e}"))
}

/// Analyses a text whose normalised form is already known.
fn analyze_normalized(sql: &str, normalized: String) -> Analysis {
    if sql.len() > MAX_PARSED_LEN {
        return Analysis::unparsed(
            Some(normalized),
            format!(
                "not parsed: the statement is {} bytes, more than the {MAX_PARSED_LEN} the gateway parses",
                sql.len()
            ),
        );
    }
    let code = lexer::open_executable_comments(sql);
    let (statements, lineage) = parse(&code);
    let class = statements
        .iter()
        .map(|s| s.class)
        .reduce(StatementClass::combine)
        .unwrap_or(StatementClass::Other);
    let parse_error = statements.iter().find_map(|s| s.parse_error.clone());
    Analysis {
        digest: Some(digest::digest_of(&normalized)),
        normalized: Some(normalized),
        class,
        statements,
        parse_error,
        lineage: lineage.map(Arc::new),
    }
}

/// How many SQL texts have been parsed in this process (each text once, by
/// [`analyze`]; the cache saves the rest). Tests assert the hot path parses a
/// statement once.
pub fn texts_parsed() -> u64 {
    TEXTS_PARSED.load(Ordering::Relaxed)
}

static TEXTS_PARSED: AtomicU64 = AtomicU64::new(0);

/// Parses a text with its executable comments opened, statement by statement
/// as the gateway's lexer splits it (the server's view), and adds each
/// statement's [lexical facts](features). When the parser reads a different
/// number of statements than the lexer, the text is parsed part by part, and a
/// part the parser reads as more than one statement is unparsed: the two must
/// never disagree on what runs. One unparsable statement does not hide what
/// the others do.
fn parse(code: &str) -> (Vec<StatementFacts>, Result<Vec<StatementLineage>, String>) {
    TEXTS_PARSED.fetch_add(1, Ordering::Relaxed);
    let dialect = MySqlDialect {};
    let Ok(parts) = lexer::split_statements(code) else {
        let error = "cannot split the SQL text into statements".to_string();
        return (vec![StatementFacts::unparsed(error.clone())], Err(error));
    };
    let mut lineage = Ok(Vec::with_capacity(parts.len()));
    let mut facts: Vec<StatementFacts> = match Parser::parse_sql(&dialect, code) {
        Ok(statements) if statements.len() == parts.len() => {
            lineage = Ok(statements.iter().map(lineage::of_statement).collect());
            statements.iter().map(StatementFacts::of).collect()
        }
        Err(whole) if parts.len() <= 1 => {
            let mut f = StatementFacts::unparsed(whole.to_string());
            if let Some(&(start, end)) = parts.first() {
                f.add_lexical(features::scan(&code[start..end]));
            }
            return (vec![f], Err(whole.to_string()));
        }
        _ => parts
            .iter()
            .map(
                |&(start, end)| match Parser::parse_sql(&dialect, &code[start..end]) {
                    Ok(statements) if statements.len() == 1 => {
                        if let Ok(l) = lineage.as_mut() {
                            l.push(lineage::of_statement(&statements[0]));
                        }
                        StatementFacts::of(&statements[0])
                    }
                    Ok(statements) => {
                        let error = format!(
                            "the SQL parser reads {} statements where the server reads one",
                            statements.len()
                        );
                        lineage = Err(error.clone());
                        StatementFacts::unparsed(error)
                    }
                    Err(e) => {
                        lineage = Err(e.to_string());
                        StatementFacts::unparsed(e.to_string())
                    }
                },
            )
            .collect(),
    };
    for (f, &(start, end)) in facts.iter_mut().zip(&parts) {
        f.add_lexical(features::scan(&code[start..end]));
    }
    (facts, lineage)
}

#[cfg(test)]
mod tests;
