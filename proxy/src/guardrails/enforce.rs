//! The guardrails of one session: what the command loop asks before it
//! forwards a command, and what it records about the answer.
//!
//! The session calls, before forwarding:
//! - [`SessionGuard::check_connect`] once logged in (access requests, the
//!   initial database);
//! - [`SessionGuard::check_sql`] for COM_QUERY and COM_STMT_PREPARE (the
//!   prepare-time verdict is bound to the statement id as a [`PreparedGuard`]);
//! - [`SessionGuard::check_execute`] for COM_STMT_EXECUTE;
//! - [`SessionGuard::check_database`] for COM_INIT_DB, and
//!   [`SessionGuard::check_field_list`] for COM_FIELD_LIST;
//! - [`SessionGuard::check_command`] for the other commands.
//!
//! A refusal is an [`ErrInfo`] for the client (MySQL error 1290 naming the
//! policy and rule, or the approval request and why it did not pass); the
//! verdict, rule, approvers and wait time are written into the command's
//! [`CommandSummary`]. Sessions whose grant names no policy are not guarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaperone_schemas::CommandSummary;
use tracing::{info, warn};

use super::config::{Action, ApprovalMode};
use super::explain::{self, Estimate};
use super::policy::{self, Context, Decision, Policy, Verdict};
use super::Guardrails;
use crate::auth::Grant;
use crate::control::PolicySet;
use chaperone_approvals::{
    connect_fingerprint, now_secs, ApprovalRequest, Approvals, RequestKind, Requester, State,
};
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::upstream::Upstream;
use chaperone_sql::{Analysis, Features, StatementKind};

mod hold;
use hold::{link, Pending};

/// MySQL's ER_OPTION_PREVENTS_STATEMENT, used for every guardrail refusal.
pub const GUARDRAIL_ERROR: u16 = codes::REFUSED_BY_POLICY;

/// The server reports `NO_BACKSLASH_ESCAPES` in the status flags of OK packets.
pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;

/// Why a command was not forwarded.
#[derive(Debug)]
pub enum GuardError {
    /// Refuse the command with this error; the session goes on.
    Refuse(ErrInfo),
    /// The upstream connection broke (during `EXPLAIN`): the session ends.
    Upstream(String),
    /// The client went away while its statement was held for approval: the
    /// request was withdrawn, the statement is not run, the session ends.
    ClientGone,
}

/// Resolves when the session's client has gone away (closed its connection,
/// or sent COM_QUIT). A held statement waits for it too: a client that
/// disconnects is noticed at once, its request withdrawn, and nothing it asked
/// for runs later. The session's guard polls it only while holding.
pub type ClientGone<'a> = std::pin::Pin<&'a mut (dyn std::future::Future<Output = ()> + Send)>;

/// What a prepared statement keeps from its PREPARE-time judgement.
#[derive(Debug, Clone, Default)]
pub struct PreparedGuard {
    /// Row-estimate rules to check at each execution, with its parameters.
    pub estimates: Vec<policy::Estimate>,
    /// The approval its PREPARE ran under, and its approvers.
    pub approval_id: Option<String>,
    pub approvers: Vec<String>,
}

/// What a SQL text is, for [`SessionGuard::check_sql`].
pub struct SqlCommand<'a> {
    /// The text as received (hazards are judged on the bytes).
    pub bytes: &'a [u8],
    pub sql: &'a str,
    pub analysis: &'a Analysis,
    pub database: Option<&'a str>,
    /// The session's client-visible connection id, for KILL.
    pub connection_id: u32,
    /// COM_STMT_PREPARE (its executions are judged by [`SessionGuard::check_execute`]).
    pub prepare: bool,
}

pub struct SessionGuard {
    guardrails: Arc<Guardrails>,
    policy: Option<Arc<Policy>>,
    /// The policy name and role of the grant, to find the session's policy in
    /// a reloaded [`PolicySet`].
    login_policy: Option<String>,
    role: Option<String>,
    requester: Requester,
    target: String,
    gateway_id: String,
    no_backslash_escapes: bool,
    /// The access request this session opened under (connect approval).
    access: Option<String>,
    access_checked: Option<Instant>,
}

/// How often a session re-reads its access request (a revocation ends it).
const ACCESS_RECHECK: Duration = Duration::from_secs(2);

fn refuse(message: String) -> GuardError {
    GuardError::Refuse(ErrInfo::new(GUARDRAIL_ERROR, "HY000", message))
}

fn store_error(e: &chaperone_approvals::StoreError) -> GuardError {
    chaperone_approvals::store_failed(e);
    refuse(format!(
        "Chaperone: the statement needs approval but the approvals store is unavailable ({e}); retry later"
    ))
}

impl SessionGuard {
    pub fn new(
        guardrails: Arc<Guardrails>,
        policies: &PolicySet,
        grant: &Grant,
        gateway_id: &str,
    ) -> Self {
        let role = grant.identity.role.clone();
        let policy =
            policies.policy(policies.policy_name(role.as_deref(), grant.policy.as_deref()));
        SessionGuard {
            guardrails,
            policy,
            login_policy: grant.policy.clone(),
            role,
            requester: Requester::of(&grant.identity),
            target: grant.target.clone(),
            gateway_id: gateway_id.to_string(),
            no_backslash_escapes: false,
            access: None,
            access_checked: None,
        }
    }

    /// Takes the session's policy from a reloaded config: the next command is
    /// judged by it. A policy that vanished from the config (its role now names
    /// another) is replaced; one that no longer exists at all is kept, so that a
    /// session never ends up less guarded by a dangling name.
    pub fn reload(&mut self, policies: &PolicySet) {
        let name = policies.policy_name(self.role.as_deref(), self.login_policy.as_deref());
        match (name, policies.policy(name)) {
            (None, _) => self.policy = None,
            (Some(_), Some(p)) => self.policy = Some(p),
            (Some(n), None) => {
                warn!(
                    policy = n,
                    "reloaded config lacks the session's policy; keeping the previous version"
                )
            }
        }
    }

    /// Does a policy apply to this session?
    pub fn active(&self) -> bool {
        self.policy.is_some()
    }

    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// The approved access request this session opened under, if its policy
    /// requires one (recorded on the session's rows).
    pub fn access_request(&self) -> Option<&str> {
        self.access.as_deref()
    }

    /// Status flags of the last OK or EOF packet from the server.
    pub fn observe_status(&mut self, status: u16) {
        self.no_backslash_escapes = status & SERVER_STATUS_NO_BACKSLASH_ESCAPES != 0;
    }

    fn approvals(&self) -> Result<&Arc<Approvals>, GuardError> {
        self.guardrails.approvals().ok_or_else(|| {
            refuse("Chaperone: the statement needs approval but no [approvals] are configured; ask the gateway's operator".into())
        })
    }

    /// At login: the initial database, and for policies with
    /// `approval.connect`, an approved access request for this identity and
    /// target. Its window bounds the session (`deadline`). Refusals are login
    /// errors (1044 for a database, 1290 for an access request).
    pub async fn check_connect(
        &mut self,
        database: Option<&str>,
        deadline: &mut Option<std::time::SystemTime>,
        session_id: &str,
    ) -> Result<(), ErrInfo> {
        let Some(policy) = self.policy.clone() else {
            return Ok(());
        };
        if let Some(db) = database {
            if let Some(v) = policy.check_database(db) {
                return Err(ErrInfo::new(
                    1044,
                    "42000",
                    format!("Chaperone: {} (policy '{}')", v.reason, policy.name),
                ));
            }
        }
        if !policy.approval.connect {
            return Ok(());
        }
        let err = |e: GuardError| match e {
            GuardError::Refuse(e) => e,
            GuardError::Upstream(m) => ErrInfo::new(GUARDRAIL_ERROR, "HY000", m),
            // Nothing is held at login.
            GuardError::ClientGone => {
                ErrInfo::new(GUARDRAIL_ERROR, "HY000", "the client disconnected")
            }
        };
        let approvals = self.approvals().map_err(err)?.clone();
        let fp = connect_fingerprint(&self.requester, &self.target);
        let known = approvals
            .by_fingerprint(&fp, &self.requester)
            .await
            .map_err(|e| err(store_error(&e)))?;
        if let Some(v) = known.iter().find(|v| v.state == State::Approved) {
            if let Some(until) = v.valid_until {
                let end = std::time::UNIX_EPOCH + Duration::from_secs(until.max(0) as u64);
                *deadline = Some(deadline.map_or(end, |d| d.min(end)));
            }
            info!(approval = %v.request.id, "session opened under an approved access request");
            self.access = Some(v.request.id.clone());
            self.access_checked = Some(Instant::now());
            return Ok(());
        }
        let view = match known.into_iter().find(|v| v.state == State::Pending) {
            Some(v) => v,
            None => {
                let now = now_secs();
                let request = ApprovalRequest {
                    id: chaperone_approvals::new_id(),
                    kind: RequestKind::Connect,
                    created_at: now,
                    expires_at: now + approvals.config().pending_ttl_secs as i64,
                    requester: self.requester.clone(),
                    target: self.target.clone(),
                    database: database.map(str::to_string),
                    sql: None,
                    params: Vec::new(),
                    statement_class: None,
                    tables: Vec::new(),
                    policy: policy.name.clone(),
                    rule: "connect".into(),
                    reason: "the role's policy requires an approved access request before a session opens".into(),
                    explain_rows: None,
                    required_approvals: policy.approval.required,
                    approvers: policy.approval.approvers.clone(),
                    mode: ApprovalMode::Async.into(),
                    fingerprint: fp,
                    gateway_id: self.gateway_id.clone(),
                    session_id: session_id.to_string(),
                    access_window_secs: Some(policy.approval.access_window_secs),
                };
                approvals
                    .open_request(request)
                    .await
                    .map_err(|e| err(store_error(&e)))?
            }
        };
        Err(ErrInfo::new(
            GUARDRAIL_ERROR,
            "HY000",
            format!(
                "Chaperone: access to '{}' needs approval: access request {} is pending{}; connect again once it is approved",
                self.target,
                view.request.id,
                link(&view)
            ),
        ))
    }

    /// Sessions opened under an access request end when it is revoked: checked
    /// before a command, at most every few seconds.
    async fn check_access(&mut self) -> Result<(), GuardError> {
        let Some(id) = self.access.clone() else {
            return Ok(());
        };
        if self
            .access_checked
            .is_some_and(|t| t.elapsed() < ACCESS_RECHECK)
        {
            return Ok(());
        }
        let approvals = self.approvals()?.clone();
        match approvals.window_valid(&id).await {
            Ok(true) => {
                self.access_checked = Some(Instant::now());
                Ok(())
            }
            Ok(false) => Err(refuse(format!(
                "Chaperone: access request {id} was revoked or its window ended; this session may not run more commands"
            ))),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// Judges a COM_QUERY or COM_STMT_PREPARE text before it is forwarded;
    /// holds it for approval when the policy says so. On success, what a
    /// prepared statement must keep.
    pub async fn check_sql(
        &mut self,
        cmd: SqlCommand<'_>,
        upstream: &mut Upstream,
        summary: &mut CommandSummary,
        client_gone: ClientGone<'_>,
    ) -> Result<PreparedGuard, GuardError> {
        let Some(policy) = self.policy.clone() else {
            return Ok(PreparedGuard::default());
        };
        summary.policy = Some(policy.name.clone());
        self.check_access().await.inspect_err(|_| {
            summary.verdict = Some("denied".into());
            summary.policy_rule = Some("connect".into());
        })?;
        let kill_target = if cmd.analysis.features().contains(Features::KILL) {
            crate::registry::parse_kill(cmd.bytes).map(|k| k.id)
        } else {
            None
        };
        let ctx = Context {
            database: cmd.database,
            connection_id: cmd.connection_id,
            kill_target,
        };
        let decision = match policy::text_hazard(cmd.bytes, self.no_backslash_escapes) {
            Some(why) => Decision {
                verdict: policy.hazard(why),
                estimates: Vec::new(),
            },
            None => policy.evaluate(cmd.analysis, &ctx),
        };
        let mut verdict = decision.verdict;
        let mut explain_rows = None;
        if verdict.action == Action::Allow && !decision.estimates.is_empty() {
            if cmd.prepare {
                // Estimated at each execution, with its parameters.
                summary.verdict = Some("allowed".into());
                return Ok(PreparedGuard {
                    estimates: decision.estimates,
                    ..Default::default()
                });
            }
            let (v, rows) = self
                .estimate(&decision.estimates, cmd.sql, &[], upstream)
                .await?;
            verdict = v;
            explain_rows = rows;
            summary.verdict_reason = rows.map(|n| format!("EXPLAIN estimated {n} rows"));
        }
        let one_write = cmd.analysis.statements.len() == 1
            && matches!(
                cmd.analysis.statements[0].kind,
                StatementKind::Update | StatementKind::Delete
            );
        if verdict.action == Action::Approve && explain_rows.is_none() && one_write && !cmd.prepare
        {
            // For the approver: cheap, one round trip, and the human is the slow part.
            if let Ok(text) = explain::explain_text(cmd.sql, &[]) {
                if let Estimate::Rows(n) = explain::run(upstream, &text)
                    .await
                    .map_err(GuardError::Upstream)?
                {
                    explain_rows = Some(n);
                }
            }
        }
        let guard = self
            .decide(
                &policy,
                verdict,
                Pending {
                    sql: cmd.sql,
                    params: &[],
                    database: cmd.database,
                    analysis: cmd.analysis,
                    explain_rows,
                    client_gone,
                },
                summary,
            )
            .await?;
        Ok(guard)
    }

    /// COM_STMT_EXECUTE of a statement prepared under `prepared`.
    #[allow(clippy::too_many_arguments)]
    pub async fn check_execute(
        &mut self,
        prepared: Option<&PreparedGuard>,
        sql: &str,
        params: &[String],
        analysis: Option<&Analysis>,
        database: Option<&str>,
        upstream: &mut Upstream,
        summary: &mut CommandSummary,
        client_gone: ClientGone<'_>,
    ) -> Result<(), GuardError> {
        let Some(policy) = self.policy.clone() else {
            return Ok(());
        };
        summary.policy = Some(policy.name.clone());
        self.check_access().await?;
        let Some(prepared) = prepared else {
            // Prepared before guardrails applied (cannot happen: the guard
            // lives as long as the session), so never run unjudged.
            summary.verdict = Some("denied".into());
            return Err(refuse(
                "Chaperone: this prepared statement was not judged when it was prepared; prepare it again".into(),
            ));
        };
        if let Some(id) = &prepared.approval_id {
            summary.approval_id = Some(id.clone());
            summary.approvers = prepared.approvers.clone();
        }
        if prepared.estimates.is_empty() {
            summary.verdict = Some(
                if prepared.approval_id.is_some() {
                    "approved"
                } else {
                    "allowed"
                }
                .into(),
            );
            return Ok(());
        }
        let (verdict, rows) = self
            .estimate(&prepared.estimates, sql, params, upstream)
            .await?;
        summary.verdict_reason = rows.map(|n| format!("EXPLAIN estimated {n} rows"));
        let Some(analysis) = analysis else {
            summary.verdict = Some("denied".into());
            return Err(refuse(
                "Chaperone: this prepared statement has no analysis; prepare it again".into(),
            ));
        };
        self.decide(
            &policy,
            verdict,
            Pending {
                sql,
                params,
                database,
                analysis,
                explain_rows: rows,
                client_gone,
            },
            summary,
        )
        .await
        .map(|_| ())
    }

    /// COM_INIT_DB.
    pub fn check_database(&self, db: &str, summary: &mut CommandSummary) -> Result<(), GuardError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        summary.policy = Some(policy.name.clone());
        match policy.check_database(db) {
            Some(v) => Err(deny(policy, v, summary)),
            None => {
                summary.verdict = Some("allowed".into());
                Ok(())
            }
        }
    }

    /// COM_FIELD_LIST: `table` of the current database.
    pub fn check_field_list(
        &self,
        database: Option<&str>,
        table: &str,
        summary: &mut CommandSummary,
    ) -> Result<(), GuardError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        summary.policy = Some(policy.name.clone());
        match policy.check_table(database, table) {
            Some(v) => Err(deny(policy, v, summary)),
            None => {
                summary.verdict = Some("allowed".into());
                Ok(())
            }
        }
    }

    /// COM_SET_OPTION: multi-statements turned on or off. Nothing to judge (every
    /// statement of a packet is judged either way); noted in the record.
    pub fn note_set_option(&self, payload: &[u8], summary: &mut CommandSummary) {
        let Some(policy) = &self.policy else {
            return;
        };
        summary.policy = Some(policy.name.clone());
        summary.verdict = Some("allowed".into());
        summary.verdict_reason = Some(
            match payload.get(1) {
                Some(0) => "multi-statements on: each statement of a packet is judged",
                Some(1) => "multi-statements off",
                _ => "unknown COM_SET_OPTION value",
            }
            .into(),
        );
    }

    /// Commands without SQL that administer the server (COM_REFRESH, COM_DEBUG,
    /// COM_PROCESS_KILL of another connection): judged as the `admin` class,
    /// or the `kill` feature.
    pub fn check_command(
        &self,
        command: &str,
        kill_target: Option<(u64, u32)>,
        summary: &mut CommandSummary,
    ) -> Result<(), GuardError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        summary.policy = Some(policy.name.clone());
        let sql = match kill_target {
            Some((target, _)) => format!("KILL {target}"),
            None => "FLUSH TABLES".to_string(),
        };
        let analysis = chaperone_sql::analyze(&sql);
        let ctx = Context {
            database: None,
            connection_id: kill_target.map_or(0, |(_, own)| own),
            kill_target: kill_target.map(|(t, _)| t),
        };
        let mut v = policy.evaluate(&analysis, &ctx).verdict;
        if v.action == Action::Allow {
            summary.verdict = Some("allowed".into());
            return Ok(());
        }
        if v.action == Action::Approve {
            // No approval for protocol commands: there is no SQL to show.
            v.action = Action::Deny;
        }
        v.reason = format!("{command}: {}", v.reason);
        Err(deny(policy, v, summary))
    }

    /// Runs EXPLAIN for the row-estimate rules.
    async fn estimate(
        &self,
        estimates: &[policy::Estimate],
        sql: &str,
        params: &[String],
        upstream: &mut Upstream,
    ) -> Result<(Verdict, Option<u64>), GuardError> {
        let result = match explain::explain_text(sql, params) {
            Ok(text) => explain::run(upstream, &text)
                .await
                .map_err(GuardError::Upstream)?,
            Err(why) => Estimate::Unavailable(format!("cannot EXPLAIN: {why}")),
        };
        Ok(match result {
            Estimate::Rows(n) => (Policy::after_estimate(estimates, Some(n), None), Some(n)),
            Estimate::Unavailable(why) => {
                (Policy::after_estimate(estimates, None, Some(&why)), None)
            }
        })
    }

    /// Acts on a verdict: allow, deny, or the approval flow.
    async fn decide(
        &mut self,
        policy: &Arc<Policy>,
        verdict: Verdict,
        pending: Pending<'_>,
        summary: &mut CommandSummary,
    ) -> Result<PreparedGuard, GuardError> {
        match verdict.action {
            Action::Allow => {
                summary.verdict = Some("allowed".into());
                Ok(PreparedGuard::default())
            }
            Action::Deny => Err(deny(policy, verdict, summary)),
            Action::Approve => self.approval(policy, verdict, pending, summary).await,
        }
    }
}

fn deny(policy: &Policy, v: Verdict, summary: &mut CommandSummary) -> GuardError {
    summary.verdict = Some("denied".into());
    summary.policy_rule = Some(v.rule.clone());
    summary.verdict_reason = Some(v.reason.clone());
    refuse(format!(
        "Chaperone: denied by policy '{}' rule '{}': {}",
        policy.name, v.rule, v.reason
    ))
}
