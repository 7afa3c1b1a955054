//! The guardrails benchmark: what judging a statement against a policy costs
//! per statement, on one core, exactly as a guarded session does it before
//! forwarding (`chaperone_proxy::guardrails`).
//!
//! Per statement, three costs:
//! - `evaluate`: the policy's verdict on an analysis already in hand;
//! - `guard`: what the session adds on the hot path of a repeated statement:
//!   the analysis from the shared cache (by exact text), the text hazard check,
//!   and the verdict;
//! - `cold`: the same for a text the cache has never seen (tokenize, normalise,
//!   parse, lexical facts, verdict).
//!
//! Samples are batches of calls timed together (the clock costs ~20 ns); the
//! distribution is over batches, divided by the batch size.

use std::hint::black_box;
use std::time::Instant;

use chaperone_proxy::guardrails::config::PolicyConfig;
use chaperone_proxy::guardrails::policy::{text_hazard, Context, Policy};
use chaperone_sql::{self as sql, AnalysisCache};
use clap::Args;

use crate::table::Table;

const TARGET_P50_NS: f64 = 5_000.0;

#[derive(Debug, Args)]
pub struct Options {
    /// Timed batches per statement and cost.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Calls per timed batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
}

/// A realistic policy for an application's agent: no DDL or admin, its own
/// databases, two tables off limits, schema changes / writes without WHERE /
/// anything touching payments held for approval, big writes estimated.
pub const REALISTIC_POLICY: &str = r#"
classes = ["read", "write", "transaction", "session"]
databases = ["shop", "shop_*", "sbtest*", "chp_*"]
deny_tables = ["*.salaries", "*.api_keys", "mysql.*"]
unparsed = "deny"
dynamic_sql = "deny"
[[approve]]
name = "schema-change"
statements = ["drop", "truncate", "alter", "create", "rename"]
[[approve]]
name = "without-where"
statements = ["without_where"]
[[approve]]
name = "payments"
tables = ["*.payments"]
[[approve]]
name = "big-writes"
max_rows = 10000
"#;

/// The sysbench OLTP statements and a few application ones.
const STATEMENTS: &[(&str, &str)] = &[
    ("point select", "SELECT c FROM sbtest1 WHERE id=4711"),
    (
        "range select",
        "SELECT c FROM sbtest1 WHERE id BETWEEN 4711 AND 4810",
    ),
    (
        "range order",
        "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 4711 AND 4810 ORDER BY c",
    ),
    ("update by id", "UPDATE sbtest1 SET k=k+1 WHERE id=5012"),
    ("delete by id", "DELETE FROM sbtest1 WHERE id=5012"),
    (
        "insert",
        "INSERT INTO sbtest1 (id, k, c, pad) VALUES (5012, 4993, '83868641912-28773972837-60736120486', '67847967377-48000963322')",
    ),
    ("begin", "BEGIN"),
    ("commit", "COMMIT"),
    (
        "join",
        "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status IN ('new', 'paid') ORDER BY o.id DESC LIMIT 50",
    ),
    (
        "cte + window",
        "WITH recent AS (SELECT * FROM orders WHERE created_at > '2024-01-01') SELECT id, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY total DESC) FROM recent",
    ),
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

/// (p50, p99) in ns per call of `f`.
fn measure(samples: usize, batch: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    for i in 0..batch * 16 {
        f(i);
    }
    let mut ns: Vec<f64> = (0..samples)
        .map(|s| {
            let start = Instant::now();
            for i in 0..batch {
                f(s * batch + i);
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    ns.sort_by(|a, b| a.total_cmp(b));
    (percentile(&ns, 50.0), percentile(&ns, 99.0))
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let config: PolicyConfig = toml::from_str(REALISTIC_POLICY)?;
    let policy = Policy::from_config("realistic", &config);
    let ctx = Context {
        database: Some("shop"),
        connection_id: 7,
        kill_target: None,
    };
    let cache = AnalysisCache::new(8192);
    println!(
        "Policy evaluation per statement, single thread (chaperone_proxy::guardrails), {} batches of {} calls\n",
        options.samples, options.batch
    );
    println!("Policy:\n```toml{REALISTIC_POLICY}```\n");
    let mut t = Table::new([
        "statement",
        "verdict",
        "evaluate p50 ns",
        "evaluate p99 ns",
        "guard p50 ns",
        "guard p99 ns",
        "cold p50 ns",
    ]);
    let mut worst_guard_p50: f64 = 0.0;
    for (name, sql) in STATEMENTS {
        let analysis = sql::analyze(sql);
        let decision = policy.evaluate(&analysis, &ctx);
        let verdict = match decision.estimates.is_empty() {
            true => decision.verdict.action.as_str().to_string(),
            false => format!("{} (EXPLAIN)", decision.verdict.action.as_str()),
        };
        let (e50, e99) = measure(options.samples, options.batch, |_| {
            black_box(policy.evaluate(black_box(&analysis), &ctx));
        });
        cache.analyze(sql);
        let (g50, g99) = measure(options.samples, options.batch, |_| {
            let a = cache.analyze(black_box(sql));
            black_box(text_hazard(sql.as_bytes(), false));
            black_box(policy.evaluate(&a, &ctx));
        });
        // Cold: a new text every call (another table name, so neither the text
        // nor its shape is cached; BEGIN and COMMIT differ by a comment only,
        // so they hit by shape).
        let cold_texts: Vec<String> = (0..(options.samples / 10).max(64) * options.batch)
            .map(|i| {
                sql.replace("sbtest1", &format!("sbtest{i}"))
                    .replace("orders", &format!("orders{i}"))
                    .replace("BEGIN", &format!("BEGIN /* {i} */"))
                    .replace("COMMIT", &format!("COMMIT /* {i} */"))
            })
            .collect();
        let cold_cache = AnalysisCache::new(64);
        let (c50, _) = measure(options.samples / 10, options.batch, |i| {
            let text = &cold_texts[i % cold_texts.len()];
            let a = cold_cache.analyze(black_box(text));
            black_box(policy.evaluate(&a, &ctx));
        });
        worst_guard_p50 = worst_guard_p50.max(g50);
        t.row([
            name.to_string(),
            verdict,
            format!("{e50:.0}"),
            format!("{e99:.0}"),
            format!("{g50:.0}"),
            format!("{g99:.0}"),
            format!("{c50:.0}"),
        ]);
    }
    println!("{}", t.render());
    println!(
        "Target: guard p50 < {:.0} µs per typical OLTP statement: worst {:.0} ns ({})",
        TARGET_P50_NS / 1000.0,
        worst_guard_p50,
        if worst_guard_p50 < TARGET_P50_NS {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
