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

/// A table of JSON rows (objects), columns in the order of the first row.
pub fn table(rows: &[Value], link: impl Fn(&str, &Value) -> Option<String>) -> String {
    let Some(Value::Object(first)) = rows.first() else {
        return "<p class=\"empty\">No rows.</p>".into();
    };
    let columns: Vec<&String> = first.keys().collect();
    let mut out = String::from("<table><thead><tr>");
    for c in &columns {
        out += &format!("<th>{}</th>", escape(c));
    }
    out += "</tr></thead><tbody>";
    for row in rows {
        let error = row.get("error_code").is_some_and(|v| !v.is_null());
        out += if error {
            "<tr class=\"error\">"
        } else {
            "<tr>"
        };
        for c in &columns {
            let v = row.get(c.as_str()).unwrap_or(&Value::Null);
            let text = cell(v);
            match link(c, v) {
                Some(href) => out += &format!("<td><a href=\"{}\">{text}</a></td>", escape(&href)),
                None => out += &format!("<td>{text}</td>"),
            }
        }
        out += "</tr>";
    }
    out += "</tbody></table>";
    out
}

/// The page frame: navigation and styles.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Chaperone</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; }}
header {{ background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 20px; align-items: center; }}
header a {{ color: #cfd8ea; text-decoration: none; }} header b {{ color: #fff; }}
main {{ padding: 16px 20px; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0; }}
th, td {{ border-bottom: 1px solid #e3e6ec; padding: 4px 6px; text-align: left; vertical-align: top; font-size: 13px; }}
th {{ background: #f4f6fa; position: sticky; top: 0; }}
tr.error td {{ background: #fdecec; }} tr.current td {{ background: #fff6d6; }}
td {{ max-width: 520px; overflow-wrap: anywhere; font-family: ui-monospace, monospace; }}
form {{ margin: 8px 0; display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }}
input, select, textarea {{ font: inherit; padding: 4px; }} textarea {{ width: 100%; font-family: ui-monospace, monospace; }}
.pane {{ display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }}
.empty {{ color: #777; }} .tag {{ background: #eef; padding: 1px 5px; border-radius: 3px; }}
.only-a {{ background: #fdecec; }} .only-b {{ background: #e9f7ec; }} .changed {{ background: #fff6d6; }}
</style></head>
<body><header><b>Chaperone</b><a href="/">Sessions</a><a href="/tables">Tables</a><a href="/sql">SQL</a><a href="/diff">Diff</a></header>
<main><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = escape(title),
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
        let t = table(&rows, |_, _| None);
        assert!(!t.contains("<img"));
        assert!(t.contains("&lt;img"));
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
