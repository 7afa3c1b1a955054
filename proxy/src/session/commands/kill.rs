//! KILL: the connection ids a client sees are the gateway's; the server's are
//! other numbers. A KILL (COM_PROCESS_KILL, or `KILL ...` alone in a query) is
//! rewritten to the server's id of a session of the same identity and target.

use bytes::Bytes;
use chaperone_mysql::protocol::command::{COM_PROCESS_KILL, COM_QUERY};
use chaperone_mysql::protocol::lenenc::Reader;
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::Packet;
use chaperone_schemas::CommandSummary;

use super::{Forward, Judged, Then};
use crate::registry;
use crate::session::Session;

impl Session {
    pub(in crate::session) fn judge_process_kill(
        &mut self,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        let id = Reader::new(&packet.payload[1..], "COM_PROCESS_KILL").u32();
        if let Ok(target) = &id {
            let target = Some((u64::from(*target), self.connection_id));
            if let Err(e) = self
                .guard
                .check_command("COM_PROCESS_KILL", target, summary)
            {
                return Judged::Guard(e);
            }
        }
        let kill = id.ok().map(|id| registry::Kill {
            query_only: false,
            id: id as u64,
        });
        if let Err(err) = self.rewrite_kill(kill) {
            return Judged::Refuse(err);
        }
        let upstream_id = self
            .shared
            .registry
            .get(kill.expect("rewrite succeeded").id as u32)
            .expect("rewrite succeeded")
            .upstream_connection_id;
        let mut p = vec![COM_PROCESS_KILL];
        p.extend_from_slice(&upstream_id.to_le_bytes());
        Judged::Forward(Forward {
            bytes: Bytes::from(p),
            then: Then::Nothing,
        })
    }

    /// Maps a client-visible connection id in KILL to the upstream one.
    pub(in crate::session) fn rewrite_kill(
        &self,
        kill: Option<registry::Kill>,
    ) -> Result<Bytes, ErrInfo> {
        let Some(kill) = kill else {
            return Err(ErrInfo::new(
                codes::NOT_SUPPORTED,
                "42000",
                "Chaperone: only KILL [CONNECTION | QUERY] <connection id> is supported through the gateway",
            ));
        };
        let live = u32::try_from(kill.id)
            .ok()
            .and_then(|id| self.shared.registry.get(id))
            .ok_or_else(|| {
                ErrInfo::new(
                    codes::NO_SUCH_THREAD,
                    "HY000",
                    format!("Unknown thread id: {}", kill.id),
                )
            })?;
        let me = &self.grant.identity;
        if live.owner != (me.issuer.clone(), me.subject.clone()) || live.target != self.grant.target
        {
            return Err(ErrInfo::new(
                codes::KILL_DENIED,
                "HY000",
                format!("You are not owner of thread {}", kill.id),
            ));
        }
        let sql = format!(
            "KILL {}{}",
            if kill.query_only {
                "QUERY "
            } else {
                "CONNECTION "
            },
            live.upstream_connection_id
        );
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        Ok(Bytes::from(p))
    }
}

/// A KILL the gateway cannot rewrite to the server's connection id (see
/// [`registry::KillInText::Embedded`]).
pub(in crate::session) fn kill_not_alone() -> ErrInfo {
    ErrInfo::new(
        codes::NOT_SUPPORTED,
        "42000",
        "Chaperone: KILL must be sent as a query of its own (not with other statements, \
         not prepared, not as dynamic SQL): the gateway maps the connection id it names",
    )
}
