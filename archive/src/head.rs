//! Completeness, from the gateways' heads (`chaperone_schemas::head`): the
//! manifests prove what is in the archive, the heads say how far it should
//! reach. `verify` fails on a gateway whose head is missing, a chain that stops
//! short of its head, segments a gateway sealed but never uploaded, and (with
//! an expectation) gateways that should be in the archive and are not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chaperone_schemas::head::Head;
use chaperone_schemas::layout::Layout;
use chaperone_schemas::manifest::sha256_hex;

use crate::verify::{Problem, Report, VerifyOptions};
use chaperone_store::{Store, StoreError};

/// Which gateways the archive must hold (`verify --expect-gateways`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// At least this many gateways.
    Count(usize),
    /// These gateways (others may be there too).
    Gateways(Vec<String>),
}

impl Expectation {
    /// `3` or `gw-a,gw-b`.
    pub fn parse(text: &str) -> Result<Expectation, String> {
        let text = text.trim();
        if let Ok(n) = text.parse::<usize>() {
            return Ok(Expectation::Count(n));
        }
        let list: Vec<String> = text
            .split(',')
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect();
        if list.is_empty() {
            return Err(
                "--expect-gateways takes a number or a comma-separated list of gateway ids".into(),
            );
        }
        Ok(Expectation::Gateways(list))
    }
}

/// What the heads show to be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadProblem {
    /// A gateway has manifests but no head.
    HeadMissing {
        gateway: String,
        path: String,
    },
    HeadUnreadable {
        path: String,
        error: String,
    },
    /// Segments the gateway sealed that never reached the store.
    SealedNotUploaded {
        gateway: String,
        first: u64,
        last: u64,
    },
    /// The head says segments up to `head` were uploaded; the store's chain
    /// ends at `last` (its last manifests are gone).
    ChainShort {
        gateway: String,
        head: u64,
        last: u64,
    },
    /// The manifest the head names is not the one in the store.
    HeadMismatch {
        gateway: String,
        path: String,
        detail: String,
    },
    /// An expected gateway is not in the archive at all.
    GatewayMissing {
        gateway: String,
    },
    /// Fewer gateways than expected.
    TooFewGateways {
        expected: usize,
        found: Vec<String>,
    },
}

impl fmt::Display for HeadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HeadProblem::*;
        match self {
            HeadMissing { gateway, path } => write!(
                f,
                "HEAD MISSING gateway {gateway}: {path} is not in the store; how far its archive should reach is unknown"
            ),
            HeadUnreadable { path, error } => write!(f, "HEAD UNREADABLE {path}: {error}"),
            SealedNotUploaded { gateway, first, last } => write!(
                f,
                "SEALED NOT UPLOADED gateway {gateway} segment(s) {first}..={last}: sealed in the gateway's spool, not in the store"
            ),
            ChainShort { gateway, head, last } => write!(
                f,
                "CHAIN SHORT gateway {gateway}: its head says segment {head} was uploaded, the store's chain ends at segment {last} (segment(s) {}..={head} missing)",
                last + 1
            ),
            HeadMismatch { gateway, path, detail } => {
                write!(f, "HEAD MISMATCH gateway {gateway} at {path}: {detail}")
            }
            GatewayMissing { gateway } => write!(
                f,
                "GATEWAY MISSING {gateway}: expected, but the archive has neither its head nor a manifest"
            ),
            TooFewGateways { expected, found } => write!(
                f,
                "GATEWAYS MISSING: {expected} expected, {} in the archive ({})",
                found.len(),
                if found.is_empty() { "none".to_string() } else { found.join(", ") }
            ),
        }
    }
}

/// Checks the heads against the chains verify saw: `known` is each gateway's
/// highest segment (in the store or accounted for by a lifecycle record).
pub(crate) async fn check(
    store: &Store,
    layout: &Layout,
    options: &VerifyOptions,
    expect: Option<&Expectation>,
    known: &BTreeMap<String, u64>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let mut heads: BTreeMap<String, Head> = BTreeMap::new();
    for (path, _) in store.list(&layout.heads_root()).await? {
        let Some(gateway) = layout.parse_head(&path) else {
            report.problems.push(Problem::UnlistedFile {
                path,
                detail: "not a head name of this layout".into(),
            });
            continue;
        };
        if options.gateway.as_ref().is_some_and(|g| *g != gateway) {
            continue;
        }
        let bytes = store.get(&path).await?;
        let problem = |error: String| {
            Problem::Completeness(HeadProblem::HeadUnreadable {
                path: path.clone(),
                error,
            })
        };
        match Head::parse(&bytes) {
            Err(e) => report.problems.push(problem(e.to_string())),
            Ok(head) if head.gateway_id != gateway => report.problems.push(problem(format!(
                "its content says gateway {}",
                head.gateway_id
            ))),
            Ok(head) => match crate::verify::check_signature(&bytes, head.updated_at_ns, options) {
                Err(error) => report.problems.push(Problem::BadSignature { path, error }),
                Ok(signer) => {
                    report.signers.insert(signer);
                    heads.insert(gateway, head);
                }
            },
        }
    }
    let mut problems = Vec::new();
    for gateway in known.keys() {
        if !heads.contains_key(gateway) {
            problems.push(HeadProblem::HeadMissing {
                gateway: gateway.clone(),
                path: layout.head(gateway),
            });
        }
    }
    for (gateway, head) in &heads {
        let last = known.get(gateway).copied().unwrap_or(0);
        if head.last_uploaded_segment > last {
            problems.push(HeadProblem::ChainShort {
                gateway: gateway.clone(),
                head: head.last_uploaded_segment,
                last,
            });
        } else if let Some(expected) = &head.last_uploaded_manifest_sha256 {
            let path = layout.manifest(gateway, head.last_uploaded_segment);
            // Absent: taken out by retention or compaction (the chain check
            // covers that); present, it must be the manifest the head names.
            if let Some(bytes) = store.get_if_exists(&path).await? {
                let actual = sha256_hex(&bytes);
                if actual != *expected {
                    problems.push(HeadProblem::HeadMismatch {
                        gateway: gateway.clone(),
                        path,
                        detail: format!(
                            "the head names SHA-256 {expected}, the store has {actual}"
                        ),
                    });
                }
            }
        }
        if head.last_sealed_segment > head.last_uploaded_segment.max(last) {
            problems.push(HeadProblem::SealedNotUploaded {
                gateway: gateway.clone(),
                first: head.last_uploaded_segment.max(last) + 1,
                last: head.last_sealed_segment,
            });
        }
    }
    let present: BTreeSet<String> = known.keys().chain(heads.keys()).cloned().collect();
    report.gateways = present.len();
    match expect {
        Some(Expectation::Count(n)) if present.len() < *n => {
            problems.push(HeadProblem::TooFewGateways {
                expected: *n,
                found: present.iter().cloned().collect(),
            });
        }
        Some(Expectation::Gateways(list)) => {
            for g in list {
                if !present.contains(g) {
                    problems.push(HeadProblem::GatewayMissing { gateway: g.clone() });
                }
            }
        }
        Some(Expectation::Count(_)) => {}
        None if present.is_empty() => report.notes.push(
            "NOTE the archive holds no gateway at all; `verify --expect-gateways N` (or a list) makes that a failure".into(),
        ),
        None => {}
    }
    report
        .problems
        .extend(problems.into_iter().map(Problem::Completeness));
    Ok(())
}
