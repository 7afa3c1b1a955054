//! The MySQL client/server protocol, as much of it as the gateway needs.
//!
//! One module per thing: [`packet`] framing, [`handshake`] packets, [`response`]
//! packets (OK / ERR / EOF), [`command`] codes, [`execute`] (COM_STMT_EXECUTE),
//! [`column`] definitions, [`exchange`], the state machine that tells where a
//! command's response ends, and the [`result_hash`] over what it delivered.
//! The rest is forwarded as bytes.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html>

pub mod column;
/// Command codes live with the tap contract (the recorder names commands too).
pub use chaperone_schemas::command;
pub mod exchange;
pub mod execute;
pub mod handshake;
pub mod lenenc;
pub mod packet;
pub mod response;
pub mod result_hash;

pub use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
pub use packet::{Packet, PacketCodec, PacketError};

/// Why a packet could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct Malformed {
    pub what: &'static str,
    pub detail: String,
}

impl Malformed {
    pub fn new(what: &'static str, detail: impl Into<String>) -> Self {
        Malformed {
            what,
            detail: detail.into(),
        }
    }
}
