//! The web UI: server-rendered pages over the same functions as the API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{
    diff_sessions, run_query_columns, session_info, table_history_sql, SessionQuery,
    STATEMENT_COLUMNS,
};
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

/// The sessions list's columns: when, who, where to, with what, how it ended.
const SESSION_COLUMNS: &[&str] = &[
    "started_at",
    "ended_at",
    "subject",
    "display_name",
    "role",
    "target",
    "client_program",
    "client_addr",
    "commands",
    "end_reason",
    "session_id",
];

/// A session's facts not shown: the partition columns are where the row is
/// stored, not something about the session.
const HIDDEN_SESSION_FACTS: &[&str] = &["date", "hour", "claims"];

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
        Ok(filter) => {
            match run_query_columns(&state, &chaperone_catalog::sessions_sql(&filter)).await {
                Ok((rows, _)) => table(SESSION_COLUMNS, &rows.rows, session_link),
                Err(e) => error_box(e),
            }
        }
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
    let info = match session_info(&state, &id).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            return Html(page(
                "Session not found",
                &format!("<p>No session {} in the archive.</p>", escape(&id)),
            ))
        }
        Err(e) => return Html(page("Session", &error_box(e))),
    };
    let identity = identity_facts(&info);
    let statements = run_query_columns(
        &state,
        &format!(
            "SELECT {STATEMENT_COLUMNS} FROM statements WHERE session_id = {} ORDER BY command_index LIMIT {PAGE} OFFSET {offset}",
            quote(&id)
        ),
    )
    .await;
    let timeline = match statements {
        Ok((rows, _)) => {
            let more = rows.rows.len() == PAGE;
            let mut t = table(&rows.columns, &rows.rows, |_, _| None);
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
    Html(page(
        &format!("Session {id}"),
        &format!(
            "<h2>Identity</h2>{identity}<h2>Timeline</h2>{}<div id=\"timeline\">{timeline}</div>",
            player(&id)
        ),
    ))
}

/// The session's facts in the view's order (partition columns hidden), and
/// its claims as indented JSON.
fn identity_facts(info: &crate::api::Rows) -> String {
    let row = info.rows.first().cloned().unwrap_or(Value::Null);
    let mut out = String::from("<dl class=\"facts\" id=\"identity\">");
    for c in &info.columns {
        if HIDDEN_SESSION_FACTS.contains(&c.as_str()) {
            continue;
        }
        out += &format!(
            "<dt>{}</dt><dd class=\"c-{0}\">{}</dd>",
            escape(c),
            cell(&row[c])
        );
    }
    let claims = match &row["claims"] {
        Value::Null => "<span class=\"empty\">none (a password user of the gateway)</span>".into(),
        Value::Object(m) if m.is_empty() => "<span class=\"empty\">none</span>".to_string(),
        v => format!(
            "<pre class=\"claims\" id=\"claims\">{}</pre>",
            escape(&serde_json::to_string_pretty(v).unwrap_or_default())
        ),
    };
    out += &format!("<dt>claims</dt><dd>{claims}</dd></dl>");
    out
}

/// The player: steps through the timeline and shows each statement's result as
/// the client saw it (decoded from the recorded frames by the API), or its error.
fn player(id: &str) -> String {
    format!(
        r#"<form onsubmit="return false">
<button id="play">▶ Play</button><button id="pause">❚❚ Pause</button><button id="prev">◀ Step</button><button id="next">Step ▶</button>
<label>Speed <select id="speed"><option value="2000">0.5×</option><option value="1000" selected>1×</option><option value="250">4×</option><option value="50">20×</option><option value="10">100×</option></select></label>
<span id="pos"></span></form>
<div class="card result" id="result" data-session="{}"><small>Step or play to see each statement's result as the client saw it.</small></div>
<script>{PLAYER_JS}</script>"#,
        escape(id)
    )
}

/// Everything recorded is attacker-controlled: the result pane is built with
/// `textContent`, never HTML.
const PLAYER_JS: &str = r#"
addEventListener('DOMContentLoaded', () => {
  const rows = Array.from(document.querySelectorAll('#timeline tbody tr'));
  const pane = document.getElementById('result');
  let i = -1, timer = null;
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const cellOf = (row, c) => { const td = row.querySelector('td.c-' + c); return td ? td.textContent : ''; };
  const showResult = async (row) => {
    const index = cellOf(row, 'command_index');
    pane.replaceChildren(el('h3', `#${index} ` + cellOf(row, 'sql').slice(0, 200)));
    const code = cellOf(row, 'error_code');
    if (code) { pane.append(el('p', `error ${code}: ${cellOf(row, 'error_message')}`, 'error')); return; }
    try {
      const r = await fetch(`/api/sessions/${encodeURIComponent(pane.dataset.session)}/result?command_index=${index}`);
      const d = await r.json();
      if (!r.ok) { pane.append(el('p', d.error || r.statusText, 'error')); return; }
      if (d.problem) pane.append(el('p', 'could not decode the recorded result: ' + d.problem, 'error'));
      if (!d.results.length) pane.append(el('p', `OK · ${cellOf(row, 'rows_affected') || 0} rows affected`));
      for (const t of d.results) {
        const table = el('table'); const head = el('tr');
        t.columns.forEach(c => head.append(el('th', c)));
        table.append(head);
        t.rows.slice(0, 50).forEach(cells => { const tr = el('tr'); cells.forEach(v => tr.append(el('td', v === null ? 'NULL' : v))); table.append(tr); });
        pane.append(table);
        pane.append(el('small', `${t.rows.length} rows` + (t.rows.length > 50 ? ' (first 50 shown)' : '') + (d.capped ? ' · capture cap: rows may be missing' : '')));
      }
    } catch (e) { pane.append(el('p', 'result unavailable: ' + e, 'error')); }
  };
  const show = (n) => { if (!rows.length) return; rows.forEach(r => r.classList.remove('current'));
    i = Math.max(0, Math.min(rows.length - 1, n)); rows[i].classList.add('current');
    rows[i].scrollIntoView({block: 'center'}); document.getElementById('pos').textContent = `statement ${i + 1} of ${rows.length}`;
    showResult(rows[i]); };
  const stop = () => { clearInterval(timer); timer = null; };
  document.getElementById('next').onclick = () => show(i + 1);
  document.getElementById('prev').onclick = () => show(i - 1);
  document.getElementById('pause').onclick = stop;
  document.getElementById('play').onclick = () => { stop(); timer = setInterval(() => { if (i >= rows.length - 1) stop(); else show(i + 1); }, +document.getElementById('speed').value); };
  rows.forEach((r, n) => r.addEventListener('click', () => show(n)));
});
"#;

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
            Ok(since) => {
                match run_query_columns(&state, &table_history_sql(&name, since, 1000)).await {
                    Ok((rows, _)) => table(&rows.columns, &rows.rows, session_link),
                    Err(e) => error_box(e),
                }
            }
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

/// Side by side: A's statement on the left, B's on the right, aligned by the
/// replayer's engine, and what differs in words.
fn render_diff(d: &chaperone_replayer::diff::Diff) -> String {
    use chaperone_replayer::diff::Entry;
    let s = &d.summary;
    let mut out = format!(
        "<p>{} same, <span class=\"changed\">{} changed</span>, <span class=\"only-a\">{} only in A</span>, <span class=\"only-b\">{} only in B</span>.</p>",
        s.same, s.changed, s.only_a, s.only_b
    );
    out += &format!(
        "<div class=\"scroll\"><table class=\"diff\" id=\"diff\"><thead><tr><th>#A</th><th>Session A <small>{}</small></th><th>#B</th><th>Session B <small>{}</small></th><th>What differs</th></tr></thead><tbody>",
        escape(&d.session_a),
        escape(&d.session_b)
    );
    let row = |class: &str, a: String, la: &str, b: String, lb: &str, what: String| {
        format!(
            "<tr class=\"{class}\"><td>{a}</td><td class=\"sql side-a\">{}</td><td>{b}</td><td class=\"sql side-b\">{}</td><td class=\"what\">{what}</td></tr>",
            escape(la),
            escape(lb)
        )
    };
    for e in &d.entries {
        out += &match e {
            Entry::Same {
                a,
                b,
                label,
                label_b,
            } => row(
                "same",
                a.to_string(),
                label,
                b.to_string(),
                label_b,
                String::new(),
            ),
            Entry::Changed {
                a,
                b,
                label,
                label_b,
                changes,
            } => {
                let what: String = changes
                    .iter()
                    .map(|c| format!("<li>{}</li>", escape(&change_text(c))))
                    .collect();
                let what = format!("<ul>{what}</ul>");
                row(
                    "changed",
                    a.to_string(),
                    label,
                    b.to_string(),
                    label_b,
                    what,
                )
            }
            Entry::OnlyA { a, label } => row(
                "only-a",
                a.to_string(),
                label,
                String::new(),
                "",
                "only in A".into(),
            ),
            Entry::OnlyB { b, label } => row(
                "only-b",
                String::new(),
                "",
                b.to_string(),
                label,
                "only in B".into(),
            ),
        };
    }
    out += "</tbody></table></div>";
    if !d.tables_only_a.is_empty() || !d.tables_only_b.is_empty() {
        out += &format!(
            "<p>Tables only in A: {} · only in B: {}</p>",
            escape(&d.tables_only_a.join(", ")),
            escape(&d.tables_only_b.join(", "))
        );
    }
    out
}

/// One difference in words: what A had, what B had.
fn change_text(c: &chaperone_replayer::diff::Change) -> String {
    use chaperone_replayer::diff::Change;
    let none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    match c {
        Change::Params { a, b } => format!("values: {} → {}", a.join(", "), b.join(", ")),
        Change::ResultHash { a, b } => format!(
            "result: {} → {}",
            none(a).chars().take(12).collect::<String>(),
            none(b).chars().take(12).collect::<String>()
        ),
        Change::RowsReturned { a, b } => format!("rows returned: {a} → {b}"),
        Change::RowsAffected { a, b } => format!("rows affected: {a} → {b}"),
        Change::Error { a, b } => format!("error: {} → {}", none(a), none(b)),
        Change::Warnings { a, b } => format!("warnings: {a} → {b}"),
        Change::Tables { only_a, only_b } => format!(
            "tables: only A [{}], only B [{}]",
            only_a.join(", "),
            only_b.join(", ")
        ),
    }
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
    let result = match run_query_columns(&state, &form.sql).await {
        Ok((rows, truncated)) => {
            let mut t = table(&rows.columns, &rows.rows, session_link);
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
