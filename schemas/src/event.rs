//! The tap's vocabulary: what the gateway hands to the recorder.
//!
//! A session produces, in order: one [`SessionStart`], then for each command the
//! [`Frame`]s exchanged (client request first) and one [`CommandSummary`], and
//! finally one [`SessionEnd`]. Frame sequence numbers are per session, start at 0
//! and have no gaps: a missing number in the archive is a lost frame.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// Which way a frame travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the agent to the database (a request).
    ClientToServer,
    /// From the database to the agent (a response, as delivered to the agent).
    ServerToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
        }
    }
}

/// A session has been authenticated and its upstream connection opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStart {
    pub session_id: String,
    /// The gateway's own connection id, as shown to the client.
    pub connection_id: u32,
    /// The upstream server's thread id for this session.
    pub upstream_connection_id: u32,
    /// Unix time in nanoseconds.
    pub started_at_ns: i64,
    pub gateway_id: String,
    pub identity: Identity,
    /// The MySQL user name the client logged in with (it names the target).
    pub client_user: String,
    pub target: String,
    pub upstream_user: String,
    pub database: Option<String>,
    pub client_addr: String,
    pub client_tls: bool,
    pub upstream_tls: bool,
    /// Connection attributes the client sent (`program_name`, `_client_version`, ...).
    pub connect_attrs: BTreeMap<String, String>,
    /// The approved access request (just-in-time grant) the session opened
    /// under, when its policy requires one (`docs/guardrails.md`).
    #[serde(default)]
    pub access_request_id: Option<String>,
}

/// One logical MySQL packet, as delivered.
#[derive(Debug, Clone)]
pub struct Frame {
    pub session_id: std::sync::Arc<str>,
    /// Per-session, gap-free, starting at 0.
    pub seq: u64,
    /// The index of the command this frame belongs to (0 for the first command).
    pub command_index: u64,
    /// Unix time in nanoseconds.
    pub time_ns: i64,
    pub direction: Direction,
    /// The packet's payload, without the 4-byte header. Multi-packet payloads
    /// (16 MiB and more) are joined.
    pub payload: Bytes,
}

/// What one command did, computed on the gateway's hot path from the frames.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandSummary {
    pub session_id: String,
    pub command_index: u64,
    /// Unix time in nanoseconds when the request arrived.
    pub started_at_ns: i64,
    pub duration_ns: u64,
    /// The command's name (`COM_QUERY`, `COM_STMT_EXECUTE`, ...).
    pub command: String,
    /// SQL text for COM_QUERY and COM_STMT_PREPARE; the prepared text for EXECUTE.
    pub sql: Option<String>,
    /// The statement id for binary-protocol commands.
    pub statement_id: Option<u32>,
    /// Parameters of a COM_STMT_EXECUTE, rendered as SQL literals.
    pub params: Vec<String>,
    /// The database in use when the command ran.
    pub database: Option<String>,
    pub rows_returned: u64,
    pub rows_affected: u64,
    pub last_insert_id: u64,
    pub warnings: u16,
    pub error_code: Option<u16>,
    pub error_message: Option<String>,
    pub result_columns: Vec<String>,
    /// Set when the gateway answered the command itself (refused, or handled
    /// locally) instead of forwarding it.
    pub refused: bool,

    // --- Statement facts (archive issue, read side fills these). ---------------
    /// Hex hash of `normalized_sql`: group statements by it.
    #[serde(default)]
    pub digest: Option<String>,
    /// Normalised SQL (literals replaced by `?`, whitespace folded, keywords
    /// upper-cased, IN-lists collapsed), stable across runs.
    #[serde(default)]
    pub normalized_sql: Option<String>,
    /// `read`, `write`, `ddl`, `admin`, `transaction`, `session`, `other` or
    /// `unparsed` (see `chaperone_proxy::sql::StatementClass`).
    #[serde(default)]
    pub statement_class: Option<String>,
    /// Tables read, qualified with the current database (`db.table`).
    #[serde(default)]
    pub tables_read: Vec<String>,
    /// Tables written, qualified with the current database (`db.table`).
    #[serde(default)]
    pub tables_written: Vec<String>,
    /// Set when the SQL (or one statement of a multi-statement packet) could not
    /// be parsed: the parser's message. The tables of an unparsed statement are
    /// not listed, never guessed.
    #[serde(default)]
    pub parse_error: Option<String>,
    /// Hex SHA-256 over the result as delivered (column definitions and rows).
    #[serde(default)]
    pub result_hash: Option<String>,

    // --- Guardrails (filled by the guardrail issue; recorded as given). --------
    /// The guardrail decision: `allowed`, `denied`, `approved` (ran after
    /// approval), `approval_denied`, `approval_timeout`, `pending_approval`
    /// (async mode: refused with a request id). None (sessions without a
    /// policy): the archive writes `refused` or `allowed` from
    /// [`CommandSummary::refused`].
    #[serde(default)]
    pub verdict: Option<String>,
    /// Why the verdict was reached (rule name, approver, ...).
    #[serde(default)]
    pub verdict_reason: Option<String>,
    /// The guardrail policy that judged the command (guarded sessions only).
    #[serde(default)]
    pub policy: Option<String>,
    /// The policy rule that decided (`class`, `feature:file`, `databases`,
    /// `unparsed`, `dynamic_sql`, an approval rule's name, ...).
    #[serde(default)]
    pub policy_rule: Option<String>,
    /// The approval request the command waited for, or ran under.
    #[serde(default)]
    pub approval_id: Option<String>,
    /// Who approved it.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How long the command waited for a decision, in milliseconds.
    #[serde(default)]
    pub approval_wait_ms: Option<u64>,
    /// Columns masked in the result, as `column:rule`.
    #[serde(default)]
    pub masked_columns: Vec<String>,
}

/// A session is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session_id: String,
    pub ended_at_ns: i64,
    /// Why it ended: `client_quit`, `client_disconnected`, `upstream_closed`,
    /// `idle_timeout`, `shutdown`, `protocol_error: ...`, `change_user`,
    /// `grant_expired` (the role's longest session or the credentials' expiry),
    /// `credentials_revoked` (its just-in-time credentials were revoked),
    /// `auth_failed: <reason>` (a refused login, recorded as a session that ends
    /// as it starts, with no frames; connection ids 0).
    pub reason: String,
    pub commands: u64,
    pub frames: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
}

/// Everything the tap carries.
#[derive(Debug, Clone)]
pub enum TapEvent {
    SessionStart(Box<SessionStart>),
    Frame(Frame),
    Command(Box<CommandSummary>),
    SessionEnd(Box<SessionEnd>),
}

/// Unix time now, in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
