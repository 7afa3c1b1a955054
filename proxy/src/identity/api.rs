//! The agents' HTTP API: just-in-time credentials.
//!
//! ```text
//! POST   /v1/credentials          Authorization: Bearer <jwt>
//!        {"target": "orders", "ttl_secs": 600, "plugin": "mysql_native_password"}
//!   201  {"user": "jit_…", "password": "…", "target": "orders",
//!         "plugin": "caching_sha2_password", "expires_at": 1700000000}
//! DELETE /v1/credentials/{user}   Authorization: Bearer <jwt of the same identity>
//!   204
//! ```
//!
//! Served on `[api] listen`, over TLS with the gateway's certificate when `[tls]`
//! is configured (plain HTTP is only accepted on a loopback address). Refusal
//! reasons go to the log; the client gets a short, generic answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Json;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::jit::{JitError, JitStore};
use super::WorkloadIdentity;
use chaperone_mysql::protocol::handshake::{CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};

/// What the API needs.
#[derive(Clone)]
pub struct ApiState {
    pub workload: Arc<WorkloadIdentity>,
    pub jit: Arc<JitStore>,
    pub default_ttl_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    target: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    plugin: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <OIDC token>)",
    );
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The request's `Authorization: Bearer` token (any case of the scheme).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    use headers::authorization::{Authorization, Bearer};
    use headers::HeaderMapExt;
    headers
        .typed_get::<Authorization<Bearer>>()
        .map(|a| a.token().to_string())
        .filter(|t| !t.is_empty())
}

async fn mint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let req: MintRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("body must be JSON {{\"target\": \"...\", \"ttl_secs\": N, \"plugin\": \"...\"}}: {e}"),
            )
        }
    };
    let plugin = match req.plugin.as_deref() {
        None | Some(CACHING_SHA2_PASSWORD) => CACHING_SHA2_PASSWORD,
        Some(NATIVE_PASSWORD) => NATIVE_PASSWORD,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "plugin must be caching_sha2_password or mysql_native_password",
            )
        }
    };
    let (identity, grant) = match state.workload.login(token.as_bytes(), &req.target).await {
        Ok(v) => v,
        Err(super::Refusal::Token(e)) => {
            warn!(reason = %e, "credentials API: token refused");
            return unauthorized();
        }
        Err(refusal) => {
            warn!(reason = %refusal, "credentials API: target not granted");
            return error(
                StatusCode::FORBIDDEN,
                "no role grants this identity the requested target",
            );
        }
    };
    let ttl = req.ttl_secs.unwrap_or(state.default_ttl_secs);
    match state.jit.mint(&identity, grant, ttl, plugin) {
        Ok(minted) => {
            info!(
                user = %minted.user,
                identity = %identity.subject,
                issuer = %identity.issuer,
                target = %minted.target,
                expires_at = minted.expires_at,
                "just-in-time credentials minted"
            );
            (StatusCode::CREATED, Json(minted)).into_response()
        }
        Err(e @ JitError::TooMany(_)) => error(StatusCode::TOO_MANY_REQUESTS, &e.to_string()),
        Err(e) => {
            warn!(error = %e, "credentials API: cannot store credentials");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "credentials cannot be stored right now; retry later",
            )
        }
    }
}

async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let verified = match state.workload.validator().validate(token.as_bytes()).await {
        Ok(v) => v,
        Err(e) => {
            warn!(reason = %e, "credentials API: token refused");
            return unauthorized();
        }
    };
    let identity = super::identity_of(&verified, None);
    match state.jit.revoke(&identity, &user) {
        Ok(()) => {
            info!(%user, identity = %identity.subject, "just-in-time credentials revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(JitError::NotFound) => {
            warn!(%user, identity = %identity.subject, "revoke: no such credentials for this identity");
            error(
                StatusCode::NOT_FOUND,
                "no such credentials for this identity",
            )
        }
        Err(e) => {
            warn!(error = %e, "credentials API: cannot store credentials");
            error(StatusCode::SERVICE_UNAVAILABLE, "retry later")
        }
    }
}

pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/v1/credentials", post(mint))
        .route("/v1/credentials/{user}", delete(revoke))
        // Requests are small; tokens are capped by the validator as well.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Serves the API on `addr` until `shutdown` completes; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    serve_router(addr, router(state), tls, shutdown).await
}

/// Serves `app` (the credentials API, the approvals API, or both) on `addr`.
pub async fn serve_router(
    addr: SocketAddr,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    match tls {
        None => {
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await;
            });
        }
        Some(acceptor) => {
            let tls_listener = TlsListener::start(listener, acceptor);
            tokio::spawn(async move {
                let _ = axum::serve(tls_listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await;
            });
        }
    }
    Ok(local)
}

/// A TLS listener for axum: handshakes run in their own tasks (bounded in time),
/// so a slow client cannot hold up the others.
struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
}

impl TlsListener {
    fn start(listener: tokio::net::TcpListener, acceptor: TlsAcceptor) -> Self {
        let local = listener.local_addr().expect("bound listener");
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        let _ = tx.send((stream, peer)).await;
                    }
                });
            }
        });
        TlsListener { local, ready }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop never ends while the receiver lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Starts the API when `[api]` is configured and tokens and JIT credentials are
/// enabled; over TLS when the gateway has `[tls]`. Returns the bound address.
pub async fn start(
    shared: &crate::server::Shared,
    auth: &super::GatewayAuthenticator,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(api) = &shared.config.api else {
        return Ok(None);
    };
    let mut app = axum::Router::new();
    let mut served = Vec::new();
    match (auth.workload(), auth.jit()) {
        (Some(workload), Some(jit)) => {
            app = app.merge(router(ApiState {
                workload: workload.clone(),
                jit: jit.clone(),
                default_ttl_secs: shared.config.jit.default_ttl_secs,
            }));
            served.push("credentials");
        }
        _ => warn!("[api] is configured but token login ([issuers.*]) or [jit] is not: the credentials API is off"),
    }
    // The approvals API (guardrails) lives beside the credentials API.
    if let Some(approvals) = shared.guardrails.approvals() {
        app = app.merge(crate::guardrails::api::router(approvals.clone()));
        served.push("approvals");
    }
    if served.is_empty() {
        return Ok(None);
    }
    let local = serve_router(api.listen, app, shared.tls.clone(), shutdown).await?;
    let scheme = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(approvals) = shared.guardrails.approvals() {
        approvals.set_api_base(format!("{scheme}://{local}"));
    }
    info!(%local, tls = shared.tls.is_some(), apis = ?served, "API listening");
    Ok(Some(local))
}

#[cfg(test)]
mod bearer_tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            value.parse().expect("header value"),
        );
        h
    }

    #[test]
    fn the_scheme_is_read_in_any_case() {
        assert_eq!(bearer(&with("Bearer abc.def")).as_deref(), Some("abc.def"));
        assert_eq!(bearer(&with("bearer abc.def")).as_deref(), Some("abc.def"));
        assert_eq!(bearer(&with("BEARER abc")).as_deref(), Some("abc"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
