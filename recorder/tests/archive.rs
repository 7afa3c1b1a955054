//! The recorder's write path against real parts: the local directory store,
//! pyarrow and DuckDB reading what it wrote, `verify` over the result, and damage
//! (torn spool, altered/deleted files, removed manifests).

mod support;

use std::time::Duration;

use chaperone_archive::verify::{verify, Problem, VerifyOptions};
use chaperone_recorder::Store;
use support::*;

fn verify_dir(dir: &std::path::Path) -> chaperone_archive::verify::Report {
    let store = Store::open(dir.to_str().unwrap(), &Default::default()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(verify(&store, &VerifyOptions::default()))
        .unwrap()
}

#[test]
fn sessions_land_in_parquet_that_pyarrow_and_duckdb_read_identically() {
    let tmp = tempdir("roundtrip");
    let archive = tmp.path().join("archive");
    let rec = open(config(archive.to_str().unwrap(), &tmp.path().join("spool")));
    let mut expected_frames = 0;
    let mut expected_statements = 0;
    let mut sessions: Vec<FakeSession> = (0..3)
        .map(|i| FakeSession::start(&rec, &format!("sess-{i}"), &format!("agent-{i}")))
        .collect();
    // Interleaved sessions, enough to span several segments.
    for q in 0..400 {
        for s in sessions.iter_mut() {
            assert!(s.query(&rec, &format!("SELECT * FROM t WHERE id = {q}"), q % 7, 40));
            expected_statements += 1;
        }
    }
    for s in sessions.drain(..) {
        expected_frames += s.seq;
        s.end(&rec);
    }
    assert!(
        rec.flush(Duration::from_secs(30)),
        "uploaded: {:?}",
        rec.stats()
    );
    let stats = rec.stats();
    assert!(stats.segments_uploaded >= 2, "several segments: {stats:?}");
    assert_eq!(stats.frames, expected_frames);
    rec.shutdown(Duration::from_secs(10));

    let ours = rust_counts(&archive);
    assert_eq!(ours["frames"], expected_frames);
    assert_eq!(ours["statements"], expected_statements);
    assert_eq!(ours["sessions"], 6, "a start and an end row per session");
    let theirs = independent_counts(&archive);
    for table in ["sessions", "statements", "frames"] {
        assert_eq!(theirs["pyarrow"][table], ours[table], "pyarrow {table}");
        assert_eq!(theirs["duckdb"][table], ours[table], "duckdb {table}");
    }
    for i in 0..3 {
        let s = &theirs["duckdb_frames_per_session"][format!("sess-{i}")];
        let n = s[0].as_u64().unwrap();
        assert_eq!(s[1].as_u64(), Some(0));
        assert_eq!(s[2].as_u64(), Some(n - 1), "gap-free seq for sess-{i}");
    }
    assert_eq!(
        theirs["duckdb_subjects"],
        serde_json::json!(["agent-0", "agent-1", "agent-2"]),
        "identity columns on statements"
    );
    let report = verify_dir(&archive);
    assert!(report.ok(), "{report}");
    assert_eq!(report.frames, expected_frames);
}

#[test]
fn a_torn_spool_is_recovered_to_the_last_whole_record_and_the_loss_reported() {
    let tmp = tempdir("torn");
    let archive = tmp.path().join("archive");
    let spool = tmp.path().join("spool");
    let mut cfg = config(archive.to_str().unwrap(), &spool);
    // Nothing sealed while we write: everything stays in one log.
    cfg.segment_max_age_ms = 3_600_000;
    cfg.segment_max_bytes = 64 << 20;
    let rec = open(cfg.clone());
    let mut s = FakeSession::start(&rec, "torn-1", "agent-torn");
    for q in 0..50 {
        s.query(&rec, &format!("SELECT {q}"), 2, 30);
    }
    let frames_written = s.seq;
    // Make the writer write everything, then simulate a crash: the process
    // vanishes (no shutdown), and the log's tail is torn.
    assert!(s.query(&rec, "SELECT 'last'", 0, 0));
    rec.abandon();
    let log = std::fs::read_dir(spool.join("log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let len = std::fs::metadata(&log).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);

    let rec = open(cfg);
    assert!(rec.stats().spool_bytes_lost > 0, "{:?}", rec.stats());
    assert!(rec.flush(Duration::from_secs(30)));
    rec.shutdown(Duration::from_secs(10));
    // A record cut at the end of a log the gateway never closed is a write
    // cut short by the crash: reported as a note (with its size), not as damage.
    let report = verify_dir(&archive);
    assert!(report.ok(), "{report}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("write cut short by a crash") && !n.starts_with("NOTE 0 ")),
        "{report}"
    );
    // Everything before the torn record is there, gap-free; the session was
    // ended as gateway_stopped.
    let counts = independent_counts(&archive);
    let sess = &counts["duckdb_frames_per_session"]["torn-1"];
    assert!(sess[0].as_u64().unwrap() >= frames_written, "{counts}");
    assert_eq!(sess[2].as_u64().unwrap() + 1, sess[0].as_u64().unwrap());
    let ended = python(
        r#"
import sys, duckdb
print(duckdb.sql(f"SELECT end_reason FROM read_parquet('{sys.argv[1]}/v1/sessions/*/*/*.parquet') WHERE event = 'end'").fetchall())
"#,
        &[archive.to_str().unwrap()],
    );
    assert!(ended.contains("gateway_stopped"), "{ended}");
    assert!(
        !report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::SequenceGap { .. })),
        "{report}"
    );
}

#[test]
fn verify_names_altered_and_deleted_files_and_removed_manifests() {
    let tmp = tempdir("tamper");
    let archive = tmp.path().join("archive");
    let rec = open(config(archive.to_str().unwrap(), &tmp.path().join("spool")));
    let mut s = FakeSession::start(&rec, "tamper-1", "agent-t");
    // Five segments.
    for round in 0..5 {
        for q in 0..20 {
            s.query(&rec, &format!("SELECT {round}, {q}"), 3, 20);
        }
        assert!(rec.flush(Duration::from_secs(30)));
    }
    s.end(&rec);
    rec.shutdown(Duration::from_secs(10));
    assert!(verify_dir(&archive).ok());

    let files = parquet_files(&archive.join("v1").join("frames"));
    assert!(files.len() >= 5, "{files:?}");
    // Alter one byte of one file, delete another, remove a manifest in the
    // middle of the chain and the last one.
    let altered = &files[0];
    let mut bytes = std::fs::read(altered).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(altered, bytes).unwrap();
    let deleted = &files[1];
    std::fs::remove_file(deleted).unwrap();
    let manifests = archive.join("v1/manifests/gw-test");
    let mut names: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    std::fs::remove_file(&names[2]).unwrap();
    std::fs::remove_file(names.last().unwrap()).unwrap();

    let report = verify_dir(&archive);
    let text = report.to_string();
    assert!(!report.ok());
    let rel = |p: &std::path::Path| {
        p.strip_prefix(&archive)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert!(
        text.contains(&format!("FILE ALTERED {}", rel(altered))),
        "{text}"
    );
    assert!(
        text.contains(&format!("FILE MISSING {}", rel(deleted))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "MANIFEST MISSING gateway gw-test segment 3: {}",
            rel(&names[2])
        )),
        "{text}"
    );
    let last_segment = names.len();
    assert!(
        text.contains(&format!(
            "segment {last_segment} has data files but no manifest"
        )),
        "{text}"
    );
}

#[test]
fn the_payload_cap_is_recorded_and_counts_still_cover_everything() {
    let tmp = tempdir("cap");
    let archive = tmp.path().join("archive");
    let mut cfg = config(archive.to_str().unwrap(), &tmp.path().join("spool"));
    cfg.payload_cap_bytes = Some(1000);
    let rec = open(cfg);
    let mut s = FakeSession::start(&rec, "cap-1", "agent-cap");
    s.query(&rec, "SELECT big", 100, 200);
    s.query(&rec, "SELECT small", 1, 10);
    let frames = s.seq;
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)));
    rec.shutdown(Duration::from_secs(10));
    let out = python(
        r#"
import sys, duckdb, json
r = sys.argv[1]
st = duckdb.sql(f"SELECT sql, rows_returned, payload_capped, payload_bytes_dropped FROM read_parquet('{r}/v1/statements/*/*/*.parquet') ORDER BY command_index").fetchall()
fr = duckdb.sql(f"SELECT count(*), sum(payload_length), sum(octet_length(payload)), count(*) FILTER (WHERE payload_capped) FROM read_parquet('{r}/v1/frames/*/*/*.parquet')").fetchall()[0]
print(json.dumps({"statements": st, "frames": fr}))
"#,
        &[archive.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["statements"][0][1], 100, "row count covers every row");
    assert_eq!(v["statements"][0][2], true, "the cap is recorded");
    assert!(v["statements"][0][3].as_u64().unwrap() > 15_000);
    assert_eq!(v["statements"][1][2], false);
    assert_eq!(v["frames"][0], frames, "every frame has a row");
    assert!(v["frames"][1].as_u64().unwrap() > v["frames"][2].as_u64().unwrap());
    assert!(verify_dir(&archive).ok());
}
