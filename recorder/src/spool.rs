//! The spool log: an append-only file of length-prefixed, checksummed records.
//!
//! ```text
//! file   := MAGIC record*
//! record := len:u32le crc:u32le body[len]        crc = CRC-32 (IEEE) of body
//! body   := kind:u8 content
//! ```
//!
//! A crash can only tear the end of a file (records are appended, never
//! rewritten), so a reader stops at the first record whose length runs past the
//! end of the file or whose checksum does not match, and reports how many bytes it
//! could not use: the loss is known and recorded, never silent.
//!
//! Frames (the bulk) and command summaries (one per statement) are encoded in
//! binary; the rare records (session start and end, checkpoints, gaps) as JSON.

use std::path::Path;

use chaperone_schemas::event::{CommandSummary, Direction, SessionEnd, SessionStart};
use chaperone_schemas::manifest::Gap;
use serde::{Deserialize, Serialize};

/// The first bytes of every spool log.
pub const MAGIC: &[u8; 8] = b"CHPSPL1\n";
/// Extension of spool logs.
pub const LOG_EXTENSION: &str = "spool";

const HEADER_LEN: usize = 8;
/// The largest record a reader accepts (a frame is at most 1 GiB).
const MAX_RECORD: u32 = (1 << 30) + 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Header = 1,
    Checkpoint = 2,
    SessionStart = 3,
    Frame = 4,
    Command = 5,
    SessionEnd = 6,
    Gap = 7,
    /// A command summary in the binary encoding of `command_codec` (kind
    /// `Command` is the JSON one, still read from older spools).
    CommandBin = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Checkpoint,
            3 => Kind::SessionStart,
            4 => Kind::Frame,
            5 => Kind::Command,
            6 => Kind::SessionEnd,
            7 => Kind::Gap,
            8 => Kind::CommandBin,
            _ => return None,
        })
    }
}

/// The first record of a log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogHeader {
    pub gateway_id: String,
    pub created_at_ns: i64,
}

/// A command whose request was recorded but whose summary was not (yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    pub command_index: u64,
    pub time_ns: i64,
    /// The command byte and, for text commands, the start of the SQL.
    pub command: u8,
    pub sql: Option<String>,
}

/// What the spool knows of a session that is open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenSession {
    pub start: SessionStart,
    /// The next frame sequence number expected.
    pub next_seq: u64,
    /// The next command index expected.
    pub next_command: u64,
    pub pending: Option<PendingRequest>,
}

/// The sessions open when a log was started, so that each log can be sealed on
/// its own (identity columns, crash recovery).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub sessions: Vec<OpenSession>,
}

/// A command summary with what the spool's capture cap did to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    pub summary: CommandSummary,
    #[serde(default)]
    pub capped: bool,
    #[serde(default)]
    pub bytes_dropped: u64,
}

/// A frame as stored in the spool (payload possibly capped).
#[derive(Debug, Clone, Copy)]
pub struct FrameRecord<'a> {
    pub session_id: &'a str,
    pub seq: u64,
    pub command_index: u64,
    pub time_ns: i64,
    pub direction: Direction,
    pub payload_length: u64,
    pub capped: bool,
    pub payload: &'a [u8],
}

/// One decoded record.
#[derive(Debug)]
pub enum Record<'a> {
    Header(LogHeader),
    Checkpoint(Checkpoint),
    SessionStart(Box<SessionStart>),
    Frame(FrameRecord<'a>),
    Command(Box<CommandRecord>),
    SessionEnd(Box<SessionEnd>),
    Gap(Gap),
}

const FRAME_FIXED: usize = 8 + 8 + 8 + 1 + 1 + 8 + 2;

/// Appends one frame record to `out`.
pub fn encode_frame(out: &mut Vec<u8>, f: &FrameRecord<'_>) {
    let sid = f.session_id.as_bytes();
    let sid_len = sid.len().min(u16::MAX as usize);
    let body_len = 1 + FRAME_FIXED + sid_len + f.payload.len();
    let start = out.len();
    out.reserve(HEADER_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(Kind::Frame as u8);
    out.extend_from_slice(&f.seq.to_le_bytes());
    out.extend_from_slice(&f.command_index.to_le_bytes());
    out.extend_from_slice(&f.time_ns.to_le_bytes());
    out.push(match f.direction {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
    });
    out.push(u8::from(f.capped));
    out.extend_from_slice(&f.payload_length.to_le_bytes());
    out.extend_from_slice(&(sid_len as u16).to_le_bytes());
    out.extend_from_slice(&sid[..sid_len]);
    out.extend_from_slice(f.payload);
    seal_record(out, start);
}

/// Appends one command summary record to `out`.
pub fn encode_command(out: &mut Vec<u8>, record: &CommandRecord) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(Kind::CommandBin as u8);
    crate::command_codec::encode(out, record);
    let body_len = (out.len() - start - HEADER_LEN) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    seal_record(out, start);
}

/// Appends one JSON record to `out`.
pub fn encode_json<T: Serialize>(out: &mut Vec<u8>, kind: Kind, value: &T) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(kind as u8);
    serde_json::to_writer(&mut *out, value).expect("spool records serialize");
    let body_len = (out.len() - start - HEADER_LEN) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    seal_record(out, start);
}

fn seal_record(out: &mut [u8], start: usize) {
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why reading stopped before the end of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Offset of the first record that could not be used.
    pub offset: u64,
    pub bytes_lost: u64,
    pub reason: String,
    /// The last record runs past the end of the file: a write cut short by a
    /// crash while appending (SIGKILL can stop a write between pages). Records
    /// are appended in order and a request is acknowledged only once its write
    /// returned, so nothing in a cut write was acknowledged. Anything else
    /// (a bad checksum, an undecodable record) is damage.
    pub cut_write: bool,
}

/// Reads a log's records in order; stops at the end or at the first damage.
/// Records borrow the log's bytes (not the reader), so a caller can keep them.
pub struct LogReader<'a> {
    data: &'a [u8],
    pos: usize,
    torn: Option<Torn>,
}

/// Reads a whole log into `buf` (replacing its contents, keeping its capacity:
/// the sealer reuses one buffer, so sealing does not fault in fresh pages).
pub fn read_log(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    buf.clear();
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    buf.reserve(len);
    file.read_to_end(buf)?;
    Ok(())
}

impl<'a> LogReader<'a> {
    pub fn new(data: &'a [u8]) -> LogReader<'a> {
        let mut reader = LogReader {
            data,
            pos: 0,
            torn: None,
        };
        if reader.data.len() < MAGIC.len() || &reader.data[..MAGIC.len()] != MAGIC {
            reader.tear(
                "the file does not start with the spool magic".into(),
                data.len() < MAGIC.len() && MAGIC.starts_with(data),
            );
        } else {
            reader.pos = MAGIC.len();
        }
        reader
    }

    /// Set once reading stopped on damage.
    pub fn torn(&self) -> Option<&Torn> {
        self.torn.as_ref()
    }

    /// Bytes of whole records read so far (including the magic).
    pub fn position(&self) -> u64 {
        self.pos as u64
    }

    fn tear(&mut self, reason: String, cut_write: bool) {
        self.torn = Some(Torn {
            offset: self.pos as u64,
            bytes_lost: (self.data.len() - self.pos) as u64,
            reason,
            cut_write,
        });
        self.pos = self.data.len();
    }

    /// The next record, or None at the end (check [`LogReader::torn`]).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Record<'a>> {
        let (start, len) = self.next_body()?;
        let data: &'a [u8] = self.data;
        match decode(&data[start..start + len]) {
            Ok(r) => Some(r),
            Err(reason) => {
                // A record with a good checksum that does not decode: written by
                // an incompatible build. Stop here, reporting it (fields set
                // directly: the data stays borrowed in the other arm).
                let offset = start - HEADER_LEN;
                self.torn = Some(Torn {
                    offset: offset as u64,
                    bytes_lost: (self.data.len() - offset) as u64,
                    reason,
                    cut_write: false,
                });
                self.pos = self.data.len();
                None
            }
        }
    }

    /// Finds the next whole record; returns its body's (start, len).
    fn next_body(&mut self) -> Option<(usize, usize)> {
        let remaining = self.data.len() - self.pos;
        if remaining == 0 {
            return None;
        }
        if remaining < HEADER_LEN {
            self.tear(
                format!("torn record header ({remaining} bytes at the end)"),
                true,
            );
            return None;
        }
        let p = self.pos;
        let len = u32::from_le_bytes(self.data[p..p + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(self.data[p + 4..p + 8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD {
            self.tear(format!("bad record length {len}"), false);
            return None;
        }
        if (len as usize) > remaining - HEADER_LEN {
            self.tear(
                format!(
                    "torn record: {len} bytes announced, {} present",
                    remaining - HEADER_LEN
                ),
                true,
            );
            return None;
        }
        let body = &self.data[p + HEADER_LEN..p + HEADER_LEN + len as usize];
        if crc32fast::hash(body) != crc {
            self.tear("record checksum mismatch".into(), false);
            return None;
        }
        self.pos = p + HEADER_LEN + len as usize;
        Some((p + HEADER_LEN, len as usize))
    }
}

fn decode(body: &[u8]) -> Result<Record<'_>, String> {
    let kind = Kind::from_u8(body[0]).ok_or_else(|| format!("unknown record kind {}", body[0]))?;
    let content = &body[1..];
    let json = |what: &str| format!("bad {what} record");
    Ok(match kind {
        Kind::Frame => Record::Frame(decode_frame(content).ok_or_else(|| json("frame"))?),
        Kind::Header => {
            Record::Header(serde_json::from_slice(content).map_err(|_| json("header"))?)
        }
        Kind::Checkpoint => {
            Record::Checkpoint(serde_json::from_slice(content).map_err(|_| json("checkpoint"))?)
        }
        Kind::SessionStart => Record::SessionStart(Box::new(
            serde_json::from_slice(content).map_err(|_| json("session start"))?,
        )),
        Kind::Command => Record::Command(Box::new(
            serde_json::from_slice(content).map_err(|_| json("command"))?,
        )),
        Kind::CommandBin => Record::Command(Box::new(
            crate::command_codec::decode(content).ok_or_else(|| json("command"))?,
        )),
        Kind::SessionEnd => Record::SessionEnd(Box::new(
            serde_json::from_slice(content).map_err(|_| json("session end"))?,
        )),
        Kind::Gap => Record::Gap(serde_json::from_slice(content).map_err(|_| json("gap"))?),
    })
}

fn decode_frame(c: &[u8]) -> Option<FrameRecord<'_>> {
    if c.len() < FRAME_FIXED {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
    let direction = match c[24] {
        0 => Direction::ClientToServer,
        1 => Direction::ServerToClient,
        _ => return None,
    };
    let sid_len = u16::from_le_bytes([c[34], c[35]]) as usize;
    let sid = c.get(FRAME_FIXED..FRAME_FIXED + sid_len)?;
    Some(FrameRecord {
        seq: u64_at(0),
        command_index: u64_at(8),
        time_ns: u64_at(16) as i64,
        direction,
        capped: c[25] != 0,
        payload_length: u64_at(26),
        session_id: std::str::from_utf8(sid).ok()?,
        payload: &c[FRAME_FIXED + sid_len..],
    })
}

/// The bytes a new log starts with: magic, header, checkpoint.
pub fn log_preamble(header: &LogHeader, checkpoint: &Checkpoint) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    encode_json(&mut out, Kind::Header, header);
    encode_json(&mut out, Kind::Checkpoint, checkpoint);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> FrameRecord<'_> {
        FrameRecord {
            session_id: "sess-1",
            seq,
            command_index: 3,
            time_ns: 1_700_000_000_000_000_000,
            direction: Direction::ServerToClient,
            payload_length: payload.len() as u64 + 7,
            capped: true,
            payload,
        }
    }

    fn sample_log() -> Vec<u8> {
        let mut out = log_preamble(
            &LogHeader {
                gateway_id: "gw".into(),
                created_at_ns: 1,
            },
            &Checkpoint::default(),
        );
        encode_frame(&mut out, &frame(0, b"hello"));
        encode_frame(&mut out, &frame(1, b"world!"));
        out
    }

    #[test]
    fn records_round_trip() {
        let log = sample_log();
        let mut r = LogReader::new(&log);
        assert!(matches!(r.next(), Some(Record::Header(h)) if h.gateway_id == "gw"));
        assert!(matches!(r.next(), Some(Record::Checkpoint(_))));
        match r.next() {
            Some(Record::Frame(f)) => {
                assert_eq!(
                    (f.seq, f.payload, f.session_id),
                    (0, &b"hello"[..], "sess-1")
                );
                assert_eq!(f.payload_length, 12);
                assert!(f.capped);
                assert_eq!(f.direction, Direction::ServerToClient);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.next(), Some(Record::Frame(f)) if f.payload == b"world!"));
        assert!(r.next().is_none());
        assert!(r.torn().is_none());
    }

    #[test]
    fn a_torn_tail_is_reported_with_its_size() {
        let full = sample_log();
        for cut in 1..20 {
            let data = &full[..full.len() - cut];
            let mut r = LogReader::new(data);
            let mut frames = 0;
            while let Some(rec) = r.next() {
                if matches!(rec, Record::Frame(_)) {
                    frames += 1;
                }
            }
            assert_eq!(frames, 1, "cut {cut}");
            let torn = r.torn().expect("torn");
            assert_eq!(torn.offset + torn.bytes_lost, data.len() as u64);
            assert!(torn.bytes_lost > 0);
            assert!(
                torn.cut_write,
                "cut {cut}: the last record runs past the end"
            );
        }
        // A flipped byte inside the last record: checksum mismatch.
        let mut bad = full.clone();
        let n = bad.len();
        bad[n - 2] ^= 0xFF;
        let mut r = LogReader::new(&bad);
        while r.next().is_some() {}
        assert!(r.torn().unwrap().reason.contains("checksum"));
        assert!(!r.torn().unwrap().cut_write, "damage, not a cut write");
    }
}
