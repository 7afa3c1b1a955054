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
//!   repeats, from 0 (if the session started in range) to its end row's count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chaperone_schemas::layout::Layout;
use chaperone_schemas::manifest::{self, sha256_hex, Manifest};
use chaperone_schemas::tables::Table;

use crate::store::{Store, StoreError};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only manifests whose rows reach this time (Unix ns) or later.
    pub since_ns: Option<i64>,
    /// Signatures must be by this key (else: by the key each manifest names).
    pub trusted_key: Option<ed25519_dalek::VerifyingKey>,
    /// Only this gateway's chain.
    pub gateway: Option<String>,
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
    /// Signers seen (hex public keys).
    pub signers: BTreeSet<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    // Data files in the store, by (gateway, segment).
    let mut data_files: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for table in Table::ALL {
        for (path, size) in store.list(&layout.table_root(table)).await? {
            sizes.insert(path.clone(), size);
            match layout.parse_data_file(&path) {
                Some((t, gateway, segment)) if t == table => {
                    if options.gateway.as_ref().is_none_or(|g| *g == gateway) {
                        data_files.entry((gateway, segment)).or_default().push(path);
                    }
                }
                _ => report.problems.push(Problem::UnlistedFile {
                    path,
                    detail: "not a data file name of this layout".into(),
                }),
            }
        }
    }
    report.gateways = by_gateway.len();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut sessions: BTreeMap<String, SessionView> = BTreeMap::new();

    for (gateway, segments) in &by_gateway {
        // Read and check every manifest of the gateway; select those in range.
        let mut previous: Option<(u64, String, String)> = None; // (segment, sha, path)
        let all_max = segments.keys().next_back().copied().unwrap_or(0);
        for (&segment, path) in segments {
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
            match manifest::verify_signature(&bytes, options.trusted_key.as_ref()) {
                Ok(signer) => {
                    report.signers.insert(signer);
                }
                Err(e) => report.problems.push(Problem::BadSignature {
                    path: path.clone(),
                    error: e.to_string(),
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
                &m,
                previous.as_ref(),
                segments,
                &layout,
            );
            previous = Some((segment, sha, path.clone()));

            for file in &m.files {
                listed.insert(file.path.clone());
                report.files += 1;
                match layout.parse_data_file(&file.path) {
                    Some((_, g, s)) if g == *gateway && s == segment => {}
                    _ => report.problems.push(Problem::OutOfOrder {
                        path: file.path.clone(),
                        detail: format!(
                            "listed in {path} but named for another gateway or segment"
                        ),
                    }),
                }
                match store.get(&file.path).await {
                    Err(StoreError::Store(object_store::Error::NotFound { .. })) => {
                        report.problems.push(Problem::FileMissing {
                            manifest: path.clone(),
                            path: file.path.clone(),
                        })
                    }
                    Err(e) => return Err(e),
                    Ok(data) => {
                        report.bytes_hashed += data.len() as u64;
                        let actual = sha256_hex(&data);
                        if data.len() as u64 != file.bytes || actual != file.sha256 {
                            report.problems.push(Problem::FileAltered {
                                manifest: path.clone(),
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
            }
            for s in &m.sessions {
                let view = sessions.entry(s.session_id.clone()).or_default();
                for r in &s.seq_ranges {
                    view.ranges.push((r[0], r[1], path.clone()));
                    report.frames += r[1] - r[0] + 1;
                }
                view.started |= s.started;
                if s.ended_with_frames.is_some() {
                    view.ended_with = s.ended_with_frames;
                }
            }
            for g in &m.gaps {
                sessions
                    .entry(g.session_id.clone())
                    .or_default()
                    .declared
                    .push((g.first_seq, g.last_seq));
                report.problems.push(Problem::RecordedGap {
                    session: g.session_id.clone(),
                    first: g.first_seq,
                    last: g.last_seq,
                    reason: g.reason.clone(),
                    manifest: path.clone(),
                });
            }
            for l in &m.spool_losses {
                report.problems.push(Problem::SpoolLoss {
                    manifest: path.clone(),
                    spool_file: l.spool_file.clone(),
                    bytes_lost: l.bytes_lost,
                    reason: l.reason.clone(),
                });
            }
        }
        // Data files of segments past the last manifest: the last manifest was
        // removed, or an upload is in progress.
        for ((g, segment), files) in
            data_files.range((gateway.clone(), 0)..=(gateway.clone(), u64::MAX))
        {
            if segments.contains_key(segment) {
                continue;
            }
            let _ = g;
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
    let _ = sizes;

    report.sessions = sessions.len();
    for (id, view) in sessions {
        check_session(&mut report, &id, view, options.since_ns.is_none());
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn check_chain(
    report: &mut Report,
    gateway: &str,
    segment: u64,
    path: &str,
    m: &Manifest,
    previous: Option<&(u64, String, String)>,
    segments: &BTreeMap<u64, String>,
    layout: &Layout,
) {
    match (&m.previous, previous) {
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
            if !segments.contains_key(&p.segment) {
                for missing in (1..segment).rev() {
                    if segments.contains_key(&missing) {
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
