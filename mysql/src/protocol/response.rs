//! OK, ERR and EOF packets: building the gateway's own, and reading the server's.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_response_packets.html>

use super::lenenc::{put_lenenc_int, Reader};
use super::{CapabilityFlags, Malformed};

pub const OK_HEADER: u8 = 0x00;
pub const EOF_HEADER: u8 = 0xFE;
pub const ERR_HEADER: u8 = 0xFF;
pub const LOCAL_INFILE_HEADER: u8 = 0xFB;

/// What an OK packet (or an EOF packet, or an OK packet with the EOF header)
/// says about the command that just finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

impl OkInfo {
    /// Parses an OK packet (header `0x00`, or `0xFE` with CLIENT_DEPRECATE_EOF).
    pub fn parse_ok(payload: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "OK packet");
        r.u8()?;
        let affected_rows = r.lenenc_int()?;
        let last_insert_id = r.lenenc_int()?;
        let status = r.u16()?;
        let warnings = r.u16()?;
        Ok(OkInfo {
            affected_rows,
            last_insert_id,
            status,
            warnings,
        })
    }

    /// Parses a result-set terminator: a classic EOF packet (5 bytes) or, with
    /// CLIENT_DEPRECATE_EOF, an OK packet that carries the EOF header.
    pub fn parse_terminator(payload: &[u8], deprecate_eof: bool) -> Result<Self, Malformed> {
        if deprecate_eof && payload.len() > 5 {
            return Self::parse_ok(payload);
        }
        let mut r = Reader::new(payload, "EOF packet");
        r.u8()?;
        let warnings = r.u16()?;
        let status = r.u16()?;
        Ok(OkInfo {
            status,
            warnings,
            ..OkInfo::default()
        })
    }

    pub fn more_results(&self) -> bool {
        self.status & SERVER_MORE_RESULTS_EXISTS != 0
    }

    pub fn cursor_exists(&self) -> bool {
        self.status & SERVER_STATUS_CURSOR_EXISTS != 0
    }
}

pub const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;
pub const SERVER_STATUS_LAST_ROW_SENT: u16 = 0x0080;

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub sql_state: String,
    pub message: String,
}

impl ErrInfo {
    pub fn new(code: u16, sql_state: &str, message: impl Into<String>) -> Self {
        ErrInfo {
            code,
            sql_state: sql_state.to_string(),
            message: message.into(),
        }
    }

    /// Parses an ERR packet sent with CLIENT_PROTOCOL_41.
    pub fn parse(payload: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "ERR packet");
        if r.u8()? != ERR_HEADER {
            return Err(Malformed::new("ERR packet", "wrong header"));
        }
        let code = r.u16()?;
        let mut sql_state = String::new();
        if r.remaining().first() == Some(&b'#') {
            r.u8()?;
            sql_state = String::from_utf8_lossy(r.bytes(5)?).into_owned();
        }
        let message = String::from_utf8_lossy(r.remaining()).into_owned();
        Ok(ErrInfo {
            code,
            sql_state,
            message,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message.len());
        out.push(ERR_HEADER);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(b'#');
        let mut state = [b'H', b'Y', b'0', b'0', b'0'];
        for (dst, src) in state.iter_mut().zip(self.sql_state.bytes()) {
            *dst = src;
        }
        out.extend_from_slice(&state);
        out.extend_from_slice(self.message.as_bytes());
        out
    }
}

/// An OK packet with the given status flags.
pub fn encode_ok(info: OkInfo, caps: CapabilityFlags) -> Vec<u8> {
    encode_ok_with_header(OK_HEADER, info, caps)
}

/// The packet that ends a result set: an EOF packet, or with CLIENT_DEPRECATE_EOF
/// an OK packet with the EOF header.
pub fn encode_terminator(info: OkInfo, caps: CapabilityFlags) -> Vec<u8> {
    if caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
        encode_ok_with_header(EOF_HEADER, info, caps)
    } else {
        encode_eof(info)
    }
}

/// A classic 5-byte EOF packet.
pub fn encode_eof(info: OkInfo) -> Vec<u8> {
    let mut out = vec![EOF_HEADER];
    out.extend_from_slice(&info.warnings.to_le_bytes());
    out.extend_from_slice(&info.status.to_le_bytes());
    out
}

fn encode_ok_with_header(header: u8, info: OkInfo, _caps: CapabilityFlags) -> Vec<u8> {
    let mut out = vec![header];
    put_lenenc_int(&mut out, info.affected_rows);
    put_lenenc_int(&mut out, info.last_insert_id);
    out.extend_from_slice(&info.status.to_le_bytes());
    out.extend_from_slice(&info.warnings.to_le_bytes());
    out
}

/// MySQL error codes the gateway itself sends.
pub mod codes {
    /// ER_ACCESS_DENIED_ERROR, SQLSTATE 28000.
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_UNKNOWN_COM_ERROR, SQLSTATE 08S01.
    pub const UNKNOWN_COMMAND: u16 = 1047;
    /// ER_HANDSHAKE_ERROR ("Bad handshake"), SQLSTATE 08S01.
    pub const HANDSHAKE_ERROR: u16 = 1043;
    /// ER_CON_COUNT_ERROR ("Too many connections"), SQLSTATE 08004.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// ER_NET_PACKET_TOO_LARGE, SQLSTATE 08S01.
    pub const PACKET_TOO_LARGE: u16 = 1153;
    /// ER_NET_READ_ERROR / malformed packet, SQLSTATE 08S01.
    pub const MALFORMED_PACKET: u16 = 1835;
    /// ER_NOT_SUPPORTED_YET, SQLSTATE 42000.
    pub const NOT_SUPPORTED: u16 = 1235;
    /// ER_NO_SUCH_THREAD, SQLSTATE HY000.
    pub const NO_SUCH_THREAD: u16 = 1094;
    /// ER_KILL_DENIED_ERROR, SQLSTATE HY000.
    pub const KILL_DENIED: u16 = 1095;
    /// ER_UNKNOWN_STMT_HANDLER, SQLSTATE HY000.
    pub const UNKNOWN_STMT_HANDLER: u16 = 1243;
    /// ER_WRONG_ARGUMENTS, SQLSTATE HY000.
    pub const WRONG_ARGUMENTS: u16 = 1210;
    /// CR_CONN_HOST_ERROR-like: the gateway could not reach the database
    /// (ER_CONNECTION_KILLED is 1927 in MariaDB; 2003 is client-side). We use
    /// ER_SERVER_SHUTDOWN-free 1927 so clients treat it as a lost connection.
    pub const UPSTREAM_UNAVAILABLE: u16 = 1927;
    /// ER_SERVER_SHUTDOWN, SQLSTATE 08S01.
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// ER_NET_READ_INTERRUPTED, SQLSTATE 08S01.
    pub const READ_TIMEOUT: u16 = 1159;
    /// ER_OPTION_PREVENTS_STATEMENT, SQLSTATE HY000: refused by gateway policy.
    pub const REFUSED_BY_POLICY: u16 = 1290;
    /// The server refusing LOAD DATA LOCAL INFILE because the client side did not
    /// negotiate it: MySQL 5.x (ER_NOT_ALLOWED_COMMAND), MySQL 8
    /// (ER_CLIENT_LOCAL_FILES_DISABLED), MariaDB (ER_LOAD_INFILE_CAPABILITY_DISABLED).
    pub const LOCAL_INFILE_DISABLED: [u16; 3] = [1148, 3948, 4166];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_roundtrip() {
        let e = ErrInfo::new(1045, "28000", "Access denied for user 'x'");
        assert_eq!(ErrInfo::parse(&e.encode()).unwrap(), e);
    }

    #[test]
    fn ok_roundtrip_and_terminators() {
        let info = OkInfo {
            affected_rows: 300,
            last_insert_id: 70000,
            status: SERVER_MORE_RESULTS_EXISTS | SERVER_STATUS_AUTOCOMMIT,
            warnings: 2,
        };
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        assert_eq!(OkInfo::parse_ok(&encode_ok(info, caps)).unwrap(), info);
        let eof = encode_terminator(info, caps);
        assert_eq!(eof.len(), 5);
        let parsed = OkInfo::parse_terminator(&eof, false).unwrap();
        assert!(parsed.more_results());
        assert_eq!(parsed.warnings, 2);
        let caps = caps | CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let ok_eof = encode_terminator(info, caps);
        assert_eq!(ok_eof[0], EOF_HEADER);
        assert_eq!(OkInfo::parse_terminator(&ok_eof, true).unwrap(), info);
    }

    #[test]
    fn short_packets_are_errors() {
        assert!(OkInfo::parse_ok(&[0]).is_err());
        assert!(ErrInfo::parse(&[0xFF, 1]).is_err());
        assert!(OkInfo::parse_terminator(&[0xFE, 0], false).is_err());
    }
}
