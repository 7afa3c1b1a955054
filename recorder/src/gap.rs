//! `on_spool_full = "fail_open"` keeping its word: commands run, and what is
//! not recorded is a declared gap, never a silent hole and never unbounded
//! memory.
//!
//! The recorder is *degraded* while the spool is over its limit or its disk
//! refuses writes. Then frames are not buffered: each one only extends its
//! session's open gap (first..last seq, bytes); a statement summary whose
//! request was dropped is counted in the gap instead of being kept (summaries
//! count against the spool limit like frames). Session starts and ends, one
//! per connection, are still kept. Open gaps are written to the log as soon as
//! the session records again, at its end, and at every rotation, so the
//! segment sealed first after the outage declares them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chaperone_schemas::event::{now_ns, TapEvent};
use chaperone_schemas::manifest::Gap;

use crate::config::FailureMode;
use crate::recorder::{Buffer, Inner};
use crate::segment;
use crate::spool::{self, Kind};

/// Frames (and summaries) knowingly not recorded in one session, not yet
/// written to the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenGap {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) statements: u64,
    pub(crate) bytes: u64,
    pub(crate) disk: bool,
}

impl OpenGap {
    fn reason(&self) -> &'static str {
        if self.disk {
            "spool disk refused writes (fail_open)"
        } else {
            "spool full (fail_open)"
        }
    }
}

/// A warning at most once a second, with the count of those suppressed.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    last_s: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// Some(suppressed since the last line) when a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_s.load(Ordering::Relaxed);
        if now > last
            && self
                .last_s
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Fail-open state shared by the appending threads and the writer.
#[derive(Debug, Default)]
pub(crate) struct FailOpenState {
    /// The last write to the spool failed (disk full, I/O error).
    pub(crate) write_failing: AtomicBool,
    /// Writes work again after failing: rotate, so the gap reaches the chain.
    pub(crate) rotate_soon: AtomicBool,
    pub(crate) drop_log: RateLimit,
    pub(crate) write_log: RateLimit,
}

impl FailOpenState {
    /// A write to the log failed (`true`) or succeeded.
    pub(crate) fn write_result(&self, ok: bool) {
        let was_failing = self.write_failing.swap(!ok, Ordering::AcqRel);
        if ok && was_failing {
            self.rotate_soon.store(true, Ordering::Release);
        }
    }
}

impl Inner {
    /// fail_open and unable to take more: the spool is full or its disk
    /// refuses writes.
    pub(crate) fn degraded(&self) -> bool {
        self.config.on_spool_full == FailureMode::FailOpen
            && (self.spool_full() || self.fail_open.write_failing.load(Ordering::Acquire))
    }

    /// Degraded: frames are dropped into their session's gap, and so is the
    /// summary of a command whose frames were dropped; session starts and ends
    /// are kept.
    pub(crate) fn drop_or_append(&self, b: &mut Buffer, event: TapEvent) {
        let disk = self.fail_open.write_failing.load(Ordering::Acquire);
        match event {
            TapEvent::Frame(frame) => {
                if let Some(s) = b.sessions.get_mut(&*frame.session_id) {
                    segment::track_frame(
                        s,
                        frame.seq,
                        frame.command_index,
                        frame.time_ns,
                        frame.direction,
                        &frame.payload,
                    );
                }
                let gap = b
                    .gaps
                    .entry(frame.session_id.to_string())
                    .or_insert(OpenGap {
                        first: frame.seq,
                        last: frame.seq,
                        statements: 0,
                        bytes: 0,
                        disk,
                    });
                gap.last = frame.seq;
                gap.bytes += frame.payload.len() as u64;
                gap.disk |= disk;
                let n = self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.fail_open.drop_log.allow() {
                    tracing::warn!(
                        dropped_total = n,
                        suppressed,
                        reason = gap.reason(),
                        "archive: frames are NOT recorded (fail_open); the gaps are declared in the archive"
                    );
                }
            }
            TapEvent::Command(summary) => match b.gaps.get_mut(&summary.session_id) {
                Some(gap) => {
                    gap.statements += 1;
                    if let Some(s) = b.sessions.get_mut(&summary.session_id) {
                        segment::track_command(s, summary.command_index);
                    }
                }
                None => self.append(b, TapEvent::Command(summary)),
            },
            other => self.append(b, other),
        }
    }

    /// Appends the record of a gap to the buffer (the caller accounts for it).
    pub(crate) fn append_gap(&self, b: &mut Buffer, session_id: &str, gap: OpenGap) {
        spool::encode_json(
            &mut b.bytes,
            Kind::Gap,
            &Gap {
                session_id: session_id.to_string(),
                first_seq: gap.first,
                last_seq: gap.last,
                reason: gap.reason().to_string(),
                at_ns: now_ns(),
                statements_dropped: gap.statements,
                bytes_dropped: gap.bytes,
            },
        );
    }

    /// Writes every open gap into the buffer: before a rotation, so that the
    /// log being closed declares what it misses.
    pub(crate) fn close_gaps(&self, b: &mut Buffer) {
        if b.gaps.is_empty() {
            return;
        }
        let before = b.bytes.len();
        let mut open: Vec<(String, OpenGap)> = b.gaps.drain().collect();
        open.sort_by(|a, c| a.0.cmp(&c.0));
        for (session, gap) in open {
            self.append_gap(b, &session, gap);
        }
        let added = (b.bytes.len() - before) as u64;
        b.end += added;
        b.records_in_log += 1;
        self.spool_bytes.fetch_add(added, Ordering::Relaxed);
    }
}

/// A refused command's summary may come without its SQL (the gateway refused
/// it before parsing): the request frame recorded just before has it.
pub(crate) fn fill_sql(
    summary: &mut chaperone_schemas::event::CommandSummary,
    sessions: &segment::SessionTable,
) {
    if summary.sql.is_some() {
        return;
    }
    let session = sessions.get(&summary.session_id);
    if let Some(p) = session.and_then(|s| s.pending.as_ref()) {
        if p.command_index == summary.command_index {
            summary.sql = p.sql.clone();
        }
    }
}
