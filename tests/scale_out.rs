//! Scale-out with the real binary: two `chaperone serve` replicas (own
//! `gateway.id`, own segment chain) behind haproxy (TCP, round robin) write to
//! one S3-compatible store (moto) — the archive and the approvals — and read
//! one shared policy file, an object on the same store.
//!
//! - sessions through both replicas are in one catalog (`chaperone query`);
//! - a statement held on replica A is approved through replica B's API and
//!   the waiting client gets its result;
//! - a policy change published to the shared object reaches both replicas
//!   (polling), and each records it in the archive;
//! - replica A is SIGKILLed during a client loop through haproxy and started
//!   again: every INSERT the client got an OK for is in the archive, and
//!   `chaperone verify` passes for every chain.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const DB: &str = "chp_scale_out";
const BUCKET: &str = "chp-scale-out";
const ALICE: &str = "alice-scale-token-0123456789";

struct Replica {
    id: &'static str,
    port: u16,
    api_port: u16,
    config: PathBuf,
    log: PathBuf,
}

/// Where the replicas' shared policy file is published.
const POLICY_KEY: &str = "config/policies.toml";

fn publish_policies(moto: &Moto, classes: &str) {
    moto.put_object(
        BUCKET,
        POLICY_KEY,
        &format!(
            r#"
[policies.agent]
classes = {classes}
databases = ["{DB}"]
[[policies.agent.approve]]
name = "ddl"
statements = ["alter", "drop", "truncate"]
[policies.agent.approval]
timeout_secs = 60
"#
        ),
    );
}

fn replica(dir: &Path, moto: &Moto, id: &'static str) -> Replica {
    let (port, api_port) = (free_port(), free_port());
    let config = dir.join(format!("{id}.toml"));
    let options = moto.store_options_toml();
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "{id}"
listen = "127.0.0.1:{port}"
shutdown_grace_secs = 2
config_poll_secs = 1
policy_file = "s3://{BUCKET}/{POLICY_KEY}"
policy_file_options = {options}
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.app]
target = "db"
password = "app-secret"
plugin = "mysql_native_password"
policy = "agent"
[api]
listen = "127.0.0.1:{api_port}"
[approvals]
store = "s3://{BUCKET}/approvals"
store_options = {options}
poll_interval_ms = 100
[approvals.approvers.alice]
token = "{ALICE}"
[archive]
store = "s3://{BUCKET}/archive"
store_options = {options}
spool_dir = "{spool}"
segment_max_age_ms = 300
signing_key_file = "{key}"
"#,
            spool = dir.join(format!("spool-{id}")).display(),
            key = dir.join("signing.key").display(),
        ),
    )
    .unwrap();
    Replica {
        id,
        port,
        api_port,
        config,
        log: dir.join(format!("{id}.log")),
    }
}

/// What a failure needs explained (the test's directory is removed after it):
/// each replica's warnings and errors, and what is still in its spool.
fn diagnostics(dir: &Path, replicas: &[&Replica]) -> String {
    let mut out = String::new();
    for r in replicas {
        out += &format!("--- {}: warnings and errors\n", r.id);
        for line in std::fs::read_to_string(&r.log).unwrap_or_default().lines() {
            if line.contains("WARN") || line.contains("ERROR") {
                out += line;
                out.push('\n');
            }
        }
        out += &format!("--- {}: spool\n", r.id);
        let spool = dir.join(format!("spool-{}", r.id));
        let mut stack = vec![spool];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    out += &format!("{} {size}\n", path.display());
                }
            }
        }
    }
    out
}

fn start(r: &Replica) -> Child {
    serve(&r.config, &r.log, &[r.port, r.api_port])
}

/// haproxy in the foreground, TCP round robin over the replicas, killed on drop.
struct Haproxy {
    port: u16,
    child: Child,
}

impl Haproxy {
    fn start(dir: &Path, replicas: &[&Replica]) -> Haproxy {
        let port = free_port();
        let servers: String = replicas
            .iter()
            .map(|r| {
                format!(
                    "    server {} 127.0.0.1:{} check inter 300ms fall 1 rise 1\n",
                    r.id, r.port
                )
            })
            .collect();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    maxconn 256\n\
                 defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    retries 3\n    option redispatch\n\
                 frontend mysql\n    bind 127.0.0.1:{port}\n    default_backend gateways\n\
                 backend gateways\n    balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        wait_listening(port, || "haproxy".into());
        Haproxy { port, child }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mariadb -e SQL` as the agent through `port`.
fn agent(port: u16, sql: &str) -> std::process::Output {
    Command::new("timeout")
        .args(["90", "mariadb", "--protocol=TCP", "-h127.0.0.1"])
        .arg(format!("-P{port}"))
        .args(["-uapp", "-papp-secret", "--skip-ssl", "-N", "-B"])
        .arg(format!("-D{DB}"))
        .args(["-e", sql])
        .stdin(Stdio::null())
        .output()
        .expect("mariadb client")
}

/// `chaperone query SQL` over the shared archive, as JSON rows.
fn query(config: &Path, sql: &str) -> Vec<serde_json::Value> {
    let out = chaperone(&[
        "query",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
        sql,
    ]);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `chaperone approvals ARGS` against one replica's API.
fn approvals(r: &Replica, args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .arg("approvals")
        .args(args)
        .env(
            "CHAPERONE_API_URL",
            format!("http://127.0.0.1:{}", r.api_port),
        )
        .env("CHAPERONE_APPROVER_TOKEN", ALICE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chaperone approvals {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The client loop through haproxy: INSERTs until `secs` pass, reconnecting
/// after errors; prints the value of every INSERT that got an OK.
const LOAD_SCRIPT: &str = r#"
import sys, time, pymysql
port, db, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
deadline = time.time() + secs
conn, v = None, 0
while time.time() < deadline:
    v += 1
    try:
        if conn is None or v % 20 == 0:
            if conn is not None:
                conn.close()
            conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-secret", database=db, autocommit=True, connect_timeout=5, read_timeout=10)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO load_rows VALUES (%d)" % v)
        print(v, flush=True)
    except Exception as e:
        print("error", v, e, file=sys.stderr, flush=True)
        conn = None
        time.sleep(0.05)
"#;

#[test]
fn two_replicas_behind_haproxy_share_one_archive_approvals_and_policies() {
    root_sql(&format!(
        "DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; \
         CREATE TABLE {DB}.t (v INT PRIMARY KEY); CREATE TABLE {DB}.load_rows (v INT PRIMARY KEY)"
    ));
    let dir = Dir::new("scale_out");
    std::fs::write(dir.0.join("signing.key"), SIGNING_KEY_HEX).unwrap();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    publish_policies(&moto, r#"["read", "write", "session", "transaction"]"#);
    let a = replica(&dir.0, &moto, "replica-a");
    let b = replica(&dir.0, &moto, "replica-b");
    let mut gw_a = start(&a);
    let gw_b = start(&b);
    let lb = Haproxy::start(&dir.0, &[&a, &b]);

    // Sessions through the load balancer land on both replicas.
    for v in 1..=6 {
        let out = agent(lb.port, &format!("INSERT INTO t VALUES ({v})"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Held on A, approved through B's API: the client on A gets its result.
    let held = std::thread::spawn({
        let port = a.port;
        move || agent(port, "ALTER TABLE t ADD COLUMN note TEXT")
    });
    let mut id = None;
    eventually(30, "the request on replica B's API", || {
        let out = approvals(&b, &["list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        id = list
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["sql"] == "ALTER TABLE t ADD COLUMN note TEXT")
            .map(|v| v["id"].as_str().unwrap().to_string());
        id.is_some()
    });
    approvals(&b, &["approve", id.as_deref().unwrap()]);
    let out = held.join().unwrap();
    assert!(
        out.status.success(),
        "the held ALTER ran once approved on the other replica: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        root_sql(&format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = '{DB}' AND table_name = 't' AND column_name = 'note'"
        ))
        .trim(),
        "1"
    );

    // Replica A killed during a client loop through haproxy, then restarted.
    let load = Command::new("timeout")
        .args(["60", "python3", "-c", LOAD_SCRIPT])
        .args([&lb.port.to_string(), DB, "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    gw_a.kill().unwrap();
    gw_a.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let gw_a = start(&a);
    let load = load.wait_with_output().unwrap();
    let acknowledged: BTreeSet<i64> = String::from_utf8(load.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(
        acknowledged.len() > 20,
        "the loop ran: {} OKs",
        acknowledged.len()
    );
    let restart_log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        restart_log.contains("recovering spool log"),
        "the restarted replica recovered the spool of the killed one: {restart_log}"
    );
    eprintln!(
        "load through haproxy: {} INSERTs acknowledged, {} client errors around the kill",
        acknowledged.len(),
        String::from_utf8_lossy(&load.stderr).lines().count()
    );

    // A tightened policy published to the shared object reaches both replicas.
    publish_policies(&moto, r#"["read", "session", "transaction"]"#);
    for r in [&a, &b] {
        eventually(20, "the tightened policy on both replicas", || {
            let out = agent(r.port, "UPDATE t SET v = v WHERE v = 0");
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("1290")
        });
    }

    terminate(gw_a);
    terminate(gw_b);

    // One catalog over both replicas' segments.
    let by_gateway = query(
        &a.config,
        "SELECT gateway_id, count(*) AS n FROM statements WHERE sql LIKE 'INSERT INTO t VALUES%' GROUP BY gateway_id ORDER BY gateway_id",
    );
    let gateways: Vec<&str> = by_gateway
        .iter()
        .map(|r| r["gateway_id"].as_str().unwrap())
        .collect();
    assert_eq!(gateways, ["replica-a", "replica-b"], "{by_gateway:?}");

    // Every acknowledged INSERT is in the archive (and in the database).
    let recorded: BTreeSet<i64> = query(
        &a.config,
        "SELECT sql FROM statements WHERE sql LIKE 'INSERT INTO load_rows VALUES%'",
    )
    .iter()
    .map(|r| {
        let sql = r["sql"].as_str().unwrap();
        sql.trim_start_matches("INSERT INTO load_rows VALUES (")
            .trim_end_matches(')')
            .parse()
            .unwrap()
    })
    .collect();
    let missing: Vec<_> = acknowledged.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not recorded ({} of {}): {missing:?}\n{}",
        missing.len(),
        acknowledged.len(),
        diagnostics(&dir.0, &[&a, &b])
    );
    let in_db: usize = root_sql(&format!("SELECT count(*) FROM {DB}.load_rows"))
        .trim()
        .parse()
        .unwrap();
    assert!(in_db >= acknowledged.len());

    // Each replica recorded the policy change it applied.
    let changes = query(
        &a.config,
        "SELECT gateway_id, verdict, sql FROM statements WHERE command = 'CONFIG_CHANGE' ORDER BY gateway_id",
    );
    let applied: Vec<&str> = changes
        .iter()
        .filter(|c| c["verdict"] == "applied")
        .map(|c| c["gateway_id"].as_str().unwrap())
        .collect();
    assert_eq!(applied, ["replica-a", "replica-b"], "{changes:?}");
    assert!(changes[0]["sql"]
        .as_str()
        .unwrap()
        .starts_with("~ policies.agent.classes"));

    // Every chain verifies.
    let out = chaperone(&[
        "verify",
        "--config",
        a.config.to_str().unwrap(),
        "--public-key",
        &public_key_of_test_key(),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(": 2 gateway(s)"), "both chains: {report}");
    root_sql(&format!("DROP DATABASE {DB}"));
}
