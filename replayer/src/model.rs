//! A recorded session as the replayer sees it: rows of `statements` and `frames`.

use serde::Serialize;

/// One row of `statements`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Statement {
    pub session_id: String,
    pub command_index: i64,
    pub started_at_us: i64,
    pub duration_us: i64,
    pub subject: Option<String>,
    /// The role the session's identity was mapped to: whose masking applied.
    pub role: Option<String>,
    pub database: Option<String>,
    pub command: String,
    pub sql: Option<String>,
    pub statement_id: Option<i64>,
    pub params: Vec<String>,
    pub digest: Option<String>,
    pub normalized_sql: Option<String>,
    pub statement_class: Option<String>,
    pub tables_read: Vec<String>,
    pub tables_written: Vec<String>,
    pub verdict: Option<String>,
    pub verdict_reason: Option<String>,
    pub rows_returned: i64,
    pub rows_affected: i64,
    pub last_insert_id: i64,
    pub warnings: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub result_columns: Vec<String>,
    pub result_hash: Option<String>,
    pub masked_columns: Vec<String>,
    pub payload_capped: bool,
    pub payload_bytes_dropped: i64,
}

impl Statement {
    /// Did the command fail (an ERR packet, or refused by the gateway)?
    pub fn is_error(&self) -> bool {
        self.error_code.is_some_and(|c| c != 0) || self.is_refused()
    }

    pub fn is_refused(&self) -> bool {
        matches!(self.verdict.as_deref(), Some(v) if v != "allowed")
    }

    /// A one-line label: the SQL, or the command name.
    pub fn label(&self) -> String {
        match &self.sql {
            Some(sql) if !sql.is_empty() => sql.split_whitespace().collect::<Vec<_>>().join(" "),
            _ => match &self.database {
                Some(db) if self.command == "COM_INIT_DB" => format!("{} {db}", self.command),
                _ => self.command.clone(),
            },
        }
    }

    /// What identifies "the same statement" across runs: the digest, or the
    /// command and its text when there is none.
    pub fn align_key(&self) -> String {
        match &self.digest {
            Some(d) => d.clone(),
            None => format!("{}:{}", self.command, self.label()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// One row of `frames`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub seq: i64,
    pub command_index: i64,
    pub time_us: i64,
    pub direction: Direction,
    pub payload: Vec<u8>,
    pub payload_length: i64,
    pub capped: bool,
}

/// A session found by agent.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub started_at_us: Option<i64>,
    pub subject: Option<String>,
    pub display_name: Option<String>,
}
