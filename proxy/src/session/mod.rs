//! One client connection, from greeting to goodbye: handshake and TLS,
//! authentication, the upstream login, and the command loop that forwards every
//! command and its response while handing each frame to the tap.
//!
//! - [`login`]: handshake, TLS, authentication, the upstream login, COM_CHANGE_USER;
//! - [`step`]: one command, the loop's step: recorded, judged by its handler
//!   in [`commands`], forwarded, its response relayed ([`relay`]) and its
//!   summary recorded ([`reply`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chaperone_schemas::event::now_ns;
use chaperone_schemas::{Direction, Frame, SessionEnd, SessionStart, TapEvent};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::auth::Grant;
use crate::registry::LiveSession;
use crate::server::Shared;
use chaperone_mysql::protocol::command::COM_QUIT;
use chaperone_mysql::protocol::execute::PreparedStatement;
use chaperone_mysql::protocol::handshake::{ClientHello, SCRAMBLE_LEN};
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::{
    CapabilityFlags, Malformed, MariadbCapabilities, Packet, PacketCodec, PacketError,
};
use chaperone_mysql::stream::Stream;
use chaperone_mysql::upstream::Upstream;

mod commands;
mod login;
mod relay;
mod reply;
mod step;

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

/// A statement prepared in this session: what the protocol needs to read its
/// executions, and what the gateway decided about it at PREPARE.
struct Prepared {
    wire: PreparedStatement,
    /// What the statement is and touches, analysed once at prepare time.
    analysis: Option<Arc<chaperone_sql::Analysis>>,
    /// The current database at prepare time: the server resolves the
    /// statement's table names then.
    database: Option<String>,
    /// Its guardrail verdict from PREPARE (row estimates still to check at
    /// each execution, the approval it was prepared under).
    guard: Option<crate::guardrails::PreparedGuard>,
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
    statements: HashMap<u32, Prepared>,
    /// The session's guardrails: its policy, approvals (docs/guardrails.md).
    guard: crate::guardrails::SessionGuard,
    /// The role's masking policy and per-statement masking state.
    masking: chaperone_masking::SessionMasking,
    /// The masker of the response being relayed (set by `command`).
    response_masker: Option<chaperone_masking::ResponseMasker>,
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

/// A new session id: time-ordered (so the archive sorts by it) and unique.
fn new_session_id() -> String {
    use rand::Rng;
    let ms = now_ns() / 1_000_000;
    let r: u64 = rand::rng().random();
    format!("{ms:012x}-{r:016x}")
}

#[cfg(test)]
mod tests {
    use super::login::parse_change_user;
    use super::*;
    use chaperone_mysql::protocol::command::COM_CHANGE_USER;

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
