//! The Chaperone audit service: an HTTP API and a web UI over the archive.
//!
//! Auditors ask "who touched `billing.invoices` last week?", open an agent's
//! session and step through it, compare two runs, and run read-only SQL. All of
//! it goes through the archive's DataFusion catalog (`chaperone_catalog`)
//! and the replayer's session loading and diff engine: one implementation each.
//!
//! - [`api`]: the JSON API (documented in `query-ui/openapi.yaml`);
//! - [`pages`]: the server-rendered web UI (no front-end build chain);
//! - [`access`]: who may call it, and the access log (who looked at the audit
//!   trail is audit data too);
//! - [`login`]: people's web login (OIDC) and their browser sessions;
//! - [`inbox`]: the approvers' inbox of held statements (guardrails);
//! - [`live`]: running sessions, polled by the sessions list.
//! - [`export`]: exports of a selection with a verifiable manifest (the engine of
//!   `POST /api/exports` and `chaperone export`);
//! - [`metrics`]: the service's Prometheus metrics on `/metrics`.

pub mod access;
pub mod api;
pub mod config;
pub mod export;
pub mod export_api;
pub mod html;
pub mod inbox;
pub mod live;
pub mod login;
pub mod metrics;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use chaperone_catalog::{Catalog, CatalogOptions};

pub use config::UiConfig;

/// Errors while starting the service.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("[ui]: {0}")]
    Config(String),
    #[error("opening the archive: {0}")]
    Catalog(#[from] chaperone_catalog::CatalogError),
    #[error("opening the archive for sessions: {0}")]
    Archive(#[from] chaperone_replayer::archive::ArchiveError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every request handler shares.
pub struct AppState {
    pub config: UiConfig,
    pub catalog: Catalog,
    pub sessions: chaperone_replayer::archive::Archive,
    /// People's web login (`[ui.login]`).
    pub login: Option<login::Login>,
    /// The gateway's approvals, when the service runs in the gateway's process
    /// ([`AppState::attach_approvals`]): the inbox decides through them.
    pub approvals: std::sync::OnceLock<Arc<chaperone_approvals::Approvals>>,
    pub metrics: metrics::UiMetrics,
    pub exports: export::Exports,
    /// Where API exports are written (`export_dir`, one directory each).
    pub export_root: std::path::PathBuf,
    /// The key export manifests are signed with ([`AppState::attach_export_key`]:
    /// the archive's signing key in the gateway); without one, no exports.
    pub export_key: std::sync::OnceLock<ed25519_dalek::SigningKey>,
}

impl AppState {
    /// Gives the inbox the gateway's approvals (the same store, approvers and
    /// rules as the API and the CLI).
    pub fn attach_approvals(&self, approvals: Arc<chaperone_approvals::Approvals>) {
        let _ = self.approvals.set(approvals);
    }

    /// Gives exports their signing key.
    pub fn attach_export_key(&self, key: ed25519_dalek::SigningKey) {
        let _ = self.export_key.set(key);
    }
}

/// Opens the archive at `location` and builds the service's state.
pub async fn open(
    config: UiConfig,
    location: &str,
    store_options: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<AppState>, UiError> {
    let catalog = Catalog::open_location(
        location,
        store_options,
        CatalogOptions {
            list_cache_ttl: std::time::Duration::from_secs(2),
            memory_limit: Some(config.memory_limit_mb.saturating_mul(1 << 20)),
            ..CatalogOptions::default()
        },
    )
    .await?;
    let sessions = chaperone_replayer::archive::Archive::open(location).await?;
    let login = match &config.login {
        Some(c) => Some(login::Login::start(c).await?),
        None => None,
    };
    let export_root = config
        .export_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("chaperone-exports"));
    Ok(Arc::new(AppState {
        config,
        catalog,
        sessions,
        login,
        approvals: std::sync::OnceLock::new(),
        metrics: metrics::UiMetrics::new(),
        exports: export::Exports::default(),
        export_root,
        export_key: std::sync::OnceLock::new(),
    }))
}

/// The whole service: API, pages, health, behind the access layer.
pub fn router(state: Arc<AppState>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .merge(inbox::routes())
        .merge(live::routes())
        .merge(export_api::routes())
        .route("/metrics", get(metrics::scrape))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ))
        .merge(login::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        // Outermost: counts refused (401) requests too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Serves until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), UiError> {
    let addr = state.config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| UiError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| UiError::Bind { addr, source })?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        {
            tracing::error!(error = %e, "audit service failed");
        }
    });
    Ok((local, task))
}
