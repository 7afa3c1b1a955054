//! The gateway benchmark: what Chaperone costs on the hot path and per idle
//! connection.
//!
//! sysbench runs each workload and thread count three ways, back to back:
//! directly against the database, through a zero-logic relay (the cost of any
//! TCP proxy: one more hop and two more copies), and through Chaperone with a
//! no-op tap. Chaperone is compared with the relay (what the gateway's own logic
//! costs) and the relay with the database (what the extra hop costs). With
//! `--via ...,recording`, a second gateway records everything to the archive
//! (spool, fsync, sealing, upload to a local directory) in the same rounds:
//! recording/relay and recording/chaperone are same-run ratios. Then the
//! resident memory of a fresh gateway process is read before and after opening
//! many idle authenticated connections.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};

use crate::mysql::{Client, Connection};
use crate::server::{GatewayUser, Kind, ServerProcess, Upstream};
use crate::sysbench::{self, Report, Run, Tables};
use crate::table::Table;

/// The targets.
const TARGET_QPS_RATIO: f64 = 0.97;
const TARGET_ADDED_P50_US: f64 = 10.0;
const TARGET_KIB_PER_CONNECTION: f64 = 64.0;

#[derive(Debug, Args)]
pub struct Options {
    /// The database server, host:port (MariaDB or MySQL).
    #[arg(long, default_value = "127.0.0.1:3306")]
    mariadb: String,
    /// A database user allowed to create the benchmark database and to SET GLOBAL
    /// max_connections. The gateway logs in as this user too.
    #[arg(long, default_value = "root")]
    mariadb_user: String,
    #[arg(
        long,
        env = "CHP_BENCH_MARIADB_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    mariadb_password: String,
    /// The benchmark's own database; dropped and filled again unless --reuse-data.
    #[arg(long, default_value = "chp_bench")]
    database: String,
    /// sysbench --tables.
    #[arg(long, default_value_t = 1)]
    tables: u32,
    /// sysbench --table-size.
    #[arg(long, default_value_t = 100_000)]
    table_size: u64,
    /// Keep the tables of an earlier run instead of preparing them again.
    #[arg(long)]
    reuse_data: bool,
    /// Length of each measured sysbench run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// How many times the whole set of runs is repeated (interleaved, so drift
    /// affects every path alike); the rounds' results are pooled.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Unmeasured sysbench run through each path before the first round.
    #[arg(long, default_value_t = 5)]
    warmup_seconds: u64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "oltp_point_select,oltp_read_only"
    )]
    workloads: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    threads: Vec<u32>,
    #[arg(long, value_delimiter = ',', default_value = "direct,relay,chaperone")]
    via: Vec<Via>,
    /// sysbench --db-ps-mode: `auto` uses prepared statements (COM_STMT_EXECUTE),
    /// `disable` text queries (COM_QUERY).
    #[arg(long, default_value = "auto")]
    ps_mode: String,
    /// Idle authenticated connections for the memory measurement (0: skip it).
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Only the memory measurement.
    #[arg(long)]
    skip_sysbench: bool,
    /// Another build of this binary (e.g. a copy made before a change): its
    /// gateway runs as path `baseline`, interleaved with the others, so that two
    /// versions are compared under the same conditions.
    #[arg(long)]
    baseline_exe: Option<std::path::PathBuf>,
}

/// How sysbench reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Via {
    Direct,
    Relay,
    Chaperone,
    /// Chaperone with a realistic guardrail policy (`chaperone-benchmarks policy`
    /// prints it): every statement is judged before it is forwarded.
    Policy,
    /// Chaperone with a masking profile (`c` and `pad` masked by rules, content
    /// detectors on every other string value): every result row is rewritten.
    Masking,
    /// Chaperone recording everything (the archive recorder as its tap: spool,
    /// group-commit fsync, sealing to zstd Parquet, upload to a local directory).
    Recording,
    /// The gateway of `--baseline-exe`.
    Baseline,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Relay => "relay",
            Via::Chaperone => "chaperone",
            Via::Policy => "policy",
            Via::Masking => "masking",
            Via::Recording => "recording",
            Via::Baseline => "baseline",
        }
    }
}

/// Results of every (workload, threads, via), pooled over rounds.
type Results = BTreeMap<(String, u32, Via), Cell>;

#[derive(Default)]
struct Cell {
    pooled: Report,
    /// QPS of each round, to show the spread.
    rounds_qps: Vec<f64>,
    /// CPU time of the relaying process (relay or gateway) during the runs:
    /// its cost per query, which scheduling noise on a shared machine does not
    /// distort the way it distorts throughput.
    server_cpu_ns: u64,
}

/// Memory of one system under test with idle connections.
struct Memory {
    kind: Kind,
    connections: usize,
    before_kib: u64,
    logged_in_kib: u64,
    after_query_kib: u64,
    closed_kib: u64,
}

impl Memory {
    fn per_connection(&self, rss: u64) -> f64 {
        rss.saturating_sub(self.before_kib) as f64 / self.connections as f64
    }
}

const GATEWAY_USER: &str = "bench";
const GATEWAY_PASSWORD: &str = "chp-bench-password";

pub fn run(mut opts: Options) -> anyhow::Result<()> {
    match &opts.baseline_exe {
        Some(_) if !opts.via.contains(&Via::Baseline) => opts.via.push(Via::Baseline),
        None if opts.via.contains(&Via::Baseline) => {
            anyhow::bail!("--via baseline needs --baseline-exe <another build of this binary>")
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let upstream = Upstream {
        address: opts.mariadb.clone(),
        user: opts.mariadb_user.clone(),
        password: opts.mariadb_password.clone(),
    };
    let gateway_user = GatewayUser {
        name: GATEWAY_USER.into(),
        password: GATEWAY_PASSWORD.into(),
    };
    let admin_client = Client::new(&opts.mariadb, &opts.mariadb_user, &opts.mariadb_password)?;
    let mut admin = rt
        .block_on(admin_client.connect())
        .context("connecting to the database (is MariaDB running? scripts/setup-test-env.sh)")?;
    let machine = describe_machine(&admin);

    let mut results = Results::new();
    let mut commands = Vec::new();
    if !opts.skip_sysbench {
        run_sysbench(
            &opts,
            &rt,
            &mut admin,
            &upstream,
            &gateway_user,
            &mut results,
            &mut commands,
        )?;
    }

    let mut memory = Vec::new();
    if opts.idle_connections > 0 {
        // Each idle gateway connection holds one database connection, and the
        // relay's too: make room, and put the old limit back afterwards.
        let needed = 2 * opts.idle_connections + 100;
        eprintln!(
            "raising the database's max_connections to at least {needed} for the memory measurement (SET GLOBAL; restored at the end)"
        );
        rt.block_on(async {
            admin
                .execute("SET @chp_bench_max_connections = @@GLOBAL.max_connections")
                .await?;
            admin
                .execute(&format!(
                    "SET GLOBAL max_connections = GREATEST(@@GLOBAL.max_connections, {needed})"
                ))
                .await
        })?;
        let measured = (|| -> anyhow::Result<()> {
            let mut kinds = vec![Kind::Gateway, Kind::Relay];
            if opts.via.contains(&Via::Recording) {
                kinds.insert(1, Kind::GatewayRecording);
            }
            for kind in kinds {
                memory.push(measure_memory(
                    &rt,
                    kind,
                    &upstream,
                    &gateway_user,
                    opts.idle_connections,
                )?);
            }
            Ok(())
        })();
        rt.block_on(admin.execute("SET GLOBAL max_connections = @chp_bench_max_connections"))?;
        measured?;
    }

    print_report(&opts, &machine, &commands, &results, &memory);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_sysbench(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    admin: &mut Connection,
    upstream: &Upstream,
    gateway_user: &GatewayUser,
    results: &mut Results,
    commands: &mut Vec<String>,
) -> anyhow::Result<()> {
    let tables = Tables {
        count: opts.tables,
        size: opts.table_size,
    };
    let (host, port) = split_address(&opts.mariadb)?;
    let direct = sysbench::Connection {
        host,
        port,
        user: opts.mariadb_user.clone(),
        password: opts.mariadb_password.clone(),
        database: opts.database.clone(),
    };
    if !opts.reuse_data {
        eprintln!(
            "preparing {} table(s) of {} rows in database {}",
            tables.count, tables.size, opts.database
        );
        let db = quote_ident(&opts.database);
        rt.block_on(async {
            admin
                .execute(&format!("DROP DATABASE IF EXISTS {db}"))
                .await?;
            admin.execute(&format!("CREATE DATABASE {db}")).await
        })?;
        sysbench::prepare(&direct, tables)?;
    }

    let relay = ServerProcess::start(Kind::Relay, upstream, gateway_user)?;
    let gateway = ServerProcess::start(Kind::Gateway, upstream, gateway_user)?;
    let policy_gateway = if opts.via.contains(&Via::Policy) {
        Some(ServerProcess::start(
            Kind::GatewayPolicy,
            upstream,
            gateway_user,
        )?)
    } else {
        None
    };
    let masking_gateway = if opts.via.contains(&Via::Masking) {
        Some(ServerProcess::start(
            Kind::GatewayMasking,
            upstream,
            gateway_user,
        )?)
    } else {
        None
    };
    let recording_gateway = if opts.via.contains(&Via::Recording) {
        Some(ServerProcess::start(
            Kind::GatewayRecording,
            upstream,
            gateway_user,
        )?)
    } else {
        None
    };
    let baseline = match &opts.baseline_exe {
        Some(exe) => Some(
            ServerProcess::start_from(exe, Kind::Gateway, upstream, gateway_user)
                .with_context(|| format!("starting the baseline gateway {}", exe.display()))?,
        ),
        None => None,
    };
    eprintln!(
        "relay on {} (pid {}), chaperone on {} (pid {}, log {})",
        relay.addr,
        relay.pid(),
        gateway.addr,
        gateway.pid(),
        gateway.log.display()
    );
    let through_gateway = |g: &ServerProcess| sysbench::Connection {
        host: g.addr.ip().to_string(),
        port: g.addr.port(),
        user: gateway_user.name.clone(),
        password: gateway_user.password.clone(),
        database: opts.database.clone(),
    };
    let connection = |via: Via| match via {
        Via::Direct => direct.clone(),
        Via::Relay => sysbench::Connection {
            host: relay.addr.ip().to_string(),
            port: relay.addr.port(),
            ..direct.clone()
        },
        Via::Chaperone => through_gateway(&gateway),
        Via::Policy => through_gateway(policy_gateway.as_ref().expect("started for --via policy")),
        Via::Masking => {
            through_gateway(masking_gateway.as_ref().expect("started for --via masking"))
        }
        Via::Recording => through_gateway(
            recording_gateway
                .as_ref()
                .expect("started for --via recording"),
        ),
        Via::Baseline => through_gateway(baseline.as_ref().expect("started with --baseline-exe")),
    };
    // The process that relays each path's traffic, for its CPU time.
    let server_of = |via: Via| match via {
        Via::Direct => None,
        Via::Relay => Some(&relay),
        Via::Chaperone => Some(&gateway),
        Via::Policy => policy_gateway.as_ref(),
        Via::Masking => masking_gateway.as_ref(),
        Via::Recording => recording_gateway.as_ref(),
        Via::Baseline => baseline.as_ref(),
    };

    if opts.warmup_seconds > 0 {
        let warmup = Run {
            workload: "oltp_read_only".into(),
            threads: opts.threads.iter().copied().max().unwrap_or(1),
            seconds: opts.warmup_seconds,
            ps_mode: opts.ps_mode.clone(),
        };
        for via in &opts.via {
            eprintln!("warming up {} ({} s)", via.name(), opts.warmup_seconds);
            warmup.execute(&connection(*via), tables)?;
        }
    }

    for round in 1..=opts.rounds {
        for workload in &opts.workloads {
            for &threads in &opts.threads {
                for &via in &opts.via {
                    let run = Run {
                        workload: workload.clone(),
                        threads,
                        seconds: opts.seconds,
                        ps_mode: opts.ps_mode.clone(),
                    };
                    let conn = connection(via);
                    if round == 1 {
                        commands.push(format!("{:<9} {}", via.name(), run.describe(&conn, tables)));
                    }
                    let server = server_of(via);
                    let cpu_before = server.map(ServerProcess::cpu_ns).transpose()?;
                    let report = run.execute(&conn, tables).with_context(|| {
                        format!("{workload} with {threads} threads via {}", via.name())
                    })?;
                    eprintln!(
                        "round {round}/{}: {workload:<17} threads={threads:<2} {:<9} {:>9.0} QPS  p50 {:>5} µs  p99 {:>5} µs  errors {}",
                        opts.rounds,
                        via.name(),
                        report.qps(),
                        report.histogram.percentile(50.0),
                        report.histogram.percentile(99.0),
                        report.errors,
                    );
                    let cell = results.entry((workload.clone(), threads, via)).or_default();
                    cell.rounds_qps.push(report.qps());
                    cell.pooled.merge(&report);
                    if let (Some(s), Some(before)) = (server, cpu_before) {
                        cell.server_cpu_ns += s.cpu_ns()?.saturating_sub(before);
                    }
                }
            }
        }
    }
    relay.stop()?;
    gateway.stop()?;
    if let Some(p) = policy_gateway {
        p.stop()?;
    }
    if let Some(m) = masking_gateway {
        m.stop()?;
    }
    if let Some(g) = recording_gateway {
        g.stop()?;
    }
    if let Some(b) = baseline {
        b.stop()?;
    }
    Ok(())
}

/// Reads the RSS of a fresh gateway (or relay) process, then opens `n`
/// connections that log in, reads it again, runs one query on each (an idle
/// pooled connection has been used), reads it again, closes them, reads again.
fn measure_memory(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    upstream: &Upstream,
    gateway_user: &GatewayUser,
    n: usize,
) -> anyhow::Result<Memory> {
    let server = ServerProcess::start(kind, upstream, gateway_user)?;
    let address = server.addr.to_string();
    let client = match kind {
        Kind::Gateway | Kind::GatewayPolicy | Kind::GatewayMasking | Kind::GatewayRecording => {
            Client::new(&address, &gateway_user.name, &gateway_user.password)?
        }
        Kind::Relay => Client::new(&address, &upstream.user, &upstream.password)?,
    };
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    settle();
    let before_kib = server.rss_kib()?;
    eprintln!(
        "memory: {} (pid {}) RSS {before_kib} KiB; opening {n} connections",
        kind.name(),
        server.pid()
    );
    let mut conns: Vec<Connection> = rt
        .block_on(
            futures::stream::iter(0..n)
                .map(|_| client.connect())
                .buffer_unordered(16)
                .try_collect(),
        )
        .with_context(|| format!("opening {n} connections through the {}", kind.name()))?;
    settle();
    let logged_in_kib = server.rss_kib()?;
    rt.block_on(async {
        for c in &mut conns {
            c.execute("SELECT 1").await?;
        }
        anyhow::Ok(())
    })?;
    settle();
    let after_query_kib = server.rss_kib()?;
    drop(conns);
    settle();
    let closed_kib = server.rss_kib()?;
    server.stop()?;
    let m = Memory {
        kind,
        connections: n,
        before_kib,
        logged_in_kib,
        after_query_kib,
        closed_kib,
    };
    eprintln!(
        "memory: {}: {:.1} KiB per connection after login, {:.1} after one query",
        kind.name(),
        m.per_connection(logged_in_kib),
        m.per_connection(after_query_kib)
    );
    Ok(m)
}

fn print_report(
    opts: &Options,
    machine: &str,
    commands: &[String],
    results: &Results,
    memory: &[Memory],
) {
    println!("## Machine\n\n{machine}\n");
    if !results.is_empty() {
        println!(
            "## sysbench\n\n{} s per run, {} round(s) pooled, --db-ps-mode={}, {} table(s) x {} rows. Latency per sysbench event (transaction), µs; mean = threads / TPS.\n",
            opts.seconds, opts.rounds, opts.ps_mode, opts.tables, opts.table_size
        );
        let mut t = Table::new([
            "workload",
            "threads",
            "via",
            "QPS",
            "TPS",
            "p50 µs",
            "p99 µs",
            "mean µs",
            "relaying CPU µs/query",
        ]);
        for ((workload, threads, via), cell) in results {
            let r = &cell.pooled;
            let mut qps = format!("{:.0}", r.qps());
            if cell.rounds_qps.len() > 1 {
                let lo = cell.rounds_qps.iter().copied().fold(f64::MAX, f64::min);
                let hi = cell.rounds_qps.iter().copied().fold(0.0, f64::max);
                qps = format!("{qps} ({lo:.0}-{hi:.0})");
            }
            t.row([
                workload.clone(),
                threads.to_string(),
                via.name().to_string(),
                qps,
                format!("{:.0}", r.tps()),
                r.histogram.percentile(50.0).to_string(),
                r.histogram.percentile(99.0).to_string(),
                format!("{:.1}", r.mean_latency_us(*threads)),
                match via {
                    Via::Direct => "-".to_string(),
                    _ => format!("{:.2}", cell.server_cpu_ns as f64 / 1e3 / r.queries as f64),
                },
            ]);
        }
        println!("{}", t.render());

        let mut t = Table::new([
            "workload",
            "threads",
            "chaperone/relay QPS",
            "relay/direct QPS",
            "chaperone/direct QPS",
            "added p50 over relay µs",
            "added mean over relay µs",
            "added mean per query µs",
        ]);
        let mut checks = Vec::new();
        for workload in &opts.workloads {
            for &threads in &opts.threads {
                let get = |via| results.get(&(workload.clone(), threads, via));
                let (Some(d), Some(r), Some(c)) =
                    (get(Via::Direct), get(Via::Relay), get(Via::Chaperone))
                else {
                    continue;
                };
                let (d, r, c) = (&d.pooled, &r.pooled, &c.pooled);
                let ratio = c.qps() / r.qps();
                let added_p50 =
                    c.histogram.percentile(50.0) as f64 - r.histogram.percentile(50.0) as f64;
                let added_mean = c.mean_latency_us(threads) - r.mean_latency_us(threads);
                let queries_per_txn = c.queries as f64 / c.transactions as f64;
                t.row([
                    workload.clone(),
                    threads.to_string(),
                    format!("{ratio:.3}"),
                    format!("{:.3}", r.qps() / d.qps()),
                    format!("{:.3}", c.qps() / d.qps()),
                    format!("{added_p50:+.0}"),
                    format!("{added_mean:+.1}"),
                    format!("{:+.2}", added_mean / queries_per_txn),
                ]);
                if threads == 8 {
                    checks.push(check(
                        format!("{workload}, 8 threads: chaperone/relay QPS {ratio:.3}"),
                        ratio >= TARGET_QPS_RATIO,
                        format!(">= {TARGET_QPS_RATIO}"),
                    ));
                }
                if threads == 1 {
                    let per_query = added_p50 / queries_per_txn;
                    let what = if queries_per_txn > 1.0 {
                        format!(
                            "{workload}, 1 thread: added p50 over relay {added_p50:+.0} µs per transaction of {queries_per_txn:.0} queries = {per_query:+.1} µs per query"
                        )
                    } else {
                        format!("{workload}, 1 thread: added p50 over relay {added_p50:+.0} µs")
                    };
                    checks.push(check(
                        what,
                        per_query <= TARGET_ADDED_P50_US,
                        format!("<= {TARGET_ADDED_P50_US} µs per query"),
                    ));
                }
            }
        }
        println!("{}", t.render());
        print_logic_comparisons(opts, results);
        print_recording_comparison(opts, results);
        if opts.baseline_exe.is_some() {
            print_baseline_comparison(opts, results);
        }
        println!("sysbench commands (first round):\n");
        for c in commands {
            println!("    {c}");
        }
        println!();
        if !checks.is_empty() {
            println!("Targets:\n");
            for c in &checks {
                println!("- {c}");
            }
            println!();
        }
    }
    if !memory.is_empty() {
        println!(
            "## Memory: RSS with {} idle connections\n\nFresh process each; KiB.\n",
            memory[0].connections
        );
        let mut t = Table::new([
            "process",
            "before",
            "logged in",
            "after one query each",
            "closed",
            "KiB/conn logged in",
            "KiB/conn after query",
        ]);
        for m in memory {
            t.row([
                m.kind.name().to_string(),
                m.before_kib.to_string(),
                m.logged_in_kib.to_string(),
                m.after_query_kib.to_string(),
                m.closed_kib.to_string(),
                format!("{:.1}", m.per_connection(m.logged_in_kib)),
                format!("{:.1}", m.per_connection(m.after_query_kib)),
            ]);
        }
        println!("{}", t.render());
        if let Some(g) = memory.iter().find(|m| m.kind == Kind::Gateway) {
            let worst = g
                .per_connection(g.logged_in_kib)
                .max(g.per_connection(g.after_query_kib));
            println!(
                "Target:\n\n- gateway: {worst:.1} KiB per idle connection {}\n",
                verdict(worst <= TARGET_KIB_PER_CONNECTION, "<= 64 KiB")
            );
        }
    }
}

/// This build's gateway against the `--baseline-exe` one.
fn print_baseline_comparison(opts: &Options, results: &Results) {
    let mut t = Table::new([
        "workload",
        "threads",
        "chaperone/baseline QPS",
        "p50 change µs",
        "mean change µs",
    ]);
    for workload in &opts.workloads {
        for &threads in &opts.threads {
            let get = |via| results.get(&(workload.clone(), threads, via));
            let (Some(c), Some(b)) = (get(Via::Chaperone), get(Via::Baseline)) else {
                continue;
            };
            let (c, b) = (&c.pooled, &b.pooled);
            t.row([
                workload.clone(),
                threads.to_string(),
                format!("{:.3}", c.qps() / b.qps()),
                format!(
                    "{:+}",
                    c.histogram.percentile(50.0) as i64 - b.histogram.percentile(50.0) as i64
                ),
                format!(
                    "{:+.1}",
                    c.mean_latency_us(threads) - b.mean_latency_us(threads)
                ),
            ]);
        }
    }
    println!("This build against --baseline-exe:\n\n{}", t.render());
}

/// A gateway with extra logic (a guardrail policy, a masking profile) against
/// the zero-logic relay and against the plain gateway, per workload and threads.
fn print_logic_comparisons(opts: &Options, results: &Results) {
    for (via, what, target) in [
        (
            Via::Policy,
            "a realistic guardrail policy",
            "policy/relay >= 0.90",
        ),
        (
            Via::Masking,
            "a masking profile (sbtest c hashed, pad partial, detectors on)",
            "masking/relay >= 0.85",
        ),
    ] {
        let name = via.name();
        let mut t = Table::new([
            "workload".to_string(),
            "threads".to_string(),
            format!("{name}/relay QPS"),
            format!("{name}/chaperone QPS"),
            "added p50 over chaperone µs".to_string(),
            "relaying CPU µs/query, chaperone → this".to_string(),
        ]);
        let mut any = false;
        for workload in &opts.workloads {
            for &threads in &opts.threads {
                let get = |via| results.get(&(workload.clone(), threads, via));
                let (Some(r), Some(c), Some(p)) = (get(Via::Relay), get(Via::Chaperone), get(via))
                else {
                    continue;
                };
                any = true;
                let cpu =
                    |cell: &Cell| cell.server_cpu_ns as f64 / 1e3 / cell.pooled.queries as f64;
                t.row([
                    workload.clone(),
                    threads.to_string(),
                    format!("{:.3}", p.pooled.qps() / r.pooled.qps()),
                    format!("{:.3}", p.pooled.qps() / c.pooled.qps()),
                    format!(
                        "{:+}",
                        p.pooled.histogram.percentile(50.0) as i64
                            - c.pooled.histogram.percentile(50.0) as i64
                    ),
                    format!("{:.2} → {:.2}", cpu(c), cpu(p)),
                ]);
            }
        }
        if any {
            println!(
                "With {what} (target: {target} at 8 threads):\n\n{}",
                t.render()
            );
        }
    }
}

fn print_recording_comparison(opts: &Options, results: &Results) {
    let mut t = Table::new([
        "workload",
        "threads",
        "recording/relay QPS",
        "recording/chaperone QPS",
        "added p50 over chaperone µs",
        "recording CPU µs/query",
        "chaperone CPU µs/query",
    ]);
    let mut any = false;
    for workload in &opts.workloads {
        for &threads in &opts.threads {
            let get = |via| results.get(&(workload.clone(), threads, via));
            let (Some(r), Some(c), Some(g)) =
                (get(Via::Relay), get(Via::Chaperone), get(Via::Recording))
            else {
                continue;
            };
            any = true;
            let cpu = |cell: &Cell| cell.server_cpu_ns as f64 / 1e3 / cell.pooled.queries as f64;
            t.row([
                workload.clone(),
                threads.to_string(),
                format!("{:.3}", g.pooled.qps() / r.pooled.qps()),
                format!("{:.3}", g.pooled.qps() / c.pooled.qps()),
                format!(
                    "{:+}",
                    g.pooled.histogram.percentile(50.0) as i64
                        - c.pooled.histogram.percentile(50.0) as i64
                ),
                format!("{:.2}", cpu(g)),
                format!("{:.2}", cpu(c)),
            ]);
        }
    }
    if any {
        println!(
            "With recording on (target: recording/relay >= 0.90 at 8 threads):\n\n{}",
            t.render()
        );
    }
}

fn check(what: String, ok: bool, target: String) -> String {
    format!("{what} {}", verdict(ok, &target))
}

fn verdict(ok: bool, target: &str) -> String {
    format!("({} target {target})", if ok { "meets" } else { "MISSES" })
}

fn describe_machine(admin: &Connection) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let sysbench = std::process::Command::new("sysbench")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "sysbench not found".into());
    format!(
        "{cores} cores ({cpu}), {mem_gib:.1} GiB RAM, Linux {}; database {}; {sysbench}. \
         sysbench, the database and the gateway or relay all share these cores.",
        kernel.trim(),
        admin.server_version
    )
}

fn split_address(address: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("--mariadb {address}: expected host:port"))?;
    Ok((
        host.to_string(),
        port.parse()
            .with_context(|| format!("--mariadb {address}: bad port"))?,
    ))
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
