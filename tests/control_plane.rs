//! The control plane with the real binary: `chaperone serve` reloads its
//! policies on SIGHUP while a PyMySQL connection stays open — a statement
//! allowed before is refused after, on the same connection; a config that does
//! not validate is rejected with a log line saying why and the previous one
//! stays in force; both changes are in the archive (`chaperone query`), and
//! `chaperone verify` passes.

mod common;

use std::path::Path;

use common::*;

const DB: &str = "chp_cp_reload";

fn write_config(dir: &Path, port: u16, classes: &str) -> std::path::PathBuf {
    let path = dir.join("chaperone.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
id = "cp-gw"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 2
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.app]
target = "db"
password = "app-secret"
plugin = "mysql_native_password"
policy = "agent"
[policies.agent]
classes = {classes}
databases = ["{DB}"]
[archive]
store = "{archive}"
spool_dir = "{spool}"
segment_max_age_ms = 300
signing_key_file = "{key}"
"#,
            archive = dir.join("archive").display(),
            spool = dir.join("spool").display(),
            key = dir.join("signing.key").display(),
        ),
    )
    .unwrap();
    path
}

fn log_has(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
}

#[test]
fn sighup_tightens_the_policy_of_an_open_session_and_a_bad_config_changes_nothing() {
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; CREATE TABLE {DB}.t (v INT PRIMARY KEY)"
    ));
    let dir = Dir::new("cp_reload");
    std::fs::write(dir.0.join("signing.key"), SIGNING_KEY_HEX).unwrap();
    let port = free_port();
    let config = write_config(&dir.0, port, r#"["read", "write", "session"]"#);
    let log = dir.0.join("serve.log");
    let gateway = serve(&config, &log, &[port]);

    let mut conn = OpenConnection::open(port, "app", "app-secret", DB);
    assert_eq!(conn.run("INSERT INTO t VALUES (1)"), "OK 0");

    // Tightened: writes are no longer in the policy's classes.
    write_config(&dir.0, port, r#"["read", "session"]"#);
    signal(&gateway, "HUP");
    eventually(20, "the reload in the log", || {
        log_has(&log, "config reloaded")
    });
    let denied = conn.run("INSERT INTO t VALUES (2)");
    assert!(
        denied.starts_with("ERR 1290") && denied.contains("agent"),
        "the open session is judged by the new policy: {denied}"
    );
    assert_eq!(
        conn.run("SELECT v FROM t"),
        "OK 1",
        "the session was not dropped"
    );

    // Not a statement class: rejected, the tightened policy stays in force.
    write_config(&dir.0, port, r#"["read", "sesion"]"#);
    signal(&gateway, "HUP");
    eventually(20, "the rejection in the log", || {
        log_has(&log, "config reload rejected")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("config reload rejected"))
        .unwrap();
    assert!(
        line.contains("policies.agent.classes")
            && line.contains("\\\"sesion\\\" is not a statement class")
            || line.contains("\"sesion\" is not a statement class"),
        "the log says why: {line}"
    );
    assert!(conn.run("INSERT INTO t VALUES (3)").starts_with("ERR 1290"));
    assert_eq!(conn.run("SELECT v FROM t"), "OK 1");
    drop(conn);
    terminate(gateway);
    assert_eq!(
        root_sql(&format!("SELECT count(*) FROM {DB}.t")).trim(),
        "1"
    );

    // Both changes are in the archive, attributed and with their diff. (The
    // config file is the rejected one now: the archive is named directly.)
    let archive = dir.0.join("archive");
    let archive = archive.to_str().unwrap();
    let out = chaperone(&[
            "query",
            "--archive",
            archive,
            "--format",
            "json",
            "SELECT subject, auth_method, verdict, verdict_reason, sql FROM statements WHERE command = 'CONFIG_CHANGE' ORDER BY started_at",
        ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = rows
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(
            |l| match serde_json::from_str::<serde_json::Value>(l).unwrap() {
                serde_json::Value::Array(a) => a,
                v => vec![v],
            },
        )
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let applied = &rows[0];
    assert_eq!(applied["verdict"], "applied", "{applied}");
    assert_eq!(applied["auth_method"], "control_plane");
    let who = applied["subject"].as_str().unwrap();
    assert!(
        who.starts_with("sighup from pid ") && who.contains(" uid "),
        "who sent the signal: {who}"
    );
    assert_eq!(
        applied["sql"],
        r#"~ policies.agent.classes: ["read", "write", "session"] -> ["read", "session"]"#
    );
    let rejected = &rows[1];
    assert_eq!(rejected["verdict"], "rejected", "{rejected}");
    assert!(
        rejected["verdict_reason"]
            .as_str()
            .unwrap()
            .contains("is not a statement class"),
        "{rejected}"
    );

    let out = chaperone(&[
        "verify",
        "--store",
        archive,
        "--public-key",
        &public_key_of_test_key(),
    ]);
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    root_sql(&format!("DROP DATABASE {DB}"));
}

/// SIGHUP's default action ends a process. A config-management tool may send
/// its "reload" while the gateway is still starting (config, TLS, archive
/// recovery, listeners): the gateway must catch SIGHUP from its first moments,
/// survive it, and reload once it is up.
#[test]
fn a_sighup_while_starting_does_not_kill_the_gateway() {
    let dir = Dir::new("cp_early_hup");
    let port = free_port();
    let config = write_config(&dir.0, port, r#"["read"]"#);
    std::fs::write(dir.0.join("signing.key"), SIGNING_KEY_HEX).unwrap();
    let log = dir.0.join("gateway.log");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("CHAPERONE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("chaperone serve");
    // Wait until the process catches SIGHUP (bit 0 of SigCgt in /proc), then
    // send it: the listener must not be up yet, or this tests nothing.
    let status = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let caught = text
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & 1 != 0);
        if caught {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chaperone serve never caught SIGHUP"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "SIGHUP was caught only after the gateway listened"
    );
    signal(&child, "HUP");
    // It comes up, serves, and reloaded (nothing changed) once it could.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gateway died of a SIGHUP while starting: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log_has(&log, "a SIGHUP came while the gateway was starting") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none());
    terminate(child);
}
