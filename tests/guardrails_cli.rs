//! Guardrails with the real `chaperone` binary: `chaperone serve` holds a
//! statement, `chaperone approvals list | show | approve | deny` decide it; the
//! gateway process is killed while a request is pending and started again on
//! the same approvals directory, where the request is still pending, is
//! approved from the CLI, and the agent's retry runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;
const ALICE: &str = "alice-cli-token-0123456789";
const BOB: &str = "bob-cli-token-0123456789ab";
const DB: &str = "chp_gr_cli";

fn config(dir: &Path, port: u16, api_port: u16) -> PathBuf {
    let path = dir.join("chaperone.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
id = "guardrails-cli"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 2
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.migrator]
target = "db"
password = "migrator-pw"
policy = "migrations"
[api]
listen = "127.0.0.1:{api_port}"
[policies.migrations]
classes = ["read", "write", "transaction", "session"]
databases = ["{DB}"]
[[policies.migrations.approve]]
name = "ddl"
statements = ["drop", "alter", "truncate"]
[policies.migrations.approval]
timeout_secs = 60
[approvals]
store = "{store}"
poll_interval_ms = 100
[approvals.approvers.alice]
token = "{ALICE}"
[approvals.approvers.bob]
token = "{BOB}"
"#,
            store = dir.join("approvals").display(),
        ),
    )
    .unwrap();
    path
}

/// `mariadb -e SQL` as the migrator, in the background.
fn agent(port: u16, sql: &str) -> std::thread::JoinHandle<Output> {
    let sql = sql.to_string();
    std::thread::spawn(move || {
        Command::new("mariadb")
            .args([
                "--protocol=TCP",
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-umigrator",
                "-pmigrator-pw",
                &format!("-D{DB}"),
                "-e",
                &sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("mariadb client")
    })
}

/// `chaperone approvals ARGS` as `token`.
fn approvals(api_port: u16, token: &str, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("approvals")
        .args(args)
        .env("CHAPERONE_API_URL", format!("http://127.0.0.1:{api_port}"))
        .env("CHAPERONE_APPROVER_TOKEN", token)
        .output()
        .expect("chaperone approvals runs");
    assert!(
        out.status.success(),
        "chaperone approvals {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The id of the pending request for `sql`, once there is one.
fn pending(api_port: u16, sql: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = approvals(api_port, ALICE, &["list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(v) = list.as_array().unwrap().iter().find(|v| v["sql"] == sql) {
            return v["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no pending request for {sql}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn table_exists(table: &str) -> bool {
    root_sql(&format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{DB}' AND table_name = '{table}'"
    ))
    .trim()
        == "1"
}

#[test]
fn held_statements_decided_from_the_cli_and_a_pending_request_survives_a_crash() {
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; \
         CREATE TABLE {DB}.t1 (id INT PRIMARY KEY); CREATE TABLE {DB}.t2 (id INT PRIMARY KEY); \
         CREATE TABLE {DB}.t3 (id INT PRIMARY KEY)"
    ));
    let dir = Dir::new("gr_cli");
    let (port, api_port) = (free_port(), free_port());
    let cfg = config(&dir.0, port, api_port);
    let mut gw = serve(&cfg, &dir.0.join("serve.log"), &[port, api_port]);

    // Held, listed and shown from the CLI, approved from the CLI: it runs.
    let client = agent(port, "DROP TABLE t2");
    let id = pending(api_port, "DROP TABLE t2");
    let list = String::from_utf8(approvals(api_port, BOB, &["list"]).stdout).unwrap();
    assert!(
        list.contains(&id) && list.contains("DROP TABLE t2") && list.contains("pending"),
        "{list}"
    );
    let show = String::from_utf8(approvals(api_port, BOB, &["show", &id]).stdout).unwrap();
    assert!(
        show.contains("migrations / ddl") && show.contains("migrator"),
        "{show}"
    );
    assert!(table_exists("t2"));
    let out = approvals(api_port, ALICE, &["approve", &id, "--comment", "ok"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("approved") || said.contains("used"), "{said}");
    let out = client.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!table_exists("t2"));

    // Denied from the CLI: the agent gets the reason.
    let client = agent(port, "DROP TABLE t3");
    let id = pending(api_port, "DROP TABLE t3");
    approvals(api_port, BOB, &["deny", &id, "--reason", "wrong table"]);
    let out = client.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wrong table") && err.contains(&id),
        "{err}"
    );
    assert!(table_exists("t3"));

    // The gateway is killed while a statement waits; the request survives.
    let client = agent(port, "ALTER TABLE t1 ADD COLUMN c INT");
    let id = pending(api_port, "ALTER TABLE t1 ADD COLUMN c INT");
    gw.kill().unwrap();
    gw.wait().unwrap();
    let out = client.join().unwrap();
    assert!(
        !out.status.success(),
        "the agent's session died with the gateway"
    );
    let mut gw = serve(&cfg, &dir.0.join("serve2.log"), &[port, api_port]);
    assert_eq!(pending(api_port, "ALTER TABLE t1 ADD COLUMN c INT"), id);
    approvals(api_port, ALICE, &["approve", &id]);
    let show = String::from_utf8(approvals(api_port, BOB, &["show", &id]).stdout).unwrap();
    assert!(show.contains("approved"), "{show}");
    // The agent retries the identical statement: it runs, once.
    let out = agent(port, "ALTER TABLE t1 ADD COLUMN c INT")
        .join()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        root_sql(&format!(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = '{DB}' AND table_name = 't1' AND column_name = 'c'"
        ))
        .trim(),
        "1"
    );
    let show = String::from_utf8(approvals(api_port, BOB, &["show", &id]).stdout).unwrap();
    assert!(show.contains("used"), "{show}");
    gw.kill().unwrap();
    gw.wait().unwrap();
    root_sql(&format!("DROP DATABASE IF EXISTS {DB}"));
}
