//! Writing an export: the selection as SQL over the catalog, each table into
//! one file (hashed as it is written), the archive manifests the rows came from.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chaperone_catalog::{quote, table_condition, timestamp_literal, Catalog};
use chaperone_schemas::manifest::{sha256_hex, Manifest};
use chaperone_schemas::{Layout, Partition, Table};
use futures::StreamExt;
use sha2::Digest;

use super::{
    io, ExportError, ExportFormat, ExportManifest, ExportRequest, ExportedFile, Exporter, Progress,
    ResolvedSelection, Selection, SourceFile, SourceManifest, EXPORT_FORMAT, MANIFEST_FILE,
};

/// Rows per batch handed to the file writers. The Parquet writer's page and row
/// group boundaries depend on the batches it is given, and the query engine's
/// batch sizes vary from run to run: fixed-size batches keep the bytes the same.
const WRITE_BATCH_ROWS: usize = 8192;

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
        "SELECT {columns}, t.date, t.hour FROM {} t WHERE {filter} ORDER BY {}",
        table.name(),
        row_order(table)
    )
}

/// A total order of a table's rows (the last columns make every row unique),
/// so that exporting the same selection twice writes the rows in the same order.
fn row_order(table: Table) -> &'static str {
    match table {
        Table::Sessions => "t.\"time\", t.session_id, t.event",
        Table::Statements => "t.started_at, t.session_id, t.command_index",
        Table::Frames => "t.session_id, t.seq",
    }
}

/// Exports `request` from `catalog` into `dir` (created; must be empty or
/// new). Returns the manifest, also written to `dir/manifest.json`.
pub async fn run_export(
    catalog: &Catalog,
    request: &ExportRequest,
    dir: &Path,
    progress: Arc<Progress>,
    exporter: &Exporter,
    key: &ed25519_dalek::SigningKey,
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
    let mut manifest = ExportManifest {
        format: EXPORT_FORMAT.into(),
        // 2: signed, with the exporter and a deterministic row order.
        format_version: "2".into(),
        created_at: rfc3339_now(),
        created_by: exporter.label(),
        exporter: exporter.clone(),
        archive: catalog.store().description.clone(),
        selection: request.selection.clone(),
        resolved: conditions.resolved,
        file_format: request.format,
        files,
        rows,
        archive_manifests,
        signature: None,
    };
    let path = dir.join(MANIFEST_FILE);
    let text = manifest.sign(key)?;
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
    let mut pending = Pending::new(schema.clone());
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
        rows += data.num_rows() as u64;
        progress
            .rows
            .fetch_add(data.num_rows() as u64, Ordering::Relaxed);
        pending.push(data);
        while pending.rows >= WRITE_BATCH_ROWS {
            let chunk = pending
                .take(WRITE_BATCH_ROWS)
                .map_err(|e| failed(e.to_string()))?;
            writer.write(&chunk).map_err(failed)?;
        }
    }
    if pending.rows > 0 {
        let rest = pending.rows;
        let chunk = pending.take(rest).map_err(|e| failed(e.to_string()))?;
        writer.write(&chunk).map_err(failed)?;
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

/// Rows read but not yet written: cut into [`WRITE_BATCH_ROWS`] batches.
struct Pending {
    schema: Arc<Schema>,
    batches: Vec<RecordBatch>,
    rows: usize,
}

impl Pending {
    fn new(schema: Arc<Schema>) -> Pending {
        Pending {
            schema,
            batches: Vec::new(),
            rows: 0,
        }
    }

    fn push(&mut self, batch: RecordBatch) {
        self.rows += batch.num_rows();
        self.batches.push(batch);
    }

    /// The first `n` pending rows (`n <= self.rows`) as one batch.
    fn take(&mut self, n: usize) -> Result<RecordBatch, arrow::error::ArrowError> {
        let all = arrow::compute::concat_batches(&self.schema, &self.batches)?;
        let chunk = all.slice(0, n);
        let rest = all.slice(n, all.num_rows() - n);
        self.rows = rest.num_rows();
        self.batches = if self.rows > 0 {
            vec![rest]
        } else {
            Vec::new()
        };
        Ok(chunk)
    }
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
