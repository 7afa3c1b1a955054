//! Row estimates for approval rules with `max_rows`: the gateway runs `EXPLAIN
//! <statement>` on the session's own upstream connection, before forwarding the
//! statement, and reads the plan's largest `rows`.
//!
//! Only ever one statement: the text is checked to be a single statement by
//! the gateway's lexer, and the parameters of a prepared statement are put in
//! only when each one reads back as exactly one literal (a DECIMAL parameter
//! arrives as client-supplied text, and must not become SQL). The EXPLAIN is
//! the gateway's own traffic: it is not a frame of the session; its estimate
//! is recorded with the verdict. It resets what `ROW_COUNT()` and
//! `SHOW WARNINGS` would report, which the statement that follows resets anyway.

use futures::{SinkExt, StreamExt};

use chaperone_mysql::protocol::column::ColumnDef;
use chaperone_mysql::protocol::command::COM_QUERY;
use chaperone_mysql::protocol::exchange::{Exchange, Step};
use chaperone_mysql::protocol::lenenc::Reader;
use chaperone_mysql::protocol::response::ErrInfo;
use chaperone_mysql::protocol::{CapabilityFlags, Packet};
use chaperone_mysql::upstream::Upstream;
use chaperone_sql::lexer::{split_statements, Lexer, TokenKind};

/// What `EXPLAIN` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Estimate {
    /// The largest `rows` of the plan.
    Rows(u64),
    /// No estimate, and why (the server's error, no `rows` column, ...).
    Unavailable(String),
}

/// The text to EXPLAIN for a statement and its parameters (None when it cannot
/// be built safely: several statements, a parameter that is not one literal,
/// a count mismatch).
pub fn explain_text(sql: &str, params: &[String]) -> Result<String, String> {
    match split_statements(sql) {
        Ok(parts) if parts.len() == 1 => {}
        Ok(_) => return Err("not a single statement".into()),
        Err(e) => return Err(e.to_string()),
    }
    let tokens: Vec<_> = Lexer::new(sql)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let placeholders: Vec<_> = tokens
        .iter()
        .filter(|t| t.kind == TokenKind::Placeholder)
        .collect();
    if placeholders.len() != params.len() {
        return Err(format!(
            "{} placeholders, {} parameters",
            placeholders.len(),
            params.len()
        ));
    }
    let mut out =
        String::with_capacity(sql.len() + 8 + params.iter().map(String::len).sum::<usize>());
    out.push_str("EXPLAIN ");
    let mut at = 0;
    for (t, p) in placeholders.iter().zip(params) {
        if !is_one_literal(p) {
            return Err("a parameter is not a plain value (long data, or not one literal)".into());
        }
        out.push_str(&sql[at..t.start]);
        out.push_str(p);
        at = t.end;
    }
    out.push_str(&sql[at..]);
    Ok(out)
}

/// `NULL`, a number (with a sign), a string or a hex literal: nothing else.
fn is_one_literal(p: &str) -> bool {
    let tokens: Result<Vec<_>, _> = Lexer::new(p).collect();
    let Ok(tokens) = tokens else {
        return false;
    };
    match tokens.as_slice() {
        [t] => {
            matches!(
                t.kind,
                TokenKind::Number | TokenKind::String | TokenKind::HexOrBit
            ) || (t.kind == TokenKind::Word && p.eq_ignore_ascii_case("null"))
        }
        [sign, n] => {
            sign.kind == TokenKind::Operator
                && &p[sign.start..sign.end] == "-"
                && n.kind == TokenKind::Number
        }
        _ => false,
    }
}

/// Runs `text` (from [`explain_text`]) on the upstream connection and reads
/// the plan. The outer error is a broken connection (the session ends).
pub async fn run(upstream: &mut Upstream, text: &str) -> Result<Estimate, String> {
    let deprecate_eof = upstream
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.push(COM_QUERY);
    payload.extend_from_slice(text.as_bytes());
    upstream
        .conn
        .send(Packet::new(0, payload))
        .await
        .map_err(|e| e.to_string())?;
    let mut exchange = Exchange::new(COM_QUERY, deprecate_eof);
    let mut index = 0usize;
    let mut columns: Option<u64> = None;
    let mut rows_column: Option<usize> = None;
    let mut names = Vec::new();
    let mut largest: Option<u64> = None;
    let mut error = None;
    while !exchange.is_done() {
        let packet = match upstream.conn.next().await {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the database closed the connection".into()),
        };
        let p = &packet.payload;
        let step = exchange.on_packet(p).map_err(|e| e.to_string())?;
        if index == 0 {
            match p.first() {
                Some(0xFF) => {
                    error = Some(
                        ErrInfo::parse(p)
                            .map(|e| format!("EXPLAIN failed: {} ({})", e.message, e.code))
                            .unwrap_or_else(|e| e.to_string()),
                    );
                }
                Some(0x00) => {}
                _ => {
                    columns = Reader::new(p, "column count").lenenc_int().ok();
                }
            }
        } else if let Some(n) = columns {
            let n = n as usize;
            let first_row = 1 + n + usize::from(!deprecate_eof);
            if index <= n {
                let name = ColumnDef::parse_name(p).unwrap_or_default();
                if name.eq_ignore_ascii_case("rows") {
                    rows_column = Some(index - 1);
                }
                names.push(name);
            } else if index >= first_row && step != Step::Done {
                if let Some(col) = rows_column {
                    let mut r = Reader::new(p, "EXPLAIN row");
                    let mut value = None;
                    for i in 0..=col {
                        let v = r.lenenc_str_or_null().ok().flatten();
                        if i == col {
                            value = v;
                        }
                    }
                    if let Some(v) = value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        largest = Some(largest.map_or(v, |l: u64| l.max(v)));
                    }
                }
            }
        }
        index += 1;
    }
    Ok(match (error, largest) {
        (Some(e), _) => Estimate::Unavailable(e),
        (None, Some(n)) => Estimate::Rows(n),
        (None, None) if rows_column.is_none() => Estimate::Unavailable(format!(
            "the plan has no rows column ({})",
            names.join(", ")
        )),
        (None, None) => Estimate::Unavailable("the plan gives no row count".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_texts() {
        assert_eq!(
            explain_text("DELETE FROM t WHERE id > ?", &["5".into()]).unwrap(),
            "EXPLAIN DELETE FROM t WHERE id > 5"
        );
        assert_eq!(
            explain_text(
                "UPDATE t SET a = ? WHERE b = ?",
                &["'x''y'".into(), "-2".into()]
            )
            .unwrap(),
            "EXPLAIN UPDATE t SET a = 'x''y' WHERE b = -2"
        );
        assert!(explain_text("DELETE FROM t WHERE id > ?", &["1; DROP TABLE t".into()]).is_err());
        assert!(explain_text("DELETE FROM t WHERE id > ?", &["<long data>".into()]).is_err());
        assert!(explain_text("DELETE FROM t WHERE id > ?", &[]).is_err());
        assert!(explain_text("DELETE FROM t; DELETE FROM u", &[]).is_err());
        assert!(explain_text("DELETE FROM t WHERE a = '?'", &[]).is_ok());
    }
}
