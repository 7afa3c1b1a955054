//! The README's first command and the audit service, end to end: `chaperone demo`
//! (a real OIDC-style dev issuer, the gateway, the `mariadb` CLI as the agent,
//! a local archive) and then the audit API and web UI over what it recorded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

struct Demo {
    child: Child,
    dir: PathBuf,
    ui: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl` as the HTTP client: (status, body).
fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        url,
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(method: &str, url: &str, body: Option<&str>) -> serde_json::Value {
    let (code, text) = http(method, url, body);
    assert_eq!(code, 200, "{method} {url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

fn start_demo() -> Demo {
    let dir = std::env::temp_dir().join(format!("chp_demo_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listen = format!("127.0.0.1:{}", free_port());
    let ui = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .args([
            "demo",
            "--dir",
            dir.to_str().unwrap(),
            "--listen",
            &listen,
            "--ui-listen",
            &ui,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chaperone demo");
    let demo = Demo {
        child,
        dir,
        ui: format!("http://{ui}"),
    };
    // The demo is ready when both agent sessions are in the archive.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, body) = http("GET", &format!("{}/api/sessions", demo.ui), None);
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            // Both sessions, with their end rows (sealed a little later).
            if v["sessions"]
                .as_array()
                .is_some_and(|s| s.len() >= 2 && s.iter().all(|s| !s["end_reason"].is_null()))
            {
                return demo;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not record two sessions in 90 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn demo_records_agent_sessions_and_the_audit_service_answers() {
    let demo = start_demo();
    let ui = &demo.ui;

    // Session search: both runs, attributed to the agent's identity.
    let sessions = json(
        "GET",
        &format!("{ui}/api/sessions?agent=repo:acme/shop:ref:refs/heads/main"),
        None,
    );
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s["role"], "migration-agent");
        assert_eq!(s["target"], "shop");
        assert_eq!(s["end_reason"], "client_quit");
    }
    // Newest first: tonight's run (B) then last night's (A).
    let b = sessions[0]["session_id"].as_str().unwrap().to_string();
    let a = sessions[1]["session_id"].as_str().unwrap().to_string();
    assert!(sessions[0]["display_name"]
        .as_str()
        .unwrap()
        .contains("nightly-run-42"));

    // Search by table, and the table's history: reads and writes by the agent.
    let by_table = json(
        "GET",
        &format!("{ui}/api/sessions?table=chaperone_demo.customers"),
        None,
    );
    assert_eq!(by_table["sessions"].as_array().unwrap().len(), 2);
    let history = json("GET", &format!("{ui}/api/tables/customers/history"), None);
    let accesses = history["accesses"].as_array().unwrap();
    assert!(
        accesses.iter().any(|r| r["access"] == "write"),
        "{accesses:?}"
    );
    assert!(accesses.iter().any(|r| r["access"] == "read"));
    assert!(accesses
        .iter()
        .all(|r| r["table_name"] == "chaperone_demo.customers"));

    // A session: identity and the timeline, with the failed statement's error.
    let session = json("GET", &format!("{ui}/api/sessions/{b}"), None);
    assert_eq!(
        session["session"]["subject"],
        "repo:acme/shop:ref:refs/heads/main"
    );
    let statements = session["statements"].as_array().unwrap();
    assert!(
        statements.iter().any(|s| s["error_code"] == 1146),
        "the SELECT from a missing table failed"
    );
    let select = statements
        .iter()
        .find(|s| {
            s["sql"]
                .as_str()
                .is_some_and(|q| q.starts_with("SELECT id, name"))
        })
        .expect("the read of customers");
    assert_eq!(select["rows_returned"], 4);
    let frames = json(
        "GET",
        &format!(
            "{ui}/api/sessions/{b}/frames?command_index={}",
            select["command_index"]
        ),
        None,
    );
    assert!(
        frames["frames"].as_array().unwrap().len() >= 6,
        "request, column count, 5 defs, rows, EOF"
    );

    // Masking: the agent received masked e-mail addresses and card numbers, the
    // archive recorded what it received, and the statement names the rules.
    let masked = select["masked_columns"].to_string();
    assert!(
        masked.contains("customer-email") && masked.contains("customer-card"),
        "{masked}"
    );
    let received: Vec<u8> = frames["frames"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(f["payload_base64"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    let received = String::from_utf8_lossy(&received);
    for raw in ["ada@example.com", "4111111111111111", "5500005555555559"] {
        assert!(
            !received.contains(raw),
            "{raw} reached the agent: {received}"
        );
    }
    assert!(
        received.contains("@example.com"),
        "the e-mail domain is kept"
    );
    assert!(received.contains("1111"), "the card's last four are kept");

    // Guardrails: the backfill without WHERE ran after the DBA's approval.
    let backfill = statements
        .iter()
        .find(|s| {
            s["sql"]
                .as_str()
                .is_some_and(|q| q.starts_with("UPDATE customers"))
        })
        .expect("the backfill");
    assert_eq!(backfill["verdict"], "approved", "{backfill}");
    assert_eq!(backfill["rows_affected"], 4, "{backfill}");

    // Diff: tonight's run added exactly one statement (the index).
    let diff = json("GET", &format!("{ui}/api/diff?a={a}&b={b}"), None);
    assert_eq!(diff["summary"]["only_b"], 1, "{diff}");
    assert_eq!(diff["summary"]["only_a"], 0);
    let only_b: Vec<_> = diff["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "only_b")
        .collect();
    assert!(only_b[0]["label"]
        .as_str()
        .unwrap()
        .contains("CREATE INDEX"));

    // SQL: reads work, writes and file access are refused, the service survives.
    let rows = json(
        "POST",
        &format!("{ui}/api/sql"),
        Some(r#"{"sql": "SELECT subject, COUNT(*) AS n FROM statements GROUP BY subject"}"#),
    );
    assert_eq!(rows["rows"].as_array().unwrap().len(), 1);
    for bad in [
        "DELETE FROM statements",
        "DROP TABLE statements",
        "COPY statements TO '/tmp/chp_exfil.csv'",
        "CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let (code, body) = http(
            "POST",
            &format!("{ui}/api/sql"),
            Some(&serde_json::json!({ "sql": bad }).to_string()),
        );
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    assert!(!std::path::Path::new("/tmp/chp_exfil.csv").exists());
    let (code, _) = http("GET", &format!("{ui}/healthz"), None);
    assert_eq!(code, 200);

    // The web UI: recorded markup is rendered escaped, never executed.
    let (code, page) = http("GET", &format!("{ui}/sessions/{b}"), None);
    assert_eq!(code, 200);
    assert!(
        page.contains("&lt;script&gt;alert("),
        "the recorded INSERT is shown escaped"
    );
    assert!(!page.contains("<script>alert("));
    for path in [
        "/",
        "/tables?name=customers",
        "/sql",
        &format!("/diff?a={a}&b={b}"),
    ] {
        let (code, page) = http("GET", &format!("{ui}{path}"), None);
        assert_eq!(code, 200, "{path}");
        assert!(!page.contains("<script>alert("), "{path}");
    }
    // Query-string injection in filters is data, not SQL.
    let (code, body) = http(
        "GET",
        &format!("{ui}/api/sessions?agent=x%27%20OR%20%271%27=%271"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0);

    // The archive the demo wrote verifies.
    let out = Command::new(BIN)
        .args([
            "verify",
            "--store",
            demo.dir.join("archive").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn every_path_of_the_openapi_file_is_served() {
    // The spec and the router must not drift: every documented path answers
    // (with an unknown session id, 404 is the documented answer).
    let spec = include_str!("../query-ui/openapi.yaml");
    let paths: Vec<&str> = spec
        .lines()
        .filter_map(|l| l.strip_prefix("  /"))
        .map(|l| l.trim_end_matches(':'))
        .collect();
    assert!(paths.len() >= 8, "{paths:?}");
    let demo_dir = std::env::temp_dir().join(format!("chp_openapi_{}", std::process::id()));
    std::fs::create_dir_all(demo_dir.join("archive")).unwrap();
    let ui = format!("127.0.0.1:{}", free_port());
    let config = demo_dir.join("chaperone.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n[targets.db]\naddress = \"127.0.0.1:3306\"\nuser = \"root\"\npassword = \"\"\n\
             [archive]\nstore = \"{0}/archive\"\nspool_dir = \"{0}/spool\"\n[ui]\nlisten = \"{ui}\"\ndemo_mode = true\n",
            demo_dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http("GET", &format!("http://{ui}/readyz"), None).0 != 200 {
        assert!(Instant::now() < deadline, "the audit service did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in paths {
        let path = path
            .replace("{id}", "no-such-session")
            .replace("{table}", "shop.orders");
        let (method, url, body) = match path.as_str() {
            "api/sql" => (
                "POST",
                format!("http://{ui}/{path}"),
                Some(r#"{"sql":"SELECT 1"}"#),
            ),
            "api/sessions/no-such-session/frames" | "api/sessions/no-such-session/result" => {
                ("GET", format!("http://{ui}/{path}?command_index=0"), None)
            }
            "api/diff" => ("GET", format!("http://{ui}/{path}?a=x&b=y"), None),
            _ => ("GET", format!("http://{ui}/{path}"), None),
        };
        let (code, text) = http(method, &url, body);
        assert!(
            code == 200 || code == 404,
            "{method} /{path} is documented but answered {code}: {text}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&demo_dir);
}
