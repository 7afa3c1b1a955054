//! MySQL packet framing: the 4-byte header, and payloads of 16 MiB and more split
//! into several physical packets.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html>
//!
//! The codec works on *logical* packets: a payload of `0xFFFFFF` bytes or more is
//! sent as a run of full physical packets followed by a shorter one (possibly empty),
//! each with the next sequence id. Decoding joins them, checks that their sequence
//! ids follow each other, and refuses payloads over the configured maximum before
//! allocating for them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The largest payload of one physical packet.
pub const MAX_PHYSICAL_PAYLOAD: usize = 0xFF_FFFF;

const HEADER_LEN: usize = 4;

/// One logical packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The sequence id of the first physical packet.
    pub seq: u8,
    pub payload: Bytes,
}

impl Packet {
    pub fn new(seq: u8, payload: impl Into<Bytes>) -> Self {
        Packet {
            seq,
            payload: payload.into(),
        }
    }

    /// The sequence id that follows this packet on the wire.
    pub fn next_seq(&self) -> u8 {
        self.seq
            .wrapping_add(physical_count(self.payload.len()) as u8)
    }

    /// The first byte of the payload, which tells most packet kinds apart.
    pub fn header(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

/// How many physical packets carry a payload of `len` bytes.
pub fn physical_count(len: usize) -> usize {
    len / MAX_PHYSICAL_PAYLOAD + 1
}

/// Errors while framing packets.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes (max_packet_size)")]
    TooLarge { size: usize, limit: usize },
    #[error("packet sequence out of order: expected {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A tokio codec for logical MySQL packets.
#[derive(Debug)]
pub struct PacketCodec {
    max_payload: usize,
    /// A multi-packet payload being assembled: its first seq, the seq expected
    /// next, and the bytes so far.
    partial: Option<(u8, u8, BytesMut)>,
}

impl PacketCodec {
    pub fn new(max_payload: usize) -> Self {
        PacketCodec {
            max_payload,
            partial: None,
        }
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = PacketError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, PacketError> {
        loop {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let len = u32::from_le_bytes([src[0], src[1], src[2], 0]) as usize;
            let seq = src[3];
            let assembled = self.partial.as_ref().map_or(0, |(_, _, b)| b.len());
            if assembled + len > self.max_payload {
                return Err(PacketError::TooLarge {
                    size: assembled + len,
                    limit: self.max_payload,
                });
            }
            if let Some((_, expected, _)) = &self.partial {
                if seq != *expected {
                    return Err(PacketError::Sequence {
                        expected: *expected,
                        got: seq,
                    });
                }
            }
            if src.len() < HEADER_LEN + len {
                src.reserve(HEADER_LEN + len - src.len());
                return Ok(None);
            }
            src.advance(HEADER_LEN);
            let chunk = src.split_to(len);
            if len == MAX_PHYSICAL_PAYLOAD {
                // More follows: keep assembling.
                match &mut self.partial {
                    Some((_, expected, buf)) => {
                        buf.unsplit(chunk);
                        *expected = seq.wrapping_add(1);
                    }
                    None => self.partial = Some((seq, seq.wrapping_add(1), chunk)),
                }
                continue;
            }
            return Ok(Some(match self.partial.take() {
                Some((first, _, mut buf)) => {
                    buf.unsplit(chunk);
                    Packet::new(first, buf.freeze())
                }
                None => Packet::new(seq, chunk.freeze()),
            }));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, PacketError> {
        match self.decode(buf)? {
            Some(packet) => Ok(Some(packet)),
            None if buf.is_empty() && self.partial.is_none() => Ok(None),
            None => Err(PacketError::Truncated),
        }
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = PacketError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), PacketError> {
        encode_packet(packet.seq, &packet.payload, dst);
        Ok(())
    }
}

/// Appends `payload` to `dst` as physical packets starting at sequence id `seq`.
pub fn encode_packet(seq: u8, payload: &[u8], dst: &mut BytesMut) {
    let mut seq = seq;
    let mut rest = payload;
    dst.reserve(payload.len() + HEADER_LEN * physical_count(payload.len()));
    loop {
        let n = rest.len().min(MAX_PHYSICAL_PAYLOAD);
        dst.put_slice(&(n as u32).to_le_bytes()[..3]);
        dst.put_u8(seq);
        dst.put_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        if n < MAX_PHYSICAL_PAYLOAD {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize, seq: u8) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut buf = BytesMut::new();
        encode_packet(seq, &payload, &mut buf);
        assert_eq!(buf.len(), payload.len() + 4 * physical_count(payload.len()));
        let mut codec = PacketCodec::new(64 << 20);
        let packet = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(packet.seq, seq);
        assert_eq!(packet.payload.len(), len);
        assert_eq!(&packet.payload[..], &payload[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn small_and_boundary_payloads_roundtrip() {
        for len in [0, 1, 250, 251, 65535, 65536, MAX_PHYSICAL_PAYLOAD - 1] {
            roundtrip(len, 3);
        }
    }

    #[test]
    fn exact_multiple_of_max_gets_trailing_empty_packet() {
        roundtrip(MAX_PHYSICAL_PAYLOAD, 0);
        roundtrip(2 * MAX_PHYSICAL_PAYLOAD, 255);
        let mut buf = BytesMut::new();
        encode_packet(0, &vec![0u8; MAX_PHYSICAL_PAYLOAD], &mut buf);
        // Two headers: the full packet and the empty one after it.
        assert_eq!(buf.len(), MAX_PHYSICAL_PAYLOAD + 8);
        assert_eq!(&buf[buf.len() - 4..], &[0, 0, 0, 1]);
    }

    #[test]
    fn sequence_wraps_across_continuations() {
        let p = Packet::new(255, vec![0u8; MAX_PHYSICAL_PAYLOAD + 5]);
        assert_eq!(p.next_seq(), 1);
        roundtrip(MAX_PHYSICAL_PAYLOAD + 5, 255);
    }

    #[test]
    fn bad_continuation_sequence_is_refused() {
        let mut buf = BytesMut::new();
        encode_packet(0, &vec![0u8; MAX_PHYSICAL_PAYLOAD + 1], &mut buf);
        buf[MAX_PHYSICAL_PAYLOAD + 4 + 3] = 7;
        let err = PacketCodec::new(64 << 20).decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            PacketError::Sequence {
                expected: 1,
                got: 7
            }
        ));
    }

    #[test]
    fn oversized_packet_is_refused_before_allocation() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0x7f, 0][..]);
        let err = PacketCodec::new(1024).decode(&mut buf).unwrap_err();
        assert!(matches!(err, PacketError::TooLarge { .. }));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn partial_input_waits_and_truncation_is_an_error() {
        let mut buf = BytesMut::from(&[5, 0, 0, 0, b'a', b'b'][..]);
        let mut codec = PacketCodec::new(1024);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(PacketError::Truncated)
        ));
    }
}
