//! The archive's life cycle through the library: retention (with legal holds,
//! `--move-to`, an interrupted run, and a deletion without a record) and
//! compaction, against the local directory store and S3 (moto), each checked by
//! `verify` and by the catalog returning the same rows.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chaperone_archive::lifecycle::{
    compact, retention, CompactOptions, LegalHolds, Outcome, RetentionOptions,
};
use chaperone_archive::verify::{verify, Problem, Report, VerifyOptions};
use chaperone_catalog::{render, Catalog, CatalogOptions, Format};
use chaperone_recorder::Store;
use chaperone_schemas::event::now_ns;
use support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn check(store: &Store) -> Report {
    runtime()
        .block_on(verify(store, &VerifyOptions::default()))
        .unwrap()
}

/// Rows of `sql` as CSV, through the catalog `chaperone query` uses.
fn query(store: &Store, sql: &str) -> String {
    runtime().block_on(async {
        let catalog = Catalog::open(store.clone(), CatalogOptions::default())
            .await
            .unwrap();
        render(&catalog.query(sql).await.unwrap(), Format::Csv).unwrap()
    })
}

/// Every statement and frame, in a stable order.
const ALL_ROWS: &[&str] = &[
    "SELECT session_id, command_index, sql, rows_returned FROM statements ORDER BY 1, 2",
    "SELECT session_id, seq, direction, payload_length, payload FROM frames ORDER BY 1, 2",
    "SELECT session_id, event, subject, commands, frames FROM sessions ORDER BY 1, 2",
];

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x22; 32])
}

/// Writes `rounds` segments: session `old-<n>` of `agent-old` in each, and one
/// long session of `agent-held` spread over all of them; returns when
/// everything is uploaded. Returns the time between the first half of the
/// segments and the second.
fn record_segments(cfg: chaperone_recorder::ArchiveConfig, rounds: u64) -> i64 {
    let rec = open(cfg);
    let mut held = FakeSession::start(&rec, "held-1", "agent-held");
    let mut middle = 0;
    for round in 0..rounds {
        if round == rounds / 2 {
            std::thread::sleep(Duration::from_millis(20));
            middle = now_ns();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = FakeSession::start(&rec, &format!("old-{round}"), "agent-old");
        for q in 0..5 {
            s.query(&rec, &format!("SELECT {round}, {q}"), 3, 20);
        }
        s.end(&rec);
        if round < 2 {
            held.query(&rec, &format!("SELECT 'held' , {round}"), 2, 10);
        }
        assert!(rec.flush(Duration::from_secs(30)), "{:?}", rec.stats());
    }
    held.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)));
    rec.shutdown(Duration::from_secs(10));
    middle
}

fn holds(sessions: &[&str]) -> LegalHolds {
    let mut h = LegalHolds::default();
    for s in sessions {
        h.add(&format!("session={s}")).unwrap();
    }
    h
}

fn run_retention(store: &Store, options: &RetentionOptions) -> Outcome {
    let mut lines = Vec::new();
    let out = runtime()
        .block_on(retention(store, &key(), options, &mut |l| lines.push(l)))
        .unwrap();
    assert!(!lines.is_empty() || out.gateways.is_empty());
    out
}

/// Retention on one store: old segments go except the held session's; verify
/// passes and names what retention removed; the held rows are all there.
fn retention_keeps_holds_and_verifies(store: &Store, cfg: chaperone_recorder::ArchiveConfig) {
    let middle = record_segments(cfg, 6);
    assert!(check(store).ok());
    let held_before = query(
        store,
        "SELECT command_index, sql FROM statements WHERE session_id = 'held-1' ORDER BY 1",
    );
    let options = RetentionOptions {
        cutoff_ns: middle,
        policy: "older than the test's middle".into(),
        holds: holds(&["held-1"]),
        move_to: None,
        dry_run: true,
        gateway: None,
    };
    // A dry run changes nothing.
    let dry = run_retention(store, &options);
    let planned = dry.gateways["gw-test"].segments.clone();
    assert!(!planned.is_empty(), "{dry}");
    assert!(check(store).lifecycle.is_empty());

    let done = run_retention(
        store,
        &RetentionOptions {
            dry_run: false,
            ..options.clone()
        },
    );
    let outcome = &done.gateways["gw-test"];
    assert_eq!(outcome.segments, planned);
    // The held session's segments stayed (it has frames in the first two).
    assert!(!outcome.held.is_empty(), "{done}");
    for held in outcome.held.keys() {
        assert!(!outcome.segments.contains(held));
    }
    let report = check(store);
    assert!(report.ok(), "{report}");
    assert_eq!(report.segments_removed, planned.len(), "{report}");
    assert!(report.frames_removed > 0);
    let text = report.to_string();
    assert!(
        text.contains("REMOVED BY RETENTION gateway gw-test"),
        "{text}"
    );
    assert!(text.contains("legal holds: session=held-1"), "{text}");
    assert_eq!(
        query(
            store,
            "SELECT command_index, sql FROM statements WHERE session_id = 'held-1' ORDER BY 1"
        ),
        held_before
    );
    // Sessions wholly in removed segments are gone, later ones stay.
    let old = query(
        store,
        "SELECT count(DISTINCT session_id) AS n FROM statements WHERE subject = 'agent-old'",
    );
    assert!(!old.contains("\n6\n"), "{old}");
    // Running it again removes nothing more.
    let again = run_retention(
        store,
        &RetentionOptions {
            dry_run: false,
            ..options
        },
    );
    assert!(
        again
            .gateways
            .get("gw-test")
            .is_none_or(|g| g.segments.is_empty()),
        "{again}"
    );
    assert!(check(store).ok());
}

#[test]
fn retention_on_a_directory_keeps_legal_holds_and_verify_names_what_it_removed() {
    let tmp = tempdir("lc_ret_dir");
    let archive = tmp.path().join("archive");
    let store = Store::open(archive.to_str().unwrap(), &BTreeMap::new()).unwrap();
    retention_keeps_holds_and_verifies(
        &store,
        config(archive.to_str().unwrap(), &tmp.path().join("spool")),
    );

    // A segment deleted WITHOUT a retention record is still reported missing.
    let manifests = archive.join("v1/manifests/gw-test");
    let mut names: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let victim = names.first().expect("held segments remain").clone();
    let segment: u64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    for f in parquet_files(&archive.join("v1")) {
        if f.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(&format!("-{segment:010}.parquet"))
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    let report = check(&store);
    assert!(!report.ok());
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::ManifestMissing { segment: s, .. } if *s == segment
        )),
        "{report}"
    );
}

#[test]
fn retention_on_s3_moves_segments_to_a_cold_store_and_verifies() {
    let moto = Moto::start();
    moto.create_bucket("chp-lc-retention");
    let tmp = tempdir("lc_ret_s3");
    let url = "s3://chp-lc-retention/audit";
    let mut cfg = config(url, &tmp.path().join("spool"));
    cfg.store_options = moto.options();
    let store = Store::open(url, &moto.options()).unwrap();
    let middle = record_segments(cfg, 4);
    let total_before = query(&store, "SELECT count(*) AS n FROM frames");

    let cold_dir = tmp.path().join("cold");
    let cold = Store::open(cold_dir.to_str().unwrap(), &BTreeMap::new()).unwrap();
    let done = run_retention(
        &store,
        &RetentionOptions {
            cutoff_ns: middle,
            policy: "older than 1s".into(),
            holds: LegalHolds::default(),
            move_to: Some(cold.clone()),
            dry_run: false,
            gateway: None,
        },
    );
    let moved = &done.gateways["gw-test"];
    assert!(!moved.segments.is_empty(), "{done}");
    let report = check(&store);
    assert!(report.ok(), "{report}");
    assert_eq!(report.segments_removed, moved.segments.len());
    assert!(report
        .to_string()
        .contains(&format!("moved to {}", cold_dir.display())));

    // Nothing lost: the rows left plus the rows moved are the rows before.
    let left = query(&store, "SELECT count(*) AS n FROM frames");
    let cold_rows = query(&cold, "SELECT count(*) AS n FROM frames");
    let n = |csv: &str| -> u64 { csv.lines().nth(1).unwrap().trim().parse().unwrap() };
    assert_eq!(n(&left) + n(&cold_rows), n(&total_before));
    assert!(n(&cold_rows) > 0);
    // Every removed file is in the cold store.
    assert_eq!(parquet_files(&cold_dir.join("v1")).len(), moved.files);
}

#[test]
fn an_interrupted_retention_is_reported_and_finished_by_running_it_again() {
    let tmp = tempdir("lc_ret_resume");
    let archive = tmp.path().join("archive");
    let store = Store::open(archive.to_str().unwrap(), &BTreeMap::new()).unwrap();
    record_segments(
        config(archive.to_str().unwrap(), &tmp.path().join("spool")),
        3,
    );
    // Keep copies of every object, run retention, put them back: the state of
    // a run that wrote its record and died before deleting.
    let copy = tmp.path().join("copy");
    copy_dir(&archive.join("v1"), &copy);
    let options = RetentionOptions {
        cutoff_ns: now_ns(),
        policy: "everything".into(),
        holds: LegalHolds::default(),
        move_to: None,
        dry_run: false,
        gateway: None,
    };
    run_retention(&store, &options);
    for dir in ["sessions", "statements", "frames", "manifests"] {
        copy_dir(&copy.join(dir), &archive.join("v1").join(dir));
    }
    let report = check(&store);
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, Problem::LifecycleIncomplete { .. })),
        "{report}"
    );
    assert!(!report.ok());
    assert!(report.to_string().contains("LIFECYCLE INCOMPLETE"));
    run_retention(&store, &options);
    let report = check(&store);
    assert!(report.ok(), "{report}");
    assert!(parquet_files(&archive.join("v1")).is_empty());
    // A gateway starting over on a fresh spool continues the chain after the
    // removed segments instead of reusing their numbers.
    let rec = open(config(
        archive.to_str().unwrap(),
        &tmp.path().join("spool-2"),
    ));
    let mut s = FakeSession::start(&rec, "after-1", "agent-new");
    s.query(&rec, "SELECT 1", 1, 5);
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)));
    rec.shutdown(Duration::from_secs(10));
    let report = check(&store);
    assert!(report.ok(), "{report}");
    assert_eq!(report.manifests, 1);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn compaction_merges_small_segments_and_queries_return_the_same_rows() {
    let tmp = tempdir("lc_compact");
    let archive = tmp.path().join("archive");
    let store = Store::open(archive.to_str().unwrap(), &BTreeMap::new()).unwrap();
    record_segments(
        config(archive.to_str().unwrap(), &tmp.path().join("spool")),
        6,
    );
    let before: Vec<String> = ALL_ROWS.iter().map(|q| query(&store, q)).collect();
    let files_before = parquet_files(&archive.join("v1")).len();
    let report_before = check(&store);
    assert!(report_before.ok());

    let options = CompactOptions {
        target_bytes: 64 << 20,
        sealed_before_ns: now_ns(),
        zstd_level: 3,
        dry_run: false,
        gateway: None,
    };
    let mut lines = Vec::new();
    let out = runtime()
        .block_on(compact(&store, &key(), &options, &mut |l| lines.push(l)))
        .unwrap();
    let merged = &out.gateways["gw-test"];
    assert!(merged.segments.len() >= 6, "{out}");
    let files_after = parquet_files(&archive.join("v1")).len();
    assert!(
        files_after < files_before,
        "{files_before} -> {files_after} files"
    );
    let after: Vec<String> = ALL_ROWS.iter().map(|q| query(&store, q)).collect();
    assert_eq!(before, after);
    let report = check(&store);
    assert!(report.ok(), "{report}");
    assert_eq!(report.frames, report_before.frames);
    assert_eq!(report.segments_compacted, merged.segments.len());
    assert!(report.to_string().contains("REPLACED BY COMPACTION"));

    // A compacted file altered is named, like any other.
    let compacted = parquet_files(&archive.join("v1/frames"));
    let mut bytes = std::fs::read(&compacted[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&compacted[0], bytes).unwrap();
    let report = check(&store);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::FileAltered { .. })),
        "{report}"
    );
    // And a compacted file deleted without a record is missing.
    std::fs::remove_file(&compacted[0]).unwrap();
    let report = check(&store);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::FileMissing { .. })),
        "{report}"
    );
}
