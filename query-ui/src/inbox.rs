//! The approvers' inbox: statements the guardrails hold for a human (and
//! access requests), with who asked, the SQL, the rule that fired and the
//! `EXPLAIN` estimate; approve or deny with a comment.
//!
//! It decides through the gateway's own [`Approvals`] (attached when the
//! service runs in the gateway's process), so the rules are the API's and the
//! CLI's: approvers cannot decide their own requests, N-of-M needs N different
//! approvers, a decided request stays decided. A person is the configured
//! approver (`[approvals.approvers.NAME]`) named like their subject or email,
//! or listing it in `identities`. Decisions are POSTs from this UI's pages
//! (same-origin check in [`crate::access`]) carrying the session's CSRF token.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form};
use chaperone_approvals::client::time;
use chaperone_approvals::{ActionError, Approvals, RequestView, State as ReqState};
use chaperone_web_login::WebRole;
use serde::Deserialize;

use crate::access::{require, Principal};
use crate::html::{escape, page, url_encode};
use crate::AppState;

/// Decided requests shown under the pending ones.
const RECENT: usize = 20;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/inbox", get(inbox))
        .route("/inbox/{id}", post(decide))
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(page(
            "Approvals",
            &format!("<p class=\"error\">{}</p>", escape(message)),
        )),
    )
        .into_response()
}

/// The configured approver this caller is.
fn approver_name<'a>(approvals: &'a Approvals, p: &Principal) -> Option<&'a str> {
    let mut names = vec![p.name.as_str()];
    if let Some(email) = p.session.as_ref().and_then(|s| s.email.as_deref()) {
        names.push(email);
    }
    approvals.approver_for_person(&names)
}

#[derive(Deserialize)]
struct InboxQuery {
    /// After a decision: the request to report on (its state is read from the
    /// store, never from the URL).
    decided: Option<String>,
}

async fn inbox(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<InboxQuery>,
) -> Response {
    if let Err(r) = require(&principal, WebRole::Approver) {
        return r;
    }
    let Some(approvals) = state.approvals.get() else {
        return unavailable(
            "No approvals here: the inbox works when the audit service runs in the gateway's \
             process with an [approvals] section.",
        );
    };
    let all = match approvals.list(None).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "inbox: approvals store unavailable");
            return unavailable("The approvals store is unavailable; retry in a moment.");
        }
    };
    let me = approver_name(approvals, &principal);
    let mut body = String::new();
    if let Some(id) = &q.decided {
        if let Some(v) = all.iter().find(|v| &v.request.id == id) {
            body += &format!(
                "<p class=\"notice\" id=\"decided\">{} is now <b>{}</b> ({}).</p>",
                escape(id),
                v.state.as_str(),
                progress(v)
            );
        }
    }
    match me {
        Some(name) => {
            body += &format!(
                "<p><small>You decide as approver <b>{}</b>. You cannot decide requests of your own identities.</small></p>",
                escape(name)
            )
        }
        None => {
            body += &format!(
                "<p class=\"error\">You ({}) are not a configured approver: ask an admin to add you to [approvals.approvers] (name or identities).</p>",
                escape(&principal.name)
            )
        }
    }
    let csrf = principal
        .session
        .as_ref()
        .map_or(String::new(), |s| s.csrf.clone());
    let pending: Vec<&RequestView> = all
        .iter()
        .filter(|v| v.state == ReqState::Pending)
        .collect();
    body += &format!("<h2>Waiting for a decision ({})</h2>", pending.len());
    if pending.is_empty() {
        body += "<p class=\"empty\">Nothing is waiting.</p>";
    }
    for v in &pending {
        body += &request_card(v, &csrf, me.is_some());
    }
    body += "<h2>Recently decided</h2>";
    let decided: Vec<&RequestView> = all
        .iter()
        .filter(|v| v.state != ReqState::Pending)
        .take(RECENT)
        .collect();
    if decided.is_empty() {
        body += "<p class=\"empty\">None yet.</p>";
    } else {
        body += "<table><thead><tr><th>Request</th><th>State</th><th>Identity</th><th>Target</th><th>What</th><th>Rule</th><th>Approvals</th><th>Decided</th></tr></thead><tbody>";
        for v in decided {
            let r = &v.request;
            let decided = v.decision.as_ref().map_or(String::new(), |d| {
                format!(
                    "{} by {}{}",
                    time(d.at),
                    d.by.join(", "),
                    d.reason
                        .as_deref()
                        .map_or(String::new(), |r| format!(": {r}"))
                )
            });
            body += &format!(
                "<tr><td>{}</td><td><span class=\"tag\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.id),
                v.state.as_str(),
                escape(&r.requester.display_name),
                escape(&r.target),
                escape(r.sql.as_deref().unwrap_or("(open a session)")),
                escape(&r.policy),
                escape(&r.rule),
                progress(v),
                escape(&decided)
            );
        }
        body += "</tbody></table>";
    }
    body += "<p><small>The list refreshes every 15 s.</small></p><script>setTimeout(() => { if (!document.activeElement || document.activeElement.tagName !== 'TEXTAREA') location.reload(); }, 15000)</script>";
    Html(page("Approvals", &body)).into_response()
}

/// "1 of 2 approvals (bob)".
fn progress(v: &RequestView) -> String {
    let by: Vec<&str> = v.approvals.iter().map(|a| a.by.as_str()).collect();
    let mut s = format!(
        "{} of {} approval{}",
        by.len(),
        v.request.required_approvals,
        if v.request.required_approvals == 1 {
            ""
        } else {
            "s"
        }
    );
    if !by.is_empty() {
        s += &format!(" ({})", by.join(", "));
    }
    escape(&s)
}

/// One pending request: everything an approver needs to decide, and the
/// buttons. Everything from the request is the agent's: escaped.
fn request_card(v: &RequestView, csrf: &str, can_decide: bool) -> String {
    let r = &v.request;
    let what = match &r.sql {
        Some(sql) => format!("<pre class=\"sql\">{}</pre>", escape(sql)),
        None => format!(
            "<p>Access request: open sessions on <b>{}</b> for {}.</p>",
            escape(&r.target),
            r.access_window_secs
                .map_or("the configured window".to_string(), |s| format!("{s} s"))
        ),
    };
    let mut facts = vec![
        (
            "Identity",
            format!(
                "{} <small>({} · {})</small>",
                escape(&r.requester.display_name),
                escape(&r.requester.subject),
                escape(&r.requester.issuer)
            ),
        ),
        (
            "Role",
            escape(r.requester.role.as_deref().unwrap_or("(none)")),
        ),
        (
            "Target",
            format!(
                "{}{}",
                escape(&r.target),
                r.database
                    .as_deref()
                    .map_or(String::new(), |d| format!(" · database {}", escape(d)))
            ),
        ),
        (
            "Rule",
            format!(
                "{} / {} — {}",
                escape(&r.policy),
                escape(&r.rule),
                escape(&r.reason)
            ),
        ),
    ];
    if let Some(class) = &r.statement_class {
        let tables = if r.tables.is_empty() {
            String::new()
        } else {
            format!(" · tables {}", escape(&r.tables.join(", ")))
        };
        facts.push(("Class", format!("{}{tables}", escape(class))));
    }
    if !r.params.is_empty() {
        facts.push(("Parameters", escape(&r.params.join(", "))));
    }
    facts.push((
        "EXPLAIN estimate",
        r.explain_rows
            .map_or("not estimated".into(), |n| format!("{n} rows")),
    ));
    facts.push((
        "Progress",
        format!("<span class=\"progress\">{}</span>", progress(v)),
    ));
    facts.push((
        "Asked",
        format!(
            "{} · expires {} · {} mode",
            time(r.created_at),
            time(r.expires_at),
            match r.mode {
                chaperone_approvals::ApprovalModeName::Hold => "hold (the client is waiting)",
                chaperone_approvals::ApprovalModeName::Async => "async",
            }
        ),
    ));
    let facts: String = facts
        .into_iter()
        .map(|(k, v)| format!("<dt>{k}</dt><dd>{v}</dd>"))
        .collect();
    let buttons = if can_decide {
        format!(
            r#"<form method="post" action="/inbox/{id}" class="decide">
<input type="hidden" name="csrf" value="{csrf}">
<input name="note" placeholder="comment or reason (optional)" size="40" maxlength="500">
<button class="approve" name="action" value="approve">Approve</button>
<button class="deny" name="action" value="deny">Deny</button></form>"#,
            id = url_encode(&r.id),
            csrf = escape(csrf)
        )
    } else {
        String::new()
    };
    format!(
        r#"<div class="card request" data-id="{id}"><b>{id}</b>{what}<dl class="facts">{facts}</dl>{buttons}</div>"#,
        id = escape(&r.id),
    )
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    note: String,
}

async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    if let Err(r) = require(&principal, WebRole::Approver) {
        return r;
    }
    // A person's form carries the session's token (a token caller has no
    // cookie a other site could ride on).
    if let Some(session) = &principal.session {
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            form.csrf.as_bytes(),
            session.csrf.as_bytes(),
        )) {
            return (
                StatusCode::FORBIDDEN,
                Html(page(
                    "Approvals",
                    "<p class=\"error\">The form is stale (CSRF token mismatch): reload the inbox and try again.</p>",
                )),
            )
                .into_response();
        }
    }
    let Some(approvals) = state.approvals.get() else {
        return unavailable("No approvals here.");
    };
    let Some(approver) = approver_name(approvals, &principal) else {
        return (
            StatusCode::FORBIDDEN,
            Html(page(
                "Approvals",
                "<p class=\"error\">You are not a configured approver.</p>",
            )),
        )
            .into_response();
    };
    let note = Some(form.note.trim().to_string()).filter(|n| !n.is_empty());
    let result = match form.action.as_str() {
        "approve" => approvals.approve(&id, approver, note).await,
        "deny" => approvals.deny(&id, approver, note).await,
        _ => return (StatusCode::BAD_REQUEST, "action must be approve or deny\n").into_response(),
    };
    match result {
        Ok(v) => {
            tracing::info!(target: "chaperone::access", who = %principal.name, %approver,
                approval = %id, action = %form.action, state = v.state.as_str(), "approval decided in the web inbox");
            Redirect::to(&format!("/inbox?decided={}", url_encode(&id))).into_response()
        }
        Err(e) => {
            let status = match &e {
                ActionError::NotFound => StatusCode::NOT_FOUND,
                ActionError::Forbidden(_) => StatusCode::FORBIDDEN,
                ActionError::Conflict(_) => StatusCode::CONFLICT,
                ActionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::warn!(target: "chaperone::access", who = %principal.name, %approver,
                approval = %id, action = %form.action, error = %e, "web inbox decision refused");
            (
                status,
                Html(page(
                    "Approvals",
                    &format!(
                        "<p class=\"error\" id=\"refused\">{} refused: {}</p><p><a href=\"/inbox\">Back to the inbox</a></p>",
                        escape(&id),
                        escape(&e.to_string())
                    ),
                )),
            )
                .into_response()
        }
    }
}
