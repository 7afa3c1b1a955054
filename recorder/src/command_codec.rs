//! The binary encoding of command summaries in the spool (record kind
//! `CommandBin`).
//!
//! One summary per statement is the spool's second most frequent record after
//! frames; JSON cost more than all the statement's frames together (encoding on
//! the gateway's path, decoding at sealing). This is a flat, field-by-field
//! encoding in declaration order:
//!
//! ```text
//! u64 / i64 / u32 / u16: little-endian     bool: one byte 0 | 1
//! string: u32le length + UTF-8 bytes       option: one byte 0 (none) | 1 + value
//! list of strings: u32le count + strings
//! ```
//!
//! Every field is destructured by name without `..`, on both sides: a field added
//! to `CommandSummary` does not compile until it is encoded here too. Readers
//! still decode JSON command records (kind `Command`) from older spools.

use chaperone_schemas::event::CommandSummary;

use crate::spool::CommandRecord;

/// Appends the encoding of `record` to `out`.
pub fn encode(out: &mut Vec<u8>, record: &CommandRecord) {
    let CommandRecord {
        summary,
        capped,
        bytes_dropped,
    } = record;
    let CommandSummary {
        session_id,
        command_index,
        started_at_ns,
        duration_ns,
        command,
        sql,
        statement_id,
        params,
        database,
        rows_returned,
        rows_affected,
        last_insert_id,
        warnings,
        error_code,
        error_message,
        result_columns,
        refused,
        digest,
        normalized_sql,
        statement_class,
        tables_read,
        tables_written,
        parse_error,
        result_hash,
        verdict,
        verdict_reason,
        policy,
        policy_rule,
        approval_id,
        approvers,
        approval_wait_ms,
        masked_columns,
    } = summary;
    let mut w = Writer(out);
    w.bool(*capped);
    w.u64(*bytes_dropped);
    w.str(session_id);
    w.u64(*command_index);
    w.u64(*started_at_ns as u64);
    w.u64(*duration_ns);
    w.str(command);
    w.opt_str(sql);
    w.opt(statement_id.map(u64::from));
    w.strs(params);
    w.opt_str(database);
    w.u64(*rows_returned);
    w.u64(*rows_affected);
    w.u64(*last_insert_id);
    w.u64(u64::from(*warnings));
    w.opt(error_code.map(u64::from));
    w.opt_str(error_message);
    w.strs(result_columns);
    w.bool(*refused);
    w.opt_str(digest);
    w.opt_str(normalized_sql);
    w.opt_str(statement_class);
    w.strs(tables_read);
    w.strs(tables_written);
    w.opt_str(parse_error);
    w.opt_str(result_hash);
    w.opt_str(verdict);
    w.opt_str(verdict_reason);
    w.opt_str(policy);
    w.opt_str(policy_rule);
    w.opt_str(approval_id);
    w.strs(approvers);
    w.opt(*approval_wait_ms);
    w.strs(masked_columns);
}

/// Decodes a record written by [`encode`]; None if the bytes do not match.
pub fn decode(bytes: &[u8]) -> Option<CommandRecord> {
    let mut r = Reader(bytes);
    let capped = r.bool()?;
    let bytes_dropped = r.u64()?;
    let summary = CommandSummary {
        session_id: r.str()?,
        command_index: r.u64()?,
        started_at_ns: r.u64()? as i64,
        duration_ns: r.u64()?,
        command: r.str()?,
        sql: r.opt_str()?,
        statement_id: r.opt()?.map(u32::try_from).transpose().ok()?,
        params: r.strs()?,
        database: r.opt_str()?,
        rows_returned: r.u64()?,
        rows_affected: r.u64()?,
        last_insert_id: r.u64()?,
        warnings: u16::try_from(r.u64()?).ok()?,
        error_code: r.opt()?.map(u16::try_from).transpose().ok()?,
        error_message: r.opt_str()?,
        result_columns: r.strs()?,
        refused: r.bool()?,
        digest: r.opt_str()?,
        normalized_sql: r.opt_str()?,
        statement_class: r.opt_str()?,
        tables_read: r.strs()?,
        tables_written: r.strs()?,
        parse_error: r.opt_str()?,
        result_hash: r.opt_str()?,
        verdict: r.opt_str()?,
        verdict_reason: r.opt_str()?,
        policy: r.opt_str()?,
        policy_rule: r.opt_str()?,
        approval_id: r.opt_str()?,
        approvers: r.strs()?,
        approval_wait_ms: r.opt()?,
        masked_columns: r.strs()?,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(CommandRecord {
        summary,
        capped,
        bytes_dropped,
    })
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: &Option<String>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
        }
    }
    fn opt(&mut self, v: Option<u64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.u64(v);
            }
        }
    }
    fn strs(&mut self, list: &[String]) {
        self.0.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for s in list {
            self.str(s);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bool(&mut self) -> Option<bool> {
        match self.take(1)?[0] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        Some(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn opt(&mut self) -> Option<Option<u64>> {
        Some(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.u32()? as usize;
        // Each string takes at least its 4-byte length: a damaged count cannot
        // make this allocate more than the record holds.
        if n > self.0.len() / 4 {
            return None;
        }
        (0..n).map(|_| self.str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_summary_round_trips() {
        let summary = CommandSummary {
            session_id: "s-1".into(),
            command_index: 7,
            started_at_ns: 1_700_000_000_123_456_789,
            duration_ns: 42_000,
            command: "COM_STMT_EXECUTE".into(),
            sql: Some("UPDATE t SET v = ? WHERE id = ?".into()),
            statement_id: Some(3),
            params: vec!["'é'".into(), "5".into()],
            database: Some("db".into()),
            rows_returned: 0,
            rows_affected: 1,
            last_insert_id: 99,
            warnings: 2,
            error_code: Some(1062),
            error_message: Some("Duplicate entry".into()),
            result_columns: vec!["a".into(), String::new()],
            refused: true,
            digest: Some("abc".into()),
            normalized_sql: Some("UPDATE t SET v = ? WHERE id = ?".into()),
            statement_class: Some("write".into()),
            tables_read: vec![],
            tables_written: vec!["db.t".into()],
            parse_error: Some("no".into()),
            result_hash: Some("ff".into()),
            verdict: Some("approved".into()),
            verdict_reason: Some("rule".into()),
            policy: Some("p".into()),
            policy_rule: Some("r".into()),
            approval_id: Some("a-1".into()),
            approvers: vec!["alice".into()],
            approval_wait_ms: Some(1500),
            masked_columns: vec!["c:hash".into()],
        };
        let record = CommandRecord {
            summary,
            capped: true,
            bytes_dropped: 12,
        };
        let mut out = Vec::new();
        encode(&mut out, &record);
        let back = decode(&out).expect("decodes");
        // Compared through JSON: CommandSummary has no PartialEq.
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&record).unwrap()
        );
        // Defaults too.
        let empty = CommandRecord {
            summary: CommandSummary::default(),
            capped: false,
            bytes_dropped: 0,
        };
        let mut out = Vec::new();
        encode(&mut out, &empty);
        assert_eq!(
            serde_json::to_string(&decode(&out).unwrap()).unwrap(),
            serde_json::to_string(&empty).unwrap()
        );
        // Truncated or trailing bytes do not decode.
        assert!(decode(&out[..out.len() - 1]).is_none());
        out.push(0);
        assert!(decode(&out).is_none());
    }
}
