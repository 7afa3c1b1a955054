//! The export routes of the JSON API: start an export, poll it, download its
//! files. The work is [`crate::export::run_export`], in a background task.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::access::Principal;
use crate::api::ApiError;
use crate::export::{self, ExportRequest, JobState};
use crate::AppState;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/api/exports", get(list).post(start))
        .route("/api/exports/{id}", get(status))
        .route("/api/exports/{id}/files/{name}", get(download))
}

/// `POST /api/exports`: starts an export; answers 202 with its id at once.
async fn start(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Json(request): Json<ExportRequest>,
) -> Result<Response, ApiError> {
    for t in &request.selection.tables {
        if chaperone_schemas::Table::from_name(t).is_none() {
            return Err(ApiError::bad_request(format!(
                "tables: {t:?} is not an archive table (sessions, statements, frames)"
            )));
        }
    }
    // Exports are signed: an unsigned manifest proves nothing once it leaves.
    let Some(key) = state.export_key.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "exports are signed and this service has no signing key \
             (`chaperone ui --signing-key-file`, or the gateway's [archive] key)",
        ));
    };
    let exporter = export::Exporter {
        name: principal.name.clone(),
        authenticated_by: principal.via.to_string(),
        host: None,
    };
    let job = state.exports.create(&state.export_root, request, exporter);
    crate::access::record(
        &principal,
        "export started",
        &format!(
            "{} {}",
            job.id,
            serde_json::to_string(&job.request).unwrap_or_default()
        ),
    );
    state.metrics.export("started");
    let task_state = state.clone();
    let task_job = job.clone();
    tokio::spawn(async move {
        let (state, job) = (task_state, task_job);
        let result = export::run_export(
            &state.catalog,
            &job.request,
            &job.dir,
            job.progress.clone(),
            &job.created_by,
            &key,
        )
        .await;
        let new_state = match result {
            Ok(manifest) => {
                state.metrics.export("completed");
                state
                    .metrics
                    .export_rows_total
                    .inc_by(manifest.files.iter().map(|f| f.rows).sum());
                state
                    .metrics
                    .export_bytes_total
                    .inc_by(manifest.files.iter().map(|f| f.bytes).sum());
                crate::access::record(
                    &principal,
                    "export completed",
                    &format!(
                        "{} rows {:?} files {}",
                        job.id,
                        manifest.rows,
                        manifest
                            .files
                            .iter()
                            .map(|f| format!("{} sha256:{}", f.name, f.sha256))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                JobState::Done(Box::new(manifest))
            }
            Err(e) => {
                state.metrics.export("failed");
                tracing::warn!(id = %job.id, error = %e, "export failed");
                JobState::Failed(e.to_string())
            }
        };
        *job.state.lock().expect("export state lock") = new_state;
    });
    let id = job.id.clone();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/exports/{id}"))],
        Json(json!({ "id": id, "status": format!("/api/exports/{id}") })),
    )
        .into_response())
}

/// `GET /api/exports`: the exports of this process, oldest first.
async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let exports: Vec<Value> = state.exports.list().iter().map(|j| j.status()).collect();
    Json(json!({ "exports": exports }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no export {id}"))
}

/// `GET /api/exports/{id}`: state, rows and bytes written so far, files when done.
async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = state.exports.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(job.status()))
}

/// `GET /api/exports/{id}/files/{name}`: one file of a finished export
/// (`manifest.json` or a listed data file), streamed.
async fn download(
    State(state): State<Arc<AppState>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = state.exports.get(&id).ok_or_else(|| not_found(&id))?;
    let listed = match &*job.state.lock().expect("export state lock") {
        JobState::Done(m) => {
            name == export::MANIFEST_FILE || m.files.iter().any(|f| f.name == name)
        }
        JobState::Running => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("export {id} is still running: poll /api/exports/{id}"),
            ))
        }
        JobState::Failed(e) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("export {id} failed: {e}"),
            ))
        }
    };
    // Only names the manifest lists: never a path from the request.
    if !listed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("export {id} has no file {name:?}"),
        ));
    }
    let path = job.dir.join(&name);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("export {id}: {name}: {e}"),
        )
    })?;
    let content_type = match name.rsplit('.').next() {
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("jsonl") => "application/x-ndjson",
        _ => "application/vnd.apache.parquet",
    };
    let chunks = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
