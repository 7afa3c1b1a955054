//! Issue 20: nothing acknowledged is lost without `verify` saying so. Real
//! files (a tmpfs for the full disk), the local directory store, `verify`.
//!
//! - torn and bit-flipped spools: the loss is limited to the damaged records
//!   and always declared;
//! - fail_open on a full disk: memory stays bounded, the gap is declared;
//! - verify fails on a segment sealed but never uploaded, a chain shorter than
//!   its head, a missing head, and an empty archive where gateways are expected;
//! - a refused statement keeps its SQL text.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chaperone_archive::head::{Expectation, HeadProblem};
use chaperone_archive::verify::{verify, Problem, Report, VerifyOptions};
use chaperone_recorder::spool::LogReader;
use chaperone_recorder::{commit, ArchiveConfig, Durability, FailureMode, Store};
use chaperone_schemas::event::{now_ns, CommandSummary, Direction, Frame, TapEvent};
use chaperone_schemas::tap::Tap;
use support::*;

fn verify_with(dir: &Path, options: VerifyOptions) -> Report {
    let store = Store::open(dir.to_str().unwrap(), &Default::default()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(verify(&store, &options))
        .unwrap()
}

fn verify_dir(dir: &Path) -> Report {
    verify_with(dir, VerifyOptions::default())
}

/// One log for the whole test (no rotation while writing).
fn one_log_config(archive: &Path, spool: &Path, durability: Durability) -> ArchiveConfig {
    let mut cfg = config(archive.to_str().unwrap(), spool);
    cfg.segment_max_age_ms = 3_600_000;
    cfg.segment_max_bytes = 64 << 20;
    cfg.durability = durability;
    cfg.fsync_interval_ms = 5;
    cfg
}

fn the_log(spool: &Path) -> PathBuf {
    std::fs::read_dir(spool.join("log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .max()
        .unwrap()
}

/// Start offsets of the log's records (after the magic).
fn record_starts(log: &Path) -> Vec<u64> {
    let data = std::fs::read(log).unwrap();
    let mut r = LogReader::new(&data);
    let mut out = vec![r.position()];
    while r.next().is_some() {
        out.push(r.position());
    }
    assert!(r.losses().is_empty());
    out.pop();
    out
}

/// Records `n` acknowledged statements in one session, then "crashes".
fn record_and_crash(cfg: &ArchiveConfig, n: u64, settle: bool) -> u64 {
    let rec = open(cfg.clone());
    let mut s = FakeSession::start(&rec, "dur-1", "agent-dur");
    let mut acked = 0;
    for q in 0..n {
        if s.query(&rec, &format!("SELECT {q}"), 2, 30) {
            acked += 1;
        }
    }
    if settle {
        // Group commits run: the watermark covers everything written.
        std::thread::sleep(Duration::from_millis(200));
    }
    rec.abandon();
    acked
}

/// Reopens (recovery), uploads, stops; returns the archive's statements.
fn recover(cfg: &ArchiveConfig, archive: &Path) -> u64 {
    let rec = open(cfg.clone());
    assert!(rec.flush(Duration::from_secs(60)), "{:?}", rec.stats());
    rec.shutdown(Duration::from_secs(10));
    rust_counts(archive)["statements"]
}

fn spool_losses(report: &Report) -> Vec<(u64, String)> {
    report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::SpoolLoss {
                bytes_lost, reason, ..
            } => Some((*bytes_lost, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_flipped_byte_costs_only_its_record_and_the_loss_is_declared() {
    let tmp = tempdir("flip");
    let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
    let cfg = one_log_config(&archive, &spool, Durability::Group);
    let acked = record_and_crash(&cfg, 400, true);
    let log = the_log(&spool);
    let starts = record_starts(&log);
    // A record in the middle of the log: its body gets one flipped byte.
    let victim = starts.len() / 2;
    let (start, end) = (starts[victim], starts[victim + 1]);
    let mut data = std::fs::read(&log).unwrap();
    data[(start + 20) as usize] ^= 0x10;
    std::fs::write(&log, &data).unwrap();

    let statements = recover(&cfg, &archive);
    let report = verify_dir(&archive);
    assert!(!report.ok(), "{report}");
    let losses = spool_losses(&report);
    assert_eq!(losses.len(), 1, "{report}");
    assert_eq!(
        losses[0].0,
        end - start,
        "exactly the damaged record: {report}"
    );
    // Everything after the damaged record was recovered: at most the one
    // record (a statement summary, or a frame) is missing.
    assert!(statements + 1 >= acked, "{statements} of {acked}: {report}");
    for p in &report.problems {
        assert!(
            matches!(p, Problem::SpoolLoss { .. } | Problem::SequenceGap { .. }),
            "only the declared loss and its consequence: {report}"
        );
    }
}

#[test]
fn cuts_below_the_fsynced_watermark_are_declared_as_acknowledged_loss() {
    for (case, cut) in [("4k", None), ("boundary", Some(3usize))] {
        let tmp = tempdir(&format!("cut{case}"));
        let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
        let cfg = one_log_config(&archive, &spool, Durability::Group);
        let acked = record_and_crash(&cfg, 400, true);
        let log = the_log(&spool);
        let len = std::fs::metadata(&log).unwrap().len();
        let watermark = commit::read(&log).expect("a commit watermark");
        assert_eq!(watermark.synced, len, "{case}: group commits caught up");
        let new_len = match cut {
            None => len - 4096,
            // Exactly at a record boundary, three records before the end.
            Some(back) => {
                let starts = record_starts(&log);
                starts[starts.len() - back]
            }
        };
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(new_len).unwrap();
        drop(f);

        let statements = recover(&cfg, &archive);
        let report = verify_dir(&archive);
        // (A cut of the last records only leaves the last request without its
        // summary: sealed as an interrupted statement row.)
        assert!(
            statements < acked || cut.is_some(),
            "{case}: the cut removed statements"
        );
        assert!(
            !report.ok(),
            "{case}: a loss of acknowledged statements is never OK: {report}"
        );
        let losses = spool_losses(&report);
        assert!(
            losses
                .iter()
                .any(|(_, r)| r.contains("acknowledged records lost")),
            "{case}: {report}"
        );
        let declared: u64 = losses.iter().map(|l| l.0).sum();
        assert!(
            declared >= len - new_len,
            "{case}: {declared} bytes declared: {report}"
        );
        assert!(
            !report.to_string().contains("NOTE"),
            "{case}: no guess that nothing was acknowledged: {report}"
        );
    }
}

#[test]
fn after_a_host_crash_with_group_commit_a_torn_tail_is_a_declared_loss() {
    for cut in [0u64, 100] {
        let tmp = tempdir(&format!("host{cut}"));
        let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
        let mut cfg = one_log_config(&archive, &spool, Durability::Group);
        // The last writes are after the last group commit.
        cfg.fsync_interval_ms = 60_000;
        let acked = record_and_crash(&cfg, 100, false);
        let log = the_log(&spool);
        commit::simulate_reboot(&log).unwrap();
        if cut > 0 {
            let len = std::fs::metadata(&log).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
            f.set_len(len - cut).unwrap();
        }
        let statements = recover(&cfg, &archive);
        let report = verify_dir(&archive);
        assert!(statements <= acked);
        assert!(!report.ok(), "cut {cut}: {report}");
        assert!(
            spool_losses(&report)
                .iter()
                .any(|(_, r)| r.contains("host crash")),
            "cut {cut}: {report}"
        );
    }
}

/// VmRSS of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn fail_open_on_a_full_disk_keeps_memory_bounded_and_declares_the_gap() {
    let tmp = tempdir("fullfs");
    let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs (the tests run as root)");
    let _guard = Tmpfs(spool.clone());
    let mut cfg = config(archive.to_str().unwrap(), &spool);
    cfg.on_spool_full = FailureMode::FailOpen;
    cfg.segment_max_bytes = 1 << 20;
    let rec = open(cfg);
    // Fill the disk, leaving a few hundred KiB.
    let ballast = spool.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(256 << 10)).unwrap();
    }
    let before = rss();
    let mut s = FakeSession::start(&rec, "full-1", "agent-full");
    let started = Instant::now();
    let mut peak = 0;
    // ~100 MiB of results into a disk that has none.
    for q in 0..2_000 {
        assert!(
            s.query(&rec, &format!("SELECT {q}"), 200, 250),
            "fail_open runs"
        );
        if q % 100 == 0 {
            peak = peak.max(rss().saturating_sub(before));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    let stats = rec.stats();
    assert!(stats.frames_dropped > 100_000, "{stats:?}");
    // Stated bound: the recorder buffers at most ~8 MiB before writing inline
    // and, degraded, nothing more; 48 MiB leaves room for the allocator.
    assert!(peak < 48 << 20, "RSS grew {} MiB", peak >> 20);
    // Space comes back: the gap reaches the chain, recording resumes.
    std::fs::remove_file(&ballast).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.query(&rec, "SELECT 'after'", 1, 10));
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(90)), "{:?}", rec.stats());
    rec.shutdown(Duration::from_secs(10));
    let report = verify_dir(&archive);
    assert!(!report.ok(), "a gap is never silent");
    let mut declared = 0;
    for p in &report.problems {
        match p {
            Problem::RecordedGap {
                first,
                last,
                reason,
                ..
            } => {
                assert!(reason.contains("not recorded"), "its size: {report}");
                declared += last - first + 1;
            }
            other => panic!("only declared gaps, got {other}: {report}"),
        }
    }
    assert!(declared >= stats.frames_dropped, "{declared}: {report}");
    // Far fewer lines than events: the warnings are rate-limited (checked by
    // construction: one line a second with a suppressed count).
}

fn normal_run(tag: &str, segments: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir(tag);
    let archive = tmp.path().join("archive");
    let rec = open(config(archive.to_str().unwrap(), &tmp.path().join("spool")));
    let mut s = FakeSession::start(&rec, &format!("{tag}-1"), "agent-v");
    for round in 0..segments {
        for q in 0..10 {
            s.query(&rec, &format!("SELECT {round}, {q}"), 2, 20);
        }
        assert!(rec.flush(Duration::from_secs(30)));
    }
    s.end(&rec);
    rec.shutdown(Duration::from_secs(10));
    let report = verify_dir(&archive);
    assert!(report.ok(), "{report}");
    (tmp, archive)
}

fn completeness(report: &Report) -> Vec<HeadProblem> {
    report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::Completeness(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn verify_fails_on_a_chain_shorter_than_its_head_and_on_a_missing_head() {
    let (_tmp, archive) = normal_run("short", 3);
    let manifests = archive.join("v1/manifests/gw-test");
    let mut names: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let last = names.len() as u64;
    std::fs::remove_file(names.last().unwrap()).unwrap();
    let report = verify_dir(&archive);
    assert!(
        completeness(&report).contains(&HeadProblem::ChainShort {
            gateway: "gw-test".into(),
            head: last,
            last: last - 1
        }),
        "{report}"
    );
    assert!(
        report.to_string().contains("CHAIN SHORT gateway gw-test"),
        "{report}"
    );

    std::fs::remove_file(archive.join("v1/heads/gw-test.json")).unwrap();
    let report = verify_dir(&archive);
    assert!(
        report.to_string().contains("HEAD MISSING gateway gw-test"),
        "{report}"
    );
}

#[test]
fn verify_fails_on_a_segment_sealed_but_never_uploaded() {
    let tmp = tempdir("neverup");
    let archive = tmp.path().join("archive");
    // Data files cannot be stored (a file where their folder goes); heads and
    // manifests can.
    std::fs::create_dir_all(archive.join("v1")).unwrap();
    std::fs::write(archive.join("v1/frames"), b"in the way").unwrap();
    let rec = open(config(archive.to_str().unwrap(), &tmp.path().join("spool")));
    let mut s = FakeSession::start(&rec, "never-1", "agent-n");
    for q in 0..10 {
        assert!(s.query(&rec, &format!("SELECT {q}"), 2, 20));
    }
    rec.rotate();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rec.stats().upload_failures == 0 || rec.stats().segments_sealed == 0 {
        assert!(Instant::now() < deadline, "{:?}", rec.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The gateway is gone for good with its spool.
    rec.abandon();
    std::fs::remove_file(archive.join("v1/frames")).unwrap();
    let report = verify_dir(&archive);
    assert!(!report.ok(), "{report}");
    assert!(
        completeness(&report).contains(&HeadProblem::SealedNotUploaded {
            gateway: "gw-test".into(),
            first: 1,
            last: 1
        }),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("SEALED NOT UPLOADED gateway gw-test segment(s) 1..=1"),
        "{report}"
    );
}

#[test]
fn verify_fails_on_an_empty_archive_where_gateways_are_expected() {
    let tmp = tempdir("empty");
    let archive = tmp.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let report = verify_dir(&archive);
    assert!(report.ok(), "without an expectation: {report}");
    assert!(report
        .to_string()
        .contains("NOTE the archive holds no gateway"));
    let report = verify_with(
        &archive,
        VerifyOptions {
            expect_gateways: Some(Expectation::Count(2)),
            ..Default::default()
        },
    );
    assert!(!report.ok());
    assert!(
        report
            .to_string()
            .contains("GATEWAYS MISSING: 2 expected, 0"),
        "{report}"
    );
    // A list: the present gateway passes, the absent one is named.
    let (_run, archive) = normal_run("expect", 1);
    let report = verify_with(
        &archive,
        VerifyOptions {
            expect_gateways: Expectation::parse("gw-test,gw-other").ok(),
            ..Default::default()
        },
    );
    assert_eq!(
        completeness(&report),
        vec![HeadProblem::GatewayMissing {
            gateway: "gw-other".into()
        }],
        "{report}"
    );
}

#[test]
fn a_refused_statement_keeps_its_sql_text() {
    let tmp = tempdir("refusedsql");
    let archive = tmp.path().join("archive");
    // Uploads fail (a file where the data folder goes): the spool fills up.
    std::fs::create_dir_all(archive.join("v1")).unwrap();
    std::fs::write(archive.join("v1/frames"), b"in the way").unwrap();
    let mut cfg = config(archive.to_str().unwrap(), &tmp.path().join("spool"));
    cfg.segment_max_bytes = 16 << 10;
    cfg.spool_limit_bytes = 64 << 10;
    let rec = open(cfg);
    let mut s = FakeSession::start(&rec, "refused-1", "agent-r");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = Frame {
            session_id: s.id.clone(),
            seq: s.seq,
            command_index: s.command,
            time_ns: now_ns(),
            direction: Direction::ClientToServer,
            payload: bytes::Bytes::from(
                format!("\x03SELECT 'text {}', repeat('x', 200)", s.command).into_bytes(),
            ),
        };
        s.seq += 1;
        let refused = rec.record_request(TapEvent::Frame(request)).is_err();
        // As the gateway reports a command the recorder refused: no SQL.
        rec.record(TapEvent::Command(Box::new(CommandSummary {
            session_id: s.id.to_string(),
            command_index: s.command,
            started_at_ns: now_ns(),
            command: "COM_QUERY".into(),
            refused,
            sql: if refused {
                None
            } else {
                Some(format!("SELECT 'text {}'", s.command))
            },
            ..Default::default()
        })));
        s.command += 1;
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool never filled: {:?}",
            rec.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let refused_index = s.command - 1;
    std::fs::remove_file(archive.join("v1/frames")).unwrap();
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(60)), "{:?}", rec.stats());
    rec.shutdown(Duration::from_secs(10));
    let sql = python(
        r#"
import sys, duckdb
print(duckdb.sql(f"SELECT sql FROM read_parquet('{sys.argv[1]}/v1/statements/*/*/*.parquet') WHERE command_index = {sys.argv[2]}").fetchall())
"#,
        &[archive.to_str().unwrap(), &refused_index.to_string()],
    );
    assert!(
        sql.contains(&format!("SELECT 'text {refused_index}'")),
        "{sql}"
    );
}
