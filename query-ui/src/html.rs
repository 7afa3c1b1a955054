//! HTML building blocks. Everything recorded is attacker-controlled (an agent can
//! write `<script>` into a table or a query), so every value goes through
//! [`escape`] on its way into a page.

use serde_json::Value;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes a value for a URL query or path segment.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value as escaped cell text.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => escape(s),
        Value::Array(items) => escape(
            &items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => escape(&other.to_string()),
    }
}

/// Whether a row is a failed statement: an error code, or not let through by
/// the gateway (an approved statement ran: it is not a failure).
pub fn is_error_row(row: &Value) -> bool {
    let code = row
        .get("error_code")
        .is_some_and(|v| !v.is_null() && v != 0);
    let refused = row
        .get("verdict")
        .and_then(Value::as_str)
        .is_some_and(|v| !matches!(v, "allowed" | "approved"));
    code || refused
}

/// A table of JSON rows (objects) with the given columns, in that order (the
/// query's: a missing value is an empty cell, never a missing column). Wrapped
/// in a scrolling box so that a wide table never cuts its last columns.
pub fn table<S: AsRef<str>>(
    columns: &[S],
    rows: &[Value],
    link: impl Fn(&str, &Value) -> Option<String>,
) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">No rows.</p>".into();
    }
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for c in columns {
        out += &format!("<th>{}</th>", escape(c.as_ref()));
    }
    out += "</tr></thead><tbody>";
    for row in rows {
        out += if is_error_row(row) {
            "<tr class=\"error\">"
        } else {
            "<tr>"
        };
        for c in columns {
            let c = c.as_ref();
            let v = row.get(c).unwrap_or(&Value::Null);
            let text = cell(v);
            // The column's class lets the styles size SQL wide and hashes narrow.
            let class = escape(c);
            match link(c, v) {
                Some(href) => {
                    out += &format!(
                        "<td class=\"c-{class}\"><a href=\"{}\">{text}</a></td>",
                        escape(&href)
                    )
                }
                None => out += &format!("<td class=\"c-{class}\">{text}</td>"),
            }
        }
        out += "</tr>";
    }
    out += "</tbody></table></div>";
    out
}

/// The header's right side: who is logged in, and the way out.
fn user_box() -> String {
    let Some(p) = crate::access::current() else {
        return String::new();
    };
    let name = p
        .session
        .as_ref()
        .map_or(p.name.clone(), |s| s.name.clone());
    let logout = if p.session.is_some() {
        r#"<form method="post" action="/logout" class="inline"><button class="link" id="logout">Log out</button></form>"#
    } else {
        ""
    };
    format!(
        r#"<span class="user"><span id="who">{}</span> <span class="role">{}</span>{logout}</span>"#,
        escape(&name),
        escape(&p.role)
    )
}

/// The page frame: navigation and styles.
pub fn page(title: &str, body: &str) -> String {
    let inbox = crate::access::current()
        .filter(|p| p.has(chaperone_web_login::WebRole::Approver))
        .map_or("", |_| r#"<a href="/inbox">Approvals</a>"#);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Chaperone</title>
<style>
:root {{ --ink: #1d2330; --muted: #687385; --line: #e3e6ec; --soft: #f5f7fb; --accent: #2f6fde; }}
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: var(--ink); background: #fbfcfe; }}
header {{ background: var(--ink); color: #fff; padding: 0 24px; display: flex; gap: 22px; align-items: center; height: 48px; }}
header a {{ color: #cfd8ea; text-decoration: none; }} header a:hover {{ color: #fff; }}
header b {{ color: #fff; font-size: 16px; letter-spacing: .3px; margin-right: 8px; }}
.user {{ margin-left: auto; color: #cfd8ea; display: flex; gap: 8px; align-items: center; }}
.role {{ background: #34405a; color: #fff; border-radius: 10px; padding: 1px 8px; font-size: 12px; }}
main {{ padding: 18px 24px 40px; max-width: 1500px; }}
h1 {{ font-size: 22px; margin: 4px 0 14px; }} h2 {{ font-size: 16px; margin: 22px 0 8px; }}
a {{ color: var(--accent); }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; }}
th, td {{ border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; font-size: 13px; }}
th {{ background: var(--soft); font-weight: 600; color: #3b4456; white-space: nowrap; }}
thead th {{ position: sticky; top: 0; }}
tbody tr:hover td {{ background: #f8faff; }}
tr.error td {{ background: #fdecec; }} tr.current td {{ background: #fff3c4 !important; }}
td {{ max-width: 520px; overflow-wrap: break-word; font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 12.5px; }}
td.c-sql, td.c-error_message {{ min-width: 280px; }}
td.c-result_hash, td.c-session_id {{ white-space: nowrap; }}
td.c-result_hash {{ max-width: 110px; overflow: hidden; text-overflow: ellipsis; }}
form {{ margin: 8px 0; display: flex; gap: 10px; flex-wrap: wrap; align-items: center; }}
form.inline {{ display: inline; margin: 0; }}
label {{ color: #3b4456; }}
input, select, textarea {{ font: inherit; padding: 5px 7px; border: 1px solid #cdd3de; border-radius: 4px; background: #fff; }}
textarea {{ width: 100%; font-family: ui-monospace, monospace; }}
button, .button {{ font: inherit; padding: 5px 12px; border: 1px solid #bcc4d2; border-radius: 4px; background: #fff; color: var(--ink); cursor: pointer; text-decoration: none; display: inline-block; }}
button:hover, .button:hover {{ background: var(--soft); }}
.primary {{ background: var(--accent); border-color: var(--accent); color: #fff; }} .primary:hover {{ background: #2459b8; }}
.approve {{ background: #1f8a4c; border-color: #1f8a4c; color: #fff; }} .deny {{ background: #c23b3b; border-color: #c23b3b; color: #fff; }}
button.link {{ background: none; border: none; color: #cfd8ea; padding: 0 4px; }}
.card {{ background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 12px 0; }}
.narrow {{ max-width: 560px; }}
pre.sql {{ background: #0f1522; color: #e8edf7; padding: 10px 12px; border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0; }}
dl.facts {{ display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 8px 0; }}
dl.facts dt {{ color: var(--muted); }} dl.facts dd {{ margin: 0; }}
#timeline, .scroll {{ overflow-x: auto; max-width: 100%; }}
.scroll > table {{ width: auto; min-width: 100%; }}
td.c-error_message {{ color: #a12828; font-weight: 600; }}
.result {{ margin: 10px 0; }} .result h3 {{ font-size: 14px; margin: 4px 0; }}
.claims {{ background: var(--soft); padding: 8px 10px; border-radius: 6px; margin: 0; white-space: pre-wrap; }}
.diff td.sql {{ white-space: pre-wrap; }} .diff td.what {{ font-family: system-ui, sans-serif; }}
.diff ul {{ margin: 0; padding-left: 16px; }}
.pane {{ display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }}
.empty, small {{ color: var(--muted); }} .tag {{ background: #eef1fb; padding: 1px 6px; border-radius: 3px; }}
.error {{ color: #a12828; }}
.notice {{ background: #e9f7ec; border: 1px solid #bfe3c8; padding: 8px 12px; border-radius: 6px; }}
.progress {{ font-weight: 600; }}
.live {{ display: inline-block; width: 8px; height: 8px; border-radius: 50%; background: #1f8a4c; margin-right: 6px; }}
.only-a {{ background: #fdecec; }} .only-b {{ background: #e9f7ec; }} .changed {{ background: #fff6d6; }}
</style></head>
<body><header><b>Chaperone</b><a href="/">Sessions</a><a href="/tables">Tables</a><a href="/sql">SQL</a><a href="/diff">Diff</a>{inbox}{user}</header>
<main><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = escape(title),
        user = user_box(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_markup_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        let rows = vec![serde_json::json!({"sql": "<img src=x onerror=alert(1)>"})];
        let t = table(&["sql"], &rows, |_, _| None);
        assert!(!t.contains("<img"));
        assert!(t.contains("&lt;img"));
    }

    #[test]
    fn columns_come_from_the_query_and_nulls_are_empty() {
        let rows = vec![
            serde_json::json!({"b": 1, "a": null, "error_code": null}),
            serde_json::json!({"b": 2, "a": "x", "error_code": 1146, "error_message": "no table"}),
        ];
        let t = table(&["b", "a", "error_code", "error_message"], &rows, |_, _| {
            None
        });
        let b = t.find("<th>b</th>").unwrap();
        assert!(
            b < t.find("<th>a</th>").unwrap(),
            "query order, not alphabetical"
        );
        assert!(t.contains("<th>error_message</th>"));
        assert!(t.contains("no table"));
        assert_eq!(t.matches("<tr class=\"error\">").count(), 1);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
