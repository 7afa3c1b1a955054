//! One command, the step of the command loop: recorded as it arrives (before
//! anything runs: fail closed), judged by its handler (`commands/`), forwarded,
//! its response relayed (`relay`), its effects kept, and its summary recorded
//! (`reply`).

use std::time::Instant;

use bytes::Bytes;
use chaperone_mysql::protocol::command::{self, *};
use chaperone_mysql::protocol::exchange::ResponseFacts;
use chaperone_mysql::protocol::execute::PreparedStatement;
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::Packet;
use chaperone_schemas::event::now_ns;
use chaperone_schemas::{CommandSummary, Direction, TapEvent};
use futures::SinkExt;
use tracing::warn;

use super::commands::{replication_refused, unknown_command, Judged, Then};
use super::{End, Prepared, Session, SessionError};
use crate::metrics::{CommandLabels, DirectionLabels};

impl Session {
    /// Handles one command. `Ok(Some(end))` ends the session.
    pub(super) async fn command(&mut self, packet: Packet) -> Result<Option<End>, SessionError> {
        let started = Instant::now();
        let code = packet.header().unwrap_or(0xFF);
        self.count_request(code, &packet);
        let mut summary = CommandSummary {
            session_id: self.session_id.to_string(),
            command_index: self.command_index,
            started_at_ns: now_ns(),
            command: command::name(code).to_string(),
            database: self.database.clone(),
            ..Default::default()
        };
        let frame = self.frame(Direction::ClientToServer, packet.payload.clone());
        if let Err(e) = self.shared.tap.record_request(TapEvent::Frame(frame)) {
            // Fail closed: nothing runs unrecorded.
            self.shared.metrics.error("tap");
            warn!(error = %e, "recording unavailable; command refused");
            let err = ErrInfo::new(
                codes::REFUSED_BY_POLICY,
                "HY000",
                format!("Chaperone: the command was not executed because it cannot be recorded ({e}); retry later"),
            );
            return self.refuse(summary, err).await;
        }
        self.response_masker = None;
        let judged = match code {
            COM_QUIT => {
                self.finish(summary, started, None);
                return Ok(Some(End::ClientQuit));
            }
            _ if command::is_replication(code) => Judged::Refuse(replication_refused(code)),
            COM_CHANGE_USER => return self.change_user(packet, summary, started).await,
            COM_QUERY => self.judge_query(&packet, &mut summary).await,
            COM_PROCESS_KILL => self.judge_process_kill(&packet, &mut summary),
            COM_STMT_PREPARE => self.judge_prepare(&packet, &mut summary).await,
            COM_STMT_EXECUTE => self.judge_execute(&packet, &mut summary).await,
            COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_FETCH => {
                self.judge_statement_command(code, &packet, &mut summary)?
            }
            COM_RESET_CONNECTION => {
                self.statements.clear();
                self.masking.reset();
                Judged::forward(&packet)
            }
            COM_INIT_DB => self.judge_init_db(&packet, &mut summary),
            COM_FIELD_LIST => self.judge_field_list(&packet, &mut summary),
            COM_REFRESH | COM_DEBUG => self.judge_admin(code, &packet, &mut summary),
            COM_SET_OPTION => {
                self.guard.note_set_option(&packet.payload, &mut summary);
                Judged::forward(&packet)
            }
            COM_PING | COM_STATISTICS => Judged::forward(&packet),
            _ => Judged::Refuse(unknown_command(code)),
        };
        let forward = match judged {
            Judged::Forward(forward) => forward,
            Judged::Refuse(err) => return self.refuse(summary, err).await,
            Judged::Guard(e) => return self.guard_refused(summary, e).await,
            Judged::Silent => {
                self.finish(summary, started, None);
                return Ok(None);
            }
        };
        let facts = self.forward(code, forward.bytes).await?;
        if let Some(m) = self.response_masker.take() {
            summary.masked_columns = m.masked.iter().cloned().collect();
            if let (COM_STMT_EXECUTE, Some(id)) = (code, summary.statement_id) {
                self.masking.executed(id, m.columns());
            }
        }
        if facts.error.is_none() {
            self.keep(forward.then, &facts, &mut summary);
        }
        self.finish(summary, started, Some(facts));
        Ok(None)
    }

    /// Forwards a request and relays the response.
    async fn forward(&mut self, code: u8, request: Bytes) -> Result<ResponseFacts, SessionError> {
        let request = Packet::new(0, request);
        let upstream_seq = request.next_seq();
        self.upstream
            .conn
            .send(request)
            .await
            .map_err(|e| SessionError::Upstream(e.to_string()))?;
        self.relay_response(code, upstream_seq).await
    }

    /// What a command that succeeded changes in the session.
    fn keep(&mut self, then: Then, facts: &ResponseFacts, summary: &mut CommandSummary) {
        match then {
            Then::Nothing => {}
            Then::Database(db) => self.database = Some(db),
            Then::Prepared { analysis, guard } => {
                if let Some((id, params, columns)) = facts.prepared {
                    self.masking.prepared_id(id);
                    self.statements.insert(
                        id,
                        Prepared {
                            wire: PreparedStatement {
                                sql: summary.sql.clone().unwrap_or_default(),
                                num_params: params,
                                num_columns: columns,
                                bound_types: None,
                                long_data: vec![false; params as usize],
                            },
                            analysis: Some(analysis),
                            database: self.database.clone(),
                            guard,
                        },
                    );
                    summary.statement_id = Some(id);
                }
            }
        }
    }

    /// Counts the request in the metrics and the session's byte totals.
    fn count_request(&mut self, code: u8, packet: &Packet) {
        let metrics = &self.shared.metrics;
        metrics
            .commands_total
            .get_or_create(&CommandLabels {
                command: command::name(code),
            })
            .inc();
        metrics
            .bytes_total
            .get_or_create(&DirectionLabels {
                direction: "client_to_server",
            })
            .inc_by(packet.payload.len() as u64);
        self.bytes_from_client += packet.payload.len() as u64;
        self.reply_seq = packet.next_seq();
    }
}
