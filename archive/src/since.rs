//! `--since` values of the CLI: a duration back from now (`90s`, `30m`, `24h`,
//! `7d`, `2w`) or a point in time (`2024-03-05`, `2024-03-05T07:00:00Z`).

/// A duration (`90s`, `30m`, `24h`, `7d`, `2w`) in nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    match parse_since(text, 0) {
        Ok(ns) if ns <= 0 && text.chars().last().is_some_and(|c| c.is_ascii_lowercase()) => Ok(-ns),
        _ => Err(format!(
            "{text:?} is not a duration: use a number and s, m, h, d or w (90d, 12w)"
        )),
    }
}

/// The Unix time (nanoseconds) that `text` names, relative to `now_ns`.
pub fn parse_since(text: &str, now_ns: i64) -> Result<i64, String> {
    let text = text.trim();
    let unit = |c: char| -> Option<i64> {
        Some(match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        })
    };
    if let Some(last) = text.chars().last() {
        if let (Some(secs), Ok(n)) = (unit(last), text[..text.len() - 1].parse::<i64>()) {
            return Ok(now_ns.saturating_sub(n.saturating_mul(secs).saturating_mul(1_000_000_000)));
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("{text}: out of range"));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .ok_or_else(|| format!("{text}: out of range"));
    }
    Err(format!(
        "--since {text:?}: use a duration (30m, 24h, 7d) or a date/time (2024-03-05, 2024-03-05T07:00:00Z)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates() {
        let now = 1_000_000 * 1_000_000_000;
        assert_eq!(parse_since("90s", now), Ok(now - 90_000_000_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000_000_000));
        assert_eq!(parse_since("1970-01-02", now), Ok(86_400_000_000_000));
        assert_eq!(parse_since("1970-01-01T00:01:00Z", now), Ok(60_000_000_000));
        assert!(parse_since("yesterday", now).is_err());
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400_000_000_000));
        assert!(parse_duration("2024-03-05").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
