//! `chaperone ui --archive DIR` over an archive copied away from the gateway
//! that recorded it: `chaperone demo --no-wait` records two token-login agent
//! sessions (claims, a failing statement) and stops; its archive directory is
//! copied elsewhere and the demo's directory removed; the audit UI is then
//! served over the copy alone, checked through the API and in a real browser
//! (`tests/clients/ui-archive.mjs`: claims on the session page, the error
//! message on a failed statement's row, the SQL console in SELECT order with
//! the JSON functions). Screenshots land in `$CARGO_TARGET_TMPDIR/ui-archive/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, Dir};

const BIN: &str = env!("CARGO_BIN_EXE_chaperone");

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(url: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", url]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(url: &str, body: Option<&str>) -> serde_json::Value {
    let (code, text) = curl(url, body);
    assert_eq!(code, 200, "{url}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// `chaperone demo --no-wait` into `dir`: returns when it has stopped.
fn record_demo(dir: &std::path::Path) {
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--no-wait",
            "--dir",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--ui-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chaperone demo");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chaperone demo --no-wait: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chaperone demo --no-wait did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let ok = Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

#[test]
fn the_ui_serves_an_archive_copied_away_from_the_gateway() {
    let scratch = Dir::new("ui_archive");
    let demo = scratch.0.join("demo");
    record_demo(&demo);
    let copy = scratch.0.join("copied-archive");
    copy_dir(&demo.join("archive"), &copy);
    // Nothing of the gateway is left: its config, keys, spool.
    std::fs::remove_dir_all(&demo).unwrap();

    let mut child = Command::new(BIN)
        .args([
            "ui",
            "--archive",
            copy.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chaperone ui");
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .expect("chaperone ui prints its address")
        .unwrap();
    let _ui_process = Reaped(child);
    let ui = first.trim().trim_end_matches('/').to_string();

    let sessions = json(&format!("{ui}/api/sessions?since=30d"), None);
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "both demo sessions: {sessions:?}");
    for s in &sessions {
        assert_eq!(s["role"], "migration-agent", "{s}");
        assert!(!s["end_reason"].is_null(), "{s}");
    }
    let id = sessions[0]["session_id"].as_str().unwrap().to_string();
    let session = json(&format!("{ui}/api/sessions/{id}"), None);
    assert_eq!(
        session["session"]["claims"]["repository"], "acme/shop",
        "{session}"
    );
    // Nulls are written: every statement has every column.
    for st in session["statements"].as_array().unwrap() {
        assert!(st.get("error_message").is_some(), "{st}");
    }
    let failed = session["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| !s["error_code"].is_null())
        .cloned()
        .expect("the demo's failing statement");
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .contains("customer_archive"),
        "{failed}"
    );
    // The result the client saw, from the frames.
    let first_read = session["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rows_returned"].as_i64().unwrap_or(0) > 0)
        .cloned()
        .unwrap();
    let result = json(
        &format!(
            "{ui}/api/sessions/{id}/result?command_index={}",
            first_read["command_index"]
        ),
        None,
    );
    assert!(
        !result["results"][0]["rows"].as_array().unwrap().is_empty(),
        "{result}"
    );
    // SQL in SELECT order, JSON functions, and an unknown function said as such.
    let v = json(
        &format!("{ui}/api/sql"),
        Some(
            r#"{"sql": "SELECT subject, json_get_str(claims, 'repository') AS repository, time FROM sessions WHERE event = 'start'"}"#,
        ),
    );
    assert_eq!(
        v["columns"],
        serde_json::json!(["subject", "repository", "time"])
    );
    assert_eq!(v["rows"][0]["repository"], "acme/shop");
    let (code, text) = curl(
        &format!("{ui}/api/sql"),
        Some(r#"{"sql": "SELECT no_such_function(1)"}"#),
    );
    assert_eq!(code, 400);
    assert!(
        text.contains("unknown function") && !text.contains("refused"),
        "{text}"
    );
    // Exports without a signing key: refused, saying why.
    let (code, text) = curl(&format!("{ui}/api/exports"), Some("{}"));
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("signing key"), "{text}");

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-archive");
    let _ = std::fs::remove_dir_all(&artifacts);
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let args = serde_json::json!({ "ui": ui, "artifacts": artifacts, "session": id });
    let browser = Command::new("timeout")
        .args(["180", "node", "ui-archive.mjs", &args.to_string()])
        .current_dir(clients)
        .output()
        .expect("node runs");
    assert!(
        browser.status.success(),
        "the browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    assert!(std::fs::metadata(artifacts.join("session-claims.png")).is_ok_and(|m| m.len() > 10_000));
}
