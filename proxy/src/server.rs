//! The gateway server: the listener, the connection limit, what sessions share,
//! and graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{Authenticator, LoginContext};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use chaperone_mysql::protocol::handshake::ServerGreeting;
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::{CapabilityFlags, MariadbCapabilities, Packet};
use chaperone_mysql::upstream::{Target, UpstreamRequest};
use chaperone_schemas::tap::Tap;

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Target(#[from] chaperone_config::TargetError),
    #[error("TLS: {0}")]
    Tls(#[from] chaperone_mysql::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the greeting tells clients about the database behind the gateway,
/// learnt from the targets' own greetings.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
}

impl Default for ServerInfo {
    fn default() -> Self {
        // Until a target has been reached: a conservative MySQL 8-compatible
        // profile (DEPRECATE_EOF is not assumed).
        ServerInfo {
            version: "8.0.0".to_string(),
            capabilities: crate::session::GATEWAY_CAPABILITIES
                - CapabilityFlags::CLIENT_DEPRECATE_EOF,
            mariadb_capabilities: MariadbCapabilities::empty(),
            collation: 45,
        }
    }
}

/// State shared by every session of a gateway.
pub struct Shared {
    pub config: Config,
    pub targets: BTreeMap<String, Target>,
    pub authenticator: Arc<dyn Authenticator>,
    pub tap: Arc<dyn Tap>,
    pub metrics: Arc<Metrics>,
    pub tls: Option<TlsAcceptor>,
    pub registry: Registry,
    pub any_local_infile: bool,
    /// The policies and approvals (`[policies.*]`, `[approvals]`).
    pub guardrails: Arc<crate::guardrails::Guardrails>,
    /// The guardrail policies and masking rules in force: replaced by a
    /// config reload (`crate::control`).
    pub control: crate::control::ControlPlane,
    server_info: RwLock<ServerInfo>,
    next_connection_id: AtomicU32,
}

impl Shared {
    pub fn next_connection_id(&self) -> u32 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn server_info(&self) -> ServerInfo {
        self.server_info.read().expect("server info lock").clone()
    }

    /// Keeps the greeting in line with what the database really is.
    pub fn observe_server(&self, greeting: &ServerGreeting) {
        let mut info = self.server_info.write().expect("server info lock");
        if info.version != greeting.server_version {
            info.version = greeting.server_version.clone();
            info.capabilities = greeting.capabilities;
            info.mariadb_capabilities = greeting.mariadb_capabilities;
            info.collation = greeting.collation;
        }
    }

    /// Clear-text passwords without TLS: never, unless `[identity]
    /// allow_cleartext_without_tls` is set and the client is on loopback.
    pub fn allow_cleartext_without_tls(&self, ctx: &LoginContext) -> bool {
        self.config.identity.allow_cleartext_without_tls && ctx.peer.ip().is_loopback()
    }
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: Option<SocketAddr>,
    ready: Arc<AtomicBool>,
}

impl Gateway {
    /// Binds the listener and prepares everything sessions need. Targets are
    /// probed once so that the greeting shows the real server version; a target
    /// that is down is logged, not fatal.
    pub async fn bind(
        config: Config,
        authenticator: Arc<dyn Authenticator>,
        tap: Arc<dyn Tap>,
    ) -> Result<Gateway, StartError> {
        config.validate()?;
        let mut targets = BTreeMap::new();
        for (name, t) in &config.targets {
            targets.insert(name.clone(), t.resolve(name)?);
        }
        let tls = match &config.tls {
            Some(t) => Some(t.acceptor()?),
            None => None,
        };
        let listener = TcpListener::bind(config.gateway.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.gateway.listen,
                source,
            })?;
        let any_local_infile = targets.values().any(|t| t.allow_local_infile);
        let guardrails = Arc::new(crate::guardrails::Guardrails::from_config(&config).await?);
        let policies = crate::control::PolicySet::compile(&config)?;
        let shared = Arc::new(Shared {
            control: crate::control::ControlPlane::new(policies),
            targets,
            authenticator,
            tap,
            metrics: Arc::new(Metrics::new()),
            tls,
            registry: Registry::default(),
            any_local_infile,
            guardrails,
            server_info: RwLock::new(ServerInfo::default()),
            next_connection_id: AtomicU32::new(1),
            config,
        });
        probe_targets(&shared).await;
        Ok(Gateway {
            shared,
            listener,
            admin: None,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Starts the admin endpoint (metrics, health) if configured.
    pub async fn start_admin(
        &mut self,
        shutdown: CancellationToken,
    ) -> std::io::Result<Option<SocketAddr>> {
        let Some(addr) = self.shared.config.gateway.admin_listen else {
            return Ok(None);
        };
        let local = crate::metrics::serve_admin(
            addr,
            self.shared.metrics.clone(),
            self.ready.clone(),
            self.shared.tap.clone(),
            async move { shutdown.cancelled().await },
        )
        .await?;
        self.admin = Some(local);
        info!(%local, "admin endpoint (metrics, health) listening");
        Ok(Some(local))
    }

    /// Accepts connections until `shutdown` is cancelled, then waits up to the
    /// configured grace period for sessions to finish their current command.
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.shared.config.gateway.max_connections));
        let sessions = TaskTracker::new();
        let session_shutdown = CancellationToken::new();
        self.ready.store(true, Ordering::Relaxed);
        info!(addr = %self.local_addr(), "gateway listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.shared.metrics.connections_total.inc();
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                self.shared.metrics.error("too_many_connections");
                warn!(%peer, "connection limit reached; refusing");
                let max = self.shared.config.gateway.max_packet_size;
                tokio::spawn(refuse_connection(tcp, max));
                continue;
            };
            let shared = self.shared.clone();
            let token = session_shutdown.clone();
            sessions.spawn(async move {
                shared.metrics.connections_active.inc();
                crate::session::run(shared.clone(), tcp, peer, token).await;
                shared.metrics.connections_active.dec();
                drop(permit);
            });
        }
        self.ready.store(false, Ordering::Relaxed);
        drop(self.listener);
        sessions.close();
        info!(
            sessions = sessions.len(),
            "shutting down: waiting for in-flight commands"
        );
        // Idle sessions close now; busy ones finish their command first.
        session_shutdown.cancel();
        // Statements held for approval stop waiting (their requests stay pending).
        self.shared.guardrails.begin_shutdown();
        if tokio::time::timeout(self.shared.config.shutdown_grace(), sessions.wait())
            .await
            .is_err()
        {
            warn!("shutdown grace period over; closing remaining sessions");
        }
        info!("gateway stopped");
    }
}

async fn refuse_connection(tcp: tokio::net::TcpStream, max_packet: usize) {
    use futures::SinkExt;
    let mut conn = tokio_util::codec::Framed::new(
        tcp,
        chaperone_mysql::protocol::PacketCodec::new(max_packet),
    );
    let err = ErrInfo::new(codes::TOO_MANY_CONNECTIONS, "08004", "Too many connections");
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        conn.send(Packet::new(0, err.encode())),
    )
    .await;
}

/// Logs in to each target once, to learn its version and capabilities.
async fn probe_targets(shared: &Arc<Shared>) {
    let attrs = BTreeMap::from([("program_name".to_string(), "chaperone-probe".to_string())]);
    for target in shared.targets.values() {
        let req = UpstreamRequest {
            capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_CONNECT_ATTRS,
            mariadb_capabilities: MariadbCapabilities::empty(),
            collation: 45,
            max_packet_size: 1 << 24,
            database: None,
            connect_attrs: &attrs,
            timeout: shared.config.upstream_connect_timeout(),
            max_packet: 1 << 24,
        };
        match target.connect(&req).await {
            Ok(mut upstream) => {
                use futures::SinkExt;
                info!(target = %target.name, version = %upstream.greeting.server_version, "target reachable");
                shared.observe_server(&upstream.greeting);
                let _ = upstream
                    .conn
                    .send(Packet::new(
                        0,
                        vec![chaperone_mysql::protocol::command::COM_QUIT],
                    ))
                    .await;
            }
            Err(e) => {
                warn!(target = %target.name, error = %e, "target not reachable at start; sessions will retry")
            }
        }
    }
}
