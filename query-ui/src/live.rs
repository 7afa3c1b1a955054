//! Running sessions, live: `GET /api/sessions/running` (sessions with a start
//! and no end in the archive, with their statements so far) and the panel of
//! the sessions list that polls it. A session shows up once the recorder has
//! sealed the segment with its start (`segment_max_age_ms`), and its count
//! grows as later segments are sealed.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use chaperone_catalog::date_filter;
use serde_json::{json, Value};

use crate::api::{run_query, ApiError};
use crate::AppState;

/// How far back a session may have started and still be shown as running (a
/// gateway that died without recording ends does not leave them forever).
const WINDOW_NS: i64 = 2 * 86_400 * 1_000_000_000;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new().route("/api/sessions/running", get(running))
}

/// The SQL of the running sessions started after `since_ns`.
pub fn running_sql(since_ns: i64) -> String {
    let date = date_filter(since_ns);
    format!(
        "SELECT l.session_id, l.started_at, l.subject, l.display_name, l.role, l.target, \
                l.client_addr, COALESCE(s.statements, 0) AS statements, s.last_statement_at \
         FROM session_list l \
         LEFT JOIN (SELECT session_id, COUNT(*) AS statements, MAX(started_at) AS last_statement_at \
                    FROM statements WHERE {date} GROUP BY session_id) s \
           ON s.session_id = l.session_id \
         WHERE l.ended_at IS NULL AND l.{date} \
         ORDER BY l.started_at DESC, l.session_id LIMIT 200"
    )
}

/// `GET /api/sessions/running`.
async fn running(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let since = chaperone_schemas::event::now_ns() - WINDOW_NS;
    let (rows, _) = run_query(&state, &running_sql(since)).await?;
    Ok(Json(json!({ "sessions": rows })))
}

/// The "Running now" panel of the sessions list: polls every 3 s and renders
/// the rows with `textContent` (recorded values are never parsed as HTML).
pub fn panel() -> &'static str {
    r#"<div class="card" id="running-card"><b><span class="live"></span>Running now</b> <small id="running-status">loading…</small>
<table id="running"><thead><tr><th>Session</th><th>Started</th><th>Agent</th><th>Role</th><th>Target</th><th>Statements so far</th><th>Last statement</th></tr></thead><tbody></tbody></table></div>
<script>
(() => {
  const body = document.querySelector('#running tbody');
  const status = document.getElementById('running-status');
  const cell = (text, href) => {
    const td = document.createElement('td');
    if (href) { const a = document.createElement('a'); a.href = href; a.textContent = text; td.appendChild(a); }
    else td.textContent = text == null ? '' : String(text);
    return td;
  };
  const poll = async () => {
    try {
      const r = await fetch('/api/sessions/running', { credentials: 'same-origin' });
      if (!r.ok) throw new Error(r.status);
      const { sessions } = await r.json();
      body.replaceChildren(...sessions.map(s => {
        const tr = document.createElement('tr');
        tr.append(cell(s.session_id, '/sessions/' + encodeURIComponent(s.session_id)), cell(s.started_at),
          cell(s.display_name || s.subject), cell(s.role), cell(s.target), cell(s.statements), cell(s.last_statement_at));
        return tr;
      }));
      status.textContent = `${sessions.length} running · updated ${new Date().toLocaleTimeString()}`;
    } catch (e) { status.textContent = 'live updates paused (' + e.message + ')'; }
  };
  poll(); setInterval(poll, 3000);
})();
</script>"#
}
