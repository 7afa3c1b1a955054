//! The approvals API, on the gateway's API listener (`[api] listen`, beside
//! `/v1/credentials`). Every call needs an approver's bearer token
//! (`[approvals.approvers.NAME]`); the name is the approver recorded.
//!
//! ```text
//! GET  /v1/approvals[?state=pending|approved|denied|expired|used|revoked][&kind=statement|connect]
//!   200 {"approvals": [<request>, ...]}            newest first
//! GET  /v1/approvals/{id}
//!   200 <request>
//! POST /v1/approvals/{id}/approve   {"comment": "..."}   (body optional)
//! POST /v1/approvals/{id}/deny      {"reason": "..."}
//! POST /v1/approvals/{id}/revoke    {"reason": "..."}    an access window, or an unused approval
//!   200 <request>
//!   401 no or unknown token · 403 not allowed to decide (own request, not an
//!   approver of the policy) · 404 no such request · 409 already decided
//! ```
//!
//! `<request>` is the request with its state: `id`, `kind`, `state`,
//! `created_at`, `expires_at`, `requester` {issuer, subject, display_name,
//! role, claims}, `target`, `database`, `sql`, `params`, `statement_class`,
//! `tables`, `policy`, `rule`, `reason`, `explain_rows`,
//! `required_approvals`, `approvers`, `approvals` [{by, at, comment}],
//! `decision` {outcome, by, at, reason}, `used`, `revoked`, `valid_until`,
//! `url` (times are Unix seconds). The web inbox (query-ui) reads the same.

use std::sync::Arc;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use tracing::warn;

use chaperone_approvals::{ActionError, Approvals, RequestKind, State};

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The approver behind the request's bearer token (an axum response is the
/// error: handlers return it as is).
#[allow(clippy::result_large_err)]
fn approver(approvals: &Approvals, headers: &HeaderMap) -> Result<String, Response> {
    let unauthorized = || {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "an approver's bearer token is required (Authorization: Bearer <token>)",
        );
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let token = crate::identity::api::bearer(headers).ok_or_else(unauthorized)?;
    approvals
        .approver_for_token(token.as_bytes())
        .map(str::to_string)
        .ok_or_else(unauthorized)
}

fn action_error(e: ActionError) -> Response {
    match e {
        ActionError::NotFound => error(StatusCode::NOT_FOUND, "no such approval request"),
        ActionError::Forbidden(m) => error(StatusCode::FORBIDDEN, &m),
        ActionError::Conflict(m) => error(StatusCode::CONFLICT, &m),
        ActionError::Store(e) => {
            warn!(error = %e, "approvals API: store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the approvals store is unavailable; retry later",
            )
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

async fn list(
    AxumState(approvals): AxumState<Arc<Approvals>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = approver(&approvals, &headers) {
        return r;
    }
    let state = match q.state.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => match State::from_name(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "state must be pending, approved, denied, expired, used, revoked or all",
                )
            }
        },
    };
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some("statement") => Some(RequestKind::Statement),
        Some("connect") => Some(RequestKind::Connect),
        Some(_) => return error(StatusCode::BAD_REQUEST, "kind must be statement or connect"),
    };
    match approvals.list(state).await {
        Ok(mut views) => {
            if let Some(k) = kind {
                views.retain(|v| v.request.kind == k);
            }
            Json(serde_json::json!({ "approvals": views })).into_response()
        }
        Err(e) => action_error(ActionError::Store(e)),
    }
}

async fn show(
    AxumState(approvals): AxumState<Arc<Approvals>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = approver(&approvals, &headers) {
        return r;
    }
    match approvals.view(&id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => action_error(ActionError::NotFound),
        Err(e) => action_error(ActionError::Store(e)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[allow(clippy::result_large_err)]
fn body(bytes: &[u8]) -> Result<DecisionBody, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("body must be JSON {{\"comment\": \"...\"}} or {{\"reason\": \"...\"}}: {e}"),
        )
    })
}

async fn decide(
    approvals: Arc<Approvals>,
    headers: HeaderMap,
    id: String,
    raw: axum::body::Bytes,
    action: &str,
) -> Response {
    let who = match approver(&approvals, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let b = match body(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let note = b.reason.or(b.comment);
    let result = match action {
        "approve" => approvals.approve(&id, &who, note).await,
        "deny" => approvals.deny(&id, &who, note).await,
        _ => approvals.revoke(&id, &who, note).await,
    };
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            warn!(approval = %id, approver = %who, %action, error = %e, "approval action refused");
            action_error(e)
        }
    }
}

async fn approve(
    AxumState(a): AxumState<Arc<Approvals>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Response {
    decide(a, headers, id, raw, "approve").await
}

async fn deny(
    AxumState(a): AxumState<Arc<Approvals>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Response {
    decide(a, headers, id, raw, "deny").await
}

async fn revoke(
    AxumState(a): AxumState<Arc<Approvals>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Response {
    decide(a, headers, id, raw, "revoke").await
}

pub fn router(approvals: Arc<Approvals>) -> axum::Router {
    axum::Router::new()
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/approvals/{id}/revoke", post(revoke))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(approvals)
}
