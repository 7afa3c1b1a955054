//! `chaperone replay` and `chaperone diff` over sessions recorded by a real
//! `chaperone serve` in front of MariaDB: a migration script (plain SQL through
//! the `mariadb` CLI) run twice with a change between the runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;
const DB: &str = "chp_rep_src";

/// The gateway config of these tests; `extra`: more TOML at the end.
fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
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
{extra}
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
    let config = write_config(&dir.0, port, "");
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

/// The masking of the replay tests: e-mails hashed by rule (keyed: the same
/// key must be in the replay's environment), detectors on every other value.
const MASKING: &str = r#"
[users.analyst]
target = "db"
password = "analyst-secret"
plugin = "mysql_native_password"
[masking]
key_env = "CHP_REP_MASK_KEY"
[[masking.roles."*".rules]]
name = "customer-email"
table = "customers"
column = "email"
strategy = "hash"
"#;
const MASK_KEY: &str = "chp-replay-masking-key-0123456789";
const MASK_SRC: &str = "chp_rep_mask_src";
const MASK_TGT: &str = "chp_rep_mask_tgt";

fn seed_customers(db: &str) {
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; \
         CREATE TABLE {db}.customers (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100), note TEXT); \
         INSERT INTO {db}.customers VALUES \
           (1, 'Ana Lopez', 'ana.lopez@example.com', 'call +44 20 7946 0958 before noon'), \
           (2, 'Ben Okafor', 'ben.okafor@example.org', 'paid with 4111 1111 1111 1111'), \
           (3, 'Chen Wei', 'chen.wei@example.net', 'no contact preferences')"
    ));
}

/// A session recorded masked (text protocol through the `mariadb` CLI, binary
/// through mysql-connector's prepared statements) replayed `--against` an
/// unmasked copy of the same data: with the gateway's config the replay masks
/// as the recording did and the result hashes match; a changed protected value
/// diverges; without the config, masked statements fall back to row counts.
#[test]
fn against_masks_like_the_recorded_role_before_hashing() {
    let dir = Dir::new("mask");
    let port = free_port();
    let config = write_config(&dir.0, port, MASKING);
    let config_s = config.to_str().unwrap().to_string();
    let archive_s = dir.0.join("archive").to_str().unwrap().to_string();
    seed_customers(MASK_SRC);
    let gw = Command::new(BIN)
        .args(["serve", "--config", &config_s])
        .env("CHP_REP_MASK_KEY", MASK_KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("gw.log")).unwrap())
        .spawn()
        .expect("chaperone serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Text protocol: a rule (hash), lineage through CONCAT, detectors in `note`.
    let cli = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-uanalyst",
            "-panalyst-secret",
            MASK_SRC,
            "-e",
            "SELECT id, name, email FROM customers ORDER BY id; \
             SELECT CONCAT(name, ' <', email, '>') AS contact FROM customers ORDER BY id; \
             SELECT id, note FROM customers ORDER BY id;",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(cli.status.success(), "{}", text(&cli));
    assert!(!shown.contains("ana.lopez@example.com"), "masked: {shown}");
    assert!(!shown.contains("4111 1111 1111 1111"), "masked: {shown}");
    // Binary protocol: COM_STMT_PREPARE / EXECUTE.
    let items = dir.0.join("prepared.json");
    std::fs::write(
        &items,
        r#"[{"name": "by id", "via": "prepared", "sql": "SELECT email, note FROM customers WHERE id > ? ORDER BY id", "params": [0]}]"#,
    )
    .unwrap();
    let py = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/guardrails_catalogue.py"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--user",
            "analyst",
            "--password",
            "analyst-secret",
            "--database",
            MASK_SRC,
            items.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    assert!(
        String::from_utf8_lossy(&py.stdout).contains("\"ok\": true"),
        "{}",
        text(&py)
    );
    terminate(gw);

    let out = Command::new(BIN)
        .args([
            "query",
            "--archive",
            &archive_s,
            "--format",
            "csv",
            "SELECT DISTINCT session_id FROM sessions WHERE client_user = 'analyst' ORDER BY session_id",
        ])
        .output()
        .unwrap();
    let sessions: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(sessions.len(), 2, "{}", text(&out));

    // An unmasked staging copy of the same data.
    seed_customers(MASK_TGT);
    let dsn = format!("mysql://root@127.0.0.1:3306/{MASK_TGT}");
    let replay = |session: &str, with_config: bool, key: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args([
            "replay",
            session,
            "--archive",
            &archive_s,
            "--against",
            &dsn,
        ]);
        if with_config {
            // The copy is on the gateway target's server: allowed explicitly.
            c.args(["--config", &config_s, "--i-know"]);
        }
        c.env_remove("CHP_REP_MASK_KEY");
        if let Some(k) = key {
            c.env("CHP_REP_MASK_KEY", k);
        }
        c.output().unwrap()
    };
    for (session, masked) in [(&sessions[0], 3), (&sessions[1], 1)] {
        let out = replay(session, true, Some(MASK_KEY));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{t}");
        assert!(t.contains(" 0 diverged"), "{t}");
        assert!(
            t.contains(&format!(
                "{masked} statement(s) recorded masked: compared by result hash after masking with the profile \"*\" (recorded role: none)"
            )),
            "{t}"
        );
        // Without the gateway's config: row counts only, and said so.
        let out = replay(session, false, None);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{t}");
        assert!(t.contains("compared by row count only"), "{t}");
    }
    // Another key hashes differently: every e-mail statement diverges.
    let out = replay(&sessions[0], true, Some("another-key-0123456789abcdef"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // A changed protected value diverges, though neither side shows it.
    root_sql(&format!(
        "UPDATE {MASK_TGT}.customers SET email = 'ana@changed.example' WHERE id = 1"
    ));
    let out = replay(&sessions[0], true, Some(MASK_KEY));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let first = t
        .lines()
        .find(|l| l.contains("FIRST DIVERGENCE"))
        .unwrap_or("");
    assert!(
        first.contains("SELECT id, name, email FROM customers"),
        "{t}"
    );
    assert!(t.contains("result hash:"), "{t}");
    assert!(!t.contains("ana@changed.example"), "{t}");
    // The config needs its key: a clear error.
    let out = replay(&sessions[0], true, None);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("CHP_REP_MASK_KEY"), "{}", text(&out));

    root_sql(&format!(
        "DROP DATABASE IF EXISTS {MASK_SRC}; DROP DATABASE IF EXISTS {MASK_TGT}"
    ));
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
