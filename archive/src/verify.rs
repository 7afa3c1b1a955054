//! `chaperone verify`: proves an archive complete and unaltered, or names what is
//! missing, altered or out of order.
//!
//! For every gateway's manifests (optionally only those reaching past `since`):
//! - each manifest's Ed25519 signature (against a pinned public key if given);
//! - the chain: segment numbers consecutive, each `previous` naming the segment
//!   before it with the SHA-256 of its stored bytes;
//! - each listed data file: present, same size, same SHA-256;
//! - data files no manifest lists (a removed manifest, or an upload in progress);
//! - per session, over all segments: frame sequence numbers without holes or
//!   repeats, from 0 (if the session started in range) to its end row's count;
//! - lifecycle records (retention, compaction: `chaperone_schemas::lifecycle`):
//!   signatures, their own chain, and the manifest chain followed through the
//!   segments they took out. A segment removed with a record is reported as
//!   removed (not a problem); one removed without a record is a missing manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chaperone_schemas::layout::Layout;
use chaperone_schemas::lifecycle::{LifecycleAction, LifecycleRecord, SegmentRef};
use chaperone_schemas::manifest::{self, sha256_hex, Manifest, PreviousManifest};
use chaperone_schemas::tables::Table;

use crate::keyring::Keyring;
use crate::lifecycle::ranges;
use chaperone_store::{Store, StoreError};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only manifests whose rows reach this time (Unix ns) or later.
    pub since_ns: Option<i64>,
    /// Signatures must be by a key of this keyring, within its period (else:
    /// by the key each manifest names, which proves integrity, not origin).
    pub keyring: Option<Keyring>,
    /// Only this gateway's chain.
    pub gateway: Option<String>,
    /// Gateways the archive must hold (an empty archive is then a failure).
    pub expect_gateways: Option<crate::head::Expectation>,
}

/// One thing wrong with the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    ManifestUnreadable {
        path: String,
        error: String,
    },
    BadSignature {
        path: String,
        error: String,
    },
    ManifestMissing {
        gateway: String,
        segment: u64,
        path: String,
    },
    ChainBroken {
        path: String,
        detail: String,
    },
    OutOfOrder {
        path: String,
        detail: String,
    },
    FileMissing {
        manifest: String,
        path: String,
    },
    FileAltered {
        manifest: String,
        path: String,
        detail: String,
    },
    UnlistedFile {
        path: String,
        detail: String,
    },
    SequenceGap {
        session: String,
        first: u64,
        last: u64,
    },
    SequenceRepeated {
        session: String,
        first: u64,
        last: u64,
    },
    SessionIncomplete {
        session: String,
        detail: String,
    },
    RecordedGap {
        session: String,
        first: u64,
        last: u64,
        reason: String,
        manifest: String,
    },
    SpoolLoss {
        manifest: String,
        spool_file: String,
        bytes_lost: u64,
        reason: String,
    },
    /// An object a lifecycle record took out is still in the store: the job
    /// stopped half-way.
    LifecycleIncomplete {
        path: String,
        record: String,
    },
    /// What the gateways' heads show missing (`crate::head`).
    Completeness(crate::head::HeadProblem),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            ManifestUnreadable { path, error } => write!(f, "MANIFEST UNREADABLE {path}: {error}"),
            BadSignature { path, error } => write!(f, "SIGNATURE INVALID {path}: {error}"),
            ManifestMissing { gateway, segment, path } => write!(
                f,
                "MANIFEST MISSING gateway {gateway} segment {segment}: {path} is not in the store"
            ),
            ChainBroken { path, detail } => write!(f, "CHAIN BROKEN at {path}: {detail}"),
            OutOfOrder { path, detail } => write!(f, "OUT OF ORDER {path}: {detail}"),
            FileMissing { manifest, path } => {
                write!(f, "FILE MISSING {path} (listed in {manifest})")
            }
            FileAltered { manifest, path, detail } => {
                write!(f, "FILE ALTERED {path} (listed in {manifest}): {detail}")
            }
            UnlistedFile { path, detail } => write!(f, "FILE NOT IN ANY MANIFEST {path}: {detail}"),
            SequenceGap { session, first, last } => write!(
                f,
                "FRAMES MISSING session {session}: seq {first}..={last} ({} frames)",
                last - first + 1
            ),
            SequenceRepeated { session, first, last } => write!(
                f,
                "FRAMES REPEATED session {session}: seq {first}..={last} appear more than once"
            ),
            SessionIncomplete { session, detail } => {
                write!(f, "SESSION INCOMPLETE {session}: {detail}")
            }
            RecordedGap { session, first, last, reason, manifest } => write!(
                f,
                "FRAMES NOT RECORDED (declared) session {session}: seq {first}..={last}: {reason} (in {manifest})"
            ),
            SpoolLoss { manifest, spool_file, bytes_lost, reason } => write!(
                f,
                "SPOOL LOSS {bytes_lost} bytes of {spool_file} unrecoverable: {reason} (in {manifest})"
            ),
            Completeness(p) => write!(f, "{p}"),
            LifecycleIncomplete { path, record } => write!(
                f,
                "LIFECYCLE INCOMPLETE {path} is still in the store though {record} took it out; run the same `chaperone retention` / `chaperone compact` again to finish"
            ),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub gateways: usize,
    pub manifests: usize,
    pub files: usize,
    pub bytes_hashed: u64,
    pub sessions: usize,
    pub frames: u64,
    pub problems: Vec<Problem>,
    /// Signers seen (key ids).
    pub signers: BTreeSet<String>,
    /// Lifecycle records checked.
    pub lifecycle_records: usize,
    /// Segments retention removed / compaction replaced, per the records.
    pub segments_removed: usize,
    pub segments_compacted: usize,
    /// Frames retention removed (counted in no session as missing).
    pub frames_removed: u64,
    /// One line per lifecycle record: what it removed or replaced.
    pub lifecycle: Vec<String>,
    /// What is worth knowing but not a problem (a spool write cut short by a
    /// crash, which held nothing acknowledged).
    pub notes: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lifecycle.iter().chain(&self.notes) {
            writeln!(f, "{line}")?;
        }
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        writeln!(
            f,
            "{}: {} gateway(s), {} manifest(s), {} file(s) ({} bytes hashed), {} session(s), {} frame(s); signed by {}",
            if self.ok() { "OK" } else { "FAILED" },
            self.gateways,
            self.manifests,
            self.files,
            self.bytes_hashed,
            self.sessions,
            self.frames,
            if self.signers.is_empty() {
                "nobody".to_string()
            } else {
                self.signers.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        )?;
        if self.lifecycle_records > 0 {
            writeln!(
                f,
                "{} lifecycle record(s): {} segment(s) removed by retention ({} frames), {} segment(s) replaced by compaction",
                self.lifecycle_records,
                self.segments_removed,
                self.frames_removed,
                self.segments_compacted
            )?;
        }
        if !self.ok() {
            writeln!(f, "{} problem(s)", self.problems.len())?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct SessionView {
    /// (first, last, manifest path)
    ranges: Vec<(u64, u64, String)>,
    started: bool,
    ended_with: Option<u64>,
    declared: Vec<(u64, u64)>,
}

/// A segment a lifecycle record took out of the manifest chain.
struct Accounted {
    segment: SegmentRef,
    record: String,
    action: LifecycleAction,
}

/// A lifecycle record as read from the store.
struct StoredRecord {
    path: String,
    sha256: String,
    bytes: bytes::Bytes,
    record: LifecycleRecord,
}

/// Checks a signature (and, with a keyring, that the signer is trusted at
/// `at_ns`); returns the signer's key id.
pub(crate) fn check_signature(
    bytes: &[u8],
    at_ns: i64,
    options: &VerifyOptions,
) -> Result<String, String> {
    let signer = manifest::verify_signature(bytes, None).map_err(|e| e.to_string())?;
    if let Some(keyring) = &options.keyring {
        keyring.check(&signer, at_ns)?;
    }
    Ok(manifest::parse_verifying_key(&signer)
        .map(|k| manifest::key_id(&k))
        .unwrap_or(signer))
}

/// Reads the lifecycle records of the store, by gateway and sequence.
async fn load_records(
    store: &Store,
    layout: &Layout,
    options: &VerifyOptions,
    report: &mut Report,
) -> Result<BTreeMap<String, BTreeMap<u64, StoredRecord>>, StoreError> {
    let mut out: BTreeMap<String, BTreeMap<u64, StoredRecord>> = BTreeMap::new();
    for (path, _) in store.list(&layout.lifecycle_root()).await? {
        let Some((gateway, sequence)) = layout.parse_lifecycle_record(&path) else {
            report.problems.push(Problem::UnlistedFile {
                path,
                detail: "not a lifecycle record name of this layout".into(),
            });
            continue;
        };
        if options.gateway.as_ref().is_some_and(|g| *g != gateway) {
            continue;
        }
        let bytes = store.get(&path).await?;
        match LifecycleRecord::parse(&bytes) {
            Ok(record) => {
                out.entry(gateway).or_default().insert(
                    sequence,
                    StoredRecord {
                        path,
                        sha256: sha256_hex(&bytes),
                        bytes,
                        record,
                    },
                );
            }
            Err(e) => report.problems.push(Problem::ManifestUnreadable {
                path,
                error: e.to_string(),
            }),
        }
    }
    Ok(out)
}

/// Checks one gateway's lifecycle chain (signatures, sequence, `previous`
/// links) and returns the segments its records account for, the files retention
/// deleted, and adds the records' summaries to the report.
fn check_records(
    report: &mut Report,
    gateway: &str,
    records: &BTreeMap<u64, StoredRecord>,
    options: &VerifyOptions,
) -> (BTreeMap<u64, Accounted>, BTreeSet<String>) {
    let mut accounted: BTreeMap<u64, Accounted> = BTreeMap::new();
    let mut retired: BTreeSet<String> = BTreeSet::new();
    let mut previous: Option<(u64, &str)> = None;
    for (&sequence, stored) in records {
        let r = &stored.record;
        report.lifecycle_records += 1;
        match check_signature(&stored.bytes, r.created_at_ns, options) {
            Ok(signer) => {
                report.signers.insert(signer);
            }
            Err(error) => report.problems.push(Problem::BadSignature {
                path: stored.path.clone(),
                error,
            }),
        }
        if r.gateway_id != gateway || r.sequence != sequence {
            report.problems.push(Problem::OutOfOrder {
                path: stored.path.clone(),
                detail: format!(
                    "its content says gateway {} record {}",
                    r.gateway_id, r.sequence
                ),
            });
        }
        let expected = previous.map(|(seq, sha)| PreviousManifest {
            segment: seq,
            sha256: sha.to_string(),
        });
        if r.previous != expected {
            report.problems.push(Problem::ChainBroken {
                path: stored.path.clone(),
                detail: match &expected {
                    None => format!(
                        "the first lifecycle record present is {sequence}; records before it are missing, or it names a previous one"
                    ),
                    Some(p) => format!(
                        "it names {:?} as the previous record, the store has record {} with SHA-256 {}",
                        r.previous, p.segment, p.sha256
                    ),
                },
            });
        }
        previous = Some((sequence, &stored.sha256));
        let segments: Vec<u64> = r.segments.iter().map(|s| s.segment).collect();
        match r.action {
            LifecycleAction::Retention => {
                report.segments_removed += segments.len();
                retired.extend(r.removed_files.iter().map(|f| f.path.clone()));
                report.lifecycle.push(format!(
                    "REMOVED BY RETENTION gateway {gateway} segment(s) {}: {} file(s), {} bytes; policy: {}{}{} ({})",
                    ranges(&segments),
                    r.removed_files.len(),
                    r.removed_files.iter().map(|f| f.bytes).sum::<u64>(),
                    r.policy,
                    if r.holds.is_empty() { String::new() } else { format!("; legal holds: {}", r.holds.join(", ")) },
                    r.moved_to.as_ref().map(|m| format!("; moved to {m}")).unwrap_or_default(),
                    stored.path
                ));
            }
            LifecycleAction::Compaction => {
                report.segments_compacted += segments.len();
                report.lifecycle.push(format!(
                    "REPLACED BY COMPACTION gateway {gateway} segment(s) {}: {} file(s) -> {} file(s) ({})",
                    ranges(&segments),
                    r.removed_files.len(),
                    r.files.len(),
                    stored.path
                ));
            }
        }
        for s in &r.segments {
            // A retention record of compacted segments supersedes the compaction.
            let keep_existing = accounted
                .get(&s.segment)
                .is_some_and(|a| a.action == LifecycleAction::Retention);
            if !keep_existing {
                accounted.insert(
                    s.segment,
                    Accounted {
                        segment: s.clone(),
                        record: stored.path.clone(),
                        action: r.action,
                    },
                );
            }
        }
    }
    (accounted, retired)
}

/// Checks the archive in `store`.
pub async fn verify(store: &Store, options: &VerifyOptions) -> Result<Report, StoreError> {
    let layout = Layout::new(&store.prefix);
    let mut report = Report::default();
    let manifest_objects = store.list(&layout.manifests_root()).await?;
    let mut by_gateway: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for (path, _) in &manifest_objects {
        match layout.parse_manifest(path) {
            Some((gateway, segment)) => {
                if options.gateway.as_ref().is_none_or(|g| *g == gateway) {
                    by_gateway
                        .entry(gateway)
                        .or_default()
                        .insert(segment, path.clone());
                }
            }
            None => report.problems.push(Problem::UnlistedFile {
                path: path.clone(),
                detail: "not a manifest name of this layout".into(),
            }),
        }
    }
    let records = load_records(store, &layout, options, &mut report).await?;
    for gateway in records.keys() {
        by_gateway.entry(gateway.clone()).or_default();
    }
    // Data files in the store, by (gateway, segment); compacted files apart.
    let mut data_files: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    let mut compacted_files: BTreeSet<String> = BTreeSet::new();
    for table in Table::ALL {
        for (path, _) in store.list(&layout.table_root(table)).await? {
            match layout.parse_data_file(&path) {
                Some((t, gateway, segment)) if t == table => {
                    if options.gateway.as_ref().is_none_or(|g| *g == gateway) {
                        data_files.entry((gateway, segment)).or_default().push(path);
                    }
                }
                _ => match layout.parse_compacted_data_file(&path) {
                    Some((t, gateway, _, _)) if t == table => {
                        if options.gateway.as_ref().is_none_or(|g| *g == gateway) {
                            compacted_files.insert(path);
                        }
                    }
                    _ => report.problems.push(Problem::UnlistedFile {
                        path,
                        detail: "not a data file name of this layout".into(),
                    }),
                },
            }
        }
    }
    report.gateways = by_gateway.len();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut sessions: BTreeMap<String, SessionView> = BTreeMap::new();
    let no_records = BTreeMap::new();
    let mut known_max: BTreeMap<String, u64> = BTreeMap::new();

    for (gateway, segments) in &by_gateway {
        let gateway_records = records.get(gateway).unwrap_or(&no_records);
        let (accounted, retired) = check_records(&mut report, gateway, gateway_records, options);
        let known: BTreeSet<u64> = segments.keys().chain(accounted.keys()).copied().collect();
        // Read and check every manifest of the gateway; select those in range.
        let mut previous: Option<(u64, String, String)> = None; // (segment, sha, path)
        let all_max = known.iter().next_back().copied().unwrap_or(0);
        known_max.insert(gateway.clone(), all_max);
        for &segment in &known {
            if let Some(a) = accounted.get(&segment) {
                if let Some(path) = segments.get(&segment) {
                    report.problems.push(Problem::LifecycleIncomplete {
                        path: path.clone(),
                        record: a.record.clone(),
                    });
                }
                let s = &a.segment;
                let in_range = options.since_ns.is_none_or(|since| {
                    s.max_time_ns.unwrap_or(s.sealed_at_ns) >= since || s.sealed_at_ns >= since
                });
                if in_range {
                    check_chain(
                        &mut report,
                        gateway,
                        segment,
                        &a.record,
                        s.previous.as_ref(),
                        previous.as_ref(),
                        &known,
                        &layout,
                    );
                }
                previous = Some((segment, s.manifest_sha256.clone(), a.record.clone()));
                continue;
            }
            let path = &segments[&segment];
            let bytes = match store.get(path).await {
                Ok(b) => b,
                Err(e) => {
                    report.problems.push(Problem::ManifestUnreadable {
                        path: path.clone(),
                        error: e.to_string(),
                    });
                    previous = None;
                    continue;
                }
            };
            let sha = sha256_hex(&bytes);
            let parsed = Manifest::parse(&bytes);
            let m = match parsed {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(Problem::ManifestUnreadable {
                        path: path.clone(),
                        error: e.to_string(),
                    });
                    previous = Some((segment, sha, path.clone()));
                    continue;
                }
            };
            let in_range = options.since_ns.is_none_or(|since| {
                m.max_time_ns.unwrap_or(m.sealed_at_ns) >= since || m.sealed_at_ns >= since
            });
            if !in_range {
                previous = Some((segment, sha, path.clone()));
                // Its files are listed (not "unlisted"), though not checked.
                listed.extend(m.files.iter().map(|f| f.path.clone()));
                continue;
            }
            report.manifests += 1;
            match check_signature(&bytes, m.sealed_at_ns, options) {
                Ok(signer) => {
                    report.signers.insert(signer);
                }
                Err(error) => report.problems.push(Problem::BadSignature {
                    path: path.clone(),
                    error,
                }),
            }
            if m.gateway_id != *gateway || m.segment != segment {
                report.problems.push(Problem::OutOfOrder {
                    path: path.clone(),
                    detail: format!(
                        "its content says gateway {} segment {}",
                        m.gateway_id, m.segment
                    ),
                });
            }
            check_chain(
                &mut report,
                gateway,
                segment,
                path,
                m.previous.as_ref(),
                previous.as_ref(),
                &known,
                &layout,
            );
            previous = Some((segment, sha, path.clone()));

            for file in &m.files {
                listed.insert(file.path.clone());
                match layout.parse_data_file(&file.path) {
                    Some((_, g, s)) if g == *gateway && s == segment => {}
                    _ => report.problems.push(Problem::OutOfOrder {
                        path: file.path.clone(),
                        detail: format!(
                            "listed in {path} but named for another gateway or segment"
                        ),
                    }),
                }
                check_file(store, &mut report, path, file).await?;
            }
            add_sessions(&mut sessions, &mut report, path, &m.sessions, false);
            report_declared(&mut report, &mut sessions, path, &m.gaps, &m.spool_losses);
        }
        // What the records say about files and sessions.
        for stored in gateway_records.values() {
            let r = &stored.record;
            let newest = r
                .segments
                .iter()
                .map(|s| s.max_time_ns.unwrap_or(s.sealed_at_ns))
                .max()
                .unwrap_or(r.created_at_ns);
            let in_range = options.since_ns.is_none_or(|since| newest >= since);
            for f in &r.removed_files {
                // Taken out, so not "unlisted"; still present: an interrupted job.
                listed.insert(f.path.clone());
                let still_there = compacted_files.contains(&f.path)
                    || data_files.values().any(|files| files.contains(&f.path));
                if still_there {
                    report.problems.push(Problem::LifecycleIncomplete {
                        path: f.path.clone(),
                        record: stored.path.clone(),
                    });
                }
            }
            match r.action {
                LifecycleAction::Retention => {
                    if in_range {
                        add_sessions(&mut sessions, &mut report, &stored.path, &r.sessions, true);
                    }
                }
                LifecycleAction::Compaction => {
                    let alive = r.files.iter().all(|f| !retired.contains(&f.path));
                    for f in &r.files {
                        listed.insert(f.path.clone());
                    }
                    if !alive || !in_range {
                        continue;
                    }
                    for f in &r.files {
                        match layout.parse_compacted_data_file(&f.path) {
                            Some((_, g, first, last))
                                if g == *gateway
                                    && r.segments.first().map(|s| s.segment) == Some(first)
                                    && r.segments.last().map(|s| s.segment) == Some(last) => {}
                            _ => report.problems.push(Problem::OutOfOrder {
                                path: f.path.clone(),
                                detail: format!(
                                    "listed in {} but named for another gateway or segments",
                                    stored.path
                                ),
                            }),
                        }
                        check_file(store, &mut report, &stored.path, f).await?;
                    }
                    add_sessions(&mut sessions, &mut report, &stored.path, &r.sessions, false);
                    report_declared(
                        &mut report,
                        &mut sessions,
                        &stored.path,
                        &r.gaps,
                        &r.spool_losses,
                    );
                }
            }
        }
        // Data files of segments past the last manifest: the last manifest was
        // removed, or an upload is in progress.
        for ((_, segment), files) in
            data_files.range((gateway.clone(), 0)..=(gateway.clone(), u64::MAX))
        {
            if known.contains(segment) {
                continue;
            }
            for f in files {
                listed.insert(f.clone());
                report.problems.push(Problem::UnlistedFile {
                    path: f.clone(),
                    detail: if *segment > all_max {
                        format!(
                            "segment {segment} has data files but no manifest ({} missing, or its upload is in progress)",
                            layout.manifest(gateway, *segment)
                        )
                    } else {
                        format!(
                            "segment {segment} has no manifest: {} is missing",
                            layout.manifest(gateway, *segment)
                        )
                    },
                });
            }
        }
    }
    // Data files of gateways with no manifest at all, and strays inside listed segments.
    for ((gateway, segment), files) in &data_files {
        for f in files {
            if !listed.contains(f) {
                let in_range = options.since_ns.is_none();
                if in_range || by_gateway.contains_key(gateway) {
                    report.problems.push(Problem::UnlistedFile {
                        path: f.clone(),
                        detail: format!(
                            "gateway {gateway} segment {segment}: no manifest lists this file ({})",
                            layout.manifest(gateway, *segment)
                        ),
                    });
                }
            }
        }
    }
    for f in &compacted_files {
        if !listed.contains(f) {
            report.problems.push(Problem::UnlistedFile {
                path: f.clone(),
                detail: "a compacted file no lifecycle record lists (an interrupted `chaperone compact`: run it again)".into(),
            });
        }
    }

    let expect = options.expect_gateways.as_ref();
    crate::head::check(store, &layout, options, expect, &known_max, &mut report).await?;
    report.sessions = sessions.len();
    for (id, view) in sessions {
        check_session(&mut report, &id, view, options.since_ns.is_none());
    }
    Ok(report)
}

/// Checks that a listed file is present with the listed size and SHA-256.
async fn check_file(
    store: &Store,
    report: &mut Report,
    listed_in: &str,
    file: &manifest::ManifestFile,
) -> Result<(), StoreError> {
    report.files += 1;
    match store.get(&file.path).await {
        Err(StoreError::Store(object_store::Error::NotFound { .. })) => {
            report.problems.push(Problem::FileMissing {
                manifest: listed_in.to_string(),
                path: file.path.clone(),
            })
        }
        Err(e) => return Err(e),
        Ok(data) => {
            report.bytes_hashed += data.len() as u64;
            let actual = sha256_hex(&data);
            if data.len() as u64 != file.bytes || actual != file.sha256 {
                report.problems.push(Problem::FileAltered {
                    manifest: listed_in.to_string(),
                    path: file.path.clone(),
                    detail: format!(
                        "{} bytes, SHA-256 {actual}; the manifest says {} bytes, SHA-256 {}",
                        data.len(),
                        file.bytes,
                        file.sha256
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Adds a manifest's (or record's) frame ranges to the per-session views.
/// `removed`: frames retention removed (they close holes, and are counted apart).
fn add_sessions(
    sessions: &mut BTreeMap<String, SessionView>,
    report: &mut Report,
    path: &str,
    list: &[manifest::SessionSeqs],
    removed: bool,
) {
    for s in list {
        let view = sessions.entry(s.session_id.clone()).or_default();
        for r in &s.seq_ranges {
            view.ranges.push((r[0], r[1], path.to_string()));
            if removed {
                report.frames_removed += r[1] - r[0] + 1;
            } else {
                report.frames += r[1] - r[0] + 1;
            }
        }
        view.started |= s.started;
        if s.ended_with_frames.is_some() {
            view.ended_with = s.ended_with_frames;
        }
    }
}

/// Reports declared gaps and spool losses (never silent).
fn report_declared(
    report: &mut Report,
    sessions: &mut BTreeMap<String, SessionView>,
    path: &str,
    gaps: &[manifest::Gap],
    losses: &[manifest::SpoolLoss],
) {
    for g in gaps {
        sessions
            .entry(g.session_id.clone())
            .or_default()
            .declared
            .push((g.first_seq, g.last_seq));
        let mut reason = g.reason.clone();
        if g.statements_dropped > 0 || g.bytes_dropped > 0 {
            reason.push_str(&format!(
                "; {} statement(s) and {} payload bytes not recorded",
                g.statements_dropped, g.bytes_dropped
            ));
        }
        report.problems.push(Problem::RecordedGap {
            session: g.session_id.clone(),
            first: g.first_seq,
            last: g.last_seq,
            reason,
            manifest: path.to_string(),
        });
    }
    for l in losses {
        if l.cut_write {
            report.notes.push(format!(
                "NOTE {} bytes at the end of {} were a write cut short by a crash (after a process crash nothing in it had been acknowledged; after a host crash with durability = \"group\", the last fsync interval's statements may have been): {} (in {path})",
                l.bytes_lost, l.spool_file, l.reason
            ));
            continue;
        }
        report.problems.push(Problem::SpoolLoss {
            manifest: path.to_string(),
            spool_file: l.spool_file.clone(),
            bytes_lost: l.bytes_lost,
            reason: l.reason.clone(),
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn check_chain(
    report: &mut Report,
    gateway: &str,
    segment: u64,
    path: &str,
    m_previous: Option<&PreviousManifest>,
    previous: Option<&(u64, String, String)>,
    segments: &BTreeSet<u64>,
    layout: &Layout,
) {
    match (m_previous, previous) {
        (None, _) if segment == 1 => {}
        (None, _) => report.problems.push(Problem::ChainBroken {
            path: path.to_string(),
            detail: format!(
                "segment {segment} names no previous manifest (the chain restarts here)"
            ),
        }),
        (Some(p), _) if p.segment + 1 != segment => report.problems.push(Problem::OutOfOrder {
            path: path.to_string(),
            detail: format!(
                "segment {segment} names segment {} as its previous",
                p.segment
            ),
        }),
        (Some(p), Some((prev_segment, prev_sha, prev_path))) if *prev_segment == p.segment => {
            if *prev_sha != p.sha256 {
                report.problems.push(Problem::ChainBroken {
                    path: path.to_string(),
                    detail: format!(
                        "the previous manifest {prev_path} has SHA-256 {prev_sha}, this one expects {}: {prev_path} was altered or replaced",
                        p.sha256
                    ),
                });
            }
        }
        (Some(p), _) => {
            if !segments.contains(&p.segment) {
                for missing in (1..segment).rev() {
                    if segments.contains(&missing) {
                        break;
                    }
                    report.problems.push(Problem::ManifestMissing {
                        gateway: gateway.to_string(),
                        segment: missing,
                        path: layout.manifest(gateway, missing),
                    });
                }
            }
        }
    }
}

fn check_session(report: &mut Report, id: &str, mut view: SessionView, whole_archive: bool) {
    view.ranges.sort();
    // Adjacent declared gaps (one per segment while an outage lasts) cover a
    // hole together.
    view.declared.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in view.declared.drain(..) {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    view.declared = merged;
    let start = if view.started || whole_archive {
        0
    } else {
        view.ranges.first().map(|r| r.0).unwrap_or(0)
    };
    let mut next = start;
    let mut problems = Vec::new();
    for (first, last, _) in &view.ranges {
        if *first > next {
            problems.push((next, first - 1, false));
        }
        if *first < next {
            problems.push((*first, (*last).min(next - 1), true));
        }
        next = next.max(last + 1);
    }
    if let Some(total) = view.ended_with {
        if total > next {
            problems.push((next, total - 1, false));
        } else if total < next {
            report.problems.push(Problem::SessionIncomplete {
                session: id.to_string(),
                detail: format!(
                    "its end row counts {total} frames, the archive has up to seq {}",
                    next - 1
                ),
            });
        }
    }
    for (first, last, repeated) in problems {
        if repeated {
            report.problems.push(Problem::SequenceRepeated {
                session: id.to_string(),
                first,
                last,
            });
        } else if !view.declared.iter().any(|(a, b)| *a <= first && last <= *b) {
            report.problems.push(Problem::SequenceGap {
                session: id.to_string(),
                first,
                last,
            });
        }
    }
}
