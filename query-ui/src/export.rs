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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chaperone_catalog::{quote, table_condition, timestamp_literal, Catalog};
use chaperone_schemas::manifest::{sha256_hex, Manifest};
use chaperone_schemas::{Layout, Partition, Table};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format: String,
    pub format_version: String,
    pub created_at: String,
    /// Who asked (token name, or the command-line user).
    pub created_by: String,
    /// The archive read (its description: directory or URL).
    pub archive: String,
    pub selection: Selection,
    pub resolved: ResolvedSelection,
    pub file_format: ExportFormat,
    pub files: Vec<ExportedFile>,
    /// Rows per archive table.
    pub rows: BTreeMap<String, u64>,
    pub archive_manifests: Vec<SourceManifest>,
}

/// Progress of a running export, for polling.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    /// The table being written now.
    pub table: Mutex<String>,
}

/// An export file: hashed and counted as it is written
/// (`chaperone_archive::parquet_file::HashingWriter`), its bytes reported to the
/// export's progress.
type HashingWriter = chaperone_archive::parquet_file::HashingWriter<ProgressWriter>;

/// Counts what goes through it into the export's progress.
struct ProgressWriter {
    inner: std::io::BufWriter<std::fs::File>,
    progress: Arc<Progress>,
}

impl Write for ProgressWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The batch writer of one format.
enum BatchWriter {
    Parquet(parquet::arrow::ArrowWriter<HashingWriter>),
    Csv(arrow::csv::Writer<HashingWriter>),
    Jsonl(arrow::json::LineDelimitedWriter<HashingWriter>),
}

impl BatchWriter {
    fn new(format: ExportFormat, out: HashingWriter, schema: Arc<Schema>) -> Result<Self, String> {
        Ok(match format {
            ExportFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(
                        parquet::basic::ZstdLevel::try_new(3).map_err(|e| e.to_string())?,
                    ))
                    .build();
                BatchWriter::Parquet(
                    parquet::arrow::ArrowWriter::try_new(out, schema, Some(props))
                        .map_err(|e| e.to_string())?,
                )
            }
            ExportFormat::Csv => BatchWriter::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            ),
            ExportFormat::Jsonl => BatchWriter::Jsonl(arrow::json::LineDelimitedWriter::new(out)),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            BatchWriter::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            BatchWriter::Csv(w) => w.write(&lists_as_json(batch)?).map_err(|e| e.to_string()),
            BatchWriter::Jsonl(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    fn finish(self) -> Result<HashingWriter, String> {
        match self {
            BatchWriter::Parquet(w) => w.into_inner().map_err(|e| e.to_string()),
            BatchWriter::Csv(w) => Ok(w.into_inner()),
            BatchWriter::Jsonl(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                Ok(w.into_inner())
            }
        }
    }
}

/// CSV has no lists: list columns become JSON arrays (`["db.a","db.b"]`).
fn lists_as_json(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if let DataType::List(_) = field.data_type() {
            let list = column.as_list::<i32>();
            let text: StringArray = (0..list.len())
                .map(|i| {
                    if list.is_null(i) {
                        return Ok(None);
                    }
                    let values = list.value(i);
                    let values = arrow::compute::cast(&values, &DataType::Utf8)
                        .map_err(|e| e.to_string())?;
                    let values = values.as_string::<i32>();
                    let items: Vec<Option<&str>> = (0..values.len())
                        .map(|j| (!values.is_null(j)).then(|| values.value(j)))
                        .collect();
                    serde_json::to_string(&items)
                        .map(Some)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, String>>()?;
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// A (table, date, hour, gateway) an exported row came from: which archive
/// files (and so manifests) hold it.
type SourceKey = (String, String, String, String);

/// The SQL conditions of a selection over the `statements` table.
struct Conditions {
    statements: String,
    /// Over `sessions` start rows; `None` with a table filter (sessions then
    /// come only from statements).
    session_starts: Option<String>,
    since_date: Option<String>,
    resolved: ResolvedSelection,
}

async fn conditions(catalog: &Catalog, s: &Selection) -> Result<Conditions, ExportError> {
    let now = chaperone_schemas::event::now_ns();
    let time = |text: &Option<String>, what: &str| -> Result<Option<i64>, ExportError> {
        text.as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| {
                chaperone_archive::since::parse_since(t, now)
                    .map_err(|e| ExportError::Selection(format!("{what}: {e}")))
            })
            .transpose()
    };
    let since_ns = time(&s.since, "since")?;
    let until_ns = time(&s.until, "until")?;
    if let (Some(a), Some(b)) = (since_ns, until_ns) {
        if a >= b {
            return Err(ExportError::Selection(
                "since is not before until: nothing to export".into(),
            ));
        }
    }
    // Time conditions on a time column, with the partition filters that prune
    // whole days.
    let window = |column: &str| {
        let mut c = Vec::new();
        if let Some(t) = since_ns {
            c.push(format!("date >= '{}'", Partition::of_ns(t).date()));
            c.push(format!("{column} >= {}", timestamp_literal(t)));
        }
        if let Some(t) = until_ns {
            c.push(format!("date <= '{}'", Partition::of_ns(t).date()));
            c.push(format!("{column} < {}", timestamp_literal(t)));
        }
        c
    };
    let mut statements = window("started_at");
    let mut starts = window("time");
    starts.push("event = 'start'".into());
    if let Some(agent) = s.agent.as_deref().filter(|a| !a.is_empty()) {
        let c = format!("(subject = {0} OR display_name = {0})", quote(agent));
        statements.push(c.clone());
        starts.push(c);
    }
    let mut matched_tables = None;
    let table = s.table.as_deref().filter(|t| !t.is_empty());
    if let Some(table) = table {
        // A bare name matches `db.name` in any database: resolve the names
        // first, then an exact list test per statement.
        let names: Vec<String> = if table.contains('.') {
            vec![table.to_string()]
        } else {
            let mut c = window("started_at");
            c.push(table_condition(table));
            let batches = catalog
                .query(&format!(
                    "SELECT DISTINCT table_name FROM table_access WHERE {} ORDER BY 1",
                    c.join(" AND ")
                ))
                .await?;
            let mut names = Vec::new();
            for b in &batches {
                let col = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
                let col = col.as_string::<i32>();
                names.extend((0..col.len()).map(|i| col.value(i).to_string()));
            }
            names
        };
        statements.push(if names.is_empty() {
            "false".to_string()
        } else {
            let list = names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(", ");
            format!(
                "(array_has_any(tables_read, make_array({list})) OR array_has_any(tables_written, make_array({list})))"
            )
        });
        matched_tables = Some(names);
    }
    let and = |c: Vec<String>| {
        if c.is_empty() {
            "true".to_string()
        } else {
            c.join(" AND ")
        }
    };
    Ok(Conditions {
        statements: and(statements),
        session_starts: table.is_none().then(|| and(starts)),
        since_date: since_ns.map(|t| Partition::of_ns(t).date()),
        resolved: ResolvedSelection {
            since_ns,
            until_ns,
            matched_tables,
        },
    })
}

/// The query that selects one archive table's rows: the table's own columns,
/// then `date` and `hour` (for the source manifests; not written).
fn table_sql(table: Table, c: &Conditions) -> String {
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| format!("t.\"{}\"", f.name()))
        .collect();
    let columns = columns.join(", ");
    let selected = format!("SELECT session_id FROM statements WHERE {}", c.statements);
    let filter = match table {
        Table::Statements => c.statements.clone(),
        Table::Sessions => match &c.session_starts {
            Some(starts) => format!(
                "session_id IN ({selected} UNION SELECT session_id FROM sessions WHERE {starts})"
            ),
            None => format!("session_id IN ({selected})"),
        },
        // Unqualified names inside the subquery are the statements' own (the
        // innermost table wins).
        Table::Frames => format!(
            "{}EXISTS (SELECT 1 FROM statements s WHERE {} \
             AND s.session_id = t.session_id AND s.command_index = t.command_index)",
            c.since_date
                .as_ref()
                .map(|d| format!("t.date >= '{d}' AND "))
                .unwrap_or_default(),
            c.statements
        ),
    };
    format!(
        "SELECT {columns}, t.date, t.hour FROM {} t WHERE {filter}",
        table.name()
    )
}

/// Exports `request` from `catalog` into `dir` (created; must be empty or
/// new). Returns the manifest, also written to `dir/manifest.json`.
pub async fn run_export(
    catalog: &Catalog,
    request: &ExportRequest,
    dir: &Path,
    progress: Arc<Progress>,
    created_by: &str,
) -> Result<ExportManifest, ExportError> {
    let mut tables = Vec::new();
    for name in &request.selection.tables {
        let t = Table::from_name(name).ok_or_else(|| {
            ExportError::Selection(format!(
                "tables: {name:?} is not an archive table (sessions, statements, frames)"
            ))
        })?;
        if !tables.contains(&t) {
            tables.push(t);
        }
    }
    if tables.is_empty() {
        return Err(ExportError::Selection(
            "tables is empty: name sessions, statements and/or frames".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ExportError::Selection(format!(
            "{} is not empty: export into a new directory",
            dir.display()
        )));
    }
    let conditions = conditions(catalog, &request.selection).await?;
    let mut files = Vec::new();
    let mut rows = BTreeMap::new();
    let mut sources: BTreeSet<SourceKey> = BTreeSet::new();
    for table in tables {
        *progress.table.lock().expect("progress lock") = table.name().to_string();
        let name = format!("{}.{}", table.name(), request.format.extension());
        let path = dir.join(&name);
        let file = write_table(
            catalog,
            table,
            &table_sql(table, &conditions),
            &path,
            &name,
            request.format,
            &progress,
            &mut sources,
        )
        .await?;
        rows.insert(table.name().to_string(), file.rows);
        files.push(file);
    }
    let archive_manifests = source_manifests(catalog, &sources).await?;
    let manifest = ExportManifest {
        format: EXPORT_FORMAT.into(),
        format_version: "1".into(),
        created_at: rfc3339_now(),
        created_by: created_by.to_string(),
        archive: catalog.store().description.clone(),
        selection: request.selection.clone(),
        resolved: conditions.resolved,
        file_format: request.format,
        files,
        rows,
        archive_manifests,
    };
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| ExportError::Write {
        file: MANIFEST_FILE.into(),
        message: e.to_string(),
    })?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(manifest)
}

#[allow(clippy::too_many_arguments)]
async fn write_table(
    catalog: &Catalog,
    table: Table,
    sql: &str,
    path: &Path,
    name: &str,
    format: ExportFormat,
    progress: &Arc<Progress>,
    sources: &mut BTreeSet<SourceKey>,
) -> Result<ExportedFile, ExportError> {
    let failed = |message: String| ExportError::Write {
        file: name.to_string(),
        message,
    };
    let df = catalog.sql(sql).await?;
    let mut stream = df.execute_stream().await?;
    let schema = table.schema();
    let width = schema.fields().len();
    let out = HashingWriter::new(ProgressWriter {
        inner: std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(path).map_err(io(path))?,
        ),
        progress: progress.clone(),
    });
    let mut writer = BatchWriter::new(format, out, schema.clone()).map_err(failed)?;
    let gateway_column = schema
        .index_of("gateway_id")
        .map_err(|e| failed(e.to_string()))?;
    let mut rows = 0u64;
    let mut last: Option<SourceKey> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        // Where each row came from: (date, hour, gateway) runs are long (rows
        // arrive file by file), so compare with the last one before inserting.
        let text = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
        let (date, hour, gateway) = (text(width)?, text(width + 1)?, text(gateway_column)?);
        let (date, hour, gateway) = (
            date.as_string::<i32>(),
            hour.as_string::<i32>(),
            gateway.as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            let same = last.as_ref().is_some_and(|(_, d, h, g)| {
                d == date.value(i) && h == hour.value(i) && g == gateway.value(i)
            });
            if !same {
                let key = (
                    table.name().to_string(),
                    date.value(i).to_string(),
                    hour.value(i).to_string(),
                    gateway.value(i).to_string(),
                );
                sources.insert(key.clone());
                last = Some(key);
            }
        }
        let data = RecordBatch::try_new(schema.clone(), batch.columns()[..width].to_vec())
            .map_err(|e| failed(e.to_string()))?;
        writer.write(&data).map_err(failed)?;
        rows += data.num_rows() as u64;
        progress
            .rows
            .fetch_add(data.num_rows() as u64, Ordering::Relaxed);
    }
    let mut out = writer.finish().map_err(failed)?;
    out.flush().map_err(io(path))?;
    out.inner.inner.get_ref().sync_all().map_err(io(path))?;
    Ok(ExportedFile {
        name: name.to_string(),
        table: table.name().to_string(),
        rows,
        bytes: out.bytes,
        sha256: hex::encode(out.hasher.finalize()),
    })
}

/// The archive manifests listing a data file that holds exported rows.
async fn source_manifests(
    catalog: &Catalog,
    sources: &BTreeSet<SourceKey>,
) -> Result<Vec<SourceManifest>, ExportError> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let store = catalog.store();
    let layout = Layout::new(&store.prefix);
    let mut out = Vec::new();
    for (path, _) in store.list(&layout.manifests_root()).await? {
        let Some((gateway_id, segment)) = layout.parse_manifest(&path) else {
            continue;
        };
        let bytes = store.get(&path).await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ExportError::BadManifest {
                path: PathBuf::from(&path),
                message: e.to_string(),
            })?;
        let files: Vec<SourceFile> = manifest
            .files
            .iter()
            .filter(|f| {
                let part = |key: &str| {
                    f.path
                        .split('/')
                        .find_map(|p| p.strip_prefix(key))
                        .unwrap_or_default()
                        .to_string()
                };
                sources.contains(&(
                    f.table.clone(),
                    part("date="),
                    part("hour="),
                    gateway_id.clone(),
                ))
            })
            .map(|f| SourceFile {
                path: f.path.clone(),
                table: f.table.clone(),
                sha256: f.sha256.clone(),
                rows: f.rows,
            })
            .collect();
        if !files.is_empty() {
            out.push(SourceManifest {
                path,
                sha256: sha256_hex(&bytes),
                gateway_id,
                segment,
                files,
            });
        }
    }
    Ok(out)
}

fn rfc3339_now() -> String {
    chaperone_schemas::time::rfc3339_ns(chaperone_schemas::event::now_ns())
}

/// One thing wrong with an export directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportProblem {
    Missing { file: String },
    Altered { file: String, detail: String },
    Unlisted { file: String },
}

impl std::fmt::Display for ExportProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportProblem::Missing { file } => {
                write!(f, "FILE MISSING {file} (listed in {MANIFEST_FILE})")
            }
            ExportProblem::Altered { file, detail } => write!(f, "FILE ALTERED {file}: {detail}"),
            ExportProblem::Unlisted { file } => {
                write!(f, "FILE NOT IN {MANIFEST_FILE} {file}")
            }
        }
    }
}

/// Checks an export directory against its `manifest.json`: every listed file
/// present with the same size and SHA-256, and no file that is not listed.
/// Returns the manifest and the problems (empty: the export verifies).
pub fn verify_dir(dir: &Path) -> Result<(ExportManifest, Vec<ExportProblem>), ExportError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(io(&path))?;
    let manifest: ExportManifest =
        serde_json::from_slice(&text).map_err(|e| ExportError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if manifest.format != EXPORT_FORMAT {
        return Err(ExportError::BadManifest {
            path,
            message: format!("format is {:?}, not {EXPORT_FORMAT:?}", manifest.format),
        });
    }
    let mut problems = Vec::new();
    let mut listed = BTreeSet::from([MANIFEST_FILE.to_string()]);
    for f in &manifest.files {
        listed.insert(f.name.clone());
        // Names are plain file names: never follow a path out of the directory.
        if f.name.contains('/') || f.name.contains('\\') || f.name.starts_with('.') {
            problems.push(ExportProblem::Altered {
                file: f.name.clone(),
                detail: "not a plain file name".into(),
            });
            continue;
        }
        let file = dir.join(&f.name);
        let mut input = match std::fs::File::open(&file) {
            Ok(input) => input,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(ExportProblem::Missing {
                    file: f.name.clone(),
                });
                continue;
            }
            Err(e) => return Err(io(&file)(e)),
        };
        let mut hash = Sha256::new();
        let bytes = std::io::copy(&mut input, &mut hash).map_err(io(&file))?;
        let sha256 = hex::encode(hash.finalize());
        if bytes != f.bytes {
            problems.push(ExportProblem::Altered {
                file: f.name.clone(),
                detail: format!("{bytes} bytes, the manifest says {}", f.bytes),
            });
        } else if sha256 != f.sha256 {
            problems.push(ExportProblem::Altered {
                file: f.name.clone(),
                detail: format!("SHA-256 {sha256}, the manifest says {}", f.sha256),
            });
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy().into_owned();
        if !listed.contains(&name) {
            problems.push(ExportProblem::Unlisted { file: name });
        }
    }
    Ok((manifest, problems))
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
    pub created_by: String,
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
            "created_by": self.created_by,
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
    pub fn create(&self, root: &Path, request: ExportRequest, created_by: &str) -> Arc<ExportJob> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "exp-{:x}-{n}",
            chaperone_schemas::event::now_ns() / 1_000_000
        );
        let job = Arc::new(ExportJob {
            dir: root.join(&id),
            id: id.clone(),
            request,
            created_by: created_by.to_string(),
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
