//! The audit service's exports, metrics and SQL limits over an archive recorded
//! from real traffic: `chaperone serve` (gateway, recorder, audit API) with the
//! `mariadb` CLI and sysbench as two agents, MariaDB behind it. Exports are read
//! back with pyarrow and DuckDB and counted against the archive itself (DuckDB
//! over the archive's Parquet files); a tampered export is named by
//! `chaperone export verify`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{free_port, root_sql, Dir};

const TOKEN: &str = "chp-export-test-token";
const DB: &str = "chp_ui_export";

struct Service {
    child: Child,
    dir: PathBuf,
    ui: String,
    gateway_port: u16,
    _scratch: Dir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

/// `curl` as the HTTP client: (status, body). `token`: send the bearer token.
fn http(method: &str, url: &str, body: Option<&str>, token: bool) -> (u16, Vec<u8>) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-g",
        "--max-time",
        "120",
        "-X",
        method,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        url,
    ]);
    if token {
        cmd.args(["-H", &format!("authorization: Bearer {TOKEN}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = cmd.output().expect("curl");
    let text = out.stdout;
    let split = text.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&text[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    (code, text[..split].to_vec())
}

fn api(service: &Service, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (code, text) = http(
        method,
        &format!("{}{path}", service.ui),
        body.as_deref(),
        true,
    );
    let value = serde_json::from_slice(&text)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&text).into_owned()));
    (code, value)
}

fn sql(service: &Service, query: &str) -> (u16, Value) {
    api(service, "POST", "/api/sql", Some(json!({ "sql": query })))
}

/// Python with pyarrow and duckdb: the script's printed output.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A count from DuckDB over the archive's own Parquet files (`ARCHIVE` in the
/// query is the archive directory).
fn archive_count(archive: &Path, query: &str) -> u64 {
    python(
        "import sys, duckdb\nprint(duckdb.sql(sys.argv[2].replace('ARCHIVE', sys.argv[1])).fetchall()[0][0])",
        &[archive.to_str().unwrap(), query],
    )
    .parse()
    .unwrap()
}

fn start() -> Service {
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; \
         CREATE TABLE {DB}.orders (id INT PRIMARY KEY, note TEXT); \
         CREATE TABLE {DB}.audit_notes (id INT PRIMARY KEY AUTO_INCREMENT, v TEXT)"
    ));
    let scratch = Dir::new("ui_export");
    let dir = scratch.path().to_path_buf();
    let gateway_port = free_port();
    let ui_port = free_port();
    let ui = format!("127.0.0.1:{ui_port}");
    std::fs::write(dir.join("signing.key"), "22".repeat(32)).unwrap();
    let config = dir.join("chaperone.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "export-gw"
listen = "127.0.0.1:{gateway_port}"
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.orders-bot]
target = "db"
password = "bot-secret"
plugin = "mysql_native_password"
[users.bench-bot]
target = "db"
password = "bench-secret"
plugin = "mysql_native_password"
[archive]
store = "{d}/archive"
spool_dir = "{d}/spool"
segment_max_age_ms = 500
signing_key_file = "{d}/signing.key"
[ui]
listen = "{ui}"
query_timeout_secs = 15
# Room for the exports' joins over sysbench traffic; the memory-hungry query
# below needs gigabytes.
memory_limit_mb = 256
export_dir = "{d}/exports"
[[ui.tokens]]
name = "auditor-ci"
token = "{TOKEN}"
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    let child = common::serve(&config, &dir.join("serve.log"), &[gateway_port, ui_port]);
    Service {
        child,
        dir,
        ui: format!("http://{ui}"),
        gateway_port,
        _scratch: scratch,
    }
}

/// Two agents through the gateway: `orders-bot` with the mariadb CLI (writes
/// and reads of `orders`, one failing statement), `bench-bot` with sysbench
/// (its own tables) and one read of `orders`. Returns how many sessions ran.
fn record_traffic(service: &Service) -> u64 {
    let port = service.gateway_port.to_string();
    let mut script = String::new();
    for i in 0..40 {
        script.push_str(&format!(
            "INSERT INTO orders VALUES ({i}, 'order {i} <script>x</script>');\n"
        ));
    }
    script.push_str("UPDATE orders SET note = 'shipped' WHERE id < 10;\n");
    script.push_str("SELECT id, note FROM orders WHERE id < 5;\n");
    script.push_str("INSERT INTO audit_notes (v) VALUES ('checked');\n");
    script.push_str("SELECT * FROM no_such_table;\n");
    let mariadb = |user: &str, password: &str, input: &str| {
        let mut child = Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{port}"),
                &format!("-u{user}"),
                &format!("-p{password}"),
                "--skip-ssl",
                "--force",
                DB,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("1146"),
            "only the missing table fails: {stderr}"
        );
    };
    mariadb("orders-bot", "bot-secret", &script);
    mariadb(
        "bench-bot",
        "bench-secret",
        "SELECT count(*) FROM orders;\nSELECT * FROM no_such_table;\n",
    );
    let sysbench = |step: &str, user: &str, password: &str, port: &str| {
        let out = Command::new("sysbench")
            .args([
                "oltp_read_write",
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={port}"),
                &format!("--mysql-user={user}"),
                &format!("--mysql-password={password}"),
                &format!("--mysql-db={DB}"),
                "--mysql-ssl=off",
                "--tables=1",
                "--table-size=200",
                "--threads=2",
                "--time=3",
                step,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sysbench {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The tables directly, the load through the gateway.
    sysbench("prepare", "root", "", "3306");
    sysbench("run", "bench-bot", "bench-secret", &port);
    // mariadb x2, sysbench run: 2 threads (+ its own connection check).
    2 + 2
}

/// Waits until every recorded session has its end row in the archive.
fn wait_for_archive(service: &Service, sessions: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, v) = sql(
            service,
            "SELECT count(*) FILTER (WHERE event = 'start') AS starts, \
                    count(*) FILTER (WHERE event = 'end') AS ends FROM sessions",
        );
        if code == 200 {
            let row = &v["rows"][0];
            let (starts, ends) = (row["starts"].as_u64(), row["ends"].as_u64());
            if starts >= Some(sessions) && starts == ends {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the archive did not show {sessions} ended sessions: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_for_export(service: &Service, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, status) = api(service, "GET", &format!("/api/exports/{id}"), None);
        assert_eq!(code, 200, "{status}");
        assert!(status["rows_done"].is_u64() && status["bytes_done"].is_u64());
        match status["state"].as_str() {
            Some("done") => return status,
            Some("running") => {}
            _ => panic!("export {id}: {status}"),
        }
        assert!(Instant::now() < deadline, "export {id} still running");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn chaperone(args: &[&str]) -> (bool, String) {
    let out = common::chaperone(args);
    (out.status.success(), common::text(&out))
}

/// The hex public key of a signing key file.
fn public_key_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let key = chaperone_schemas::manifest::parse_signing_key(&text).unwrap();
    hex::encode(key.verifying_key().as_bytes())
}

/// Two CLI exports of one (absolute) selection: the same files, byte for byte,
/// in every format.
fn same_selection_same_bytes(archive: &Path, key: &str, scratch: &Path) {
    let until =
        chaperone_schemas::time::rfc3339_ns(chaperone_schemas::event::now_ns() + 3_600_000_000_000);
    for format in ["parquet", "csv", "jsonl"] {
        let export = |n: u32| {
            let dir = scratch.join(format!("same-{format}-{n}"));
            let (ok, out) = chaperone(&[
                "export",
                "--archive",
                archive.to_str().unwrap(),
                "--signing-key-file",
                key,
                "--since",
                "2020-01-01",
                "--until",
                &until,
                "--tables",
                "sessions,statements,frames",
                "--format",
                format,
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert!(ok, "{out}");
            let manifest: Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            (dir, manifest)
        };
        let (a, ma) = export(1);
        let (b, mb) = export(2);
        assert_eq!(
            ma["files"], mb["files"],
            "{format}: same files, same hashes"
        );
        assert_eq!(ma["archive_manifests"], mb["archive_manifests"]);
        for f in ma["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            assert_eq!(
                std::fs::read(a.join(name)).unwrap(),
                std::fs::read(b.join(name)).unwrap(),
                "{format}: {name} byte-identical"
            );
        }
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }
}

/// A forger edits `statements.csv` and rewrites its size and hash in the
/// manifest: the files match the manifest, the signature does not.
fn forged_export_fails_on_the_signature(export: &Path, scratch: &Path) {
    let forged = scratch.join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    for entry in std::fs::read_dir(export).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), forged.join(entry.file_name())).unwrap();
    }
    let csv = forged.join("statements.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let edited = text.replacen("orders-bot", "someone-else", 1);
    assert_ne!(text, edited);
    std::fs::write(&csv, &edited).unwrap();
    let manifest_path = forged.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["name"] == "statements.csv" {
            f["sha256"] = json!(sha256_file(&csv));
            f["bytes"] = json!(edited.len());
        }
    }
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let (ok, out) = chaperone(&["export", "verify", forged.to_str().unwrap()]);
    assert!(!ok, "a forged export does not verify: {out}");
    assert!(
        out.contains("SIGNATURE manifest.json: signature does not match"),
        "{out}"
    );
    assert!(
        !out.contains("FILE ALTERED"),
        "the hashes were rewritten: {out}"
    );
    // Dropping the signature does not help either.
    manifest.as_object_mut().unwrap().remove("signature");
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let (ok, out) = chaperone(&["export", "verify", forged.to_str().unwrap()]);
    assert!(!ok && out.contains("not signed"), "{out}");
    let _ = std::fs::remove_dir_all(forged);
}

#[test]
fn exports_metrics_and_sql_limits_over_recorded_traffic() {
    let service = start();
    let sessions = record_traffic(&service);
    wait_for_archive(&service, sessions);
    let archive = service.archive();
    let statements_glob = "read_parquet('ARCHIVE/v1/statements/*/*/*.parquet')";

    // The agent as the archive names it (a gateway password user).
    let (_, agents) = sql(
        &service,
        "SELECT DISTINCT subject FROM statements WHERE subject = 'orders-bot'",
    );
    assert_eq!(agents["rows"].as_array().unwrap().len(), 1, "{agents}");

    // --- Export through the API: orders-bot's statements on `orders` (a bare
    // name, resolved), with their sessions and frames, as Parquet.
    let (code, started) = api(
        &service,
        "POST",
        "/api/exports",
        Some(json!({
            "agent": "orders-bot",
            "table": "orders",
            "since": "1h",
            "tables": ["sessions", "statements", "frames"],
            "format": "parquet"
        })),
    );
    assert_eq!(code, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let status = wait_for_export(&service, &id);
    let expected_statements = archive_count(
        &archive,
        &format!(
            "SELECT count(*) FROM {statements_glob} WHERE subject = 'orders-bot' AND \
             (list_contains(tables_read, '{DB}.orders') OR list_contains(tables_written, '{DB}.orders'))"
        ),
    );
    assert!(expected_statements >= 42, "40 inserts, an update, a select");
    assert!(status["rows_done"].as_u64().unwrap() > expected_statements);
    let download = service.dir.join("download");
    std::fs::create_dir_all(&download).unwrap();
    let files: Vec<String> = status["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .chain(["manifest.json".to_string()])
        .collect();
    assert_eq!(files.len(), 4, "{status}");
    for name in &files {
        let (code, bytes) = http(
            "GET",
            &format!("{}/api/exports/{id}/files/{name}", service.ui),
            None,
            true,
        );
        assert_eq!(code, 200, "{name}");
        std::fs::write(download.join(name), bytes).unwrap();
    }
    // Only listed names are served: no path from the request reaches the disk.
    let (code, _) = http(
        "GET",
        &format!(
            "{}/api/exports/{id}/files/..%2F..%2Fchaperone.toml",
            service.ui
        ),
        None,
        true,
    );
    assert_eq!(code, 404);
    let (ok, report) = chaperone(&["export", "verify", download.to_str().unwrap()]);
    assert!(ok, "the downloaded export verifies: {report}");

    // Read back with pyarrow: the counts are the archive's.
    let counts: Value = serde_json::from_str(&python(
        "import sys, json, pyarrow.parquet as pq\n\
         d = sys.argv[1]\n\
         print(json.dumps({t: pq.read_table(f'{d}/{t}.parquet').num_rows for t in ['sessions','statements','frames']}))",
        &[download.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(counts["statements"], expected_statements);
    let session_rows = archive_count(
        &archive,
        &format!(
            "SELECT count(*) FROM read_parquet('ARCHIVE/v1/sessions/*/*/*.parquet') WHERE session_id IN \
             (SELECT session_id FROM {statements_glob} WHERE subject = 'orders-bot' AND \
              (list_contains(tables_read, '{DB}.orders') OR list_contains(tables_written, '{DB}.orders')))"
        ),
    );
    assert_eq!(counts["sessions"], session_rows, "start and end rows");
    let frame_rows = archive_count(
        &archive,
        &format!(
            "SELECT count(*) FROM read_parquet('ARCHIVE/v1/frames/*/*/*.parquet') f SEMI JOIN \
             (SELECT session_id, command_index FROM {statements_glob} WHERE subject = 'orders-bot' AND \
              (list_contains(tables_read, '{DB}.orders') OR list_contains(tables_written, '{DB}.orders'))) s \
             ON f.session_id = s.session_id AND f.command_index = s.command_index"
        ),
    );
    assert!(frame_rows >= 2 * expected_statements);
    assert_eq!(counts["frames"], frame_rows);

    // The manifest: the selection, the rows, and archive manifests whose
    // hashes are those of the stored objects.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(download.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "chaperone.export");
    assert_eq!(manifest["created_by"], "auditor-ci");
    assert_eq!(manifest["exporter"]["authenticated_by"], "token");
    assert_eq!(manifest["signature"]["algorithm"], "ed25519");
    assert_eq!(manifest["selection"]["agent"], "orders-bot");
    assert_eq!(
        manifest["resolved"]["matched_tables"],
        json!([format!("{DB}.orders")])
    );
    assert_eq!(manifest["rows"]["statements"], expected_statements);
    let sources = manifest["archive_manifests"].as_array().unwrap();
    assert!(!sources.is_empty());
    for m in sources {
        let path = archive.join(m["path"].as_str().unwrap());
        assert_eq!(
            sha256_file(&path),
            m["sha256"].as_str().unwrap(),
            "{path:?}"
        );
        for f in m["files"].as_array().unwrap() {
            let data = archive.join(f["path"].as_str().unwrap());
            assert_eq!(sha256_file(&data), f["sha256"].as_str().unwrap());
        }
    }

    // Bad export requests: a clear refusal.
    let (code, body) = api(
        &service,
        "POST",
        "/api/exports",
        Some(json!({ "tables": ["passwords"] })),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("passwords"));

    // --- Export with the CLI, same engine: every statement of the last hour
    // as CSV (read back with DuckDB), and bench-bot's as JSON lines.
    let key_file = service.dir.join("signing.key");
    let key = key_file.to_str().unwrap();
    let (ok, out) = chaperone(&[
        "export",
        "--archive",
        archive.to_str().unwrap(),
        "--out",
        service.dir.join("cli-unsigned").to_str().unwrap(),
    ]);
    assert!(!ok, "no export without a signing key: {out}");
    assert!(out.contains("--signing-key-file"), "{out}");
    let csv_dir = service.dir.join("cli-csv");
    let (ok, out) = chaperone(&[
        "export",
        "--archive",
        archive.to_str().unwrap(),
        "--signing-key-file",
        key,
        "--since",
        "1h",
        "--format",
        "csv",
        "--out",
        csv_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("statements.csv: "),
        "progress and summary on stderr: {out}"
    );
    let all = archive_count(&archive, &format!("SELECT count(*) FROM {statements_glob}"));
    let csv_rows = archive_count(
        &csv_dir,
        "SELECT count(*) FROM read_csv('ARCHIVE/statements.csv', header = true)",
    );
    assert_eq!(csv_rows, all);
    let json_dir = service.dir.join("cli-jsonl");
    let (ok, out) = chaperone(&[
        "export",
        "--archive",
        archive.to_str().unwrap(),
        "--agent",
        "bench-bot",
        "--signing-key-file",
        key,
        "--format",
        "jsonl",
        "--out",
        json_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let bench = archive_count(
        &archive,
        &format!("SELECT count(*) FROM {statements_glob} WHERE subject = 'bench-bot'"),
    );
    assert!(bench > 100, "sysbench ran through the gateway");
    let json_rows: u64 = python(
        "import sys, pyarrow.json as pj\nprint(pj.read_json(sys.argv[1] + '/statements.jsonl').num_rows)",
        &[json_dir.to_str().unwrap()],
    )
    .parse()
    .unwrap();
    assert_eq!(json_rows, bench);

    // The CLI's exporter: the OS user and host, not "unknown".
    let cli_manifest: Value =
        serde_json::from_slice(&std::fs::read(csv_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(cli_manifest["exporter"]["authenticated_by"], "os user");
    assert!(
        cli_manifest["exporter"]["host"].is_string(),
        "{cli_manifest}"
    );
    assert!(cli_manifest["created_by"].as_str().unwrap().contains('@'));
    assert_ne!(cli_manifest["created_by"], "unknown");

    same_selection_same_bytes(&archive, key, &service.dir);
    forged_export_fails_on_the_signature(&csv_dir, &service.dir);

    // Tampering: an altered byte and a removed file are named.
    let public_key = public_key_of(&key_file);
    let (ok, out) = chaperone(&[
        "export",
        "verify",
        "--public-key",
        &public_key,
        csv_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("a trusted key"), "{out}");
    let stranger = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes(),
    );
    let (ok, out) = chaperone(&[
        "export",
        "verify",
        "--public-key",
        &stranger,
        csv_dir.to_str().unwrap(),
    ]);
    assert!(!ok, "signed by another key: {out}");
    assert!(out.contains("not a trusted key"), "{out}");
    let csv = csv_dir.join("statements.csv");
    let mut bytes = std::fs::read(&csv).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&csv, bytes).unwrap();
    std::fs::remove_file(csv_dir.join("sessions.csv")).unwrap();
    let (ok, out) = chaperone(&["export", "verify", csv_dir.to_str().unwrap()]);
    assert!(!ok, "a tampered export does not verify: {out}");
    assert!(out.contains("FILE ALTERED statements.csv"), "{out}");
    assert!(out.contains("FILE MISSING sessions.csv"), "{out}");

    // Exports are access records: who, what, the resulting hashes.
    let log = service.log();
    assert!(
        log.lines().any(|l| l.contains("export started")
            && l.contains("auditor-ci")
            && l.contains("orders-bot")),
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("export completed") && l.contains(&id) && l.contains("sha256:")));

    // --- SQL limits: memory, time; refusals. The service keeps answering.
    let (code, body) = sql(
        &service,
        "SELECT array_agg(repeat(sql, 20)) FROM statements CROSS JOIN generate_series(1, 200)",
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("memory_limit_mb"),
        "{body}"
    );
    let (code, body) = sql(&service, "SELECT count(*) AS n FROM statements");
    assert_eq!(
        code, 200,
        "the service answers after the memory limit: {body}"
    );
    let (code, body) = sql(
        &service,
        "SELECT count(*) FROM generate_series(1, 1000000000000)",
    );
    assert_eq!(code, 408, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("query_timeout_secs"));
    for bad in [
        "INSERT INTO statements (session_id) VALUES ('x')",
        "CREATE TABLE stolen AS SELECT * FROM statements",
        "CREATE VIEW v AS SELECT 1",
        "DROP VIEW session_list",
        "COPY (SELECT * FROM statements) TO '/tmp/chp_ui_export_exfil.parquet'",
        "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SET datafusion.execution.target_partitions = 1",
    ] {
        let (code, body) = sql(&service, bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("refused"),
            "{bad}: {body}"
        );
    }
    assert!(!Path::new("/tmp/chp_ui_export_exfil.parquet").exists());
    let (code, body) = sql(&service, "SELECT count(*) AS n FROM session_list");
    assert_eq!(code, 200, "the views are intact: {body}");

    // --- Metrics: requests by route and status, SQL outcomes, exports.
    let (code, _) = http("GET", &format!("{}/api/sessions", service.ui), None, false);
    assert_eq!(code, 401);
    let (code, text) = http("GET", &format!("{}/metrics", service.ui), None, true);
    assert_eq!(code, 200);
    let text = String::from_utf8(text).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    assert!(
        value("chaperone_ui_requests_total{method=\"POST\",route=\"/api/exports\",status=\"202\"}")
            >= 1.0
    );
    assert!(value("chaperone_ui_requests_total{method=\"GET\",route=\"/api/exports/{id}/files/{name}\",status=\"200\"}") >= 4.0);
    assert!(
        value("chaperone_ui_requests_total{method=\"GET\",route=\"/api/sessions\",status=\"401\"}")
            >= 1.0
    );
    assert_eq!(
        value("chaperone_ui_sql_queries_total{outcome=\"memory_limited\"}"),
        1.0
    );
    assert_eq!(
        value("chaperone_ui_sql_queries_total{outcome=\"time_limited\"}"),
        1.0
    );
    assert!(value("chaperone_ui_sql_queries_total{outcome=\"refused\"}") >= 10.0);
    assert!(value("chaperone_ui_sql_queries_total{outcome=\"ok\"}") >= 3.0);
    assert_eq!(
        value("chaperone_ui_exports_total{outcome=\"completed\"}"),
        1.0
    );
    assert!(value("chaperone_ui_export_rows_total") >= expected_statements as f64);
    assert!(value("chaperone_ui_request_duration_seconds_count{route=\"/api/sql\"}") >= 10.0);

    let _ = std::fs::remove_dir_all(csv_dir);
    root_sql(&format!("DROP DATABASE {DB}"));
}
