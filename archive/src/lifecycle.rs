//! The archive's life cycle: retention (delete or move segments past a policy,
//! except those under legal hold) and compaction (merge small segments into
//! larger files).
//!
//! Neither rewrites a manifest. Each run appends one signed
//! [`LifecycleRecord`] per gateway it touched to that gateway's lifecycle chain
//! (`v1/lifecycle/<gateway>/<n>.json`) *before* deleting anything, naming every
//! manifest and file it takes out with their SHA-256; `verify` follows the
//! manifest chain through those records (see `chaperone_schemas::lifecycle`).
//! A run that stops half-way (crash, outage) is finished by running it again:
//! segments a record already names are deleted without a new record.
//!
//! The order of writes keeps every reader safe: retention copies (`--move-to`),
//! then records, then deletes data files, then manifests; compaction uploads the
//! new files, records, then deletes the old files and manifests (a reader
//! listing the store in between may briefly see a segment's rows twice).

use std::collections::{BTreeMap, BTreeSet};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chaperone_schemas::layout::Layout;
use chaperone_schemas::lifecycle::{LifecycleAction, LifecycleRecord, SegmentRef};
use chaperone_schemas::manifest::{
    sha256_hex, Manifest, ManifestFile, PreviousManifest, SessionSeqs,
};
use chaperone_schemas::tables::Table;
use chaperone_schemas::time::rfc3339_ns;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use chaperone_store::{Store, StoreError};

/// A lifecycle job failed; what was done before stays consistent (see the
/// module docs) and running the job again finishes it.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("another lifecycle job wrote {path} first; run again")]
    Concurrent { path: String },
    #[error("compaction: {0}")]
    Compaction(String),
}

/// A present manifest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub path: String,
    pub sha256: String,
    pub manifest: Manifest,
}

/// A present lifecycle record.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub path: String,
    pub sha256: String,
    pub record: LifecycleRecord,
}

/// One gateway's manifests and lifecycle records as the store has them.
#[derive(Debug, Clone, Default)]
pub struct GatewayArchive {
    pub gateway_id: String,
    pub manifests: BTreeMap<u64, StoredManifest>,
    /// By sequence.
    pub records: BTreeMap<u64, StoredRecord>,
}

impl GatewayArchive {
    /// Reads every manifest and lifecycle record of `gateway_id`.
    pub async fn load(
        store: &Store,
        layout: &Layout,
        gateway_id: &str,
    ) -> Result<GatewayArchive, LifecycleError> {
        let mut out = GatewayArchive {
            gateway_id: gateway_id.to_string(),
            ..Default::default()
        };
        for (path, _) in store.list(&layout.gateway_manifests(gateway_id)).await? {
            let Some((_, segment)) = layout.parse_manifest(&path) else {
                continue;
            };
            let bytes = store.get(&path).await?;
            let manifest = Manifest::parse(&bytes).map_err(|e| LifecycleError::Unreadable {
                path: path.clone(),
                message: e.to_string(),
            })?;
            out.manifests.insert(
                segment,
                StoredManifest {
                    path,
                    sha256: sha256_hex(&bytes),
                    manifest,
                },
            );
        }
        for (path, _) in store.list(&layout.gateway_lifecycle(gateway_id)).await? {
            let Some((_, sequence)) = layout.parse_lifecycle_record(&path) else {
                continue;
            };
            let bytes = store.get(&path).await?;
            let record =
                LifecycleRecord::parse(&bytes).map_err(|e| LifecycleError::Unreadable {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            out.records.insert(
                sequence,
                StoredRecord {
                    path,
                    sha256: sha256_hex(&bytes),
                    record,
                },
            );
        }
        Ok(out)
    }

    /// The `previous` link and sequence of the next lifecycle record.
    fn next_record(&self) -> (u64, Option<PreviousManifest>) {
        match self.records.iter().next_back() {
            None => (1, None),
            Some((seq, r)) => (
                seq + 1,
                Some(PreviousManifest {
                    segment: *seq,
                    sha256: r.sha256.clone(),
                }),
            ),
        }
    }

    /// Segments some record already took out of the chain.
    fn accounted(&self) -> BTreeSet<u64> {
        self.records
            .values()
            .flat_map(|r| r.record.segments.iter().map(|s| s.segment))
            .collect()
    }

    /// Files some retention record deleted.
    fn retired_files(&self) -> BTreeSet<String> {
        self.records
            .values()
            .filter(|r| r.record.action == LifecycleAction::Retention)
            .flat_map(|r| r.record.removed_files.iter().map(|f| f.path.clone()))
            .collect()
    }

    /// The highest segment number and its manifest hash, whether the manifest
    /// is present or only named by a lifecycle record: where the gateway's
    /// chain goes on.
    pub fn head(&self) -> Option<(u64, String)> {
        let present = self
            .manifests
            .iter()
            .next_back()
            .map(|(s, m)| (*s, m.sha256.clone()));
        let recorded = self
            .records
            .values()
            .flat_map(|r| r.record.segments.iter())
            .max_by_key(|s| s.segment)
            .map(|s| (s.segment, s.manifest_sha256.clone()));
        match (present, recorded) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// The gateways that have manifests or lifecycle records in the store.
pub async fn gateways(store: &Store, layout: &Layout) -> Result<Vec<String>, StoreError> {
    let mut out = BTreeSet::new();
    for (path, _) in store.list(&layout.manifests_root()).await? {
        if let Some((g, _)) = layout.parse_manifest(&path) {
            out.insert(g);
        }
    }
    for (path, _) in store.list(&layout.lifecycle_root()).await? {
        if let Some((g, _)) = layout.parse_lifecycle_record(&path) {
            out.insert(g);
        }
    }
    Ok(out.into_iter().collect())
}

/// Legal holds: sessions whose segments retention must keep.
#[derive(Debug, Clone, Default)]
pub struct LegalHolds {
    pub sessions: BTreeSet<String>,
    pub subjects: BTreeSet<String>,
}

impl LegalHolds {
    /// Parses holds: `session=ID` or `subject=NAME`, one per entry. In a file,
    /// one per line; blank lines and `#` comments are ignored.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        match entry.split_once('=') {
            Some(("session", id)) if !id.trim().is_empty() => {
                self.sessions.insert(id.trim().to_string());
            }
            Some(("subject", s)) if !s.trim().is_empty() => {
                self.subjects.insert(s.trim().to_string());
            }
            _ => {
                return Err(format!(
                    "legal hold {entry:?}: write session=<session id> or subject=<agent subject>"
                ))
            }
        }
        Ok(())
    }

    pub fn add_file(&mut self, text: &str, name: &str) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                self.add(line)
                    .map_err(|e| format!("{name} line {}: {e}", i + 1))?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.subjects.is_empty()
    }

    /// The holds in words, for the record.
    pub fn describe(&self) -> Vec<String> {
        self.sessions
            .iter()
            .map(|s| format!("session={s}"))
            .chain(self.subjects.iter().map(|s| format!("subject={s}")))
            .collect()
    }
}

/// What retention does.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// Segments whose newest row is older than this (Unix ns) go.
    pub cutoff_ns: i64,
    /// The policy in words, for the record (`older than 90d`).
    pub policy: String,
    /// Sessions that stay; `subjects` must already be resolved into `sessions`
    /// (see [`subjects_sessions`]), the subjects are kept for the record.
    pub holds: LegalHolds,
    /// Copy removed objects here first (same paths under its prefix).
    pub move_to: Option<Store>,
    pub dry_run: bool,
    /// Only this gateway.
    pub gateway: Option<String>,
}

/// What a lifecycle job did (or, dry, would do), per gateway.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub gateways: BTreeMap<String, GatewayOutcome>,
}

#[derive(Debug, Default, Clone)]
pub struct GatewayOutcome {
    /// Segments taken out (retention) or merged (compaction).
    pub segments: Vec<u64>,
    pub files: usize,
    pub bytes: u64,
    /// Segments kept by a legal hold, with the held sessions.
    pub held: BTreeMap<u64, Vec<String>>,
    /// Compaction: files written.
    pub new_files: usize,
    pub new_bytes: u64,
    /// The lifecycle records written.
    pub records: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (g, o) in &self.gateways {
            write!(
                f,
                "gateway {g}: {} segment(s) [{}], {} file(s), {} bytes",
                o.segments.len(),
                ranges(&o.segments),
                o.files,
                o.bytes
            )?;
            if o.new_files > 0 {
                write!(f, " -> {} file(s), {} bytes", o.new_files, o.new_bytes)?;
            }
            if !o.held.is_empty() {
                write!(
                    f,
                    "; kept under legal hold: segment(s) [{}]",
                    ranges(&o.held.keys().copied().collect::<Vec<_>>())
                )?;
            }
            for r in &o.records {
                write!(f, "; record {r}")?;
            }
            writeln!(f)?;
        }
        if self.gateways.is_empty() {
            writeln!(f, "nothing to do")?;
        }
        Ok(())
    }
}

/// `1-4, 7, 9-10`.
pub fn ranges(numbers: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end + 1 {
            i += 1;
            end = numbers[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// One unit retention can take out: a present manifest, or the files of a
/// compaction record not yet removed.
struct Unit {
    segments: Vec<SegmentRef>,
    /// Manifest objects to delete (none for a compaction record's unit).
    manifest_paths: Vec<String>,
    files: Vec<ManifestFile>,
    sessions: Vec<SessionSeqs>,
    newest_ns: i64,
}

fn segment_ref(m: &StoredManifest) -> SegmentRef {
    SegmentRef {
        segment: m.manifest.segment,
        manifest_sha256: m.sha256.clone(),
        previous: m.manifest.previous.clone(),
        sealed_at_ns: m.manifest.sealed_at_ns,
        min_time_ns: m.manifest.min_time_ns,
        max_time_ns: m.manifest.max_time_ns,
        signed_by: m
            .manifest
            .signature
            .as_ref()
            .map(|s| s.key_id.clone().unwrap_or_else(|| s.public_key.clone())),
    }
}

fn units(archive: &GatewayArchive) -> Vec<Unit> {
    let accounted = archive.accounted();
    let retired = archive.retired_files();
    let mut out: Vec<Unit> = archive
        .manifests
        .values()
        .filter(|m| !accounted.contains(&m.manifest.segment))
        .map(|m| Unit {
            segments: vec![segment_ref(m)],
            manifest_paths: vec![m.path.clone()],
            files: m.manifest.files.clone(),
            sessions: m.manifest.sessions.clone(),
            newest_ns: m.manifest.max_time_ns.unwrap_or(m.manifest.sealed_at_ns),
        })
        .collect();
    for r in archive.records.values() {
        let r = &r.record;
        if r.action == LifecycleAction::Compaction
            && !r.files.is_empty()
            && r.files.iter().all(|f| !retired.contains(&f.path))
        {
            out.push(Unit {
                segments: r.segments.clone(),
                manifest_paths: Vec::new(),
                files: r.files.clone(),
                sessions: r.sessions.clone(),
                newest_ns: r.files.iter().map(|f| f.max_time_ns).max().unwrap_or(0),
            });
        }
    }
    out.sort_by_key(|u| u.segments.first().map(|s| s.segment));
    out
}

/// Objects a lifecycle record took out of the chain that are still in the
/// store (a run that stopped half-way): paths to delete, data files first.
fn leftovers(archive: &GatewayArchive, existing: &BTreeSet<String>) -> Vec<String> {
    let mut data = Vec::new();
    let mut manifests = Vec::new();
    for r in archive.records.values() {
        for f in &r.record.removed_files {
            if existing.contains(&f.path) {
                data.push(f.path.clone());
            }
        }
        for s in &r.record.segments {
            if let Some(m) = archive.manifests.get(&s.segment) {
                manifests.push(m.path.clone());
            }
        }
    }
    data.extend(manifests);
    data.dedup();
    data
}

async fn existing_objects(store: &Store, layout: &Layout) -> Result<BTreeSet<String>, StoreError> {
    let mut out = BTreeSet::new();
    for table in Table::ALL {
        for (p, _) in store.list(&layout.table_root(table)).await? {
            out.insert(p);
        }
    }
    Ok(out)
}

/// Writes a record with create-only semantics: a concurrent job that took the
/// same sequence number makes this one fail instead of overwriting it.
async fn put_record(store: &Store, path: &str, bytes: Vec<u8>) -> Result<(), LifecycleError> {
    let location = object_store::path::Path::from(path);
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .inner
        .put_opts(&location, PutPayload::from(bytes.clone()), opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => Err(LifecycleError::Concurrent {
            path: path.to_string(),
        }),
        // Stores without conditional writes: check, then write.
        Err(object_store::Error::NotImplemented { .. }) => {
            if store.inner.head(&location).await.is_ok() {
                return Err(LifecycleError::Concurrent {
                    path: path.to_string(),
                });
            }
            store.put(path, Bytes::from(bytes)).await?;
            Ok(())
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

async fn delete(store: &Store, path: &str) -> Result<(), StoreError> {
    match store
        .inner
        .delete(&object_store::path::Path::from(path))
        .await
    {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Copies `path` from `from` to the same place under `to`'s prefix.
async fn copy_to(from: &Store, to: &Store, path: &str) -> Result<(), StoreError> {
    let relative = path
        .strip_prefix(&from.prefix)
        .unwrap_or(path)
        .trim_start_matches('/');
    let target = if to.prefix.is_empty() {
        relative.to_string()
    } else {
        format!("{}/{relative}", to.prefix)
    };
    let data = from.get(path).await?;
    to.put(&target, data).await
}

/// Deletes (or moves) the segments past `options.cutoff_ns`, except those
/// holding a session under legal hold. `progress` gets one line per step.
pub async fn retention(
    store: &Store,
    key: &ed25519_dalek::SigningKey,
    options: &RetentionOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Outcome, LifecycleError> {
    let layout = Layout::new(&store.prefix);
    let mut outcome = Outcome::default();
    let existing = existing_objects(store, &layout).await?;
    for gateway in gateways(store, &layout).await? {
        if options.gateway.as_ref().is_some_and(|g| *g != gateway) {
            continue;
        }
        let archive = GatewayArchive::load(store, &layout, &gateway).await?;
        let leftover = leftovers(&archive, &existing);
        if !leftover.is_empty() && !options.dry_run {
            progress(format!(
                "gateway {gateway}: finishing an interrupted run: deleting {} object(s) already recorded as removed",
                leftover.len()
            ));
            for path in &leftover {
                delete(store, path).await?;
            }
        }
        let mut result = GatewayOutcome::default();
        let mut chosen = Vec::new();
        for unit in units(&archive) {
            if unit.newest_ns >= options.cutoff_ns {
                continue;
            }
            let held: Vec<String> = unit
                .sessions
                .iter()
                .filter(|s| options.holds.sessions.contains(&s.session_id))
                .map(|s| s.session_id.clone())
                .collect();
            if !held.is_empty() {
                for s in &unit.segments {
                    result.held.insert(s.segment, held.clone());
                }
                continue;
            }
            chosen.push(unit);
        }
        if chosen.is_empty() && result.held.is_empty() {
            continue;
        }
        for u in &chosen {
            result.segments.extend(u.segments.iter().map(|s| s.segment));
            result.files += u.files.len();
            result.bytes += u.files.iter().map(|f| f.bytes).sum::<u64>();
        }
        progress(format!(
            "gateway {gateway}: {} segment(s) older than the policy ({} file(s), {} bytes){}",
            result.segments.len(),
            result.files,
            result.bytes,
            if result.held.is_empty() {
                String::new()
            } else {
                format!(", {} kept under legal hold", result.held.len())
            }
        ));
        if options.dry_run || chosen.is_empty() {
            outcome.gateways.insert(gateway, result);
            continue;
        }
        if let Some(target) = &options.move_to {
            let total = chosen.len();
            for (i, u) in chosen.iter().enumerate() {
                for f in &u.files {
                    copy_to(store, target, &f.path).await?;
                }
                for m in &u.manifest_paths {
                    copy_to(store, target, m).await?;
                }
                progress(format!(
                    "gateway {gateway}: copied {}/{total} to {}",
                    i + 1,
                    target.description
                ));
            }
        }
        let (sequence, previous) = archive.next_record();
        let mut record = LifecycleRecord::new(
            &gateway,
            sequence,
            previous,
            LifecycleAction::Retention,
            format!(
                "{} (rows before {})",
                options.policy,
                rfc3339_ns(options.cutoff_ns)
            ),
        );
        record.holds = options.holds.describe();
        record.moved_to = options.move_to.as_ref().map(|s| s.description.clone());
        for u in &chosen {
            record.segments.extend(u.segments.iter().cloned());
            record.removed_files.extend(u.files.iter().cloned());
            record.sessions.extend(u.sessions.iter().cloned());
        }
        record.segments.sort_by_key(|s| s.segment);
        let path = layout.lifecycle_record(&gateway, sequence);
        put_record(store, &path, record.sign(key)).await?;
        progress(format!("gateway {gateway}: recorded in {path}"));
        let total = chosen.len();
        for (i, u) in chosen.iter().enumerate() {
            for f in &u.files {
                delete(store, &f.path).await?;
            }
            for m in &u.manifest_paths {
                delete(store, m).await?;
            }
            if (i + 1) % 100 == 0 || i + 1 == total {
                progress(format!("gateway {gateway}: deleted {}/{total}", i + 1));
            }
        }
        result.records.push(path);
        outcome.gateways.insert(gateway, result);
    }
    Ok(outcome)
}

/// What compaction does.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Segments whose files add up to less than this are small; merged groups
    /// grow up to about this size.
    pub target_bytes: u64,
    /// Only segments sealed before this (Unix ns): leave the recent ones alone.
    pub sealed_before_ns: i64,
    pub zstd_level: i32,
    pub dry_run: bool,
    pub gateway: Option<String>,
}

/// Groups of consecutive small segments, each to become one compacted set of
/// files.
fn compaction_groups(archive: &GatewayArchive, options: &CompactOptions) -> Vec<Vec<u64>> {
    let accounted = archive.accounted();
    let mut groups = Vec::new();
    let mut current: Vec<u64> = Vec::new();
    let mut size = 0u64;
    let flush = |current: &mut Vec<u64>, size: &mut u64, groups: &mut Vec<Vec<u64>>| {
        if current.len() >= 2 {
            groups.push(std::mem::take(current));
        }
        current.clear();
        *size = 0;
    };
    for (segment, m) in &archive.manifests {
        let bytes: u64 = m.manifest.files.iter().map(|f| f.bytes).sum();
        let eligible = !accounted.contains(segment)
            && m.manifest.sealed_at_ns < options.sealed_before_ns
            && bytes < options.target_bytes
            && !m.manifest.files.is_empty();
        let follows = current.last().is_some_and(|last| last + 1 == *segment);
        if !eligible || (!current.is_empty() && !follows) {
            flush(&mut current, &mut size, &mut groups);
        }
        if !eligible {
            continue;
        }
        current.push(*segment);
        size += bytes;
        if size >= options.target_bytes {
            flush(&mut current, &mut size, &mut groups);
        }
    }
    flush(&mut current, &mut size, &mut groups);
    groups
}

/// Merges the frame ranges of several manifests' sessions.
fn merge_sessions<'a>(lists: impl Iterator<Item = &'a SessionSeqs>) -> Vec<SessionSeqs> {
    let mut by_id: BTreeMap<String, SessionSeqs> = BTreeMap::new();
    for s in lists {
        let e = by_id
            .entry(s.session_id.clone())
            .or_insert_with(|| SessionSeqs {
                session_id: s.session_id.clone(),
                seq_ranges: Vec::new(),
                started: false,
                ended_with_frames: None,
            });
        e.seq_ranges.extend(s.seq_ranges.iter().copied());
        e.started |= s.started;
        if s.ended_with_frames.is_some() {
            e.ended_with_frames = s.ended_with_frames;
        }
    }
    for s in by_id.values_mut() {
        s.seq_ranges.sort();
        let mut merged: Vec<[u64; 2]> = Vec::new();
        for r in s.seq_ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if r[0] <= last[1].saturating_add(1) && r[0] > last[1] => last[1] = r[1],
                _ => merged.push(r),
            }
        }
        s.seq_ranges = merged;
    }
    by_id.into_values().collect()
}

fn read_parquet(data: Bytes, path: &str) -> Result<Vec<RecordBatch>, LifecycleError> {
    let bad = |e: String| LifecycleError::Unreadable {
        path: path.to_string(),
        message: e,
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| bad(e.to_string()))?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// Merges runs of small consecutive segments of each gateway into one set of
/// files per run (one per table and hour), sorted as sealing sorts them.
pub async fn compact(
    store: &Store,
    key: &ed25519_dalek::SigningKey,
    options: &CompactOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Outcome, LifecycleError> {
    let layout = Layout::new(&store.prefix);
    let mut outcome = Outcome::default();
    let existing = existing_objects(store, &layout).await?;
    for gateway in gateways(store, &layout).await? {
        if options.gateway.as_ref().is_some_and(|g| *g != gateway) {
            continue;
        }
        let mut archive = GatewayArchive::load(store, &layout, &gateway).await?;
        let leftover = leftovers(&archive, &existing);
        if !leftover.is_empty() && !options.dry_run {
            progress(format!(
                "gateway {gateway}: finishing an interrupted run: deleting {} object(s) already recorded as replaced or removed",
                leftover.len()
            ));
            for path in &leftover {
                delete(store, path).await?;
            }
        }
        let groups = compaction_groups(&archive, options);
        if groups.is_empty() {
            continue;
        }
        let mut result = GatewayOutcome::default();
        let total = groups.len();
        for (gi, group) in groups.into_iter().enumerate() {
            let manifests: Vec<StoredManifest> =
                group.iter().map(|s| archive.manifests[s].clone()).collect();
            let old_files: Vec<ManifestFile> = manifests
                .iter()
                .flat_map(|m| m.manifest.files.iter().cloned())
                .collect();
            result.segments.extend(&group);
            result.files += old_files.len();
            result.bytes += old_files.iter().map(|f| f.bytes).sum::<u64>();
            if options.dry_run {
                continue;
            }
            let (first, last) = (group[0], *group.last().expect("a group has segments"));
            // Read each table's rows of the group, check them against the
            // manifests' hashes, and write them sorted into the new files.
            let mut new_files = Vec::new();
            let mut uploads = Vec::new();
            for table in Table::ALL {
                let mut batches = Vec::new();
                for f in old_files.iter().filter(|f| f.table == table.name()) {
                    let data = store.get(&f.path).await?;
                    if sha256_hex(&data) != f.sha256 {
                        return Err(LifecycleError::Compaction(format!(
                            "{} does not match its manifest's SHA-256: not compacting an altered file (run `chaperone verify`)",
                            f.path
                        )));
                    }
                    batches.extend(read_parquet(data, &f.path)?);
                }
                if batches.is_empty() {
                    continue;
                }
                let schema = table.schema();
                if let Some(b) = batches
                    .iter()
                    .find(|b| b.schema().fields() != schema.fields())
                {
                    return Err(LifecycleError::Compaction(format!(
                        "a {} file of segments {first}-{last} has columns {:?}, not this build's: compact with the build that wrote it",
                        table.name(),
                        b.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                    )));
                }
                let batches: Vec<RecordBatch> = batches
                    .into_iter()
                    .map(|b| b.with_schema(schema.clone()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| LifecycleError::Compaction(e.to_string()))?;
                let all = arrow::compute::concat_batches(&schema, &batches)
                    .map_err(|e| LifecycleError::Compaction(e.to_string()))?;
                for (partition, indices) in crate::parquet_file::order_rows(table, &all) {
                    let sorted = crate::parquet_file::take_rows(&all, &indices)
                        .map_err(|e| LifecycleError::Compaction(e.to_string()))?;
                    let bytes =
                        crate::parquet_file::parquet_bytes(table, &sorted, options.zstd_level)
                            .map_err(|e| LifecycleError::Compaction(e.to_string()))?;
                    let (min, max) = crate::parquet_file::time_range(table, &sorted);
                    let path = layout.compacted_data_file(table, partition, &gateway, first, last);
                    new_files.push(ManifestFile {
                        table: table.name().to_string(),
                        path: path.clone(),
                        sha256: sha256_hex(&bytes),
                        bytes: bytes.len() as u64,
                        rows: sorted.num_rows() as u64,
                        min_time_ns: min,
                        max_time_ns: max,
                    });
                    uploads.push((path, bytes));
                }
            }
            let old_rows: u64 = old_files.iter().map(|f| f.rows).sum();
            let new_rows: u64 = new_files.iter().map(|f| f.rows).sum();
            if old_rows != new_rows {
                return Err(LifecycleError::Compaction(format!(
                    "segments {first}-{last}: the manifests count {old_rows} rows, the files hold {new_rows}"
                )));
            }
            for (path, bytes) in uploads {
                result.new_bytes += bytes.len() as u64;
                store.put(&path, Bytes::from(bytes)).await?;
            }
            result.new_files += new_files.len();
            let (sequence, previous) = archive.next_record();
            let mut record = LifecycleRecord::new(
                &gateway,
                sequence,
                previous,
                LifecycleAction::Compaction,
                format!(
                    "compaction of segments under {} bytes, sealed before {}",
                    options.target_bytes,
                    rfc3339_ns(options.sealed_before_ns)
                ),
            );
            record.segments = manifests.iter().map(segment_ref).collect();
            record.removed_files = old_files.clone();
            record.files = new_files;
            record.sessions = merge_sessions(manifests.iter().flat_map(|m| &m.manifest.sessions));
            record.gaps = manifests
                .iter()
                .flat_map(|m| m.manifest.gaps.iter().cloned())
                .collect();
            record.spool_losses = manifests
                .iter()
                .flat_map(|m| m.manifest.spool_losses.iter().cloned())
                .collect();
            let path = layout.lifecycle_record(&gateway, sequence);
            let bytes = record.sign(key);
            let sha = sha256_hex(&bytes);
            put_record(store, &path, bytes).await?;
            archive.records.insert(
                sequence,
                StoredRecord {
                    path: path.clone(),
                    sha256: sha,
                    record,
                },
            );
            for f in &old_files {
                delete(store, &f.path).await?;
            }
            for m in &manifests {
                delete(store, &m.path).await?;
            }
            progress(format!(
                "gateway {gateway}: {}/{total}: segments {first}-{last} ({} files) -> {} ({path})",
                gi + 1,
                old_files.len(),
                layout
                    .compacted_data_file(
                        Table::Frames,
                        chaperone_schemas::layout::Partition::of_ns(0),
                        &gateway,
                        first,
                        last
                    )
                    .rsplit('/')
                    .next()
                    .unwrap_or_default(),
            ));
            result.records.push(path);
        }
        outcome.gateways.insert(gateway, result);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_sessions_merge() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
        let a = SessionSeqs {
            session_id: "s".into(),
            seq_ranges: vec![[0, 9]],
            started: true,
            ended_with_frames: None,
        };
        let b = SessionSeqs {
            session_id: "s".into(),
            seq_ranges: vec![[10, 19]],
            started: false,
            ended_with_frames: Some(20),
        };
        let merged = merge_sessions([a, b].iter());
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].seq_ranges, vec![[0, 19]]);
        assert!(merged[0].started);
        assert_eq!(merged[0].ended_with_frames, Some(20));
    }

    #[test]
    fn holds_parse() {
        let mut h = LegalHolds::default();
        h.add_file(
            "# case 42\nsession=abc\nsubject=agent-x  # its owner\n\n",
            "holds.txt",
        )
        .unwrap();
        assert_eq!(h.describe(), vec!["session=abc", "subject=agent-x"]);
        assert!(h.add("abc").is_err());
        assert!(h
            .add_file("subject=\n", "f")
            .unwrap_err()
            .contains("f line 1"));
    }
}
