//! Prometheus metrics of the audit service, served on `/metrics` (behind the
//! same access layer as the API: a scraper uses a `[[ui.tokens]]` token).
//!
//! The same approach as the gateway's metrics: one
//! `prometheus-client` registry with the `chaperone_ui` prefix, updated in place
//! and encoded in the OpenMetrics text format on each scrape.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/api/sessions/{id}`), never the raw path: one
    /// series per route, whatever ids are asked for.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// What happened to a SQL query (the `outcome` label of `sql_queries`).
pub mod sql_outcome {
    /// Ran to the end within every limit.
    pub const OK: &str = "ok";
    /// Answered, but the row limit cut the result.
    pub const ROW_LIMITED: &str = "row_limited";
    /// Stopped by the time limit.
    pub const TIME_LIMITED: &str = "time_limited";
    /// Stopped by the memory limit.
    pub const MEMORY_LIMITED: &str = "memory_limited";
    /// Refused before running: writes, DDL, files, unknown functions, bad SQL.
    pub const REFUSED: &str = "refused";
    /// Failed while running for another reason.
    pub const FAILED: &str = "failed";
}

/// Every metric the audit service exports.
pub struct UiMetrics {
    registry: Registry,
    pub requests_total: Family<RequestLabels, Counter>,
    pub request_duration_seconds: Family<RouteLabels, Histogram>,
    pub sql_queries_total: Family<OutcomeLabels, Counter>,
    pub exports_total: Family<OutcomeLabels, Counter>,
    pub export_rows_total: Counter,
    pub export_bytes_total: Counter,
}

impl Default for UiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl UiMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chaperone_ui");
        let request_duration_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let m = UiMetrics {
            requests_total: Family::default(),
            request_duration_seconds,
            sql_queries_total: Family::default(),
            exports_total: Family::default(),
            export_rows_total: Counter::default(),
            export_bytes_total: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "HTTP requests answered, by method, route and status",
            m.requests_total.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer an HTTP request (to the response head; streamed bodies excluded), by route",
            m.request_duration_seconds.clone(),
        );
        registry.register(
            "sql_queries",
            "Archive SQL queries (POST /api/sql and the API's own), by outcome: ok, row_limited, time_limited, memory_limited, refused, failed",
            m.sql_queries_total.clone(),
        );
        registry.register(
            "exports",
            "Exports, by outcome: started, completed, failed",
            m.exports_total.clone(),
        );
        registry.register(
            "export_rows",
            "Rows written by exports",
            m.export_rows_total.clone(),
        );
        registry.register(
            "export_bytes",
            "Bytes written by exports (data files)",
            m.export_bytes_total.clone(),
        );
        UiMetrics { registry, ..m }
    }

    pub fn sql(&self, outcome: &'static str) {
        self.sql_queries_total
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn export(&self, outcome: &'static str) {
        self.exports_total
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Middleware: counts every request by route and status, and times it.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .request_duration_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests_total
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
