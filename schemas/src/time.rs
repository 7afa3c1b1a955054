//! Times as people read them in messages, the CLI and the web UI: one formatter
//! for the whole project, on chrono (no hand-written calendar).

use chrono::{DateTime, SecondsFormat, Utc};

/// An RFC 3339 UTC time of Unix nanoseconds, to the second: `2026-12-04T19:22:53Z`.
pub fn rfc3339_ns(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ssZ` (the CLI's and the web inbox's times).
pub fn format_unix_secs(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(format_unix_secs(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_unix_secs(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(
            rfc3339_ns(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20Z"
        );
    }
}
