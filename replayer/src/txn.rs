//! A session's own transaction statements inside `replay --rollback`'s
//! transaction.
//!
//! `--rollback` runs the replay inside `START TRANSACTION ... ROLLBACK`. An ORM
//! session has transaction statements of its own (SQLAlchemy sends `ROLLBACK`
//! whenever a connection goes back to its pool): sent as they are, `BEGIN` and
//! `COMMIT` would commit the replay's transaction, and `ROLLBACK` would end it
//! (what follows would then commit). They are replayed as savepoints of the
//! replay's transaction instead, which keeps each one's meaning for the session:
//! `ROLLBACK` undoes the session's work since its last transaction boundary
//! (its `BEGIN`, `COMMIT` or `ROLLBACK`), and everything is still rolled back at
//! the end. Statements MySQL commits implicitly (DDL, `LOCK TABLES`, `SET
//! autocommit = 1`, ...) cannot be contained and are refused up front.

use chaperone_mysql::protocol::command::{COM_INIT_DB, COM_QUERY, COM_STMT_PREPARE};

use crate::dbmap::DatabaseMap;
use crate::model::Statement;

/// The savepoint that marks the session's last transaction boundary.
pub const SAVEPOINT: &str = "chaperone_replay_session";

/// What a statement means for the replay's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatement {
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`: a new boundary
    /// (`SAVEPOINT`); the work stays in the replay's transaction.
    Boundary,
    /// `ROLLBACK`: back to the last boundary (`ROLLBACK TO SAVEPOINT`).
    Rollback,
    /// Savepoints of the session's own: replayed as recorded.
    Contained,
    /// Anything else: not a transaction statement.
    NotTransaction,
}

/// Classifies a statement by its SQL text.
pub fn classify(st: &Statement) -> TxnStatement {
    let Some(sql) = st.sql.as_deref() else {
        return TxnStatement::NotTransaction;
    };
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["BEGIN"] | ["BEGIN", "WORK"] | ["START", "TRANSACTION", ..] => TxnStatement::Boundary,
        ["COMMIT"] | ["COMMIT", "WORK"] => TxnStatement::Boundary,
        ["ROLLBACK"] | ["ROLLBACK", "WORK"] => TxnStatement::Rollback,
        ["ROLLBACK", "TO", ..] | ["ROLLBACK", "WORK", "TO", ..] => TxnStatement::Contained,
        ["SAVEPOINT", ..] | ["RELEASE", "SAVEPOINT", ..] => TxnStatement::Contained,
        // Isolation levels and access modes: they commit nothing.
        ["SET", "TRANSACTION", ..] | ["SET", "SESSION", "TRANSACTION", ..] => {
            TxnStatement::Contained
        }
        _ => TxnStatement::NotTransaction,
    }
}

/// The SQL sent instead of a session's transaction statement, if it is one.
pub fn replacement(st: &Statement) -> Option<String> {
    match classify(st) {
        TxnStatement::Boundary => Some(format!("SAVEPOINT {SAVEPOINT}")),
        TxnStatement::Rollback => Some(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}")),
        TxnStatement::Contained | TxnStatement::NotTransaction => None,
    }
}

/// Why `--rollback` cannot contain a statement (None: it can).
pub fn cannot_contain(st: &Statement) -> Option<String> {
    if st.is_refused() {
        return None;
    }
    match st.statement_class.as_deref() {
        Some("ddl") => Some("DDL, which MySQL commits implicitly".into()),
        Some("transaction") if classify(st) == TxnStatement::NotTransaction => Some(
            "a transaction statement --rollback cannot contain (it commits, or ends the \
             replay's transaction)"
                .into(),
        ),
        _ => None,
    }
}

/// The request sent for a recorded one: database names mapped
/// (`--map-database`), and under `--rollback` the session's own transaction
/// statements as savepoints of the replay's transaction ([`crate::txn`]).
pub fn request_for(
    st: &Statement,
    command: u8,
    payload: Vec<u8>,
    rollback: bool,
    map: &DatabaseMap,
) -> Vec<u8> {
    let sql = |text: &str| [&[command][..], text.as_bytes()].concat();
    if command == COM_QUERY && rollback {
        if let Some(text) = crate::txn::replacement(st) {
            return sql(&text);
        }
    }
    match command {
        COM_QUERY | COM_STMT_PREPARE if !map.is_empty() => {
            sql(&map.sql(&String::from_utf8_lossy(&payload[1..])))
        }
        COM_INIT_DB => match map.database(&String::from_utf8_lossy(&payload[1..])) {
            Some(to) => sql(to),
            None => payload,
        },
        _ => payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(sql: &str, class: &str) -> Statement {
        Statement {
            sql: Some(sql.into()),
            statement_class: Some(class.into()),
            ..Default::default()
        }
    }

    #[test]
    fn orm_transactions_are_contained() {
        assert_eq!(
            replacement(&st("ROLLBACK", "transaction")).as_deref(),
            Some("ROLLBACK TO SAVEPOINT chaperone_replay_session")
        );
        assert_eq!(
            replacement(&st("begin", "transaction")).as_deref(),
            Some("SAVEPOINT chaperone_replay_session")
        );
        assert_eq!(
            replacement(&st("COMMIT;", "transaction")).as_deref(),
            Some("SAVEPOINT chaperone_replay_session")
        );
        assert_eq!(
            replacement(&st("ROLLBACK TO SAVEPOINT sa_1", "transaction")),
            None
        );
        for ok in [
            "ROLLBACK",
            "COMMIT",
            "SAVEPOINT x",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        ] {
            assert_eq!(cannot_contain(&st(ok, "transaction")), None, "{ok}");
        }
        assert!(cannot_contain(&st("CREATE TABLE t (a INT)", "ddl"))
            .unwrap()
            .contains("commits implicitly"));
        assert!(cannot_contain(&st("LOCK TABLES t WRITE", "transaction")).is_some());
    }
}
