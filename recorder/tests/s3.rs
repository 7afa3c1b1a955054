//! The S3 path against a real S3-compatible server (moto, in server mode on
//! loopback): multipart uploads, an outage during load, the spool limit in both
//! failure modes.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chaperone_archive::verify::{verify, Problem, Report, VerifyOptions};
use chaperone_recorder::{FailureMode, Store};
use support::*;

fn verify_s3(bucket: &str, options: &BTreeMap<String, String>) -> Report {
    let store = Store::open(&format!("s3://{bucket}/audit"), options).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(verify(&store, &VerifyOptions::default()))
        .unwrap()
}

fn s3_config(
    bucket: &str,
    port: u16,
    spool: &std::path::Path,
) -> chaperone_recorder::ArchiveConfig {
    let mut c = config(&format!("s3://{bucket}/audit"), spool);
    c.store_options = s3_options(port);
    c
}

#[test]
fn s3_archive_with_multipart_segments_reads_the_same_everywhere() {
    let moto = Moto::start();
    moto.create_bucket("chp-rec-multipart");
    let tmp = tempdir("s3mp");
    let mut cfg = s3_config("chp-rec-multipart", moto.port, &tmp.path().join("spool"));
    // One big segment: ~15 MiB of payload, ~8 MiB compressed.
    cfg.segment_max_bytes = 32 << 20;
    cfg.segment_max_age_ms = 3_600_000;
    let rec = open(cfg);
    let mut s = FakeSession::start(&rec, "big-1", "agent-big");
    s.noisy = true;
    for q in 0..60 {
        assert!(s.query(
            &rec,
            &format!("SELECT * FROM big WHERE part = {q}"),
            1000,
            250
        ));
    }
    let frames = s.seq;
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(60)), "{:?}", rec.stats());
    assert_eq!(rec.stats().segments_uploaded, 1);
    rec.shutdown(Duration::from_secs(10));

    let local = tmp.path().join("download");
    moto.download("chp-rec-multipart", &local);
    let root = local.join("audit");
    let big = parquet_files(&root.join("v1/frames"));
    assert_eq!(big.len(), 1);
    assert!(
        std::fs::metadata(&big[0]).unwrap().len() > 5 << 20,
        "the frames file is past the multipart threshold: {} bytes",
        std::fs::metadata(&big[0]).unwrap().len()
    );
    let ours = rust_counts(&root);
    assert_eq!(ours["frames"], frames);
    let theirs = independent_counts(&root);
    for table in ["sessions", "statements", "frames"] {
        assert_eq!(theirs["pyarrow"][table], ours[table], "pyarrow {table}");
        assert_eq!(theirs["duckdb"][table], ours[table], "duckdb {table}");
    }
    let report = verify_s3("chp-rec-multipart", &moto.options());
    assert!(report.ok(), "{report}");
    assert_eq!(report.frames, frames);
}

#[test]
fn an_object_store_outage_loses_nothing_and_keeps_the_order() {
    let moto = Moto::start();
    moto.create_bucket("chp-rec-outage");
    let gate = Gate::new(moto.port);
    let tmp = tempdir("s3outage");
    let rec = open(s3_config(
        "chp-rec-outage",
        gate.port,
        &tmp.path().join("spool"),
    ));
    let mut s = FakeSession::start(&rec, "outage-1", "agent-o");
    let mut statements = 0;
    let mut run = |s: &mut FakeSession, n: usize| {
        for q in 0..n {
            assert!(s.query(&rec, &format!("SELECT {q}"), 5, 50));
            statements += 1;
            if q % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    run(&mut s, 200);
    assert!(rec.flush(Duration::from_secs(30)));
    let before = rec.stats().segments_uploaded;

    gate.close();
    let outage = Instant::now();
    // Load during the outage: several segments sealed, none uploaded.
    while outage.elapsed() < Duration::from_secs(3) {
        run(&mut s, 100);
    }
    rec.rotate();
    std::thread::sleep(Duration::from_millis(500));
    let during = rec.stats();
    assert_eq!(during.segments_uploaded, before, "{during:?}");
    assert!(during.segments_pending >= 2, "{during:?}");
    assert!(during.upload_failures >= 1, "{during:?}");

    gate.open();
    run(&mut s, 100);
    let frames = s.seq;
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(90)), "{:?}", rec.stats());
    rec.shutdown(Duration::from_secs(10));

    let report = verify_s3("chp-rec-outage", &moto.options());
    assert!(report.ok(), "{report}");
    assert_eq!(report.frames, frames);
    let local = tmp.path().join("download");
    moto.download("chp-rec-outage", &local);
    let counts = rust_counts(&local.join("audit"));
    assert_eq!(counts["frames"], frames);
    let _ = statements;
    assert_eq!(counts["statements"], s_statements(&local));
}

fn s_statements(local: &std::path::Path) -> u64 {
    python(
        r#"
import sys, duckdb
print(duckdb.sql(f"SELECT count(*) FROM read_parquet('{sys.argv[1]}/audit/v1/statements/*/*/*.parquet')").fetchall()[0][0])
"#,
        &[local.to_str().unwrap()],
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn a_full_spool_fails_closed_with_a_clear_error_and_recovers() {
    let moto = Moto::start();
    moto.create_bucket("chp-rec-full");
    let gate = Gate::new(moto.port);
    let tmp = tempdir("s3full");
    let mut cfg = s3_config("chp-rec-full", gate.port, &tmp.path().join("spool"));
    cfg.segment_max_bytes = 16 << 10;
    cfg.spool_limit_bytes = 96 << 10;
    let rec = open(cfg);
    gate.close();
    let mut s = FakeSession::start(&rec, "full-1", "agent-f");
    let mut accepted = 0;
    let mut refused = 0;
    for q in 0..5000 {
        if s.query(&rec, &format!("SELECT {q}"), 3, 100) {
            accepted += 1;
        } else {
            refused += 1;
            if refused >= 5 {
                break;
            }
        }
    }
    assert!(accepted > 10, "some statements fit in the spool");
    assert_eq!(refused, 5, "past the limit, requests are refused");
    // The refusal says why.
    let err = chaperone_schemas::tap::Tap::record_request(
        &rec,
        chaperone_schemas::TapEvent::Frame(chaperone_schemas::Frame {
            session_id: s.id.clone(),
            seq: s.seq,
            command_index: s.command,
            time_ns: chaperone_schemas::event::now_ns(),
            direction: chaperone_schemas::Direction::ClientToServer,
            payload: bytes::Bytes::from_static(b"\x03SELECT 'x'"),
        }),
    )
    .unwrap_err();
    s.seq += 1;
    s.command += 1;
    assert!(err.to_string().contains("archive spool is full"), "{err}");
    assert!(rec.stats().requests_refused >= 6);

    gate.open();
    assert!(rec.flush(Duration::from_secs(90)), "{:?}", rec.stats());
    // Room again: requests are accepted.
    assert!(s.query(&rec, "SELECT 'after'", 1, 10));
    let frames = s.seq;
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)));
    rec.shutdown(Duration::from_secs(10));
    let report = verify_s3("chp-rec-full", &moto.options());
    assert!(report.ok(), "{report}");
    assert_eq!(report.frames, frames, "refused requests are recorded too");
    let local = tmp.path().join("download");
    moto.download("chp-rec-full", &local);
    let out = python(
        r#"
import sys, duckdb
print(duckdb.sql(f"SELECT count(*) FILTER (WHERE verdict = 'refused'), count(*) FILTER (WHERE verdict = 'allowed') FROM read_parquet('{sys.argv[1]}/audit/v1/statements/*/*/*.parquet')").fetchall()[0])
"#,
        &[local.to_str().unwrap()],
    );
    assert_eq!(out.trim(), format!("({refused}, {})", accepted + 1));
}

#[test]
fn fail_open_runs_statements_and_records_the_gap() {
    let moto = Moto::start();
    moto.create_bucket("chp-rec-open");
    let gate = Gate::new(moto.port);
    let tmp = tempdir("s3open");
    let mut cfg = s3_config("chp-rec-open", gate.port, &tmp.path().join("spool"));
    cfg.segment_max_bytes = 16 << 10;
    cfg.spool_limit_bytes = 64 << 10;
    cfg.on_spool_full = FailureMode::FailOpen;
    let rec = open(cfg);
    gate.close();
    let mut s = FakeSession::start(&rec, "open-1", "agent-open");
    for q in 0..600 {
        assert!(
            s.query(&rec, &format!("SELECT {q}"), 3, 100),
            "fail_open never refuses"
        );
    }
    assert!(rec.stats().frames_dropped > 0, "{:?}", rec.stats());
    gate.open();
    assert!(rec.flush(Duration::from_secs(90)));
    s.query(&rec, "SELECT 'after'", 1, 10);
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)));
    rec.shutdown(Duration::from_secs(10));
    let report = verify_s3("chp-rec-open", &moto.options());
    assert!(!report.ok(), "a gap is never silent");
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, Problem::RecordedGap { .. })),
        "only declared gaps: {report}"
    );
    assert!(!report.problems.is_empty());
}
