//! Prometheus metrics of the gateway, and the admin HTTP endpoint that serves them
//! with the health checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

/// Every metric the gateway exports.
pub struct Metrics {
    /// Locked to add collectors after start (the archive recorder's) and to
    /// encode a scrape; never on the data path.
    registry: Mutex<Registry>,
    pub connections_total: Counter,
    pub connections_active: Gauge,
    pub commands_total: Family<CommandLabels, Counter>,
    pub command_duration_seconds: Histogram,
    pub bytes_total: Family<DirectionLabels, Counter>,
    pub errors_total: Family<ErrorLabels, Counter>,
    pub upstream_connect_failures_total: Counter,
    pub auth_failures_total: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chaperone");
        let m = Metrics {
            connections_total: Counter::default(),
            connections_active: Gauge::default(),
            commands_total: Family::default(),
            command_duration_seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            bytes_total: Family::default(),
            errors_total: Family::default(),
            upstream_connect_failures_total: Counter::default(),
            auth_failures_total: Counter::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "connections",
            "Client connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_active",
            "Client connections open now",
            m.connections_active.clone(),
        );
        registry.register(
            "commands",
            "Commands received, by command",
            m.commands_total.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "Time from a command's arrival to the end of its response",
            m.command_duration_seconds.clone(),
        );
        registry.register(
            "bytes",
            "Payload bytes relayed, by direction",
            m.bytes_total.clone(),
        );
        registry.register(
            "errors",
            "Errors, by kind (protocol, upstream, auth, refused, tap)",
            m.errors_total.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Failed connections to a target database",
            m.upstream_connect_failures_total.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed client authentications",
            m.auth_failures_total.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// Adds metrics that another component computes at each scrape (the archive
    /// recorder's spool and upload state), under the same `chaperone_` prefix.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register_collector(collector);
    }

    pub fn error(&self, kind: &'static str) {
        self.errors_total.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (accepting
/// connections, and the tap's recording keeps up) until `shutdown` resolves.
pub async fn serve_admin(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    tap: Arc<dyn chaperone_schemas::tap::Tap>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                let health = tap.health();
                async move {
                    match (ready, health) {
                        (true, Ok(())) => (StatusCode::OK, "ready\n".to_string()),
                        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
                        (true, Err(why)) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaperone_schemas::tap::{Tap, TapError};
    use chaperone_schemas::TapEvent;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tap whose recording does not keep up (as a stuck archive upload).
    struct Stuck(Mutex<Option<String>>);

    impl Tap for Stuck {
        fn record_request(&self, _event: TapEvent) -> Result<(), TapError> {
            Ok(())
        }
        fn record(&self, _event: TapEvent) {}
        fn health(&self) -> Result<(), String> {
            match self.0.lock().unwrap().clone() {
                Some(why) => Err(why),
                None => Ok(()),
            }
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn readyz_fails_with_the_reason_while_the_tap_is_unhealthy() {
        let tap = Arc::new(Stuck(Mutex::new(Some("archive uploads stuck".into()))));
        let ready = Arc::new(AtomicBool::new(true));
        let addr = serve_admin(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new()),
            ready.clone(),
            tap.clone(),
            std::future::pending(),
        )
        .await
        .unwrap();
        let answer = get(addr, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.0 503"), "{answer}");
        assert!(
            answer.ends_with("not ready: archive uploads stuck\n"),
            "{answer}"
        );
        *tap.0.lock().unwrap() = None;
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.0 200"));
        ready.store(false, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.0 503"));
    }
}
