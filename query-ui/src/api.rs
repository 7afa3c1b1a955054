//! The JSON API. Every route is listed in `query-ui/openapi.yaml`; a test checks
//! the server against it.

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use chaperone_catalog::{quote, sessions_sql, SessionFilter};
use chaperone_replayer::archive::SessionSource;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::AppState;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/api/sql", post(sql))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{id}", get(session))
        .route("/api/sessions/{id}/frames", get(frames))
        .route("/api/sessions/{id}/result", get(result))
        .route("/api/tables/{table}/history", get(table_history))
        .route("/api/diff", get(diff))
}

/// An API error: a status and a message that says what to do.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(status, msg.into())
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// A query's result: the columns in the query's order (the SELECT order), and
/// the rows as JSON objects with every column present (SQL NULL as `null`).
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Value>,
}

/// Runs an archive query with the service's time and row limits. Returns the
/// rows as JSON objects and whether the row limit cut the result.
pub async fn run_query(state: &AppState, sql: &str) -> Result<(Vec<Value>, bool), ApiError> {
    let (rows, truncated) = run_query_columns(state, sql).await?;
    Ok((rows.rows, truncated))
}

/// [`run_query`] with the result's columns, in order.
pub async fn run_query_columns(state: &AppState, sql: &str) -> Result<(Rows, bool), ApiError> {
    let (columns, batches, truncated) = collect_limited(state, sql).await?;
    Ok((
        Rows {
            columns,
            rows: batches_to_json(&batches)?,
        },
        truncated,
    ))
}

/// Why a query did not plan, in words that say what to do. Only the catalog's
/// own refusals (writes, DDL, statements, files, unknown tables) are
/// "refused"; a mistyped function or column is the query's mistake.
fn plan_failed(state: &AppState, e: chaperone_catalog::CatalogError) -> ApiError {
    use crate::metrics::sql_outcome;
    let text = e.to_string();
    let refused =
        text.contains("not supported") || (text.contains("table") && text.contains("not found"));
    if refused {
        state.metrics.sql(sql_outcome::REFUSED);
        return bad_request(format!(
            "refused: the SQL endpoint only reads the archive's tables and views \
             (no writes, DDL, COPY or files): {e}"
        ));
    }
    state.metrics.sql(sql_outcome::FAILED);
    if text.contains("Invalid function") {
        return bad_request(format!(
            "unknown function: the archive's SQL has DataFusion's functions and the JSON \
             functions (json_get_str(claims, 'team'), json_get, json_contains, ...; \
             SHOW FUNCTIONS lists them all): {e}"
        ));
    }
    bad_request(format!("the query does not plan: {e}"))
}

async fn collect_limited(
    state: &AppState,
    sql: &str,
) -> Result<(Vec<String>, Vec<RecordBatch>, bool), ApiError> {
    use crate::metrics::sql_outcome;
    let max = state.config.max_rows;
    let timeout = Duration::from_secs(state.config.query_timeout_secs);
    let work = async {
        let df = state
            .catalog
            .sql(sql)
            .await
            .map_err(|e| plan_failed(state, e))?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let df = df.limit(0, Some(max + 1)).map_err(|e| {
            state.metrics.sql(sql_outcome::REFUSED);
            bad_request(e.to_string())
        })?;
        df.collect()
            .await
            .map(|b| (columns, b))
            .map_err(|e| query_failed(state, chaperone_catalog::CatalogError::from(e)))
    };
    let (columns, mut batches) = tokio::time::timeout(timeout, work).await.map_err(|_| {
        state.metrics.sql(sql_outcome::TIME_LIMITED);
        ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the query ran longer than {}s (query_timeout_secs): narrow it, e.g. with a date = '...' filter",
                timeout.as_secs()
            ),
        )
    })??;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let truncated = rows > max;
    if truncated {
        state.metrics.sql(sql_outcome::ROW_LIMITED);
        // Drop the extra row.
        let mut keep = max;
        for b in batches.iter_mut() {
            let n = b.num_rows().min(keep);
            *b = b.slice(0, n);
            keep -= n;
        }
    } else {
        state.metrics.sql(sql_outcome::OK);
    }
    Ok((columns, batches, truncated))
}

/// The API error (and metric) of a query that failed while running: the
/// memory limit gets its own status and advice.
pub fn query_failed(state: &AppState, e: chaperone_catalog::CatalogError) -> ApiError {
    use crate::metrics::sql_outcome;
    if is_memory_limit(&e) {
        state.metrics.sql(sql_outcome::MEMORY_LIMITED);
        return ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the query needed more than {} MiB of memory (memory_limit_mb, shared by \
                 running queries): filter by date, aggregate less or add a LIMIT ({e})",
                state.config.memory_limit_mb
            ),
        );
    }
    state.metrics.sql(sql_outcome::FAILED);
    bad_request(e.to_string())
}

/// Whether a query failed on the catalog's memory pool.
fn is_memory_limit(e: &chaperone_catalog::CatalogError) -> bool {
    match e {
        chaperone_catalog::CatalogError::Query(df) => matches!(
            df.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        ),
        _ => false,
    }
}

fn batches_to_json(batches: &[RecordBatch]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    {
        // Nulls written out: a client (and the pages) sees every column of
        // every row, not only those that happen to have a value.
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut out);
        for b in batches {
            writer
                .write(b)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
        writer
            .finish()
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    /// `json` (default) or `csv`.
    #[serde(default)]
    format: Option<String>,
}

/// `POST /api/sql`: read-only SQL over `sessions`, `statements`, `frames` and
/// the views. DDL, DML and statements are refused by the catalog.
async fn sql(
    State(state): State<Arc<AppState>>,
    Json(req): Json<SqlRequest>,
) -> Result<Response, ApiError> {
    if req.sql.len() > 100_000 {
        return Err(bad_request("the query is longer than 100,000 characters"));
    }
    match req.format.as_deref().unwrap_or("json") {
        "json" => {
            let (rows, truncated) = run_query_columns(&state, &req.sql).await?;
            Ok(Json(json!({
                "columns": rows.columns,
                "rows": rows.rows,
                "truncated": truncated
            }))
            .into_response())
        }
        "csv" => {
            let (_, batches, truncated) = collect_limited(&state, &req.sql).await?;
            let text = chaperone_catalog::render(&batches, chaperone_catalog::Format::Csv)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::HeaderName::from_static("x-chaperone-truncated"),
                        if truncated { "true" } else { "false" },
                    ),
                ],
                text,
            )
                .into_response())
        }
        other => Err(bad_request(format!("format {other:?}: use json or csv"))),
    }
}

#[derive(Deserialize, Default)]
pub struct SessionQuery {
    pub agent: Option<String>,
    pub table: Option<String>,
    /// `24h`, `7d`, a date or an RFC 3339 time.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

impl SessionQuery {
    pub fn filter(&self) -> Result<SessionFilter, ApiError> {
        let since_ns = match self.since.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                chaperone_archive::since::parse_since(s, chaperone_schemas::event::now_ns())
                    .map_err(|e| bad_request(format!("since: {e}")))?,
            ),
            None => None,
        };
        Ok(SessionFilter {
            agent: self.agent.clone().filter(|s| !s.is_empty()),
            table: self.table.clone().filter(|s| !s.is_empty()),
            since_ns,
            limit: self.limit.unwrap_or(100).min(1000),
        })
    }
}

/// `GET /api/sessions`: search by agent, table and time.
async fn sessions(
    State(state): State<Arc<AppState>>,
    Query(q): Query<SessionQuery>,
) -> Result<Json<Value>, ApiError> {
    let (rows, truncated) = search_sessions(&state, &q.filter()?).await?;
    Ok(Json(json!({ "sessions": rows, "truncated": truncated })))
}

/// Session search, newest first, asked in growing time windows (the last day,
/// week, month, then the whole requested range) until one fills the page.
///
/// Only the newest `limit` sessions are shown, and a session's statements come
/// after its start: the sessions started in the last day that match are the
/// newest matches overall, so when they fill the page, older partitions are
/// never read. A search for a busy table or agent reads one day instead of the
/// whole range; a search with few matches reads the range once more at worst
/// (the windows overlap), which is cheap next to the full scan it needs anyway.
pub async fn search_sessions(
    state: &AppState,
    filter: &SessionFilter,
) -> Result<(Vec<Value>, bool), ApiError> {
    const DAY_NS: i64 = 86_400_000_000_000;
    let now = chaperone_schemas::event::now_ns();
    for days in [1, 7, 31] {
        let window_start = now - days * DAY_NS;
        if filter.since_ns.is_some_and(|since| since >= window_start) {
            break;
        }
        let window = SessionFilter {
            since_ns: Some(window_start),
            ..filter.clone()
        };
        let (rows, truncated) = run_query(state, &sessions_sql(&window)).await?;
        if rows.len() >= filter.limit.max(1) {
            return Ok((rows, truncated));
        }
    }
    run_query(state, &sessions_sql(filter)).await
}

#[derive(Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// The columns of a statement shown by the API and the UI: when, what, its
/// result (rows or the error, so that a failed row says why on screen), then
/// the details.
pub const STATEMENT_COLUMNS: &str =
    "command_index, started_at, duration_us, command, sql, params, \
     verdict, rows_returned, rows_affected, error_code, error_message, warnings, statement_class, \
     tables_read, tables_written, result_columns, result_hash, masked_columns";

/// A session's `session_list` row (columns in the view's order) with the
/// start row's `claims` (parsed), `client_name` and `client_version` added.
pub async fn session_info(state: &AppState, id: &str) -> Result<Option<Rows>, ApiError> {
    let (mut found, _) = run_query_columns(state, &chaperone_catalog::session_sql(id)).await?;
    let Some(mut info) = found.rows.pop() else {
        return Ok(None);
    };
    // The start row is in the session's own partition: read only that hour.
    let partition = ["date", "hour"]
        .iter()
        .filter_map(|c| {
            info[*c]
                .as_str()
                .map(|v| format!(" AND {c} = {}", quote(v)))
        })
        .collect::<String>();
    let (start, _) = run_query(
        state,
        &format!(
            "SELECT claims, client_name, client_version FROM sessions \
             WHERE session_id = {} AND event = 'start'{partition} LIMIT 1",
            quote(id)
        ),
    )
    .await?;
    let start = start.into_iter().next().unwrap_or(Value::Null);
    if let Value::Object(map) = &mut info {
        let claims = start["claims"]
            .as_str()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .unwrap_or(Value::Null);
        map.insert("claims".into(), claims);
        for c in ["client_name", "client_version"] {
            map.insert(c.into(), start[c].clone());
        }
    }
    found
        .columns
        .extend(["claims", "client_name", "client_version"].map(String::from));
    Ok(Some(Rows {
        columns: found.columns,
        rows: vec![info],
    }))
}

/// `GET /api/sessions/{id}`: the session's identity and one page of its statements.
async fn session(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let Some(mut info) = session_info(&state, &id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session {id} in the archive"),
        ));
    };
    let info = info.rows.pop().unwrap_or(Value::Null);
    let offset = page.offset.unwrap_or(0);
    let limit = page.limit.unwrap_or(200).min(2000);
    // A session's statements are in its start day's partition or later: days
    // before it are not even listed.
    let from_date = info["date"]
        .as_str()
        .map(|d| format!(" AND date >= {}", quote(d)))
        .unwrap_or_default();
    let (statements, _) = run_query(
        &state,
        &format!(
            "SELECT {STATEMENT_COLUMNS} FROM statements WHERE session_id = {}{from_date} \
             ORDER BY command_index LIMIT {limit} OFFSET {offset}",
            quote(&id)
        ),
    )
    .await?;
    Ok(Json(
        json!({ "session": info, "statements": statements, "offset": offset, "limit": limit }),
    ))
}

#[derive(Deserialize)]
struct FramesQuery {
    command_index: i64,
}

/// The recorded frames of one command of a session.
async fn command_frames(
    state: &AppState,
    id: &str,
    command_index: i64,
) -> Result<Vec<chaperone_replayer::model::Frame>, ApiError> {
    state
        .sessions
        .frames(id, command_index)
        .await
        .map_err(|e| bad_request(e.to_string()))
}

/// `GET /api/sessions/{id}/frames?command_index=N`: the frames of one command,
/// payloads in base64, for faithful replay.
async fn frames(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FramesQuery>,
) -> Result<Json<Value>, ApiError> {
    use base64::Engine as _;
    let frames = command_frames(&state, &id, q.command_index).await?;
    let frames: Vec<Value> = frames
        .iter()
        .map(|f| {
            json!({
                "seq": f.seq,
                "direction": f.direction,
                "payload_base64": base64::engine::general_purpose::STANDARD.encode(&f.payload),
            })
        })
        .collect();
    Ok(Json(
        json!({ "session_id": id, "command_index": q.command_index, "frames": frames }),
    ))
}

/// `GET /api/sessions/{id}/result?command_index=N`: the result the client saw,
/// decoded from the recorded frames (what the terminal player shows).
async fn result(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FramesQuery>,
) -> Result<Json<Value>, ApiError> {
    let frames = command_frames(&state, &id, q.command_index).await?;
    let decoded = chaperone_replayer::decode::decode(&frames);
    Ok(Json(json!({
        "session_id": id,
        "command_index": q.command_index,
        "results": decoded.results,
        "capped": decoded.capped,
        "problem": decoded.problem,
    })))
}

#[derive(Deserialize)]
struct HistoryQuery {
    since: Option<String>,
    limit: Option<usize>,
}

/// The SQL of a table's history: every statement that read or wrote it.
pub fn table_history_sql(table: &str, since_ns: Option<i64>, limit: usize) -> String {
    use chaperone_catalog::{date_filter, timestamp_literal};
    let mut conditions = vec![if table.contains('.') {
        format!("table_name = {}", quote(table))
    } else {
        format!(
            "(table_name = {0} OR table_name LIKE {1})",
            quote(table),
            quote(&format!("%.{table}"))
        )
    }];
    if let Some(since) = since_ns {
        conditions.push(date_filter(since));
        conditions.push(format!("started_at >= {}", timestamp_literal(since)));
    }
    format!(
        "SELECT started_at, access, table_name, subject, display_name, role, statement_class, \
                sql, rows_affected, rows_returned, verdict, error_code, error_message, target, \
                session_id, command_index \
         FROM table_access WHERE {} ORDER BY started_at DESC LIMIT {}",
        conditions.join(" AND "),
        limit.clamp(1, 5000)
    )
}

/// `GET /api/tables/{table}/history`: who read or wrote a table, and when.
async fn table_history(
    State(state): State<Arc<AppState>>,
    Path(table): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = SessionQuery {
        since: q.since.clone(),
        ..Default::default()
    }
    .filter()?
    .since_ns;
    let (rows, truncated) = run_query(
        &state,
        &table_history_sql(&table, since, q.limit.unwrap_or(500)),
    )
    .await?;
    Ok(Json(
        json!({ "table": table, "accesses": rows, "truncated": truncated }),
    ))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    pub a: String,
    pub b: String,
}

/// Diffs two sessions with the replayer's engine (the one `chaperone diff` uses).
pub async fn diff_sessions(
    state: &AppState,
    a: &str,
    b: &str,
) -> Result<chaperone_replayer::diff::Diff, ApiError> {
    let load = |id: String| async move {
        state
            .sessions
            .statements(&id)
            .await
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
    };
    let sa = load(a.to_string()).await?;
    let sb = load(b.to_string()).await?;
    Ok(chaperone_replayer::diff::diff(a, &sa, b, &sb))
}

/// `GET /api/diff?a=&b=`.
async fn diff(
    State(state): State<Arc<AppState>>,
    Query(q): Query<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let d = diff_sessions(&state, &q.a, &q.b).await?;
    Ok(Json(serde_json::to_value(&d).map_err(|e| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?))
}
