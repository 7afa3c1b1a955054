//! The upstream leg: the gateway logs in to the target database as a client, with
//! its own credentials, which never reach the agent.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mysql_common::auth::plugins::{AuthProc, ChallengeResponsePlugin, Context};
use mysql_common::packets::AuthPlugin;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::protocol::handshake::{
    ServerGreeting, UpstreamHello, AUTH_MORE_DATA_HEADER, AUTH_SWITCH_HEADER,
};
use crate::protocol::response::{ErrInfo, ERR_HEADER, OK_HEADER};
use crate::protocol::{
    CapabilityFlags, Malformed, MariadbCapabilities, Packet, PacketCodec, PacketError,
};
use crate::secret::Secret;
use crate::stream::Stream;
use crate::tls::UpstreamConnector;

/// A target database, resolved from the config (its passwords read, its TLS
/// connector built): `chaperone_config::TargetConfig::resolve`.
pub struct Target {
    pub name: String,
    pub address: String,
    pub user: String,
    password: Secret,
    /// More users the gateway may log in as, chosen per role.
    users: BTreeMap<String, Secret>,
    pub allow_local_infile: bool,
    tls: Option<UpstreamConnector>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// A target the gateway logs in to as `user` (or one of `users`, chosen
    /// per role), over `tls` when set.
    pub fn new(
        name: String,
        address: String,
        user: String,
        password: Secret,
        users: BTreeMap<String, Secret>,
        allow_local_infile: bool,
        tls: Option<UpstreamConnector>,
    ) -> Self {
        Target {
            name,
            address,
            user,
            password,
            users,
            allow_local_infile,
            tls,
        }
    }
}

/// Why the gateway could not open an upstream session.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error("the database refused the login: {} {}", .0.code, .0.message)]
    Refused(ErrInfo),
    #[error("the database does not support {0:?}, which the client negotiated")]
    MissingCapability(CapabilityFlags),
    #[error("the database does not support MariaDB's {0:?}, which the client negotiated")]
    MissingMariadbCapability(MariadbCapabilities),
    #[error("TLS to the database failed: {0}")]
    Tls(std::io::Error),
    #[error("the database requires TLS-less auth plugin {0}, which is not supported")]
    Plugin(String),
    #[error("protocol error from the database: {0}")]
    Protocol(String),
    #[error("database user {0} is not configured for this target")]
    UnknownUser(String),
}

impl From<PacketError> for UpstreamError {
    fn from(e: PacketError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

impl From<Malformed> for UpstreamError {
    fn from(e: Malformed) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// An authenticated connection to a target, ready for commands.
pub struct Upstream {
    pub conn: Framed<Stream, PacketCodec>,
    pub greeting: ServerGreeting,
    pub capabilities: CapabilityFlags,
}

/// What the session asks of the upstream connection.
pub struct UpstreamRequest<'a> {
    /// The capabilities negotiated with the client; the upstream leg uses the same
    /// ones, so that responses can be forwarded unchanged.
    pub capabilities: CapabilityFlags,
    /// The MariaDB extended capabilities negotiated with the client (same reason).
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub max_packet_size: u32,
    pub database: Option<&'a str>,
    pub connect_attrs: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    pub max_packet: usize,
}

/// Capabilities that change the layout of what the server sends: if the client
/// negotiated one, the upstream leg must have it too.
pub const FORMAT_CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_PROTOCOL_41
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS);

struct AuthContext<'a> {
    pass: &'a [u8],
    tls: bool,
    scramble: &'a [u8],
}

impl Context for &AuthContext<'_> {
    fn pass(&self) -> &[u8] {
        self.pass
    }
    fn is_ipc_transport(&self) -> bool {
        false
    }
    fn is_tls_transport(&self) -> bool {
        self.tls
    }
    fn scramble(&self) -> &[u8] {
        self.scramble
    }
    fn server_key_pem(&self) -> Option<&[u8]> {
        None
    }
}

async fn read(conn: &mut Framed<Stream, PacketCodec>) -> Result<Packet, UpstreamError> {
    match conn.next().await {
        Some(p) => Ok(p?),
        None => Err(UpstreamError::Protocol(
            "the database closed the connection during login".into(),
        )),
    }
}

fn plugin_step(
    proc_: &mut AuthProc,
    ctx: &AuthContext<'_>,
    challenge: &[u8],
) -> Result<Option<Vec<u8>>, UpstreamError> {
    proc_
        .run(ctx, challenge)
        .map(|r| r.data().map(<[u8]>::to_vec))
        .map_err(|e| UpstreamError::Protocol(format!("auth plugin: {e:?}")))
}

impl Target {
    /// Connects and logs in.
    pub async fn connect(&self, req: &UpstreamRequest<'_>) -> Result<Upstream, UpstreamError> {
        self.connect_as(req, None).await
    }

    /// Connects and logs in as `user` (one of `[targets.T.users.*]`, or None for
    /// the target's own user).
    pub async fn connect_as(
        &self,
        req: &UpstreamRequest<'_>,
        user: Option<&str>,
    ) -> Result<Upstream, UpstreamError> {
        let (user, password) = match user {
            None => (self.user.as_str(), &self.password),
            Some(u) if u == self.user => (self.user.as_str(), &self.password),
            Some(u) => match self.users.get_key_value(u) {
                Some((name, secret)) => (name.as_str(), secret),
                None => return Err(UpstreamError::UnknownUser(u.to_string())),
            },
        };
        tokio::time::timeout(
            req.timeout,
            self.connect_inner(req, user, password.expose()),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(self.address.clone()))?
    }

    async fn connect_inner(
        &self,
        req: &UpstreamRequest<'_>,
        user: &str,
        password: &[u8],
    ) -> Result<Upstream, UpstreamError> {
        let tcp =
            TcpStream::connect(&self.address)
                .await
                .map_err(|source| UpstreamError::Connect {
                    address: self.address.clone(),
                    source,
                })?;
        tcp.set_nodelay(true).ok();
        let mut conn = Framed::new(Stream::Plain(tcp), PacketCodec::new(req.max_packet));
        let first = read(&mut conn).await?;
        if first.header() == Some(ERR_HEADER) {
            return Err(UpstreamError::Refused(ErrInfo::parse(&first.payload)?));
        }
        let greeting = ServerGreeting::parse(&first.payload)?;
        let missing = (req.capabilities & FORMAT_CAPABILITIES) - greeting.capabilities;
        if !missing.is_empty() {
            return Err(UpstreamError::MissingCapability(missing));
        }
        let missing = req.mariadb_capabilities - greeting.mariadb_capabilities;
        if !missing.is_empty() {
            return Err(UpstreamError::MissingMariadbCapability(missing));
        }
        let mut caps = (req.capabilities & greeting.capabilities)
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        caps.remove(CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_COMPRESS);
        if !self.allow_local_infile {
            caps.remove(CapabilityFlags::CLIENT_LOCAL_FILES);
        }
        if req.database.is_some() {
            caps.insert(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
        } else {
            caps.remove(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
        }
        caps &= greeting.capabilities | CapabilityFlags::CLIENT_CONNECT_ATTRS;
        if !greeting
            .capabilities
            .contains(CapabilityFlags::CLIENT_CONNECT_ATTRS)
        {
            caps.remove(CapabilityFlags::CLIENT_CONNECT_ATTRS);
        }
        let mut seq = first.next_seq();
        let mut tls = false;
        if let Some((connector, name)) = &self.tls {
            if !greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL) {
                return Err(UpstreamError::Tls(std::io::Error::other(
                    "the database does not offer TLS, and the target requires it",
                )));
            }
            caps.insert(CapabilityFlags::CLIENT_SSL);
            let ssl = UpstreamHello {
                capabilities: caps,
                mariadb_capabilities: req.mariadb_capabilities,
                max_packet_size: req.max_packet_size,
                collation: req.collation,
                user: "",
                auth_response: &[],
                database: None,
                auth_plugin: "",
                connect_attrs: req.connect_attrs,
            }
            .encode_ssl_request();
            conn.send(Packet::new(seq, ssl)).await?;
            seq = seq.wrapping_add(1);
            let parts = conn.into_parts();
            if !parts.read_buf.is_empty() {
                return Err(UpstreamError::Protocol(
                    "the database sent data before the TLS handshake".into(),
                ));
            }
            let Stream::Plain(tcp) = parts.io else {
                unreachable!("fresh connection is plain")
            };
            let tls_stream = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(UpstreamError::Tls)?;
            conn = Framed::new(
                Stream::ClientTls(Box::new(tls_stream)),
                PacketCodec::new(req.max_packet),
            );
            tls = true;
        }
        let mut scramble = greeting.scramble.clone();
        let mut plugin_name = greeting.auth_plugin.clone();
        let mut proc_ = AuthProc::init(&AuthPlugin::from_bytes(plugin_name.as_bytes()))
            .map_err(|_| UpstreamError::Plugin(plugin_name.clone()))?;
        let ctx = AuthContext {
            pass: password,
            tls,
            scramble: &scramble,
        };
        let first_response = plugin_step(&mut proc_, &ctx, &scramble)?.unwrap_or_default();
        let hello = UpstreamHello {
            capabilities: caps,
            mariadb_capabilities: req.mariadb_capabilities,
            max_packet_size: req.max_packet_size,
            collation: req.collation,
            user,
            auth_response: &first_response,
            database: req.database,
            auth_plugin: &plugin_name,
            connect_attrs: req.connect_attrs,
        };
        conn.send(Packet::new(seq, hello.encode())).await?;
        loop {
            let packet = read(&mut conn).await?;
            seq = packet.next_seq();
            match packet.header() {
                Some(OK_HEADER) => break,
                Some(ERR_HEADER) => {
                    return Err(UpstreamError::Refused(ErrInfo::parse(&packet.payload)?))
                }
                Some(AUTH_SWITCH_HEADER) => {
                    let body = &packet.payload[1..];
                    let nul = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                    plugin_name = String::from_utf8_lossy(&body[..nul]).into_owned();
                    let data = body.get(nul + 1..).unwrap_or(&[]);
                    scramble = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                    proc_ = AuthProc::init(&AuthPlugin::from_bytes(plugin_name.as_bytes()))
                        .map_err(|_| UpstreamError::Plugin(plugin_name.clone()))?;
                    let ctx = AuthContext {
                        pass: password,
                        tls,
                        scramble: &scramble,
                    };
                    let response = plugin_step(&mut proc_, &ctx, &scramble)?.unwrap_or_default();
                    conn.send(Packet::new(seq, response)).await?;
                }
                Some(AUTH_MORE_DATA_HEADER) => {
                    let ctx = AuthContext {
                        pass: password,
                        tls,
                        scramble: &scramble,
                    };
                    if let Some(response) = plugin_step(&mut proc_, &ctx, &packet.payload[1..])? {
                        conn.send(Packet::new(seq, response)).await?;
                    }
                }
                _ => {
                    return Err(UpstreamError::Protocol(
                        "unexpected packet during login".into(),
                    ))
                }
            }
        }
        conn.set_backpressure_boundary(64 * 1024);
        Ok(Upstream {
            conn,
            greeting,
            capabilities: caps,
        })
    }
}
