//! The harness of the gateway's integration tests, shared by every test file
//! (`mod support;` at the top of `proxy/tests/<name>.rs`).
//!
//! Everything here is real: a [`TestGateway`] is a `chaperone_proxy::Gateway`
//! started in-process on an ephemeral loopback port, in front of the real MariaDB
//! at [`MARIADB_ADDR`], with the users of `deploy/chaperone.toml` (passwords
//! inlined) and a [`MemoryTap`] to assert on. Around it:
//!
//! - [`sql`]: a small MySQL client written with `chaperone_proxy`'s own protocol
//!   code, to set up data, read the processlist, or speak raw packets;
//! - [`db`]: a MariaDB database per test ([`db::TestDb`]), dropped at the end;
//! - [`clients`]: the external clients (`mariadb` CLI, Python and Node scripts in
//!   `tests/clients/`, sysbench), run with timeouts.
//!
//! Typical use:
//!
//! ```ignore
//! mod support;
//! use support::*;
//!
//! #[tokio::test(flavor = "multi_thread")]
//! async fn something() {
//!     let gw = TestGateway::start().await;
//!     let db = TestDb::create("chp_gw_something").await;
//!     let out = clients::mariadb(gw.addr, APP_USER, APP_PASSWORD)
//!         .database(&db.name)
//!         .sql("SELECT 1")
//!         .run()
//!         .await;
//!     out.assert_success();
//!     gw.stop().await;
//! }
//! ```
//!
//! Every wait is bounded ([`within`], [`wait_until`]); nothing listens beyond
//! loopback.

#![allow(dead_code)]

pub mod clients;
pub mod db;
pub mod sql;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chaperone_proxy::auth::ConfigUsers;
use chaperone_proxy::config::{SecretSource, TlsConfig, UserConfig};
use chaperone_proxy::server::Shared;
use chaperone_proxy::{Config, Gateway};
use chaperone_schemas::tap::MemoryTap;
use chaperone_schemas::{CommandSummary, Frame, SessionEnd, SessionStart, TapEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use db::TestDb;
#[allow(unused_imports)]
pub use sql::SqlClient;

/// The MariaDB every test talks to (root, empty password; see
/// `scripts/setup-test-env.sh`).
pub const MARIADB_ADDR: &str = "127.0.0.1:3306";
pub const MARIADB_USER: &str = "root";
pub const MARIADB_PASSWORD: &str = "";

/// The user of `deploy/chaperone.toml` (caching_sha2_password).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "apppw";
/// A second caching_sha2_password user, for COM_CHANGE_USER.
pub const OTHER_USER: &str = "other";
pub const OTHER_PASSWORD: &str = "otherpw";
/// A mysql_native_password user.
pub const NATIVE_USER: &str = "native";
pub const NATIVE_PASSWORD: &str = "nativepw";

/// The repository root (`/work/main` in a checkout).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proxy/ has a parent")
        .to_path_buf()
}

/// `deploy/chaperone.toml` made fit for a test: listeners on `127.0.0.1:0`, no
/// admin endpoint, secrets inlined (the target logs in as MariaDB's root), and
/// the extra users [`OTHER_USER`] and [`NATIVE_USER`]. TLS is configured by
/// [`TestGateway::start_with`] (a certificate the tests can trust).
pub fn test_config() -> Config {
    let path = repo_root().join("deploy/chaperone.toml");
    let mut config = Config::load(&path).expect("deploy/chaperone.toml loads");
    config.gateway.listen = "127.0.0.1:0".parse().expect("address");
    config.gateway.admin_listen = None;
    for target in config.targets.values_mut() {
        target.address = MARIADB_ADDR.to_string();
        target.user = MARIADB_USER.to_string();
        target.password = inline(MARIADB_PASSWORD);
    }
    let target = config
        .users
        .get(APP_USER)
        .expect("deploy/chaperone.toml declares the `app` user")
        .target
        .clone();
    config.users.get_mut(APP_USER).expect("app user").password = inline(APP_PASSWORD);
    config.users.insert(
        OTHER_USER.to_string(),
        password_user(&target, OTHER_PASSWORD, "caching_sha2_password"),
    );
    config.users.insert(
        NATIVE_USER.to_string(),
        password_user(&target, NATIVE_PASSWORD, "mysql_native_password"),
    );
    config
}

/// A `[users.NAME]` entry with an inline password (other settings default).
pub fn password_user(target: &str, password: &str, plugin: &str) -> UserConfig {
    let text = format!("target = {target:?}\npassword = {password:?}\nplugin = {plugin:?}\n");
    toml::from_str(&text).expect("a valid [users.*] entry")
}

/// An inline secret.
pub fn inline(password: &str) -> SecretSource {
    SecretSource {
        password: Some(password.to_string()),
        ..Default::default()
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway running in this process, on an ephemeral port.
///
/// Dropping it requests shutdown; [`TestGateway::stop`] also waits for it.
pub struct TestGateway {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Everything the gateway handed to its tap.
    pub tap: MemoryTap,
    /// The gateway's shared state: metrics, registry of live sessions, config.
    pub shared: Arc<Shared>,
    /// The CA file that signed the gateway's TLS certificate (for `localhost`
    /// and `127.0.0.1`), for clients that verify it.
    pub ca_file: PathBuf,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    _tls_dir: TempDir,
}

impl TestGateway {
    /// A gateway with [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A gateway with [`test_config`] changed by `adjust` (timeouts, limits, ...).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let tls_dir = TempDir::new("chaperone-test-tls");
        let (cert, key) = chaperone_mysql::tls::generate_self_signed().expect("dev cert");
        let cert_path = tls_dir.path().join("cert.pem");
        let key_path = tls_dir.path().join("key.pem");
        std::fs::write(&cert_path, cert).expect("write cert");
        std::fs::write(&key_path, key).expect("write key");
        let mut config = test_config();
        config.tls = Some(TlsConfig {
            cert: Some(cert_path.clone()),
            key: Some(key_path),
            self_signed: false,
            require: false,
        });
        adjust(&mut config);
        let users = Arc::new(ConfigUsers::from_config(&config).expect("test users resolve"));
        let tap = MemoryTap::new();
        let gateway = Gateway::bind(config, users, Arc::new(tap.clone()))
            .await
            .expect("gateway starts");
        let addr = gateway.local_addr();
        let shared = gateway.shared();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway.run(shutdown.clone()));
        TestGateway {
            addr,
            tap,
            shared,
            ca_file: cert_path,
            shutdown,
            task: Some(task),
            _tls_dir: tls_dir,
        }
    }

    /// Port of [`Self::addr`], for clients that take host and port apart.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests a graceful shutdown without waiting (in-flight commands finish).
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Requests shutdown and waits (at most the grace period plus 5 s) for the
    /// gateway to stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let limit = self.shared.config.shutdown_grace() + Duration::from_secs(5);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(limit, task)
                .await
                .expect("gateway stops within its grace period")
                .expect("gateway task does not panic");
        }
    }

    /// Waits for the gateway's task to end (after [`Self::request_shutdown`]).
    pub async fn join(&mut self, limit: Duration) {
        if let Some(task) = self.task.take() {
            tokio::time::timeout(limit, task)
                .await
                .expect("gateway stops in time")
                .expect("gateway task does not panic");
        }
    }

    /// Client connections open now (the `connections_active` gauge).
    pub fn active_connections(&self) -> i64 {
        self.shared.metrics.connections_active.get()
    }

    /// Authenticated sessions in the registry (what KILL can reach).
    pub fn live_sessions(&self) -> usize {
        self.shared.registry.len()
    }

    /// Waits until no client connection is open (bounded).
    pub async fn wait_idle(&self, limit: Duration) {
        wait_until(limit, "the gateway has no open connection", || {
            self.active_connections() == 0 && self.live_sessions() == 0
        })
        .await;
    }

    /// The session records of the tap, in order.
    pub fn sessions(&self) -> Vec<SessionStart> {
        self.tap
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TapEvent::SessionStart(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// The session-end records of the tap, in order.
    pub fn session_ends(&self) -> Vec<SessionEnd> {
        self.tap
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TapEvent::SessionEnd(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// The command summaries of one session, in order.
    pub fn commands(&self, session_id: &str) -> Vec<CommandSummary> {
        self.tap
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TapEvent::Command(c) if c.session_id == session_id => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// The frames of one session, in the order the tap received them.
    pub fn frames(&self, session_id: &str) -> Vec<Frame> {
        self.tap
            .events()
            .into_iter()
            .filter_map(|e| match e {
                TapEvent::Frame(f) if &*f.session_id == session_id => Some(f),
                _ => None,
            })
            .collect()
    }

    /// The session whose upstream connection has this id (as `CONNECTION_ID()`
    /// shows through the gateway).
    pub fn session_by_upstream_id(&self, upstream_id: u32) -> Option<SessionStart> {
        self.sessions()
            .into_iter()
            .find(|s| s.upstream_connection_id == upstream_id)
    }

    /// The session the gateway gave this client-visible connection id (the
    /// handshake's thread id).
    pub fn session_by_connection_id(&self, connection_id: u32) -> Option<SessionStart> {
        self.sessions()
            .into_iter()
            .rev()
            .find(|s| s.connection_id == connection_id)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// With `CHAPERONE_TEST_LOG=<filter>` (e.g. `debug`), the gateway's logs go to
/// the test's output (shown for failing tests, or all with `--nocapture`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("CHAPERONE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `cond` every 20 ms until it holds, failing the test after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds, for brevity in tests.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
