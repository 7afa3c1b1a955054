//! Holding a statement for approval: find the request for this very statement
//! (or open one), wait for the decision while watching the client and the
//! gateway's shutdown, and turn the outcome into a verdict for the record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaperone_approvals::{
    fingerprint, now_secs, ApprovalRequest, Approvals, RequestKind, RequestView, State,
};
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_schemas::CommandSummary;
use chaperone_sql::Analysis;
use tracing::{info, warn};

use super::{refuse, store_error, ClientGone, GuardError, PreparedGuard, SessionGuard};
use crate::guardrails::config::ApprovalMode;
use crate::guardrails::policy::{Policy, Verdict};

/// What a held statement is, for its request.
pub(super) struct Pending<'a> {
    pub sql: &'a str,
    pub params: &'a [String],
    pub database: Option<&'a str>,
    pub analysis: &'a Analysis,
    pub explain_rows: Option<u64>,
    pub client_gone: ClientGone<'a>,
}

impl SessionGuard {
    /// A statement a rule sends for approval: run once approved, refused
    /// otherwise (async mode: refused at once with the request's id).
    pub(super) async fn approval(
        &mut self,
        policy: &Arc<Policy>,
        verdict: Verdict,
        mut p: Pending<'_>,
        summary: &mut CommandSummary,
    ) -> Result<PreparedGuard, GuardError> {
        let started = Instant::now();
        summary.policy_rule = Some(verdict.rule.clone());
        let approvals = self.approvals()?.clone();
        let fp = fingerprint(&self.requester, &self.target, p.database, p.sql, p.params);
        let known = approvals
            .by_fingerprint(&fp, &self.requester)
            .await
            .map_err(|e| store_error(&e))?;
        // An approved request for this very statement (async mode, or a retry
        // after the gateway restarted) is used once.
        for v in known.iter().filter(|v| v.state == State::Approved) {
            if approvals
                .claim(&v.request.id, &summary.session_id, &self.gateway_id)
                .await
                .map_err(|e| store_error(&e))?
            {
                return Ok(approved(v, started, summary));
            }
        }
        let view = match known.into_iter().find(|v| v.state == State::Pending) {
            Some(v) => v,
            None => {
                let request = self.new_request(policy, &verdict, &p, fp, &summary.session_id);
                approvals
                    .open_request(request)
                    .await
                    .map_err(|e| store_error(&e))?
            }
        };
        let id = view.request.id.clone();
        summary.approval_id = Some(id.clone());
        if policy.mode() == ApprovalMode::Async {
            summary.verdict = Some("pending_approval".into());
            summary.verdict_reason = Some(verdict.reason.clone());
            return Err(refuse(format!(
                "Chaperone: held for approval by policy '{}' rule '{}' ({}): request {id}{}; once approved, run the identical statement again within {} s",
                policy.name,
                verdict.rule,
                verdict.reason,
                link(&view),
                approvals.config().claim_ttl_secs
            )));
        }
        info!(approval = %id, rule = %verdict.rule, "statement held for approval");
        let view = self
            .wait_for_decision(&approvals, policy, view, started, &mut p, summary)
            .await?;
        self.decided(&approvals, policy, &verdict, view, started, summary)
            .await
    }

    /// The request for a statement no request exists for yet.
    fn new_request(
        &self,
        policy: &Policy,
        verdict: &Verdict,
        p: &Pending<'_>,
        fingerprint: String,
        session_id: &str,
    ) -> ApprovalRequest {
        let now = now_secs();
        let ttl = match policy.mode() {
            // A second more than the wait: the session's own timer ends it (and
            // records it expired), never the stored deadline rounded to seconds.
            ApprovalMode::Hold => policy.approval.timeout_secs + 1,
            ApprovalMode::Async => self.approvals().map_or(0, |a| a.config().pending_ttl_secs),
        };
        let a = p.analysis;
        let mut tables = a.tables_written(p.database);
        for t in a.tables_read(p.database) {
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        ApprovalRequest {
            id: chaperone_approvals::new_id(),
            kind: RequestKind::Statement,
            created_at: now,
            expires_at: now + ttl as i64,
            requester: self.requester.clone(),
            target: self.target.clone(),
            database: p.database.map(str::to_string),
            sql: Some(p.sql.to_string()),
            params: p.params.to_vec(),
            statement_class: Some(a.class.as_str().to_string()),
            tables,
            policy: policy.name.clone(),
            rule: verdict.rule.clone(),
            reason: verdict.reason.clone(),
            explain_rows: p.explain_rows,
            required_approvals: policy.approval.required,
            approvers: policy.approval.approvers.clone(),
            mode: policy.mode().into(),
            fingerprint,
            gateway_id: self.gateway_id.clone(),
            session_id: session_id.to_string(),
            access_window_secs: None,
        }
    }

    /// Waits for the decision on a held statement, until its timeout, the
    /// gateway's shutdown or the client's leaving; a request still pending at
    /// the end is expired (unless a decision landed in the meantime).
    async fn wait_for_decision(
        &self,
        approvals: &Approvals,
        policy: &Policy,
        view: RequestView,
        started: Instant,
        p: &mut Pending<'_>,
        summary: &mut CommandSummary,
    ) -> Result<RequestView, GuardError> {
        let id = view.request.id.clone();
        let timeout = Duration::from_secs(policy.approval.timeout_secs);
        let shutdown = self.guardrails.shutting_down().clone();
        let waited = tokio::select! {
            v = approvals.wait(&id, timeout.saturating_sub(started.elapsed())) => Some(v),
            _ = shutdown.cancelled() => None,
            () = p.client_gone.as_mut() => {
                return Err(self.client_gone(approvals, &id, started, summary).await);
            }
        };
        let Some(waited) = waited else {
            summary.verdict = Some("pending_approval".into());
            summary.approval_wait_ms = Some(started.elapsed().as_millis() as u64);
            summary.verdict_reason =
                Some(format!("request {id}: the gateway shut down while waiting"));
            return Err(GuardError::Refuse(ErrInfo::new(
                codes::SERVER_SHUTDOWN,
                "08S01",
                format!(
                    "Chaperone: the gateway is shutting down; approval request {id} stays pending{}: run the identical statement again once it is approved",
                    link(&view)
                ),
            )));
        };
        let view = waited.map_err(|e| store_error(&e))?;
        if view.state != State::Pending {
            return Ok(view);
        }
        match approvals.expire(&id, "the client's wait timed out").await {
            Ok(true) => Ok(view),
            // A decision landed in the meantime.
            Ok(false) => Ok(approvals
                .view(&id)
                .await
                .map_err(|e| store_error(&e))?
                .unwrap_or(view)),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// The decision on a held statement, as the verdict of its command: run
    /// when approved (and not used by another session), refused otherwise.
    async fn decided(
        &self,
        approvals: &Approvals,
        policy: &Policy,
        verdict: &Verdict,
        view: RequestView,
        started: Instant,
        summary: &mut CommandSummary,
    ) -> Result<PreparedGuard, GuardError> {
        let id = view.request.id.clone();
        summary.approval_wait_ms = Some(started.elapsed().as_millis() as u64);
        let outcome = match view.state {
            State::Approved => {
                if approvals
                    .claim(&id, &summary.session_id, &self.gateway_id)
                    .await
                    .map_err(|e| store_error(&e))?
                {
                    return Ok(approved(&view, started, summary));
                }
                "was approved but already used by another session running the identical statement"
                    .to_string()
            }
            State::Denied => {
                summary.verdict = Some("approval_denied".into());
                let d = view.decision.as_ref();
                format!(
                    "was denied by {}{}",
                    d.map(|d| d.by.join(", ")).unwrap_or_default(),
                    d.and_then(|d| d.reason.as_deref())
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                )
            }
            State::Pending | State::Expired => {
                summary.verdict = Some("approval_timeout".into());
                format!(
                    "was not approved within {} s (policy '{}' approval.timeout_secs)",
                    policy.approval.timeout_secs, policy.name
                )
            }
            State::Used | State::Revoked => format!("is {}", view.state.as_str()),
        };
        if summary.verdict.is_none() {
            summary.verdict = Some("approval_denied".into());
        }
        summary.approvers = view
            .decision
            .as_ref()
            .map(|d| d.by.clone())
            .unwrap_or_default();
        summary.verdict_reason = Some(format!("request {id} {outcome}"));
        warn!(approval = %id, %outcome, "held statement not run");
        Err(refuse(format!(
            "Chaperone: approval request {id} (policy '{}' rule '{}': {}) {outcome}; the statement was not run",
            policy.name, verdict.rule, verdict.reason
        )))
    }

    /// The client of a held statement went away: the request is withdrawn
    /// (expired, with the reason) so that no approver acts on a statement
    /// nobody waits for, and the record says so.
    async fn client_gone(
        &self,
        approvals: &Approvals,
        id: &str,
        started: Instant,
        summary: &mut CommandSummary,
    ) -> GuardError {
        const WHY: &str = "the client disconnected while waiting";
        let withdrawn = match approvals.expire(id, WHY).await {
            Ok(true) => "withdrawn".to_string(),
            Ok(false) => "already decided; not run".to_string(),
            Err(e) => {
                chaperone_approvals::store_failed(&e);
                format!("still pending: the store failed to withdraw it ({e})")
            }
        };
        warn!(approval = %id, %withdrawn, "client disconnected while its statement was held");
        summary.verdict = Some("approval_abandoned".into());
        summary.approval_wait_ms = Some(started.elapsed().as_millis() as u64);
        summary.verdict_reason = Some(format!("request {id}: {WHY} (request {withdrawn})"));
        GuardError::ClientGone
    }
}

fn approved(view: &RequestView, started: Instant, summary: &mut CommandSummary) -> PreparedGuard {
    let approvers = view
        .decision
        .as_ref()
        .map(|d| d.by.clone())
        .unwrap_or_default();
    summary.verdict = Some("approved".into());
    summary.policy_rule = Some(view.request.rule.clone());
    summary.approval_id = Some(view.request.id.clone());
    summary.approvers = approvers.clone();
    summary.approval_wait_ms = Some(started.elapsed().as_millis() as u64);
    summary.verdict_reason = Some(format!(
        "request {} approved by {}",
        view.request.id,
        approvers.join(", ")
    ));
    info!(approval = %view.request.id, "approved statement runs");
    PreparedGuard {
        estimates: Vec::new(),
        approval_id: Some(view.request.id.clone()),
        approvers,
    }
}

pub(super) fn link(view: &RequestView) -> String {
    view.url
        .as_deref()
        .map(|u| format!(" ({u})"))
        .unwrap_or_default()
}
