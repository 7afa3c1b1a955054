//! Exports: a selection of the archive (time range, agent, table touched)
//! written as Parquet, CSV or JSON lines into a directory, with a
//! `manifest.json` that makes the export verifiable offline.
//!
//! The manifest lists every file with its SHA-256, size and row count, the
//! selection as asked and as resolved (times in nanoseconds, table names), and
//! the archive manifests (paths and SHA-256 of their stored bytes) whose data
//! files the rows were read from: a regulator can check the export against its
//! own hashes ([`verify_dir`], `chaperone export verify DIR`) and, with the
//! archive, that every exported row comes from signed, chained segments.
//!
//! The manifest is signed (Ed25519, like the archive's manifests and lifecycle
//! records: [`chaperone_schemas::manifest::sign_value`], `format` keeping the
//! kinds apart): without it, whoever edits a file can rewrite its hash in the
//! manifest too. It names who exported ([`Exporter`]: the identity the service
//! authenticated, or the OS user and host of the command line). Rows are
//! written in a total order and in fixed-size batches, so the same selection
//! gives the same bytes: a recipient can export again and compare hashes.
//!
//! One engine, [`run_export`], for the API (`POST /api/exports`, run in the
//! background with [`Progress`] to poll) and the command line (`chaperone export`).
//!
//! What a selection exports:
//! - `statements`: rows matching the time range (`started_at`), the agent
//!   (subject or display name) and the table (read or written);
//! - `sessions`: the start and end rows of every session with an exported
//!   statement, and, without a table filter, of every session of the agent that
//!   started in the time range (sessions without statements included);
//! - `frames` (only when asked: they are the bulk of the archive): the frames of
//!   the exported statements, for faithful replay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

mod verify;
mod write;

pub use verify::{verify_dir, ExportProblem, VerifiedExport};
pub use write::run_export;

/// The name of the export's own manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The `format` field of an export manifest.
pub const EXPORT_FORMAT: &str = "chaperone.export";

/// Why an export failed or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("selection: {0}")]
    Selection(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the archive: {0}")]
    Catalog(#[from] chaperone_catalog::CatalogError),
    #[error("reading the archive: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("reading the archive: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("reading the archive's manifests: {0}")]
    Store(#[from] chaperone_recorder::StoreError),
    #[error("writing {file}: {message}")]
    Write { file: String, message: String },
    #[error("signing the export manifest: {0}")]
    Sign(String),
    #[error("{path}: not an export manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// The archive's own columns and types (zstd).
    #[default]
    Parquet,
    /// CSV with a header; list columns as JSON arrays, binary as hex.
    Csv,
    /// One JSON object per line; binary as hex.
    Jsonl,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    pub fn parse(text: &str) -> Result<ExportFormat, ExportError> {
        match text {
            "parquet" => Ok(ExportFormat::Parquet),
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" | "json" => Ok(ExportFormat::Jsonl),
            other => Err(ExportError::Selection(format!(
                "format {other:?}: use parquet, csv or jsonl"
            ))),
        }
    }
}

/// What to export, as the auditor asks for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// From this time: `24h`, `7d`, a date or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Before this time (same forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The agent: subject or display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Statements that read or wrote this table (`db.table`, or a bare name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Archive tables to export: `sessions`, `statements` (the default pair),
    /// `frames`.
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
}

fn default_tables() -> Vec<String> {
    vec!["sessions".into(), "statements".into()]
}

/// The selection with times and table names resolved, as recorded in the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResolvedSelection {
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    /// The archive table names `table` matched (`db.table`), when given.
    pub matched_tables: Option<Vec<String>>,
}

/// A request for an export: the selection and the file format.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ExportRequest {
    #[serde(flatten)]
    pub selection: Selection,
    #[serde(default)]
    pub format: ExportFormat,
}

/// One exported file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportedFile {
    /// The file name inside the export directory.
    pub name: String,
    /// The archive table it holds.
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// An archive data file some exported rows were read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: String,
    pub table: String,
    pub sha256: String,
    pub rows: u64,
}

/// An archive manifest the export's rows came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceManifest {
    /// Its object path in the archive.
    pub path: String,
    /// SHA-256 of its stored bytes (what the next manifest of the chain names).
    pub sha256: String,
    pub gateway_id: String,
    pub segment: u64,
    /// Its data files that hold exported rows.
    pub files: Vec<SourceFile>,
}

/// Who exported, as recorded in the signed manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exporter {
    /// The authenticated identity: a token's name, a person's subject, `demo`,
    /// or on the command line the OS user.
    pub name: String,
    /// How it was authenticated: `token`, `web login`, `demo mode`, `os user`.
    pub authenticated_by: String,
    /// The host the command line ran on (none for the service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Exporter {
    /// The command-line user: `$USER` (or `$LOGNAME`) on this host. Not an
    /// authentication (the OS did that), but what the manifest can honestly say.
    pub fn os_user() -> Exporter {
        let name = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("uid {}", current_uid()));
        Exporter {
            name,
            authenticated_by: "os user".into(),
            host: Some(hostname()),
        }
    }

    /// `name` (or `name@host`): the manifest's `created_by`.
    pub fn label(&self) -> String {
        match &self.host {
            Some(host) => format!("{}@{host}", self.name),
            None => self.name.clone(),
        }
    }
}

fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format: String,
    pub format_version: String,
    pub created_at: String,
    /// Who asked: [`Exporter::label`].
    pub created_by: String,
    /// Who asked, and how the service knew.
    pub exporter: Exporter,
    /// The archive read (its description: directory or URL).
    pub archive: String,
    pub selection: Selection,
    pub resolved: ResolvedSelection,
    pub file_format: ExportFormat,
    pub files: Vec<ExportedFile>,
    /// Rows per archive table.
    pub rows: BTreeMap<String, u64>,
    pub archive_manifests: Vec<SourceManifest>,
    /// Ed25519 over the rest of the manifest (canonical JSON, as the archive's
    /// manifests). None only before [`ExportManifest::sign`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<chaperone_schemas::manifest::Signature>,
}

impl ExportManifest {
    /// Signs the manifest (replacing any signature); returns the bytes to write.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) -> Result<Vec<u8>, ExportError> {
        self.signature = None;
        let value = serde_json::to_value(&*self).map_err(|e| ExportError::Sign(e.to_string()))?;
        self.signature = Some(chaperone_schemas::manifest::sign_value(&value, key));
        serde_json::to_vec_pretty(&*self).map_err(|e| ExportError::Sign(e.to_string()))
    }
}

/// Progress of a running export, for polling.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    /// The table being written now.
    pub table: Mutex<String>,
}

/// The state of an export started through the API.
#[derive(Debug, Clone)]
pub enum JobState {
    Running,
    Done(Box<ExportManifest>),
    Failed(String),
}

/// An export started through the API.
pub struct ExportJob {
    pub id: String,
    pub request: ExportRequest,
    pub dir: PathBuf,
    pub created_by: Exporter,
    pub progress: Arc<Progress>,
    pub state: Mutex<JobState>,
}

impl ExportJob {
    /// What `GET /api/exports/{id}` answers.
    pub fn status(&self) -> serde_json::Value {
        let state = self.state.lock().expect("export state lock").clone();
        let (name, files, error) = match &state {
            JobState::Running => ("running", None, None),
            JobState::Done(m) => ("done", Some(m.files.clone()), None),
            JobState::Failed(e) => ("failed", None, Some(e.clone())),
        };
        serde_json::json!({
            "id": self.id,
            "state": name,
            "created_by": self.created_by.label(),
            "selection": self.request.selection,
            "format": self.request.format,
            "table": *self.progress.table.lock().expect("progress lock"),
            "rows_done": self.progress.rows.load(Ordering::Relaxed),
            "bytes_done": self.progress.bytes.load(Ordering::Relaxed),
            "files": files,
            "manifest": matches!(state, JobState::Done(_)).then_some(MANIFEST_FILE),
            "error": error,
        })
    }
}

/// The exports started through the API (kept for the life of the process;
/// their directories stay on disk).
#[derive(Default)]
pub struct Exports {
    jobs: Mutex<BTreeMap<String, Arc<ExportJob>>>,
    next: AtomicU64,
}

impl Exports {
    pub fn get(&self, id: &str) -> Option<Arc<ExportJob>> {
        self.jobs.lock().expect("exports lock").get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<ExportJob>> {
        self.jobs
            .lock()
            .expect("exports lock")
            .values()
            .cloned()
            .collect()
    }

    /// Registers a new job writing under `root`.
    pub fn create(
        &self,
        root: &Path,
        request: ExportRequest,
        created_by: Exporter,
    ) -> Arc<ExportJob> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "exp-{:x}-{n}",
            chaperone_schemas::event::now_ns() / 1_000_000
        );
        let job = Arc::new(ExportJob {
            dir: root.join(&id),
            id: id.clone(),
            request,
            created_by,
            progress: Arc::new(Progress::default()),
            state: Mutex::new(JobState::Running),
        });
        self.jobs
            .lock()
            .expect("exports lock")
            .insert(id, job.clone());
        job
    }
}
