//! Arbitrary bytes as a client's handshake response or SSLRequest: parsing
//! either succeeds or fails with an error, never panics.
#![no_main]
use chaperone_mysql::protocol::handshake::{is_ssl_request, ClientHello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_ssl_request(data);
    let _ = ClientHello::parse(data);
});
