//! COM_STMT_EXECUTE, judged against what PREPARE decided, and the commands on
//! a prepared statement that change only its state: SEND_LONG_DATA, CLOSE,
//! RESET, FETCH.

use chaperone_mysql::protocol::command::{
    COM_STMT_CLOSE, COM_STMT_FETCH, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};
use chaperone_mysql::protocol::execute;
use chaperone_mysql::protocol::lenenc::Reader;
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::Packet;
use chaperone_schemas::CommandSummary;
use tracing::warn;

use super::Judged;
use crate::session::{client_gone, Session, SessionError};

impl Session {
    pub(in crate::session) async fn judge_execute(
        &mut self,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        let id = execute::statement_id(&packet.payload).ok();
        let Some(stmt) = id.and_then(|id| self.statements.get_mut(&id)) else {
            return Judged::Refuse(unknown_statement(id));
        };
        summary.statement_id = id;
        summary.sql = Some(stmt.wire.sql.clone());
        if let Some(id) = id {
            let lineage = self.masking.lineage_of(id);
            self.response_masker = self.masking.masker(
                true,
                &lineage,
                Some(&stmt.wire.sql),
                stmt.database.as_deref(),
            );
        }
        if let Some(a) = &stmt.analysis {
            a.record_into(summary, stmt.database.as_deref());
        }
        match execute::parse(&packet.payload, &mut stmt.wire) {
            Ok(exec) => summary.params = exec.params,
            Err(e) => {
                self.shared.metrics.error("protocol");
                warn!(error = %e, "malformed COM_STMT_EXECUTE refused");
                return Judged::Refuse(ErrInfo::new(
                    codes::MALFORMED_PACKET,
                    "08S01",
                    format!("Chaperone: {e}"),
                ));
            }
        }
        if self.guard.active() {
            // Disjoint fields: the statement is read while the guard and the
            // upstream connection are used, nothing is copied.
            let stmt = id.and_then(|id| self.statements.get(&id));
            let params = std::mem::take(&mut summary.params);
            let checked = {
                let mut gone = std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
                self.guard
                    .check_execute(
                        stmt.and_then(|s| s.guard.as_ref()),
                        stmt.map_or("", |s| s.wire.sql.as_str()),
                        &params,
                        stmt.and_then(|s| s.analysis.as_deref()),
                        stmt.and_then(|s| s.database.as_deref()),
                        &mut self.upstream,
                        summary,
                        gone.as_mut(),
                    )
                    .await
            };
            summary.params = params;
            if let Err(e) = checked {
                return Judged::Guard(e);
            }
        }
        Judged::forward(packet)
    }

    /// SEND_LONG_DATA, CLOSE, RESET and FETCH of a prepared statement.
    pub(in crate::session) fn judge_statement_command(
        &mut self,
        code: u8,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Result<Judged, SessionError> {
        let id = execute::statement_id(&packet.payload).ok();
        summary.statement_id = id;
        let known = id.and_then(|id| self.statements.get_mut(&id));
        match (code, known) {
            (COM_STMT_SEND_LONG_DATA, Some(stmt)) => {
                let param = Reader::new(&packet.payload[5..], "COM_STMT_SEND_LONG_DATA")
                    .u16()
                    .map_err(SessionError::ClientMalformed)? as usize;
                if let Some(flag) = stmt.wire.long_data.get_mut(param) {
                    *flag = true;
                }
            }
            (COM_STMT_CLOSE, Some(_)) => {
                let id = id.expect("known");
                self.statements.remove(&id);
                self.masking.closed(id);
            }
            (COM_STMT_RESET, Some(stmt)) => {
                stmt.wire.long_data.iter_mut().for_each(|f| *f = false);
            }
            (COM_STMT_FETCH, Some(_)) => {
                self.response_masker = id.and_then(|id| self.masking.cursor_masker(id));
            }
            // No response to these, whatever happens: drop silently, as the
            // server would.
            (COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE, None) => return Ok(Judged::Silent),
            (_, None) => return Ok(Judged::Refuse(unknown_statement(id))),
            _ => unreachable!("codes matched by the caller"),
        }
        Ok(Judged::forward(packet))
    }
}

pub(in crate::session) fn unknown_statement(id: Option<u32>) -> ErrInfo {
    ErrInfo::new(
        codes::UNKNOWN_STMT_HANDLER,
        "HY000",
        format!(
            "Unknown prepared statement handler ({}) given to the gateway",
            id.map_or("?".to_string(), |i| i.to_string())
        ),
    )
}
