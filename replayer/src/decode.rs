//! The result a statement's client saw, decoded from the recorded
//! server-to-client frames with the gateway's own protocol code
//! ([`Exchange`] says what each packet is; [`ColumnDef`] and
//! [`read_binary_value`] read them).

use chaperone_mysql::protocol::column::ColumnDef;
use chaperone_mysql::protocol::command::COM_STMT_EXECUTE;
use chaperone_mysql::protocol::exchange::{Exchange, PacketKind};
use chaperone_mysql::protocol::execute::read_binary_value;
use chaperone_mysql::protocol::lenenc::Reader;
use serde::Serialize;

use crate::model::{Direction, Frame};

/// One result set as the client received it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResultTable {
    pub columns: Vec<String>,
    /// Cell text; None is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

/// What a command's recorded frames show.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decoded {
    pub results: Vec<ResultTable>,
    /// Some frames were stored truncated (the capture cap): rows may be missing.
    pub capped: bool,
    /// The frames could not be decoded (truncated or unexpected packets).
    pub problem: Option<String>,
}

/// Decodes the result sets of one command from its frames.
pub fn decode(frames: &[Frame]) -> Decoded {
    let mut out = Decoded {
        capped: frames.iter().any(|f| f.capped),
        ..Default::default()
    };
    let Some(request) = frames
        .iter()
        .find(|f| f.direction == Direction::ClientToServer)
    else {
        return out;
    };
    let Some(&command) = request.payload.first() else {
        return out;
    };
    let responses: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.direction == Direction::ServerToClient)
        .collect();
    // The recording does not keep the negotiated capabilities: the layout that
    // reads the whole response cleanly is the one the client had.
    let mut best = None;
    for deprecate_eof in [true, false] {
        match walk(command, deprecate_eof, &responses) {
            Ok(results) => {
                best = Some(Ok(results));
                break;
            }
            Err(e) => {
                if best.is_none() {
                    best = Some(Err(e))
                }
            }
        }
    }
    match best {
        Some(Ok(results)) => out.results = results,
        Some(Err(e)) => out.problem = Some(e),
        None => {}
    }
    out
}

fn walk(command: u8, deprecate_eof: bool, frames: &[&Frame]) -> Result<Vec<ResultTable>, String> {
    let binary = command == COM_STMT_EXECUTE;
    let mut ex = Exchange::new(command, deprecate_eof);
    let mut results: Vec<ResultTable> = Vec::new();
    let mut defs: Vec<ColumnDef> = Vec::new();
    for f in frames {
        if ex.is_done() {
            return Err("more packets than the response has".into());
        }
        if f.capped {
            // A truncated packet cannot be parsed: stop at what is known.
            return Ok(results);
        }
        ex.on_packet(&f.payload).map_err(|e| e.to_string())?;
        match ex.last_packet() {
            PacketKind::ColumnCount => {
                results.push(ResultTable::default());
                defs.clear();
            }
            PacketKind::ColumnDef => {
                let d = ColumnDef::parse(&f.payload).map_err(|e| e.to_string())?;
                if let Some(r) = results.last_mut() {
                    r.columns.push(d.name.clone());
                }
                defs.push(d);
            }
            PacketKind::Row => {
                let row = if binary {
                    binary_row(&f.payload, &defs)
                } else {
                    text_row(&f.payload, defs.len())
                }
                .map_err(|e| e.to_string())?;
                if let Some(r) = results.last_mut() {
                    r.rows.push(row);
                }
            }
            PacketKind::Error | PacketKind::Other => {}
        }
    }
    if !ex.is_done() && !frames.is_empty() {
        return Err("the response ends early".into());
    }
    Ok(results)
}

fn text_row(
    payload: &[u8],
    columns: usize,
) -> Result<Vec<Option<String>>, chaperone_mysql::protocol::Malformed> {
    let mut r = Reader::new(payload, "text row");
    (0..columns)
        .map(|_| {
            Ok(r.lenenc_str_or_null()?
                .map(|b| String::from_utf8_lossy(b).into_owned()))
        })
        .collect()
}

/// MySQL's UNSIGNED column flag.
const UNSIGNED_FLAG: u16 = 32;

fn binary_row(
    payload: &[u8],
    defs: &[ColumnDef],
) -> Result<Vec<Option<String>>, chaperone_mysql::protocol::Malformed> {
    let mut r = Reader::new(payload, "binary row");
    r.u8()?;
    let bitmap = r.bytes((defs.len() + 9) / 8)?.to_vec();
    defs.iter()
        .enumerate()
        .map(|(i, d)| {
            let bit = i + 2;
            if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
                return Ok(None);
            }
            let v = read_binary_value(&mut r, d.column_type, d.flags & UNSIGNED_FLAG != 0)?;
            Ok(Some(unquote(&v)))
        })
        .collect()
}

/// `read_binary_value` renders SQL literals; a result cell shows the value.
fn unquote(v: &str) -> String {
    match v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}
