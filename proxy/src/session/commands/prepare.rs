//! COM_STMT_PREPARE: the statement is analysed and judged once here; its
//! analysis and verdict are kept with it (`Then::Prepared`) for its executions.

use chaperone_mysql::protocol::Packet;
use chaperone_schemas::CommandSummary;

use super::kill::kill_not_alone;
use super::{masking_denied, Forward, Judged, Then};
use crate::registry::{self, KillInText};
use crate::session::Session;

impl Session {
    pub(in crate::session) async fn judge_prepare(
        &mut self,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        let sql = &packet.payload[1..];
        let (analysis, guard) = match self.analyse_and_check(sql, true, summary).await {
            Ok(checked) => checked,
            Err(e) => return Judged::Guard(e),
        };
        if registry::find_kill(sql, &analysis) != KillInText::Absent {
            return Judged::Refuse(kill_not_alone());
        }
        let sql_text = summary.sql.as_deref().unwrap_or_default();
        match self
            .masking
            .check(sql_text, &analysis, self.database.as_deref())
        {
            Ok(lineage) => self.masking.prepared(lineage),
            Err(denial) => return Judged::Refuse(masking_denied(denial)),
        }
        Judged::Forward(Forward {
            bytes: packet.payload.clone(),
            then: Then::Prepared { analysis, guard },
        })
    }
}
