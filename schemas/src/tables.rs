//! The three archive tables as Arrow schemas: `sessions`, `statements`, `frames`.
//!
//! These schemas are the contract with every reader (DataFusion, DuckDB, pyarrow,
//! Spark, Athena, Trino). Types are chosen for portability: signed integers only
//! (Hive-style engines have no unsigned types), timestamps in microseconds with a
//! UTC time zone (what Spark and Athena read natively), strings as UTF-8, lists of
//! strings for multi-valued facts. A column may be added in a later minor change,
//! never renamed, retyped or removed within `v1`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::FORMAT_VERSION;

/// One of the archive's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Sessions,
    Statements,
    Frames,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Sessions, Table::Statements, Table::Frames];

    /// The table's name, as used in object paths and SQL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Statements => "statements",
            Table::Frames => "frames",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's Arrow schema (shared, built once).
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Sessions => sessions_schema(),
            Table::Statements => statements_schema(),
            Table::Frames => frames_schema(),
        }
    }

    /// The column that places a row in time (and in a `date=/hour=` partition).
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Sessions => sessions::TIME,
            Table::Statements => statements::STARTED_AT,
            Table::Frames => frames::TIME,
        }
    }

    /// Columns carrying Parquet bloom filters (point lookups by session or agent).
    pub fn bloom_filter_columns(self) -> &'static [&'static str] {
        match self {
            Table::Sessions => &[sessions::SESSION_ID, sessions::SUBJECT],
            Table::Statements => &[statements::SESSION_ID, statements::SUBJECT],
            Table::Frames => &[frames::SESSION_ID],
        }
    }

    /// The order rows are written in, within a file.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Sessions => &[sessions::SESSION_ID, sessions::TIME],
            Table::Statements => &[statements::SESSION_ID, statements::COMMAND_INDEX],
            Table::Frames => &[frames::SESSION_ID, frames::SEQ],
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Schema metadata key: the archive format version (`v1`).
pub const META_FORMAT_VERSION: &str = "chaperone.format_version";
/// Schema metadata key: the table's name.
pub const META_TABLE: &str = "chaperone.table";

/// The Arrow type of every time column: microseconds since the Unix epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
}

/// The Arrow type of multi-valued string columns (`tables_read`, `params`, ...).
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn schema(table: Table, fields: Vec<Field>) -> SchemaRef {
    let metadata = HashMap::from([
        (META_FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string()),
        (META_TABLE.to_string(), table.name().to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn int64(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}
fn int32(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int32, nullable)
}
fn boolean(name: &str) -> Field {
    Field::new(name, DataType::Boolean, false)
}
fn time(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}
fn list(name: &str) -> Field {
    Field::new(name, string_list_type(), false)
}

/// Identity column names, shared by `sessions` and `statements`.
pub mod identity {
    pub const ISSUER: &str = "issuer";
    pub const SUBJECT: &str = "subject";
    pub const DISPLAY_NAME: &str = "display_name";
    pub const AUTH_METHOD: &str = "auth_method";
    pub const ROLE: &str = "role";
    pub const TARGET: &str = "target";
}

/// Column names of `sessions`.
pub mod sessions {
    pub use super::identity::*;
    pub const GATEWAY_ID: &str = "gateway_id";
    pub const SESSION_ID: &str = "session_id";
    /// `start` or `end`.
    pub const EVENT: &str = "event";
    pub const TIME: &str = "time";
    pub const STARTED_AT: &str = "started_at";
    pub const CONNECTION_ID: &str = "connection_id";
    pub const UPSTREAM_CONNECTION_ID: &str = "upstream_connection_id";
    pub const CLAIMS: &str = "claims";
    pub const CREDENTIAL_EXPIRES_AT: &str = "credential_expires_at";
    pub const CLIENT_USER: &str = "client_user";
    pub const UPSTREAM_USER: &str = "upstream_user";
    pub const DATABASE: &str = "database";
    pub const CLIENT_ADDR: &str = "client_addr";
    pub const CLIENT_PROGRAM: &str = "client_program";
    pub const CLIENT_NAME: &str = "client_name";
    pub const CLIENT_VERSION: &str = "client_version";
    pub const CONNECT_ATTRS: &str = "connect_attrs";
    pub const CLIENT_TLS: &str = "client_tls";
    pub const UPSTREAM_TLS: &str = "upstream_tls";
    pub const ENDED_AT: &str = "ended_at";
    pub const END_REASON: &str = "end_reason";
    pub const COMMANDS: &str = "commands";
    pub const FRAMES: &str = "frames";
    pub const BYTES_FROM_CLIENT: &str = "bytes_from_client";
    pub const BYTES_TO_CLIENT: &str = "bytes_to_client";
    /// The approved access request the session opened under (both rows).
    pub const ACCESS_REQUEST_ID: &str = "access_request_id";

    /// Value of [`EVENT`] on the row written when a session starts.
    pub const EVENT_START: &str = "start";
    /// Value of [`EVENT`] on the row written when a session ends.
    pub const EVENT_END: &str = "end";
}

/// Column names of `statements`.
pub mod statements {
    pub use super::identity::*;
    pub const GATEWAY_ID: &str = "gateway_id";
    pub const SESSION_ID: &str = "session_id";
    pub const COMMAND_INDEX: &str = "command_index";
    pub const STARTED_AT: &str = "started_at";
    pub const DURATION_US: &str = "duration_us";
    pub const COMMAND: &str = "command";
    pub const SQL: &str = "sql";
    pub const STATEMENT_ID: &str = "statement_id";
    pub const PARAMS: &str = "params";
    pub const DATABASE: &str = "database";
    pub const DIGEST: &str = "digest";
    pub const NORMALIZED_SQL: &str = "normalized_sql";
    pub const STATEMENT_CLASS: &str = "statement_class";
    pub const TABLES_READ: &str = "tables_read";
    pub const TABLES_WRITTEN: &str = "tables_written";
    pub const PARSE_ERROR: &str = "parse_error";
    pub const VERDICT: &str = "verdict";
    pub const VERDICT_REASON: &str = "verdict_reason";
    /// The guardrail policy that judged the statement (guarded sessions only).
    pub const POLICY: &str = "policy";
    /// The policy rule that decided.
    pub const POLICY_RULE: &str = "policy_rule";
    /// The approval request the statement waited for or ran under.
    pub const APPROVAL_ID: &str = "approval_id";
    /// Who approved it.
    pub const APPROVERS: &str = "approvers";
    /// How long it waited for a decision (milliseconds).
    pub const APPROVAL_WAIT_MS: &str = "approval_wait_ms";
    pub const ROWS_RETURNED: &str = "rows_returned";
    pub const ROWS_AFFECTED: &str = "rows_affected";
    pub const LAST_INSERT_ID: &str = "last_insert_id";
    pub const WARNINGS: &str = "warnings";
    pub const ERROR_CODE: &str = "error_code";
    pub const ERROR_MESSAGE: &str = "error_message";
    pub const RESULT_COLUMNS: &str = "result_columns";
    pub const RESULT_HASH: &str = "result_hash";
    pub const MASKED_COLUMNS: &str = "masked_columns";
    pub const PAYLOAD_CAPPED: &str = "payload_capped";
    pub const PAYLOAD_BYTES_DROPPED: &str = "payload_bytes_dropped";
}

/// Column names of `frames`.
pub mod frames {
    pub const GATEWAY_ID: &str = "gateway_id";
    pub const SESSION_ID: &str = "session_id";
    pub const SEQ: &str = "seq";
    pub const COMMAND_INDEX: &str = "command_index";
    pub const TIME: &str = "time";
    /// `client_to_server` or `server_to_client`.
    pub const DIRECTION: &str = "direction";
    pub const PAYLOAD: &str = "payload";
    pub const PAYLOAD_LENGTH: &str = "payload_length";
    pub const PAYLOAD_CAPPED: &str = "payload_capped";
}

/// `sessions`: one row when a session starts (`event = 'start'`) and one when it
/// ends (`event = 'end'`). Identity columns are on both rows.
pub fn sessions_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use sessions::*;
            schema(
                Table::Sessions,
                vec![
                    utf8(GATEWAY_ID, false),
                    utf8(SESSION_ID, false),
                    utf8(EVENT, false),
                    time(TIME, false),
                    time(STARTED_AT, true),
                    utf8(ISSUER, true),
                    utf8(SUBJECT, true),
                    utf8(DISPLAY_NAME, true),
                    utf8(AUTH_METHOD, true),
                    utf8(ROLE, true),
                    utf8(CLAIMS, true),
                    time(CREDENTIAL_EXPIRES_AT, true),
                    utf8(TARGET, true),
                    utf8(CLIENT_USER, true),
                    utf8(UPSTREAM_USER, true),
                    utf8(DATABASE, true),
                    int64(CONNECTION_ID, true),
                    int64(UPSTREAM_CONNECTION_ID, true),
                    utf8(CLIENT_ADDR, true),
                    utf8(CLIENT_PROGRAM, true),
                    utf8(CLIENT_NAME, true),
                    utf8(CLIENT_VERSION, true),
                    utf8(CONNECT_ATTRS, true),
                    Field::new(CLIENT_TLS, DataType::Boolean, true),
                    Field::new(UPSTREAM_TLS, DataType::Boolean, true),
                    time(ENDED_AT, true),
                    utf8(END_REASON, true),
                    int64(COMMANDS, true),
                    int64(FRAMES, true),
                    int64(BYTES_FROM_CLIENT, true),
                    int64(BYTES_TO_CLIENT, true),
                    // Added after the first release: last, so files written
                    // before it read with the column null.
                    utf8(ACCESS_REQUEST_ID, true),
                ],
            )
        })
        .clone()
}

/// `statements`: one row per command, with the session's identity repeated so
/// that per-agent queries prune without a join.
pub fn statements_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use statements::*;
            schema(
                Table::Statements,
                vec![
                    utf8(GATEWAY_ID, false),
                    utf8(SESSION_ID, false),
                    int64(COMMAND_INDEX, false),
                    time(STARTED_AT, false),
                    int64(DURATION_US, false),
                    utf8(ISSUER, true),
                    utf8(SUBJECT, true),
                    utf8(DISPLAY_NAME, true),
                    utf8(AUTH_METHOD, true),
                    utf8(ROLE, true),
                    utf8(TARGET, true),
                    utf8(DATABASE, true),
                    utf8(COMMAND, false),
                    utf8(SQL, true),
                    int64(STATEMENT_ID, true),
                    list(PARAMS),
                    utf8(DIGEST, true),
                    utf8(NORMALIZED_SQL, true),
                    utf8(STATEMENT_CLASS, true),
                    list(TABLES_READ),
                    list(TABLES_WRITTEN),
                    utf8(PARSE_ERROR, true),
                    utf8(VERDICT, false),
                    utf8(VERDICT_REASON, true),
                    utf8(POLICY, true),
                    utf8(POLICY_RULE, true),
                    utf8(APPROVAL_ID, true),
                    list(APPROVERS),
                    int64(APPROVAL_WAIT_MS, true),
                    int64(ROWS_RETURNED, false),
                    int64(ROWS_AFFECTED, false),
                    int64(LAST_INSERT_ID, false),
                    int32(WARNINGS, false),
                    int32(ERROR_CODE, true),
                    utf8(ERROR_MESSAGE, true),
                    list(RESULT_COLUMNS),
                    utf8(RESULT_HASH, true),
                    list(MASKED_COLUMNS),
                    boolean(PAYLOAD_CAPPED),
                    int64(PAYLOAD_BYTES_DROPPED, false),
                ],
            )
        })
        .clone()
}

/// `frames`: one row per protocol packet, in either direction, as delivered.
pub fn frames_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use frames::*;
            schema(
                Table::Frames,
                vec![
                    utf8(GATEWAY_ID, false),
                    utf8(SESSION_ID, false),
                    int64(SEQ, false),
                    int64(COMMAND_INDEX, false),
                    time(TIME, false),
                    utf8(DIRECTION, false),
                    Field::new(PAYLOAD, DataType::Binary, false),
                    int64(PAYLOAD_LENGTH, false),
                    boolean(PAYLOAD_CAPPED),
                ],
            )
        })
        .clone()
}
