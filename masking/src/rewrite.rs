//! Re-encodes a response with its values masked: text rows (length-encoded
//! strings, 0xFB for NULL), binary rows (a NULL bitmap with offset 2, then
//! each non-NULL value in its type's encoding) and ERR packets.
//!
//! Spec: text rows
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_row.html>,
//! binary rows
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_binary_resultset.html#sect_protocol_binary_resultset_row>.
//!
//! A row none of whose values changes is forwarded as received (no copy). The
//! packet codec splits payloads of 16 MiB and more, so a value may grow or
//! shrink freely.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::rules::{Policy, Rule};
use super::strategies::{apply, partial, Shape, Strategy, ValueKind};
use chaperone_mysql::protocol::column::ColumnDef;
use chaperone_mysql::protocol::exchange::PacketKind;
use chaperone_mysql::protocol::lenenc::{put_lenenc_str, Reader};
use chaperone_mysql::protocol::response::ErrInfo;
use chaperone_mysql::protocol::Malformed;

/// What happens to one column's values.
#[derive(Debug, Clone)]
pub enum Action {
    /// Metadata, not data: forwarded as is.
    Pass,
    /// Content detectors only.
    Detect,
    /// A rule covers the column (by its original name or by lineage).
    Rule(Arc<Rule>),
}

/// One column of a result set, as masking sees it.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub action: Action,
    pub shape: Shape,
    pub column_type: u8,
    pub unsigned: bool,
    /// The column's name as delivered, for provenance.
    pub name: String,
}

const UNSIGNED_FLAG: u16 = 0x20;

/// Masks one command's response, packet by packet.
#[derive(Debug)]
pub struct ResponseMasker {
    policy: Arc<Policy>,
    binary: bool,
    /// Rules reached by lineage: per result set, per output column.
    lineage: Vec<Vec<Option<Arc<Rule>>>>,
    /// Forward result-set values as they are (SHOW CREATE, DESCRIBE, ...).
    exempt: bool,
    /// The base tables the statement reads, `(schema, table)`: a column of a
    /// derived table reports the derived table as its original table, so its
    /// original column name is also matched against these.
    tables: Vec<(String, String)>,
    result_index: usize,
    columns: Vec<ColumnPlan>,
    /// Provenance: `column:rule:strategy` or `column:detector:NAME:strategy`.
    pub masked: BTreeSet<String>,
    /// The ERR message as delivered, when it was masked.
    pub masked_error: Option<String>,
    /// Per column, what `masked` already holds (bit 63: the rule; others: a
    /// detector's index), so that provenance costs nothing per row.
    seen: Vec<u64>,
}

impl ResponseMasker {
    pub fn new(
        policy: Arc<Policy>,
        binary: bool,
        lineage: Vec<Vec<Option<Arc<Rule>>>>,
        exempt: bool,
    ) -> Self {
        ResponseMasker {
            policy,
            binary,
            lineage,
            exempt,
            tables: Vec::new(),
            result_index: 0,
            columns: Vec::new(),
            masked: BTreeSet::new(),
            masked_error: None,
            seen: Vec::new(),
        }
    }

    /// The base tables the statement reads (see the field).
    pub fn with_tables(mut self, tables: Vec<(String, String)>) -> Self {
        self.tables = tables;
        self
    }

    /// For COM_STMT_FETCH: rows of a cursor whose columns the EXECUTE described.
    pub fn for_cursor(policy: Arc<Policy>, columns: Vec<ColumnPlan>) -> Self {
        let mut m = ResponseMasker::new(policy, true, Vec::new(), false);
        m.columns = columns;
        m
    }

    /// The current result set's columns (kept per statement for cursor fetches).
    pub fn columns(&self) -> &[ColumnPlan] {
        &self.columns
    }

    /// The payload to send instead of this one; None: send it unchanged.
    pub fn on_packet(
        &mut self,
        kind: PacketKind,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, Malformed> {
        match kind {
            PacketKind::ColumnCount => {
                if !self.columns.is_empty() || self.result_index > 0 {
                    self.result_index += 1;
                }
                self.columns.clear();
                self.seen.clear();
                Ok(None)
            }
            PacketKind::ColumnDef => {
                let def = ColumnDef::parse(payload)?;
                let plan = self.plan(&def);
                self.columns.push(plan);
                Ok(None)
            }
            PacketKind::Row if self.exempt => Ok(None),
            PacketKind::Row if self.binary => self.binary_row(payload),
            PacketKind::Row => self.text_row(payload),
            PacketKind::Error => self.error(payload),
            PacketKind::Other => Ok(None),
        }
    }

    fn plan(&self, def: &ColumnDef) -> ColumnPlan {
        let index = self.columns.len();
        let metadata = def.schema.eq_ignore_ascii_case("information_schema")
            && !def.org_table.eq_ignore_ascii_case("PROCESSLIST");
        let action = if self.exempt || metadata {
            Action::Pass
        } else if let Some(rule) = self
            .policy
            .rule_for(&def.schema, &def.org_table, &def.org_name)
        {
            Action::Rule(rule.clone())
        } else if let Some(rule) = self
            .lineage
            .get(self.result_index)
            .and_then(|cols| cols.get(index))
            .and_then(|r| r.clone())
        {
            Action::Rule(rule)
        } else if let Some(rule) = self.tables.iter().find_map(|(schema, table)| {
            self.policy
                .rule_for(schema, table, &def.org_name)
                .filter(|_| !def.org_table.is_empty())
        }) {
            Action::Rule(rule.clone())
        } else {
            Action::Detect
        };
        ColumnPlan {
            action,
            shape: Shape::new(def.column_type, def.column_length, def.character_set),
            column_type: def.column_type,
            unsigned: def.flags & UNSIGNED_FLAG != 0,
            name: def.name.clone(),
        }
    }

    /// Masks a value in text form. None: unchanged; Some(None): NULL.
    fn mask_text(&mut self, col: usize, value: &[u8]) -> Option<Option<Vec<u8>>> {
        let plan = self.columns.get(col)?;
        match &plan.action {
            Action::Pass => None,
            Action::Rule(rule) => {
                let out = apply(&rule.strategy, value, plan.shape, &self.policy.key);
                if self.first_time(col, 63) {
                    let plan = &self.columns[col];
                    let Action::Rule(rule) = &plan.action else {
                        unreachable!("matched above")
                    };
                    let label = format!("{}:{}:{}", plan.name, rule.name, rule.strategy.name());
                    self.masked.insert(label);
                }
                Some(out)
            }
            Action::Detect => {
                let hits = self.policy.detectors.scan(value);
                if hits.is_empty() {
                    return None;
                }
                let kind = plan.shape.kind;
                let name = plan.name.clone();
                let policy = self.policy.clone();
                let mut out = Vec::with_capacity(value.len());
                let mut at = 0;
                for h in &hits {
                    out.extend_from_slice(&value[at..h.range.start]);
                    let detector = policy.detectors.name(h.detector);
                    let span = &value[h.range.clone()];
                    match &policy.detector_strategy {
                        Strategy::Hash => {
                            out.extend_from_slice(
                                format!("[{detector}:{}]", policy.key.hex(span, 16)).as_bytes(),
                            );
                        }
                        Strategy::Partial { .. } => {
                            out.extend_from_slice(partial(span, 1, 2, true).as_bytes());
                        }
                        _ => out.extend_from_slice(format!("[masked:{detector}]").as_bytes()),
                    }
                    at = h.range.end;
                    if self.first_time(col, (h.detector % 63) as u32) {
                        self.masked.insert(format!(
                            "{name}:detector:{detector}:{}",
                            policy.detector_strategy.name()
                        ));
                    }
                }
                out.extend_from_slice(&value[at..]);
                if kind != ValueKind::Text {
                    // A number or date cannot hold the redaction text.
                    return Some(None);
                }
                Some(Some(out))
            }
        }
    }

    /// Is this the first time `col` is masked by `what` in this response?
    fn first_time(&mut self, col: usize, what: u32) -> bool {
        if self.seen.len() <= col {
            self.seen.resize(col + 1, 0);
        }
        let bit = 1u64 << what;
        let first = self.seen[col] & bit == 0;
        self.seen[col] |= bit;
        first
    }

    fn text_row(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        let mut r = Reader::new(payload, "text row");
        let mut changes: Vec<(usize, usize, Option<Vec<u8>>)> = Vec::new();
        let mut col = 0;
        while !r.is_empty() {
            let start = payload.len() - r.remaining().len();
            let value = r.lenenc_str_or_null()?;
            let end = payload.len() - r.remaining().len();
            if let Some(v) = value {
                if let Some(new) = self.mask_text(col, v) {
                    changes.push((start, end, new));
                }
            }
            col += 1;
        }
        if changes.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(payload.len());
        let mut at = 0;
        for (start, end, new) in changes {
            out.extend_from_slice(&payload[at..start]);
            match new {
                Some(v) => put_lenenc_str(&mut out, &v),
                None => out.push(0xFB),
            }
            at = end;
        }
        out.extend_from_slice(&payload[at..]);
        Ok(Some(out))
    }

    fn binary_row(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        let n = self.columns.len();
        let bitmap_len = (n + 7 + 2) / 8;
        let mut r = Reader::new(payload, "binary row");
        r.u8()?;
        let mut bitmap = r.bytes(bitmap_len)?.to_vec();
        let values_start = 1 + bitmap_len;
        // (start, end, replacement encoded; None = becomes NULL)
        let mut changes: Vec<(usize, usize, Option<Vec<u8>>)> = Vec::new();
        for col in 0..n {
            let bit = col + 2;
            if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
                continue;
            }
            let plan = &self.columns[col];
            let t = plan.column_type;
            let unsigned = plan.unsigned;
            let pass = matches!(plan.action, Action::Pass);
            let start = payload.len() - r.remaining().len();
            let value = BinaryValue::read(&mut r, t)?;
            let end = payload.len() - r.remaining().len();
            if pass {
                continue;
            }
            let text = match &value {
                BinaryValue::Str(b) => b.to_vec(),
                BinaryValue::Int(b) => int_text(b, unsigned).into_bytes(),
                BinaryValue::Float(b) => float_text(b).into_bytes(),
                BinaryValue::Date(b) => date_text(t, b).into_bytes(),
                // TIME under a rule: NULL (no strategy keeps part of a duration).
                BinaryValue::Time if matches!(self.columns[col].action, Action::Rule(_)) => {
                    bitmap[bit / 8] |= 1 << (bit % 8);
                    changes.push((start, end, None));
                    continue;
                }
                BinaryValue::Time | BinaryValue::Empty => continue,
            };
            if matches!(self.columns[col].action, Action::Detect) {
                // Detectors: strings, and numbers wide enough to hold a card number.
                let scan = match &value {
                    BinaryValue::Str(_) => true,
                    BinaryValue::Int(b) => b.len() == 8,
                    _ => false,
                };
                if !scan {
                    continue;
                }
            }
            let Some(new) = self.mask_text(col, &text) else {
                continue;
            };
            let encoded = match (new, &value) {
                (None, _) => None,
                (Some(v), BinaryValue::Str(_)) => {
                    let mut out = Vec::with_capacity(v.len() + 9);
                    put_lenenc_str(&mut out, &v);
                    Some(out)
                }
                (Some(v), BinaryValue::Int(b)) => encode_int(&v, b.len()),
                (Some(v), BinaryValue::Float(b)) => encode_float(&v, b.len()),
                (Some(v), BinaryValue::Date(_)) => encode_date(t, &v),
                (Some(_), _) => None,
            };
            if encoded.is_none() {
                bitmap[bit / 8] |= 1 << (bit % 8);
            }
            changes.push((start, end, encoded));
        }
        if changes.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(payload.len());
        out.push(payload[0]);
        out.extend_from_slice(&bitmap);
        let mut at = values_start;
        for (start, end, new) in changes {
            out.extend_from_slice(&payload[at..start]);
            if let Some(v) = new {
                out.extend_from_slice(&v);
            }
            at = end;
        }
        out.extend_from_slice(&payload[at..]);
        Ok(Some(out))
    }

    fn error(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        let err = ErrInfo::parse(payload)?;
        let hits = self.policy.detectors.scan(err.message.as_bytes());
        if hits.is_empty() {
            return Ok(None);
        }
        let msg = err.message.as_bytes();
        let mut out = Vec::with_capacity(msg.len());
        let mut at = 0;
        for h in &hits {
            out.extend_from_slice(&msg[at..h.range.start]);
            let detector = self.policy.detectors.name(h.detector);
            out.extend_from_slice(format!("[masked:{detector}]").as_bytes());
            self.masked
                .insert(format!("error_message:detector:{detector}:redact"));
            at = h.range.end;
        }
        out.extend_from_slice(&msg[at..]);
        let message = String::from_utf8_lossy(&out).into_owned();
        let masked = ErrInfo::new(err.code, &err.sql_state, message.clone());
        self.masked_error = Some(message);
        Ok(Some(masked.encode()))
    }
}

/// One binary-protocol value, located.
enum BinaryValue<'a> {
    Str(&'a [u8]),
    Int(&'a [u8]),
    Float(&'a [u8]),
    Date(&'a [u8]),
    Time,
    Empty,
}

impl<'a> BinaryValue<'a> {
    fn read(r: &mut Reader<'a>, t: u8) -> Result<Self, Malformed> {
        Ok(match t {
            1 => BinaryValue::Int(r.bytes(1)?),
            2 | 13 => BinaryValue::Int(r.bytes(2)?),
            3 | 9 => BinaryValue::Int(r.bytes(4)?),
            8 => BinaryValue::Int(r.bytes(8)?),
            4 => BinaryValue::Float(r.bytes(4)?),
            5 => BinaryValue::Float(r.bytes(8)?),
            6 => BinaryValue::Empty,
            7 | 10 | 12 => {
                let len = r.u8()?;
                BinaryValue::Date(r.bytes(len as usize)?)
            }
            11 => {
                let len = r.u8()?;
                r.bytes(len as usize)?;
                BinaryValue::Time
            }
            _ => BinaryValue::Str(r.lenenc_str()?),
        })
    }
}

fn int_text(b: &[u8], unsigned: bool) -> String {
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    let u = u64::from_le_bytes(buf);
    if unsigned {
        return u.to_string();
    }
    let shift = 64 - 8 * b.len() as u32;
    (((u << shift) as i64) >> shift).to_string()
}

fn float_text(b: &[u8]) -> String {
    if b.len() == 4 {
        f32::from_le_bytes(b.try_into().expect("4 bytes")).to_string()
    } else {
        f64::from_le_bytes(b.try_into().expect("8 bytes")).to_string()
    }
}

fn date_text(t: u8, b: &[u8]) -> String {
    if b.len() < 4 {
        return "0000-00-00".into();
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}",
        u16::from_le_bytes([b[0], b[1]]),
        b[2],
        b[3]
    );
    if t != 10 {
        let (h, m, sec) = if b.len() >= 7 {
            (b[4], b[5], b[6])
        } else {
            (0, 0, 0)
        };
        s += &format!(" {h:02}:{m:02}:{sec:02}");
    }
    s
}

fn encode_int(text: &[u8], width: usize) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(text).ok()?;
    let v: i128 = s
        .trim()
        .parse::<f64>()
        .ok()
        .map(|f| f as i128)
        .or_else(|| s.parse().ok())?;
    let bytes = (v as i64).to_le_bytes();
    Some(bytes[..width].to_vec())
}

fn encode_float(text: &[u8], width: usize) -> Option<Vec<u8>> {
    let v: f64 = std::str::from_utf8(text).ok()?.trim().parse().ok()?;
    Some(if width == 4 {
        (v as f32).to_le_bytes().to_vec()
    } else {
        v.to_le_bytes().to_vec()
    })
}

fn encode_date(t: u8, text: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(text).ok()?;
    let year: u16 = s.get(0..4)?.parse().ok()?;
    let month: u8 = s.get(5..7)?.parse().ok()?;
    let day: u8 = s.get(8..10)?.parse().ok()?;
    let mut out = vec![4, 0, 0, month, day];
    out[1..3].copy_from_slice(&year.to_le_bytes());
    if t != 10 {
        let h: u8 = s.get(11..13).and_then(|x| x.parse().ok()).unwrap_or(0);
        let m: u8 = s.get(14..16).and_then(|x| x.parse().ok()).unwrap_or(0);
        let sec: u8 = s.get(17..19).and_then(|x| x.parse().ok()).unwrap_or(0);
        out[0] = 7;
        out.extend_from_slice(&[h, m, sec]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::rules::{Masking, MaskingConfig};
    use super::*;
    use chaperone_mysql::protocol::lenenc::put_lenenc_int;

    fn policy() -> Arc<Policy> {
        let config: MaskingConfig = toml::from_str(
            r#"
            key = "0123456789abcdef0123"
            [roles."*"]
            [[roles."*".rules]]
            name = "mail"
            table = "customers"
            column = "email"
            strategy = "partial"
            keep_prefix = 1
            keep_domain = true
            [[roles."*".rules]]
            name = "salary"
            column = "salary"
            strategy = "bucket"
            bucket = 1000
            "#,
        )
        .unwrap();
        Masking::compile(&config).unwrap().policy(None).unwrap()
    }

    fn coldef(org_table: &str, name: &str, t: u8) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "shop", org_table, org_table, name, name] {
            put_lenenc_str(&mut p, s.as_bytes());
        }
        put_lenenc_int(&mut p, 0x0c);
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(&1020u32.to_le_bytes());
        p.push(t);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        p
    }

    fn setup(binary: bool) -> ResponseMasker {
        let mut m = ResponseMasker::new(policy(), binary, Vec::new(), false);
        m.on_packet(PacketKind::ColumnCount, &[3]).unwrap();
        for (t, n, ty) in [
            ("customers", "email", 253),
            ("customers", "note", 252),
            ("customers", "salary", 3),
        ] {
            m.on_packet(PacketKind::ColumnDef, &coldef(t, n, ty))
                .unwrap();
        }
        m
    }

    #[test]
    fn text_rows_across_length_boundaries() {
        let mut m = setup(false);
        for len in [0usize, 1, 250, 251, 252, 65535, 65536, 70000] {
            let note = format!("{}{}", "x".repeat(len), " call 123-45-6789");
            let mut row = Vec::new();
            put_lenenc_str(&mut row, b"ana.lopez@example.com");
            put_lenenc_str(&mut row, note.as_bytes());
            put_lenenc_str(&mut row, b"123456");
            let out = m.on_packet(PacketKind::Row, &row).unwrap().unwrap();
            let mut r = Reader::new(&out, "t");
            assert_eq!(r.lenenc_str().unwrap(), b"a***@example.com");
            let masked = format!("{} call [masked:us_ssn]", "x".repeat(len));
            assert_eq!(r.lenenc_str().unwrap(), masked.as_bytes());
            assert_eq!(r.lenenc_str().unwrap(), b"123000");
            assert!(r.is_empty());
        }
        // NULLs stay NULL; unchanged rows are not copied.
        let mut row = vec![0xFB, 0xFB];
        put_lenenc_str(&mut row, b"nothing here");
        let mut m2 = ResponseMasker::new(policy(), false, Vec::new(), false);
        m2.on_packet(PacketKind::ColumnCount, &[3]).unwrap();
        for (t, n) in [("a", "x"), ("a", "y"), ("a", "z")] {
            m2.on_packet(PacketKind::ColumnDef, &coldef(t, n, 253))
                .unwrap();
        }
        assert!(m2.on_packet(PacketKind::Row, &row).unwrap().is_none());
        assert!(m.masked.contains("email:mail:partial"));
    }

    #[test]
    fn binary_rows_keep_the_bitmap_right() {
        let mut m = setup(true);
        // email, note NULL, salary 123456
        let mut row = vec![0x00, 0b0000_1000];
        put_lenenc_str(&mut row, b"ana.lopez@example.com");
        row.extend_from_slice(&123456i32.to_le_bytes());
        let out = m.on_packet(PacketKind::Row, &row).unwrap().unwrap();
        assert_eq!(out[1], 0b0000_1000);
        let mut r = Reader::new(&out[2..], "t");
        assert_eq!(r.lenenc_str().unwrap(), b"a***@example.com");
        assert_eq!(r.u32().unwrap(), 123000);
        assert!(r.is_empty());
    }

    #[test]
    fn error_messages_are_scanned() {
        let mut m = setup(false);
        let err = ErrInfo::new(
            1062,
            "23000",
            "Duplicate entry 'bob@example.org' for key 'email'",
        );
        let out = m
            .on_packet(PacketKind::Error, &err.encode())
            .unwrap()
            .unwrap();
        let back = ErrInfo::parse(&out).unwrap();
        assert_eq!(
            back.message,
            "Duplicate entry '[masked:email]' for key 'email'"
        );
        assert_eq!(back.code, 1062);
    }
}
