//! A malicious or broken server: arbitrary packets fed to the response state
//! machine for each command kind, never a panic.
#![no_main]
use chaperone_mysql::protocol::exchange::Exchange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let command = data[0] % 0x20;
    let deprecate_eof = data[1] & 1 == 1;
    let mut ex = Exchange::new(command, deprecate_eof);
    // Packets are separated by a length byte in the fuzz input.
    let mut rest = &data[2..];
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (packet, next) = tail.split_at(n);
        if ex.on_packet(packet).is_err() || ex.is_done() {
            break;
        }
        rest = next;
    }
});
