//! Runtime guardrails: what a session may run, decided in the data path
//! before a command is forwarded.
//!
//! - [`config`] — `[policies.*]` (a role or user names one with `policy = "..."`)
//!   and `[approvals]`;
//! - [`policy`] — a compiled policy and its verdict (allow, deny, approve) on a
//!   statement's facts from [`chaperone_sql`];
//! - [`enforce`] — the per-session guard the command loop calls;
//! - [`explain`] — row estimates with `EXPLAIN` on the session's own connection;
//! - [`approvals`] — requests, decisions, the write-once store shared by all
//!   replicas, webhooks;
//! - [`api`] — `GET /v1/approvals`, `POST /v1/approvals/{id}/approve|deny|revoke`;
//! - [`client`] — the HTTP client behind `chaperone approvals`.
//!
//! Sessions whose role or user names no policy are not guarded (the gateway
//! still records everything). Reference: `docs/guardrails.md`.

pub mod api;
pub mod config;
pub mod enforce;
pub mod explain;
pub mod policy;

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use chaperone_approvals::Approvals;

pub use enforce::{ClientGone, GuardError, PreparedGuard, SessionGuard, SqlCommand};

/// The approval service, shared by every session. The policies themselves
/// change at run time: they are in [`crate::control::PolicySet`].
#[derive(Default)]
pub struct Guardrails {
    approvals: Option<Arc<Approvals>>,
    /// Cancelled when the gateway shuts down: held statements stop waiting
    /// (their requests stay pending, for a retry once approved).
    shutdown: tokio_util::sync::CancellationToken,
}

impl Guardrails {
    /// Opens the `[approvals]` store.
    pub async fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let approvals = match &config.approvals {
            Some(a) => Some(Arc::new(Approvals::open(a).await?)),
            None => None,
        };
        Ok(Guardrails {
            approvals,
            shutdown: Default::default(),
        })
    }

    /// The gateway is stopping: sessions waiting for a decision give up now.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn shutting_down(&self) -> &tokio_util::sync::CancellationToken {
        &self.shutdown
    }

    pub fn approvals(&self) -> Option<&Arc<Approvals>> {
        self.approvals.as_ref()
    }
}
