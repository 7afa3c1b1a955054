//! The statement-facts benchmark: what the gateway's SQL analysis (digest,
//! class, tables) and result hash cost per statement, on one core.
//!
//! Measured in this process, single-threaded, with `chaperone_sql` and
//! `chaperone_mysql::protocol::result_hash` exactly as the gateway calls them:
//! - cold analysis (tokenize + normalise + parse + walk) of typical statements;
//! - a cache hit (the OLTP case: the same prepared or ORM-generated text again);
//! - a stream of text-protocol statements whose literals all differ (every one a
//!   cache miss), as a client that interpolates values produces;
//! - the result hash, per row and in MB/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chaperone_mysql::protocol::result_hash::ResultHash;
use chaperone_sql::{self as sql, AnalysisCache};
use clap::Args;

use crate::table::Table;

#[derive(Debug, Args)]
pub struct Options {
    /// Minimum measuring time per case.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

/// Named statements, from the sysbench OLTP set to the tricky ones.
const STATEMENTS: &[(&str, &str)] = &[
    ("point select", "SELECT c FROM sbtest1 WHERE id=4711"),
    (
        "range select",
        "SELECT DISTINCT c FROM sbtest3 WHERE id BETWEEN 100 AND 199 ORDER BY c",
    ),
    ("update", "UPDATE sbtest2 SET k=k+1 WHERE id=5012"),
    (
        "insert",
        "INSERT INTO sbtest1 (id, k, c, pad) VALUES (5012, 4993, '83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330', '67847967377-48000963322-62604785301-91415491898-96926520291')",
    ),
    (
        "join + subquery",
        "SELECT o.id, c.name, (SELECT count(*) FROM items i WHERE i.order_id = o.id) AS n FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status IN ('new', 'paid', 'sent') AND o.created_at > '2024-01-01' ORDER BY o.id DESC LIMIT 50",
    ),
    (
        "CTE + multi-table delete",
        "WITH old AS (SELECT id FROM orders WHERE created_at < '2020-01-01') DELETE o, i FROM orders o JOIN items i ON i.order_id = o.id WHERE o.id IN (SELECT id FROM old)",
    ),
    (
        "multi-statement",
        "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; UPDATE accounts SET balance = balance + 10 WHERE id = 2; INSERT INTO ledger (a, b, amount) VALUES (1, 2, 10); COMMIT",
    ),
];

fn per_op(mut f: impl FnMut(u64), min: Duration) -> Duration {
    // Warm up, then grow the batch until it runs long enough.
    f(0);
    let mut n = 16u64;
    loop {
        let start = Instant::now();
        for i in 0..n {
            f(i);
        }
        let elapsed = start.elapsed();
        if elapsed >= min {
            return elapsed / n as u32;
        }
        n = n.saturating_mul(if elapsed < min / 8 { 8 } else { 2 });
    }
}

fn ns(d: Duration) -> String {
    format!("{:.0}", d.as_nanos() as f64)
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let min = Duration::from_secs_f64(options.seconds);
    println!(
        "Statement facts, single thread (chaperone_sql), {} s per case\n",
        options.seconds
    );
    let mut table = Table::new([
        "statement",
        "bytes",
        "normalise ns",
        "cold analysis ns",
        "cache hit ns",
        "class",
    ]);
    for (name, sql) in STATEMENTS {
        let normalise = per_op(
            |_| {
                black_box(sql::digest::normalize(black_box(sql)).ok());
            },
            min,
        );
        let cold = per_op(
            |_| {
                black_box(sql::analyze(black_box(sql)));
            },
            min,
        );
        let cache = AnalysisCache::new(1024);
        cache.analyze(sql);
        let hit = per_op(
            |_| {
                black_box(cache.analyze(black_box(sql)));
            },
            min,
        );
        table.row([
            name.to_string(),
            sql.len().to_string(),
            ns(normalise),
            ns(cold),
            ns(hit),
            sql::analyze(sql).class.to_string(),
        ]);
    }
    print!("{}", table.render());

    // Text protocol with interpolated values: every statement is new to the cache.
    let cache = AnalysisCache::new(sql::cache::DEFAULT_CAPACITY);
    let texts: Vec<String> = (0..200_000u64)
        .map(|i| match i % 4 {
            0 => format!("SELECT c FROM sbtest{} WHERE id={}", i % 8 + 1, i * 7919 % 100_000),
            1 => format!("UPDATE sbtest{} SET k=k+1 WHERE id={}", i % 8 + 1, i * 31 % 100_000),
            2 => format!(
                "SELECT c FROM sbtest{} WHERE id BETWEEN {} AND {}",
                i % 8 + 1,
                i,
                i + 99
            ),
            _ => format!(
                "INSERT INTO sbtest{} (id, k, c, pad) VALUES ({i}, {}, '{i:011}-{i:011}', '{i:011}')",
                i % 8 + 1,
                i * 17 % 100_000
            ),
        })
        .collect();
    let miss = per_op(
        |i| {
            black_box(cache.analyze(&texts[i as usize % texts.len()]));
        },
        min,
    );
    let stats = cache.stats();
    println!(
        "\nsysbench-like text statements with distinct literals (not in the cache by text): {} ns per statement ({} by text, {} by shape, {} parsed)",
        ns(miss),
        stats.hits,
        stats.shape_hits,
        stats.misses
    );
    let cold = per_op(
        |i| {
            black_box(sql::analyze(&texts[i as usize % texts.len()]));
        },
        min,
    );
    println!(
        "the same statements without the cache: {} ns per statement\n",
        ns(cold)
    );

    // Result hash: 100-byte rows (sysbench's `c` column is 120 bytes).
    let row = vec![0x5au8; 100];
    let per_row = per_op(
        |_| {
            let mut h = ResultHash::new();
            for _ in 0..1000 {
                h.update(black_box(&row));
            }
            black_box(h.finish());
        },
        min,
    ) / 1000;
    let big = vec![0x5au8; 1 << 20];
    let per_mib = per_op(
        |_| {
            let mut h = ResultHash::new();
            h.update(black_box(&big));
            black_box(h.finish());
        },
        min,
    );
    println!(
        "result hash (SHA-256): {} ns per 100-byte row; {:.0} MB/s on 1 MiB payloads",
        ns(per_row),
        (1 << 20) as f64 / per_mib.as_secs_f64() / 1e6
    );
    Ok(())
}
