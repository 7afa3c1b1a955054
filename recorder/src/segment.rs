//! Sealing: one spool log becomes one segment — zstd Parquet files (one per table
//! and hour) and an unsigned manifest draft.
//!
//! Rows are written sorted by session, then sequence (frames) / command index
//! (statements) / time (sessions), with page indexes and bloom filters on the
//! lookup columns ([`Table::bloom_filter_columns`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use chaperone_schemas::event::{CommandSummary, Direction, SessionEnd};
use chaperone_schemas::layout::Layout;
use chaperone_schemas::manifest::{Gap, Manifest, ManifestFile, PreviousManifest, SessionSeqs};
use chaperone_schemas::rows::{Capture, FrameRow, FrameRows, SessionRows, StatementRows};
use chaperone_schemas::tables::Table;

use chaperone_archive::parquet_file::{
    order_rows, take_rows, time_range, write_parquet, EncodeError,
};

use crate::spool::{Checkpoint, LogReader, OpenSession, PendingRequest, Record};

/// Sealing failed: the log stays in the spool and is retried.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What every segment of a gateway shares.
#[derive(Debug, Clone)]
pub struct SegmentSettings {
    pub gateway_id: String,
    pub layout: Layout,
    pub zstd_level: i32,
}

/// The sessions open at a point of the spool, by id.
pub type SessionTable = HashMap<String, OpenSession>;

/// A sealed segment in a local directory, ready for upload once signed.
#[derive(Debug)]
pub struct Sealed {
    pub manifest: Manifest,
    /// Local file and its object path, in the order of `manifest.files`.
    pub files: Vec<(PathBuf, String)>,
    /// The sessions still open at the end of the log.
    pub open_sessions: SessionTable,
    /// Rows written, per table.
    pub rows: BTreeMap<Table, u64>,
    /// Payload bytes of the frames (as captured).
    pub payload_bytes: u64,
}

/// How the log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// Rotated by a running gateway: open sessions go on in the next log.
    Rotated,
    /// The last log of a gateway that stopped without closing it (a crash):
    /// open sessions are ended with reason `gateway_stopped`, and a command whose
    /// request was recorded without its summary gets a statement row with verdict
    /// `unknown`.
    Interrupted,
}

/// Reads the log at `log` and writes its segment files into `out_dir`.
///
/// `carried`: the sessions open at the end of the previous log, when known
/// (otherwise the log's own checkpoint is used). `read_buf`: where the log is
/// read to; kept by the caller between seals so its pages are reused.
#[allow(clippy::too_many_arguments)]
pub fn seal_log(
    log: &Path,
    carried: Option<SessionTable>,
    end: LogEnd,
    settings: &SegmentSettings,
    segment: u64,
    previous: Option<PreviousManifest>,
    out_dir: &Path,
    read_buf: &mut Vec<u8>,
) -> Result<Sealed, SealError> {
    crate::spool::read_log(log, read_buf)?;
    let mut reader = LogReader::new(read_buf);
    let log_name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let gateway = &settings.gateway_id;
    let mut sessions: SessionTable = carried.clone().unwrap_or_default();
    let mut have_state = carried.is_some();
    // Sized from the log: payloads are most of it, and a frame record takes at
    // least ~60 bytes. Reserved, not touched: no copies from growing.
    let mut frames = FrameRows::with_capacity(
        gateway,
        (read_buf.len() / 64).max(1024),
        read_buf.len().max(64 * 1024),
    );
    let mut statements = StatementRows::new(gateway);
    let mut session_rows = SessionRows::new(gateway);
    let mut manifest = Manifest::new(gateway, segment, previous);
    let mut started: Vec<String> = Vec::new();
    let mut ended: Vec<(String, u64)> = Vec::new();
    let mut gaps: Vec<Gap> = Vec::new();
    let mut last_time_ns = i64::MIN;
    let mut payload_bytes = 0u64;

    while let Some(record) = reader.next() {
        match record {
            Record::Header(h) => {
                if &h.gateway_id != gateway {
                    tracing::warn!(
                        log = %log_name,
                        log_gateway = %h.gateway_id,
                        "spool log was written by another gateway id; sealing it under this one"
                    );
                }
            }
            Record::Checkpoint(c) => {
                if !have_state {
                    sessions = c
                        .sessions
                        .into_iter()
                        .map(|s| (s.start.session_id.clone(), s))
                        .collect();
                    have_state = true;
                }
            }
            Record::SessionStart(start) => {
                session_rows.push_start(&start);
                last_time_ns = last_time_ns.max(start.started_at_ns);
                started.push(start.session_id.clone());
                sessions.insert(
                    start.session_id.clone(),
                    OpenSession {
                        start: *start,
                        next_seq: 0,
                        next_command: 0,
                        pending: None,
                    },
                );
            }
            Record::Frame(f) => {
                last_time_ns = last_time_ns.max(f.time_ns);
                payload_bytes += f.payload.len() as u64;
                if let Some(s) = sessions.get_mut(f.session_id) {
                    track_frame(s, f.seq, f.command_index, f.time_ns, f.direction, f.payload);
                }
                frames.push(FrameRow {
                    session_id: f.session_id,
                    seq: f.seq,
                    command_index: f.command_index,
                    time_ns: f.time_ns,
                    direction: f.direction,
                    payload: f.payload,
                    payload_length: f.payload_length,
                    capped: f.capped,
                });
            }
            Record::Command(c) => {
                last_time_ns = last_time_ns.max(c.summary.started_at_ns);
                let session = sessions.get_mut(&c.summary.session_id);
                let start = session.as_ref().map(|s| &s.start);
                statements.push(
                    &c.summary,
                    start,
                    Capture {
                        capped: c.capped,
                        bytes_dropped: c.bytes_dropped,
                    },
                );
                if let Some(s) = session {
                    track_command(s, c.summary.command_index);
                }
            }
            Record::SessionEnd(e) => {
                last_time_ns = last_time_ns.max(e.ended_at_ns);
                let open = sessions.remove(&e.session_id);
                session_rows.push_end(&e, open.as_ref().map(|s| &s.start));
                ended.push((e.session_id.clone(), e.frames));
            }
            Record::Gap(g) => gaps.push(g),
        }
    }

    manifest.spool_losses = crate::commit::declare(
        log,
        reader.losses(),
        read_buf.len() as u64,
        end == LogEnd::Interrupted,
    );

    if end == LogEnd::Interrupted {
        let at = if last_time_ns == i64::MIN {
            chaperone_schemas::event::now_ns()
        } else {
            last_time_ns
        };
        let mut ids: Vec<String> = sessions.keys().cloned().collect();
        ids.sort();
        for id in ids {
            let Some(mut s) = sessions.remove(&id) else {
                continue;
            };
            if let Some(p) = s.pending.take() {
                statements.push(
                    &interrupted_statement(&s, &p),
                    Some(&s.start),
                    Capture::default(),
                );
                s.next_command = p.command_index + 1;
            }
            let end = SessionEnd {
                session_id: id.clone(),
                ended_at_ns: at.max(s.start.started_at_ns),
                reason: "gateway_stopped".into(),
                commands: s.next_command,
                frames: s.next_seq,
                bytes_from_client: 0,
                bytes_to_client: 0,
            };
            session_rows.push_end(&end, Some(&s.start));
            ended.push((id, s.next_seq));
            tracing::warn!(
                session = %end.session_id,
                frames = end.frames,
                "session cut by a gateway stop: ended in the archive as gateway_stopped"
            );
        }
    }

    let frames = frames.finish()?;
    let statements = statements.finish()?;
    let sessions_batch = session_rows.finish()?;

    let mut files = Vec::new();
    let mut rows = BTreeMap::new();
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    std::fs::create_dir_all(out_dir)?;
    for (table, batch) in [
        (Table::Sessions, &sessions_batch),
        (Table::Statements, &statements),
        (Table::Frames, &frames),
    ] {
        rows.insert(table, batch.num_rows() as u64);
        for (partition, indices) in order_rows(table, batch) {
            let sorted = take_rows(batch, &indices)?;
            if table == Table::Frames {
                collect_seqs(&sorted, &mut seqs);
            }
            let local = out_dir.join(format!("{}-{}.parquet", table.name(), files.len()));
            let (sha256, bytes) = write_parquet(&local, table, &sorted, settings.zstd_level)?;
            let (min, max) = time_range(table, &sorted);
            let path = settings
                .layout
                .data_file(table, partition, gateway, segment);
            manifest.files.push(ManifestFile {
                table: table.name().to_string(),
                path: path.clone(),
                sha256,
                bytes,
                rows: sorted.num_rows() as u64,
                min_time_ns: min,
                max_time_ns: max,
            });
            files.push((local, path));
        }
    }
    manifest.min_time_ns = manifest.files.iter().map(|f| f.min_time_ns).min();
    manifest.max_time_ns = manifest.files.iter().map(|f| f.max_time_ns).max();
    manifest.sessions = session_seqs(seqs, &started, &ended);
    manifest.gaps = gaps;
    Ok(Sealed {
        manifest,
        files,
        open_sessions: sessions,
        rows,
        payload_bytes,
    })
}

/// Keeps a session's state current with one more frame (shared with the writer).
pub fn track_frame(
    s: &mut OpenSession,
    seq: u64,
    command_index: u64,
    time_ns: i64,
    direction: Direction,
    payload: &[u8],
) {
    s.next_seq = s.next_seq.max(seq + 1);
    if direction == Direction::ClientToServer
        && command_index >= s.next_command
        && s.pending
            .as_ref()
            .is_none_or(|p| p.command_index != command_index)
    {
        let command = payload.first().copied().unwrap_or(0);
        // COM_QUERY and COM_STMT_PREPARE carry SQL text; keep its start.
        let sql = matches!(command, 0x03 | 0x16).then(|| {
            let text = &payload[1..payload.len().min(1 + 4096)];
            String::from_utf8_lossy(text).into_owned()
        });
        s.pending = Some(PendingRequest {
            command_index,
            time_ns,
            command,
            sql,
        });
    }
}

/// Keeps a session's state current with one more command summary.
pub fn track_command(s: &mut OpenSession, command_index: u64) {
    s.next_command = s.next_command.max(command_index + 1);
    if s.pending
        .as_ref()
        .is_some_and(|p| p.command_index <= command_index)
    {
        s.pending = None;
    }
}

fn interrupted_statement(s: &OpenSession, p: &PendingRequest) -> CommandSummary {
    CommandSummary {
        session_id: s.start.session_id.clone(),
        command_index: p.command_index,
        started_at_ns: p.time_ns,
        command: chaperone_schemas::command::name(p.command).to_string(),
        sql: p.sql.clone(),
        verdict: Some("unknown".into()),
        verdict_reason: Some(
            "the gateway stopped before the command completed: it was forwarded, its outcome is unknown"
                .into(),
        ),
        ..Default::default()
    }
}

fn collect_seqs(frames: &RecordBatch, seqs: &mut BTreeMap<String, Vec<u64>>) {
    let session = frames.column(1).as_string::<i32>();
    let seq = frames
        .column(2)
        .as_primitive::<arrow::datatypes::Int64Type>();
    let mut i = 0;
    while i < frames.num_rows() {
        let id = session.value(i);
        let list = seqs.entry(id.to_string()).or_default();
        while i < frames.num_rows() && session.value(i) == id {
            list.push(seq.value(i) as u64);
            i += 1;
        }
    }
}

/// Per-session inclusive seq ranges, with start/end flags.
fn session_seqs(
    seqs: BTreeMap<String, Vec<u64>>,
    started: &[String],
    ended: &[(String, u64)],
) -> Vec<SessionSeqs> {
    let mut out: BTreeMap<String, SessionSeqs> = BTreeMap::new();
    for (id, mut list) in seqs {
        list.sort_unstable();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for s in list {
            match ranges.last_mut() {
                Some(r) if s == r[1] + 1 => r[1] = s,
                // A repeated number is kept as its own range so that verify sees it.
                _ => ranges.push([s, s]),
            }
        }
        out.insert(
            id.clone(),
            SessionSeqs {
                session_id: id,
                seq_ranges: ranges,
                started: false,
                ended_with_frames: None,
            },
        );
    }
    let blank = |id: &str| SessionSeqs {
        session_id: id.to_string(),
        seq_ranges: Vec::new(),
        started: false,
        ended_with_frames: None,
    };
    for id in started {
        out.entry(id.clone()).or_insert_with(|| blank(id)).started = true;
    }
    for (id, frames) in ended {
        out.entry(id.clone())
            .or_insert_with(|| blank(id))
            .ended_with_frames = Some(*frames);
    }
    out.into_values().collect()
}

/// The state a checkpoint records (sorted, for stable bytes).
pub fn checkpoint_of(sessions: &SessionTable) -> Checkpoint {
    let mut list: Vec<OpenSession> = sessions.values().cloned().collect();
    list.sort_by(|a, b| a.start.session_id.cmp(&b.start.session_id));
    Checkpoint { sessions: list }
}
