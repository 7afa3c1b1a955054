//! Who may use the audit service, and the access log.
//!
//! Every request is authenticated (a bearer token for automation, a person's
//! web login session ([`crate::login`]), or loopback in demo mode) and logged
//! with who made it and what it asked: who looked at the audit trail is audit
//! data too. Without credentials, pages send the browser to the login page and
//! the API answers 401.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chaperone_web_login::WebRole;

use crate::login::{role_from_name, role_name, WebSession};
use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// A token's name, a person's subject, or `demo`: the access log's `who`.
    pub name: String,
    pub role: String,
    /// How the caller was authenticated: `token`, `web login`, `demo mode`.
    pub via: &'static str,
    /// Set when a person is logged in through the web login.
    pub session: Option<WebSession>,
}

impl Principal {
    /// Roles imply the lesser ones: an admin may do what an approver may.
    pub fn has(&self, role: WebRole) -> bool {
        role_from_name(&self.role).is_some_and(|mine| mine >= role)
    }
}

tokio::task_local! {
    /// The principal of the request being handled, so that the page frame can
    /// show who is logged in without every page passing it along.
    static CURRENT: Principal;
}

/// The principal of the request being handled (None outside a request).
pub fn current() -> Option<Principal> {
    CURRENT.try_with(Principal::clone).ok()
}

/// 403 unless the caller has `role`.
#[allow(clippy::result_large_err)]
pub fn require(principal: &Principal, role: WebRole) -> Result<(), Response> {
    if principal.has(role) {
        return Ok(());
    }
    tracing::warn!(target: "chaperone::access", who = %principal.name, role = %principal.role,
        needed = role_name(role), "audit service: role refused");
    Err((
        StatusCode::FORBIDDEN,
        axum::response::Html(crate::html::page(
            "Not allowed",
            &format!(
                "<p class=\"error\">This page needs the {} role; you are {} ({}).</p>",
                role_name(role),
                crate::html::escape(&principal.name),
                crate::html::escape(&principal.role)
            ),
        )),
    )
        .into_response())
}

/// Authenticates the request, logs the access, and passes it on.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let bearer = {
        use headers::authorization::{Authorization, Bearer};
        use headers::HeaderMapExt;
        request
            .headers()
            .typed_get::<Authorization<Bearer>>()
            .map(|a| a.token().to_string())
    };
    let session = state
        .login
        .as_ref()
        .and_then(|l| l.session(request.headers()));
    let method = request.method().clone();
    let uri = request.uri().clone();
    let principal = match (bearer, session) {
        (Some(token), _) => state.config.tokens.iter().find_map(|t| {
            let value = t.value()?;
            bool::from(subtle::ConstantTimeEq::ct_eq(
                value.as_bytes(),
                token.as_bytes(),
            ))
            .then(|| {
                (
                    Principal {
                        name: t.name.clone(),
                        role: t.role.clone(),
                        via: "token",
                        session: None,
                    },
                    "token",
                )
            })
        }),
        (None, Some(session)) => {
            // The browser sends the cookie with any request, whichever site
            // made it: a state-changing one must come from this UI's pages.
            let safe = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
            let login = state.login.as_ref().expect("a session implies a login");
            if !safe && !login.same_origin(request.headers()) {
                tracing::warn!(target: "chaperone::access", who = %session.subject, %method, %uri,
                    "audit service: cross-origin request with a session cookie refused");
                return (
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused: submit the form from this UI\n",
                )
                    .into_response();
            }
            Some((
                Principal {
                    name: session.subject.clone(),
                    role: role_name(session.role).into(),
                    via: "web login",
                    session: Some(session),
                },
                "web login",
            ))
        }
        (None, None) if state.config.demo_mode && peer.is_some_and(|p| p.ip().is_loopback()) => {
            Some((
                Principal {
                    name: "demo".into(),
                    role: "admin".into(),
                    via: "demo mode",
                    session: None,
                },
                "demo mode",
            ))
        }
        (None, None) => None,
    };
    let Some((principal, via)) = principal else {
        tracing::warn!(target: "chaperone::access", %method, %uri, peer = ?peer, "audit service: unauthenticated request refused");
        if state.login.is_some()
            && method == axum::http::Method::GET
            && !uri.path().starts_with("/api/")
        {
            let next = uri.path_and_query().map_or("/", |p| p.as_str());
            return Redirect::to(&format!("/login?next={}", crate::html::url_encode(next)))
                .into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "authentication required: send Authorization: Bearer <token> (see [[ui.tokens]]), or sign in at /login\n",
        )
            .into_response();
    };
    tracing::info!(target: "chaperone::access", who = %principal.name, role = %principal.role, via,
        session = principal.session.as_ref().map_or("", |s| s.sid.as_str()), %method, %uri, "audit access");
    let mut request = request;
    request.extensions_mut().insert(principal.clone());
    CURRENT.scope(principal, next.run(request)).await
}

/// Records what a principal did beyond the request itself (an export started
/// or finished, with its selection and hashes) in the access log.
pub fn record(principal: &Principal, action: &str, detail: &str) {
    tracing::info!(target: "chaperone::access", who = %principal.name, role = %principal.role, action, detail, "audit access");
}
