//! Parsing and printing the times users type: Unix seconds, RFC 3339, or a
//! duration meaning "that long ago" (`10m`, `2h`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses `1700000000`, `2026-11-21T10:00:00Z` or `15m` (15 minutes ago) into Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(unix_now() - ago.as_secs() as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
        .map_err(|_| format!("`{s}` is not a time: use Unix seconds, RFC 3339 (2026-11-21T10:00:00Z) or a duration ago (15m)"))
}

/// Unix seconds as RFC 3339 UTC, or the raw number when out of range.
pub fn format_time(secs: i64) -> String {
    u64::try_from(secs)
        .ok()
        .map(|s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        let ago = parse_time("10m").unwrap();
        assert!((unix_now() - 600 - ago).abs() <= 1);
        assert!(
            parse_time("yesterday-ish")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
