//! Running sysbench and reading its report.
//!
//! Latency percentiles come from sysbench's own latency histogram
//! (`--histogram=on`), which it prints at the end of a run: every event of the
//! run is in it, so p50 and p99 come from the same run (sysbench's
//! `--percentile` gives only one per run), runs can be merged by adding counts,
//! and values are printed with 1 µs resolution (the "Nth percentile" line only
//! has 10 µs). sysbench's buckets are logarithmic, about 1.8 % wide; a percentile
//! is the value of the bucket where the cumulative count reaches it, as
//! sysbench computes `--percentile` itself.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};

/// Where sysbench connects and with what data.
#[derive(Debug, Clone)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

/// The table set (`--tables`, `--table-size`).
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    pub count: u32,
    pub size: u64,
}

fn base_command(workload: &str, conn: &Connection, tables: Tables) -> Command {
    let mut cmd = Command::new("sysbench");
    cmd.arg(workload)
        .arg("--db-driver=mysql")
        .arg(format!("--mysql-host={}", conn.host))
        .arg(format!("--mysql-port={}", conn.port))
        .arg(format!("--mysql-user={}", conn.user))
        .arg(format!("--mysql-password={}", conn.password))
        .arg(format!("--mysql-db={}", conn.database))
        .arg(format!("--tables={}", tables.count))
        .arg(format!("--table-size={}", tables.size));
    cmd
}

fn output_of(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .context("running sysbench (is it installed? scripts/setup-test-env.sh installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "sysbench failed ({}):\n{}\n{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// `sysbench <workload> prepare`: creates and fills the tables.
pub fn prepare(conn: &Connection, tables: Tables) -> anyhow::Result<()> {
    let mut cmd = base_command("oltp_read_only", conn, tables);
    cmd.arg("prepare");
    output_of(cmd).map(drop)
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    pub workload: String,
    pub threads: u32,
    pub seconds: u64,
    /// `--db-ps-mode`: `auto` (prepared statements) or `disable`.
    pub ps_mode: String,
}

impl Run {
    /// The sysbench command line for this run, with the password hidden.
    pub fn describe(&self, conn: &Connection, tables: Tables) -> String {
        let cmd = self.command(conn, tables);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| {
                let a = a.to_string_lossy();
                if a.starts_with("--mysql-password=") {
                    "--mysql-password=***".to_string()
                } else {
                    a.into_owned()
                }
            })
            .collect();
        format!("sysbench {}", args.join(" "))
    }

    fn command(&self, conn: &Connection, tables: Tables) -> Command {
        let mut cmd = base_command(&self.workload, conn, tables);
        cmd.arg(format!("--threads={}", self.threads))
            .arg(format!("--time={}", self.seconds))
            .arg(format!("--db-ps-mode={}", self.ps_mode))
            .arg("--report-interval=0")
            .arg("--histogram=on")
            .arg("--percentile=99")
            .arg("run");
        cmd
    }

    pub fn execute(&self, conn: &Connection, tables: Tables) -> anyhow::Result<Report> {
        let out = output_of(self.command(conn, tables))?;
        Report::parse(&out).with_context(|| format!("reading sysbench's report:\n{out}"))
    }
}

/// What a run reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub transactions: u64,
    pub queries: u64,
    pub errors: u64,
    pub seconds: f64,
    pub histogram: Histogram,
}

impl Report {
    pub fn parse(out: &str) -> anyhow::Result<Report> {
        let mut report = Report::default();
        let mut in_histogram = false;
        for line in out.lines() {
            let t = line.trim();
            if t.starts_with("Latency histogram") {
                in_histogram = true;
                continue;
            }
            if in_histogram {
                if t.starts_with("value") {
                    continue;
                }
                // "       0.018 |*****                                    3332"
                match t.split_once('|') {
                    Some((value, rest)) => {
                        let ms: f64 = value.trim().parse().context("histogram value")?;
                        let count: u64 = rest
                            .trim_start_matches(['*', ' '])
                            .trim()
                            .parse()
                            .context("histogram count")?;
                        report.histogram.add((ms * 1000.0).round() as u64, count);
                    }
                    None => in_histogram = false,
                }
                continue;
            }
            if let Some(v) = t.strip_prefix("transactions:") {
                report.transactions = first_number(v)?;
            } else if let Some(v) = t.strip_prefix("queries:") {
                report.queries = first_number(v)?;
            } else if let Some(v) = t.strip_prefix("ignored errors:") {
                report.errors = first_number(v)?;
            } else if let Some(v) = t.strip_prefix("total time:") {
                report.seconds = v.trim().trim_end_matches('s').parse()?;
            }
        }
        if report.transactions == 0 || report.seconds == 0.0 || report.histogram.total() == 0 {
            bail!("no transactions, total time or latency histogram in sysbench's output");
        }
        Ok(report)
    }

    /// Adds another run of the same configuration.
    pub fn merge(&mut self, other: &Report) {
        self.transactions += other.transactions;
        self.queries += other.queries;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.histogram.merge(&other.histogram);
    }

    pub fn qps(&self) -> f64 {
        self.queries as f64 / self.seconds
    }

    pub fn tps(&self) -> f64 {
        self.transactions as f64 / self.seconds
    }

    /// Mean latency of a transaction in µs, from the throughput: with `threads`
    /// clients always busy, latency = threads / rate (Little's law). Precise to
    /// well under a microsecond, unlike the histogram's buckets.
    pub fn mean_latency_us(&self, threads: u32) -> f64 {
        threads as f64 * 1e6 / self.tps()
    }
}

fn first_number(s: &str) -> anyhow::Result<u64> {
    s.split_whitespace()
        .next()
        .context("missing number")?
        .parse()
        .context("not a number")
}

/// sysbench's latency histogram: count of transactions per bucket value (µs).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: BTreeMap<u64, u64>,
}

impl Histogram {
    pub fn add(&mut self, micros: u64, count: u64) {
        *self.buckets.entry(micros).or_default() += count;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (v, c) in &other.buckets {
            self.add(*v, *c);
        }
    }

    pub fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The value (µs) at percentile `pct` (0 < pct <= 100).
    pub fn percentile(&self, pct: f64) -> u64 {
        let rank = ((pct / 100.0) * self.total() as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (v, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return *v;
            }
        }
        self.buckets.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
Threads started!

Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.018 |*****                                    30
       0.018 |**************************************** 20
       0.021 |**                                       45
       9.222 |                                         5
 
SQL statistics:
    queries performed:
        read:                            100
        total:                           100
    transactions:                        100  (50.00 per sec.)
    queries:                             1600  (800.00 per sec.)
    ignored errors:                      0      (0.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          2.0015s
";

    #[test]
    fn reads_counts_time_and_histogram() {
        let r = Report::parse(OUTPUT).unwrap();
        assert_eq!(r.transactions, 100);
        assert_eq!(r.queries, 1600);
        assert_eq!(r.seconds, 2.0015);
        assert_eq!(r.histogram.total(), 100);
        assert_eq!(r.histogram.percentile(50.0), 18);
        assert_eq!(r.histogram.percentile(51.0), 21);
        assert_eq!(r.histogram.percentile(95.0), 21);
        assert_eq!(r.histogram.percentile(99.0), 9222);
    }

    #[test]
    fn merged_runs_add_up() {
        let mut a = Report::parse(OUTPUT).unwrap();
        let b = Report::parse(OUTPUT).unwrap();
        a.merge(&b);
        assert_eq!(a.transactions, 200);
        assert_eq!(a.histogram.total(), 200);
        assert_eq!(a.histogram.percentile(50.0), 18);
        assert!((a.mean_latency_us(1) - 20015.0).abs() < 1.0);
    }

    #[test]
    fn output_without_a_histogram_is_an_error() {
        assert!(Report::parse("transactions: 5 (1 per sec.)\ntotal time: 1s\n").is_err());
    }
}
