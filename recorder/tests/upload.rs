//! The segment upload life cycle against real files and a real local store:
//! a spool left by a process killed half-way through removing an uploaded
//! segment (the "upload wedge"), a segment that can never be completed, a
//! store that hangs (moto, SIGSTOP'd), and a recorder process SIGKILLed at
//! random points over and over.

mod support;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaperone_archive::verify::{verify, Problem, Report, VerifyOptions};
use chaperone_recorder::Store;
use chaperone_schemas::layout::{segment_name, Layout};
use chaperone_schemas::manifest::Manifest;
use support::*;

const GATEWAY: &str = "gw-test";

fn verify_dir(dir: &Path) -> Report {
    let store = Store::open(dir.to_str().unwrap(), &Default::default()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(verify(&store, &VerifyOptions::default()))
        .unwrap()
}

/// Records `queries` statements in a new session and uploads them; returns
/// the session's frame count.
fn record_session(rec: &chaperone_recorder::Recorder, id: &str, queries: usize) -> u64 {
    let mut s = FakeSession::start(rec, id, "agent");
    for q in 0..queries {
        assert!(s.query(rec, &format!("SELECT {q}"), 3, 40), "refused");
    }
    let frames = s.seq;
    s.end(rec);
    assert!(rec.flush(Duration::from_secs(30)), "{:?}", rec.stats());
    frames
}

fn manifest_object(archive: &Path, segment: u64) -> PathBuf {
    archive.join(Layout::new("").manifest(GATEWAY, segment))
}

/// The highest segment number in the store.
fn last_segment(archive: &Path) -> u64 {
    let dir = archive.join(Layout::new("").gateway_manifests(GATEWAY));
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .max()
        .expect("segments in the store")
}

/// Rebuilds segment `segment`'s sealed directory in the spool from the store
/// (as the sealer wrote it), as if the uploader had not removed it yet;
/// returns the directory and the local names of its data files.
fn resurrect(archive: &Path, spool: &Path, segment: u64) -> (PathBuf, Vec<String>) {
    let manifest_bytes = std::fs::read(manifest_object(archive, segment)).unwrap();
    let manifest = Manifest::parse(&manifest_bytes).unwrap();
    let dir = spool.join("sealed").join(segment_name(segment));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), &manifest_bytes).unwrap();
    let mut files = Vec::new();
    for (i, f) in manifest.files.iter().enumerate() {
        let local = format!("{}-{i}.parquet", f.table);
        std::fs::copy(archive.join(&f.path), dir.join(&local)).unwrap();
        files.push((local, f.path.clone()));
    }
    let list = serde_json::json!({
        "source_log": format!("resurrected-{segment}.log"),
        "manifest_path": Layout::new("").manifest(GATEWAY, segment),
        "files": files,
    });
    std::fs::write(dir.join("upload.json"), list.to_string()).unwrap();
    let names = files.into_iter().map(|(l, _)| l).collect();
    (dir, names)
}

fn sealed_entries(spool: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool.join("sealed"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_spool_left_mid_removal_of_uploaded_segments_is_finished_and_later_segments_upload() {
    let tmp = tempdir("wedge");
    let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
    let mut expected = 0;
    {
        let rec = open(config(archive.to_str().unwrap(), &spool));
        expected += record_session(&rec, "before-1", 30);
        expected += record_session(&rec, "before-2", 30);
        rec.shutdown(Duration::from_secs(10));
    }
    let last = last_segment(&archive);
    assert!(last >= 2, "two segments at least");
    // Segment `last`: uploaded completely, then the process was killed while
    // deleting its directory (one data file already gone) — the wedge.
    let (dir, files) = resurrect(&archive, &spool, last);
    std::fs::remove_file(dir.join(&files[files.len() - 1])).unwrap();
    // Segment `last - 1`: data files uploaded, killed before the manifest; one
    // data file then lost locally (its object is in the store, intact).
    let (dir, files) = resurrect(&archive, &spool, last - 1);
    std::fs::remove_file(dir.join(&files[0])).unwrap();
    std::fs::remove_file(manifest_object(&archive, last - 1)).unwrap();
    // An uploaded directory whose deletion was cut short.
    let leftover = spool
        .join("sealed")
        .join(format!("{}.uploaded", segment_name(last - 2)));
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("frames-0.parquet"), b"partial").unwrap();

    let rec = open(config(archive.to_str().unwrap(), &spool));
    expected += record_session(&rec, "after-1", 30);
    expected += record_session(&rec, "after-2", 30);
    let stats = rec.stats();
    assert_eq!(stats.segments_pending, 0, "{stats:?}");
    assert_eq!(stats.segments_broken, 0, "{stats:?}");
    assert_eq!(stats.upload_failures, 0, "{stats:?}");
    assert!(rec.health().is_ok(), "{:?}", rec.health());
    rec.shutdown(Duration::from_secs(10));
    assert!(
        sealed_entries(&spool).is_empty(),
        "{:?}",
        sealed_entries(&spool)
    );
    assert!(last_segment(&archive) > last, "later segments uploaded");
    assert!(manifest_object(&archive, last - 1).exists(), "completed");
    // Nothing acknowledged is lost, nothing is doubled, the chain holds.
    let report = verify_dir(&archive);
    assert!(report.ok(), "{report}");
    assert_eq!(report.frames, expected);
    assert_eq!(rust_counts(&archive)["frames"], expected);
}

#[test]
fn a_segment_that_cannot_be_completed_is_set_aside_reported_and_later_ones_upload() {
    let tmp = tempdir("broken");
    let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
    {
        let rec = open(config(archive.to_str().unwrap(), &spool));
        record_session(&rec, "before-1", 30);
        rec.shutdown(Duration::from_secs(10));
    }
    let last = last_segment(&archive);
    // Sealed, not uploaded yet, and one data file lost on the local disk:
    // neither here nor in the store.
    let (dir, files) = resurrect(&archive, &spool, last);
    let manifest = Manifest::parse(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    std::fs::remove_file(dir.join(&files[0])).unwrap();
    std::fs::remove_file(archive.join(&manifest.files[0].path)).unwrap();
    std::fs::remove_file(manifest_object(&archive, last)).unwrap();

    let rec = open(config(archive.to_str().unwrap(), &spool));
    let later = record_session(&rec, "after-1", 30);
    let stats = rec.stats();
    assert_eq!(stats.segments_broken, 1, "{stats:?}");
    assert_eq!(
        stats.segments_pending, 0,
        "later segments uploaded: {stats:?}"
    );
    let health = rec.health().expect_err("not ready with a broken segment");
    assert!(health.contains("could not be uploaded"), "{health}");
    rec.shutdown(Duration::from_secs(10));
    drop(rec);

    let broken = spool
        .join("sealed")
        .join(format!("{}.broken", segment_name(last)));
    let reason = std::fs::read_to_string(broken.join("BROKEN.txt")).unwrap();
    assert!(reason.contains(&files[0]), "{reason}");
    assert_eq!(
        sealed_entries(&spool),
        vec![format!("{}.broken", segment_name(last))]
    );
    // The segment is named as missing; the later session is all there.
    let report = verify_dir(&archive);
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::ManifestMissing { segment, .. } if *segment == last
        )),
        "{report}"
    );
    let seqs = frame_seqs(&archive);
    let after: Vec<_> = seqs.iter().filter(|(s, _)| s == "after-1").collect();
    assert_eq!(after.len() as u64, later);

    // A restart still reports it (until an operator removes it).
    let rec = open(config(archive.to_str().unwrap(), &spool));
    assert!(rec.health().is_err());
    rec.shutdown(Duration::from_secs(5));
}

/// (session, seq) of every frame in a local archive.
fn frame_seqs(archive: &Path) -> BTreeSet<(String, u64)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt64Type;
    let mut out = BTreeSet::new();
    for file in parquet_files(&archive.join("v1").join("frames")) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let sessions = batch.column_by_name("session_id").unwrap();
            let sessions =
                arrow::compute::cast(sessions, &arrow::datatypes::DataType::Utf8).unwrap();
            let sessions = sessions.as_string::<i32>();
            let seqs = arrow::compute::cast(
                batch.column_by_name("seq").unwrap(),
                &arrow::datatypes::DataType::UInt64,
            )
            .unwrap();
            let seqs = seqs.as_primitive::<UInt64Type>();
            for i in 0..batch.num_rows() {
                if !sessions.is_null(i) {
                    out.insert((sessions.value(i).to_string(), seqs.value(i)));
                }
            }
        }
    }
    out
}

#[test]
fn a_hung_store_times_out_and_refusals_stop_soon_after_it_returns() {
    let moto = Moto::start();
    moto.create_bucket("chp-rec-hung");
    let tmp = tempdir("hung");
    let mut cfg = config("s3://chp-rec-hung/audit", &tmp.path().join("spool"));
    cfg.store_options = moto.options();
    cfg.upload_timeout_s = 1;
    cfg.spool_limit_bytes = 1 << 20;
    cfg.segment_max_bytes = 256 << 10;
    let rec = open(cfg);
    record_session(&rec, "warm-up", 5);
    let pid = moto.pid().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    let mut s = FakeSession::start(&rec, "during", "agent");
    // Incompressible rows: sealing does not shrink the spool below its limit.
    s.noisy = true;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Full means refused and staying refused once sealing has caught up.
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 3 {
        assert!(Instant::now() < deadline, "the spool never filled");
        if s.query(&rec, "SELECT 1", 200, 250) {
            refused_in_a_row = 0;
        } else {
            refused_in_a_row += 1;
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    // Long enough for the old backoff to reach its 10 s ceiling.
    std::thread::sleep(Duration::from_secs(12));
    let failures = rec.stats().upload_failures;
    assert!(
        !s.query(&rec, "SELECT 1", 0, 10),
        "still full while hung: {:?}",
        rec.stats()
    );
    signal("-CONT");
    assert!(
        failures >= 2,
        "timeouts count as failures: {:?}",
        rec.stats()
    );
    let back = Instant::now();
    while !s.query(&rec, "SELECT 1", 0, 10) {
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "still refusing {:?} after the store returned: {:?}",
            back.elapsed(),
            rec.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "refusals stopped {:?} after the store returned",
        back.elapsed()
    );
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)), "{:?}", rec.stats());
    rec.shutdown(Duration::from_secs(10));
}

/// The kill loop's child: records sessions of short queries through a
/// recorder on the spool and store named by the environment, printing each
/// request once `record_request` returned (acknowledged), until killed.
#[test]
fn kill_loop_child() {
    let (Ok(spool), Ok(archive), Ok(run)) = (
        std::env::var("CHP_KILL_SPOOL"),
        std::env::var("CHP_KILL_ARCHIVE"),
        std::env::var("CHP_KILL_RUN"),
    ) else {
        return; // Not a child: nothing to do.
    };
    let mut cfg = config(&archive, Path::new(&spool));
    cfg.segment_max_age_ms = 20;
    let rec = open(cfg);
    let mut out = std::io::stdout();
    use std::io::Write;
    writeln!(out, "open").unwrap();
    let mut s = FakeSession::start(&rec, &format!("run-{run}"), "agent");
    for q in 0..100_000 {
        let seq = s.seq;
        if s.query(&rec, &format!("SELECT {q}"), 2, 30) {
            writeln!(out, "ack {seq}").unwrap();
            out.flush().unwrap();
        }
        if std::env::var("CHP_KILL_FINAL").is_ok() && q == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    s.end(&rec);
    assert!(rec.flush(Duration::from_secs(30)), "{:?}", rec.stats());
    rec.shutdown(Duration::from_secs(10));
    writeln!(out, "done").unwrap();
}

#[test]
fn a_recorder_killed_at_random_points_loses_nothing_acknowledged() {
    const KILLS: usize = 50;
    let tmp = tempdir("kill");
    let (archive, spool) = (tmp.path().join("archive"), tmp.path().join("spool"));
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeSet<(String, u64)> = BTreeSet::new();
    let started = Instant::now();
    for run in 0..=KILLS {
        let last = run == KILLS;
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "kill_loop_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CHP_KILL_SPOOL", &spool)
        .env("CHP_KILL_ARCHIVE", &archive)
        .env("CHP_KILL_RUN", run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if last {
            cmd.env("CHP_KILL_FINAL", "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        if last {
            assert!(child.wait().unwrap().success(), "the final run finishes");
        } else {
            // Random points: while opening (recovering), sealing, uploading,
            // removing uploaded segments.
            let ms = 30 + (rand_u64(run as u64) % 400);
            std::thread::sleep(Duration::from_millis(ms));
            child.kill().unwrap();
            child.wait().unwrap();
        }
        for line in reader.join().unwrap() {
            if let Some(seq) = line.strip_prefix("ack ") {
                acked.insert((format!("run-{run}"), seq.parse().unwrap()));
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "kill loop too slow"
        );
    }
    assert!(acked.len() > KILLS, "the runs acknowledged requests");
    let stored = frame_seqs(&archive);
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged requests not in the archive, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        sealed_entries(&spool).is_empty(),
        "{:?}",
        sealed_entries(&spool)
    );
    let report = verify_dir(&archive);
    let structural: Vec<_> = report
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p,
                Problem::ManifestMissing { .. }
                    | Problem::ChainBroken { .. }
                    | Problem::FileMissing { .. }
                    | Problem::FileAltered { .. }
                    | Problem::SequenceRepeated { .. }
            )
        })
        .collect();
    assert!(structural.is_empty(), "{report}");
}

/// A deterministic spread of kill delays (splitmix64).
fn rand_u64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
