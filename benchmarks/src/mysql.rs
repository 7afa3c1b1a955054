//! A minimal MySQL client for the benchmarks' own statements (creating the
//! database, raising `max_connections`) and for idle connections. It is the
//! gateway's own client side ([`chaperone_mysql::upstream::Target`] logs in,
//! [`Exchange`] reads responses), so no second implementation of the protocol.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chaperone_config::{SecretSource, TargetConfig};
use chaperone_mysql::protocol::command::COM_QUERY;
use chaperone_mysql::protocol::exchange::Exchange;
use chaperone_mysql::protocol::{CapabilityFlags, Packet, PacketCodec};
use chaperone_mysql::stream::Stream;
use chaperone_mysql::upstream::{Target, UpstreamRequest};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

/// Who logs in where.
pub struct Client {
    target: Target,
    attrs: BTreeMap<String, String>,
}

/// An authenticated connection.
pub struct Connection {
    conn: Framed<Stream, PacketCodec>,
    deprecate_eof: bool,
    /// The version the server announced.
    pub server_version: String,
}

impl Client {
    pub fn new(address: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let config = TargetConfig {
            address: address.to_string(),
            user: user.to_string(),
            password: SecretSource {
                password: Some(password.to_string()),
                ..Default::default()
            },
            allow_local_infile: false,
            tls: Default::default(),
            users: BTreeMap::new(),
        };
        Ok(Client {
            target: config.resolve("benchmark")?,
            attrs: BTreeMap::from([(
                "program_name".to_string(),
                "chaperone-benchmarks".to_string(),
            )]),
        })
    }

    /// Connects and logs in (the same capabilities a typical driver asks for).
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let capabilities = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_ATTRS;
        let req = UpstreamRequest {
            capabilities,
            mariadb_capabilities: Default::default(),
            collation: 45, // utf8mb4_general_ci
            max_packet_size: 1 << 24,
            database: None,
            connect_attrs: &self.attrs,
            timeout: Duration::from_secs(30),
            max_packet: 1 << 26,
        };
        let upstream = self
            .target
            .connect(&req)
            .await
            .with_context(|| format!("logging in to {}", self.target.address))?;
        Ok(Connection {
            deprecate_eof: upstream
                .capabilities
                .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
            server_version: upstream.greeting.server_version.clone(),
            conn: upstream.conn,
        })
    }
}

impl Connection {
    /// Runs one statement and discards any result; an ERR is an error.
    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.conn.send(Packet::new(0, payload)).await?;
        let mut exchange = Exchange::new(COM_QUERY, self.deprecate_eof);
        while !exchange.is_done() {
            let packet = self
                .conn
                .next()
                .await
                .ok_or_else(|| anyhow!("the server closed the connection during `{sql}`"))??;
            exchange.on_packet(&packet.payload)?;
        }
        if let Some(e) = exchange.into_facts().error {
            bail!("`{sql}` failed: error {} ({})", e.code, e.message);
        }
        Ok(())
    }
}
