//! Column definitions (ColumnDefinition41), read from result-set metadata.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_column_definition.html>
//!
//! The gateway forwards column definitions as received; it parses them only for
//! what it records (column names) and, later, for masking (original table and column).
//! It never serializes them through `mysql_common::packets::Column`, whose writer
//! swaps `column_length` and `character_set` (mysql_common 0.38).

use super::lenenc::Reader;
use super::Malformed;

/// The parts of a column definition the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub schema: String,
    /// The table as named in the query (possibly an alias).
    pub table: String,
    /// The table the column really comes from; empty for computed columns.
    pub org_table: String,
    /// The column as named in the result (possibly an alias).
    pub name: String,
    /// The column it really comes from; empty for computed columns.
    pub org_name: String,
    pub character_set: u16,
    pub column_length: u32,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

impl ColumnDef {
    pub fn parse(payload: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "column definition");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let _catalog = r.lenenc_str()?;
        let schema = text(r.lenenc_str()?);
        let table = text(r.lenenc_str()?);
        let org_table = text(r.lenenc_str()?);
        let name = text(r.lenenc_str()?);
        let org_name = text(r.lenenc_str()?);
        skip_extended_metadata(&mut r);
        let _fixed_len = r.lenenc_int()?;
        let character_set = r.u16()?;
        let column_length = r.u32()?;
        let column_type = r.u8()?;
        let flags = r.u16()?;
        let decimals = r.u8()?;
        Ok(ColumnDef {
            schema,
            table,
            org_table,
            name,
            org_name,
            character_set,
            column_length,
            column_type,
            flags,
            decimals,
        })
    }

    /// Only the column's name (it comes before any MariaDB extended metadata):
    /// cheaper than a full parse, for the hot path.
    pub fn parse_name(payload: &[u8]) -> Result<String, Malformed> {
        let mut r = Reader::new(payload, "column definition");
        for _ in 0..4 {
            r.lenenc_str()?;
        }
        Ok(String::from_utf8_lossy(r.lenenc_str()?).into_owned())
    }
}

/// Length of the fixed-length fields (charset, length, type, flags, decimals,
/// filler) and the length-encoded byte announcing it.
const FIXED_FIELDS: usize = 13;

/// With MariaDB's MARIADB_CLIENT_EXTENDED_METADATA, a length-encoded block of
/// extended type information (`format=json`, `type=uuid`, ...) comes between the
/// column's original name and the fixed-length fields. It is recognised by what
/// follows it: the `0x0C` that announces the 12 bytes of fixed fields.
fn skip_extended_metadata(r: &mut Reader<'_>) {
    let rest = r.remaining();
    if rest.first() == Some(&0x0C) && rest.len() == FIXED_FIELDS {
        return;
    }
    let mut probe = r.clone();
    if probe.lenenc_str().is_ok()
        && probe.remaining().first() == Some(&0x0C)
        && probe.remaining().len() >= FIXED_FIELDS
    {
        *r = probe;
    }
}

#[cfg(test)]
mod tests {
    use super::super::lenenc::{put_lenenc_int, put_lenenc_str};
    use super::*;

    #[test]
    fn parses_a_column_definition() {
        let mut p = Vec::new();
        for s in ["def", "shop", "c", "customers", "mail", "email"] {
            put_lenenc_str(&mut p, s.as_bytes());
        }
        put_lenenc_int(&mut p, 0x0c);
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(&1020u32.to_le_bytes());
        p.push(253);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&[0, 0]);
        let c = ColumnDef::parse(&p).unwrap();
        assert_eq!(c.org_table, "customers");
        assert_eq!(c.name, "mail");
        assert_eq!(c.org_name, "email");
        assert_eq!(c.character_set, 45);
        assert_eq!(c.column_length, 1020);
        assert_eq!(c.column_type, 253);
        assert_eq!(ColumnDef::parse_name(&p).unwrap(), "mail");
        assert!(ColumnDef::parse(&p[..10]).is_err());
    }

    #[test]
    fn skips_mariadb_extended_metadata() {
        for ext in [&b""[..], &b"\x01\x04json"[..], &[0x0C; 12][..]] {
            let mut p = Vec::new();
            for s in ["def", "shop", "t", "t", "doc", "doc"] {
                put_lenenc_str(&mut p, s.as_bytes());
            }
            put_lenenc_str(&mut p, ext);
            put_lenenc_int(&mut p, 0x0c);
            p.extend_from_slice(&63u16.to_le_bytes());
            p.extend_from_slice(&u32::MAX.to_le_bytes());
            p.push(252);
            p.extend_from_slice(&0x90u16.to_le_bytes());
            p.push(0);
            p.extend_from_slice(&[0, 0]);
            let c = ColumnDef::parse(&p).unwrap();
            assert_eq!(
                (c.name.as_str(), c.column_type, c.character_set),
                ("doc", 252, 63)
            );
            assert_eq!(c.flags, 0x90);
        }
    }
}
