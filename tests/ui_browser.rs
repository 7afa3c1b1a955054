//! The web UI in a real browser, against real parts only: the OIDC provider of
//! the identity tests (`tests/clients/oidc-issuer.mjs`, node oidc-provider),
//! `chaperone serve` with an archive, guardrails, approvals and the UI in one
//! process, MariaDB, the `mariadb` CLI as the agents, and Debian's Chromium
//! driven by playwright-core (`tests/clients/ui-browser.mjs`: what it checks is
//! listed at its top).
//!
//! This test produces the traffic, holds a statement for approval while its
//! client waits, runs the browser script, and then checks what only the
//! server side can see: the waiting client got its result, the approved change
//! is in the database, and every view was logged as an access record with the
//! person who made it. Screenshots land in `$CARGO_TARGET_TMPDIR/ui-browser/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, root_sql, serve, Dir};
const DB: &str = "chp_ui_browser";
const ROBOT: &str = "robot-token-ui-browser-0123456789";
/// Held by the `ddl` rule; its comment is attacker-controlled markup.
const HELD: &str = "ALTER TABLE scratch COMMENT '<img src=x onerror=window.__xss=4>'";

/// Kills and reaps a child process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `mariadb` as a gateway user; `--force` goes on after an error (recorded).
fn agent(port: u16, user: &str, password: &str, sql: &str) -> Output {
    Command::new("mariadb")
        .args([
            "--protocol=TCP",
            "-h127.0.0.1",
            &format!("-P{port}"),
            &format!("-u{user}"),
            &format!("-p{password}"),
            &format!("-D{DB}"),
            "--force",
            "-e",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("mariadb client")
}

/// The provider, told that the UI's callback is `redirect`: (process, issuer).
fn oidc_provider(redirect: &str) -> (Reaped, String) {
    let dir = clients_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (run scripts/setup-test-env.sh)")
            .success();
        assert!(ok, "npm install in tests/clients failed");
    }
    let mut child = Command::new("node")
        .args(["oidc-issuer.mjs", "--port", "0", "--redirect-uri", redirect])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("the provider prints its address")
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    (Reaped(child), v["issuer"].as_str().unwrap().to_string())
}

fn write_config(dir: &Path, port: u16, ui_port: u16, issuer: &str) -> PathBuf {
    let path = dir.join("chaperone.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
id = "ui-browser"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 2
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.app]
target = "db"
password = "app-pw"
[users.migrator]
target = "db"
password = "migrator-pw"
policy = "migrations"
[policies.migrations]
classes = ["read", "write", "transaction", "session"]
databases = ["{DB}"]
[[policies.migrations.approve]]
name = "ddl"
statements = ["drop", "alter", "truncate"]
[policies.migrations.approval]
timeout_secs = 180
[approvals]
store = "{dir}/approvals"
poll_interval_ms = 100
[approvals.approvers.bob]
token = "bob-ui-browser-token-0123456789"
[archive]
store = "{dir}/archive"
spool_dir = "{dir}/spool"
segment_max_age_ms = 300
[ui]
listen = "127.0.0.1:{ui_port}"
tokens = [{{ name = "ci-robot", token = "{ROBOT}", role = "auditor" }}]
[ui.login]
issuer = "{issuer}"
client_id = "chaperone-ui"
client_secret_file = "{dir}/client-secret"
redirect_url = "http://127.0.0.1:{ui_port}/auth/callback"
auditor_groups = ["chaperone-auditors"]
approver_groups = ["chaperone-approvers"]
admin_groups = ["chaperone-admins"]
"#,
            dir = dir.display(),
        ),
    )
    .unwrap();
    path
}

/// `curl`: (status, headers and body).
fn http(url: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "30", "-w", "\n%{http_code}", url]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The sessions of `user`, once `n` of them are in the archive with their ends.
fn sessions_of(ui: &str, user: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, text) = http(
            &format!("{ui}/api/sessions?agent={user}"),
            &[&format!("Authorization: Bearer {ROBOT}")],
        );
        assert_eq!(code, 200, "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let sessions = v["sessions"].as_array().unwrap().clone();
        if sessions.len() >= n && sessions.iter().all(|s| !s["end_reason"].is_null()) {
            return sessions;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sessions of {user} not archived: {sessions:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn people_log_in_replay_sessions_and_approve_a_held_statement_in_the_browser() {
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; \
         CREATE TABLE {DB}.orders (id INT PRIMARY KEY, status VARCHAR(20), note TEXT); \
         INSERT INTO {DB}.orders VALUES (1, 'new', 'first'), (2, 'new', '<script>window.__xss=1</script>'), (3, 'paid', NULL); \
         CREATE TABLE {DB}.scratch (id INT PRIMARY KEY)"
    ));
    let dir = Dir::new("ui_browser");
    std::fs::write(dir.0.join("client-secret"), "ui-secret\n").unwrap();
    let (port, ui_port) = (free_port(), free_port());
    let ui = format!("http://127.0.0.1:{ui_port}");
    let (_provider, issuer) = oidc_provider(&format!("{ui}/auth/callback"));
    let config = write_config(&dir.0, port, ui_port, &issuer);
    let log_path = dir.0.join("gateway.log");
    let _gateway = Reaped(serve(&config, &log_path, &[port, ui_port]));

    // Without credentials: pages go to the login, the API says 401; API
    // tokens keep working for automation.
    let (code, text) = http(&format!("{ui}/sessions/x?offset=5"), &[]);
    assert_eq!(code, 303, "{text}");
    assert!(
        text.to_lowercase()
            .contains("location: /login?next=%2fsessions%2fx%3foffset%3d5"),
        "{text}"
    );
    assert_eq!(http(&format!("{ui}/api/sessions"), &[]).0, 401);
    // A forged cookie is no session.
    let forged = http(
        &format!("{ui}/api/sessions"),
        &["Cookie: chaperone_session=eyJzdWIiOiJ4In0.AAAA"],
    );
    assert_eq!(forged.0, 401);

    // Two runs of the same job, a little different; recorded markup in the SQL
    // text and in a result value.
    let run = |update: &str, extra: &str| {
        let out = agent(
            port,
            "app",
            "app-pw",
            &format!(
                "SELECT * FROM orders WHERE id = 1; {update}; SELECT COUNT(*) FROM orders; \
                 SELECT note FROM orders WHERE id = 2; SELECT '<script>window.__xss=3</script>' AS payload; {extra}"
            ),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("<script>window.__xss=1</script>"),
            "{out:?}"
        );
    };
    run("UPDATE orders SET status = 'shipped' WHERE id = 1", "");
    run(
        "UPDATE orders SET status = 'cancelled' WHERE id = 3",
        "SELECT * FROM no_such_table",
    );
    let sessions = sessions_of(&ui, "app", 2);
    let (b, a) = (
        sessions[0]["session_id"].as_str().unwrap().to_string(),
        sessions[1]["session_id"].as_str().unwrap().to_string(),
    );

    // The migration agent's ALTER waits for an approver; its session is running.
    let held = std::thread::spawn(move || agent(port, "migrator", "migrator-pw", HELD));

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-browser");
    let _ = std::fs::remove_dir_all(&artifacts);
    let args = serde_json::json!({
        "ui": ui, "artifacts": artifacts, "a": a, "b": b, "held": HELD,
    });
    let browser = Command::new("timeout")
        .args(["300", "node", "ui-browser.mjs", &args.to_string()])
        .current_dir(clients_dir())
        .output()
        .expect("node runs");
    assert!(
        browser.status.success(),
        "the browser script failed:\n{}\n{}\n--- gateway log tail ---\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr),
        tail(&log_path)
    );

    // The client that waited got its result: the change is in the database.
    let out = held.join().unwrap();
    assert!(
        out.status.success(),
        "the held ALTER failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        root_sql(&format!(
            "SELECT table_comment FROM information_schema.tables WHERE table_schema = '{DB}' AND table_name = 'scratch'"
        ))
        .trim(),
        "<img src=x onerror=window.__xss=4>"
    );

    // Every view is an access record with the person who made it.
    let log = without_colours(&std::fs::read_to_string(&log_path).unwrap());
    let access = |who: &str, what: &str| {
        log.lines().any(|l| {
            l.contains("audit access")
                && l.contains(&format!("who={who}"))
                && l.contains("web login")
                && l.contains(what)
        })
    };
    assert!(
        access("alice", &format!("/sessions/{a}")),
        "{}",
        tail(&log_path)
    );
    assert!(access("alice", "uri=/sql"));
    assert!(access("bob", "uri=/inbox"));
    assert!(log
        .lines()
        .any(|l| l.contains("approval decided in the web inbox")
            && l.contains("who=bob")
            && l.contains("state=")));
    assert!(log
        .lines()
        .any(|l| l.contains("role refused") && l.contains("who=alice")));

    for name in [
        "login",
        "sessions",
        "search-by-table",
        "session-replay",
        "table-history",
        "diff",
        "sql",
        "inbox",
        "inbox-decided",
    ] {
        let png = artifacts.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
            "screenshot {}",
            png.display()
        );
    }
    root_sql(&format!("DROP DATABASE IF EXISTS {DB}"));
}

/// The log as text: terminal colour sequences (`ESC [ ... m`) removed.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(path: &Path) -> String {
    let text = without_colours(&std::fs::read_to_string(path).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
