//! Workload identity: what validating a token costs per login with the keys
//! cached (RS256 from a real OIDC provider, ES256 and EdDSA from the dev
//! issuer), and login throughput through the gateway: token login over TLS
//! against a gateway password login over TLS, each a full connect, TLS
//! handshake, login, upstream login and COM_QUIT.
//!
//! Everything runs on this machine: MariaDB at `--mariadb`, the gateway in this
//! process, the node provider (`tests/clients/oidc-issuer.mjs`) as a child.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chaperone_mysql::protocol::command::COM_QUIT;
use chaperone_mysql::protocol::{CapabilityFlags, Packet};
use chaperone_mysql::upstream::UpstreamRequest;
use chaperone_proxy::config::{TargetConfig, UpstreamTls, UpstreamTlsMode};
use chaperone_proxy::identity::dev_issuer::{self, DevKey, MintRequest};
use chaperone_proxy::identity::GatewayAuthenticator;
use futures::SinkExt;
use tokio_util::sync::CancellationToken;

use crate::table::Table;

#[derive(clap::Args)]
pub struct Options {
    /// Validations per algorithm.
    #[arg(long, default_value_t = 5000)]
    validations: u32,
    /// Seconds of logins per login kind.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent login loops.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value = "127.0.0.1:3306")]
    mariadb: String,
    #[arg(long, default_value = "root")]
    mariadb_user: String,
    #[arg(long, default_value = "")]
    mariadb_password: String,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(opts))
}

async fn run_async(opts: Options) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut issuers = Vec::new();
    for alg in ["ES256", "EdDSA"] {
        let key = DevKey::generate(dev_issuer::signing_algorithm(alg)?)?;
        let s = stop.clone();
        let (issuer, _) =
            dev_issuer::serve(
                "127.0.0.1:0".parse()?,
                key,
                async move { s.cancelled().await },
            )
            .await?;
        let token = issuer.mint(&MintRequest {
            subject: format!("bench-{alg}"),
            audience: "chaperone".into(),
            ttl_secs: 3600,
            claims: dev_issuer::claims_from_json(r#"{"repository": "acme/orders"}"#)?,
        })?;
        issuers.push((alg.to_string(), issuer.issuer.clone(), token));
    }
    let provider = node_provider().await;
    if let Some((_, issuer, token)) = &provider {
        issuers.push(("RS256".into(), issuer.clone(), token.clone()));
    } else {
        eprintln!(
            "note: node oidc-provider not available (run scripts/setup-test-env.sh); RS256 skipped"
        );
    }

    let dir = std::env::temp_dir().join(format!("chaperone-bench-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = chaperone_mysql::tls::generate_self_signed()?;
    let ca = dir.join("cert.pem");
    std::fs::write(&ca, cert)?;
    std::fs::write(dir.join("key.pem"), key)?;
    let mut toml = format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"
        max_connections = 10000
        [tls]
        cert = "{0}/cert.pem"
        key = "{0}/key.pem"
        [targets.orders]
        address = "{1}"
        user = "{2}"
        password = "{3}"
        [users.app]
        target = "orders"
        password = "apppw"
        "#,
        dir.display(),
        opts.mariadb,
        opts.mariadb_user,
        opts.mariadb_password
    );
    for (alg, issuer, _) in &issuers {
        toml.push_str(&format!(
            "[issuers.{alg}]\nissuer = \"{issuer}\"\naudiences = [\"chaperone\"]\nallow_http_loopback = true\n[roles.bench-{alg}]\nissuer = \"{alg}\"\n[roles.bench-{alg}.targets.orders]\n"
        ));
    }
    let config = chaperone_proxy::Config::parse(&toml)?;
    let auth = Arc::new(GatewayAuthenticator::from_config(&config)?);
    let workload = auth.workload().context("issuers configured")?.clone();

    // --- validation cost, keys cached ---------------------------------------
    let mut table = Table::new([
        "algorithm",
        "validations",
        "µs per validation",
        "per second (1 core)",
    ]);
    for (alg, _, token) in &issuers {
        // Warm up: fetches and caches the keys.
        workload.validator().validate(token.as_bytes()).await?;
        let started = Instant::now();
        for _ in 0..opts.validations {
            workload.validator().validate(token.as_bytes()).await?;
        }
        let per = started.elapsed().as_secs_f64() / f64::from(opts.validations);
        table.row([
            alg.clone(),
            opts.validations.to_string(),
            format!("{:.1}", per * 1e6),
            format!("{:.0}", 1.0 / per),
        ]);
    }
    println!(
        "Token validation (signature + claims, JWKS cached):\n{}",
        table.render()
    );

    // --- login throughput -----------------------------------------------------
    let tap = Arc::new(chaperone_schemas::tap::NoopTap);
    let gateway = chaperone_proxy::Gateway::bind(config, auth.clone(), tap).await?;
    let addr = gateway.local_addr();
    tokio::spawn(gateway.run(stop.clone()));
    let mut table = Table::new(["login", "logins", "logins/s", "mean ms"]);
    let mut kinds = vec![(
        "password (caching_sha2, TLS)".to_string(),
        "app".to_string(),
        "apppw".to_string(),
    )];
    for (alg, _, token) in &issuers {
        kinds.push((
            format!("token {alg} (clear text, TLS)"),
            "orders".into(),
            token.clone(),
        ));
    }
    for (name, user, password) in kinds {
        let target = Arc::new(
            TargetConfig {
                address: addr.to_string(),
                user,
                password: chaperone_proxy::config::SecretSource {
                    password: Some(password),
                    ..Default::default()
                },
                allow_local_infile: false,
                tls: UpstreamTls {
                    mode: UpstreamTlsMode::Verify,
                    ca: Some(ca.clone()),
                    server_name: Some("localhost".into()),
                },
                users: BTreeMap::new(),
            }
            .resolve("gateway")?,
        );
        let count = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(opts.seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..opts.concurrency {
            let (target, count) = (target.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let attrs = BTreeMap::new();
                while Instant::now() < deadline {
                    let req = UpstreamRequest {
                        mariadb_capabilities: Default::default(),
                        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
                            | CapabilityFlags::CLIENT_LONG_PASSWORD
                            | CapabilityFlags::CLIENT_TRANSACTIONS,
                        collation: 45,
                        max_packet_size: 1 << 24,
                        database: None,
                        connect_attrs: &attrs,
                        timeout: Duration::from_secs(10),
                        max_packet: 1 << 24,
                    };
                    let mut up = target.connect(&req).await?;
                    let _ = up.conn.send(Packet::new(0, vec![COM_QUIT])).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let n = count.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        table.row([
            name,
            n.to_string(),
            format!("{:.0}", n as f64 / secs),
            format!(
                "{:.2}",
                secs * 1000.0 * opts.concurrency as f64 / n.max(1) as f64
            ),
        ]);
    }
    println!(
        "Login throughput through the gateway ({} concurrent loops, {} s each; connect + TLS + login + upstream login + quit):\n{}",
        opts.concurrency,
        opts.seconds,
        table.render()
    );
    stop.cancel();
    if let Some((mut child, _, _)) = provider {
        let _ = child.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The node OIDC provider of the tests and an RS256 access token from it, if
/// node and its modules are installed.
async fn node_provider() -> Option<(std::process::Child, String, String)> {
    use std::io::BufRead;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients");
    if !dir.join("node_modules/oidc-provider").is_dir() {
        return None;
    }
    let mut child = std::process::Command::new("node")
        .arg("oidc-issuer.mjs")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take()?);
    out.read_line(&mut line).ok()?;
    // Keep draining its stdout: a closed pipe would end the provider.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    let issuer = v["issuer"].as_str()?.to_string();
    let body = "grant_type=client_credentials&client_id=agent-a&client_secret=secret-a&resource=urn%3Achaperone&scope=db";
    let resp = reqwest::Client::new()
        .post(v["token_endpoint"].as_str()?)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .ok()?;
    let t: serde_json::Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
    let token = t["access_token"].as_str()?.to_string();
    Some((child, issuer, token))
}
