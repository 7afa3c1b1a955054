//! Where does a command's response end? The state machine that reads the
//! server's packets for one command and says when the exchange is over, while
//! collecting what the record needs (rows, affected rows, errors, column names).
//!
//! Spec: COM_QUERY response
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response.html>,
//! COM_STMT_PREPARE response
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_prepare.html#sect_protocol_com_stmt_prepare_response>,
//! binary result sets and cursors
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_fetch.html>.

use super::column::ColumnDef;
use super::command::*;
use super::lenenc::Reader;
use super::response::{ErrInfo, OkInfo, EOF_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER, OK_HEADER};
use super::result_hash::ResultHash;
use super::Malformed;

/// What kind of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// No response at all (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    None,
    /// One OK or ERR packet (COM_PING, COM_INIT_DB, ...).
    OkOrErr,
    /// Zero or more result sets, OK packets or a LOCAL INFILE request
    /// (COM_QUERY, COM_STMT_EXECUTE).
    ResultSets,
    /// Rows then a terminator (COM_STMT_FETCH).
    Rows,
    /// The prepare-OK packet and its parameter and column definitions.
    Prepare,
    /// Column definitions then a terminator (COM_FIELD_LIST).
    FieldList,
    /// One packet of plain text (COM_STATISTICS).
    Text,
}

impl ResponseKind {
    pub fn of(command: u8) -> Self {
        match command {
            COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA | COM_QUIT => ResponseKind::None,
            COM_QUERY | COM_STMT_EXECUTE => ResponseKind::ResultSets,
            COM_STMT_FETCH => ResponseKind::Rows,
            COM_STMT_PREPARE => ResponseKind::Prepare,
            COM_FIELD_LIST => ResponseKind::FieldList,
            COM_STATISTICS => ResponseKind::Text,
            _ => ResponseKind::OkOrErr,
        }
    }
}

/// What the packet just fed to [`Exchange::on_packet`] was, for code that
/// rewrites result sets (masking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// The column count that opens a result set.
    ColumnCount,
    /// A column definition of a result set (not of a prepare response).
    ColumnDef,
    /// A row of a result set (text or binary, depending on the command).
    Row,
    /// An ERR packet.
    Error,
    /// Anything else: OK, EOF, prepare metadata, text.
    Other,
}

/// What to do after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More packets of this response follow.
    More,
    /// The server asks the client for a local file (LOAD DATA LOCAL INFILE).
    LocalInfile,
    /// The response is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the first packet of a result (OK, ERR, LOCAL INFILE or column count).
    First,
    Columns {
        left: u64,
    },
    /// The EOF after column definitions (without CLIENT_DEPRECATE_EOF).
    ColumnsEof,
    Rows,
    /// Parameter and column definitions after a prepare-OK.
    PrepareDefs {
        params: u16,
        columns: u16,
    },
    PrepareParamsEof {
        columns: u16,
    },
    PrepareColumnsEof,
    FieldList,
    Text,
    Done,
}

/// The facts about a command's response that the record keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseFacts {
    pub rows: u64,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub warnings: u16,
    pub error: Option<ErrInfo>,
    pub columns: Vec<String>,
    /// The server status flags of the last OK / EOF packet.
    pub status: u16,
    /// For COM_STMT_PREPARE: the new statement's id, parameter and column counts.
    pub prepared: Option<(u32, u16, u16)>,
    /// Hex SHA-256 of the result sets as delivered ([`ResultHash`]); None when
    /// the response had no result set.
    pub result_hash: Option<String>,
}

/// Follows one command's response, packet by packet.
#[derive(Debug)]
pub struct Exchange {
    state: State,
    deprecate_eof: bool,
    /// COM_STMT_EXECUTE may open a cursor: then the result set ends after the metadata.
    binary: bool,
    facts: ResponseFacts,
    /// The last packet was part of a result set (column count, definition, row).
    result_packet: bool,
    hash: ResultHash,
    kind: PacketKind,
}

impl Exchange {
    pub fn new(command: u8, deprecate_eof: bool) -> Self {
        let state = match ResponseKind::of(command) {
            ResponseKind::None => State::Done,
            ResponseKind::OkOrErr | ResponseKind::ResultSets => State::First,
            ResponseKind::Rows => State::Rows,
            ResponseKind::Prepare => State::First,
            ResponseKind::FieldList => State::FieldList,
            ResponseKind::Text => State::Text,
        };
        Exchange {
            state,
            deprecate_eof,
            binary: command == COM_STMT_EXECUTE,
            facts: ResponseFacts::default(),
            result_packet: false,
            hash: ResultHash::new(),
            kind: PacketKind::Other,
        }
        .with_kind(command)
    }

    fn with_kind(mut self, command: u8) -> Self {
        if command == COM_STMT_PREPARE {
            self.facts.prepared = Some((0, 0, 0));
        }
        self
    }

    /// Is the exchange over (or was there never a response to wait for)?
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// What the last packet fed to [`Exchange::on_packet`] was.
    pub fn last_packet(&self) -> PacketKind {
        self.kind
    }

    pub fn facts(&self) -> &ResponseFacts {
        &self.facts
    }

    pub fn into_facts(mut self) -> ResponseFacts {
        self.facts.result_hash = self.hash.finish();
        self.facts
    }

    /// Tells the exchange what the client was sent for the packet just fed to
    /// [`Exchange::on_packet`] (the same bytes, or a masked version of them):
    /// result-set packets go into the result hash.
    pub fn delivered(&mut self, payload: &[u8]) {
        if self.result_packet {
            self.hash.update(payload);
        }
    }

    /// After a LOCAL INFILE exchange, the server sends OK or ERR.
    pub fn resume_after_local_infile(&mut self) {
        self.state = State::First;
    }

    /// Feeds the next packet from the server.
    pub fn on_packet(&mut self, payload: &[u8]) -> Result<Step, Malformed> {
        let before = self.state;
        let step = self.step(payload)?;
        self.kind = match before {
            _ if self.facts.error.is_some()
                && self.state == State::Done
                && payload.first() == Some(&ERR_HEADER) =>
            {
                PacketKind::Error
            }
            State::First if matches!(self.state, State::Columns { .. }) => PacketKind::ColumnCount,
            State::Columns { .. } => PacketKind::ColumnDef,
            State::Rows if self.result_packet => PacketKind::Row,
            _ => PacketKind::Other,
        };
        Ok(step)
    }

    fn step(&mut self, payload: &[u8]) -> Result<Step, Malformed> {
        let header = *payload
            .first()
            .ok_or_else(|| Malformed::new("server response", "empty packet"))?;
        let is_terminator = header == EOF_HEADER && payload.len() < 0xFF_FFFF;
        self.result_packet = false;
        match self.state {
            State::Done => Err(Malformed::new(
                "server response",
                "packet after the end of the response",
            )),
            State::First => {
                if header == ERR_HEADER {
                    return self.error(payload);
                }
                if header == OK_HEADER {
                    if let Some(prepared) = &mut self.facts.prepared {
                        let mut r = Reader::new(payload, "prepare OK");
                        r.u8()?;
                        let id = r.u32()?;
                        let columns = r.u16()?;
                        let params = r.u16()?;
                        r.u8()?;
                        self.facts.warnings = r.u16().unwrap_or(0);
                        *prepared = (id, params, columns);
                        self.state = State::PrepareDefs { params, columns };
                        return Ok(self.prepare_next());
                    }
                    let ok = OkInfo::parse_ok(payload)?;
                    return Ok(self.finish_result(ok, true));
                }
                if header == LOCAL_INFILE_HEADER {
                    return Ok(Step::LocalInfile);
                }
                if header == EOF_HEADER && self.facts.prepared.is_none() {
                    // COM_SET_OPTION and some old servers answer with EOF.
                    let ok = OkInfo::parse_terminator(payload, self.deprecate_eof)?;
                    return Ok(self.finish_result(ok, false));
                }
                let mut r = Reader::new(payload, "column count");
                let count = r.lenenc_int()?;
                if count == 0 || !r.is_empty() {
                    return Err(Malformed::new("column count", "not a column count"));
                }
                self.facts.columns.clear();
                self.state = State::Columns { left: count };
                self.result_packet = true;
                Ok(Step::More)
            }
            State::Columns { left } => {
                self.result_packet = true;
                if self.facts.columns.len() < 4096 {
                    self.facts.columns.push(ColumnDef::parse_name(payload)?);
                }
                self.state = if left > 1 {
                    State::Columns { left: left - 1 }
                } else if self.deprecate_eof {
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if !is_terminator {
                    return Err(Malformed::new(
                        "result set",
                        "expected EOF after column definitions",
                    ));
                }
                let eof = OkInfo::parse_terminator(payload, false)?;
                self.facts.status = eof.status;
                if self.binary && eof.cursor_exists() {
                    // A cursor was opened: rows come with COM_STMT_FETCH.
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if header == ERR_HEADER {
                    return self.error(payload);
                }
                if is_terminator {
                    let ok = OkInfo::parse_terminator(payload, self.deprecate_eof)?;
                    return Ok(self.finish_result(ok, false));
                }
                self.facts.rows += 1;
                self.result_packet = true;
                Ok(Step::More)
            }
            State::PrepareDefs { params, columns } => {
                if params > 0 {
                    self.state = State::PrepareDefs {
                        params: params - 1,
                        columns,
                    };
                    if params == 1 && !self.deprecate_eof {
                        self.state = State::PrepareParamsEof { columns };
                        return Ok(Step::More);
                    }
                } else {
                    self.state = State::PrepareDefs {
                        params: 0,
                        columns: columns - 1,
                    };
                    if self.facts.columns.len() < 4096 {
                        self.facts.columns.push(ColumnDef::parse_name(payload)?);
                    }
                    if columns == 1 && !self.deprecate_eof {
                        self.state = State::PrepareColumnsEof;
                        return Ok(Step::More);
                    }
                }
                Ok(self.prepare_next())
            }
            State::PrepareParamsEof { columns } => {
                if !is_terminator {
                    return Err(Malformed::new("prepare response", "expected EOF"));
                }
                self.state = State::PrepareDefs { params: 0, columns };
                Ok(self.prepare_next())
            }
            State::PrepareColumnsEof => {
                if !is_terminator {
                    return Err(Malformed::new("prepare response", "expected EOF"));
                }
                self.state = State::Done;
                Ok(Step::Done)
            }
            State::FieldList => {
                if header == ERR_HEADER {
                    return self.error(payload);
                }
                if is_terminator {
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                Ok(Step::More)
            }
            State::Text => {
                self.state = State::Done;
                Ok(Step::Done)
            }
        }
    }

    fn prepare_next(&mut self) -> Step {
        match self.state {
            State::PrepareDefs {
                params: 0,
                columns: 0,
            } => {
                self.state = State::Done;
                Step::Done
            }
            _ => Step::More,
        }
    }

    fn error(&mut self, payload: &[u8]) -> Result<Step, Malformed> {
        self.facts.error = Some(ErrInfo::parse(payload)?);
        self.state = State::Done;
        Ok(Step::Done)
    }

    fn finish_result(&mut self, ok: OkInfo, is_ok_packet: bool) -> Step {
        if is_ok_packet {
            // Saturating: the counts come from the server, one per result set
            // (found by fuzzing: a sum of huge counts overflowed).
            self.facts.affected_rows = self.facts.affected_rows.saturating_add(ok.affected_rows);
            if ok.last_insert_id != 0 {
                self.facts.last_insert_id = ok.last_insert_id;
            }
        }
        self.facts.warnings = self.facts.warnings.saturating_add(ok.warnings);
        self.facts.status = ok.status;
        if ok.more_results() {
            self.state = State::First;
            Step::More
        } else {
            self.state = State::Done;
            Step::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lenenc::put_lenenc_str;
    use super::super::response::*;
    use super::*;
    use crate::protocol::CapabilityFlags;

    fn coldef(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "db", "t", "t", name, name] {
            put_lenenc_str(&mut p, s.as_bytes());
        }
        p.extend_from_slice(&[0x0c, 45, 0, 0, 1, 0, 0, 253, 0, 0, 0, 0, 0]);
        p
    }

    fn run(ex: &mut Exchange, packets: &[Vec<u8>]) -> Vec<Step> {
        packets.iter().map(|p| ex.on_packet(p).unwrap()).collect()
    }

    fn ok(status: u16, affected: u64) -> OkInfo {
        OkInfo {
            affected_rows: affected,
            status,
            ..Default::default()
        }
    }

    #[test]
    fn affected_rows_of_many_result_sets_saturate() {
        let caps = CapabilityFlags::empty();
        let more = SERVER_MORE_RESULTS_EXISTS;
        let mut ex = Exchange::new(COM_QUERY, false);
        let steps = run(
            &mut ex,
            &[
                encode_ok(ok(more, u64::MAX), caps),
                encode_ok(ok(more, u64::MAX), caps),
                encode_ok(ok(2, 1), caps),
            ],
        );
        assert_eq!(steps, vec![Step::More, Step::More, Step::Done]);
        assert_eq!(ex.facts().affected_rows, u64::MAX);
    }

    #[test]
    fn text_result_set_with_and_without_eof() {
        for deprecate in [false, true] {
            let caps = if deprecate {
                CapabilityFlags::CLIENT_DEPRECATE_EOF
            } else {
                CapabilityFlags::empty()
            };
            let mut packets = vec![vec![2], coldef("a"), coldef("b")];
            if !deprecate {
                packets.push(encode_eof(ok(2, 0)));
            }
            packets.push(vec![1, b'x', 1, b'y']);
            packets.push(vec![0xFB, 1, b'y']);
            packets.push(encode_terminator(ok(2, 0), caps));
            let mut ex = Exchange::new(COM_QUERY, deprecate);
            let steps = run(&mut ex, &packets);
            assert_eq!(*steps.last().unwrap(), Step::Done);
            assert!(steps[..steps.len() - 1].iter().all(|s| *s == Step::More));
            assert_eq!(ex.facts().rows, 2);
            assert_eq!(ex.facts().columns, vec!["a", "b"]);
        }
    }

    #[test]
    fn result_hash_covers_result_sets_as_delivered() {
        let hash = |deprecate: bool, rows: &[&[u8]], deliver: &dyn Fn(&[u8]) -> Vec<u8>| {
            let caps = if deprecate {
                CapabilityFlags::CLIENT_DEPRECATE_EOF
            } else {
                CapabilityFlags::empty()
            };
            let mut packets = vec![vec![1], coldef("a")];
            if !deprecate {
                packets.push(encode_eof(ok(2, 0)));
            }
            packets.extend(rows.iter().map(|r| r.to_vec()));
            packets.push(encode_terminator(ok(2, 0), caps));
            let mut ex = Exchange::new(COM_QUERY, deprecate);
            for p in &packets {
                ex.on_packet(p).unwrap();
                ex.delivered(&deliver(p));
            }
            ex.into_facts().result_hash
        };
        let same = |p: &[u8]| p.to_vec();
        let a = hash(true, &[&[1, b'x'], &[1, b'y']], &same);
        assert!(a.is_some());
        // EOF packets and status flags are not part of the result.
        assert_eq!(a, hash(false, &[&[1, b'x'], &[1, b'y']], &same));
        assert_ne!(a, hash(true, &[&[1, b'y'], &[1, b'x']], &same));
        assert_ne!(a, hash(true, &[&[1, b'x']], &same));
        // What counts is what the client was sent.
        let masked = |p: &[u8]| {
            if p == [1, b'x'] {
                vec![1, b'*']
            } else {
                p.to_vec()
            }
        };
        assert_ne!(a, hash(true, &[&[1, b'x'], &[1, b'y']], &masked));
        // No result set, no hash.
        let mut ex = Exchange::new(COM_QUERY, true);
        let okp = encode_ok(ok(2, 1), CapabilityFlags::CLIENT_DEPRECATE_EOF);
        ex.on_packet(&okp).unwrap();
        ex.delivered(&okp);
        assert_eq!(ex.into_facts().result_hash, None);
    }

    #[test]
    fn multi_results_and_errors() {
        let caps = CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let mut ex = Exchange::new(COM_QUERY, true);
        let packets = vec![
            encode_ok(ok(SERVER_MORE_RESULTS_EXISTS, 3), caps),
            vec![1],
            coldef("x"),
            vec![1, b'1'],
            encode_terminator(ok(SERVER_MORE_RESULTS_EXISTS, 0), caps),
            ErrInfo::new(1146, "42S02", "Table 'x' doesn't exist").encode(),
        ];
        let steps = run(&mut ex, &packets);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(ex.facts().affected_rows, 3);
        assert_eq!(ex.facts().rows, 1);
        assert_eq!(ex.facts().error.as_ref().unwrap().code, 1146);
    }

    #[test]
    fn prepare_response() {
        let mut prep = vec![0, 9, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let mut ex = Exchange::new(COM_STMT_PREPARE, false);
        let packets = vec![
            std::mem::take(&mut prep),
            coldef("?"),
            coldef("?"),
            encode_eof(ok(2, 0)),
            coldef("c"),
            encode_eof(ok(2, 0)),
        ];
        let steps = run(&mut ex, &packets);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(ex.facts().prepared, Some((9, 2, 1)));
        let mut ex = Exchange::new(COM_STMT_PREPARE, true);
        assert_eq!(
            ex.on_packet(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            Step::Done
        );
    }

    #[test]
    fn cursor_ends_after_metadata() {
        let mut ex = Exchange::new(COM_STMT_EXECUTE, false);
        let steps = run(
            &mut ex,
            &[
                vec![1],
                coldef("a"),
                encode_eof(ok(SERVER_STATUS_CURSOR_EXISTS, 0)),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Done));
        let mut fetch = Exchange::new(COM_STMT_FETCH, false);
        let steps = run(
            &mut fetch,
            &[
                vec![0, 0, 1],
                encode_eof(ok(SERVER_STATUS_LAST_ROW_SENT, 0)),
            ],
        );
        assert_eq!(steps, vec![Step::More, Step::Done]);
    }

    #[test]
    fn garbage_from_the_server_is_an_error() {
        let mut ex = Exchange::new(COM_QUERY, true);
        assert!(ex.on_packet(&[]).is_err());
        let mut ex = Exchange::new(COM_QUERY, true);
        assert!(ex.on_packet(&[0xFC, 1]).is_err());
        let mut ex = Exchange::new(COM_QUERY, false);
        ex.on_packet(&[1]).unwrap();
        ex.on_packet(&coldef("a")).unwrap();
        assert!(ex.on_packet(&[1, b'x']).is_err());
        let mut ex = Exchange::new(COM_PING, true);
        ex.on_packet(&encode_ok(ok(2, 0), CapabilityFlags::empty()))
            .unwrap();
        assert!(ex.on_packet(&[0]).is_err());
    }
}
