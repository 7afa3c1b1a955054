//! The archive's write path: recorder throughput from the tap to sealed Parquet,
//! and archive size per recorded sysbench statement against the raw wire bytes.
//!
//! 1. **Throughput**: one producer thread drives the real `Recorder` through the
//!    tap interface with sysbench-shaped frames (a `SELECT c FROM sbtest1 WHERE
//!    id=?` request; column count, column definition, a 120-character row, EOF),
//!    then seals and uploads everything to a local directory store. Reported per
//!    wall second and per CPU second of the whole process (every recorder thread
//!    counted): frames per CPU second is frames per second per core.
//! 2. **Size**: sysbench `oltp_read_write` through an in-process gateway whose
//!    tap is the recorder; then the archive's bytes (Parquet + manifests) per
//!    recorded statement, and the compression ratio against the wire bytes of
//!    the recorded frames (payload + 4-byte packet header). The same run through
//!    the gateway without recording gives the throughput ratio.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chaperone_recorder::{ArchiveConfig, Recorder};
use chaperone_schemas::event::{now_ns, CommandSummary, Direction, Frame, SessionStart, TapEvent};
use chaperone_schemas::tap::Tap;

use crate::mysql::Client;
use crate::sysbench::{self, Tables};
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Frames for the throughput measurement.
    #[arg(long, default_value_t = 3_000_000)]
    frames: u64,
    /// zstd levels to measure throughput with.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    zstd_levels: Vec<i32>,
    /// Seconds of sysbench per run for the size measurement.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 8)]
    threads: u32,
    #[arg(long, default_value_t = 4)]
    tables: u32,
    #[arg(long, default_value_t = 10_000)]
    table_size: u64,
    /// Skip the sysbench part.
    #[arg(long)]
    skip_sysbench: bool,
    #[arg(long, default_value = "127.0.0.1:3306")]
    mariadb: String,
    #[arg(long, default_value = "root")]
    mariadb_user: String,
    #[arg(long, default_value = "")]
    mariadb_password: String,
    /// Where to put spools and archives (removed afterwards).
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let mut throughput = Table::new([
        "zstd",
        "frames",
        "wall s",
        "frames/s (wall)",
        "CPU s",
        "frames/s per core",
        "append ns/frame",
        "raw MiB",
        "archive MiB",
    ]);
    for &level in &opts.zstd_levels {
        let r = measure_throughput(&opts, level)?;
        throughput.row([
            level.to_string(),
            r.frames.to_string(),
            format!("{:.2}", r.wall),
            format!("{:.0}", r.frames as f64 / r.wall),
            format!("{:.2}", r.cpu),
            format!("{:.0}", r.frames as f64 / r.cpu),
            format!("{:.0}", r.append_wall * 1e9 / r.frames as f64),
            format!("{:.1}", r.raw_bytes as f64 / (1 << 20) as f64),
            format!("{:.1}", r.archive_bytes as f64 / (1 << 20) as f64),
        ]);
    }
    println!("## Recorder throughput, tap to sealed Parquet (one producer thread)\n");
    println!("{}", throughput.render());

    if !opts.skip_sysbench {
        let s = measure_sysbench(&opts)?;
        println!("## Archive size per recorded sysbench statement\n");
        println!("`{}`\n", s.command);
        let mut t = Table::new(["", "value"]);
        t.row(["statements recorded".to_string(), s.statements.to_string()]);
        t.row(["frames recorded".to_string(), s.frames.to_string()]);
        t.row([
            "wire bytes of the frames (MiB)".to_string(),
            format!("{:.1}", s.wire_bytes as f64 / (1 << 20) as f64),
        ]);
        t.row([
            "archive bytes: Parquet + manifests (MiB)".to_string(),
            format!("{:.2}", s.archive_bytes as f64 / (1 << 20) as f64),
        ]);
        t.row([
            "archive bytes per statement".to_string(),
            format!("{:.1}", s.archive_bytes as f64 / s.statements as f64),
        ]);
        t.row([
            "wire bytes per statement".to_string(),
            format!("{:.1}", s.wire_bytes as f64 / s.statements as f64),
        ]);
        t.row([
            "compression ratio (wire / archive)".to_string(),
            format!("{:.1}x", s.wire_bytes as f64 / s.archive_bytes as f64),
        ]);
        t.row([
            "sysbench qps, gateway without recording".to_string(),
            format!("{:.0}", s.qps_plain),
        ]);
        t.row([
            "sysbench qps, gateway recording".to_string(),
            format!("{:.0}", s.qps_recording),
        ]);
        t.row([
            "ratio recording / not recording".to_string(),
            format!("{:.3}", s.qps_recording / s.qps_plain),
        ]);
        println!("{}", t.render());
    }
    Ok(())
}

struct Throughput {
    frames: u64,
    wall: f64,
    cpu: f64,
    append_wall: f64,
    raw_bytes: u64,
    archive_bytes: u64,
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based) of the whole line, i.e.
    // 11 and 12 after the state field here; clock ticks are 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn scratch(opts: &Options, tag: &str) -> anyhow::Result<PathBuf> {
    let dir = opts
        .work_dir
        .join(format!("chp_bench_archive_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_bytes(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A sysbench-like `c` value: 11 groups of digits.
fn sysbench_c(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(120);
    for g in 0..11 {
        if g > 0 {
            out.push('-');
        }
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push((b'0' + (x % 10) as u8) as char);
        }
    }
    out
}

fn measure_throughput(opts: &Options, level: i32) -> anyhow::Result<Throughput> {
    let dir = scratch(opts, &format!("tp{level}"))?;
    let mut config = ArchiveConfig::new(
        dir.join("archive").to_str().context("utf-8 path")?,
        &dir.join("spool"),
    );
    config.zstd_level = level;
    config.segment_max_age_ms = 3_600_000;
    let recorder = Recorder::open(config, "bench")?;
    let sessions = 8;
    let ids: Vec<Arc<str>> = (0..sessions)
        .map(|i| Arc::from(format!("bench-session-{i}").as_str()))
        .collect();
    for id in &ids {
        recorder.record(TapEvent::SessionStart(Box::new(SessionStart {
            session_id: id.to_string(),
            connection_id: 1,
            upstream_connection_id: 1,
            started_at_ns: now_ns(),
            gateway_id: "bench".into(),
            identity: chaperone_schemas::Identity::config_user("sbtest"),
            client_user: "sbtest".into(),
            target: "db".into(),
            upstream_user: "root".into(),
            database: Some("sbtest".into()),
            client_addr: "127.0.0.1:1".into(),
            client_tls: false,
            upstream_tls: false,
            connect_attrs: Default::default(),
            access_request_id: None,
        })));
    }
    let column = Bytes::from_static(
        b"\x03def\x06sbtest\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x21\x00\xe0\x01\x00\x00\xfe\x00\x00\x00\x00\x00",
    );
    let eof = Bytes::from_static(b"\xfe\x00\x00\x02\x00");
    let count = Bytes::from_static(b"\x01");
    let mut seqs = vec![0u64; sessions];
    let mut commands = vec![0u64; sessions];
    let mut raw = 0u64;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut frames = 0u64;
    let mut n = 0u64;
    while frames < opts.frames {
        let s = (n % sessions as u64) as usize;
        n += 1;
        let id = &ids[s];
        let started = now_ns();
        let request = Bytes::from(format!(
            "\x03SELECT c FROM sbtest1 WHERE id={}",
            n % 100_000
        ));
        let c = sysbench_c(n);
        let mut row = Vec::with_capacity(c.len() + 1);
        row.push(c.len() as u8);
        row.extend_from_slice(c.as_bytes());
        let mut frame = |direction, payload: Bytes| {
            raw += payload.len() as u64 + 4;
            let f = Frame {
                session_id: id.clone(),
                seq: seqs[s],
                command_index: commands[s],
                time_ns: now_ns(),
                direction,
                payload,
            };
            seqs[s] += 1;
            frames += 1;
            f
        };
        let req = frame(Direction::ClientToServer, request);
        recorder
            .record_request(TapEvent::Frame(req))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for payload in [count.clone(), column.clone(), Bytes::from(row), eof.clone()] {
            let f = frame(Direction::ServerToClient, payload);
            recorder.record(TapEvent::Frame(f));
        }
        recorder.record(TapEvent::Command(Box::new(CommandSummary {
            session_id: id.to_string(),
            command_index: commands[s],
            started_at_ns: started,
            duration_ns: 50_000,
            command: "COM_QUERY".into(),
            sql: Some(format!("SELECT c FROM sbtest1 WHERE id={}", n % 100_000)),
            rows_returned: 1,
            result_columns: vec!["c".into()],
            ..Default::default()
        })));
        commands[s] += 1;
    }
    let append_wall = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        recorder.flush(Duration::from_secs(600)),
        "the archive did not drain"
    );
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    recorder.shutdown(Duration::from_secs(30));
    let archive_bytes = dir_bytes(&dir.join("archive"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Throughput {
        frames,
        wall,
        cpu,
        append_wall,
        raw_bytes: raw,
        archive_bytes,
    })
}

struct SizeResult {
    command: String,
    statements: u64,
    frames: u64,
    wire_bytes: u64,
    archive_bytes: u64,
    qps_plain: f64,
    qps_recording: f64,
}

fn measure_sysbench(opts: &Options) -> anyhow::Result<SizeResult> {
    let database = "chp_bench_archive";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let admin = Client::new(&opts.mariadb, &opts.mariadb_user, &opts.mariadb_password)?;
    rt.block_on(async {
        let mut c = admin.connect().await?;
        c.execute(&format!("DROP DATABASE IF EXISTS {database}"))
            .await?;
        c.execute(&format!("CREATE DATABASE {database}")).await
    })
    .context("creating the benchmark database (is MariaDB running?)")?;
    let (host, port) = opts
        .mariadb
        .rsplit_once(':')
        .context("--mariadb is host:port")?;
    let tables = Tables {
        count: opts.tables,
        size: opts.table_size,
    };
    sysbench::prepare(
        &sysbench::Connection {
            host: host.into(),
            port: port.parse()?,
            user: opts.mariadb_user.clone(),
            password: opts.mariadb_password.clone(),
            database: database.into(),
        },
        tables,
    )?;
    let run = sysbench::Run {
        workload: "oltp_read_write".into(),
        threads: opts.threads,
        seconds: opts.seconds,
        ps_mode: "auto".into(),
    };
    let mut command = String::new();
    let mut through = |recorder: Option<Arc<Recorder>>| -> anyhow::Result<f64> {
        let config = chaperone_proxy::Config::parse(&format!(
            r#"
[gateway]
id = "bench"
listen = "127.0.0.1:0"
[targets.db]
address = "{address}"
user = "{user}"
password = "{password}"
[users.sbtest]
target = "db"
password = "sbtest-password"
plugin = "mysql_native_password"
"#,
            address = opts.mariadb,
            user = opts.mariadb_user,
            password = opts.mariadb_password,
        ))?;
        let authenticator = Arc::new(chaperone_proxy::auth::ConfigUsers::from_config(&config)?);
        let tap: Arc<dyn Tap> = match &recorder {
            Some(r) => r.clone(),
            None => Arc::new(chaperone_schemas::tap::NoopTap),
        };
        let gateway = rt.block_on(chaperone_proxy::Gateway::bind(config, authenticator, tap))?;
        let addr = gateway.local_addr();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = rt.spawn(gateway.run(shutdown.clone()));
        let conn = sysbench::Connection {
            host: addr.ip().to_string(),
            port: addr.port(),
            user: "sbtest".into(),
            password: "sbtest-password".into(),
            database: database.into(),
        };
        command = run.describe(&conn, tables);
        let report = run.execute(&conn, tables);
        shutdown.cancel();
        let _ = rt.block_on(handle);
        Ok(report?.qps())
    };
    let qps_plain = through(None)?;
    let dir = scratch(opts, "size")?;
    let archive = dir.join("archive");
    let config = ArchiveConfig::new(archive.to_str().context("utf-8")?, &dir.join("spool"));
    let recorder = Arc::new(Recorder::open(config, "bench")?);
    let qps_recording = through(Some(recorder.clone()))?;
    recorder.shutdown(Duration::from_secs(120));
    let (statements, frames, wire_bytes) = read_counts(&archive)?;
    let archive_bytes = dir_bytes(&archive);
    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(async {
        let mut c = admin.connect().await?;
        c.execute(&format!("DROP DATABASE IF EXISTS {database}"))
            .await
    })?;
    Ok(SizeResult {
        command,
        statements,
        frames,
        wire_bytes,
        archive_bytes,
        qps_plain,
        qps_recording,
    })
}

/// Statements, frames and the frames' wire bytes, from the Parquet files.
fn read_counts(archive: &Path) -> anyhow::Result<(u64, u64, u64)> {
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let mut statements = 0;
    let mut frames = 0;
    let mut wire = 0;
    for file in parquet_files(&archive.join("v1")) {
        let table = file
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .find(|c| c == "statements" || c == "frames");
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file)?)?;
        let rows = builder.metadata().file_metadata().num_rows() as u64;
        match table.as_deref() {
            Some("statements") => statements += rows,
            Some("frames") => {
                frames += rows;
                let schema = builder.parquet_schema();
                let index = builder
                    .schema()
                    .index_of(chaperone_schemas::tables::frames::PAYLOAD_LENGTH)?;
                let mask = ProjectionMask::roots(schema, [index]);
                for batch in builder.with_projection(mask).build()? {
                    let batch = batch?;
                    let lengths = batch
                        .column(0)
                        .as_primitive::<arrow::datatypes::Int64Type>();
                    wire += lengths.values().iter().map(|v| *v as u64 + 4).sum::<u64>();
                }
            }
            _ => {}
        }
    }
    Ok((statements, frames, wire))
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}
