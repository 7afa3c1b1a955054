//! One handler per command family, as mini-redis has `cmd/`: each judges its
//! command (guardrails, masking, rewriting) before anything is forwarded, and
//! says what to forward and what to keep once the server has answered.
//!
//! - [`query`]: COM_QUERY; [`prepare`]: COM_STMT_PREPARE;
//! - [`execute`]: COM_STMT_EXECUTE and the commands on a prepared statement;
//! - [`kill`]: COM_PROCESS_KILL and the KILL rewrite;
//! - here: the small ones (COM_INIT_DB, COM_FIELD_LIST, COM_REFRESH, ...).

pub(super) mod execute;
pub(super) mod kill;
pub(super) mod prepare;
pub(super) mod query;

use std::sync::Arc;

use bytes::Bytes;
use chaperone_mysql::protocol::command;
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::Packet;
use chaperone_schemas::CommandSummary;

use super::Session;
use crate::guardrails::{GuardError, PreparedGuard};

/// What a handler decided before anything is forwarded.
pub(super) enum Judged {
    /// Forward these bytes and relay the response.
    Forward(Forward),
    /// Answer with this error; nothing is forwarded.
    Refuse(ErrInfo),
    /// The guardrails did not let it through.
    Guard(GuardError),
    /// Nothing to forward and nothing to answer (the server would not answer
    /// either: COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA of an unknown statement).
    Silent,
}

/// A command on its way to the server.
pub(super) struct Forward {
    /// The request as forwarded: the client's, or the gateway's rewrite of it.
    pub bytes: Bytes,
    /// What the session keeps once the server has answered without an error.
    pub then: Then,
}

/// Session state a command changes when it succeeds.
pub(super) enum Then {
    Nothing,
    /// COM_STMT_PREPARE: the statement's analysis and verdict, bound to the id
    /// the server gives it.
    Prepared {
        analysis: Arc<chaperone_sql::Analysis>,
        guard: Option<PreparedGuard>,
    },
    /// COM_QUERY with a USE (or COM_INIT_DB): the session's database from now on.
    Database(String),
}

impl Judged {
    /// Forward the client's request as it is.
    pub fn forward(packet: &Packet) -> Judged {
        Judged::Forward(Forward {
            bytes: packet.payload.clone(),
            then: Then::Nothing,
        })
    }
}

impl Session {
    /// COM_INIT_DB: the new database must be in the policy's scope.
    pub(super) fn judge_init_db(
        &mut self,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        let db = String::from_utf8_lossy(&packet.payload[1..]).into_owned();
        if let Err(e) = self.guard.check_database(&db, summary) {
            return Judged::Guard(e);
        }
        Judged::Forward(Forward {
            bytes: packet.payload.clone(),
            then: Then::Database(db),
        })
    }

    /// COM_FIELD_LIST names a table of the current database.
    pub(super) fn judge_field_list(
        &mut self,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        let rest = &packet.payload[1..];
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let table = String::from_utf8_lossy(&rest[..end]).into_owned();
        let database = self.database.clone();
        match self
            .guard
            .check_field_list(database.as_deref(), &table, summary)
        {
            Ok(()) => Judged::forward(packet),
            Err(e) => Judged::Guard(e),
        }
    }

    /// COM_REFRESH, COM_DEBUG: administration, judged by name.
    pub(super) fn judge_admin(
        &mut self,
        code: u8,
        packet: &Packet,
        summary: &mut CommandSummary,
    ) -> Judged {
        match self.guard.check_command(command::name(code), None, summary) {
            Ok(()) => Judged::forward(packet),
            Err(e) => Judged::Guard(e),
        }
    }
}

/// Replication streams bypass recording and masking.
pub(super) fn replication_refused(code: u8) -> ErrInfo {
    ErrInfo::new(
        codes::NOT_SUPPORTED,
        "42000",
        format!(
            "Chaperone: {} is refused: replication streams bypass the gateway's recording and masking",
            command::name(code)
        ),
    )
}

pub(super) fn unknown_command(code: u8) -> ErrInfo {
    ErrInfo::new(
        codes::UNKNOWN_COMMAND,
        "08S01",
        format!("Chaperone: unknown or unsupported command 0x{code:02X}"),
    )
}

/// Strict masking refused a statement.
pub(super) fn masking_denied(denial: chaperone_masking::Denial) -> ErrInfo {
    ErrInfo::new(codes::REFUSED_BY_POLICY, "42000", denial.0)
}
