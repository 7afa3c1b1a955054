//! COM_STMT_EXECUTE: checked against the statement it executes, and its
//! parameters rendered as SQL literals for the record.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html>
//!
//! The gateway does not advertise CLIENT_QUERY_ATTRIBUTES nor MariaDB's extended
//! capabilities, so the layout is the classic one: statement id, flags, iteration
//! count, then for a statement with parameters a NULL bitmap, the
//! "new parameters bound" flag, the parameter types when that flag is set, and the
//! values of the parameters that are neither NULL nor sent as long data.

use super::lenenc::Reader;
use super::Malformed;

/// Cursor flags of COM_STMT_EXECUTE.
pub const CURSOR_TYPE_NO_CURSOR: u8 = 0;

/// What the protocol needs to know about a prepared statement to read its
/// executions (the gateway keeps its analysis and verdict beside it).
#[derive(Debug, Clone, Default)]
pub struct PreparedStatement {
    pub sql: String,
    pub num_params: u16,
    pub num_columns: u16,
    /// Parameter types (type byte, unsigned flag) bound by the last EXECUTE that
    /// sent them; the client may omit them on later executions.
    pub bound_types: Option<Vec<(u8, bool)>>,
    /// Parameters whose value arrived through COM_STMT_SEND_LONG_DATA since the
    /// last execution.
    pub long_data: Vec<bool>,
}

/// A parsed COM_STMT_EXECUTE.
#[derive(Debug, Clone, PartialEq)]
pub struct Execute {
    pub statement_id: u32,
    pub flags: u8,
    /// Parameters as SQL literals (`NULL`, `42`, `'text'`, `X'00ff'`, `<long data>`).
    pub params: Vec<String>,
}

/// The statement id of an EXECUTE, FETCH, RESET, CLOSE or SEND_LONG_DATA packet.
pub fn statement_id(payload: &[u8]) -> Result<u32, Malformed> {
    let mut r = Reader::new(payload, "statement command");
    r.u8()?;
    r.u32()
}

/// Parses a COM_STMT_EXECUTE payload (command byte included) against `stmt`.
/// On success, the types it bound are stored in `stmt` for later executions.
pub fn parse(payload: &[u8], stmt: &mut PreparedStatement) -> Result<Execute, Malformed> {
    const WHAT: &str = "COM_STMT_EXECUTE";
    let mut r = Reader::new(payload, WHAT);
    r.u8()?;
    let statement_id = r.u32()?;
    let flags = r.u8()?;
    let _iterations = r.u32()?;
    let n = stmt.num_params as usize;
    let mut params = Vec::with_capacity(n);
    // Types bound by this packet; kept in `stmt` only if the whole packet parses,
    // since a refused EXECUTE never reaches the server.
    let mut newly_bound = None;
    if n > 0 {
        let null_bitmap = r.bytes(n.div_ceil(8))?;
        let new_params_bound = r.u8()?;
        match new_params_bound {
            1 => {
                let mut types = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = r.u8()?;
                    let flag = r.u8()?;
                    if !is_known_type(t) {
                        return Err(Malformed::new(WHAT, format!("unknown parameter type {t}")));
                    }
                    types.push((t, flag & 0x80 != 0));
                }
                newly_bound = Some(types);
            }
            0 => {
                if stmt.bound_types.is_none() {
                    return Err(Malformed::new(
                        WHAT,
                        "parameter types were never bound for this statement",
                    ));
                }
            }
            other => {
                return Err(Malformed::new(
                    WHAT,
                    format!("new-params-bound flag is {other}, expected 0 or 1"),
                ))
            }
        }
        let types = newly_bound
            .as_ref()
            .or(stmt.bound_types.as_ref())
            .expect("bound above");
        for (i, &(t, unsigned)) in types.iter().enumerate() {
            let is_null = null_bitmap[i / 8] & (1 << (i % 8)) != 0;
            if is_null {
                params.push("NULL".to_string());
            } else if stmt.long_data.get(i).copied().unwrap_or(false) {
                params.push("<long data>".to_string());
            } else {
                params.push(read_binary_value(&mut r, t, unsigned)?);
            }
        }
    }
    if !r.is_empty() {
        return Err(Malformed::new(
            WHAT,
            format!(
                "{} unexpected bytes after the parameters",
                r.remaining().len()
            ),
        ));
    }
    if newly_bound.is_some() {
        stmt.bound_types = newly_bound;
    }
    stmt.long_data.iter_mut().for_each(|b| *b = false);
    Ok(Execute {
        statement_id,
        flags,
        params,
    })
}

fn is_known_type(t: u8) -> bool {
    matches!(t, 0..=17 | 245..=255)
}

/// Reads one binary-protocol value and renders it as an SQL literal.
///
/// Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_binary_resultset.html>
pub fn read_binary_value(r: &mut Reader<'_>, t: u8, unsigned: bool) -> Result<String, Malformed> {
    Ok(match t {
        // TINY
        1 => {
            let v = r.u8()?;
            if unsigned {
                v.to_string()
            } else {
                (v as i8).to_string()
            }
        }
        // SHORT, YEAR
        2 | 13 => {
            let v = r.u16()?;
            if unsigned || t == 13 {
                v.to_string()
            } else {
                (v as i16).to_string()
            }
        }
        // LONG, INT24
        3 | 9 => {
            let v = r.u32()?;
            if unsigned {
                v.to_string()
            } else {
                (v as i32).to_string()
            }
        }
        // LONGLONG
        8 => {
            let v = r.u64()?;
            if unsigned {
                v.to_string()
            } else {
                (v as i64).to_string()
            }
        }
        // FLOAT
        4 => f32::from_bits(r.u32()?).to_string(),
        // DOUBLE
        5 => f64::from_bits(r.u64()?).to_string(),
        // NULL
        6 => "NULL".to_string(),
        // DATE, DATETIME, TIMESTAMP
        7 | 10 | 12 => {
            let len = r.u8()?;
            let b = r.bytes(len as usize)?;
            let mut s = String::from("'");
            if len >= 4 {
                s += &format!(
                    "{:04}-{:02}-{:02}",
                    u16::from_le_bytes([b[0], b[1]]),
                    b[2],
                    b[3]
                );
            } else if len != 0 {
                return Err(Malformed::new("date value", format!("length {len}")));
            } else {
                s += "0000-00-00";
            }
            if t != 10 && len >= 7 {
                s += &format!(" {:02}:{:02}:{:02}", b[4], b[5], b[6]);
            }
            if len >= 11 {
                s += &format!(".{:06}", u32::from_le_bytes([b[7], b[8], b[9], b[10]]));
            }
            s.push('\'');
            s
        }
        // TIME
        11 => {
            let len = r.u8()?;
            let b = r.bytes(len as usize)?;
            match len {
                0 => "'00:00:00'".to_string(),
                8 | 12 => {
                    let neg = if b[0] == 1 { "-" } else { "" };
                    // u64: a client may send any day count (found by fuzzing:
                    // u32 arithmetic overflowed).
                    let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as u64;
                    let hours = days * 24 + b[5] as u64;
                    let mut s = format!("'{neg}{hours:02}:{:02}:{:02}", b[6], b[7]);
                    if len == 12 {
                        s += &format!(".{:06}", u32::from_le_bytes([b[8], b[9], b[10], b[11]]));
                    }
                    s.push('\'');
                    s
                }
                _ => return Err(Malformed::new("time value", format!("length {len}"))),
            }
        }
        // DECIMAL, NEWDECIMAL: digits as text
        0 | 246 => String::from_utf8_lossy(r.lenenc_str()?).into_owned(),
        // Everything else travels as a length-encoded string.
        _ => quote_bytes(r.lenenc_str()?),
    })
}

/// Renders bytes as an SQL string literal, or as a hex literal when not UTF-8.
pub fn quote_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('\'');
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    '\0' => out.push_str("\\0"),
                    _ => out.push(c),
                }
            }
            out.push('\'');
            out
        }
        Err(_) => format!("X'{}'", hex::encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(n: u16) -> PreparedStatement {
        PreparedStatement {
            sql: "SELECT ?".into(),
            num_params: n,
            num_columns: 1,
            bound_types: None,
            long_data: vec![false; n as usize],
        }
    }

    fn header(id: u32) -> Vec<u8> {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p
    }

    #[test]
    fn renders_bound_parameters() {
        let mut s = stmt(3);
        let mut p = header(7);
        p.push(0b010); // second param NULL
        p.push(1);
        p.extend_from_slice(&[8, 0, 6, 0, 253, 0]);
        p.extend_from_slice(&(-5i64).to_le_bytes());
        p.extend_from_slice(&[3, b'a', b'\'', b'b']);
        let e = parse(&p, &mut s).unwrap();
        assert_eq!(e.statement_id, 7);
        assert_eq!(e.params, vec!["-5", "NULL", "'a''b'"]);
        // Types stay bound for the next execution.
        let mut p2 = header(7);
        p2.push(0b111);
        p2.push(0);
        assert_eq!(parse(&p2, &mut s).unwrap().params, vec!["NULL"; 3]);
    }

    #[test]
    fn mismatches_are_refused() {
        // Types never bound.
        let mut p = header(1);
        p.extend_from_slice(&[0, 0]);
        assert!(parse(&p, &mut stmt(1)).is_err());
        // Value shorter than its type.
        let mut p = header(1);
        p.extend_from_slice(&[0, 1, 8, 0, 1, 2]);
        assert!(parse(&p, &mut stmt(1)).is_err());
        // Trailing garbage.
        let mut p = header(1);
        p.extend_from_slice(&[0, 1, 1, 0, 5, 99]);
        assert!(parse(&p, &mut stmt(1)).is_err());
        // Unknown type.
        let mut p = header(1);
        p.extend_from_slice(&[0, 1, 200, 0, 5]);
        assert!(parse(&p, &mut stmt(1)).is_err());
        // Truncated header.
        assert!(parse(&[0x17, 1, 0], &mut stmt(0)).is_err());
    }

    #[test]
    fn a_refused_execute_binds_no_types() {
        let mut s = stmt(1);
        // Types sent, but trailing garbage: refused, so the server never saw them.
        let mut p = header(1);
        p.extend_from_slice(&[0b1, 1, 8, 0, 99]);
        assert!(parse(&p, &mut s).is_err());
        assert!(s.bound_types.is_none());
        let mut p = header(1);
        p.extend_from_slice(&[0b1, 0]);
        assert!(parse(&p, &mut s).is_err(), "types were never bound");
        // Bound by a good packet, then a bad one with other types leaves them.
        let mut p = header(1);
        p.extend_from_slice(&[0, 1, 1, 0, 7]);
        assert_eq!(parse(&p, &mut s).unwrap().params, vec!["7"]);
        let mut p = header(1);
        p.extend_from_slice(&[0, 1, 8, 0, 1]);
        assert!(parse(&p, &mut s).is_err());
        assert_eq!(s.bound_types, Some(vec![(1, false)]));
    }

    #[test]
    fn temporal_values() {
        let bytes = [11, 0xE8, 0x07, 2, 29, 13, 5, 9, 0x40, 0xE2, 0x01, 0];
        let mut r = Reader::new(&bytes, "t");
        assert_eq!(
            read_binary_value(&mut r, 12, false).unwrap(),
            "'2024-02-29 13:05:09.123456'"
        );
        let mut r = Reader::new(&[8, 1, 1, 0, 0, 0, 2, 3, 4], "t");
        assert_eq!(read_binary_value(&mut r, 11, false).unwrap(), "'-26:03:04'");
        // Any day count renders (fuzz finding: it overflowed u32 hours).
        let mut r = Reader::new(&[8, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0], "t");
        assert_eq!(
            read_binary_value(&mut r, 11, false).unwrap(),
            "'103079215335:00:00'"
        );
    }
}
