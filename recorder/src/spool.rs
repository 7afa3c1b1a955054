//! The spool log: an append-only file of length-prefixed, checksummed records.
//!
//! ```text
//! file   := MAGIC record*
//! record := MARK len:u32le hcrc:u32le crc:u32le body[len]
//!           MARK = F0 9F 93 BC, hcrc = CRC-32 of len's 4 bytes,
//!           crc = CRC-32 (IEEE) of body
//! body   := kind:u8 content
//! ```
//!
//! A process crash can only cut the end of a file (records are appended, never
//! rewritten); a host crash or a bad disk can also damage the middle. The marker
//! and the header checksum let a reader resynchronise: a record whose body
//! checksum fails is skipped by its (checked) length, a record whose header is
//! damaged is skipped by scanning forward for the next marker whose header and
//! body check out. Every skipped byte range is reported ([`LogReader::losses`]),
//! so one flipped byte costs one record, declared, never the rest of the log.
//!
//! Logs written by the previous version (`CHPSPL1\n`: `len crc body` without
//! marker) are still read; there, reading stops at the first damage.
//!
//! Frames (the bulk) and command summaries (one per statement) are encoded in
//! binary; the rare records (session start and end, checkpoints, gaps) as JSON.

use std::path::Path;

use chaperone_schemas::event::{CommandSummary, Direction, SessionEnd, SessionStart};
use chaperone_schemas::manifest::Gap;
use serde::{Deserialize, Serialize};

/// The first bytes of every spool log this version writes.
pub const MAGIC: &[u8; 8] = b"CHPSPL2\n";
/// The first bytes of a log of the previous version (no record marker).
pub const MAGIC_V1: &[u8; 8] = b"CHPSPL1\n";
/// The first bytes of every record (format 2): what resynchronisation scans for.
pub const MARK: [u8; 4] = [0xF0, 0x9F, 0x93, 0xBC];
/// Extension of spool logs.
pub const LOG_EXTENSION: &str = "spool";

/// Record header of format 2: marker, length, header CRC, body CRC.
const HEADER_LEN: usize = 16;
/// Record header of format 1: length, body CRC.
const HEADER_LEN_V1: usize = 8;
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
    out.extend_from_slice(&[0; HEADER_LEN]);
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
    seal_record(out, start);
}

/// Appends one JSON record to `out`.
pub fn encode_json<T: Serialize>(out: &mut Vec<u8>, kind: Kind, value: &T) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(kind as u8);
    serde_json::to_writer(&mut *out, value).expect("spool records serialize");
    seal_record(out, start);
}

/// Fills the header of the record that starts at `start` and runs to the end
/// of `out` (its body already written after `HEADER_LEN` placeholder bytes).
fn seal_record(out: &mut [u8], start: usize) {
    let len = ((out.len() - start - HEADER_LEN) as u32).to_le_bytes();
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    let h = &mut out[start..start + HEADER_LEN];
    h[..4].copy_from_slice(&MARK);
    h[4..8].copy_from_slice(&len);
    h[8..12].copy_from_slice(&crc32fast::hash(&len).to_le_bytes());
    h[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// A byte range of a log that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Offset of the first byte that could not be used.
    pub offset: u64,
    pub bytes_lost: u64,
    pub reason: String,
    /// The last record runs past the end of the file: a write cut short by a
    /// crash while appending (SIGKILL can stop a write between pages). Records
    /// are appended in order and a request is acknowledged only once its write
    /// returned, so after a process crash nothing in a cut write was
    /// acknowledged; whether that holds is decided against the log's commit
    /// watermark ([`crate::commit`]). Anything else (a bad checksum, an
    /// undecodable record) is damage.
    pub cut_write: bool,
}

/// Reads a log's records in order, skipping damaged ones (format 2) or
/// stopping at the first damage (format 1). Records borrow the log's bytes
/// (not the reader), so a caller can keep them.
pub struct LogReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Format 2: records carry a marker and a header checksum.
    framed: bool,
    losses: Vec<Torn>,
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

/// What was found at a position of a format 2 log.
enum Probe {
    /// A whole record: body start and length.
    Record(usize, usize),
    /// A good header whose body fails its checksum: the record's total length.
    BadBody(usize),
    /// A good header announcing more bytes than the file has.
    Cut(usize),
    /// No valid header here.
    Nothing,
}

impl<'a> LogReader<'a> {
    pub fn new(data: &'a [u8]) -> LogReader<'a> {
        let mut reader = LogReader {
            data,
            pos: 0,
            framed: true,
            losses: Vec::new(),
        };
        let head = &data[..data.len().min(MAGIC.len())];
        if head == MAGIC {
            reader.pos = MAGIC.len();
        } else if head == MAGIC_V1 {
            reader.pos = MAGIC.len();
            reader.framed = false;
        } else {
            let cut = data.len() < MAGIC.len() && MAGIC.starts_with(data);
            reader.lose_rest("the file does not start with the spool magic".into(), cut);
        }
        reader
    }

    /// The first damage found so far.
    pub fn torn(&self) -> Option<&Torn> {
        self.losses.first()
    }

    /// Every unusable byte range found so far, in file order.
    pub fn losses(&self) -> &[Torn] {
        &self.losses
    }

    /// Bytes of the log read so far (including the magic and skipped ranges).
    pub fn position(&self) -> u64 {
        self.pos as u64
    }

    fn lose(&mut self, from: usize, to: usize, reason: String, cut_write: bool) {
        self.losses.push(Torn {
            offset: from as u64,
            bytes_lost: (to - from) as u64,
            reason,
            cut_write,
        });
    }

    fn lose_rest(&mut self, reason: String, cut_write: bool) {
        self.lose(self.pos, self.data.len(), reason, cut_write);
        self.pos = self.data.len();
    }

    /// The next record, or None at the end (check [`LogReader::losses`]).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Record<'a>> {
        loop {
            let (start, len) = if self.framed {
                self.next_body()?
            } else {
                self.next_body_v1()?
            };
            let data: &'a [u8] = self.data;
            match decode(&data[start..start + len]) {
                Ok(r) => return Some(r),
                Err(reason) => {
                    // A record with good checksums that does not decode: written
                    // by an incompatible build. Skipped, declared (format 1:
                    // reading stops, as it always did).
                    let header = if self.framed {
                        HEADER_LEN
                    } else {
                        HEADER_LEN_V1
                    };
                    let offset = start - header;
                    if self.framed {
                        self.lose(offset, start + len, reason, false);
                    } else {
                        self.pos = offset;
                        self.lose_rest(reason, false);
                        return None;
                    }
                }
            }
        }
    }

    fn probe(&self, p: usize) -> Probe {
        let d = self.data;
        if d.len() - p < HEADER_LEN || d[p..p + 4] != MARK {
            return Probe::Nothing;
        }
        let len_bytes = &d[p + 4..p + 8];
        let hcrc = u32::from_le_bytes(d[p + 8..p + 12].try_into().expect("4 bytes"));
        if crc32fast::hash(len_bytes) != hcrc {
            return Probe::Nothing;
        }
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_RECORD as usize {
            return Probe::Nothing;
        }
        if len > d.len() - p - HEADER_LEN {
            return Probe::Cut(len);
        }
        let crc = u32::from_le_bytes(d[p + 12..p + 16].try_into().expect("4 bytes"));
        let body = &d[p + HEADER_LEN..p + HEADER_LEN + len];
        if crc32fast::hash(body) != crc {
            return Probe::BadBody(HEADER_LEN + len);
        }
        Probe::Record(p + HEADER_LEN, len)
    }

    /// Format 2: the next whole record, skipping (and declaring) damage.
    fn next_body(&mut self) -> Option<(usize, usize)> {
        loop {
            let p = self.pos;
            let remaining = self.data.len() - p;
            if remaining == 0 {
                return None;
            }
            match self.probe(p) {
                Probe::Record(start, len) => {
                    self.pos = start + len;
                    return Some((start, len));
                }
                Probe::BadBody(total) => {
                    self.lose(p, p + total, "record checksum mismatch".into(), false);
                    self.pos = p + total;
                }
                Probe::Cut(len) => {
                    // Only the end of the file can be a cut write; a later
                    // marker means this header is inside damage.
                    match self.resync(p + 1) {
                        None => {
                            self.lose_rest(
                                format!(
                                    "torn record: {len} bytes announced, {} present",
                                    remaining - HEADER_LEN
                                ),
                                true,
                            );
                            return None;
                        }
                        Some(next) => {
                            self.lose(
                                p,
                                next,
                                "record length runs into the next record".into(),
                                false,
                            );
                            self.pos = next;
                        }
                    }
                }
                Probe::Nothing => match self.resync(p + 1) {
                    None => {
                        let cut = remaining < HEADER_LEN
                            && MARK.starts_with(&self.data[p..p + remaining.min(4)]);
                        let reason = if cut {
                            format!("torn record header ({remaining} bytes at the end)")
                        } else {
                            "damaged record header; no whole record after it".into()
                        };
                        self.lose_rest(reason, cut);
                        return None;
                    }
                    Some(next) => {
                        self.lose(p, next, "damaged record header".into(), false);
                        self.pos = next;
                    }
                },
            }
        }
    }

    /// The offset of the next position from `from` that holds a whole record
    /// (a marker with good checksums). A payload could contain bytes that look
    /// like a record; this is only consulted inside damage, where the choice is
    /// between that risk and losing the rest of the log.
    fn resync(&self, from: usize) -> Option<usize> {
        let d = self.data;
        let mut p = from;
        while p + HEADER_LEN <= d.len() {
            let i = d[p..].windows(4).position(|w| w == MARK)?;
            p += i;
            if matches!(self.probe(p), Probe::Record(..)) {
                return Some(p);
            }
            p += 1;
        }
        None
    }

    /// Format 1: the next whole record; stops at the first damage.
    fn next_body_v1(&mut self) -> Option<(usize, usize)> {
        let remaining = self.data.len() - self.pos;
        if remaining == 0 {
            return None;
        }
        if remaining < HEADER_LEN_V1 {
            self.lose_rest(
                format!("torn record header ({remaining} bytes at the end)"),
                true,
            );
            return None;
        }
        let p = self.pos;
        let len = u32::from_le_bytes(self.data[p..p + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(self.data[p + 4..p + 8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD {
            self.lose_rest(format!("bad record length {len}"), false);
            return None;
        }
        if (len as usize) > remaining - HEADER_LEN_V1 {
            self.lose_rest(
                format!(
                    "torn record: {len} bytes announced, {} present",
                    remaining - HEADER_LEN_V1
                ),
                true,
            );
            return None;
        }
        let body = &self.data[p + HEADER_LEN_V1..p + HEADER_LEN_V1 + len as usize];
        if crc32fast::hash(body) != crc {
            self.lose_rest("record checksum mismatch".into(), false);
            return None;
        }
        self.pos = p + HEADER_LEN_V1 + len as usize;
        Some((p + HEADER_LEN_V1, len as usize))
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

    fn frames_of(data: &[u8]) -> (Vec<u64>, Vec<Torn>) {
        let mut r = LogReader::new(data);
        let mut seqs = Vec::new();
        while let Some(rec) = r.next() {
            if let Record::Frame(f) = rec {
                seqs.push(f.seq);
            }
        }
        (seqs, r.losses().to_vec())
    }

    fn long_log(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = sample_log();
        let mut starts = Vec::new();
        for seq in 2..n {
            starts.push(out.len());
            encode_frame(&mut out, &frame(seq, format!("payload {seq}").as_bytes()));
        }
        (out, starts)
    }

    #[test]
    fn a_flipped_byte_costs_one_record_declared_wherever_it_is() {
        let (log, starts) = long_log(40);
        let victim = 20usize; // the record of seq 20 starts at starts[18]
        let start = starts[victim - 2];
        let end = starts[victim - 1];
        for at in start..end {
            let mut bad = log.clone();
            bad[at] ^= 0x40;
            let (seqs, losses) = frames_of(&bad);
            let expected: Vec<u64> = (0..40).filter(|s| *s != victim as u64).collect();
            assert_eq!(seqs, expected, "flip at {at}");
            assert_eq!(losses.len(), 1, "flip at {at}: {losses:?}");
            assert_eq!(losses[0].offset, start as u64, "flip at {at}");
            assert_eq!(losses[0].bytes_lost, (end - start) as u64, "flip at {at}");
            assert!(!losses[0].cut_write);
        }
    }

    #[test]
    fn logs_of_the_previous_format_are_still_read() {
        // Format 1: `len crc body`, magic CHPSPL1.
        let mut v1 = MAGIC_V1.to_vec();
        let mut v2 = Vec::new();
        encode_frame(&mut v2, &frame(0, b"old"));
        let body = &v2[HEADER_LEN..];
        v1.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v1.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        v1.extend_from_slice(body);
        let (seqs, losses) = frames_of(&v1);
        assert_eq!(seqs, vec![0]);
        assert!(losses.is_empty());
        let (seqs, losses) = frames_of(&v1[..v1.len() - 1]);
        assert!(seqs.is_empty());
        assert!(losses[0].cut_write);
    }
}
