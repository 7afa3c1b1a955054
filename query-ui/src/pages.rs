//! The web UI: server-rendered pages over the same functions as the API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{diff_sessions, run_query, table_history_sql, SessionQuery, STATEMENT_COLUMNS};
use crate::html::{cell, escape, page, table, url_encode};
use crate::AppState;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/", get(sessions_page))
        .route("/sessions/{id}", get(session_page))
        .route("/tables", get(tables_page))
        .route("/diff", get(diff_page))
        .route("/sql", get(sql_page).post(sql_run))
}

fn error_box(e: crate::api::ApiError) -> String {
    let response = axum::response::IntoResponse::into_response(e);
    format!(
        "<p class=\"error\">The archive could not answer ({}).</p>",
        escape(response.status().as_str())
    )
}

fn session_link(column: &str, v: &Value) -> Option<String> {
    match (column, v) {
        ("session_id", Value::String(id)) => Some(format!("/sessions/{}", url_encode(id))),
        _ => None,
    }
}

async fn sessions_page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<SessionQuery>,
) -> Html<String> {
    let form = format!(
        r#"<form method="get" action="/">
<label>Agent <input name="agent" value="{}" placeholder="subject or name"></label>
<label>Table <input name="table" value="{}" placeholder="db.table"></label>
<label>Since <input name="since" value="{}" placeholder="24h, 7d, 2026-11-01"></label>
<button>Search</button></form>"#,
        escape(q.agent.as_deref().unwrap_or("")),
        escape(q.table.as_deref().unwrap_or("")),
        escape(q.since.as_deref().unwrap_or("")),
    );
    let body = match q.filter() {
        Ok(filter) => match run_query(&state, &chaperone_catalog::sessions_sql(&filter)).await {
            Ok((rows, _)) => table(&rows, session_link),
            Err(e) => error_box(e),
        },
        Err(e) => error_box(e),
    };
    Html(page(
        "Sessions",
        &format!(
            "{}{form}{body}<p><small>Newest first.</small></p>",
            crate::live::panel()
        ),
    ))
}

#[derive(Deserialize)]
struct PageQuery {
    offset: Option<usize>,
}

async fn session_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(p): Query<PageQuery>,
) -> Html<String> {
    use chaperone_catalog::quote;
    const PAGE: usize = 500;
    let offset = p.offset.unwrap_or(0);
    let info = run_query(&state, &chaperone_catalog::session_sql(&id)).await;
    let info = match info {
        Ok((rows, _)) if !rows.is_empty() => rows.into_iter().next().expect("non-empty"),
        Ok(_) => {
            return Html(page(
                "Session not found",
                &format!("<p>No session {} in the archive.</p>", escape(&id)),
            ))
        }
        Err(e) => return Html(page("Session", &error_box(e))),
    };
    let mut identity = String::from("<table>");
    if let Value::Object(map) = &info {
        for (k, v) in map {
            identity += &format!("<tr><th>{}</th><td>{}</td></tr>", escape(k), cell(v));
        }
    }
    identity += "</table>";
    let statements = run_query(
        &state,
        &format!(
            "SELECT {STATEMENT_COLUMNS} FROM statements WHERE session_id = {} ORDER BY command_index LIMIT {PAGE} OFFSET {offset}",
            quote(&id)
        ),
    )
    .await;
    let timeline = match statements {
        Ok((rows, _)) => {
            let more = rows.len() == PAGE;
            let mut t = table(&rows, |_, _| None);
            t += "<p>";
            if offset > 0 {
                t += &format!(
                    "<a href=\"?offset={}\">← previous {PAGE}</a> ",
                    offset.saturating_sub(PAGE)
                );
            }
            if more {
                t += &format!("<a href=\"?offset={}\">next {PAGE} →</a>", offset + PAGE);
            }
            t += "</p>";
            t
        }
        Err(e) => error_box(e),
    };
    let player = r#"<form onsubmit="return false">
<button id="play">▶ Play</button><button id="pause">❚❚ Pause</button><button id="prev">◀ Step</button><button id="next">Step ▶</button>
<label>Speed <select id="speed"><option value="2000">0.5×</option><option value="1000" selected>1×</option><option value="250">4×</option><option value="50">20×</option><option value="10">100×</option></select></label>
<span id="pos"></span></form>
<script>
// The timeline comes after the player: wire it once the page is parsed.
addEventListener('DOMContentLoaded', () => {
  const rows = Array.from(document.querySelectorAll('#timeline tbody tr'));
  let i = -1, timer = null;
  const show = (n) => { if (!rows.length) return; rows.forEach(r => r.classList.remove('current'));
    i = Math.max(0, Math.min(rows.length - 1, n)); rows[i].classList.add('current');
    rows[i].scrollIntoView({block: 'center'}); document.getElementById('pos').textContent = `statement ${i + 1} of ${rows.length}`; };
  const stop = () => { clearInterval(timer); timer = null; };
  document.getElementById('next').onclick = () => show(i + 1);
  document.getElementById('prev').onclick = () => show(i - 1);
  document.getElementById('pause').onclick = stop;
  document.getElementById('play').onclick = () => { stop(); timer = setInterval(() => { if (i >= rows.length - 1) stop(); else show(i + 1); }, +document.getElementById('speed').value); };
});
</script>"#;
    Html(page(
        &format!("Session {id}"),
        &format!("<h2>Identity</h2>{identity}<h2>Timeline</h2>{player}<div id=\"timeline\">{timeline}</div>"),
    ))
}

#[derive(Deserialize)]
struct TablesQuery {
    name: Option<String>,
    since: Option<String>,
}

async fn tables_page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TablesQuery>,
) -> Html<String> {
    let name = q.name.clone().unwrap_or_default();
    let form = format!(
        r#"<form method="get" action="/tables"><label>Table <input name="name" value="{}" placeholder="db.table"></label>
<label>Since <input name="since" value="{}" placeholder="7d"></label><button>Who touched it?</button></form>"#,
        escape(&name),
        escape(q.since.as_deref().unwrap_or(""))
    );
    let body = if name.is_empty() {
        String::new()
    } else {
        let since = SessionQuery {
            since: q.since.clone(),
            ..Default::default()
        }
        .filter()
        .map(|f| f.since_ns);
        match since {
            Ok(since) => match run_query(&state, &table_history_sql(&name, since, 1000)).await {
                Ok((rows, _)) => table(&rows, session_link),
                Err(e) => error_box(e),
            },
            Err(e) => error_box(e),
        }
    };
    Html(page("Table history", &format!("{form}{body}")))
}

#[derive(Deserialize)]
struct MaybeDiff {
    a: Option<String>,
    b: Option<String>,
}

async fn diff_page(State(state): State<Arc<AppState>>, Query(q): Query<MaybeDiff>) -> Html<String> {
    let form = format!(
        r#"<form method="get" action="/diff"><label>Session A <input name="a" value="{}" size="34"></label>
<label>Session B <input name="b" value="{}" size="34"></label><button>Compare</button></form>"#,
        escape(q.a.as_deref().unwrap_or("")),
        escape(q.b.as_deref().unwrap_or(""))
    );
    let body = match (q.a, q.b) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            match diff_sessions(&state, &a, &b).await {
                Ok(d) => render_diff(&d),
                Err(e) => error_box(e),
            }
        }
        _ => String::new(),
    };
    Html(page("Diff two sessions", &format!("{form}{body}")))
}

/// Side by side: A on the left, B on the right, aligned by the replayer's engine.
fn render_diff(d: &chaperone_replayer::diff::Diff) -> String {
    use chaperone_replayer::diff::Entry;
    let s = &d.summary;
    let mut out = format!(
        "<p>{} same, <span class=\"changed\">{} changed</span>, <span class=\"only-a\">{} only in A</span>, <span class=\"only-b\">{} only in B</span>.</p>",
        s.same, s.changed, s.only_a, s.only_b
    );
    out += "<table><thead><tr><th>#A</th><th>Session A</th><th>#B</th><th>Session B</th><th>What differs</th></tr></thead><tbody>";
    for e in &d.entries {
        out += &match e {
            Entry::Same { a, b, label } => format!(
                "<tr><td>{a}</td><td>{0}</td><td>{b}</td><td>{0}</td><td></td></tr>",
                escape(label)
            ),
            Entry::Changed { a, b, label, changes } => format!(
                "<tr class=\"changed\"><td>{a}</td><td>{0}</td><td>{b}</td><td>{0}</td><td>{1}</td></tr>",
                escape(label),
                escape(&serde_json::to_string(changes).unwrap_or_default())
            ),
            Entry::OnlyA { a, label } => format!(
                "<tr class=\"only-a\"><td>{a}</td><td>{}</td><td></td><td></td><td>only in A</td></tr>",
                escape(label)
            ),
            Entry::OnlyB { b, label } => format!(
                "<tr class=\"only-b\"><td></td><td></td><td>{b}</td><td>{}</td><td>only in B</td></tr>",
                escape(label)
            ),
        };
    }
    out += "</tbody></table>";
    if !d.tables_only_a.is_empty() || !d.tables_only_b.is_empty() {
        out += &format!(
            "<p>Tables only in A: {} · only in B: {}</p>",
            escape(&d.tables_only_a.join(", ")),
            escape(&d.tables_only_b.join(", "))
        );
    }
    out
}

const EXAMPLES: &[(&str, &str)] = &[
    (
        "Who touched a table (last 30 days)",
        "SELECT subject, access, COUNT(*) AS statements, MAX(started_at) AS last_time\nFROM table_access\nWHERE table_name LIKE '%.customers' AND started_at >= now() - INTERVAL '30 days'\nGROUP BY subject, access ORDER BY statements DESC",
    ),
    (
        "All DDL this week",
        "SELECT started_at, subject, sql FROM statements\nWHERE statement_class = 'ddl' AND started_at >= now() - INTERVAL '7 days'\nORDER BY started_at DESC",
    ),
    (
        "Failed statements per agent",
        "SELECT subject, COUNT(*) AS failures FROM statements\nWHERE error_code IS NOT NULL GROUP BY subject ORDER BY failures DESC",
    ),
];

#[derive(Deserialize)]
struct SqlForm {
    sql: String,
}

async fn sql_page() -> Html<String> {
    Html(page("SQL over the archive", &sql_form("")))
}

fn sql_form(current: &str) -> String {
    let mut examples = String::from("<p>Examples: ");
    for (i, (title, sql)) in EXAMPLES.iter().enumerate() {
        examples += &format!(
            "<a href=\"#\" data-sql=\"{}\" class=\"example\" id=\"example-{i}\">{}</a> · ",
            escape(sql),
            escape(title)
        );
    }
    examples += "</p><script>document.querySelectorAll('.example').forEach(a => a.onclick = (e) => { e.preventDefault(); document.getElementById('sql').value = a.dataset.sql; });</script>";
    format!(
        "{examples}<form method=\"post\" action=\"/sql\" style=\"display:block\"><textarea id=\"sql\" name=\"sql\" rows=\"8\">{}</textarea><br><button>Run (read-only)</button></form><p><small>Tables: sessions, statements, frames; views: session_list, statement_log, table_access.</small></p>",
        escape(current)
    )
}

async fn sql_run(State(state): State<Arc<AppState>>, Form(form): Form<SqlForm>) -> Html<String> {
    let result = match run_query(&state, &form.sql).await {
        Ok((rows, truncated)) => {
            let mut t = table(&rows, session_link);
            if truncated {
                t += "<p>The result was cut at the row limit (max_rows).</p>";
            }
            t
        }
        Err(e) => {
            let response = axum::response::IntoResponse::into_response(e);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap_or_default();
            format!(
                "<p class=\"error\">{}</p>",
                escape(&String::from_utf8_lossy(&body))
            )
        }
    };
    Html(page(
        "SQL over the archive",
        &format!("{}{result}", sql_form(&form.sql)),
    ))
}
