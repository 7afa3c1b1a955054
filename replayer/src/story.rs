//! The session as a story: what `replay --plain` prints and `--json` emits, one
//! statement after another with its result. The terminal player shows the same
//! lines ([`StatementView`]).

use std::io::Write;

use serde::Serialize;

use crate::archive::{ArchiveError, SessionSource};
use crate::decode::{decode, Decoded, ResultTable};
use crate::model::Statement;

/// Widest cell shown before truncation.
pub const MAX_CELL: usize = 40;
/// Rows of a result shown in the plain story.
pub const MAX_PLAIN_ROWS: usize = 20;

/// A statement with its decoded result.
#[derive(Debug, Clone, Serialize)]
pub struct StatementView {
    #[serde(flatten)]
    pub statement: Statement,
    /// Milliseconds since the session's first statement.
    pub offset_ms: f64,
    pub decoded: Decoded,
}

pub async fn view<S: SessionSource>(
    source: &S,
    first_us: i64,
    st: &Statement,
) -> Result<StatementView, ArchiveError> {
    let frames = source.frames(&st.session_id, st.command_index).await?;
    Ok(StatementView {
        statement: st.clone(),
        offset_ms: (st.started_at_us - first_us) as f64 / 1000.0,
        decoded: decode(&frames),
    })
}

/// Truncates a cell to `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The status line of a statement: outcome, counts, verdict.
pub fn outcome(st: &Statement) -> String {
    let mut parts = Vec::new();
    if let Some(code) = st.error_code.filter(|c| *c != 0) {
        parts.push(format!(
            "ERROR {code}: {}",
            st.error_message.as_deref().unwrap_or("")
        ));
    } else if st.command == "COM_QUIT" {
        parts.push("client quit".into());
    } else if !st.result_columns.is_empty() || st.rows_returned > 0 {
        parts.push(format!("{} rows", st.rows_returned));
    } else {
        parts.push(format!("OK, {} affected", st.rows_affected));
    }
    if st.warnings > 0 {
        parts.push(format!("{} warnings", st.warnings));
    }
    if st.is_refused() {
        parts.push(format!(
            "verdict {}{}",
            st.verdict.as_deref().unwrap_or(""),
            st.verdict_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    if !st.masked_columns.is_empty() {
        parts.push(format!("masked: {}", st.masked_columns.join(", ")));
    }
    if st.payload_capped {
        parts.push(format!(
            "frames capped: {} bytes not stored, the result shown may be incomplete",
            st.payload_bytes_dropped
        ));
    }
    parts.join(" · ")
}

/// A result set as text lines (header, separator, rows), cells truncated.
pub fn table_lines(t: &ResultTable, max_rows: usize, masked: &[String]) -> Vec<String> {
    let masked_names: Vec<&str> = masked
        .iter()
        .map(|m| m.split(':').next().unwrap_or(m))
        .collect();
    let header: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            if masked_names.contains(&c.as_str()) {
                format!("{c} [masked]")
            } else {
                c.clone()
            }
        })
        .collect();
    let cells: Vec<Vec<String>> = t
        .rows
        .iter()
        .take(max_rows)
        .map(|r| {
            r.iter()
                .map(|c| truncate(c.as_deref().unwrap_or("NULL"), MAX_CELL))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let fmt = |r: &[String]| {
        r.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![fmt(&header)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.extend(cells.iter().map(|r| fmt(r)));
    if t.rows.len() > max_rows {
        out.push(format!("… {} more rows", t.rows.len() - max_rows));
    }
    out
}

/// The plain-text story of one statement.
pub fn plain_lines(v: &StatementView) -> Vec<String> {
    let st = &v.statement;
    let mark = if st.is_error() { "!!" } else { "  " };
    let mut out = vec![format!(
        "{mark} #{:<4} +{:>9.3}s {:>8.1}ms  {}",
        st.command_index,
        v.offset_ms / 1000.0,
        st.duration_us as f64 / 1000.0,
        st.label()
    )];
    if !st.params.is_empty() {
        out.push(format!("         params: {}", st.params.join(", ")));
    }
    out.push(format!("         -> {}", outcome(st)));
    for t in &v.decoded.results {
        for l in table_lines(t, MAX_PLAIN_ROWS, &st.masked_columns) {
            out.push(format!("            {l}"));
        }
    }
    if let Some(p) = &v.decoded.problem {
        out.push(format!("         (frames not decodable: {p})"));
    }
    out
}

/// Output format of [`print_story`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryFormat {
    Plain,
    Json,
}

/// Prints a whole session, one statement at a time (frames loaded per statement).
pub async fn print_story<S: SessionSource>(
    source: &S,
    session_id: &str,
    format: StoryFormat,
    out: &mut impl Write,
) -> Result<(), StoryError> {
    let statements = source.statements(session_id).await?;
    let first = statements.first().map(|s| s.started_at_us).unwrap_or(0);
    if format == StoryFormat::Plain {
        let errors = statements.iter().filter(|s| s.is_error()).count();
        let capped = statements.iter().filter(|s| s.payload_capped).count();
        writeln!(
            out,
            "session {session_id}: {} statements, {errors} errors{}{}",
            statements.len(),
            statements
                .first()
                .and_then(|s| s.subject.as_deref())
                .map(|s| format!(", agent {s}"))
                .unwrap_or_default(),
            if capped > 0 {
                format!(", {capped} with capped frames (results incomplete)")
            } else {
                String::new()
            }
        )?;
    }
    for st in &statements {
        let v = view(source, first, st).await?;
        match format {
            StoryFormat::Plain => {
                for l in plain_lines(&v) {
                    writeln!(out, "{l}")?;
                }
                // A reader of a pipe (`| head`, a log) sees each statement at once.
                out.flush()?;
            }
            StoryFormat::Json => {
                serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::from)?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoryError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}
