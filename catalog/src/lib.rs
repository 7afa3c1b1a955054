//! The read side: one DataFusion catalog over the archive, for `chaperone query`,
//! `chaperone sessions`, the query UI and the replayer.
//!
//! [`Catalog::open`] registers the three tables of `chaperone_schemas` over the
//! archive's object store (a local directory or S3 / GCS / Azure, as [`Store`]
//! opens it) with the schemas' own Arrow schemas (no inference: an empty archive
//! is queryable), the hive partition columns `date` (`'YYYY-MM-DD'`) and `hour`
//! (`'HH'`), and the Parquet read options that make the archive's layout pay:
//! filter pushdown into the scan (late materialisation), page index and bloom
//! filters. File listings are cached for a short time ([`CatalogOptions`]) so
//! that new segments show up without reopening.
//!
//! Views for the common questions (see [`VIEWS`] and `session_list_sql`):
//! - `session_list`: one row per session, start and end joined;
//! - `statement_log`: statements with their session's context (client address,
//!   program, claims, upstream user);
//! - `table_access`: one row per (statement, table, `read` | `write`): "who
//!   touched table X".
//!
//! A time filter prunes files only through the partition columns: add
//! `date >= 'YYYY-MM-DD'` next to a `started_at` / `time` condition
//! ([`date_filter`] writes it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use chaperone_schemas::{Layout, Table};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use chaperone_store::{Store, StoreError};

/// Why the archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("archive {store}: {message}")]
    Setup { store: String, message: String },
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
}

/// How the catalog reads.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// How long a listing of the archive's files is reused. New segments show
    /// up after at most this long.
    pub list_cache_ttl: Duration,
    /// Parallel partitions per query (default: the machine's cores).
    pub target_partitions: Option<usize>,
    /// Evaluate filters inside the Parquet scan, decoding the other columns
    /// only for matching rows (late materialisation).
    pub pushdown_filters: bool,
    /// Most memory (bytes) all queries of this catalog may hold at once (hash
    /// tables, sorts, aggregates). `None`: unbounded, spilling to local temp
    /// files when needed (the command line). With a limit, nothing spills: a
    /// query that needs more fails with a resources-exhausted error instead of
    /// filling the disk (the audit service, where anyone with a token can ask).
    pub memory_limit: Option<usize>,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            list_cache_ttl: Duration::from_secs(5),
            target_partitions: None,
            pushdown_filters: true,
            memory_limit: None,
        }
    }
}

/// `session_list`: one row per session, its start row joined with its end row.
/// `conditions` apply to the `sessions` rows of both sides; each begins with
/// the column it tests (`session_id = 'x'`), which is qualified for the start side.
fn session_list_sql(conditions: &[String]) -> String {
    let end: String = conditions.iter().map(|c| format!(" AND {c}")).collect();
    let start: String = conditions.iter().map(|c| format!(" AND st.{c}")).collect();
    format!(
        "SELECT st.session_id, st.gateway_id, st.issuer, st.subject, st.display_name, \
                st.auth_method, st.role, st.target, st.client_user, st.upstream_user, \
                st.database, st.client_addr, st.client_program, st.client_tls, \
                st.time AS started_at, en.ended_at, en.end_reason, en.commands, en.frames, \
                en.bytes_from_client, en.bytes_to_client, st.date, st.hour \
         FROM sessions st \
         LEFT JOIN (SELECT session_id, ended_at, end_reason, commands, frames, \
                           bytes_from_client, bytes_to_client \
                    FROM sessions WHERE event = 'end'{end}) en \
           ON en.session_id = st.session_id \
         WHERE st.event = 'start'{start}"
    )
}

/// The views registered with every catalog besides `session_list`: (name, SQL).
pub const VIEWS: &[(&str, &str)] = &[
    (
        "statement_log",
        "SELECT s.*, ss.client_user, ss.upstream_user, ss.client_addr, ss.client_program, \
                ss.claims, ss.time AS session_started_at \
         FROM statements s \
         LEFT JOIN (SELECT session_id, client_user, upstream_user, client_addr, \
                           client_program, claims, time \
                    FROM sessions WHERE event = 'start') ss \
           ON ss.session_id = s.session_id",
    ),
    (
        "table_access",
        "SELECT started_at, date, hour, gateway_id, session_id, command_index, issuer, \
                subject, display_name, role, target, database, statement_class, verdict, \
                error_code, error_message, rows_returned, rows_affected, sql, \
                'read' AS access, unnest(tables_read) AS table_name \
         FROM statements \
         UNION ALL \
         SELECT started_at, date, hour, gateway_id, session_id, command_index, issuer, \
                subject, display_name, role, target, database, statement_class, verdict, \
                error_code, error_message, rows_returned, rows_affected, sql, \
                'write' AS access, unnest(tables_written) AS table_name \
         FROM statements",
    ),
];

/// Memory for cached Parquet footers and page indexes (see [`Catalog::open`]).
const METADATA_CACHE_BYTES: usize = 256 << 20;

/// The base URL the archive's store is registered under in DataFusion.
const STORE_URL: &str = "chaperone-archive://store/";

/// A DataFusion context with the archive's tables and views.
pub struct Catalog {
    ctx: SessionContext,
    store: Store,
}

impl Catalog {
    /// Opens the archive at `location` (a directory or URL, see [`Store::open`]).
    pub async fn open_location(
        location: &str,
        store_options: &BTreeMap<String, String>,
        options: CatalogOptions,
    ) -> Result<Catalog, CatalogError> {
        let store = Store::open(location, store_options)?;
        Self::open(store, options).await
    }

    /// Registers the tables and views over an opened store.
    pub async fn open(store: Store, options: CatalogOptions) -> Result<Catalog, CatalogError> {
        let setup = |message: String| CatalogError::Setup {
            store: store.description.clone(),
            message,
        };
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_collect_statistics(false);
        if let Some(n) = options.target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = options.pushdown_filters;
        parquet.reorder_filters = true;
        parquet.enable_page_index = true;
        parquet.bloom_filter_on_read = true;
        parquet.pruning = true;
        // Parquet footers and page indexes are cached across queries. The
        // archive is many small hourly files (2,880 for two gateways over 30
        // days), and a session lookup touches every one of them: with
        // DataFusion's default 50 MiB the LRU churns and every query re-reads
        // every footer.
        let mut runtime = RuntimeEnvBuilder::new().with_cache_manager(
            CacheManagerConfig::default()
                .with_list_files_cache_limit(64 << 20)
                .with_list_files_cache_ttl(Some(options.list_cache_ttl))
                .with_metadata_cache_limit(METADATA_CACHE_BYTES),
        );
        if let Some(limit) = options.memory_limit {
            runtime = runtime
                .with_memory_limit(limit, 1.0)
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                );
        }
        let runtime = runtime.build_arc().map_err(|e| setup(e.to_string()))?;
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        // Claims and connect attributes are JSON text: without these, an auditor
        // cannot ask for a claim in SQL.
        datafusion_functions_json::register_all(&mut ctx).map_err(|e| setup(e.to_string()))?;
        let base = url::Url::parse(STORE_URL).map_err(|e| setup(e.to_string()))?;
        ctx.register_object_store(&base, store.inner.clone());

        let layout = Layout::new(&store.prefix);
        for table in Table::ALL {
            let url = format!("{STORE_URL}{}/", layout.table_root(table));
            let table_url = ListingTableUrl::parse(&url).map_err(|e| setup(e.to_string()))?;
            let listing = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![
                    ("date".to_string(), DataType::Utf8),
                    ("hour".to_string(), DataType::Utf8),
                ]);
            let config = ListingTableConfig::new(table_url)
                .with_listing_options(listing)
                .with_schema(table.schema());
            let provider = ListingTable::try_new(config).map_err(|e| setup(e.to_string()))?;
            ctx.register_table(table.name(), Arc::new(provider))
                .map_err(|e| setup(e.to_string()))?;
        }
        let session_list = session_list_sql(&[]);
        for (name, sql) in
            std::iter::once(("session_list", session_list.as_str())).chain(VIEWS.iter().copied())
        {
            ctx.sql(&format!("CREATE VIEW {name} AS {sql}"))
                .await
                .map_err(|e| setup(format!("view {name}: {e}")))?;
        }
        Ok(Catalog { ctx, store })
    }

    /// The DataFusion context: register more, or plan queries directly.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Plans a SQL query. Only queries: DDL and DML on the archive are refused.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame, CatalogError> {
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(self.ctx.sql_with_options(sql, options).await?)
    }

    /// Runs a SQL query and collects its result (at least one batch, possibly
    /// empty, so that the columns are known even without rows).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, CatalogError> {
        let df = self.sql(sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        if batches.is_empty() {
            return Ok(vec![RecordBatch::new_empty(schema)]);
        }
        Ok(batches)
    }
}

/// `date >= 'YYYY-MM-DD'` for a time in nanoseconds: the partition filter that
/// goes with `started_at >= ...` so that older partitions are not even listed.
pub fn date_filter(since_ns: i64) -> String {
    let p = chaperone_schemas::Partition::of_ns(since_ns);
    format!("date >= '{}'", p.date())
}

/// A SQL timestamp literal (UTC, microseconds) for a time in nanoseconds,
/// comparable with the archive's time columns.
pub fn timestamp_literal(ns: i64) -> String {
    format!(
        "arrow_cast({}, 'Timestamp(µs, \"UTC\")')",
        ns.div_euclid(1000)
    )
}

/// A SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What `chaperone sessions` asks for.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Sessions of this agent: its subject or display name.
    pub agent: Option<String>,
    /// Sessions that read or wrote this table (`db.table`, or a bare name that
    /// matches it in any database).
    pub table: Option<String>,
    /// Sessions started at or after this time (Unix nanoseconds).
    pub since_ns: Option<i64>,
    pub limit: usize,
}

/// The SQL of `chaperone sessions` and the session search (newest first).
///
/// Written against the `sessions` table rather than the `session_list` view:
/// the start rows are filtered (time, agent, table) and cut to `limit` first,
/// and the end rows are read only from the same days on (a session ends after
/// it starts), so a search over the last day does not join a month of ends.
pub fn sessions_sql(f: &SessionFilter) -> String {
    let mut start = vec!["event = 'start'".to_string()];
    let mut end_days = String::new();
    if let Some(since) = f.since_ns {
        start.push(date_filter(since));
        start.push(format!("time >= {}", timestamp_literal(since)));
        end_days = format!(" AND {}", date_filter(since));
    }
    if let Some(agent) = &f.agent {
        start.push(format!(
            "(subject = {0} OR display_name = {0})",
            quote(agent)
        ));
    }
    if let Some(table) = &f.table {
        let mut access = vec![table_condition(table)];
        if let Some(since) = f.since_ns {
            access.push(date_filter(since));
            access.push(format!("started_at >= {}", timestamp_literal(since)));
        }
        start.push(format!(
            "session_id IN (SELECT DISTINCT session_id FROM table_access WHERE {})",
            access.join(" AND ")
        ));
    }
    format!(
        "SELECT st.session_id, st.time AS started_at, en.ended_at, st.subject, st.display_name, \
                st.role, st.target, st.client_addr, st.client_program, en.commands, en.end_reason \
         FROM (SELECT session_id, time, subject, display_name, role, target, client_addr, \
                      client_program \
               FROM sessions WHERE {} ORDER BY time DESC, session_id LIMIT {}) st \
         LEFT JOIN (SELECT session_id, ended_at, end_reason, commands \
                    FROM sessions WHERE event = 'end'{end_days}) en \
           ON en.session_id = st.session_id \
         ORDER BY started_at DESC, st.session_id",
        start.join(" AND "),
        f.limit.max(1)
    )
}

/// The `session_list` row of one session (none if it is not in the archive).
///
/// A gateway's session id begins with its start time (`<ms, 12 hex
/// digits>-<random>`, time-ordered): the lookup then reads only the partitions
/// from an hour before that on, on both sides of the start/end join (the
/// view's filter would reach only the start side), instead of consulting every
/// file's bloom filter. Other ids (control-plane records) search everything.
pub fn session_sql(session_id: &str) -> String {
    let mut conditions = vec![format!("session_id = {}", quote(session_id))];
    if let Some(ns) = session_start_ns(session_id) {
        conditions.push(date_filter(ns - 3_600_000_000_000));
    }
    session_list_sql(&conditions)
}

/// The start time a gateway wrote into a session id, if it is one of theirs.
pub fn session_start_ns(session_id: &str) -> Option<i64> {
    let (ms, rest) = session_id.split_once('-')?;
    if ms.len() != 12 || rest.len() != 16 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ms = i64::from_str_radix(ms, 16).ok()?;
    ms.checked_mul(1_000_000)
}

/// A condition on `table_access.table_name` for a table as a user names it.
pub fn table_condition(table: &str) -> String {
    if table.contains('.') {
        format!("table_name = {}", quote(table))
    } else {
        format!(
            "(table_name = {0} OR table_name LIKE {1})",
            quote(table),
            quote(&format!(
                "%.{}",
                table.replace('%', "\\%").replace('_', "\\_")
            ))
        )
    }
}

/// Output formats of `chaperone query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Renders query results.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String, arrow::error::ArrowError> {
    match format {
        Format::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
    }
}
/// The session ids of `subjects`, from the archive's `sessions` table.
pub async fn subjects_sessions(
    store: &chaperone_store::Store,
    subjects: &BTreeSet<String>,
) -> Result<BTreeSet<String>, CatalogError> {
    if subjects.is_empty() {
        return Ok(BTreeSet::new());
    }
    let catalog = Catalog::open(store.clone(), CatalogOptions::default()).await?;
    let list = subjects
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let batches = catalog
        .query(&format!(
            "SELECT DISTINCT session_id FROM sessions WHERE subject IN ({list})"
        ))
        .await?;
    let mut out = BTreeSet::new();
    for b in batches {
        // Whatever string type the scan produced (Utf8, Utf8View, a dictionary).
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| CatalogError::Query(e.into()))?;
        out.extend(
            arrow::array::AsArray::as_string::<i32>(&ids)
                .iter()
                .flatten()
                .map(str::to_string),
        );
    }
    Ok(out)
}
