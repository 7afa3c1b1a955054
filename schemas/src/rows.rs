//! Tap events to Arrow record batches: one builder per table.
//!
//! The builders fill columns in the order of [`crate::tables`]; `finish()` returns a
//! batch with exactly the table's schema.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::event::{CommandSummary, Direction, Frame, SessionEnd, SessionStart};
use crate::tables::{frames_schema, sessions, sessions_schema, statements_schema};

fn us(ns: i64) -> i64 {
    ns.div_euclid(1000)
}

fn time_builder(capacity: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

fn list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new())
}

fn append_list(b: &mut ListBuilder<StringBuilder>, items: &[String]) {
    for item in items {
        b.values().append_value(item);
    }
    b.append(true);
}

/// One `frames` row, borrowed (the recorder decodes these from its spool without
/// copying payloads).
#[derive(Debug, Clone, Copy)]
pub struct FrameRow<'a> {
    pub session_id: &'a str,
    pub seq: u64,
    pub command_index: u64,
    pub time_ns: i64,
    pub direction: Direction,
    /// The payload as captured (a prefix of the delivered one when capped).
    pub payload: &'a [u8],
    /// The payload's length as delivered.
    pub payload_length: u64,
    pub capped: bool,
}

impl<'a> FrameRow<'a> {
    /// An uncapped row for a tap frame.
    pub fn from_frame(frame: &'a Frame) -> Self {
        FrameRow {
            session_id: &frame.session_id,
            seq: frame.seq,
            command_index: frame.command_index,
            time_ns: frame.time_ns,
            direction: frame.direction,
            payload: &frame.payload,
            payload_length: frame.payload.len() as u64,
            capped: false,
        }
    }
}

/// Builds `frames` batches.
pub struct FrameRows {
    gateway_id: String,
    rows: usize,
    session_id: StringBuilder,
    seq: Int64Builder,
    command_index: Int64Builder,
    time: TimestampMicrosecondBuilder,
    direction: StringBuilder,
    payload: BinaryBuilder,
    payload_length: Int64Builder,
    capped: BooleanBuilder,
}

impl FrameRows {
    pub fn new(gateway_id: &str) -> Self {
        Self::with_capacity(gateway_id, 1024, 64 * 1024)
    }

    /// `rows` rows and `payload_bytes` bytes of payload before reallocating.
    pub fn with_capacity(gateway_id: &str, rows: usize, payload_bytes: usize) -> Self {
        FrameRows {
            gateway_id: gateway_id.to_string(),
            rows: 0,
            session_id: StringBuilder::with_capacity(rows, rows * 24),
            seq: Int64Builder::with_capacity(rows),
            command_index: Int64Builder::with_capacity(rows),
            time: time_builder(rows),
            direction: StringBuilder::with_capacity(rows, rows * 16),
            payload: BinaryBuilder::with_capacity(rows, payload_bytes),
            payload_length: Int64Builder::with_capacity(rows),
            capped: BooleanBuilder::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn push(&mut self, row: FrameRow<'_>) {
        self.rows += 1;
        self.session_id.append_value(row.session_id);
        self.seq.append_value(row.seq as i64);
        self.command_index.append_value(row.command_index as i64);
        self.time.append_value(us(row.time_ns));
        self.direction.append_value(row.direction.as_str());
        self.payload.append_value(row.payload);
        self.payload_length.append_value(row.payload_length as i64);
        self.capped.append_value(row.capped);
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let n = std::mem::take(&mut self.rows);
        let gateway = constant_string(&self.gateway_id, n);
        let columns: Vec<ArrayRef> = vec![
            gateway,
            Arc::new(self.session_id.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.command_index.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.payload_length.finish()),
            Arc::new(self.capped.finish()),
        ];
        RecordBatch::try_new(frames_schema(), columns)
    }
}

fn constant_string(value: &str, n: usize) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(n, value.len() * n);
    for _ in 0..n {
        b.append_value(value);
    }
    Arc::new(b.finish())
}

/// What the recorder adds to a statement about payload capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Some response payload of this statement was not stored (per-statement cap).
    pub capped: bool,
    /// How many payload bytes were not stored.
    pub bytes_dropped: u64,
}

/// Builds `statements` batches.
pub struct StatementRows {
    gateway_id: String,
    rows: usize,
    session_id: StringBuilder,
    command_index: Int64Builder,
    started_at: TimestampMicrosecondBuilder,
    duration_us: Int64Builder,
    issuer: StringBuilder,
    subject: StringBuilder,
    display_name: StringBuilder,
    auth_method: StringBuilder,
    role: StringBuilder,
    target: StringBuilder,
    database: StringBuilder,
    command: StringBuilder,
    sql: StringBuilder,
    statement_id: Int64Builder,
    params: ListBuilder<StringBuilder>,
    digest: StringBuilder,
    normalized_sql: StringBuilder,
    statement_class: StringBuilder,
    tables_read: ListBuilder<StringBuilder>,
    tables_written: ListBuilder<StringBuilder>,
    parse_error: StringBuilder,
    verdict: StringBuilder,
    verdict_reason: StringBuilder,
    policy: StringBuilder,
    policy_rule: StringBuilder,
    approval_id: StringBuilder,
    approvers: ListBuilder<StringBuilder>,
    approval_wait_ms: Int64Builder,
    rows_returned: Int64Builder,
    rows_affected: Int64Builder,
    last_insert_id: Int64Builder,
    warnings: Int32Builder,
    error_code: Int32Builder,
    error_message: StringBuilder,
    result_columns: ListBuilder<StringBuilder>,
    result_hash: StringBuilder,
    masked_columns: ListBuilder<StringBuilder>,
    payload_capped: BooleanBuilder,
    payload_bytes_dropped: Int64Builder,
}

/// The verdict recorded for a summary: the guardrail's, or `refused` / `allowed`.
pub fn verdict_of(summary: &CommandSummary) -> &str {
    match &summary.verdict {
        Some(v) => v,
        None if summary.refused => "refused",
        None => "allowed",
    }
}

impl StatementRows {
    pub fn new(gateway_id: &str) -> Self {
        StatementRows {
            gateway_id: gateway_id.to_string(),
            rows: 0,
            session_id: StringBuilder::new(),
            command_index: Int64Builder::new(),
            started_at: time_builder(1024),
            duration_us: Int64Builder::new(),
            issuer: StringBuilder::new(),
            subject: StringBuilder::new(),
            display_name: StringBuilder::new(),
            auth_method: StringBuilder::new(),
            role: StringBuilder::new(),
            target: StringBuilder::new(),
            database: StringBuilder::new(),
            command: StringBuilder::new(),
            sql: StringBuilder::new(),
            statement_id: Int64Builder::new(),
            params: list_builder(),
            digest: StringBuilder::new(),
            normalized_sql: StringBuilder::new(),
            statement_class: StringBuilder::new(),
            tables_read: list_builder(),
            tables_written: list_builder(),
            parse_error: StringBuilder::new(),
            verdict: StringBuilder::new(),
            verdict_reason: StringBuilder::new(),
            policy: StringBuilder::new(),
            policy_rule: StringBuilder::new(),
            approval_id: StringBuilder::new(),
            approvers: list_builder(),
            approval_wait_ms: Int64Builder::new(),
            rows_returned: Int64Builder::new(),
            rows_affected: Int64Builder::new(),
            last_insert_id: Int64Builder::new(),
            warnings: Int32Builder::new(),
            error_code: Int32Builder::new(),
            error_message: StringBuilder::new(),
            result_columns: list_builder(),
            result_hash: StringBuilder::new(),
            masked_columns: list_builder(),
            payload_capped: BooleanBuilder::new(),
            payload_bytes_dropped: Int64Builder::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds a statement. `session` is the session's start event, for the identity
    /// columns (None when unknown: they are then null).
    pub fn push(
        &mut self,
        summary: &CommandSummary,
        session: Option<&SessionStart>,
        capture: Capture,
    ) {
        self.rows += 1;
        self.session_id.append_value(&summary.session_id);
        self.command_index
            .append_value(summary.command_index as i64);
        self.started_at.append_value(us(summary.started_at_ns));
        self.duration_us
            .append_value((summary.duration_ns / 1000).min(i64::MAX as u64) as i64);
        let identity = session.map(|s| &s.identity);
        self.issuer.append_option(identity.map(|i| &i.issuer));
        self.subject.append_option(identity.map(|i| &i.subject));
        self.display_name
            .append_option(identity.map(|i| &i.display_name));
        self.auth_method
            .append_option(identity.map(|i| i.auth_method.as_str()));
        self.role
            .append_option(identity.and_then(|i| i.role.as_ref()));
        self.target.append_option(session.map(|s| &s.target));
        self.database.append_option(summary.database.as_ref());
        self.command.append_value(&summary.command);
        self.sql.append_option(summary.sql.as_ref());
        self.statement_id
            .append_option(summary.statement_id.map(i64::from));
        append_list(&mut self.params, &summary.params);
        self.digest.append_option(summary.digest.as_ref());
        self.normalized_sql
            .append_option(summary.normalized_sql.as_ref());
        self.statement_class
            .append_option(summary.statement_class.as_ref());
        append_list(&mut self.tables_read, &summary.tables_read);
        append_list(&mut self.tables_written, &summary.tables_written);
        self.parse_error.append_option(summary.parse_error.as_ref());
        self.verdict.append_value(verdict_of(summary));
        self.verdict_reason
            .append_option(summary.verdict_reason.as_ref());
        self.policy.append_option(summary.policy.as_ref());
        self.policy_rule.append_option(summary.policy_rule.as_ref());
        self.approval_id.append_option(summary.approval_id.as_ref());
        append_list(&mut self.approvers, &summary.approvers);
        self.approval_wait_ms.append_option(
            summary
                .approval_wait_ms
                .map(|ms| ms.min(i64::MAX as u64) as i64),
        );
        self.rows_returned
            .append_value(summary.rows_returned.min(i64::MAX as u64) as i64);
        self.rows_affected
            .append_value(summary.rows_affected.min(i64::MAX as u64) as i64);
        self.last_insert_id
            .append_value(summary.last_insert_id.min(i64::MAX as u64) as i64);
        self.warnings.append_value(i32::from(summary.warnings));
        self.error_code
            .append_option(summary.error_code.map(i32::from));
        self.error_message
            .append_option(summary.error_message.as_ref());
        append_list(&mut self.result_columns, &summary.result_columns);
        self.result_hash.append_option(summary.result_hash.as_ref());
        append_list(&mut self.masked_columns, &summary.masked_columns);
        self.payload_capped.append_value(capture.capped);
        self.payload_bytes_dropped
            .append_value(capture.bytes_dropped.min(i64::MAX as u64) as i64);
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let n = std::mem::take(&mut self.rows);
        let columns: Vec<ArrayRef> = vec![
            constant_string(&self.gateway_id, n),
            Arc::new(self.session_id.finish()),
            Arc::new(self.command_index.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.duration_us.finish()),
            Arc::new(self.issuer.finish()),
            Arc::new(self.subject.finish()),
            Arc::new(self.display_name.finish()),
            Arc::new(self.auth_method.finish()),
            Arc::new(self.role.finish()),
            Arc::new(self.target.finish()),
            Arc::new(self.database.finish()),
            Arc::new(self.command.finish()),
            Arc::new(self.sql.finish()),
            Arc::new(self.statement_id.finish()),
            Arc::new(self.params.finish()),
            Arc::new(self.digest.finish()),
            Arc::new(self.normalized_sql.finish()),
            Arc::new(self.statement_class.finish()),
            Arc::new(self.tables_read.finish()),
            Arc::new(self.tables_written.finish()),
            Arc::new(self.parse_error.finish()),
            Arc::new(self.verdict.finish()),
            Arc::new(self.verdict_reason.finish()),
            Arc::new(self.policy.finish()),
            Arc::new(self.policy_rule.finish()),
            Arc::new(self.approval_id.finish()),
            Arc::new(self.approvers.finish()),
            Arc::new(self.approval_wait_ms.finish()),
            Arc::new(self.rows_returned.finish()),
            Arc::new(self.rows_affected.finish()),
            Arc::new(self.last_insert_id.finish()),
            Arc::new(self.warnings.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.error_message.finish()),
            Arc::new(self.result_columns.finish()),
            Arc::new(self.result_hash.finish()),
            Arc::new(self.masked_columns.finish()),
            Arc::new(self.payload_capped.finish()),
            Arc::new(self.payload_bytes_dropped.finish()),
        ];
        RecordBatch::try_new(statements_schema(), columns)
    }
}

/// Builds `sessions` batches.
pub struct SessionRows {
    gateway_id: String,
    rows: usize,
    session_id: StringBuilder,
    event: StringBuilder,
    time: TimestampMicrosecondBuilder,
    started_at: TimestampMicrosecondBuilder,
    issuer: StringBuilder,
    subject: StringBuilder,
    display_name: StringBuilder,
    auth_method: StringBuilder,
    role: StringBuilder,
    claims: StringBuilder,
    credential_expires_at: TimestampMicrosecondBuilder,
    target: StringBuilder,
    client_user: StringBuilder,
    upstream_user: StringBuilder,
    database: StringBuilder,
    connection_id: Int64Builder,
    upstream_connection_id: Int64Builder,
    client_addr: StringBuilder,
    client_program: StringBuilder,
    client_name: StringBuilder,
    client_version: StringBuilder,
    connect_attrs: StringBuilder,
    client_tls: BooleanBuilder,
    upstream_tls: BooleanBuilder,
    ended_at: TimestampMicrosecondBuilder,
    end_reason: StringBuilder,
    commands: Int64Builder,
    frames: Int64Builder,
    bytes_from_client: Int64Builder,
    bytes_to_client: Int64Builder,
    access_request_id: StringBuilder,
}

impl SessionRows {
    pub fn new(gateway_id: &str) -> Self {
        SessionRows {
            gateway_id: gateway_id.to_string(),
            rows: 0,
            session_id: StringBuilder::new(),
            event: StringBuilder::new(),
            time: time_builder(64),
            started_at: time_builder(64),
            issuer: StringBuilder::new(),
            subject: StringBuilder::new(),
            display_name: StringBuilder::new(),
            auth_method: StringBuilder::new(),
            role: StringBuilder::new(),
            claims: StringBuilder::new(),
            credential_expires_at: time_builder(64),
            target: StringBuilder::new(),
            client_user: StringBuilder::new(),
            upstream_user: StringBuilder::new(),
            database: StringBuilder::new(),
            connection_id: Int64Builder::new(),
            upstream_connection_id: Int64Builder::new(),
            client_addr: StringBuilder::new(),
            client_program: StringBuilder::new(),
            client_name: StringBuilder::new(),
            client_version: StringBuilder::new(),
            connect_attrs: StringBuilder::new(),
            client_tls: BooleanBuilder::new(),
            upstream_tls: BooleanBuilder::new(),
            ended_at: time_builder(64),
            end_reason: StringBuilder::new(),
            commands: Int64Builder::new(),
            frames: Int64Builder::new(),
            bytes_from_client: Int64Builder::new(),
            bytes_to_client: Int64Builder::new(),
            access_request_id: StringBuilder::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The columns both rows of a session carry: identity, target, client.
    fn push_context(&mut self, start: Option<&SessionStart>) {
        let id = start.map(|s| &s.identity);
        self.started_at
            .append_option(start.map(|s| us(s.started_at_ns)));
        self.issuer.append_option(id.map(|i| &i.issuer));
        self.subject.append_option(id.map(|i| &i.subject));
        self.display_name.append_option(id.map(|i| &i.display_name));
        self.auth_method
            .append_option(id.map(|i| i.auth_method.as_str()));
        self.role.append_option(id.and_then(|i| i.role.as_ref()));
        self.claims.append_option(id.map(|i| i.claims.to_string()));
        self.credential_expires_at.append_option(
            id.and_then(|i| i.expires_at)
                .map(|secs| secs.saturating_mul(1_000_000)),
        );
        self.target.append_option(start.map(|s| &s.target));
        self.client_user
            .append_option(start.map(|s| &s.client_user));
        self.upstream_user
            .append_option(start.map(|s| &s.upstream_user));
        self.database
            .append_option(start.and_then(|s| s.database.as_ref()));
        self.connection_id
            .append_option(start.map(|s| i64::from(s.connection_id)));
        self.upstream_connection_id
            .append_option(start.map(|s| i64::from(s.upstream_connection_id)));
        self.client_addr
            .append_option(start.map(|s| &s.client_addr));
        let attr = |k: &str| start.and_then(|s| s.connect_attrs.get(k));
        // mysql-connector, PyMySQL and mysql2 name themselves only in `_client_name`.
        self.client_program
            .append_option(attr("program_name").or_else(|| attr("_client_name")));
        self.client_name.append_option(attr("_client_name"));
        self.client_version.append_option(attr("_client_version"));
        self.connect_attrs.append_option(
            start.map(|s| serde_json::to_string(&s.connect_attrs).unwrap_or_default()),
        );
        self.client_tls.append_option(start.map(|s| s.client_tls));
        self.upstream_tls
            .append_option(start.map(|s| s.upstream_tls));
        self.access_request_id
            .append_option(start.and_then(|s| s.access_request_id.as_ref()));
    }

    /// The row written when a session starts.
    pub fn push_start(&mut self, start: &SessionStart) {
        self.rows += 1;
        self.session_id.append_value(&start.session_id);
        self.event.append_value(sessions::EVENT_START);
        self.time.append_value(us(start.started_at_ns));
        self.push_context(Some(start));
        self.ended_at.append_null();
        self.end_reason.append_null();
        self.commands.append_null();
        self.frames.append_null();
        self.bytes_from_client.append_null();
        self.bytes_to_client.append_null();
    }

    /// The row written when a session ends; `start` repeats the session's context
    /// (None when unknown: those columns are then null).
    pub fn push_end(&mut self, end: &SessionEnd, start: Option<&SessionStart>) {
        self.rows += 1;
        self.session_id.append_value(&end.session_id);
        self.event.append_value(sessions::EVENT_END);
        self.time.append_value(us(end.ended_at_ns));
        self.push_context(start);
        self.ended_at.append_value(us(end.ended_at_ns));
        self.end_reason.append_value(&end.reason);
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        self.commands.append_value(clamp(end.commands));
        self.frames.append_value(clamp(end.frames));
        self.bytes_from_client
            .append_value(clamp(end.bytes_from_client));
        self.bytes_to_client
            .append_value(clamp(end.bytes_to_client));
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let n = std::mem::take(&mut self.rows);
        let columns: Vec<ArrayRef> = vec![
            constant_string(&self.gateway_id, n),
            Arc::new(self.session_id.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.issuer.finish()),
            Arc::new(self.subject.finish()),
            Arc::new(self.display_name.finish()),
            Arc::new(self.auth_method.finish()),
            Arc::new(self.role.finish()),
            Arc::new(self.claims.finish()),
            Arc::new(self.credential_expires_at.finish()),
            Arc::new(self.target.finish()),
            Arc::new(self.client_user.finish()),
            Arc::new(self.upstream_user.finish()),
            Arc::new(self.database.finish()),
            Arc::new(self.connection_id.finish()),
            Arc::new(self.upstream_connection_id.finish()),
            Arc::new(self.client_addr.finish()),
            Arc::new(self.client_program.finish()),
            Arc::new(self.client_name.finish()),
            Arc::new(self.client_version.finish()),
            Arc::new(self.connect_attrs.finish()),
            Arc::new(self.client_tls.finish()),
            Arc::new(self.upstream_tls.finish()),
            Arc::new(self.ended_at.finish()),
            Arc::new(self.end_reason.finish()),
            Arc::new(self.commands.finish()),
            Arc::new(self.frames.finish()),
            Arc::new(self.bytes_from_client.finish()),
            Arc::new(self.bytes_to_client.finish()),
            Arc::new(self.access_request_id.finish()),
        ];
        RecordBatch::try_new(sessions_schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::tables::Table;
    use bytes::Bytes;
    use std::collections::BTreeMap;

    fn start() -> SessionStart {
        SessionStart {
            session_id: "s1".into(),
            connection_id: 5,
            upstream_connection_id: 77,
            started_at_ns: 1_700_000_000_123_456_789,
            gateway_id: "gw".into(),
            identity: Identity::config_user("app"),
            client_user: "app".into(),
            target: "orders".into(),
            upstream_user: "root".into(),
            database: Some("shop".into()),
            client_addr: "127.0.0.1:5555".into(),
            client_tls: true,
            upstream_tls: false,
            connect_attrs: BTreeMap::from([("program_name".into(), "mysql".into())]),
            access_request_id: Some("apr_test".into()),
        }
    }

    #[test]
    fn builders_produce_the_table_schemas() {
        let s = start();
        let mut sessions = SessionRows::new("gw");
        sessions.push_start(&s);
        sessions.push_end(
            &SessionEnd {
                session_id: "s1".into(),
                ended_at_ns: s.started_at_ns + 5,
                reason: "client_quit".into(),
                commands: 1,
                frames: 2,
                bytes_from_client: 10,
                bytes_to_client: 20,
            },
            Some(&s),
        );
        let batch = sessions.finish().unwrap();
        assert_eq!(batch.schema(), Table::Sessions.schema());
        assert_eq!(batch.num_rows(), 2);
        // The access request is on the start row and repeated on the end row.
        let access = batch
            .column_by_name(crate::tables::sessions::ACCESS_REQUEST_ID)
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(access.value(0), "apr_test");
        assert_eq!(access.value(1), "apr_test");

        let mut statements = StatementRows::new("gw");
        let summary = CommandSummary {
            session_id: "s1".into(),
            command: "COM_QUERY".into(),
            sql: Some("SELECT 1".into()),
            tables_read: vec!["shop.t".into()],
            ..Default::default()
        };
        statements.push(&summary, Some(&s), Capture::default());
        statements.push(&summary, None, Capture::default());
        let batch = statements.finish().unwrap();
        assert_eq!(batch.schema(), Table::Statements.schema());
        assert_eq!(batch.num_rows(), 2);

        let frame = Frame {
            session_id: Arc::from("s1"),
            seq: 0,
            command_index: 0,
            time_ns: s.started_at_ns,
            direction: Direction::ClientToServer,
            payload: Bytes::from_static(b"\x03SELECT 1"),
        };
        let mut frames = FrameRows::new("gw");
        frames.push(FrameRow::from_frame(&frame));
        let batch = frames.finish().unwrap();
        assert_eq!(batch.schema(), Table::Frames.schema());
        assert_eq!(batch.num_rows(), 1);
        // Builders are reusable after finish().
        assert_eq!(frames.finish().unwrap().num_rows(), 0);
    }
}
