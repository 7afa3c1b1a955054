//! A small MySQL client for tests, built from `chaperone_proxy`'s own protocol
//! code: it logs in with `chaperone_mysql::upstream::Target` (the gateway's
//! upstream login, which speaks mysql_native_password, caching_sha2_password and
//! TLS), sends commands, and reads responses with
//! `chaperone_mysql::protocol::exchange::Exchange`.
//!
//! It talks to MariaDB directly ([`SqlClient::direct`]) or through a gateway
//! ([`SqlClient::via`]), and gives access to the raw packets for protocol tests.
//! It negotiates classic EOF packets (no CLIENT_DEPRECATE_EOF).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chaperone_mysql::protocol::command::{COM_QUERY, COM_STMT_PREPARE};
use chaperone_mysql::protocol::exchange::{Exchange, ResponseFacts, Step};
use chaperone_mysql::protocol::handshake::ServerGreeting;
use chaperone_mysql::protocol::lenenc::Reader;
use chaperone_mysql::protocol::response::{ErrInfo, OkInfo, EOF_HEADER, ERR_HEADER, OK_HEADER};
use chaperone_mysql::protocol::{CapabilityFlags, Packet, PacketCodec};
use chaperone_mysql::stream::Stream;
use chaperone_mysql::upstream::{UpstreamError, UpstreamRequest};
use chaperone_proxy::config::{TargetConfig, UpstreamTls, UpstreamTlsMode};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use super::{inline, within, MARIADB_ADDR, MARIADB_PASSWORD, MARIADB_USER};

/// Capabilities the test client asks for.
pub const CLIENT_CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_PROTOCOL_41
    .union(CapabilityFlags::CLIENT_LONG_PASSWORD)
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_CONNECT_ATTRS);

/// How long one command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A logged-in connection.
pub struct SqlClient {
    pub conn: Framed<Stream, PacketCodec>,
    /// The server's greeting (through a gateway: the gateway's).
    pub greeting: ServerGreeting,
}

/// One result of a text query: an OK (no columns) or a result set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    pub affected_rows: u64,
    pub warnings: u16,
}

/// A whole response: the packets as received and what the exchange made of them.
#[derive(Debug)]
pub struct Reply {
    pub packets: Vec<Packet>,
    pub facts: ResponseFacts,
}

impl Reply {
    /// The error of the response, if any.
    pub fn error(&self) -> Option<&ErrInfo> {
        self.facts.error.as_ref()
    }
}

/// Why a test client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("login failed: {0}")]
    Login(#[from] UpstreamError),
    #[error("server error {}: {}", .0.code, .0.message)]
    Server(ErrInfo),
    #[error("connection: {0}")]
    Io(String),
}

impl ClientError {
    /// The MySQL error, when the server (or gateway) answered with one.
    pub fn server(&self) -> Option<&ErrInfo> {
        match self {
            ClientError::Server(e) => Some(e),
            ClientError::Login(UpstreamError::Refused(e)) => Some(e),
            _ => None,
        }
    }
}

impl SqlClient {
    /// Logs in to `addr` as `user`.
    pub async fn connect(
        addr: &str,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addr, user, password, database, None).await
    }

    /// Logs in over TLS, verifying the server's certificate with `ca_file` for the
    /// name `localhost`.
    pub async fn connect_tls(
        addr: &str,
        user: &str,
        password: &str,
        ca_file: &std::path::Path,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addr, user, password, None, Some(ca_file)).await
    }

    async fn connect_with(
        addr: &str,
        user: &str,
        password: &str,
        database: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let tls = match ca_file {
            Some(ca) => UpstreamTls {
                mode: UpstreamTlsMode::Verify,
                ca: Some(ca.to_path_buf()),
                server_name: Some("localhost".into()),
            },
            None => UpstreamTls::default(),
        };
        let config = TargetConfig {
            address: addr.to_string(),
            user: user.to_string(),
            password: inline(password),
            allow_local_infile: false,
            tls,
            users: Default::default(),
        };
        let target = config
            .resolve("test-client")
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let attrs = BTreeMap::from([("program_name".to_string(), "chaperone-tests".to_string())]);
        let req = UpstreamRequest {
            capabilities: CLIENT_CAPABILITIES,
            mariadb_capabilities: Default::default(),
            collation: 45,
            max_packet_size: 1 << 30,
            database,
            connect_attrs: &attrs,
            timeout: Duration::from_secs(10),
            max_packet: 1 << 30,
        };
        let upstream = target.connect(&req).await?;
        Ok(SqlClient {
            conn: upstream.conn,
            greeting: upstream.greeting,
        })
    }

    /// Root on the test MariaDB, directly.
    pub async fn direct(database: Option<&str>) -> Self {
        Self::connect(MARIADB_ADDR, MARIADB_USER, MARIADB_PASSWORD, database)
            .await
            .expect("MariaDB at 127.0.0.1:3306 accepts root (run scripts/setup-test-env.sh)")
    }

    /// Through a gateway.
    pub async fn via(
        addr: SocketAddr,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Result<Self, ClientError> {
        Self::connect(&addr.to_string(), user, password, database).await
    }

    /// The connection id of the greeting (through a gateway: the gateway's id,
    /// the one `KILL` takes).
    pub fn connection_id(&self) -> u32 {
        self.greeting.connection_id
    }

    /// Sends one packet (sequence id 0 unless `seq` says otherwise).
    pub async fn send(
        &mut self,
        seq: u8,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<(), ClientError> {
        within(
            COMMAND_TIMEOUT,
            "sending a packet",
            self.conn.send(Packet::new(seq, payload)),
        )
        .await
        .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Reads one packet; `None` when the peer closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Packet>, ClientError> {
        within(COMMAND_TIMEOUT, "reading a packet", self.conn.next())
            .await
            .transpose()
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Reads one packet within `limit`; `Ok(None)` on close, `Err` on timeout.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Packet>, ClientError> {
        match tokio::time::timeout(limit, self.conn.next()).await {
            Ok(p) => p.transpose().map_err(|e| ClientError::Io(e.to_string())),
            Err(_) => Err(ClientError::Io(format!("no packet within {limit:?}"))),
        }
    }

    /// Sends a command and reads its whole response.
    pub async fn command(&mut self, payload: Vec<u8>) -> Result<Reply, ClientError> {
        let code = payload.first().copied().unwrap_or(0);
        self.send(0, payload).await?;
        self.read_reply(code).await
    }

    /// Reads the response to a command with code `code` that was just sent.
    pub async fn read_reply(&mut self, code: u8) -> Result<Reply, ClientError> {
        let mut exchange = Exchange::new(code, false);
        let mut packets = Vec::new();
        while !exchange.is_done() {
            let packet = self
                .recv()
                .await?
                .ok_or_else(|| ClientError::Io("connection closed mid-response".into()))?;
            let step = exchange
                .on_packet(&packet.payload)
                .map_err(|e| ClientError::Io(e.to_string()))?;
            packets.push(packet);
            if step == Step::LocalInfile {
                return Err(ClientError::Io("unexpected LOCAL INFILE request".into()));
            }
        }
        Ok(Reply {
            packets,
            facts: exchange.into_facts(),
        })
    }

    /// Runs text SQL; every result (OK or result set), or the first error.
    pub async fn query_all(&mut self, sql: &str) -> Result<Vec<ResultSet>, ClientError> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        let reply = self.command(payload).await?;
        if let Some(e) = reply.error() {
            return Err(ClientError::Server(e.clone()));
        }
        decode_text_results(&reply.packets).map_err(ClientError::Io)
    }

    /// Runs text SQL; the rows of its last result set.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ClientError> {
        Ok(self
            .query_all(sql)
            .await?
            .into_iter()
            .rev()
            .find(|r| !r.columns.is_empty())
            .map(|r| r.rows)
            .unwrap_or_default())
    }

    /// Runs text SQL that must succeed.
    pub async fn exec(&mut self, sql: &str) {
        if let Err(e) = self.query_all(sql).await {
            panic!("{sql}: {e}");
        }
    }

    /// The single value of a one-row, one-column query.
    pub async fn scalar(&mut self, sql: &str) -> Option<String> {
        let rows = self
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
        rows[0][0].clone()
    }

    /// COM_STMT_PREPARE: the statement id and parameter count.
    pub async fn prepare(&mut self, sql: &str) -> Result<(u32, u16), ClientError> {
        let mut payload = vec![COM_STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        let reply = self.command(payload).await?;
        if let Some(e) = reply.error() {
            return Err(ClientError::Server(e.clone()));
        }
        let (id, params, _) = reply.facts.prepared.expect("prepare facts");
        Ok((id, params))
    }

    /// Sends COM_QUIT.
    pub async fn quit(mut self) {
        let _ = self.send(0, vec![0x01]).await;
    }
}

/// Splits the packets of a text-protocol response into its results.
pub fn decode_text_results(packets: &[Packet]) -> Result<Vec<ResultSet>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let err = |e: chaperone_mysql::protocol::Malformed| e.to_string();
    while i < packets.len() {
        let p = &packets[i].payload;
        match p.first() {
            Some(&OK_HEADER) => {
                let ok = OkInfo::parse_ok(p).map_err(err)?;
                out.push(ResultSet {
                    affected_rows: ok.affected_rows,
                    warnings: ok.warnings,
                    ..Default::default()
                });
                i += 1;
                continue;
            }
            Some(&ERR_HEADER) => {
                let e = ErrInfo::parse(p).map_err(err)?;
                return Err(format!("error {}: {}", e.code, e.message));
            }
            _ => {}
        }
        let count = Reader::new(p, "column count").lenenc_int().map_err(err)? as usize;
        let mut set = ResultSet::default();
        for def in packets.get(i + 1..i + 1 + count).ok_or("short metadata")? {
            set.columns.push(
                chaperone_mysql::protocol::column::ColumnDef::parse_name(&def.payload)
                    .map_err(err)?,
            );
        }
        i += 1 + count;
        // The EOF after the column definitions.
        i += 1;
        loop {
            let row = &packets.get(i).ok_or("result set without its EOF")?.payload;
            i += 1;
            if row.first() == Some(&EOF_HEADER) && row.len() < 9 {
                let eof = OkInfo::parse_terminator(row, false).map_err(err)?;
                set.warnings = eof.warnings;
                break;
            }
            let mut r = Reader::new(row, "text row");
            let mut values = Vec::with_capacity(count);
            for _ in 0..count {
                values.push(
                    r.lenenc_str_or_null()
                        .map_err(err)?
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                );
            }
            set.rows.push(values);
        }
        out.push(set);
    }
    Ok(out)
}
