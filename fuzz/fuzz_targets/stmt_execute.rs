//! Arbitrary COM_STMT_EXECUTE payloads against a prepared statement with a
//! fuzzer-chosen parameter count and long-data flags.
#![no_main]
use chaperone_mysql::protocol::execute::{parse, PreparedStatement};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let num_params = u16::from_le_bytes([data[0], data[1]]) % 300;
    let long = data[2];
    let mut stmt = PreparedStatement {
        sql: String::new(),
        num_params,
        num_columns: 1,
        bound_types: None,
        long_data: (0..num_params).map(|i| long & (1 << (i % 8)) != 0).collect(),
    };
    // Twice: the second run exercises previously bound types.
    let _ = parse(&data[3..], &mut stmt);
    let _ = parse(&data[3..], &mut stmt);
});
