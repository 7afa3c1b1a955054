//! One client connection, from greeting to goodbye: handshake and TLS,
//! authentication, the upstream login, and the command loop that forwards every
//! command and its response while handing each frame to the tap.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaperone_schemas::event::now_ns;
use chaperone_schemas::{CommandSummary, Direction, Frame, SessionEnd, SessionStart, TapEvent};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::auth::{AuthError, Grant, LoginContext, Proof};
use crate::guardrails::{GuardError, SqlCommand};
use crate::metrics::{CommandLabels, DirectionLabels};
use crate::protocol::command::{self, *};
use crate::protocol::exchange::{Exchange, ResponseFacts, Step};
use crate::protocol::execute::{self, PreparedStatement};
use crate::protocol::handshake::{
    self, ClientHello, Greeting, CACHING_SHA2_PASSWORD, CLEAR_PASSWORD, FAST_AUTH_SUCCESS,
    PERFORM_FULL_AUTHENTICATION, SCRAMBLE_LEN,
};
use crate::protocol::lenenc::Reader;
use crate::protocol::response::{codes, encode_ok, ErrInfo, OkInfo, SERVER_STATUS_AUTOCOMMIT};
use crate::protocol::{
    CapabilityFlags, Malformed, MariadbCapabilities, Packet, PacketCodec, PacketError,
};
use crate::registry::{self, KillInText, LiveSession};
use crate::server::Shared;
use crate::sql::AnalysisCache;
use crate::stream::Stream;
use crate::upstream::{Upstream, UpstreamError, UpstreamRequest};

type Conn = Framed<Stream, PacketCodec>;

/// Why a session ended, as recorded.
#[derive(Debug)]
enum End {
    ClientQuit,
    ClientDisconnected,
    UpstreamClosed(String),
    IdleTimeout,
    /// The grant ran out: the role's longest session, or the credentials' expiry.
    GrantExpired,
    /// The credentials that established the session were revoked.
    Revoked,
    Shutdown,
    Protocol(String),
    AuthFailed,
    /// COM_CHANGE_USER closed this session; a new one starts on the same connection.
    ChangeUser,
}

impl End {
    fn reason(&self) -> String {
        match self {
            End::ClientQuit => "client_quit".into(),
            End::ClientDisconnected => "client_disconnected".into(),
            End::UpstreamClosed(e) => format!("upstream_closed: {e}"),
            End::IdleTimeout => "idle_timeout".into(),
            End::GrantExpired => "grant_expired".into(),
            End::Revoked => "credentials_revoked".into(),
            End::Shutdown => "shutdown".into(),
            End::Protocol(e) => format!("protocol_error: {e}"),
            End::AuthFailed => "auth_failed".into(),
            End::ChangeUser => "change_user".into(),
        }
    }
}

/// Errors that end a session.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("client: {0}")]
    Client(PacketError),
    #[error("client sent a malformed packet: {0}")]
    ClientMalformed(Malformed),
    #[error("database: {0}")]
    Upstream(String),
}

/// Capabilities the gateway implements on the client-facing side. Not offered:
/// compression, query attributes, optional metadata, MariaDB extensions.
/// MariaDB extensions offered when the database offers them: extended column
/// metadata (a column's JSON, UUID, INET type) only adds a block to column
/// definitions, which the gateway forwards as they are and parses past. Not
/// offered: progress reports, bulk execution, metadata caching, which change
/// the command and response formats the gateway follows.
pub const GATEWAY_MARIADB_CAPABILITIES: MariadbCapabilities =
    MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;

pub const GATEWAY_CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_LONG_PASSWORD
    .union(CapabilityFlags::CLIENT_FOUND_ROWS)
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_CONNECT_WITH_DB)
    .union(CapabilityFlags::CLIENT_ODBC)
    .union(CapabilityFlags::CLIENT_IGNORE_SPACE)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41)
    .union(CapabilityFlags::CLIENT_INTERACTIVE)
    .union(CapabilityFlags::CLIENT_IGNORE_SIGPIPE)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_RESERVED)
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_CONNECT_ATTRS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF);

fn random_scramble() -> [u8; SCRAMBLE_LEN] {
    use rand::Rng;
    let mut rng = rand::rng();
    // Printable ASCII without NUL: some clients treat the scramble as a C string.
    std::array::from_fn(|_| rng.random_range(0x21u8..0x7F))
}

async fn read_packet(conn: &mut Conn) -> Result<Option<Packet>, PacketError> {
    conn.next().await.transpose()
}

/// The next command: one the client sent while the previous one was held for
/// approval, else the next from the connection.
async fn next_packet(
    conn: &mut Conn,
    pipelined: &mut Option<Packet>,
) -> Result<Option<Packet>, PacketError> {
    match pipelined.take() {
        Some(p) => Ok(Some(p)),
        None => read_packet(conn).await,
    }
}

/// Resolves when the client has gone away (end of stream, a broken
/// connection, or COM_QUIT) while a command of its is held for approval
/// ([`crate::guardrails::ClientGone`]). A command it sends meanwhile (drivers
/// may pipeline PREPARE and EXECUTE) is kept in `pipelined` to run next; after
/// that the watch stops.
async fn client_gone(conn: &mut Conn, pipelined: &mut Option<Packet>) {
    if pipelined.is_none() {
        match read_packet(conn).await {
            Ok(Some(p)) if p.header() != Some(COM_QUIT) => *pipelined = Some(p),
            Ok(Some(_)) | Ok(None) | Err(_) => return,
        }
    }
    std::future::pending().await
}

/// The largest first packet (SSLRequest or handshake response) accepted.
const FIRST_PACKET_LIMIT: usize = 1 << 20;

/// Reads the client's first packet (SSLRequest or handshake response) from the
/// socket byte-exactly, not through the codec's read buffer: clients send their
/// TLS ClientHello right behind the SSLRequest, often in the same segment, and
/// those bytes must still be in the socket when the TLS handshake starts.
async fn read_first_packet(client: &mut Conn) -> Result<Packet, PacketError> {
    use tokio::io::AsyncReadExt;
    // An SSLRequest is 32 bytes; a handshake response is a few hundred, plus at
    // most 64 KiB of connection attributes. A larger length is not a MySQL client.
    let limit = FIRST_PACKET_LIMIT;
    let io = client.get_mut();
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len > limit {
        return Err(PacketError::TooLarge { size: len, limit });
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok(Packet::new(header[3], payload))
}

/// Handles one client connection to the end. Never panics on bad input: every
/// failure ends in an ERR packet or a closed connection, and a log line.
pub async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let connection_id = shared.next_connection_id();
    let span = tracing::info_span!("session", conn = connection_id, peer = %peer);
    async move {
        tcp.set_nodelay(true).ok();
        let conn = Framed::new(
            Stream::Plain(tcp),
            PacketCodec::new(shared.config.gateway.max_packet_size),
        );
        let handshake = tokio::time::timeout(
            shared.config.handshake_timeout(),
            Session::handshake(&shared, conn, peer, connection_id),
        )
        .await;
        let session = match handshake {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => {
                debug!(error = %e, "handshake ended");
                return;
            }
            Err(_) => {
                shared.metrics.error("handshake_timeout");
                warn!("client did not finish its handshake in time; closing");
                return;
            }
        };
        session.serve(shutdown).await;
    }
    .instrument(span)
    .await
}

/// A session after a successful login.
struct Session {
    shared: Arc<Shared>,
    client: Conn,
    upstream: Upstream,
    connection_id: u32,
    peer: SocketAddr,
    /// Capabilities negotiated with the client.
    caps: CapabilityFlags,
    hello: ClientHello,
    grant: Grant,
    session_id: Arc<str>,
    database: Option<String>,
    statements: HashMap<u32, PreparedStatement>,
    /// The session's guardrails: its policy, approvals (docs/guardrails.md).
    guard: crate::guardrails::SessionGuard,
    /// The role's masking policy and per-statement masking state.
    masking: crate::masking::SessionMasking,
    /// The masker of the response being relayed (set by `command`).
    response_masker: Option<crate::masking::ResponseMasker>,
    /// A command the client sent while its previous one was held for
    /// approval (see [`client_gone`]): the next one to run.
    pipelined: Option<Packet>,
    /// The control plane's generation `guard` and `masking` were taken from.
    policy_generation: u64,
    /// Next frame sequence number (per session, gap-free).
    frame_seq: u64,
    command_index: u64,
    bytes_from_client: u64,
    bytes_to_client: u64,
    /// The part of `bytes_to_client` already added to the metrics.
    bytes_to_client_reported: u64,
    /// The sequence id of the next packet to the client in the reply to the
    /// current command: at first 1, or more when the request took several
    /// physical packets (16 MiB and up); it moves on as the reply is relayed.
    reply_seq: u8,
    tls: bool,
}

/// Outcome of the authentication exchange.
struct Login {
    grant: Grant,
    /// The sequence id for the gateway's next packet to the client.
    seq: u8,
}

impl Session {
    async fn handshake(
        shared: &Arc<Shared>,
        mut client: Conn,
        peer: SocketAddr,
        connection_id: u32,
    ) -> Result<Session, SessionError> {
        let scramble = random_scramble();
        let server = shared.server_info();
        let mut advertised =
            GATEWAY_CAPABILITIES & (server.capabilities | CapabilityFlags::CLIENT_LONG_PASSWORD);
        advertised |= CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        if shared.tls.is_some() {
            advertised |= CapabilityFlags::CLIENT_SSL;
        }
        if shared.any_local_infile {
            advertised |= CapabilityFlags::CLIENT_LOCAL_FILES;
        }
        let advertised_mariadb = GATEWAY_MARIADB_CAPABILITIES & server.mariadb_capabilities;
        let greeting = Greeting {
            server_version: &format!("{}-chaperone", server.version),
            connection_id,
            scramble: &scramble,
            capabilities: advertised,
            mariadb_capabilities: advertised_mariadb,
            collation: server.collation,
            auth_plugin: handshake::NATIVE_PASSWORD,
        };
        client
            .send(Packet::new(0, greeting.encode()))
            .await
            .map_err(SessionError::Client)?;

        let mut packet = match read_first_packet(&mut client).await {
            Ok(p) => p,
            Err(e) => {
                if let PacketError::TooLarge { .. } = e {
                    // Not a MySQL client (an HTTP request reads as a packet of
                    // several megabytes): answer at once rather than wait.
                    shared.metrics.error("protocol");
                    warn!(error = %e, "bad handshake response");
                    let err = ErrInfo::new(codes::HANDSHAKE_ERROR, "08S01", "Bad handshake");
                    let _ = client.send(Packet::new(1, err.encode())).await;
                }
                return Err(SessionError::Client(e));
            }
        };
        let mut tls = false;
        if handshake::is_ssl_request(&packet.payload) {
            let Some(acceptor) = &shared.tls else {
                return Err(SessionError::ClientMalformed(Malformed::new(
                    "SSLRequest",
                    "TLS was not offered",
                )));
            };
            let parts = client.into_parts();
            if !parts.read_buf.is_empty() {
                // read_first_packet buffers nothing: what follows the SSLRequest
                // stays in the socket for the TLS handshake (where injected
                // plaintext fails). Should anything be buffered, never let it
                // through as if it came over TLS.
                shared.metrics.error("protocol");
                warn!("client sent data before the TLS handshake; closing");
                return Err(SessionError::ClientMalformed(Malformed::new(
                    "SSLRequest",
                    "data after the SSLRequest before TLS",
                )));
            }
            let Stream::Plain(tcp) = parts.io else {
                unreachable!("the client leg starts plain")
            };
            let tls_stream = acceptor.accept(tcp).await.map_err(|e| {
                debug!(error = %e, "TLS handshake failed");
                SessionError::Client(PacketError::Io(e))
            })?;
            client = Framed::new(
                Stream::ServerTls(Box::new(tls_stream)),
                PacketCodec::new(shared.config.gateway.max_packet_size),
            );
            tls = true;
            packet = match read_packet(&mut client)
                .await
                .map_err(SessionError::Client)?
            {
                Some(p) => p,
                None => return Err(SessionError::Client(PacketError::Truncated)),
            };
        }
        let next_seq = packet.next_seq();
        let mut hello = match ClientHello::parse(&packet.payload) {
            Ok(h) => h,
            Err(e) => {
                shared.metrics.error("protocol");
                warn!(error = %e, "bad handshake response");
                let err = ErrInfo::new(codes::HANDSHAKE_ERROR, "08S01", "Bad handshake");
                let _ = client.send(Packet::new(next_seq, err.encode())).await;
                return Err(SessionError::ClientMalformed(e));
            }
        };
        if shared.config.tls.as_ref().is_some_and(|t| t.require) && !tls {
            let err = ErrInfo::new(
                3159,
                "08004",
                "Connections using insecure transport are prohibited: connect with TLS (e.g. mariadb --ssl)",
            );
            let _ = client.send(Packet::new(next_seq, err.encode())).await;
            return Err(SessionError::ClientMalformed(Malformed::new(
                "handshake",
                "TLS required",
            )));
        }
        let caps = hello.capabilities & advertised;
        hello.mariadb_capabilities &= advertised_mariadb;
        let ctx = LoginContext {
            user: hello.user.clone(),
            tls,
            peer,
            nonce: scramble,
        };
        let login = match Self::authenticate(shared, &mut client, &hello, ctx, next_seq).await? {
            Ok(login) => login,
            Err((reason, seq)) => {
                shared.metrics.auth_failures_total.inc();
                warn!(user = %hello.user, reason = %reason, "authentication failed");
                let err = ErrInfo::new(
                    codes::ACCESS_DENIED,
                    "28000",
                    format!(
                        "Access denied for user '{}'@'{}' (using password: YES)",
                        hello.user,
                        peer.ip()
                    ),
                );
                let _ = client.send(Packet::new(seq, err.encode())).await;
                return Err(SessionError::ClientMalformed(Malformed::new(
                    "login",
                    "access denied",
                )));
            }
        };
        let mut login = login;
        let (policies, policy_generation) = shared.control.current();
        let mut guard = crate::guardrails::SessionGuard::new(
            shared.guardrails.clone(),
            &policies,
            &login.grant,
            &shared.config.gateway.id,
        );
        if let Err(err) = guard
            .check_connect(hello.database.as_deref(), &mut login.grant.deadline, "")
            .await
        {
            warn!(user = %hello.user, reason = %err.message, "session refused by guardrails");
            let _ = client.send(Packet::new(login.seq, err.encode())).await;
            return Err(SessionError::ClientMalformed(Malformed::new(
                "login",
                "refused by guardrails",
            )));
        }
        let mut session_attrs = hello.connect_attrs.clone();
        let upstream = match Self::open_upstream(
            shared,
            &login.grant,
            caps,
            &hello,
            hello.database.as_deref(),
            &mut session_attrs,
        )
        .await
        {
            Ok(u) => u,
            Err(err) => {
                let _ = client.send(Packet::new(login.seq, err.encode())).await;
                return Err(SessionError::Upstream(err.message));
            }
        };
        let ok = encode_ok(
            OkInfo {
                status: SERVER_STATUS_AUTOCOMMIT,
                ..Default::default()
            },
            caps,
        );
        let ok_seq = login.seq;
        client.set_backpressure_boundary(64 * 1024);
        let masking = crate::masking::SessionMasking::new(
            policies.masking(login.grant.identity.role.as_deref()),
        );
        let mut session = Session {
            shared: shared.clone(),
            masking,
            policy_generation,
            response_masker: None,
            pipelined: None,
            client,
            upstream,
            connection_id,
            peer,
            caps,
            database: hello.database.clone(),
            hello,
            grant: login.grant,
            session_id: Arc::from(""),
            statements: HashMap::new(),
            guard,
            frame_seq: 0,
            command_index: 0,
            bytes_from_client: 0,
            bytes_to_client: 0,
            bytes_to_client_reported: 0,
            reply_seq: 1,
            tls,
        };
        // Registered before the client learns it is logged in, so that a KILL
        // of this connection id from another connection always finds it.
        session.start_record();
        if let Err(e) = session.client.send(Packet::new(ok_seq, ok)).await {
            session.end_record(&End::ClientDisconnected);
            return Err(SessionError::Client(e));
        }
        Ok(session)
    }

    /// Runs the authentication exchange. The outer error ends the connection
    /// (I/O, protocol); the inner error is a refusal with the reason and the
    /// sequence id for the ERR packet.
    async fn authenticate(
        shared: &Arc<Shared>,
        client: &mut Conn,
        hello: &ClientHello,
        mut ctx: LoginContext,
        mut seq: u8,
    ) -> Result<Result<Login, (String, u8)>, SessionError> {
        let auth = &shared.authenticator;
        let plugin = auth.plugin_for(&hello.user);
        let mut response = hello.auth_response.clone();
        // Refused before any token is asked for; a client that sent one
        // unasked in its handshake response gets it ignored, never verified.
        if plugin == CLEAR_PASSWORD && !ctx.tls && !shared.allow_cleartext_without_tls(&ctx) {
            return Ok(Err((
                "clear-text password (token) offered over a connection without TLS".into(),
                seq,
            )));
        }
        if hello.auth_plugin.as_deref() != Some(plugin) {
            // Switch the client to the plugin this user needs, with a fresh nonce.
            let nonce = if plugin == CLEAR_PASSWORD {
                Vec::new()
            } else {
                ctx.nonce = random_scramble();
                let mut n = ctx.nonce.to_vec();
                n.push(0);
                n
            };
            client
                .send(Packet::new(
                    seq,
                    handshake::encode_auth_switch(plugin, &nonce),
                ))
                .await
                .map_err(SessionError::Client)?;
            let Some(p) = read_packet(client).await.map_err(SessionError::Client)? else {
                return Err(SessionError::Client(PacketError::Truncated));
            };
            seq = p.next_seq();
            response = p.payload.to_vec();
        }
        let result = if plugin == CLEAR_PASSWORD {
            let password = response.strip_suffix(&[0]).unwrap_or(&response);
            auth.authenticate(&ctx, Proof::Cleartext(password)).await
        } else if plugin == CACHING_SHA2_PASSWORD
            && ctx.tls
            && auth.wants_full_auth(&hello.user)
            && !response.is_empty()
        {
            client
                .send(Packet::new(
                    seq,
                    handshake::encode_auth_more_data(&[PERFORM_FULL_AUTHENTICATION]),
                ))
                .await
                .map_err(SessionError::Client)?;
            let Some(p) = read_packet(client).await.map_err(SessionError::Client)? else {
                return Err(SessionError::Client(PacketError::Truncated));
            };
            seq = p.next_seq();
            let password = p.payload.strip_suffix(&[0]).unwrap_or(&p.payload);
            auth.authenticate(&ctx, Proof::Cleartext(password)).await
        } else {
            let r = auth
                .authenticate(
                    &ctx,
                    Proof::Scramble {
                        plugin,
                        data: &response,
                    },
                )
                .await;
            if r.is_ok() && plugin == CACHING_SHA2_PASSWORD && !response.is_empty() {
                client
                    .send(Packet::new(
                        seq,
                        handshake::encode_auth_more_data(&[FAST_AUTH_SUCCESS]),
                    ))
                    .await
                    .map_err(SessionError::Client)?;
                seq = seq.wrapping_add(1);
            }
            r
        };
        Ok(match result {
            Ok(grant) => Ok(Login { grant, seq }),
            Err(e) => {
                let (reason, identity) = match e {
                    AuthError::Denied { identity, reason } => (reason, Some(*identity)),
                    AuthError::Refused(reason) => (reason, None),
                    e => (e.to_string(), None),
                };
                record_refused_login(shared, hello, &ctx, identity, &reason);
                Err((reason, seq))
            }
        })
    }

    /// Opens the upstream connection for a grant. On failure, the ERR packet for
    /// the client (which never names the gateway's own database user).
    async fn open_upstream(
        shared: &Arc<Shared>,
        grant: &Grant,
        caps: CapabilityFlags,
        hello: &ClientHello,
        database: Option<&str>,
        attrs: &mut BTreeMap<String, String>,
    ) -> Result<Upstream, ErrInfo> {
        let Some(target) = shared.targets.get(&grant.target) else {
            return Err(ErrInfo::new(
                codes::ACCESS_DENIED,
                "28000",
                format!("Chaperone: target '{}' is not configured", grant.target),
            ));
        };
        attrs.insert("chaperone_identity".into(), grant.identity.subject.clone());
        attrs.insert("chaperone_gateway".into(), shared.config.gateway.id.clone());
        let req = UpstreamRequest {
            capabilities: caps,
            mariadb_capabilities: hello.mariadb_capabilities,
            collation: hello.collation,
            max_packet_size: hello.max_packet_size,
            database,
            connect_attrs: attrs,
            timeout: shared.config.upstream_connect_timeout(),
            max_packet: shared.config.gateway.max_packet_size,
        };
        if let (Some(allowed), Some(db)) = (&grant.databases, database) {
            if !allowed.iter().any(|a| a == db) {
                warn!(target = %grant.target, database = %db, "database not granted by the role");
                return Err(ErrInfo::new(
                    1044,
                    "42000",
                    format!("Access denied for user '{}' to database '{db}'", hello.user),
                ));
            }
        }
        match target
            .connect_as(&req, grant.upstream_user.as_deref())
            .await
        {
            Ok(upstream) => {
                shared.observe_server(&upstream.greeting);
                Ok(upstream)
            }
            Err(e) => {
                shared.metrics.upstream_connect_failures_total.inc();
                warn!(target = %target.name, error = %e, "upstream connection failed");
                Err(match e {
                    // Errors about the client's own request pass through.
                    UpstreamError::Refused(err) if err.code == 1049 => err,
                    UpstreamError::Refused(err) => ErrInfo::new(
                        codes::ACCESS_DENIED,
                        "28000",
                        format!(
                            "Chaperone: the database of target '{}' refused the gateway's login (error {}); ask the gateway's operator to check the target's credentials",
                            target.name, err.code
                        ),
                    ),
                    other => ErrInfo::new(
                        2003,
                        "HY000",
                        format!(
                            "Chaperone: cannot reach the database of target '{}': {other}. Retry later, or ask the gateway's operator",
                            target.name
                        ),
                    ),
                })
            }
        }
    }

    fn start_record(&mut self) {
        self.session_id = Arc::from(new_session_id().as_str());
        let identity = &self.grant.identity;
        self.shared.registry.insert(
            self.connection_id,
            LiveSession {
                upstream_connection_id: self.upstream.greeting.connection_id,
                owner: (identity.issuer.clone(), identity.subject.clone()),
                target: self.grant.target.clone(),
            },
        );
        let target = self.shared.targets.get(&self.grant.target);
        info!(
            session = %self.session_id,
            identity = %identity.subject,
            target = %self.grant.target,
            tls = self.tls,
            "session started"
        );
        self.shared
            .tap
            .record(TapEvent::SessionStart(Box::new(SessionStart {
                session_id: self.session_id.to_string(),
                connection_id: self.connection_id,
                upstream_connection_id: self.upstream.greeting.connection_id,
                started_at_ns: now_ns(),
                gateway_id: self.shared.config.gateway.id.clone(),
                identity: identity.clone(),
                client_user: self.hello.user.clone(),
                target: self.grant.target.clone(),
                upstream_user: self
                    .grant
                    .upstream_user
                    .clone()
                    .or_else(|| target.map(|t| t.user.clone()))
                    .unwrap_or_default(),
                database: self.database.clone(),
                client_addr: self.peer.to_string(),
                client_tls: self.tls,
                upstream_tls: self.upstream.conn.get_ref().is_tls(),
                connect_attrs: self.hello.connect_attrs.clone(),
                access_request_id: self.guard.access_request().map(str::to_string),
            })));
    }

    fn end_record(&mut self, end: &End) {
        self.shared.registry.remove(self.connection_id);
        info!(session = %self.session_id, reason = %end.reason(), commands = self.command_index, "session ended");
        self.shared
            .tap
            .record(TapEvent::SessionEnd(Box::new(SessionEnd {
                session_id: self.session_id.to_string(),
                ended_at_ns: now_ns(),
                reason: end.reason(),
                commands: self.command_index,
                frames: self.frame_seq,
                bytes_from_client: self.bytes_from_client,
                bytes_to_client: self.bytes_to_client,
            })));
    }

    fn frame(&mut self, direction: Direction, payload: Bytes) -> Frame {
        let frame = Frame {
            session_id: self.session_id.clone(),
            seq: self.frame_seq,
            command_index: self.command_index,
            time_ns: now_ns(),
            direction,
            payload,
        };
        self.frame_seq += 1;
        frame
    }

    /// After a config reload, the next command is judged and masked by the
    /// new policies (`crate::control`).
    fn follow_config_reload(&mut self) {
        if self.shared.control.generation() == self.policy_generation {
            return;
        }
        let (policies, generation) = self.shared.control.current();
        self.guard.reload(&policies);
        self.masking
            .set_policy(policies.masking(self.grant.identity.role.as_deref()));
        self.policy_generation = generation;
        debug!(generation, "session follows the reloaded config");
    }

    /// The command loop.
    async fn serve(mut self, shutdown: CancellationToken) {
        let idle = self.shared.config.idle_timeout();
        // The grant's end, checked between commands (a running command
        // finishes); re-armed when COM_CHANGE_USER brings a new grant.
        let mut armed_for = self.grant.deadline;
        let grant_timer = tokio::time::sleep_until(grant_instant(armed_for));
        tokio::pin!(grant_timer);
        // The idle timer is armed once and re-armed lazily: a command only moves
        // `last_activity`. Arming a timer per command (tokio::time::timeout) wakes
        // the runtime's timer driver on another worker thread every time, which
        // costs a context switch per command.
        let mut last_activity = tokio::time::Instant::now();
        let idle_timer = tokio::time::sleep_until(last_activity + idle);
        tokio::pin!(idle_timer);
        let end = loop {
            // Per iteration: COM_CHANGE_USER may bring other credentials.
            let revocation = self.grant.revocation.clone();
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Shutdown,
                () = revoked(revocation.as_ref()) => {
                    let err = ErrInfo::new(
                        4031,
                        "HY000",
                        "Chaperone: the credentials of this session were revoked; reconnect with fresh credentials",
                    );
                    let _ = self.client.send(Packet::new(0, err.encode())).await;
                    break End::Revoked;
                }
                () = &mut grant_timer, if armed_for.is_some() => {
                    let err = ErrInfo::new(
                        4031,
                        "HY000",
                        "Chaperone: the session's grant expired (the role's max_session_secs, or the just-in-time credentials' lifetime); reconnect with a fresh token or credentials",
                    );
                    let _ = self.client.send(Packet::new(0, err.encode())).await;
                    break End::GrantExpired;
                }
                () = &mut idle_timer => {
                    let due = last_activity + idle;
                    if tokio::time::Instant::now() < due {
                        idle_timer.as_mut().reset(due);
                        continue;
                    }
                    let err = ErrInfo::new(
                        4031,
                        "HY000",
                        "The client was disconnected by the gateway because of inactivity (idle_timeout_secs)",
                    );
                    let _ = self.client.send(Packet::new(0, err.encode())).await;
                    break End::IdleTimeout;
                }
                r = next_packet(&mut self.client, &mut self.pipelined) => r,
            };
            let packet = match next {
                Ok(Some(p)) => p,
                Ok(None) => break End::ClientDisconnected,
                Err(e) => {
                    self.shared.metrics.error("protocol");
                    warn!(error = %e, "bad packet from client");
                    if let PacketError::TooLarge { .. } = e {
                        let err = ErrInfo::new(
                            codes::PACKET_TOO_LARGE,
                            "08S01",
                            format!("Got a packet bigger than the gateway's max_packet_size: {e}"),
                        );
                        let _ = self.client.send(Packet::new(1, err.encode())).await;
                    }
                    break End::Protocol(e.to_string());
                }
            };
            if packet.seq != 0 {
                self.shared.metrics.error("protocol");
                warn!(
                    seq = packet.seq,
                    "command packet with a non-zero sequence id"
                );
                break End::Protocol(format!("command with sequence id {}", packet.seq));
            }
            self.follow_config_reload();
            match self.command(packet).await {
                Ok(None) => {
                    last_activity = tokio::time::Instant::now();
                    if self.grant.deadline != armed_for {
                        armed_for = self.grant.deadline;
                        grant_timer.as_mut().reset(grant_instant(armed_for));
                    }
                }
                Ok(Some(end)) => break end,
                Err(SessionError::Client(e)) => {
                    debug!(error = %e, "client went away");
                    break End::ClientDisconnected;
                }
                Err(SessionError::ClientMalformed(e)) => break End::Protocol(e.to_string()),
                Err(SessionError::Upstream(e)) => {
                    self.shared.metrics.error("upstream");
                    warn!(error = %e, "lost the database connection");
                    let err = ErrInfo::new(
                        2013,
                        "HY000",
                        format!("Chaperone: lost the connection to the database: {e}"),
                    );
                    let _ = self
                        .client
                        .send(Packet::new(self.reply_seq, err.encode()))
                        .await;
                    break End::UpstreamClosed(e);
                }
            }
        };
        if !matches!(end, End::UpstreamClosed(_)) {
            let _ = self
                .upstream
                .conn
                .send(Packet::new(0, vec![COM_QUIT]))
                .await;
        }
        self.end_record(&end);
    }

    /// Handles one command. `Ok(Some(end))` ends the session.
    async fn command(&mut self, packet: Packet) -> Result<Option<End>, SessionError> {
        let started = Instant::now();
        let started_ns = now_ns();
        let code = packet.header().unwrap_or(0xFF);
        self.shared
            .metrics
            .commands_total
            .get_or_create(&CommandLabels {
                command: command::name(code),
            })
            .inc();
        self.bytes_from_client += packet.payload.len() as u64;
        self.reply_seq = packet.next_seq();
        self.shared
            .metrics
            .bytes_total
            .get_or_create(&DirectionLabels {
                direction: "client_to_server",
            })
            .inc_by(packet.payload.len() as u64);
        let mut summary = CommandSummary {
            session_id: self.session_id.to_string(),
            command_index: self.command_index,
            started_at_ns: started_ns,
            command: command::name(code).to_string(),
            database: self.database.clone(),
            ..Default::default()
        };
        let frame = self.frame(Direction::ClientToServer, packet.payload.clone());
        if let Err(e) = self.shared.tap.record_request(TapEvent::Frame(frame)) {
            // Fail closed: nothing runs unrecorded.
            self.shared.metrics.error("tap");
            warn!(error = %e, "recording unavailable; command refused");
            let err = ErrInfo::new(
                codes::REFUSED_BY_POLICY,
                "HY000",
                format!("Chaperone: the command was not executed because it cannot be recorded ({e}); retry later"),
            );
            return self.refuse(summary, code, err).await;
        }

        self.response_masker = None;
        let mut forward = packet.payload.clone();
        // COM_STMT_PREPARE: the statement's analysis, kept with it once prepared.
        let mut prepared = None;
        // COM_STMT_PREPARE: its guardrail verdict, bound to its id once prepared.
        let mut prepared_guard = None;
        // COM_QUERY: the database a USE in it switches to.
        let mut use_db: Option<String> = None;
        match code {
            COM_QUIT => {
                self.finish(summary, started, None);
                return Ok(Some(End::ClientQuit));
            }
            _ if command::is_replication(code) => {
                let err = ErrInfo::new(
                    codes::NOT_SUPPORTED,
                    "42000",
                    format!(
                        "Chaperone: {} is refused: replication streams bypass the gateway's recording and masking",
                        command::name(code)
                    ),
                );
                return self.refuse(summary, code, err).await;
            }
            COM_CHANGE_USER => return self.change_user(packet, summary, started).await,
            COM_QUERY => {
                let sql = &packet.payload[1..];
                summary.sql = Some(String::from_utf8_lossy(sql).into_owned());
                let text = summary.sql.as_deref().unwrap_or_default();
                let analysis = AnalysisCache::shared().analyze(text);
                analysis.record_into(&mut summary, self.database.as_deref());
                if self.guard.active() {
                    let sql_text = summary.sql.take().unwrap_or_default();
                    let cmd = SqlCommand {
                        bytes: sql,
                        sql: &sql_text,
                        analysis: &analysis,
                        database: self.database.as_deref(),
                        connection_id: self.connection_id,
                        prepare: false,
                    };
                    let checked = {
                        let mut gone =
                            std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
                        self.guard
                            .check_sql(cmd, &mut self.upstream, &mut summary, gone.as_mut())
                            .await
                    };
                    summary.sql = Some(sql_text);
                    if let Err(e) = checked {
                        return self.guard_refused(summary, code, e).await;
                    }
                }
                use_db = analysis
                    .statements
                    .iter()
                    .rev()
                    .find_map(|s| s.use_database.clone());
                let sql_text = summary.sql.clone().unwrap_or_default();
                match self.masking.check(&sql_text, self.database.as_deref()) {
                    Ok(lineage) => {
                        self.response_masker = self.masking.masker(
                            false,
                            &lineage,
                            Some(&sql_text),
                            self.database.as_deref(),
                        )
                    }
                    Err(denial) => return self.refuse(summary, code, masking_denied(denial)).await,
                }
                match registry::find_kill(sql, &analysis) {
                    KillInText::Absent => {}
                    KillInText::Alone(kill) => match self.rewrite_kill(kill) {
                        Ok(rewritten) => forward = rewritten,
                        Err(err) => return self.refuse(summary, code, err).await,
                    },
                    KillInText::Embedded => {
                        return self.refuse(summary, code, kill_not_alone()).await;
                    }
                }
            }
            COM_PROCESS_KILL => {
                let id = Reader::new(&packet.payload[1..], "COM_PROCESS_KILL").u32();
                if let Ok(target) = &id {
                    let target = Some((u64::from(*target), self.connection_id));
                    if let Err(e) =
                        self.guard
                            .check_command("COM_PROCESS_KILL", target, &mut summary)
                    {
                        return self.guard_refused(summary, code, e).await;
                    }
                }
                let kill = id.ok().map(|id| registry::Kill {
                    query_only: false,
                    id: id as u64,
                });
                match self.rewrite_kill(kill) {
                    Ok(_) => {
                        let upstream_id = self
                            .shared
                            .registry
                            .get(kill.expect("rewrite succeeded").id as u32)
                            .expect("rewrite succeeded")
                            .upstream_connection_id;
                        let mut p = vec![COM_PROCESS_KILL];
                        p.extend_from_slice(&upstream_id.to_le_bytes());
                        forward = Bytes::from(p);
                    }
                    Err(err) => return self.refuse(summary, code, err).await,
                }
            }
            COM_STMT_PREPARE => {
                summary.sql = Some(String::from_utf8_lossy(&packet.payload[1..]).into_owned());
                let analysis =
                    AnalysisCache::shared().analyze(summary.sql.as_deref().unwrap_or_default());
                analysis.record_into(&mut summary, self.database.as_deref());
                if self.guard.active() {
                    let sql_text = summary.sql.take().unwrap_or_default();
                    let cmd = SqlCommand {
                        bytes: &packet.payload[1..],
                        sql: &sql_text,
                        analysis: &analysis,
                        database: self.database.as_deref(),
                        connection_id: self.connection_id,
                        prepare: true,
                    };
                    let checked = {
                        let mut gone =
                            std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
                        self.guard
                            .check_sql(cmd, &mut self.upstream, &mut summary, gone.as_mut())
                            .await
                    };
                    summary.sql = Some(sql_text);
                    match checked {
                        Ok(g) => prepared_guard = Some(g),
                        Err(e) => return self.guard_refused(summary, code, e).await,
                    }
                }
                if registry::find_kill(&packet.payload[1..], &analysis) != KillInText::Absent {
                    return self.refuse(summary, code, kill_not_alone()).await;
                }
                prepared = Some(analysis);
                let sql = summary.sql.as_deref().unwrap_or_default();
                match self.masking.check(sql, self.database.as_deref()) {
                    Ok(lineage) => self.masking.prepared(lineage),
                    Err(denial) => return self.refuse(summary, code, masking_denied(denial)).await,
                }
            }
            COM_STMT_EXECUTE => {
                let id = execute::statement_id(&packet.payload).ok();
                let stmt = id.and_then(|id| self.statements.get_mut(&id));
                let Some(stmt) = stmt else {
                    return self.refuse(summary, code, unknown_statement(id)).await;
                };
                summary.statement_id = id;
                summary.sql = Some(stmt.sql.clone());
                if let Some(id) = id {
                    let lineage = self.masking.lineage_of(id);
                    self.response_masker = self.masking.masker(
                        true,
                        &lineage,
                        Some(&stmt.sql),
                        stmt.database.as_deref(),
                    );
                }
                if let Some(a) = &stmt.analysis {
                    a.record_into(&mut summary, stmt.database.as_deref());
                }
                match execute::parse(&packet.payload, stmt) {
                    Ok(exec) => summary.params = exec.params,
                    Err(e) => {
                        self.shared.metrics.error("protocol");
                        warn!(error = %e, "malformed COM_STMT_EXECUTE refused");
                        let err = ErrInfo::new(
                            codes::MALFORMED_PACKET,
                            "08S01",
                            format!("Chaperone: {e}"),
                        );
                        return self.refuse(summary, code, err).await;
                    }
                }
                if self.guard.active() {
                    // Disjoint fields: the statement is read while the guard
                    // and the upstream connection are used, nothing is copied.
                    let stmt = id.and_then(|id| self.statements.get(&id));
                    let params = std::mem::take(&mut summary.params);
                    let checked = {
                        let mut gone =
                            std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
                        self.guard
                            .check_execute(
                                stmt.and_then(|s| s.guard.as_ref()),
                                stmt.map_or("", |s| s.sql.as_str()),
                                &params,
                                stmt.and_then(|s| s.analysis.as_deref()),
                                stmt.and_then(|s| s.database.as_deref()),
                                &mut self.upstream,
                                &mut summary,
                                gone.as_mut(),
                            )
                            .await
                    };
                    summary.params = params;
                    if let Err(e) = checked {
                        return self.guard_refused(summary, code, e).await;
                    }
                }
            }
            COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_FETCH => {
                let id = execute::statement_id(&packet.payload).ok();
                summary.statement_id = id;
                let known = id.and_then(|id| self.statements.get_mut(&id));
                match (code, known) {
                    (COM_STMT_SEND_LONG_DATA, Some(stmt)) => {
                        let param = Reader::new(&packet.payload[5..], "COM_STMT_SEND_LONG_DATA")
                            .u16()
                            .map_err(SessionError::ClientMalformed)?
                            as usize;
                        if let Some(flag) = stmt.long_data.get_mut(param) {
                            *flag = true;
                        }
                    }
                    (COM_STMT_CLOSE, Some(_)) => {
                        self.statements.remove(&id.expect("known"));
                        self.masking.closed(id.expect("known"));
                    }
                    (COM_STMT_RESET, Some(stmt)) => {
                        stmt.long_data.iter_mut().for_each(|f| *f = false);
                    }
                    (COM_STMT_FETCH, Some(_)) => {
                        self.response_masker = id.and_then(|id| self.masking.cursor_masker(id));
                    }
                    // No response to these, whatever happens: drop silently, as
                    // the server would.
                    (COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE, None) => {
                        self.finish(summary, started, None);
                        return Ok(None);
                    }
                    (_, None) => return self.refuse(summary, code, unknown_statement(id)).await,
                    _ => unreachable!("codes matched above"),
                }
            }
            COM_RESET_CONNECTION => {
                self.statements.clear();
                self.masking.reset();
            }
            COM_INIT_DB => {
                let db = String::from_utf8_lossy(&packet.payload[1..]).into_owned();
                if let Err(e) = self.guard.check_database(&db, &mut summary) {
                    return self.guard_refused(summary, code, e).await;
                }
            }
            COM_FIELD_LIST => {
                let rest = &packet.payload[1..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                let table = String::from_utf8_lossy(&rest[..end]).into_owned();
                let database = self.database.clone();
                if let Err(e) =
                    self.guard
                        .check_field_list(database.as_deref(), &table, &mut summary)
                {
                    return self.guard_refused(summary, code, e).await;
                }
            }
            COM_REFRESH | COM_DEBUG => {
                if let Err(e) = self
                    .guard
                    .check_command(command::name(code), None, &mut summary)
                {
                    return self.guard_refused(summary, code, e).await;
                }
            }
            COM_SET_OPTION => self.guard.note_set_option(&packet.payload, &mut summary),
            COM_PING | COM_STATISTICS => {}
            _ => {
                let err = ErrInfo::new(
                    codes::UNKNOWN_COMMAND,
                    "08S01",
                    format!("Chaperone: unknown or unsupported command 0x{code:02X}"),
                );
                return self.refuse(summary, code, err).await;
            }
        }

        // Forward the request, then relay the response.
        let request = Packet::new(0, forward);
        let upstream_seq = request.next_seq();
        self.upstream
            .conn
            .send(request)
            .await
            .map_err(|e| SessionError::Upstream(e.to_string()))?;
        let facts = self.relay_response(code, upstream_seq).await?;
        if let Some(m) = self.response_masker.take() {
            summary.masked_columns = m.masked.iter().cloned().collect();
            if let (COM_STMT_EXECUTE, Some(id)) = (code, summary.statement_id) {
                self.masking.executed(id, m.columns());
            }
        }
        if facts.error.is_none() {
            match code {
                COM_STMT_PREPARE => {
                    if let Some((id, params, columns)) = facts.prepared {
                        self.masking.prepared_id(id);
                        self.statements.insert(
                            id,
                            PreparedStatement {
                                sql: summary.sql.clone().unwrap_or_default(),
                                num_params: params,
                                num_columns: columns,
                                bound_types: None,
                                long_data: vec![false; params as usize],
                                analysis: prepared.take(),
                                database: self.database.clone(),
                                guard: prepared_guard.take(),
                            },
                        );
                        summary.statement_id = Some(id);
                    }
                }
                COM_INIT_DB => {
                    self.database =
                        Some(String::from_utf8_lossy(&packet.payload[1..]).into_owned());
                }
                COM_QUERY => {
                    if let Some(db) = use_db.take().or_else(|| use_database(&packet.payload[1..])) {
                        self.database = Some(db);
                    }
                }
                _ => {}
            }
        }
        self.finish(summary, started, Some(facts));
        Ok(None)
    }

    /// Reads the server's response to the command just forwarded and relays it.
    /// `upstream_seq` is the sequence id the server's first packet must have.
    async fn relay_response(
        &mut self,
        code: u8,
        mut upstream_seq: u8,
    ) -> Result<ResponseFacts, SessionError> {
        let mut exchange = Exchange::new(
            code,
            self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
        );
        let mut client_seq = self.reply_seq;
        let mut infile_refusal = None;
        let mut masker = self.response_masker.take();
        while !exchange.is_done() {
            let packet = match self.upstream.conn.next().await {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(SessionError::Upstream(e.to_string())),
                None => {
                    return Err(SessionError::Upstream(
                        "the database closed the connection".into(),
                    ))
                }
            };
            if packet.seq != upstream_seq {
                return Err(SessionError::Upstream(format!(
                    "packet sequence out of order: expected {upstream_seq}, got {}",
                    packet.seq
                )));
            }
            upstream_seq = packet.next_seq();
            let step = exchange
                .on_packet(&packet.payload)
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            if step == Step::LocalInfile {
                match self.local_infile(packet, upstream_seq, client_seq).await? {
                    Some((u, c)) => {
                        upstream_seq = u;
                        client_seq = c;
                        exchange.resume_after_local_infile();
                        continue;
                    }
                    None => {
                        let err =
                            ErrInfo::new(codes::NOT_SUPPORTED, "42000", local_infile_refusal(None));
                        let payload = Bytes::from(err.encode());
                        let frame = self.frame(Direction::ServerToClient, payload.clone());
                        self.shared.tap.record(TapEvent::Frame(frame));
                        self.client
                            .send(Packet::new(client_seq, payload))
                            .await
                            .map_err(SessionError::Client)?;
                        let mut facts = exchange.into_facts();
                        facts.error = Some(err);
                        return Ok(facts);
                    }
                }
            }
            let mut payload = packet.payload;
            if let Some(m) = masker.as_mut() {
                // What the client (and so the record) gets: masked values.
                if let Some(masked) = m
                    .on_packet(exchange.last_packet(), &payload)
                    .map_err(|e| SessionError::Upstream(e.to_string()))?
                {
                    payload = Bytes::from(masked);
                }
            }
            if step == Step::Done && !self.local_infile_allowed() {
                // The database refused LOAD DATA LOCAL INFILE because the gateway
                // did not negotiate it: say why, instead of a message that points
                // at the client's settings.
                if let Some(err) = exchange.facts().error.as_ref() {
                    if codes::LOCAL_INFILE_DISABLED.contains(&err.code) {
                        let clear =
                            ErrInfo::new(err.code, &err.sql_state, local_infile_refusal(Some(err)));
                        payload = Bytes::from(clear.encode());
                        infile_refusal = Some(clear);
                    }
                }
            }
            let outgoing = Packet::new(client_seq, payload);
            exchange.delivered(&outgoing.payload);
            client_seq = outgoing.next_seq();
            // Should the database fail mid-response, the client's ERR follows
            // what it already got.
            self.reply_seq = client_seq;
            self.bytes_to_client += outgoing.payload.len() as u64;
            let frame = self.frame(Direction::ServerToClient, outgoing.payload.clone());
            self.shared.tap.record(TapEvent::Frame(frame));
            if step == Step::Done {
                self.client
                    .send(outgoing)
                    .await
                    .map_err(SessionError::Client)?;
            } else {
                self.client
                    .feed(outgoing)
                    .await
                    .map_err(SessionError::Client)?;
            }
        }
        let mut facts = exchange.into_facts();
        if let Some(m) = &masker {
            if let (Some(msg), Some(e)) = (&m.masked_error, facts.error.as_mut()) {
                e.message = msg.clone();
            }
        }
        self.response_masker = masker;
        if infile_refusal.is_some() {
            facts.error = infile_refusal;
        }
        Ok(facts)
    }

    /// May this session relay LOAD DATA LOCAL INFILE? Only when its target allows
    /// it and the client negotiated it.
    fn local_infile_allowed(&self) -> bool {
        self.shared
            .targets
            .get(&self.grant.target)
            .is_some_and(|t| t.allow_local_infile)
            && self.caps.contains(CapabilityFlags::CLIENT_LOCAL_FILES)
    }

    /// LOAD DATA LOCAL INFILE: the server asked for a file. Relayed only when the
    /// target allows it and the client negotiated it; the gateway never reads a
    /// file itself. Returns the next sequence ids (upstream, client) when relayed,
    /// None when refused (the server got an empty file and its answer was read).
    async fn local_infile(
        &mut self,
        request: Packet,
        mut upstream_seq: u8,
        mut client_seq: u8,
    ) -> Result<Option<(u8, u8)>, SessionError> {
        if !self.local_infile_allowed() {
            // Answer the server with an empty file, and tell the client why.
            warn!("database asked for a local file; refused (allow_local_infile is off)");
            self.upstream
                .conn
                .send(Packet::new(upstream_seq, Bytes::new()))
                .await
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            // Consume the server's answer to the empty file.
            let mut ex = Exchange::new(COM_PING, false);
            while !ex.is_done() {
                match self.upstream.conn.next().await {
                    Some(Ok(p)) => {
                        ex.on_packet(&p.payload)
                            .map_err(|e| SessionError::Upstream(e.to_string()))?;
                    }
                    Some(Err(e)) => return Err(SessionError::Upstream(e.to_string())),
                    None => return Err(SessionError::Upstream("closed".into())),
                }
            }
            return Ok(None);
        }
        let out = Packet::new(client_seq, request.payload);
        client_seq = out.next_seq();
        self.client.send(out).await.map_err(SessionError::Client)?;
        loop {
            let p = match read_packet(&mut self.client)
                .await
                .map_err(SessionError::Client)?
            {
                Some(p) => p,
                None => return Err(SessionError::Client(PacketError::Truncated)),
            };
            let empty = p.payload.is_empty();
            let frame = self.frame(Direction::ClientToServer, p.payload.clone());
            self.shared
                .tap
                .record_request(TapEvent::Frame(frame))
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            let out = Packet::new(upstream_seq, p.payload);
            upstream_seq = out.next_seq();
            client_seq = client_seq.wrapping_add(1);
            self.upstream
                .conn
                .send(out)
                .await
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            if empty {
                return Ok(Some((upstream_seq, client_seq)));
            }
        }
    }

    /// A command the guardrails did not let through: refused with their
    /// error, or the session ends when the upstream broke during an EXPLAIN.
    async fn guard_refused(
        &mut self,
        summary: CommandSummary,
        code: u8,
        e: GuardError,
    ) -> Result<Option<End>, SessionError> {
        match e {
            GuardError::Refuse(err) => self.refuse(summary, code, err).await,
            GuardError::Upstream(m) => Err(SessionError::Upstream(m)),
            GuardError::ClientGone => {
                // Recorded with its verdict and how long it was held; nothing
                // to answer, nobody listens.
                let held = now_ns().saturating_sub(summary.started_at_ns).max(0) as u64;
                let started = Instant::now()
                    .checked_sub(Duration::from_nanos(held))
                    .unwrap_or_else(Instant::now);
                self.finish(summary, started, None);
                Ok(Some(End::ClientDisconnected))
            }
        }
    }

    /// Answers a command with an error without forwarding it.
    async fn refuse(
        &mut self,
        mut summary: CommandSummary,
        _code: u8,
        err: ErrInfo,
    ) -> Result<Option<End>, SessionError> {
        let payload = Bytes::from(err.encode());
        let frame = self.frame(Direction::ServerToClient, payload.clone());
        self.shared.tap.record(TapEvent::Frame(frame));
        self.bytes_to_client += payload.len() as u64;
        self.client
            .send(Packet::new(self.reply_seq, payload))
            .await
            .map_err(SessionError::Client)?;
        self.shared.metrics.error("refused");
        summary.refused = true;
        summary.error_code = Some(err.code);
        summary.error_message = Some(err.message);
        self.command_index += 1;
        self.shared.tap.record(TapEvent::Command(Box::new(summary)));
        Ok(None)
    }

    fn finish(
        &mut self,
        mut summary: CommandSummary,
        started: Instant,
        facts: Option<ResponseFacts>,
    ) {
        let elapsed = started.elapsed();
        self.shared
            .metrics
            .bytes_total
            .get_or_create(&DirectionLabels {
                direction: "server_to_client",
            })
            .inc_by(self.bytes_to_client - self.bytes_to_client_reported);
        self.bytes_to_client_reported = self.bytes_to_client;
        self.shared
            .metrics
            .command_duration_seconds
            .observe(elapsed.as_secs_f64());
        if let Some(f) = facts {
            summary.rows_returned = f.rows;
            summary.rows_affected = f.affected_rows;
            summary.last_insert_id = f.last_insert_id;
            summary.warnings = f.warnings;
            summary.result_columns = f.columns;
            summary.result_hash = f.result_hash;
            self.guard.observe_status(f.status);
            if let Some(e) = f.error {
                summary.error_code = Some(e.code);
                summary.error_message = Some(e.message);
            }
        }
        summary.duration_ns = elapsed.as_nanos() as u64;
        self.command_index += 1;
        self.shared.tap.record(TapEvent::Command(Box::new(summary)));
    }

    /// Maps a client-visible connection id in KILL to the upstream one.
    fn rewrite_kill(&self, kill: Option<registry::Kill>) -> Result<Bytes, ErrInfo> {
        let Some(kill) = kill else {
            return Err(ErrInfo::new(
                codes::NOT_SUPPORTED,
                "42000",
                "Chaperone: only KILL [CONNECTION | QUERY] <connection id> is supported through the gateway",
            ));
        };
        let live = u32::try_from(kill.id)
            .ok()
            .and_then(|id| self.shared.registry.get(id))
            .ok_or_else(|| {
                ErrInfo::new(
                    codes::NO_SUCH_THREAD,
                    "HY000",
                    format!("Unknown thread id: {}", kill.id),
                )
            })?;
        let me = &self.grant.identity;
        if live.owner != (me.issuer.clone(), me.subject.clone()) || live.target != self.grant.target
        {
            return Err(ErrInfo::new(
                codes::KILL_DENIED,
                "HY000",
                format!("You are not owner of thread {}", kill.id),
            ));
        }
        let sql = format!(
            "KILL {}{}",
            if kill.query_only {
                "QUERY "
            } else {
                "CONNECTION "
            },
            live.upstream_connection_id
        );
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        Ok(Bytes::from(p))
    }

    /// COM_CHANGE_USER: a new login on the same connection. The identity is
    /// established anew (never inherited) and a new upstream session is opened.
    async fn change_user(
        &mut self,
        packet: Packet,
        summary: CommandSummary,
        started: Instant,
    ) -> Result<Option<End>, SessionError> {
        let parsed = parse_change_user(&packet.payload, self.caps);
        let (user, database, collation, attrs) = match parsed {
            Ok(v) => v,
            Err(e) => {
                let err = ErrInfo::new(codes::MALFORMED_PACKET, "08S01", format!("Chaperone: {e}"));
                self.refuse(summary, COM_CHANGE_USER, err).await?;
                return Ok(Some(End::Protocol(e.to_string())));
            }
        };
        self.finish(summary, started, None);
        let mut hello = self.hello.clone();
        hello.user = user;
        hello.database = database.clone();
        if let Some(c) = collation {
            hello.collation = c;
        }
        if let Some(a) = attrs {
            hello.connect_attrs = a;
        }
        // Always switch to the user's plugin with a fresh nonce.
        hello.auth_plugin = None;
        let ctx = LoginContext {
            user: hello.user.clone(),
            tls: self.tls,
            peer: self.peer,
            nonce: random_scramble(),
        };
        let login = Self::authenticate(&self.shared, &mut self.client, &hello, ctx, 1).await?;
        let login = match login {
            Ok(l) => l,
            Err((reason, seq)) => {
                self.shared.metrics.auth_failures_total.inc();
                warn!(user = %hello.user, reason = %reason, "change user: authentication failed");
                let err = ErrInfo::new(
                    codes::ACCESS_DENIED,
                    "28000",
                    format!(
                        "Access denied for user '{}'@'{}' (using password: YES)",
                        hello.user,
                        self.peer.ip()
                    ),
                );
                let _ = self.client.send(Packet::new(seq, err.encode())).await;
                return Ok(Some(End::AuthFailed));
            }
        };
        let mut login = login;
        let (policies, policy_generation) = self.shared.control.current();
        let mut guard = crate::guardrails::SessionGuard::new(
            self.shared.guardrails.clone(),
            &policies,
            &login.grant,
            &self.shared.config.gateway.id,
        );
        if let Err(err) = guard
            .check_connect(database.as_deref(), &mut login.grant.deadline, "")
            .await
        {
            warn!(user = %hello.user, reason = %err.message, "change user: refused by guardrails");
            let _ = self.client.send(Packet::new(login.seq, err.encode())).await;
            return Ok(Some(End::AuthFailed));
        }
        let mut attrs = hello.connect_attrs.clone();
        let upstream = match Self::open_upstream(
            &self.shared,
            &login.grant,
            self.caps,
            &hello,
            database.as_deref(),
            &mut attrs,
        )
        .await
        {
            Ok(u) => u,
            Err(err) => {
                let _ = self.client.send(Packet::new(login.seq, err.encode())).await;
                return Ok(Some(End::UpstreamClosed(err.message)));
            }
        };
        // The old session ends here; the new identity gets a new session record.
        let _ = self
            .upstream
            .conn
            .send(Packet::new(0, vec![COM_QUIT]))
            .await;
        self.end_record(&End::ChangeUser);
        self.upstream = upstream;
        self.hello = hello;
        self.grant = login.grant;
        self.guard = guard;
        self.masking = crate::masking::SessionMasking::new(
            policies.masking(self.grant.identity.role.as_deref()),
        );
        self.policy_generation = policy_generation;
        self.database = database;
        self.statements.clear();
        self.frame_seq = 0;
        self.command_index = 0;
        self.bytes_from_client = 0;
        self.bytes_to_client = 0;
        self.bytes_to_client_reported = 0;
        self.start_record();
        let ok = encode_ok(
            OkInfo {
                status: SERVER_STATUS_AUTOCOMMIT,
                ..Default::default()
            },
            self.caps,
        );
        self.client
            .send(Packet::new(login.seq, ok))
            .await
            .map_err(SessionError::Client)?;
        Ok(None)
    }
}

/// The message of a refused LOAD DATA LOCAL INFILE; `database` is the server's
/// own refusal, when it refused.
fn local_infile_refusal(database: Option<&ErrInfo>) -> String {
    let mut message = "Chaperone: LOAD DATA LOCAL INFILE is not allowed through this gateway, which never sends files on a client's behalf (an operator can enable allow_local_infile on the target)".to_string();
    if let Some(err) = database {
        message += &format!(". The database said: {}", err.message);
    }
    message
}

/// Completes when the session's credentials are revoked (never for none).
async fn revoked(revocation: Option<&CancellationToken>) {
    match revocation {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// When a grant's deadline falls on the runtime's clock (far away for none).
fn grant_instant(deadline: Option<std::time::SystemTime>) -> tokio::time::Instant {
    let left = match deadline {
        Some(d) => d
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
        None => std::time::Duration::from_secs(365 * 86400),
    };
    tokio::time::Instant::now() + left
}

/// Strict masking refused a statement.
fn masking_denied(denial: crate::masking::Denial) -> ErrInfo {
    ErrInfo::new(codes::REFUSED_BY_POLICY, "42000", denial.0)
}

/// A KILL the gateway cannot rewrite to the server's connection id (see
/// [`KillInText::Embedded`]).
fn kill_not_alone() -> ErrInfo {
    ErrInfo::new(
        codes::NOT_SUPPORTED,
        "42000",
        "Chaperone: KILL must be sent as a query of its own (not with other statements, \
         not prepared, not as dynamic SQL): the gateway maps the connection id it names",
    )
}

fn unknown_statement(id: Option<u32>) -> ErrInfo {
    ErrInfo::new(
        codes::UNKNOWN_STMT_HANDLER,
        "HY000",
        format!(
            "Unknown prepared statement handler ({}) given to the gateway",
            id.map_or("?".to_string(), |i| i.to_string())
        ),
    )
}

/// The database a successful `USE db` switched to.
fn use_database(sql: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(sql)
        .ok()?
        .trim()
        .trim_end_matches(';')
        .trim();
    let (kw, rest) = s.split_once(|c: char| c.is_ascii_whitespace())?;
    if !kw.eq_ignore_ascii_case("use") {
        return None;
    }
    let db = rest.trim();
    let db = db
        .strip_prefix('`')
        .and_then(|d| d.strip_suffix('`'))
        .map(|d| d.replace("``", "`"))
        .unwrap_or_else(|| db.to_string());
    (!db.is_empty() && !db.contains(char::is_whitespace)).then_some(db)
}

/// The fields of COM_CHANGE_USER the gateway uses: user, database, collation,
/// connect attributes. The auth response is ignored: the gateway always asks
/// again with a fresh nonce.
#[allow(clippy::type_complexity)]
fn parse_change_user(
    payload: &[u8],
    caps: CapabilityFlags,
) -> Result<
    (
        String,
        Option<String>,
        Option<u8>,
        Option<BTreeMap<String, String>>,
    ),
    Malformed,
> {
    let mut r = Reader::new(payload, "COM_CHANGE_USER");
    r.u8()?;
    let user = String::from_utf8(r.null_str()?.to_vec())
        .map_err(|_| Malformed::new("COM_CHANGE_USER", "user name is not UTF-8"))?;
    if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let len = r.u8()? as usize;
        r.bytes(len)?;
    } else {
        r.null_str()?;
    }
    let db = r.null_str()?;
    let database = (!db.is_empty()).then(|| String::from_utf8_lossy(db).into_owned());
    let mut collation = None;
    let mut attrs = None;
    if !r.is_empty() {
        collation = Some(r.u16()? as u8);
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && !r.is_empty() {
            r.null_str()?;
        }
        if caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) && !r.is_empty() {
            let block = r.lenenc_str()?;
            let mut ar = Reader::new(block, "connect attributes");
            let mut map = BTreeMap::new();
            while !ar.is_empty() {
                let k = String::from_utf8_lossy(ar.lenenc_str()?).into_owned();
                let v = String::from_utf8_lossy(ar.lenenc_str()?).into_owned();
                map.insert(k, v);
            }
            attrs = Some(map);
        }
    }
    Ok((user, database, collation, attrs))
}

/// A refused login is recorded as a session that ends as it starts, with
/// `auth_failed: <reason>` (never the token): auditors see who tried which
/// target, and why they were refused. The identity is the verified one when
/// authentication got that far (a role without the target, expired
/// credentials), else the user name the client sent.
fn record_refused_login(
    shared: &Shared,
    hello: &ClientHello,
    ctx: &LoginContext,
    identity: Option<chaperone_schemas::Identity>,
    reason: &str,
) {
    use chaperone_schemas::{AuthMethod, Identity};
    let identity = identity.unwrap_or_else(|| Identity {
        issuer: "unauthenticated".into(),
        subject: hello.user.clone(),
        display_name: hello.user.clone(),
        auth_method: if shared.authenticator.plugin_for(&hello.user) == CLEAR_PASSWORD {
            AuthMethod::OidcToken
        } else if hello.user.starts_with(crate::identity::jit::USER_PREFIX) {
            AuthMethod::JitCredential
        } else {
            AuthMethod::GatewayPassword
        },
        role: None,
        claims: serde_json::Value::Object(Default::default()),
        expires_at: None,
    });
    let session_id = new_session_id();
    let now = now_ns();
    let target = if shared.targets.contains_key(&hello.user) {
        hello.user.clone()
    } else {
        String::new()
    };
    shared
        .tap
        .record(TapEvent::SessionStart(Box::new(SessionStart {
            session_id: session_id.clone(),
            connection_id: 0,
            upstream_connection_id: 0,
            started_at_ns: now,
            gateway_id: shared.config.gateway.id.clone(),
            identity,
            client_user: hello.user.clone(),
            target,
            upstream_user: String::new(),
            database: hello.database.clone(),
            client_addr: ctx.peer.to_string(),
            client_tls: ctx.tls,
            upstream_tls: false,
            connect_attrs: hello.connect_attrs.clone(),
            access_request_id: None,
        })));
    shared.tap.record(TapEvent::SessionEnd(Box::new(SessionEnd {
        session_id,
        ended_at_ns: now,
        reason: format!("auth_failed: {reason}"),
        commands: 0,
        frames: 0,
        bytes_from_client: 0,
        bytes_to_client: 0,
    })));
}

/// A new session id: time-ordered (so the archive sorts by it) and unique.
fn new_session_id() -> String {
    use rand::Rng;
    let ms = now_ns() / 1_000_000;
    let r: u64 = rand::rng().random();
    format!("{ms:012x}-{r:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_database_forms() {
        assert_eq!(use_database(b"USE shop"), Some("shop".into()));
        assert_eq!(use_database(b"use `my db`;"), None);
        assert_eq!(use_database(b"use `a``b`"), Some("a`b".into()));
        assert_eq!(use_database(b"SELECT 1"), None);
    }

    #[test]
    fn change_user_parsing() {
        let mut p = vec![COM_CHANGE_USER];
        p.extend_from_slice(b"bob\0");
        p.push(3);
        p.extend_from_slice(&[1, 2, 3]);
        p.extend_from_slice(b"shop\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        let caps = CapabilityFlags::CLIENT_SECURE_CONNECTION | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let (u, db, c, a) = parse_change_user(&p, caps).unwrap();
        assert_eq!(u, "bob");
        assert_eq!(db.as_deref(), Some("shop"));
        assert_eq!(c, Some(45));
        assert!(a.is_none());
        assert!(parse_change_user(&p[..6], caps).is_err());
    }

    #[test]
    fn session_ids_sort_by_time() {
        let a = new_session_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_session_id();
        assert!(a < b);
    }
}
