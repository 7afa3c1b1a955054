//! `chaperone replay` and `chaperone diff` over sessions recorded by a real
//! `chaperone serve` in front of MariaDB: a migration script (plain SQL through
//! the `mariadb` CLI) run twice with a change between the runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;
const DB: &str = "chp_rep_src";

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("chaperone.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
id = "replay-gw"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 5
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.migrator]
target = "db"
password = "migrator-secret"
plugin = "mysql_native_password"
[users.sleeper]
target = "db"
password = "sleeper-secret"
plugin = "mysql_native_password"
[archive]
store = "{archive}"
spool_dir = "{spool}"
segment_max_age_ms = 300
signing_key_file = "{key}"
payload_cap_bytes = 3000
"#,
            archive = dir.join("archive").display(),
            spool = dir.join("spool").display(),
            key = dir.join("signing.key").display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("signing.key"), "22".repeat(32)).unwrap();
    path
}

/// The migration, run 1 and run 2 (`changed`: the UPDATE touches another row
/// and a SELECT is added).
fn migration(changed: bool) -> String {
    let update = if changed {
        "UPDATE items SET price = price * 2 WHERE id = 1;\nSELECT name FROM items WHERE id = 2;"
    } else {
        "UPDATE items SET price = price * 2 WHERE id = 2;"
    };
    format!(
        "CREATE TABLE IF NOT EXISTS items (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO items VALUES (1, 'apple', 1.50), (2, 'pear', 2.25);
SELECT id, name, price FROM items ORDER BY id;
{update}
SELECT count(*) AS n, sum(price) AS total FROM items;
SELECT REPEAT('x', 5000) AS wide;
INSERT INTO items VALUES (1, 'duplicate', 0);
SELECT id FROM items WHERE id > 100;
"
    )
}

fn run_migration(port: u16, sql: &str) {
    run_as(port, "migrator", sql)
}

fn run_as(port: u16, user: &str, sql: &str) {
    let mut child = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{port}"),
            &format!("-u{user}"),
            &format!("-p{user}-secret"),
            "--force",
            DB,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    child.wait().unwrap();
}

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_pane(session: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pane = tmux(&["capture-pane", "-p", "-t", session]);
        if pane.contains(needle) {
            return pane;
        }
        assert!(Instant::now() < deadline, "{needle:?} never shown:\n{pane}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replay_diff_and_against_over_recorded_migrations() {
    let dir = Dir::new("e2e");
    let port = free_port();
    let config = write_config(&dir.0, port);
    let archive = dir.0.join("archive");
    let archive_s = archive.to_str().unwrap().to_string();
    let gw = serve(&config, &dir.0.join("gw.log"), &[port]);
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}"
    ));
    run_migration(port, &migration(false));
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}"
    ));
    run_migration(port, &migration(true));
    run_as(port, "sleeper", &"SELECT SLEEP(0.4);\n".repeat(8));
    terminate(gw);

    // diff --agent finds the two runs; exactly the changed statements differ.
    let out = chaperone(&[
        "diff",
        "--agent",
        "migrator",
        "--last",
        "2",
        "--archive",
        &archive_s,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (a, b) = (
        d["session_a"].as_str().unwrap().to_string(),
        d["session_b"].as_str().unwrap().to_string(),
    );
    let summary = &d["summary"];
    assert_eq!(summary["only_a"], 0, "{d}");
    assert_eq!(summary["only_b"], 1, "{d}");
    let changed: Vec<&serde_json::Value> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] != "same")
        .collect();
    let labels: Vec<String> = changed
        .iter()
        .map(|e| e["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changed.len(), 3, "{labels:?}");
    assert!(
        labels.iter().any(|l| l.starts_with("UPDATE items")),
        "{labels:?}"
    );
    assert!(
        labels
            .iter()
            .any(|l| l == "SELECT name FROM items WHERE id = 2"),
        "{labels:?}"
    );
    assert!(
        labels.iter().any(|l| l.starts_with("SELECT count(*)")),
        "{labels:?}"
    );
    let text_diff = chaperone(&["diff", &a, &b, "--archive", &archive_s]);
    let t = text(&text_diff);
    assert!(
        t.contains("only in B: SELECT name FROM items WHERE id = 2"),
        "{t}"
    );
    assert!(t.contains("result hash:"), "{t}");
    assert_eq!(
        chaperone(&["diff", &a, &a, "--archive", &archive_s])
            .status
            .code(),
        Some(0)
    );

    // replay --plain tells the story: results decoded from frames, the error, the cap.
    let out = chaperone(&["replay", &a, "--plain", "--archive", &archive_s]);
    let story = text(&out);
    assert!(out.status.success(), "{story}");
    assert!(
        story.contains("SELECT id, name, price FROM items ORDER BY id"),
        "{story}"
    );
    assert!(story.contains("apple") && story.contains("6.00"), "{story}");
    assert!(story.contains("ERROR 1062"), "{story}");
    assert!(story.contains("frames capped"), "{story}");
    let json = chaperone(&["replay", &a, "--json", "--archive", &archive_s]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["error_code"] == 1062));

    // The interactive player in tmux: step, jump to the error, speed, quit.
    let tm = format!("chp_rep_{}", std::process::id());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &tm,
        "-x",
        "200",
        "-y",
        "50",
        &format!("{BIN} replay {a} --archive {archive_s}; echo PLAYER-EXITED-$?; sleep 30"),
    ]);
    wait_pane(&tm, "timeline");
    wait_pane(&tm, "#0 of");
    tmux(&["send-keys", "-t", &tm, "n"]);
    wait_pane(&tm, "#1 of");
    tmux(&["send-keys", "-t", &tm, "e"]);
    let pane = wait_pane(&tm, "ERROR 1062");
    assert!(pane.contains("error at #"), "{pane}");
    tmux(&["send-keys", "-t", &tm, "+"]);
    wait_pane(&tm, "speed 2x");
    tmux(&["send-keys", "-t", &tm, "/", "REPEAT", "Enter"]);
    wait_pane(&tm, "found \"REPEAT\"");
    tmux(&["send-keys", "-t", &tm, "q"]);
    wait_pane(&tm, "PLAYER-EXITED-0");
    tmux(&["kill-session", "-t", &tm]);

    // --against a copy restored to the pre-migration state: identical.
    root_sql("DROP DATABASE IF EXISTS chp_rep_tgt; CREATE DATABASE chp_rep_tgt");
    let out = chaperone(&[
        "replay",
        &a,
        "--archive",
        &archive_s,
        "--against",
        "mysql://root@127.0.0.1:3306/chp_rep_tgt",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains(" 0 diverged"), "{t}");
    // Refused: the target is the gateway's own.
    let out = chaperone(&[
        "replay",
        &a,
        "--archive",
        &archive_s,
        "--config",
        config.to_str().unwrap(),
        "--against",
        "mysql://root@localhost:3306/chp_rep_tgt",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("--i-know"), "{}", text(&out));
    // --rollback cannot undo DDL: said before anything runs.
    let out = chaperone(&[
        "replay",
        &a,
        "--archive",
        &archive_s,
        "--rollback",
        "--against",
        "mysql://root@127.0.0.1:3306/chp_rep_tgt",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("commits implicitly"), "{}", text(&out));
    // A different schema: diverges at the CREATE TABLE (it exists: warning), and later.
    root_sql(
        "DROP DATABASE IF EXISTS chp_rep_tgt; CREATE DATABASE chp_rep_tgt; \
              CREATE TABLE chp_rep_tgt.items (id INT PRIMARY KEY, name VARCHAR(50), price INT)",
    );
    let out = chaperone(&[
        "replay",
        &a,
        "--archive",
        &archive_s,
        "--against",
        "mysql://root@127.0.0.1:3306/chp_rep_tgt",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let first = t
        .lines()
        .find(|l| l.contains("FIRST DIVERGENCE"))
        .unwrap_or("");
    assert!(first.contains("CREATE TABLE IF NOT EXISTS items"), "{t}");
    // Read-only skips writes (and so the CREATE): first divergence is the SELECT.
    let out = chaperone(&[
        "replay",
        &a,
        "--archive",
        &archive_s,
        "--read-only",
        "--against",
        "mysql://root@127.0.0.1:3306/chp_rep_tgt",
    ]);
    let t = text(&out);
    assert!(t.contains("skipped (--read-only, class write)"), "{t}");
    root_sql("DROP DATABASE IF EXISTS chp_rep_tgt");

    // Bad input.
    let out = chaperone(&[
        "replay",
        "no-such-session",
        "--plain",
        "--archive",
        &archive_s,
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("not in the archive"), "{}", text(&out));
    let out = chaperone(&[
        "replay",
        &a,
        "--archive",
        &archive_s,
        "--against",
        &format!("mysql://root@127.0.0.1:{}/x", free_port()),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("cannot log in"), "{}", text(&out));
    // Ctrl-C during --against --rollback: stops, says where, rolls back, exit 1.
    let sleeper = sleeper_session(&archive_s);
    let dsn = format!("mysql://root@127.0.0.1:3306/{DB}");
    let child = Command::new(BIN)
        .args([
            "replay",
            &sleeper,
            "--archive",
            &archive_s,
            "--rollback",
            "--against",
            &dsn,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the replay is executing (a SLEEP of the recorded session
    // is running on the server), whatever the machine's load.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = Command::new("mariadb")
            .args(["-h127.0.0.1", "-P3306", "-uroot", "-N", "-e"])
            .arg("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
            .unwrap_or(false);
        if running || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("stopped early: interrupted at #"), "{t}");
    assert!(t.contains("rolled back"), "{t}");
    // A damaged statements file: named.
    let statements = walk(&archive.join("v1/statements"));
    let victim = &statements[0];
    let len = std::fs::metadata(victim).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let out = chaperone(&["replay", &a, "--plain", "--archive", &archive_s]);
    assert_ne!(out.status.code(), Some(0));
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(text(&out).contains(name), "{}", text(&out));

    root_sql(&format!("DROP DATABASE IF EXISTS {DB}"));
}

fn sleeper_session(archive: &str) -> String {
    // The sleeper has one session: diff --agent says so, naming none; find it in the JSON story.
    let out = chaperone(&["diff", "--agent", "sleeper", "--archive", archive]);
    let t = text(&out);
    assert!(t.contains("diff needs two"), "{t}");
    let out = Command::new(BIN)
        .args([
            "query",
            "--archive",
            archive,
            "--format",
            "csv",
            "SELECT DISTINCT session_id FROM sessions WHERE client_user = 'sleeper'",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}
