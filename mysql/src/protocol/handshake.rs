//! Connection-phase packets: the initial handshake, the client's SSLRequest and
//! handshake response, auth switch and auth-more-data.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>
//!
//! Parsing of the client's handshake response is delegated to `mysql_common`
//! (it handles the three auth-data encodings and connect attributes); this module
//! adds the checks a server must make before trusting it.

use std::collections::BTreeMap;

use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::MyDeserialize;
use mysql_common::proto::MySerialize;

use super::lenenc::{put_lenenc_str, Reader};
use super::{CapabilityFlags, Malformed, MariadbCapabilities, StatusFlags};

/// Length of the random challenge (the "scramble"), split 8 + 12 in the greeting.
pub const SCRAMBLE_LEN: usize = 20;

/// The auth plugins the gateway speaks, as a server and as a client.
pub const NATIVE_PASSWORD: &str = "mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
pub const CLEAR_PASSWORD: &str = "mysql_clear_password";

/// Header byte of an AuthSwitchRequest.
pub const AUTH_SWITCH_HEADER: u8 = 0xFE;
/// Header byte of an AuthMoreData packet.
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;
/// caching_sha2_password: "your scramble was right and you are cached".
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// caching_sha2_password: "send me the password in clear (the link is secure)".
pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;

/// The greeting the gateway sends to a client.
pub struct Greeting<'a> {
    pub server_version: &'a str,
    pub connection_id: u32,
    pub scramble: &'a [u8; SCRAMBLE_LEN],
    pub capabilities: CapabilityFlags,
    /// MariaDB's extended capabilities; when any is offered, CLIENT_LONG_PASSWORD
    /// (MariaDB's "CLIENT_MYSQL") is cleared, which is how MariaDB clients tell.
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub auth_plugin: &'a str,
}

impl Greeting<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut part1 = [0u8; 8];
        part1.copy_from_slice(&self.scramble[..8]);
        // The second part is 12 bytes plus a NUL, as MySQL sends it.
        let mut part2 = self.scramble[8..].to_vec();
        part2.push(0);
        let packet = HandshakePacket::new(
            10,
            self.server_version.as_bytes(),
            self.connection_id,
            part1,
            Some(part2),
            mariadb_aware(self.capabilities, self.mariadb_capabilities),
            self.collation,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(self.auth_plugin.as_bytes()),
        )
        .with_mariadb_ext_capabilities(self.mariadb_capabilities);
        let mut out = Vec::with_capacity(128);
        packet.serialize(&mut out);
        out
    }
}

/// MariaDB signals extended capabilities (in the greeting's and the handshake
/// response's reserved bytes) by clearing CLIENT_LONG_PASSWORD, its CLIENT_MYSQL.
fn mariadb_aware(caps: CapabilityFlags, mariadb: MariadbCapabilities) -> CapabilityFlags {
    if mariadb.is_empty() {
        caps
    } else {
        caps - CapabilityFlags::CLIENT_LONG_PASSWORD
    }
}

/// The fixed part shared by SSLRequest and HandshakeResponse41.
const FIXED_LEN: usize = 32;

/// Is this payload an SSLRequest (the fixed part only, with CLIENT_SSL set)?
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == FIXED_LEN && client_capabilities(payload).contains(CapabilityFlags::CLIENT_SSL)
}

/// The capability flags at the start of an SSLRequest or HandshakeResponse41.
pub fn client_capabilities(payload: &[u8]) -> CapabilityFlags {
    let mut r = Reader::new(payload, "handshake response");
    CapabilityFlags::from_bits_truncate(r.u32().unwrap_or(0))
}

/// What the gateway keeps from a client's handshake response.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub capabilities: CapabilityFlags,
    /// MariaDB extended capabilities the client asked for (empty unless it
    /// cleared CLIENT_LONG_PASSWORD, as MariaDB clients do).
    pub mariadb_capabilities: MariadbCapabilities,
    pub max_packet_size: u32,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub connect_attrs: BTreeMap<String, String>,
}

impl ClientHello {
    /// Parses a HandshakeResponse41. Anything short, pre-4.1, or not UTF-8 in the
    /// user name is refused.
    pub fn parse(payload: &[u8]) -> Result<Self, Malformed> {
        if payload.len() < FIXED_LEN + 1 {
            return Err(Malformed::new(
                "handshake response",
                format!("{} bytes is too short", payload.len()),
            ));
        }
        let caps = client_capabilities(payload);
        if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(Malformed::new(
                "handshake response",
                "clients older than protocol 4.1 are not supported",
            ));
        }
        let mut buf = ParseBuf(payload);
        let resp = HandshakeResponse::deserialize((), &mut buf)
            .map_err(|e| Malformed::new("handshake response", e.to_string()))?;
        let user = std::str::from_utf8(resp.user())
            .map_err(|_| Malformed::new("handshake response", "user name is not UTF-8"))?
            .to_string();
        let database = match resp.db_name() {
            Some(db) if !db.is_empty() => Some(
                std::str::from_utf8(db)
                    .map_err(|_| Malformed::new("handshake response", "database is not UTF-8"))?
                    .to_string(),
            ),
            _ => None,
        };
        let auth_plugin = resp
            .auth_plugin()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
        Ok(ClientHello {
            capabilities: resp.capabilities(),
            mariadb_capabilities: if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
                MariadbCapabilities::empty()
            } else {
                resp.mariadb_ext_capabilities()
            },
            max_packet_size: u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]),
            collation: resp.collation(),
            user,
            auth_response: resp.scramble_buf().to_vec(),
            database,
            auth_plugin,
            connect_attrs: resp
                .connect_attributes()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }
}

/// An AuthSwitchRequest asking the client to use `plugin` with `data`.
pub fn encode_auth_switch(plugin: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + plugin.len() + data.len());
    out.push(AUTH_SWITCH_HEADER);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out.extend_from_slice(data);
    out
}

/// An AuthMoreData packet.
pub fn encode_auth_more_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(AUTH_MORE_DATA_HEADER);
    out.extend_from_slice(data);
    out
}

/// The server's greeting, as read by the gateway's upstream client.
#[derive(Debug, Clone)]
pub struct ServerGreeting {
    pub server_version: String,
    pub connection_id: u32,
    pub capabilities: CapabilityFlags,
    /// MariaDB extended capabilities (empty for MySQL).
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub scramble: Vec<u8>,
    pub auth_plugin: String,
}

impl ServerGreeting {
    pub fn parse(payload: &[u8]) -> Result<Self, Malformed> {
        if payload.first() != Some(&10) {
            return Err(Malformed::new(
                "server greeting",
                "not a protocol-10 handshake",
            ));
        }
        let mut buf = ParseBuf(payload);
        let hs = HandshakePacket::deserialize((), &mut buf)
            .map_err(|e| Malformed::new("server greeting", e.to_string()))?;
        let mut scramble = hs.scramble_1_ref().to_vec();
        if let Some(part2) = hs.scramble_2_ref() {
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
        }
        Ok(ServerGreeting {
            server_version: hs.server_version_str().into_owned(),
            connection_id: hs.connection_id(),
            capabilities: hs.capabilities(),
            mariadb_capabilities: if hs
                .capabilities()
                .contains(CapabilityFlags::CLIENT_LONG_PASSWORD)
            {
                MariadbCapabilities::empty()
            } else {
                hs.mariadb_ext_capabilities()
            },
            collation: hs.default_collation(),
            scramble,
            auth_plugin: hs
                .auth_plugin_name_str()
                .map(|s| s.into_owned())
                .unwrap_or_else(|| NATIVE_PASSWORD.to_string()),
        })
    }
}

/// The gateway's handshake response to an upstream server.
pub struct UpstreamHello<'a> {
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub max_packet_size: u32,
    pub collation: u8,
    pub user: &'a str,
    pub auth_response: &'a [u8],
    pub database: Option<&'a str>,
    pub auth_plugin: &'a str,
    pub connect_attrs: &'a BTreeMap<String, String>,
}

impl UpstreamHello<'_> {
    /// The SSLRequest that precedes this response when TLS is used upstream.
    pub fn encode_ssl_request(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN);
        self.put_fixed(&mut out);
        out
    }

    fn put_fixed(&self, out: &mut Vec<u8>) {
        let caps = mariadb_aware(self.capabilities, self.mariadb_capabilities);
        out.extend_from_slice(&caps.bits().to_le_bytes());
        out.extend_from_slice(&self.max_packet_size.to_le_bytes());
        out.push(self.collation);
        out.extend_from_slice(&[0u8; 19]);
        out.extend_from_slice(&self.mariadb_capabilities.bits().to_le_bytes());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.put_fixed(&mut out);
        out.extend_from_slice(self.user.as_bytes());
        out.push(0);
        put_lenenc_str(&mut out, self.auth_response);
        if let Some(db) = self.database {
            out.extend_from_slice(db.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(self.auth_plugin.as_bytes());
        out.push(0);
        if self
            .capabilities
            .contains(CapabilityFlags::CLIENT_CONNECT_ATTRS)
        {
            let mut attrs = Vec::new();
            for (k, v) in self.connect_attrs {
                put_lenenc_str(&mut attrs, k.as_bytes());
                put_lenenc_str(&mut attrs, v.as_bytes());
            }
            put_lenenc_str(&mut out, &attrs);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_parses_back() {
        let scramble = *b"abcdefghijklmnopqrst";
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let g = Greeting {
            server_version: "10.11.6-MariaDB-chaperone",
            connection_id: 42,
            scramble: &scramble,
            capabilities: caps | CapabilityFlags::CLIENT_LONG_PASSWORD,
            mariadb_capabilities: MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA,
            collation: 45,
            auth_plugin: NATIVE_PASSWORD,
        }
        .encode();
        let parsed = ServerGreeting::parse(&g).unwrap();
        assert_eq!(
            parsed.mariadb_capabilities,
            MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
        );
        assert!(!parsed
            .capabilities
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        assert_eq!(parsed.server_version, "10.11.6-MariaDB-chaperone");
        assert_eq!(parsed.connection_id, 42);
        assert_eq!(parsed.scramble, scramble.to_vec());
        assert_eq!(parsed.auth_plugin, NATIVE_PASSWORD);
        assert_eq!(parsed.collation, 45);
    }

    #[test]
    fn hello_roundtrip_through_parser() {
        let mut attrs = BTreeMap::new();
        attrs.insert("program_name".to_string(), "mariadb".to_string());
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_CONNECT_ATTRS;
        let bytes = UpstreamHello {
            capabilities: caps | CapabilityFlags::CLIENT_LONG_PASSWORD,
            mariadb_capabilities: MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA,
            max_packet_size: 1 << 24,
            collation: 224,
            user: "app",
            auth_response: &[1, 2, 3],
            database: Some("shop"),
            auth_plugin: NATIVE_PASSWORD,
            connect_attrs: &attrs,
        }
        .encode();
        let hello = ClientHello::parse(&bytes).unwrap();
        assert_eq!(hello.user, "app");
        assert_eq!(hello.database.as_deref(), Some("shop"));
        assert_eq!(hello.auth_response, vec![1, 2, 3]);
        assert_eq!(hello.collation, 224);
        assert_eq!(hello.connect_attrs.get("program_name").unwrap(), "mariadb");
        assert_eq!(
            hello.mariadb_capabilities,
            MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
        );
    }

    #[test]
    fn short_or_garbage_responses_are_refused() {
        assert!(ClientHello::parse(&[]).is_err());
        assert!(ClientHello::parse(&[0xff; 10]).is_err());
        assert!(ClientHello::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxxxx").is_err());
        let mut only_fixed = vec![0u8; 33];
        only_fixed[0] = 0x00;
        only_fixed[1] = 0x02; // CLIENT_PROTOCOL_41
        assert!(
            ClientHello::parse(&only_fixed).is_err() || ClientHello::parse(&only_fixed).is_ok()
        );
    }
}
