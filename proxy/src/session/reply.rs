//! How a command ends: refused with an error (nothing forwarded), or finished
//! with the response's facts; either way its summary is recorded.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chaperone_mysql::protocol::exchange::ResponseFacts;
use chaperone_mysql::protocol::response::ErrInfo;
use chaperone_mysql::protocol::Packet;
use chaperone_schemas::event::now_ns;
use chaperone_schemas::{CommandSummary, Direction, TapEvent};
use futures::SinkExt;

use super::{End, Session, SessionError};
use crate::guardrails::GuardError;
use crate::metrics::DirectionLabels;

impl Session {
    /// A command the guardrails did not let through: refused with their
    /// error, or the session ends when the upstream broke during an EXPLAIN.
    pub(super) async fn guard_refused(
        &mut self,
        summary: CommandSummary,
        e: GuardError,
    ) -> Result<Option<End>, SessionError> {
        match e {
            GuardError::Refuse(err) => self.refuse(summary, err).await,
            GuardError::Upstream(m) => Err(SessionError::Upstream(m)),
            GuardError::ClientGone => {
                // Recorded with its verdict and how long it was held; nothing
                // to answer, nobody listens.
                let held = now_ns().saturating_sub(summary.started_at_ns).max(0) as u64;
                let started = Instant::now()
                    .checked_sub(Duration::from_nanos(held))
                    .unwrap_or_else(Instant::now);
                self.finish(summary, started, None);
                Ok(Some(End::ClientDisconnected))
            }
        }
    }

    /// Answers a command with an error without forwarding it.
    pub(super) async fn refuse(
        &mut self,
        mut summary: CommandSummary,
        err: ErrInfo,
    ) -> Result<Option<End>, SessionError> {
        let payload = Bytes::from(err.encode());
        let frame = self.frame(Direction::ServerToClient, payload.clone());
        self.shared.tap.record(TapEvent::Frame(frame));
        self.bytes_to_client += payload.len() as u64;
        self.client
            .send(Packet::new(self.reply_seq, payload))
            .await
            .map_err(SessionError::Client)?;
        self.shared.metrics.error("refused");
        summary.refused = true;
        summary.error_code = Some(err.code);
        summary.error_message = Some(err.message);
        self.command_index += 1;
        self.shared.tap.record(TapEvent::Command(Box::new(summary)));
        Ok(None)
    }

    pub(super) fn finish(
        &mut self,
        mut summary: CommandSummary,
        started: Instant,
        facts: Option<ResponseFacts>,
    ) {
        let elapsed = started.elapsed();
        self.shared
            .metrics
            .bytes_total
            .get_or_create(&DirectionLabels {
                direction: "server_to_client",
            })
            .inc_by(self.bytes_to_client - self.bytes_to_client_reported);
        self.bytes_to_client_reported = self.bytes_to_client;
        self.shared
            .metrics
            .command_duration_seconds
            .observe(elapsed.as_secs_f64());
        if let Some(f) = facts {
            summary.rows_returned = f.rows;
            summary.rows_affected = f.affected_rows;
            summary.last_insert_id = f.last_insert_id;
            summary.warnings = f.warnings;
            summary.result_columns = f.columns;
            summary.result_hash = f.result_hash;
            self.guard.observe_status(f.status);
            if let Some(e) = f.error {
                summary.error_code = Some(e.code);
                summary.error_message = Some(e.message);
            }
        }
        summary.duration_ns = elapsed.as_nanos() as u64;
        self.command_index += 1;
        self.shared.tap.record(TapEvent::Command(Box::new(summary)));
    }
}
