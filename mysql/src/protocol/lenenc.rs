//! A bounds-checked reader for the protocol's basic types.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_data_types.html>

use super::Malformed;

/// Reads little-endian integers, length-encoded integers and strings from a
/// payload, failing with [`Malformed`] instead of panicking on short input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn short(&self, need: usize) -> Malformed {
        Malformed::new(
            self.what,
            format!("needs {need} more bytes, {} left", self.buf.len()),
        )
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(self.short(n));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A length-encoded integer. `0xFB` (NULL in rows) is refused here; use
    /// [`Reader::lenenc_str_or_null`] where NULL is allowed.
    pub fn lenenc_int(&mut self) -> Result<u64, Malformed> {
        let first = self.u8()?;
        Ok(match first {
            0..=0xFA => first as u64,
            0xFC => self.u16()? as u64,
            0xFD => {
                let b = self.bytes(3)?;
                u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
            }
            0xFE => self.u64()?,
            _ => {
                return Err(Malformed::new(
                    self.what,
                    format!("invalid length-encoded integer prefix 0x{first:02X}"),
                ))
            }
        })
    }

    pub fn lenenc_str(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.lenenc_int()?;
        let len = usize::try_from(len).map_err(|_| self.short(usize::MAX))?;
        self.bytes(len)
    }

    /// A length-encoded string, or `None` for the NULL marker `0xFB`.
    pub fn lenenc_str_or_null(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        if self.buf.first() == Some(&0xFB) {
            self.buf = &self.buf[1..];
            return Ok(None);
        }
        self.lenenc_str().map(Some)
    }

    /// A NUL-terminated string (without the NUL).
    pub fn null_str(&mut self) -> Result<&'a [u8], Malformed> {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                Ok(s)
            }
            None => Err(Malformed::new(self.what, "missing NUL terminator")),
        }
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xFA => out.push(n as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_roundtrip_at_boundaries() {
        for n in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, n);
            assert_eq!(Reader::new(&out, "t").lenenc_int().unwrap(), n);
        }
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert!(Reader::new(&[0xFE, 1, 2], "t").lenenc_int().is_err());
        assert!(Reader::new(&[5, b'a'], "t").lenenc_str().is_err());
        assert!(Reader::new(&[0xFF], "t").lenenc_int().is_err());
        assert!(Reader::new(b"abc", "t").null_str().is_err());
    }
}
