//! The masking benchmark: rows masked per second on one core, with
//! `chaperone_masking` exactly as the gateway calls it per packet
//! (column definitions, then rows: parse, detect, apply, re-encode).
//!
//! Cases: sysbench-shaped rows (id, k, c CHAR(120), pad CHAR(60)) with
//! detectors only and nothing to find (the common case: every value scanned,
//! nothing rewritten), with rules on `c` and `pad` (every row rewritten), in
//! the text and binary protocols; and customer rows full of PII (several
//! detector hits per row).
//!
//! With `--fp-corpus FILE` (one value per line, values known to hold no PII),
//! it also measures the content detectors' false-positive rate: the share of
//! values in which any detector finds something, per detector, with samples.

use std::hint::black_box;
use std::time::Instant;

use chaperone_masking::{Masking, MaskingConfig, ResponseMasker};
use chaperone_mysql::protocol::exchange::PacketKind;
use chaperone_mysql::protocol::lenenc::{put_lenenc_int, put_lenenc_str};
use clap::Args;

use crate::table::Table;

#[derive(Debug, Args)]
pub struct Options {
    /// Rows per case.
    #[arg(long, default_value_t = 500_000)]
    rows: u64,
    /// A corpus of values without PII, one per line: report the detectors'
    /// false-positive rate on it (all built-in detectors, as by default).
    #[arg(long, value_name = "FILE")]
    fp_corpus: Option<std::path::PathBuf>,
    /// How many flagged values of the corpus to print.
    #[arg(long, default_value_t = 40)]
    fp_samples: usize,
    /// Only the false-positive measurement (needs --fp-corpus).
    #[arg(long)]
    skip_throughput: bool,
}

/// The masking profile of the sysbench comparison (`gateway --via masking`,
/// appended to the gateway's config) and of the rule cases below: `c` hashed,
/// `pad` partially kept; content detectors (all of them, the default) on every
/// other string value. Password users have no role, so the `"*"` profile applies.
pub const SYSBENCH_MASKING: &str = r#"
[masking]
key = "benchmark-key-0123456789"

[[masking.roles."*".rules]]
name = "c"
table = "sbtest*"
column = "c"
strategy = "hash"

[[masking.roles."*".rules]]
name = "pad"
table = "sbtest*"
column = "pad"
strategy = "partial"
keep_prefix = 3
"#;

/// Detectors only: every value scanned, no rule.
const DETECTORS_ONLY: &str = r#"
[masking]
key = "benchmark-key-0123456789"
[masking.roles."*"]
"#;

/// The `[masking]` section of a gateway config fragment.
fn masking_section(config: &str) -> anyhow::Result<MaskingConfig> {
    let value: toml::Table = toml::from_str(config)?;
    let section = value
        .get("masking")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no [masking] section"))?;
    Ok(section.try_into()?)
}

fn coldef(table: &str, name: &str, t: u8, len: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["def", "bench", table, table, name, name] {
        put_lenenc_str(&mut p, s.as_bytes());
    }
    put_lenenc_int(&mut p, 0x0c);
    p.extend_from_slice(&45u16.to_le_bytes());
    p.extend_from_slice(&len.to_le_bytes());
    p.push(t);
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    p
}

struct Case {
    name: &'static str,
    config: &'static str,
    binary: bool,
    columns: Vec<Vec<u8>>,
    row: Vec<u8>,
}

fn sysbench_row(binary: bool) -> (Vec<Vec<u8>>, Vec<u8>) {
    let columns = vec![
        coldef("sbtest1", "id", 3, 11),
        coldef("sbtest1", "k", 3, 11),
        coldef("sbtest1", "c", 254, 480),
        coldef("sbtest1", "pad", 254, 240),
    ];
    let c = b"83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330";
    let pad = b"67847967377-48000963322-62604785301-91415491898-96926520291";
    let mut row = Vec::new();
    if binary {
        row.extend_from_slice(&[0, 0]);
        row.extend_from_slice(&4711u32.to_le_bytes());
        row.extend_from_slice(&4993u32.to_le_bytes());
    } else {
        put_lenenc_str(&mut row, b"4711");
        put_lenenc_str(&mut row, b"4993");
    }
    put_lenenc_str(&mut row, c);
    put_lenenc_str(&mut row, pad);
    (columns, row)
}

fn pii_row() -> (Vec<Vec<u8>>, Vec<u8>) {
    let columns = vec![
        coldef("customers", "id", 3, 11),
        coldef("customers", "contact", 253, 1020),
        coldef("customers", "note", 252, 65535),
    ];
    let mut row = Vec::new();
    put_lenenc_str(&mut row, b"17");
    put_lenenc_str(
        &mut row,
        b"Ana Lopez <ana.lopez@example.com>, +44 20 7946 0958",
    );
    put_lenenc_str(
        &mut row,
        b"Paid with 4111 1111 1111 1111 from 192.168.10.7; refund to GB82 WEST 1234 5698 7654 32",
    );
    (columns, row)
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (name, config, binary) in [
        ("sysbench row, detectors only, text", DETECTORS_ONLY, false),
        ("sysbench row, detectors only, binary", DETECTORS_ONLY, true),
        (
            "sysbench row, rules on c and pad, text",
            SYSBENCH_MASKING,
            false,
        ),
        (
            "sysbench row, rules on c and pad, binary",
            SYSBENCH_MASKING,
            true,
        ),
    ] {
        let (columns, row) = sysbench_row(binary);
        out.push(Case {
            name,
            config,
            binary,
            columns,
            row,
        });
    }
    let (columns, row) = pii_row();
    out.push(Case {
        name: "customer row, 5 detector hits, text",
        config: DETECTORS_ONLY,
        binary: false,
        columns,
        row,
    });
    out
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.skip_throughput {
        throughput(&opts)?;
    }
    match &opts.fp_corpus {
        Some(path) => false_positives(path, opts.fp_samples),
        None if opts.skip_throughput => anyhow::bail!("--skip-throughput needs --fp-corpus FILE"),
        None => Ok(()),
    }
}

/// The detectors' false-positive rate on a corpus known to hold no PII: every
/// value flagged is a false positive.
fn false_positives(path: &std::path::Path, samples: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    let corpus = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let masking = Masking::compile(&masking_section(DETECTORS_ONLY)?)?;
    let policy = masking.policy(None).expect("a profile for every role");
    let detectors = &policy.detectors;
    let mut per_detector = vec![0u64; detectors.list.len()];
    let (mut values, mut flagged) = (0u64, 0u64);
    let mut shown = Vec::new();
    for value in corpus.split(|b| *b == b'\n').filter(|v| !v.is_empty()) {
        values += 1;
        let hits = detectors.scan(value);
        if hits.is_empty() {
            continue;
        }
        flagged += 1;
        let mut names: Vec<&str> = hits.iter().map(|h| detectors.name(h.detector)).collect();
        names.dedup();
        for h in &hits {
            per_detector[h.detector] += 1;
        }
        if shown.len() < samples {
            let found: Vec<String> = hits
                .iter()
                .map(|h| String::from_utf8_lossy(&value[h.range.clone()]).into_owned())
                .collect();
            shown.push(format!("{}: {:?}", names.join(","), found));
        }
    }
    anyhow::ensure!(values > 0, "{} holds no values", path.display());
    println!(
        "False positives on {} ({values} values): {flagged} flagged = {:.4} %\n",
        path.display(),
        100.0 * flagged as f64 / values as f64
    );
    let mut t = Table::new(["detector", "hits", "per million values"]);
    for (i, n) in per_detector.iter().enumerate() {
        t.row([
            detectors.name(i).to_string(),
            n.to_string(),
            format!("{:.1}", 1e6 * *n as f64 / values as f64),
        ]);
    }
    println!("{}", t.render());
    if !shown.is_empty() {
        println!(
            "Flagged values (first {}): detector: spans found",
            shown.len()
        );
        for s in shown {
            println!("    {s}");
        }
    }
    Ok(())
}

fn throughput(opts: &Options) -> anyhow::Result<()> {
    let mut table = Table::new(["case", "rows/s (one core)", "ns/row", "bytes/row in → out"]);
    for case in cases() {
        let config = masking_section(case.config)?;
        let masking = Masking::compile(&config)?;
        let policy = masking.policy(None).expect("a profile for every role");
        let mut masker = ResponseMasker::new(policy, case.binary, Vec::new(), false);
        masker.on_packet(PacketKind::ColumnCount, &[case.columns.len() as u8])?;
        for c in &case.columns {
            masker.on_packet(PacketKind::ColumnDef, c)?;
        }
        let mut out_len = case.row.len();
        // Warm-up.
        for _ in 0..1000 {
            black_box(masker.on_packet(PacketKind::Row, black_box(&case.row))?);
        }
        let start = Instant::now();
        for _ in 0..opts.rows {
            if let Some(out) = masker.on_packet(PacketKind::Row, black_box(&case.row))? {
                out_len = out.len();
                black_box(out);
            }
        }
        let elapsed = start.elapsed();
        let per_row = elapsed.as_nanos() as f64 / opts.rows as f64;
        table.row([
            case.name.to_string(),
            format!("{:.0}", 1e9 / per_row),
            format!("{per_row:.0}"),
            format!("{} → {}", case.row.len(), out_len),
        ]);
    }
    println!("{}", table.render());
    Ok(())
}
