//! The archive query benchmark: "which identities wrote to table X in the last
//! 30 days" over an archive of millions of statements, through the read side's
//! DataFusion catalog (`chaperone_catalog`), as `chaperone query` runs it.
//!
//! `generate` writes a synthetic archive with the archive format's own writers
//! (`chaperone_schemas::rows` builders, the recorder's Parquet writer settings,
//! the `chaperone_schemas::Layout` object paths): agents, tables, sessions and
//! statements with skewed (Zipf-like) popularity, a day/night traffic cycle, and
//! one segment per gateway and hour. `run` opens the catalog and times the
//! question cold (new catalog: listing and footers included) and warm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaperone_catalog::{self as catalog, Catalog, CatalogOptions, Format};
use chaperone_schemas::rows::{Capture, SessionRows, StatementRows};
use chaperone_schemas::{
    AuthMethod, CommandSummary, Identity, Layout, Partition, SessionEnd, SessionStart, Table,
};
use clap::{Args, Subcommand};
use parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::table::Table as TextTable;

#[derive(Debug, Args)]
pub struct Options {
    #[command(subcommand)]
    command: Step,
}

#[derive(Debug, Subcommand)]
enum Step {
    /// Write a synthetic archive (statements and sessions tables) to a directory.
    Generate(GenerateOptions),
    /// Time the question over an archive.
    Run(RunOptions),
}

#[derive(Debug, Args)]
struct GenerateOptions {
    /// The archive directory (its `v1/` is replaced).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000_000)]
    statements: u64,
    #[arg(long, default_value_t = 200)]
    agents: u32,
    /// Tables, spread over 10 databases (`db0.t0` ...).
    #[arg(long, default_value_t = 500)]
    tables: u32,
    /// Days of history, ending now.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Gateways (each writes its own segment per hour).
    #[arg(long, default_value_t = 2)]
    gateways: u32,
    /// Segments per gateway and hour (files per hour partition and gateway).
    #[arg(long, default_value_t = 1)]
    segments_per_hour: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also one session of this many statements in the newest hour (the audit
    /// service benchmark opens it); 0: none.
    #[arg(long, default_value_t = 0)]
    big_session: u64,
}

#[derive(Debug, Args)]
struct RunOptions {
    #[arg(long)]
    archive: String,
    /// The table asked about (default: the most written table of the generator).
    #[arg(long, default_value = "db0.t0")]
    table: String,
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Warm repetitions.
    #[arg(long, default_value_t = 5)]
    repeat: u32,
    /// Parallel partitions (default: cores).
    #[arg(long)]
    partitions: Option<usize>,
    /// Turn Parquet filter pushdown (late materialisation) off.
    #[arg(long)]
    no_pushdown: bool,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    match options.command {
        Step::Generate(o) => generate(&o),
        Step::Run(o) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(query(&o)),
    }
}

/// A Zipf-like pick in `0..n`: index i has weight 1 / (i + 1).
struct Skewed {
    cumulative: Vec<f64>,
}

impl Skewed {
    fn new(n: u32) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|i| {
                total += 1.0 / f64::from(i + 1);
                total
            })
            .collect();
        Skewed { cumulative }
    }

    fn pick(&self, rng: &mut StdRng) -> u32 {
        let x = rng.random::<f64>() * self.cumulative.last().copied().unwrap_or(1.0);
        self.cumulative.partition_point(|&c| c < x) as u32
    }
}

fn table_name(t: u32) -> String {
    format!("db{}.t{}", t % 10, t)
}

fn identity(agent: u32) -> Identity {
    let (issuer, role) = match agent % 4 {
        0 => (
            "https://token.actions.githubusercontent.com",
            "ci-migrations",
        ),
        1 => ("https://kubernetes.default.svc", "service"),
        2 => ("https://accounts.example.com", "llm-agent"),
        _ => ("chaperone:config", "batch"),
    };
    Identity {
        issuer: issuer.to_string(),
        subject: format!("agent-{agent:03}"),
        display_name: format!("Agent {agent:03}"),
        auth_method: if agent % 4 == 3 {
            AuthMethod::GatewayPassword
        } else {
            AuthMethod::OidcToken
        },
        role: Some(role.to_string()),
        claims: serde_json::json!({ "repository": format!("org/repo-{}", agent % 37) }),
        expires_at: None,
    }
}

/// One statement of a session: SQL, class, tables.
fn statement(rng: &mut StdRng, tables: &Skewed, database: &str) -> CommandSummary {
    let t1 = table_name(tables.pick(rng));
    let t2 = table_name(tables.pick(rng));
    let id = rng.random_range(1..10_000_000u32);
    let roll = rng.random_range(0..100u32);
    let (sql, class, read, written) = match roll {
        0..=54 => (
            format!("SELECT * FROM {t1} WHERE id = {id}"),
            "read",
            vec![t1],
            vec![],
        ),
        55..=69 => (
            format!("SELECT a.id, b.v FROM {t1} a JOIN {t2} b ON b.a_id = a.id WHERE a.k > {id}"),
            "read",
            vec![t1, t2],
            vec![],
        ),
        70..=82 => (
            format!("UPDATE {t1} SET v = v + 1 WHERE id = {id}"),
            "write",
            vec![],
            vec![t1],
        ),
        83..=89 => (
            format!("INSERT INTO {t1} (id, v) VALUES ({id}, 'x')"),
            "write",
            vec![],
            vec![t1],
        ),
        90..=92 => (
            format!("INSERT INTO {t1} SELECT * FROM {t2} WHERE id > {id}"),
            "write",
            vec![t2],
            vec![t1],
        ),
        93..=94 => (
            format!("DELETE FROM {t1} WHERE id = {id}"),
            "write",
            vec![],
            vec![t1],
        ),
        95..=98 => ("COMMIT".to_string(), "transaction", vec![], vec![]),
        _ => (
            format!("ALTER TABLE {t1} ADD COLUMN c{id} INT"),
            "ddl",
            vec![],
            vec![t1],
        ),
    };
    let normalized: String = sql
        .split(' ')
        .map(|w| {
            if w.starts_with(|c: char| c.is_ascii_digit() || c == '\'') {
                "?"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let rows = if class == "read" {
        rng.random_range(0..20)
    } else {
        0
    };
    CommandSummary {
        command: "COM_QUERY".into(),
        database: Some(database.to_string()),
        digest: Some(format!("{:032x}", fxhash(&normalized))),
        normalized_sql: Some(normalized),
        sql: Some(sql),
        statement_class: Some(class.to_string()),
        tables_read: read,
        tables_written: written,
        rows_returned: rows,
        rows_affected: if class == "write" { 1 } else { 0 },
        result_hash: (rows > 0).then(|| format!("{:064x}", u128::from(id))),
        ..Default::default()
    }
}

fn fxhash(s: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    u128::from(h) << 64 | u128::from(h.rotate_left(17))
}

fn write_file(
    path: &Path,
    table: Table,
    batch: &arrow::record_batch::RecordBatch,
) -> anyhow::Result<u64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path)?;
    let props = chaperone_archive::parquet_file::writer_properties(table, 3);
    let mut w = ArrowWriter::try_new(file, table.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(std::fs::metadata(path)?.len())
}

fn generate(o: &GenerateOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = o.out.join(chaperone_schemas::FORMAT_VERSION);
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let layout = Layout::new("");
    let mut rng = StdRng::seed_from_u64(o.seed);
    let agents = Skewed::new(o.agents);
    let tables = Skewed::new(o.tables);
    let hours = u64::from(o.days) * 24;
    let now_ns = chaperone_schemas::event::now_ns();
    let hour_ns: i64 = 3_600_000_000_000;
    let first_hour = now_ns.div_euclid(hour_ns) - hours as i64 + 1;
    // Day/night cycle: traffic per hour of day between 0.25 and 1.75 of the mean.
    let weight = |h: u64| 1.0 + 0.75 * ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
    let total_weight: f64 = (0..hours).map(weight).sum();
    let files_per_hour = u64::from(o.gateways * o.segments_per_hour);
    let mut written = 0u64;
    let mut bytes = 0u64;
    let mut files = 0u64;
    let mut session_no = 0u64;
    for h in 0..hours {
        let hour_start = (first_hour + h as i64) * hour_ns;
        let in_hour = ((o.statements as f64) * weight(h) / total_weight).round() as u64;
        let in_hour = if h + 1 == hours {
            o.statements.saturating_sub(written)
        } else {
            in_hour.min(o.statements - written)
        };
        let partition = Partition::of_ns(hour_start);
        for f in 0..files_per_hour {
            let gateway = format!("gw-{}", f % u64::from(o.gateways));
            let segment = h * u64::from(o.segments_per_hour) + f / u64::from(o.gateways);
            let mut left = in_hour / files_per_hour + u64::from(f < in_hour % files_per_hour);
            let slot_ns = hour_ns / files_per_hour as i64;
            let slot_start = hour_start + f as i64 * slot_ns;
            let mut st_rows = StatementRows::new(&gateway);
            let mut se_rows = SessionRows::new(&gateway);
            // The big session, if asked for, first in the newest hour's first file.
            let mut big = if h + 1 == hours && f == 0 {
                o.big_session
            } else {
                0
            };
            while left > 0 || big > 0 {
                let n = if big > 0 {
                    std::mem::take(&mut big)
                } else {
                    let n = rng.random_range(1..=200u64).min(left);
                    left -= n;
                    n
                };
                session_no += 1;
                let agent = agents.pick(&mut rng);
                let database = format!("db{}", agent % 10);
                let start_ns = slot_start + rng.random_range(0..slot_ns / 2);
                let step = (slot_ns / 2) / (n as i64 + 1);
                let session_id = format!("{:012x}-{session_no:016x}", start_ns / 1_000_000);
                let start = SessionStart {
                    session_id: session_id.clone(),
                    connection_id: session_no as u32,
                    upstream_connection_id: session_no as u32,
                    started_at_ns: start_ns,
                    gateway_id: gateway.clone(),
                    identity: identity(agent),
                    client_user: format!("target-{}", agent % 5),
                    target: format!("target-{}", agent % 5),
                    upstream_user: "app".into(),
                    database: Some(database.clone()),
                    client_addr: format!(
                        "10.0.{}.{}:5{:04}",
                        agent / 250,
                        agent % 250,
                        session_no % 10_000
                    ),
                    client_tls: true,
                    upstream_tls: false,
                    connect_attrs: BTreeMap::from([(
                        "program_name".to_string(),
                        "python".to_string(),
                    )]),
                    access_request_id: None,
                };
                se_rows.push_start(&start);
                for i in 0..n {
                    let mut s = statement(&mut rng, &tables, &database);
                    s.session_id = session_id.clone();
                    s.command_index = i;
                    s.started_at_ns = start_ns + (i as i64 + 1) * step;
                    s.duration_ns = rng.random_range(50_000..5_000_000);
                    st_rows.push(&s, Some(&start), Capture::default());
                }
                se_rows.push_end(
                    &SessionEnd {
                        session_id,
                        ended_at_ns: start_ns + (n as i64 + 1) * step,
                        reason: "client_quit".into(),
                        commands: n,
                        frames: n * 4,
                        bytes_from_client: n * 60,
                        bytes_to_client: n * 400,
                    },
                    Some(&start),
                );
                written += n;
            }
            if st_rows.is_empty() {
                continue;
            }
            for (table, batch) in [
                (Table::Statements, st_rows.finish()?),
                (Table::Sessions, se_rows.finish()?),
            ] {
                let path = o
                    .out
                    .join(layout.data_file(table, partition, &gateway, segment));
                bytes += write_file(&path, table, &batch)?;
                files += 1;
            }
        }
        if h % 24 == 23 {
            eprintln!(
                "day {}/{}: {written} statements, {} files, {:.0} MiB, {:.0} s",
                h / 24 + 1,
                o.days,
                files,
                bytes as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "wrote {written} statements in {session_no} sessions ({files} files, {:.1} MiB) to {} in {:.0} s",
        bytes as f64 / (1 << 20) as f64,
        o.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The question, as an auditor would type it into `chaperone query`.
fn question(table: &str, since_ns: i64) -> String {
    format!(
        "SELECT issuer, subject, display_name, count(*) AS statements, \
                min(started_at) AS first, max(started_at) AS last \
         FROM statements \
         WHERE array_has(tables_written, {}) AND started_at >= {} AND {} \
         GROUP BY issuer, subject, display_name ORDER BY statements DESC",
        catalog::quote(table),
        catalog::timestamp_literal(since_ns),
        catalog::date_filter(since_ns)
    )
}

/// The same through the `table_access` view.
fn question_via_view(table: &str, since_ns: i64) -> String {
    format!(
        "SELECT issuer, subject, display_name, count(*) AS statements \
         FROM table_access \
         WHERE table_name = {} AND access = 'write' AND started_at >= {} AND {} \
         GROUP BY issuer, subject, display_name ORDER BY statements DESC",
        catalog::quote(table),
        catalog::timestamp_literal(since_ns),
        catalog::date_filter(since_ns)
    )
}

async fn timed(catalog: &Catalog, sql: &str) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let batches = catalog.query(sql).await?;
    Ok((t.elapsed(), batches.iter().map(|b| b.num_rows()).sum()))
}

async fn query(o: &RunOptions) -> anyhow::Result<()> {
    let since = chaperone_schemas::event::now_ns() - i64::from(o.days) * 86_400_000_000_000;
    let options = CatalogOptions {
        target_partitions: o.partitions,
        pushdown_filters: !o.no_pushdown,
        ..Default::default()
    };
    let no_store_options = BTreeMap::new();
    let open = || Catalog::open_location(&o.archive, &no_store_options, options.clone());
    let total = {
        let c = open().await?;
        let b = c.query("SELECT count(*) FROM statements").await?;
        catalog::render(&b, Format::Csv)?
            .lines()
            .nth(1)
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "archive {}: {total} statements; question about {} over the last {} days\n",
        o.archive, o.table, o.days
    );
    let mut out = TextTable::new(["query", "cold ms", "warm ms (median)", "rows"]);
    for (name, sql) in [
        ("array_has(tables_written, X)", question(&o.table, since)),
        ("table_access view", question_via_view(&o.table, since)),
    ] {
        let t = Instant::now();
        let cold_catalog = Arc::new(open().await?);
        let (_, rows) = timed(&cold_catalog, &sql).await?;
        let cold = t.elapsed();
        let mut warm = Vec::new();
        for _ in 0..o.repeat.max(1) {
            warm.push(timed(&cold_catalog, &sql).await?.0);
        }
        warm.sort();
        out.row([
            name.to_string(),
            format!("{:.0}", cold.as_secs_f64() * 1e3),
            format!("{:.0}", warm[warm.len() / 2].as_secs_f64() * 1e3),
            rows.to_string(),
        ]);
    }
    print!("{}", out.render());
    let c = open().await?;
    let answer = c.query(&question(&o.table, since)).await?;
    let top: Vec<_> = answer
        .iter()
        .take(1)
        .map(|b| b.slice(0, b.num_rows().min(3)))
        .collect();
    println!(
        "\ntop 3 of the answer:\n{}",
        catalog::render(&top, Format::Table)?
    );
    Ok(())
}
