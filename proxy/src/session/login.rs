//! Logging in: the greeting, TLS, the client's authentication (password or
//! workload identity), the gateway's own login upstream, and COM_CHANGE_USER.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chaperone_mysql::protocol::command::COM_QUIT;
use chaperone_mysql::protocol::handshake::{
    self, ClientHello, Greeting, CACHING_SHA2_PASSWORD, CLEAR_PASSWORD, FAST_AUTH_SUCCESS,
    PERFORM_FULL_AUTHENTICATION,
};
use chaperone_mysql::protocol::lenenc::Reader;
use chaperone_mysql::protocol::response::{
    codes, encode_ok, ErrInfo, OkInfo, SERVER_STATUS_AUTOCOMMIT,
};
use chaperone_mysql::protocol::{CapabilityFlags, Malformed, Packet, PacketCodec, PacketError};
use chaperone_mysql::stream::Stream;
use chaperone_mysql::upstream::{Upstream, UpstreamError, UpstreamRequest};
use chaperone_schemas::event::now_ns;
use chaperone_schemas::{CommandSummary, SessionEnd, SessionStart, TapEvent};
use futures::SinkExt;
use tokio_util::codec::Framed;
use tracing::{debug, warn};

use super::{
    new_session_id, random_scramble, read_first_packet, read_packet, Conn, End, Login, Session,
    SessionError, GATEWAY_CAPABILITIES, GATEWAY_MARIADB_CAPABILITIES,
};
use crate::auth::{AuthError, Grant, LoginContext, Proof};
use crate::server::Shared;

impl Session {
    pub(super) async fn handshake(
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
        let masking = chaperone_masking::SessionMasking::new(
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
    pub(super) async fn authenticate(
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
    pub(super) async fn open_upstream(
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

    /// COM_CHANGE_USER: a new login on the same connection. The identity is
    /// established anew (never inherited) and a new upstream session is opened.
    pub(super) async fn change_user(
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
                self.refuse(summary, err).await?;
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
        self.masking = chaperone_masking::SessionMasking::new(
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

/// The fields of COM_CHANGE_USER the gateway uses: user, database, collation,
/// connect attributes. The auth response is ignored: the gateway always asks
/// again with a fresh nonce.
#[allow(clippy::type_complexity)]
pub(super) fn parse_change_user(
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
pub(super) fn record_refused_login(
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
