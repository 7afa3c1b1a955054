//! Workload identity, end to end: a real OIDC provider (node `oidc-provider`,
//! `tests/clients/oidc-issuer.mjs`) and the gateway's dev issuer mint tokens;
//! real clients (the `mariadb` CLI, PyMySQL, node mysql2, sysbench) log in with
//! them through an in-process gateway in front of the real MariaDB.
//!
//! Every refusal is checked three ways: MySQL error 1045 to the client, the
//! reason in the gateway's log, and the token nowhere in the log.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chaperone_mysql::protocol::handshake::{ServerGreeting, UpstreamHello};
use chaperone_mysql::protocol::response::{ErrInfo, ERR_HEADER, OK_HEADER};
use chaperone_mysql::protocol::{CapabilityFlags, Packet, PacketCodec};
use chaperone_mysql::stream::Stream;
use chaperone_proxy::identity::config::{ApiConfig, IssuerConfig, RoleConfig, RoleTarget};
use chaperone_proxy::identity::dev_issuer::{self, DevIssuer, DevKey, MintRequest};
use chaperone_proxy::identity::GatewayAuthenticator;
use chaperone_proxy::{Config, Gateway};
use chaperone_schemas::tap::MemoryTap;
use chaperone_schemas::{AuthMethod, SessionStart, TapEvent};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use support::sql::{SqlClient, CLIENT_CAPABILITIES};
use support::*;
use tokio::io::AsyncBufReadExt;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// The MySQL user name that names the target.
const TARGET: &str = "orders";
/// A second target on the same MariaDB, granted by another role.
const OTHER_TARGET: &str = "billing";
const AUDIENCE: &str = "chaperone";
/// A read-only MariaDB user the `dev-readers` role logs in as.
const RO_USER: &str = "chp_id_ro";
const RO_PASSWORD: &str = "chp-id-ro-pw";

// --- the gateway's log, captured ---------------------------------------------

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn log_buf() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        tracing_subscriber::fmt()
            .with_env_filter("chaperone_proxy=debug")
            .with_ansi(false)
            .with_writer(buf.clone())
            .init();
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&log_buf().0.lock().unwrap()).into_owned()
}

/// The reason is in the log (wait briefly: the session logs after replying).
async fn assert_logged(reason: &str) {
    wait_until(secs(5), &format!("the log says {reason:?}"), || {
        log_text().contains(reason)
    })
    .await;
}

/// No part of the token that identifies it (its signature, or for garbage the
/// whole text) appears in the log.
fn assert_not_logged(token: &str) {
    let probe = match token.rsplit_once('.') {
        Some((_, sig)) if sig.len() >= 16 => &sig[..sig.len().min(64)],
        _ if token.len() >= 16 => &token[..token.len().min(64)],
        _ => return,
    };
    assert!(
        !log_text().contains(probe),
        "the token (or its signature) was logged"
    );
}

// --- the real OIDC provider ----------------------------------------------------

struct Provider {
    child: tokio::process::Child,
    issuer: String,
    token_endpoint: String,
}

impl Provider {
    async fn start() -> Provider {
        let dir = support::clients::clients_dir();
        if !dir.join("node_modules/oidc-provider").is_dir() {
            let status = std::process::Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (run scripts/setup-test-env.sh)");
            assert!(status.success(), "npm install in tests/clients failed");
        }
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("oidc-issuer.mjs"))
            .args(["--port", "0", "--audience", AUDIENCE])
            .current_dir(&dir)
            // stdin stays open: the provider stops when it closes.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (run scripts/setup-test-env.sh)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = within(secs(30), "the OIDC provider starts", lines.next_line())
            .await
            .expect("provider stdout")
            .expect("the provider prints its address");
        // Keep draining its stdout so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let v: Value = serde_json::from_str(&first).expect("provider prints JSON");
        Provider {
            child,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            token_endpoint: v["token_endpoint"].as_str().unwrap().to_string(),
        }
    }

    /// An access token by the client-credentials grant.
    async fn token(&self, client: &str, secret: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&client_id={client}&client_secret={secret}&resource=urn%3Achaperone&scope=db"
        );
        let resp = reqwest::Client::new()
            .post(&self.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token endpoint answers");
        assert!(
            resp.status().is_success(),
            "token request: {}",
            resp.status()
        );
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    async fn jwks(&self) -> Value {
        let url = format!("{}/jwks", self.issuer);
        let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

// --- the dev issuer, in process -----------------------------------------------

struct Dev {
    issuer: Arc<DevIssuer>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Dev {
    async fn start() -> Dev {
        Self::start_with(DevKey::generate(Algorithm::ES256).unwrap()).await
    }

    async fn start_with(key: DevKey) -> Dev {
        Self::start_at("127.0.0.1:0".parse().unwrap(), key).await
    }

    /// On a given address (a restarted issuer keeps its URL).
    async fn start_at(addr: SocketAddr, key: DevKey) -> Dev {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let (issuer, task) = dev_issuer::serve(addr, key, async move { s.cancelled().await })
            .await
            .unwrap();
        Dev { issuer, stop, task }
    }

    fn mint(&self, sub: &str, claims: Value) -> String {
        self.issuer
            .mint(&MintRequest {
                subject: sub.into(),
                audience: AUDIENCE.into(),
                ttl_secs: 300,
                claims: obj(claims),
            })
            .unwrap()
    }

    /// Valid standard claims, for hand-built tokens.
    fn claims(&self, sub: &str) -> Map<String, Value> {
        let now = now();
        obj(json!({
            "iss": self.issuer.issuer, "sub": sub, "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 300, "repository": "acme/orders",
        }))
    }

    async fn shut(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// --- the gateway ----------------------------------------------------------------

fn issuer(url: &str) -> IssuerConfig {
    toml::from_str(&format!(
        "issuer = \"{url}\"\naudiences = [\"{AUDIENCE}\"]\nallow_http_loopback = true\njwks_min_refresh_secs = 1"
    ))
    .unwrap()
}

fn role(issuer: &str, claims: &[(&str, &str)], targets: &[(&str, RoleTarget)]) -> RoleConfig {
    // Built through serde so that fields added later take their defaults.
    let targets: Map<String, Value> = targets
        .iter()
        .map(|(t, rt)| {
            let mut v = Map::new();
            if let Some(u) = &rt.upstream_user {
                v.insert("upstream_user".into(), json!(u));
            }
            if let Some(d) = &rt.databases {
                v.insert("databases".into(), json!(d));
            }
            (t.to_string(), Value::Object(v))
        })
        .collect();
    let claims: Map<String, Value> = claims
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "issuer": issuer, "claims": claims, "targets": targets, "jit_max_ttl_secs": 600,
    }))
    .expect("role config")
}

/// Issuers `oidc` (the node provider) and `dev` (the dev issuer), when given,
/// with their roles:
/// - `orders-writers`: oidc, `groups` ∋ db-writers → orders;
/// - `billing-team`: oidc, `team = billing` → billing only;
/// - `dev-agents`: dev, `repository = acme/*` → orders;
/// - `dev-readers`: dev, `repository = acme/readonly` → orders as chp_id_ro, db chp_id_ro_db only.
fn with_identity(config: &mut Config, oidc: Option<&str>, dev: Option<&str>) {
    let orders = config.targets.values().next().unwrap().clone();
    config.targets.insert(OTHER_TARGET.into(), orders);
    let t = config.targets.get_mut(TARGET).unwrap();
    t.users.insert(RO_USER.into(), inline(RO_PASSWORD));
    if let Some(url) = oidc {
        let mut i = issuer(url);
        i.display_name_claim = "client_id".into();
        i.secret_claims = vec!["jti".into()];
        config.issuers.insert("oidc".into(), i);
        config.roles.insert(
            "orders-writers".into(),
            role(
                "oidc",
                &[("groups", "db-writers")],
                &[(TARGET, RoleTarget::default())],
            ),
        );
        config.roles.insert(
            "billing-team".into(),
            role(
                "oidc",
                &[("team", "billing")],
                &[(OTHER_TARGET, RoleTarget::default())],
            ),
        );
    }
    if let Some(url) = dev {
        config.issuers.insert("dev".into(), issuer(url));
        config.roles.insert(
            "dev-agents".into(),
            role(
                "dev",
                &[("repository", "acme/*")],
                &[(TARGET, RoleTarget::default())],
            ),
        );
        config.roles.insert(
            "dev-readers".into(),
            role(
                "dev",
                &[("repository", "acme/readonly")],
                &[(
                    TARGET,
                    serde_json::from_value::<RoleTarget>(
                        json!({"upstream_user": RO_USER, "databases": ["chp_id_ro_db"]}),
                    )
                    .unwrap(),
                )],
            ),
        );
    }
    config.api = Some(ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
    });
}

struct Gw {
    addr: SocketAddr,
    api: Option<SocketAddr>,
    tap: MemoryTap,
    ca_file: PathBuf,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Gw {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Gw {
        log_buf();
        let dir = TempDir::new("chp-id-gw");
        let (cert, key) = chaperone_mysql::tls::generate_self_signed().unwrap();
        let ca_file = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&ca_file, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let mut config = test_config();
        config.tls = Some(chaperone_proxy::config::TlsConfig {
            cert: Some(ca_file.clone()),
            key: Some(key_path),
            self_signed: false,
            require: false,
        });
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let auth = Arc::new(GatewayAuthenticator::from_config(&config).expect("authenticator"));
        let tap = MemoryTap::new();
        let gateway = Gateway::bind(config, auth.clone(), Arc::new(tap.clone()))
            .await
            .expect("gateway starts");
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        let shared = gateway.shared();
        let api =
            chaperone_proxy::identity::api::start(
                &shared,
                &auth,
                async move { s.cancelled().await },
            )
            .await
            .unwrap();
        let addr = gateway.local_addr();
        tokio::spawn(gateway.run(shutdown.clone()));
        Gw {
            addr,
            api,
            tap,
            ca_file,
            shutdown,
            _dir: dir,
        }
    }

    fn sessions(&self) -> Vec<SessionStart> {
        self.tap
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TapEvent::SessionStart(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// Refused logins in the audit record: (the session's start, its end reason).
    fn refusals(&self) -> Vec<(SessionStart, String)> {
        let events = self.tap.events();
        events
            .iter()
            .filter_map(|e| match e {
                TapEvent::SessionEnd(end) if end.reason.starts_with("auth_failed: ") => {
                    events.iter().find_map(|s| match s {
                        TapEvent::SessionStart(s) if s.session_id == end.session_id => {
                            Some(((**s).clone(), end.reason.clone()))
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect()
    }

    fn session_end_reason(&self, session_id: &str) -> Option<String> {
        self.tap.events().into_iter().find_map(|e| match e {
            TapEvent::SessionEnd(s) if s.session_id == session_id => Some(s.reason),
            _ => None,
        })
    }

    /// An HTTPS client for the API that trusts the gateway's certificate.
    fn api_client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_file).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }

    fn api_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.api.expect("API").port())
    }

    async fn mint(&self, token: &str, body: Value) -> (u16, Value) {
        let resp = self
            .api_client()
            .post(self.api_url("/v1/credentials"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("API answers");
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// --- a raw clear-text login, to see exactly what the gateway does --------------

enum Transport<'a> {
    Plain,
    Tls(&'a Path),
}

/// Logs in as `user` with `token` as the password. `eager`: send it in the
/// handshake response with `mysql_clear_password` (unasked) instead of waiting
/// for the gateway's auth switch. Errors: the gateway's ERR packet, or `None`
/// when the connection closed without one.
async fn token_login(
    addr: SocketAddr,
    user: &str,
    token: &[u8],
    transport: Transport<'_>,
    eager: bool,
) -> Result<SqlClient, Option<ErrInfo>> {
    token_login_to(addr, user, token, transport, eager, None).await
}

/// [`token_login`] starting in `database`.
async fn token_login_to(
    addr: SocketAddr,
    user: &str,
    token: &[u8],
    transport: Transport<'_>,
    eager: bool,
    database: Option<&str>,
) -> Result<SqlClient, Option<ErrInfo>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut conn = Framed::new(Stream::Plain(tcp), PacketCodec::new(1 << 24));
    let first = conn.next().await.unwrap().unwrap();
    let greeting = ServerGreeting::parse(&first.payload).unwrap();
    let mut caps = CLIENT_CAPABILITIES
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
    if database.is_some() {
        caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    }
    let attrs = Default::default();
    let mut seq = 1;
    if let Transport::Tls(ca) = transport {
        caps |= CapabilityFlags::CLIENT_SSL;
        let ssl = UpstreamHello {
            capabilities: caps,
            mariadb_capabilities: Default::default(),
            max_packet_size: 1 << 24,
            collation: 45,
            user: "",
            auth_response: &[],
            database: None,
            auth_plugin: "",
            connect_attrs: &attrs,
        }
        .encode_ssl_request();
        conn.send(Packet::new(seq, ssl)).await.unwrap();
        seq += 1;
        let (connector, name) =
            chaperone_mysql::tls::upstream_connector(ca, Some("localhost"), &addr.to_string())
                .unwrap();
        let Stream::Plain(tcp) = conn.into_parts().io else {
            unreachable!()
        };
        let stream = connector.connect(name, tcp).await.unwrap();
        conn = Framed::new(
            Stream::ClientTls(Box::new(stream)),
            PacketCodec::new(1 << 24),
        );
    }
    let mut eager_response = token.to_vec();
    eager_response.push(0);
    let hello = UpstreamHello {
        capabilities: caps,
        mariadb_capabilities: Default::default(),
        max_packet_size: 1 << 24,
        collation: 45,
        user,
        auth_response: if eager { &eager_response } else { &[] },
        database,
        auth_plugin: if eager {
            "mysql_clear_password"
        } else {
            "mysql_native_password"
        },
        connect_attrs: &attrs,
    };
    conn.send(Packet::new(seq, hello.encode())).await.unwrap();
    loop {
        let p = match within(secs(20), "the gateway answers", conn.next()).await {
            Some(Ok(p)) => p,
            _ => return Err(None),
        };
        match p.payload.first() {
            Some(&OK_HEADER) => return Ok(SqlClient { conn, greeting }),
            Some(&ERR_HEADER) => return Err(Some(ErrInfo::parse(&p.payload).unwrap())),
            Some(0xFE) => {
                let name_end = p
                    .payload
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(p.payload.len());
                assert_eq!(
                    &p.payload[1..name_end],
                    b"mysql_clear_password",
                    "auth switch"
                );
                let mut data = token.to_vec();
                data.push(0);
                conn.send(Packet::new(p.seq.wrapping_add(1), data))
                    .await
                    .unwrap();
            }
            other => panic!("unexpected packet {other:?}"),
        }
    }
}

/// A refusal: 1045 to the client, `reason` in the log, the token not in it.
async fn assert_refused(gw: &Gw, token: &str, reason: &str) {
    let err = token_login(
        gw.addr,
        TARGET,
        token.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .err()
    .flatten()
    .expect("an ERR packet, not a login");
    assert_eq!(err.code, 1045, "{}", err.message);
    assert!(
        err.message.contains("Access denied"),
        "generic message: {}",
        err.message
    );
    assert_logged(reason).await;
    assert_not_logged(token);
    // The audit record: a session that ended at once, with the reason.
    wait_until(
        secs(5),
        &format!("the audit record says {reason:?}"),
        || gw.refusals().iter().any(|(_, why)| why.contains(reason)),
    )
    .await;
    if let Some((_, sig)) = token.rsplit_once('.').filter(|(_, s)| s.len() >= 16) {
        for e in gw.tap.events() {
            let text = match e {
                TapEvent::SessionStart(s) => serde_json::to_string(&s).unwrap(),
                TapEvent::SessionEnd(s) => serde_json::to_string(&s).unwrap(),
                _ => continue,
            };
            assert!(!text.contains(sig), "the token was recorded");
        }
    }
}

async fn scalar(client: &mut SqlClient, sql: &str) -> String {
    client.scalar(sql).await.unwrap_or_default()
}

// --- happy paths with the real provider ------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn provider_tokens_log_in_with_the_mariadb_cli_pymysql_and_node() {
    let provider = Provider::start().await;
    let gw = Gw::start(|c| with_identity(c, Some(&provider.issuer), None)).await;
    let token = provider.token("agent-a", "secret-a").await;

    let out = clients::mariadb(gw.addr, TARGET, &token)
        .args([
            "--enable-cleartext-plugin",
            "--ssl",
            &format!("--ssl-ca={}", gw.ca_file.display()),
            "--ssl-verify-server-cert",
            "-e",
            "SELECT 40 + 2",
        ])
        .run()
        .await;
    out.assert_success();
    // (MariaDB's client notes that --enable-cleartext-plugin is implied; MySQL's needs it.)
    assert_eq!(out.stdout.lines().last(), Some("42"), "{out}");

    let out = clients::python("token_login.py")
        .connect_to(gw.addr, TARGET, &token, None)
        .args(["--ssl-ca", &gw.ca_file.display().to_string()])
        .run()
        .await;
    out.assert_success();
    assert_eq!(out.json()["one"], 1);

    let out = clients::node("token_login.js")
        .connect_to(gw.addr, TARGET, &token, None)
        .args(["--ssl-ca", &gw.ca_file.display().to_string()])
        .run()
        .await;
    out.assert_success();
    assert_eq!(out.json()["one"], 1);

    // The identity is on every session record.
    wait_until(secs(5), "three sessions recorded", || {
        gw.sessions().len() >= 3
    })
    .await;
    for s in gw.sessions() {
        let id = &s.identity;
        assert_eq!(id.issuer, provider.issuer);
        assert_eq!(id.subject, "agent-a");
        assert_eq!(id.display_name, "agent-a", "display_name_claim = client_id");
        assert_eq!(id.auth_method, AuthMethod::OidcToken);
        assert_eq!(id.role.as_deref(), Some("orders-writers"));
        assert_eq!(id.claims["team"], "orders");
        assert!(id.claims.get("jti").is_none(), "secret claims are removed");
        assert!(id.expires_at.unwrap() > now());
        assert_eq!(s.target, TARGET);
        assert!(s.client_tls);
        let recorded = serde_json::to_string(&s).unwrap();
        assert!(!recorded.contains(&token), "the token is never recorded");
    }
    assert_not_logged(&token);
    provider.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jit_credentials_serve_sysbench_and_are_revocable() {
    let provider = Provider::start().await;
    let gw = Gw::start(|c| with_identity(c, Some(&provider.issuer), None)).await;
    let token = provider.token("agent-a", "secret-a").await;
    let db = TestDb::create("chp_id_sysbench").await;

    let (status, creds) = gw
        .mint(
            &token,
            json!({"target": TARGET, "ttl_secs": 300, "plugin": "mysql_native_password"}),
        )
        .await;
    assert_eq!(status, 201, "{creds}");
    let user = creds["user"].as_str().unwrap().to_string();
    let password = creds["password"].as_str().unwrap().to_string();
    assert!(user.starts_with("jit_"));

    for command in ["prepare", "run"] {
        let out = clients::sysbench(
            gw.addr,
            &user,
            &password,
            &db.name,
            "oltp_read_only",
            command,
        )
        .args(["--tables=1", "--table-size=200", "--threads=2", "--time=3"])
        .timeout(secs(90))
        .run()
        .await;
        out.assert_success();
        if command == "run" {
            assert!(out.stdout.contains("transactions:"), "{out}");
        }
    }
    wait_until(secs(5), "sysbench sessions recorded", || {
        gw.sessions().iter().any(|s| s.client_user == user)
    })
    .await;
    let s = gw
        .sessions()
        .into_iter()
        .find(|s| s.client_user == user)
        .unwrap();
    assert_eq!(s.identity.auth_method, AuthMethod::JitCredential);
    assert_eq!(s.identity.subject, "agent-a");
    assert_eq!(s.identity.role.as_deref(), Some("orders-writers"));

    // caching_sha2_password credentials with the mariadb CLI over TLS.
    let (_, sha2) = gw.mint(&token, json!({"target": TARGET})).await;
    assert_eq!(sha2["plugin"], "caching_sha2_password");
    let out = clients::mariadb(
        gw.addr,
        sha2["user"].as_str().unwrap(),
        sha2["password"].as_str().unwrap(),
    )
    .args(["--ssl", "-e", "SELECT 7"])
    .run()
    .await;
    out.assert_success();

    // Revoked: the open session ends, and the next login fails.
    let mut open = SqlClient::via(gw.addr, &user, &password, None)
        .await
        .unwrap();
    assert_eq!(scalar(&mut open, "SELECT 5").await, "5");
    let open_id = gw.sessions().last().unwrap().session_id.clone();
    let resp = gw
        .api_client()
        .delete(gw.api_url(&format!("/v1/credentials/{user}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let goodbye = within(secs(5), "the revoked session's goodbye", open.conn.next()).await;
    let err = match goodbye {
        Some(Ok(p)) => ErrInfo::parse(&p.payload).unwrap(),
        other => panic!("expected an ERR packet, got {other:?}"),
    };
    assert_eq!(err.code, 4031);
    assert!(err.message.contains("revoked"), "{}", err.message);
    wait_until(secs(5), "the revoked session's end", || {
        gw.session_end_reason(&open_id).is_some()
    })
    .await;
    assert_eq!(
        gw.session_end_reason(&open_id).unwrap(),
        "credentials_revoked"
    );
    let err = SqlClient::via(gw.addr, &user, &password, None)
        .await
        .err()
        .unwrap();
    assert_eq!(err.server().map(|e| e.code), Some(1045));
    assert_logged(&format!(
        "unknown, revoked or expired just-in-time credentials {user}"
    ))
    .await;
    assert_not_logged(&token);
    assert!(
        !log_text().contains(&password),
        "JIT passwords are never logged"
    );
    provider.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jit_credentials_expire_and_belong_to_one_identity() {
    let dev = Dev::start().await;
    let gw = Gw::start(|c| {
        with_identity(c, None, Some(&dev.issuer.issuer));
        c.roles.get_mut("dev-agents").unwrap().jit_max_ttl_secs = 1;
    })
    .await;
    let alice = dev.mint("alice", json!({"repository": "acme/orders"}));
    let bob = dev.mint("bob", json!({"repository": "acme/orders"}));
    let mint = |t: String| {
        let gw = &gw;
        async move {
            let (status, body) = gw
                .mint(&t, json!({"target": TARGET, "ttl_secs": 3600}))
                .await;
            assert_eq!(status, 201, "{body}");
            body
        }
    };
    let a = mint(alice.clone()).await;
    let b = mint(bob.clone()).await;
    // The role bounds the TTL (1 s), whatever was asked.
    assert!(a["expires_at"].as_i64().unwrap() <= now() + 1);

    // Bob cannot revoke Alice's credentials.
    let resp = gw
        .api_client()
        .delete(gw.api_url(&format!("/v1/credentials/{}", a["user"].as_str().unwrap())))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_logged("revoke: no such credentials for this identity").await;

    // Bob's user name with Alice's password: refused.
    let err = SqlClient::via(
        gw.addr,
        b["user"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.server().map(|e| e.code), Some(1045));
    assert_logged("wrong password").await;

    // Expired.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = SqlClient::via(
        gw.addr,
        a["user"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.server().map(|e| e.code), Some(1045));
    // The refusal's audit record (written before the client gets its error),
    // not the shared log: its reason is "expired" whether or not a mint swept
    // the entry in between.
    let user = a["user"].as_str().unwrap();
    let refusal = |gw: &Gw| {
        gw.refusals()
            .into_iter()
            .find(|(start, _)| start.client_user == user)
    };
    wait_until(secs(5), "the expired login's refusal is recorded", || {
        refusal(&gw).is_some()
    })
    .await;
    let (start, reason) = refusal(&gw).unwrap();
    assert!(
        reason.starts_with(&format!(
            "auth_failed: just-in-time credentials {user} of alice expired at "
        )),
        "{reason}"
    );
    assert_eq!(start.identity.subject, "alice");

    // No token, a bad token, a target the role does not grant.
    let r = gw
        .api_client()
        .post(gw.api_url("/v1/credentials"))
        .body(json!({"target": TARGET}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        gw.mint("not-a-token", json!({"target": TARGET})).await.0,
        401
    );
    assert_eq!(
        gw.mint(&alice, json!({"target": OTHER_TARGET})).await.0,
        403
    );
    dev.shut().await;
}

// --- roles: upstream user, databases, session deadline ----------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_role_picks_the_upstream_user_and_its_databases() {
    let mut root = SqlClient::direct(None).await;
    root.exec(&format!(
        "CREATE USER IF NOT EXISTS '{RO_USER}'@'%' IDENTIFIED BY '{RO_PASSWORD}'"
    ))
    .await;
    root.exec("CREATE DATABASE IF NOT EXISTS chp_id_ro_db")
        .await;
    root.exec(&format!(
        "GRANT SELECT ON chp_id_ro_db.* TO '{RO_USER}'@'%'"
    ))
    .await;
    let dev = Dev::start().await;
    let gw = Gw::start(|c| with_identity(c, None, Some(&dev.issuer.issuer))).await;

    let reader = dev.mint("reader", json!({"repository": "acme/readonly"}));
    // dev-agents (acme/*) sorts before dev-readers: the first matching role wins.
    let mut c = token_login(
        gw.addr,
        TARGET,
        reader.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    assert!(scalar(&mut c, "SELECT CURRENT_USER()")
        .await
        .starts_with("root@"));

    let mut config_roles = None;
    let gw2 = Gw::start(|c| {
        with_identity(c, None, Some(&dev.issuer.issuer));
        c.roles.remove("dev-agents");
        config_roles = Some(c.roles.len());
    })
    .await;
    assert!(config_roles.is_some());
    let mut c = token_login(
        gw2.addr,
        TARGET,
        reader.as_bytes(),
        Transport::Tls(&gw2.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    assert_eq!(
        scalar(&mut c, "SELECT CURRENT_USER()").await,
        format!("{RO_USER}@%")
    );
    let s = gw2.sessions().pop().unwrap();
    assert_eq!(s.upstream_user, RO_USER);
    assert_eq!(s.identity.role.as_deref(), Some("dev-readers"));

    // A database the role does not grant: refused at login.
    let err = token_login_to(
        gw2.addr,
        TARGET,
        reader.as_bytes(),
        Transport::Tls(&gw2.ca_file),
        false,
        Some("mysql"),
    )
    .await
    .err()
    .flatten()
    .expect("ERR");
    assert_eq!(err.code, 1044, "{}", err.message);
    assert_logged("database not granted by the role").await;
    let mut c = token_login_to(
        gw2.addr,
        TARGET,
        reader.as_bytes(),
        Transport::Tls(&gw2.ca_file),
        false,
        Some("chp_id_ro_db"),
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    assert_eq!(scalar(&mut c, "SELECT DATABASE()").await, "chp_id_ro_db");
    dev.shut().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_when_the_role_max_session_time_runs_out() {
    let dev = Dev::start().await;
    let gw = Gw::start(|c| {
        with_identity(c, None, Some(&dev.issuer.issuer));
        c.roles.get_mut("dev-agents").unwrap().max_session_secs = Some(2);
    })
    .await;
    let token = dev.mint("short", json!({"repository": "acme/orders"}));
    let mut c = token_login(
        gw.addr,
        TARGET,
        token.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    assert_eq!(scalar(&mut c, "SELECT 1").await, "1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The gateway closed the session with an error packet.
    let p = within(secs(5), "the gateway's goodbye", c.conn.next()).await;
    let err = match p {
        Some(Ok(p)) => ErrInfo::parse(&p.payload).unwrap(),
        other => panic!("expected an ERR packet, got {other:?}"),
    };
    assert_eq!(err.code, 4031);
    assert!(err.message.contains("grant expired"), "{}", err.message);
    let sid = gw.sessions().pop().unwrap().session_id;
    wait_until(secs(5), "session end recorded", || {
        gw.session_end_reason(&sid).is_some()
    })
    .await;
    assert_eq!(gw.session_end_reason(&sid).unwrap(), "grant_expired");
    dev.shut().await;
}

// --- bad input -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_malformed_tokens_are_refused() {
    let dev = Dev::start().await;
    let gw = Gw::start(|c| with_identity(c, None, Some(&dev.issuer.issuer))).await;
    let kid = dev.issuer.key().kid().to_string();
    // Sanity: a good token logs in.
    let good = dev.mint("good", json!({"repository": "acme/orders"}));
    token_login(
        gw.addr,
        TARGET,
        good.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();

    // alg: none (with and without a signature part).
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(serde_json::to_string(&dev.claims("mallory"))
        .unwrap()
        .as_bytes());
    assert_refused(&gw, &format!("{header}.{payload}."), "not a JWT").await;
    assert_refused(
        &gw,
        &format!("{header}.{payload}.c2lnbmF0dXJlLXNpZ25hdHVyZQ"),
        "not a JWT",
    )
    .await;

    // Signed by a key the issuer does not have, with the issuer's kid.
    let other = DevIssuer::new(
        dev.issuer.issuer.clone(),
        DevKey::generate(Algorithm::ES256).unwrap(),
    );
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.clone());
    let forged = other.sign(&dev.claims("mallory"), Some(h)).unwrap();
    assert_refused(&gw, &forged, "signature does not verify").await;

    // Unknown kid (triggers one rate-limited refresh, then refuses).
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("no-such-kid".into());
    let unknown = other.sign(&dev.claims("mallory"), Some(h)).unwrap();
    assert_refused(&gw, &unknown, "key id is not in the JWKS").await;

    // Tampered payload: a valid signature over other claims.
    let (h, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut claims = dev.claims("good");
    claims.insert("repository".into(), json!("acme/admin"));
    let tampered = format!(
        "{h}.{}.{sig}",
        b64(serde_json::to_string(&claims).unwrap().as_bytes())
    );
    assert_refused(&gw, &tampered, "signature does not verify").await;

    // Truncated.
    let truncated = &good[..good.len() - 12];
    assert_refused(&gw, truncated, "signature does not verify").await;
    assert_refused(&gw, &good[..good.len() / 2], "token").await;

    // 1 MiB: refused before decoding.
    let huge = format!("{}.{}", good, "A".repeat(1 << 20));
    assert_refused(&gw, &huge, "larger than the limit of 16384 bytes").await;
    dev.shut().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_are_checked_strictly() {
    let dev = Dev::start().await;
    let gw = Gw::start(|c| with_identity(c, None, Some(&dev.issuer.issuer))).await;
    let with = |changes: Value| {
        let mut c = dev.claims("claims-test");
        for (k, v) in obj(changes) {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
        dev.issuer.sign(&c, None).unwrap()
    };
    let now = now();
    let cases = [
        (json!({"exp": now - 3600}), "token expired"),
        (json!({"nbf": now + 3600}), "token not valid yet"),
        (json!({"exp": (now + 300).to_string()}), "exp"),
        (json!({"nbf": now.to_string()}), "nbf"),
        (json!({"exp": null}), "required claim `exp` is missing"),
        (json!({"nbf": null}), "required claim `nbf` is missing"),
        (json!({"sub": null}), "required claim `sub` is missing"),
        (
            json!({"aud": "someone-else"}),
            "token audience is not one this gateway accepts",
        ),
        (json!({"aud": null}), "required claim `aud` is missing"),
        (
            json!({"aud": ["a", "b"]}),
            "token audience is not one this gateway accepts",
        ),
        (
            json!({"iss": "https://evil.example"}),
            "token issuer \"https://evil.example\" is not configured",
        ),
        (json!({"iss": 7}), "claim `iss` has the wrong type"),
        (json!({"sub": ""}), "claim `sub` has the wrong type"),
    ];
    for (changes, reason) in cases {
        let token = with(changes.clone());
        assert_refused(&gw, &token, reason).await;
    }
    // Authorized parties: the client the token was issued to.
    let gw_azp = Gw::start(|c| {
        with_identity(c, None, Some(&dev.issuer.issuer));
        c.issuers.get_mut("dev").unwrap().authorized_parties = vec!["ci-agent".into()];
    })
    .await;
    let mut c = dev.claims("azp-test");
    c.insert("azp".into(), json!("ci-agent"));
    let ok = dev.issuer.sign(&c, None).unwrap();
    token_login(
        gw_azp.addr,
        TARGET,
        ok.as_bytes(),
        Transport::Tls(&gw_azp.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    c.insert("azp".into(), json!("someone-else"));
    let other = dev.issuer.sign(&c, None).unwrap();
    assert_refused(&gw_azp, &other, "issued to a client (azp/client_id)").await;
    let none = with(json!({}));
    assert_refused(&gw_azp, &none, "issued to a client (azp/client_id)").await;

    // An array aud that includes ours is fine.
    let ok = with(json!({"aud": ["other", AUDIENCE]}));
    token_login(
        gw.addr,
        TARGET,
        ok.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    dev.shut().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn key_confusion_and_header_key_hints_are_refused_or_ignored() {
    let provider = Provider::start().await;
    let dev = Dev::start().await;
    let gw =
        Gw::start(|c| with_identity(c, Some(&provider.issuer), Some(&dev.issuer.issuer))).await;

    // The provider's RSA public key used as an HS256 secret (CVE-2016-10555).
    let jwks = provider.jwks().await;
    let rsa = &jwks["keys"][0];
    let now = now();
    let claims = json!({"iss": provider.issuer, "sub": "agent-a", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300, "groups": ["db-writers"]});
    let mut h = Header::new(Algorithm::HS256);
    h.kid = rsa["kid"].as_str().map(String::from);
    for secret in [
        rsa.to_string().into_bytes(),
        rsa["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let t = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert_refused(&gw, &t, "signature algorithm HS256 is not accepted").await;
    }

    // jku / x5u / embedded jwk pointing at an attacker's key server: never fetched.
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap = listener.local_addr().unwrap();
    let h2 = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let attacker = DevIssuer::new(
        dev.issuer.issuer.clone(),
        DevKey::generate(Algorithm::ES256).unwrap(),
    );
    let attacker_jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(attacker.jwks()["keys"][0].clone()).unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(attacker.key().kid().to_string());
    h.jku = Some(format!("http://{trap}/jwks.json"));
    h.x5u = Some(format!("http://{trap}/cert.pem"));
    h.jwk = Some(attacker_jwk.clone());
    let forged = attacker.sign(&dev.claims("mallory"), Some(h)).unwrap();
    assert_refused(&gw, &forged, "key id is not in the JWKS").await;
    // The same hints on a token the issuer really signed: ignored, it logs in.
    let mut h = Header::new(Algorithm::ES256);
    h.jku = Some(format!("http://{trap}/jwks.json"));
    h.x5u = Some(format!("http://{trap}/cert.pem"));
    h.jwk = Some(attacker_jwk);
    let real = dev.issuer.sign(&dev.claims("hinted"), Some(h)).unwrap();
    token_login(
        gw.addr,
        TARGET,
        real.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a key URL from a token was fetched"
    );

    // A valid token whose role does not grant the target.
    let billing = provider.token("agent-b", "secret-b").await;
    assert_refused(&gw, &billing, "match but none grants target 'orders'").await;
    // The refused identity is the verified one, without a role.
    let (start, _) = gw
        .refusals()
        .into_iter()
        .find(|(_, why)| why.contains("none grants target"))
        .unwrap();
    assert_eq!(start.identity.subject, "agent-b");
    assert_eq!(start.identity.issuer, provider.issuer);
    assert_eq!(start.identity.role, None);
    assert_eq!(start.identity.claims["team"], "billing");
    assert_eq!(start.target, TARGET);
    let unmatched = dev.mint("stranger", json!({"repository": "other/repo"}));
    assert_refused(&gw, &unmatched, "no role matches the identity's claims").await;
    dev.shut().await;
    provider.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clear_text_tokens_need_tls_unless_allowed_on_loopback() {
    let dev = Dev::start().await;
    let gw = Gw::start(|c| with_identity(c, None, Some(&dev.issuer.issuer))).await;
    let token = dev.mint("plain", json!({"repository": "acme/orders"}));
    // Asked politely: the gateway refuses before asking for the token (no auth
    // switch is ever sent; token_login would panic on an unexpected one).
    let err = token_login(gw.addr, TARGET, token.as_bytes(), Transport::Plain, false)
        .await
        .err()
        .flatten()
        .expect("ERR");
    assert_eq!(err.code, 1045);
    assert_logged("clear-text password (token) offered over a connection without TLS").await;
    // Sent unasked in the handshake response: refused all the same, never verified.
    let err = token_login(gw.addr, TARGET, token.as_bytes(), Transport::Plain, true)
        .await
        .err()
        .flatten()
        .expect("ERR");
    assert_eq!(err.code, 1045);
    assert_not_logged(&token);
    let before = gw.sessions().len();
    assert_eq!(before, 0, "no session was opened");

    // With allow_cleartext_without_tls, loopback clients may.
    let gw2 = Gw::start(|c| {
        with_identity(c, None, Some(&dev.issuer.issuer));
        c.identity.allow_cleartext_without_tls = true;
    })
    .await;
    let mut c = token_login(gw2.addr, TARGET, token.as_bytes(), Transport::Plain, false)
        .await
        .map_err(|e| e.map(|e| e.message))
        .unwrap();
    assert_eq!(scalar(&mut c, "SELECT 2").await, "2");
    dev.shut().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_keys_outlive_the_jwks_endpoint() {
    let dev = Dev::start().await;
    let issuer_url = dev.issuer.issuer.clone();
    let gw = Gw::start(|c| with_identity(c, None, Some(&issuer_url))).await;
    let first = dev.mint("cache", json!({"repository": "acme/orders"}));
    let second = dev.mint("cache", json!({"repository": "acme/orders"}));
    token_login(
        gw.addr,
        TARGET,
        first.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    dev.shut().await;
    // The JWKS endpoint is gone: the cached key still verifies.
    token_login(
        gw.addr,
        TARGET,
        second.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    // A gateway that never fetched the keys: a clear error.
    let gw2 = Gw::start(|c| with_identity(c, None, Some(&issuer_url))).await;
    assert_refused(
        &gw2,
        &second,
        &format!("no signing keys for issuer {issuer_url}: the JWKS could not be fetched"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eddsa_tokens_log_in_and_algorithms_are_pinned_per_issuer() {
    let dev = Dev::start_with(DevKey::generate(Algorithm::EdDSA).unwrap()).await;
    let gw = Gw::start(|c| with_identity(c, None, Some(&dev.issuer.issuer))).await;
    let token = dev.mint("edwards", json!({"repository": "acme/orders"}));
    let mut c = token_login(
        gw.addr,
        TARGET,
        token.as_bytes(),
        Transport::Tls(&gw.ca_file),
        false,
    )
    .await
    .map_err(|e| e.map(|e| e.message))
    .unwrap();
    assert_eq!(scalar(&mut c, "SELECT 3").await, "3");
    // The same issuer restricted to RS256: the EdDSA token is refused.
    let gw2 = Gw::start(|c| {
        with_identity(c, None, Some(&dev.issuer.issuer));
        c.issuers.get_mut("dev").unwrap().algorithms = vec!["RS256".into()];
    })
    .await;
    assert_refused(&gw2, &token, "signature algorithm EdDSA is not accepted").await;
    dev.shut().await;
}

/// JWKS fetches (successful or not) the gateway logged for `issuer`.
fn jwks_fetches(issuer: &str) -> usize {
    log_text()
        .lines()
        .filter(|l| {
            (l.contains("fetched signing keys") || l.contains("fetching signing keys failed"))
                && l.contains(&format!("issuer={issuer} "))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_is_followed_and_unknown_kids_cannot_storm_the_jwks() {
    let dev = Dev::start().await;
    let url = dev.issuer.issuer.clone();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let gw = Gw::start(|c| {
        with_identity(c, None, Some(&url));
        c.issuers.get_mut("dev").unwrap().jwks_min_refresh_secs = 3;
    })
    .await;
    let login = |token: String| {
        let gw = &gw;
        async move {
            token_login(
                gw.addr,
                TARGET,
                token.as_bytes(),
                Transport::Tls(&gw.ca_file),
                false,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.map(|e| e.message))
        }
    };
    login(dev.mint("rotate", json!({"repository": "acme/orders"})))
        .await
        .unwrap();
    assert_eq!(jwks_fetches(&url), 1);

    // The issuer rotates its key (same URL, new key, new kid).
    dev.shut().await;
    let dev = Dev::start_at(addr, DevKey::generate(Algorithm::ES256).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(3100)).await; // jwks_min_refresh_secs
    let rotated = dev.mint("rotate", json!({"repository": "acme/orders"}));
    login(rotated)
        .await
        .expect("the new key is fetched on its unknown kid");
    assert_eq!(jwks_fetches(&url), 2);

    // A storm of random kids within the refresh interval: refused, no fetch.
    for i in 0..20 {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(format!("random-kid-{i}"));
        let t = dev.issuer.sign(&dev.claims("storm"), Some(h)).unwrap();
        assert_refused(&gw, &t, "key id is not in the JWKS").await;
    }
    assert_eq!(jwks_fetches(&url), 2, "unknown kids caused JWKS fetches");
    dev.shut().await;
}
