//! The masking benchmark: rows masked per second on one core, with
//! `chaperone_proxy::masking` exactly as the gateway calls it per packet
//! (column definitions, then rows: parse, detect, apply, re-encode).
//!
//! Cases: sysbench-shaped rows (id, k, c CHAR(120), pad CHAR(60)) with
//! detectors only and nothing to find (the common case: every value scanned,
//! nothing rewritten), with rules on `c` and `pad` (every row rewritten), in
//! the text and binary protocols; and customer rows full of PII (several
//! detector hits per row).

use std::hint::black_box;
use std::time::Instant;

use chaperone_proxy::masking::{Masking, MaskingConfig, ResponseMasker};
use chaperone_proxy::protocol::exchange::PacketKind;
use chaperone_proxy::protocol::lenenc::{put_lenenc_int, put_lenenc_str};
use clap::Args;

use crate::table::Table;

#[derive(Debug, Args)]
pub struct Options {
    /// Rows per case.
    #[arg(long, default_value_t = 500_000)]
    rows: u64,
}

const DETECTORS_ONLY: &str = r#"{"key": "benchmark-key-0123456789", "roles": {"*": {}}}"#;

const RULES: &str = r#"{"key": "benchmark-key-0123456789", "roles": {"*": {"rules": [
    {"name": "c", "table": "sbtest*", "column": "c", "strategy": "hash"},
    {"name": "pad", "table": "sbtest*", "column": "pad", "strategy": "partial", "keep_prefix": 3}
]}}}"#;

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
        ("sysbench row, rules on c and pad, text", RULES, false),
        ("sysbench row, rules on c and pad, binary", RULES, true),
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
    let mut table = Table::new(["case", "rows/s (one core)", "ns/row", "bytes/row in → out"]);
    for case in cases() {
        let config: MaskingConfig = serde_json::from_str(case.config)?;
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
