//! `chaperone serve` with `[archive]`, as a real process: SIGKILL during sysbench
//! load then restart (nothing forwarded is lost, `chaperone verify` passes), and
//! a full spool refusing statements through a real client (nothing executes
//! unrecorded).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

fn write_config(dir: &Path, port: u16, extra_archive: &str) -> PathBuf {
    let path = dir.join("chaperone.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
id = "crash-gw"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 5
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.app]
target = "db"
password = "app-secret"
plugin = "mysql_native_password"
[archive]
store = "{archive}"
spool_dir = "{spool}"
segment_max_age_ms = 500
signing_key_file = "{key}"
{extra_archive}
"#,
            archive = dir.join("archive").display(),
            spool = dir.join("spool").display(),
            key = dir.join("signing.key").display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("signing.key"), SIGNING_KEY_HEX).unwrap();
    path
}

fn verify(archive: &Path) -> Output {
    Command::new(BIN)
        .args([
            "verify",
            "--store",
            archive.to_str().unwrap(),
            "--public-key",
            &public_key_of_test_key(),
        ])
        .output()
        .unwrap()
}

fn duckdb(archive: &Path, sql: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, duckdb\nr = sys.argv[1]\nprint(duckdb.sql(sys.argv[2].replace('ARCHIVE', r)).fetchall())",
            archive.to_str().unwrap(),
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Adds the admin endpoint (metrics) to a config written by [`write_config`].
fn with_admin(config: &Path, admin_port: u16) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "[gateway]\n",
        &format!("[gateway]\nadmin_listen = \"127.0.0.1:{admin_port}\"\n"),
    );
    std::fs::write(config, text).unwrap();
}

/// GET /metrics on the admin endpoint.
fn scrape(admin_port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

/// The value of one sample (`name value`) in a scrape.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in the scrape:\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

fn number(text: &str) -> u64 {
    text.trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or_else(|_| panic!("a number in {text:?}"))
}

#[test]
fn sigkill_during_sysbench_loses_nothing_forwarded() {
    let db = "chp_rec_crash";
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"
    ));
    let prepare = Command::new("sysbench")
        .args([
            "oltp_insert",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            "--mysql-port=3306",
            "--mysql-user=root",
            &format!("--mysql-db={db}"),
            "--tables=1",
            "--table-size=100",
            "prepare",
        ])
        .output()
        .unwrap();
    assert!(
        prepare.status.success(),
        "{}",
        String::from_utf8_lossy(&prepare.stderr)
    );
    let before = number(&root_sql(&format!("SELECT count(*) FROM {db}.sbtest1")));

    let dir = Dir::new("crash");
    let port = free_port();
    let config = write_config(&dir.0, port, "");
    let gateway = serve(&config, &dir.0.join("serve1.log"), &[port]);
    let load = Command::new("sysbench")
        .args([
            "oltp_insert",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            "--mysql-password=app-secret",
            &format!("--mysql-db={db}"),
            "--mysql-ssl=off",
            "--db-ps-mode=disable",
            "--tables=1",
            "--table-size=100",
            "--threads=4",
            "--time=30",
            "run",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // SIGKILL: no chance to flush anything.
    let mut gateway = gateway;
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let mut load = load;
    let _ = load.wait();
    let after = number(&root_sql(&format!("SELECT count(*) FROM {db}.sbtest1")));
    let executed = after - before;
    assert!(
        executed > 50,
        "sysbench ran through the gateway: {executed} inserts"
    );

    // Restart: the spool is recovered, sealed and uploaded; then a clean stop.
    let gateway = serve(&config, &dir.0.join("serve2.log"), &[port]);
    terminate(gateway);
    let log2 = std::fs::read_to_string(dir.0.join("serve2.log")).unwrap();
    assert!(log2.contains("recovering spool log"), "{log2}");

    let archive = dir.0.join("archive");
    let out = verify(&archive);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify after SIGKILL:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every insert the database executed was recorded before it was forwarded.
    let recorded = number(&duckdb(
        &archive,
        "SELECT count(*) FROM read_parquet('ARCHIVE/v1/statements/*/*/*.parquet') WHERE sql LIKE 'INSERT%'",
    ));
    assert!(
        recorded >= executed,
        "{recorded} INSERTs recorded, {executed} executed"
    );
    // Sessions cut by the kill are ended, not left open.
    let ends = duckdb(
        &archive,
        "SELECT count(*) FILTER (WHERE event = 'start'), count(*) FILTER (WHERE event = 'end'), count(*) FILTER (WHERE end_reason = 'gateway_stopped') FROM read_parquet('ARCHIVE/v1/sessions/*/*/*.parquet')",
    );
    let parts: Vec<u64> = ends
        .trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')')
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert_eq!(
        parts[0], parts[1],
        "every started session has an end row: {ends}"
    );
    assert!(parts[2] >= 1, "{ends}");
    root_sql(&format!("DROP DATABASE {db}"));
}

#[test]
fn a_full_spool_refuses_statements_and_nothing_runs_unrecorded() {
    let db = "chp_rec_full";
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; CREATE TABLE {db}.t (v INT PRIMARY KEY, pad TEXT)"
    ));
    let dir = Dir::new("full");
    let port = free_port();
    // An S3 store nobody listens on: uploads fail, the spool fills. The spool's
    // chain state says "new chain", so the gateway starts without the store.
    let dead = free_port();
    let config = write_config(
        &dir.0,
        port,
        &format!(
            "spool_limit_bytes = 65536\nsegment_max_bytes = 16384\nstore_options = {{ aws_endpoint = \"http://127.0.0.1:{dead}\", aws_allow_http = \"true\", aws_access_key_id = \"x\", aws_secret_access_key = \"x\", aws_region = \"us-east-1\" }}"
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("store = \"{}\"", dir.0.join("archive").display()),
        "store = \"s3://nowhere/audit\"",
    );
    std::fs::write(&config, text).unwrap();
    let admin = free_port();
    with_admin(&config, admin);
    std::fs::create_dir_all(dir.0.join("spool")).unwrap();
    std::fs::write(
        dir.0.join("spool/state.json"),
        r#"{"last_segment": 0, "last_manifest_sha256": null}"#,
    )
    .unwrap();
    let gateway = serve(&config, &dir.0.join("serve.log"), &[port, admin]);
    let mut refused_at = None;
    let mut message = String::new();
    for v in 0..3000 {
        let out = Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uapp",
                "-papp-secret",
                "--skip-ssl",
                db,
                "-e",
                &format!("INSERT INTO t VALUES ({v}, '{}')", "x".repeat(2000)),
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            refused_at = Some(v);
            message = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
    }
    // The store's client retries before an upload counts as failed: wait for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(admin);
        if metric(&text, "chaperone_archive_upload_failures_total") >= 1.0
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    terminate(gateway);
    let v = refused_at.expect("the spool filled up and statements were refused");
    // The metrics say why: uploads failing, the spool past its limit, refusals.
    assert!(
        metric(&text, "chaperone_archive_requests_refused_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_upload_failures_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_upload_lag_seconds") > 0.0,
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_spool_bytes")
            >= metric(&text, "chaperone_archive_spool_limit_bytes"),
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_spool_sealed_segments") >= 1.0,
        "{text}"
    );
    assert!(
        message.contains("cannot be recorded") && message.contains("archive spool is full"),
        "a clear error: {message}"
    );
    // The refused INSERT did not run; every earlier one did.
    let present = number(&root_sql(&format!(
        "SELECT count(*) FROM {db}.t WHERE v = {v}"
    )));
    assert_eq!(present, 0, "a refused statement was executed");
    let rows = number(&root_sql(&format!("SELECT count(*) FROM {db}.t")));
    assert_eq!(rows, v as u64);
    root_sql(&format!("DROP DATABASE {db}"));
}

#[test]
fn recorder_metrics_are_scraped_after_real_traffic() {
    let db = "chp_rec_metrics";
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; CREATE TABLE {db}.t (v INT PRIMARY KEY)"
    ));
    let dir = Dir::new("metrics");
    let port = free_port();
    let admin = free_port();
    let config = write_config(&dir.0, port, "");
    with_admin(&config, admin);
    let gateway = serve(&config, &dir.0.join("serve.log"), &[port, admin]);
    let statements = 20;
    let script: String = (0..statements)
        .map(|v| format!("INSERT INTO t VALUES ({v}); SELECT v FROM t WHERE v = {v};\n"))
        .collect();
    let out = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-uapp",
            "-papp-secret",
            "--skip-ssl",
            db,
            "-e",
            &script,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Segments are sealed every 500 ms (segment_max_age_ms): wait for one to be
    // uploaded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(admin);
        if metric(&text, "chaperone_archive_segments_uploaded_total") >= 1.0
            && metric(&text, "chaperone_archive_spool_sealed_segments") == 0.0
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no segment uploaded:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    terminate(gateway);
    // Each statement of the script, plus the client's own (e.g. SELECT @@version_comment).
    let recorded = metric(&text, "chaperone_archive_statements_recorded_total");
    assert!(recorded >= 2.0 * statements as f64, "{text}");
    // A request and at least one response frame per statement.
    assert!(
        metric(&text, "chaperone_archive_frames_recorded_total") >= 2.0 * recorded,
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_segments_sealed_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_spooled_bytes_total") > 0.0,
        "{text}"
    );
    // Group commits ran (fsync_interval_ms), and log rotations fsync too.
    assert!(
        metric(&text, "chaperone_archive_fsyncs_total") >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "chaperone_archive_requests_refused_total"),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "chaperone_archive_upload_failures_total"),
        0.0,
        "{text}"
    );
    // The log being written is always there.
    assert!(
        metric(&text, "chaperone_archive_spool_log_files") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "chaperone_archive_spool_bytes") > 0.0,
        "{text}"
    );
    // The gateway's own metrics are still there beside them.
    assert!(
        metric(&text, "chaperone_connections_total") >= 1.0,
        "{text}"
    );
    root_sql(&format!("DROP DATABASE {db}"));
}
