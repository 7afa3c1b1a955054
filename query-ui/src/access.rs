//! Who may use the audit service, and the access log.
//!
//! Every request is authenticated (bearer token, or loopback in demo mode) and
//! logged with who made it and what it asked: who looked at the audit trail is
//! audit data too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: String,
}

/// Authenticates the request, logs the access, and passes it on.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let principal = match bearer {
        Some(token) => state.config.tokens.iter().find_map(|t| {
            let value = t.value()?;
            chaperone_proxy::auth::constant_time_eq(value.as_bytes(), token.as_bytes()).then(|| {
                Principal {
                    name: t.name.clone(),
                    role: t.role.clone(),
                }
            })
        }),
        None if state.config.demo_mode && peer.is_some_and(|p| p.ip().is_loopback()) => {
            Some(Principal {
                name: "demo".into(),
                role: "admin".into(),
            })
        }
        None => None,
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let Some(principal) = principal else {
        tracing::warn!(target: "chaperone::access", %method, %uri, peer = ?peer, "audit service: unauthenticated request refused");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "authentication required: send Authorization: Bearer <token> (see [[ui.tokens]])\n",
        )
            .into_response();
    };
    tracing::info!(target: "chaperone::access", who = %principal.name, role = %principal.role, %method, %uri, "audit access");
    let mut request = request;
    request.extensions_mut().insert(principal);
    next.run(request).await
}
