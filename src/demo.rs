//! `chaperone demo`: the whole story on one machine, in a minute.
//!
//! Starts a development token issuer, the gateway (TLS with a self-signed
//! certificate, token login, archive in a local directory) against the MariaDB at
//! 127.0.0.1:3306, then plays a scripted "AI migration agent" twice (last night's
//! run and tonight's, which differs) with the real `mariadb` CLI and the agent's
//! token, and prints what to look at next. Everything it writes is under `--dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

/// Where the demo's database lives on the MariaDB server.
const DEMO_DATABASE: &str = "chaperone_demo";
/// The approver the demo plays when the agent's backfill is held.
const DEMO_APPROVER: &str = "dba-on-call";
/// The approver's API token (local demo only; real ones come from a secret).
const DEMO_APPROVER_TOKEN: &str = "demo-approver-token";

pub struct DemoArgs {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// The audit service's web UI and API.
    pub ui_listen: SocketAddr,
    /// Keep the gateway running after the scripted session (until Ctrl-C).
    pub keep_running: bool,
    /// SIGHUPs caught before the demo's config reloader listened.
    pub early_hangups: chaperone_proxy::control::EarlyHangups,
}

/// The scripted agent: a migration, a backfill, a read of a table with personal
/// data, and a risky statement. `tonight` adds an index that last night's run
/// did not have, so that `chaperone diff` has something to show.
fn agent_script(tonight: bool) -> String {
    let mut sql = format!(
        "CREATE DATABASE IF NOT EXISTS {DEMO_DATABASE};
USE {DEMO_DATABASE};
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64), email VARCHAR(128), card VARCHAR(32), tier VARCHAR(16));
INSERT INTO customers (id, name, email, card) VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '4111111111111111'),
  (2, 'Alan Turing', 'alan@example.org', '5500005555555559'),
  (3, 'Grace Hopper', 'grace@example.net', '340000000000009'),
  (4, '<script>alert(\"agents write markup too\")</script>', 'bobby@example.com', '6011000990139424');
-- Backfill: an UPDATE without WHERE. The guardrail policy holds it until a
-- DBA approves; the agent's client simply waits.
UPDATE customers SET tier = IF(id = 1, 'gold', 'silver');
"
    );
    if tonight {
        sql.push_str("CREATE INDEX customers_tier ON customers (tier);\n");
    }
    sql.push_str(
        "-- The agent looks at the data it migrated: personal data, masked by the gateway.
SELECT id, name, email, card, tier FROM customers ORDER BY id;
SELECT tier, COUNT(*) FROM customers GROUP BY tier;
-- A mistake: a table that does not exist.
SELECT * FROM customer_archive;
",
    );
    sql
}

fn demo_config(dir: &Path, listen: SocketAddr, ui_listen: SocketAddr, issuer: &str) -> String {
    let dir = dir.display();
    format!(
        r#"# Written by `chaperone demo`. Local development only.
[gateway]
id = "demo-gateway"
listen = "{listen}"
admin_listen = "127.0.0.1:0"

[tls]
self_signed = true

[targets.shop]
address = "127.0.0.1:3306"
user = "root"
password = ""

[identity]
allow_cleartext_without_tls = false

[issuers.dev]
issuer = "{issuer}"
audiences = ["chaperone"]
algorithms = ["ES256"]
allow_http_loopback = true
display_name_claim = "job"

[roles.migration-agent]
issuer = "dev"
claims = {{ repository = "acme/shop" }}
max_session_secs = 3600
policy = "migration"
[roles.migration-agent.targets.shop]
databases = ["{DEMO_DATABASE}"]

# Guardrails: schema changes and writes are allowed, but a change to every row
# (UPDATE / DELETE without WHERE) waits for a DBA's approval.
[policies.migration]
classes = ["read", "write", "ddl", "transaction", "session"]
[[policies.migration.approve]]
name = "whole-table-change"
statements = ["without_where", "truncate"]
[policies.migration.approval]
approvers = ["{DEMO_APPROVER}"]
mode = "hold"
timeout_secs = 120

[approvals]
store = "{dir}/approvals"
[approvals.approvers.{DEMO_APPROVER}]
token = "{DEMO_APPROVER_TOKEN}"

# Masking: the agent never sees raw e-mail addresses or card numbers (and
# neither does the archive).
[masking]
key = "demo-masking-key-not-for-production"
[masking.roles.migration-agent]
detectors = ["email", "card"]
[[masking.roles.migration-agent.rules]]
name = "customer-email"
table = "customers"
column = "email"
strategy = "partial"
keep_prefix = 1
keep_domain = true
[[masking.roles.migration-agent.rules]]
name = "customer-card"
table = "customers"
column = "card"
strategy = "partial"
keep_suffix = 4

[ui]
listen = "{ui_listen}"
demo_mode = true

[archive]
store = "{dir}/archive"
spool_dir = "{dir}/spool"
segment_max_age_ms = 1000
signing_key_file = "{dir}/archive-signing-key"
"#
    )
}

fn check_mariadb() -> anyhow::Result<()> {
    let ok = Command::new("mariadb")
        .args(["-h127.0.0.1", "-P3306", "-uroot", "-e", "SELECT 1"])
        .output()
        .map(|o| o.status.success());
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => bail!(
            "MariaDB does not answer on 127.0.0.1:3306 as root without a password.\n\
             Start it with: scripts/ensure-mariadb.sh   (installs mariadb-server if needed)"
        ),
        Err(_) => bail!(
            "the `mariadb` client is not installed.\n\
             Install and start MariaDB with: scripts/ensure-mariadb.sh"
        ),
    }
}

/// Plays the approver: every request the policy holds is shown, then approved
/// after a short pause (so that the waiting client is visible in the output).
async fn approve_held_statements(
    approvals: std::sync::Arc<chaperone_approvals::Approvals>,
    inbox: String,
    shutdown: CancellationToken,
) {
    use chaperone_approvals::State;
    while !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pending = match approvals.list(Some(State::Pending)).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("[demo] could not read the approval requests: {e}");
                continue;
            }
        };
        for view in pending {
            let r = &view.request;
            eprintln!(
                "[demo] held for approval ({} / rule {}): {}\n[demo]   the agent's client waits; {DEMO_APPROVER} approves it (where a person would: {inbox}, or `chaperone approvals approve {}`)",
                r.policy,
                r.rule,
                r.sql.as_deref().unwrap_or("-"),
                r.id
            );
            tokio::time::sleep(Duration::from_millis(800)).await;
            if let Err(e) = approvals
                .approve(&r.id, DEMO_APPROVER, Some("demo: backfill reviewed".into()))
                .await
            {
                eprintln!("[demo] approving {} failed: {e}", r.id);
            }
        }
    }
}

/// Runs one agent session through the gateway with the `mariadb` CLI and its token.
fn run_agent(gateway: SocketAddr, token: &str, script: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("mariadb")
        .args([
            "-h",
            &gateway.ip().to_string(),
            "-P",
            &gateway.port().to_string(),
            "-u",
            "shop",
            "--ssl",
            "--table",
            "--force",
            &format!("-p{token}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the mariadb client")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    use chaperone_proxy::identity::dev_issuer::{self, DevIssuer, DevKey, MintRequest};
    check_mariadb()?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let shutdown = CancellationToken::new();

    // 1. A development token issuer (the agents' "workload identity provider").
    let key = DevKey::load_or_create(
        &dir.join("dev-issuer-key.pem"),
        dev_issuer::signing_algorithm("ES256")?,
    )?;
    let issuer_shutdown = shutdown.clone();
    let (issuer, _issuer_task) = dev_issuer::serve("127.0.0.1:0".parse()?, key, async move {
        issuer_shutdown.cancelled().await
    })
    .await?;
    let issuer_url = issuer.issuer.clone();
    let minter = DevIssuer::new(
        issuer_url.clone(),
        DevKey::from_pem(
            &std::fs::read_to_string(dir.join("dev-issuer-key.pem"))?,
            "dev issuer key",
        )?,
    );

    // 2. The gateway, recording into a local archive.
    if !dir.join("archive-signing-key").exists() {
        let key: [u8; 32] = rand::random();
        std::fs::write(dir.join("archive-signing-key"), hex::encode(key))?;
    }
    let config_path = dir.join("chaperone.toml");
    std::fs::write(
        &config_path,
        demo_config(&dir, args.listen, args.ui_listen, &issuer_url),
    )?;
    let (config, in_force) = chaperone_proxy::Config::load_effective(&config_path)?;
    let running = crate::start_gateway(config, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "starting the gateway on {} (is another demo running? pass --listen)",
                args.listen
            )
        })?;
    let gateway = running.addr;
    eprintln!(
        "[demo] gateway listening on {gateway} (TLS, token login), recording to {}/archive",
        dir.display()
    );
    // Edit the config's roles, policies or masking rules, then `kill -HUP`: as `serve`.
    let reloader = chaperone_proxy::control::Reloader::new(
        config_path.clone(),
        in_force,
        running.shared.clone(),
        running.workload.clone(),
    );
    std::sync::Arc::new(reloader).spawn(None, shutdown.clone(), args.early_hangups)?;

    // 3. The DBA on call: approves what the guardrail policy holds (in real life
    //    from the web inbox or `chaperone approvals approve ID`).
    let approvals = running
        .shared
        .guardrails
        .approvals()
        .cloned()
        .context("the demo config has an [approvals] section")?;
    let approver = tokio::spawn(approve_held_statements(
        approvals,
        format!("http://{}/inbox", args.ui_listen),
        shutdown.clone(),
    ));

    // 4. The agent: two runs of a nightly migration job, each with its own token.
    let mut outputs = Vec::new();
    for (run, tonight) in [("nightly-run-41", false), ("nightly-run-42", true)] {
        let mut claims = serde_json::Map::new();
        claims.insert("repository".into(), "acme/shop".into());
        claims.insert("job".into(), format!("acme/shop migrate ({run})").into());
        claims.insert("run_id".into(), run.into());
        let token = minter.mint(&MintRequest {
            subject: "repo:acme/shop:ref:refs/heads/main".into(),
            audience: "chaperone".into(),
            ttl_secs: 600,
            claims,
        })?;
        eprintln!("[demo] agent session {run}: mariadb -u shop --ssl -p<token>");
        let script = agent_script(tonight);
        let out =
            tokio::task::spawn_blocking(move || run_agent(gateway, &token, &script)).await??;
        outputs.push((run, out));
    }
    let (_, last) = outputs.last().expect("two runs");
    println!("\n--- what the agent saw (tonight's run) ---\n{last}");

    approver.abort();

    // 5. Let the recorder seal and upload the sessions' segments.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    running.flush().await;

    let exe = std::env::current_exe()?;
    let exe = exe.display();
    let archive = format!("{}/archive", dir.display());
    println!(
        r#"
Both agent sessions are recorded, with the agent's identity, in {archive}
(zstd Parquet segments with signed manifests). The agent saw e-mail addresses
and card numbers masked (so does the archive), and its backfill without WHERE
ran only after {DEMO_APPROVER} approved it.

Next:
  open http://{ui}/   (sessions, replay, table history, diff, SQL)
  {exe} verify --store {archive}
  {exe} sessions --archive {archive}
  {exe} query --archive {archive} "SELECT subject, sql, rows_returned, error_code FROM statements ORDER BY started_at"
  {exe} replay <SESSION> --archive {archive} (--plain for text)
  {exe} diff <SESSION_A> <SESSION_B> --archive {archive}

Config used: {config}"#,
        config = config_path.display(),
        ui = args.ui_listen,
    );
    if args.keep_running {
        println!("\nThe gateway keeps running on {gateway}; Ctrl-C stops it.");
        crate::wait_for_signal().await;
    }
    shutdown.cancel();
    running.stopped().await
}
