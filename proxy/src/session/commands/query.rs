//! COM_QUERY: one SQL text, analysed once (cached by text), judged by the
//! guardrails, checked by masking, and a KILL in it rewritten to the server's
//! connection id.

use std::sync::Arc;

use chaperone_mysql::protocol::Packet;
use chaperone_schemas::CommandSummary;
use chaperone_sql::{Analysis, AnalysisCache};

use super::kill::kill_not_alone;
use super::{masking_denied, Forward, Judged, Then};
use crate::guardrails::{GuardError, PreparedGuard, SqlCommand};
use crate::registry::{self, KillInText};
use crate::session::{client_gone, Session};

impl Session {
    pub(in crate::session) async fn judge_query(
        &mut self,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        let sql = &packet.payload[1..];
        let analysis = match self.analyse_and_check(sql, false, summary).await {
            Ok((analysis, _)) => analysis,
            Err(e) => return Judged::Guard(e),
        };
        let sql_text = summary.sql.as_deref().unwrap_or_default();
        match self
            .masking
            .check(sql_text, &analysis, self.database.as_deref())
        {
            Ok(lineage) => {
                self.response_masker =
                    self.masking
                        .masker(false, &lineage, Some(sql_text), self.database.as_deref())
            }
            Err(denial) => return Judged::Refuse(masking_denied(denial)),
        }
        let bytes = match registry::find_kill(sql, &analysis) {
            KillInText::Absent => packet.payload.clone(),
            KillInText::Alone(kill) => match self.rewrite_kill(kill) {
                Ok(rewritten) => rewritten,
                Err(err) => return Judged::Refuse(err),
            },
            KillInText::Embedded => return Judged::Refuse(kill_not_alone()),
        };
        // The lexical scan reads USE even where the parser cannot.
        let then = analysis
            .statements
            .iter()
            .rev()
            .find_map(|s| s.use_database.clone())
            .map_or(Then::Nothing, Then::Database);
        Judged::Forward(Forward { bytes, then })
    }

    /// A statement's text (COM_QUERY, COM_STMT_PREPARE): analysed once (the
    /// cache keeps it by text), its facts recorded into the summary, and judged
    /// by the guardrails when the session has a policy (`prepare`: at PREPARE;
    /// the verdict is kept with the statement).
    pub(in crate::session) async fn analyse_and_check(
        &mut self,
        sql: &[u8],
        prepare: bool,
        summary: &mut CommandSummary,
    ) -> Result<(Arc<Analysis>, Option<PreparedGuard>), GuardError> {
        let text = String::from_utf8_lossy(sql).into_owned();
        let analysis = AnalysisCache::shared().analyze(&text);
        summary.sql = Some(text);
        analysis.record_into(summary, self.database.as_deref());
        if !self.guard.active() {
            return Ok((analysis, None));
        }
        let guard = self
            .check_statement(sql, &analysis, prepare, summary)
            .await?;
        Ok((analysis, Some(guard)))
    }

    /// Judges a statement against the session's policy (`prepare`: at
    /// COM_STMT_PREPARE), noticing a client that leaves while the statement is
    /// held for approval. The summary's SQL text is lent to the check.
    async fn check_statement(
        &mut self,
        bytes: &[u8],
        analysis: &Analysis,
        prepare: bool,
        summary: &mut CommandSummary,
    ) -> Result<PreparedGuard, GuardError> {
        let sql_text = summary.sql.take().unwrap_or_default();
        let cmd = SqlCommand {
            bytes,
            sql: &sql_text,
            analysis,
            database: self.database.as_deref(),
            connection_id: self.connection_id,
            prepare,
        };
        let checked = {
            let mut gone = std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
            self.guard
                .check_sql(cmd, &mut self.upstream, summary, gone.as_mut())
                .await
        };
        summary.sql = Some(sql_text);
        checked
    }
}
