//! The rules every reading must meet before anything of it is stored.
//!
//! Why here and not in the transport: these are facts about temperatures and
//! clocks, not about gRPC. The transport only maps a [`Violation`] to
//! `INVALID_ARGUMENT` with the field and the rule.

use std::fmt;

use crate::Reading;

/// Absolute zero: no physical temperature is below it.
pub const ABSOLUTE_ZERO_C: f64 = -273.15;
/// The longest `sensor_id` accepted, in bytes.
pub const MAX_SENSOR_ID_BYTES: usize = 128;

/// Whether `c` is a character a `sensor_id` must not contain although it is
/// not a control character: the bidirectional embeddings and overrides
/// (U+202A–U+202E), isolates (U+2066–U+2069) and marks (U+200E, U+200F,
/// U+061C), which reorder or hide how the text around them is shown, and the
/// zero-width space, non-joiner and joiner (U+200B–U+200D) and the byte-order
/// mark (U+FEFF), which show as nothing. Any of them lets one id display as
/// another in `/metrics`, dashboards and terminals ("Trojan Source").
pub fn is_invisible_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200B}'..='\u{200F}'
            | '\u{061C}'
            | '\u{FEFF}'
    )
}

/// Operator-tunable bounds of what is plausible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingLimits {
    /// Highest accepted temperature, °C.
    pub max_temperature: f64,
    /// How far in the future (seconds, against the server's clock) a
    /// timestamp may be before it is refused.
    pub max_future_skew_secs: i64,
}

impl Default for ReadingLimits {
    fn default() -> Self {
        Self {
            max_temperature: 1_000.0,
            max_future_skew_secs: 3_600,
        }
    }
}

/// Why a reading was refused: the field and the rule, in words a client
/// author can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field name as it appears on the wire (`sensor_id`, `temperature`, `timestamp`).
    pub field: &'static str,
    /// A short machine-friendly reason, e.g. `empty`, `not_finite`.
    pub reason: &'static str,
    /// What is wrong and what to send instead.
    pub description: String,
}

impl Violation {
    /// Every `(field, reason)` pair a violation can carry: a fixed set, so
    /// telemetry can show each refusal counter from zero and keep its
    /// cardinality bounded.
    pub const REASONS: &[(&str, &str)] = &[
        ("sensor_id", "empty"),
        ("sensor_id", "too_long"),
        ("sensor_id", "control_character"),
        ("sensor_id", "invisible_character"),
        ("temperature", "not_finite"),
        ("temperature", "below_absolute_zero"),
        ("temperature", "above_max"),
        ("timestamp", "not_positive"),
        ("timestamp", "in_future"),
    ];
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl std::error::Error for Violation {}

impl ReadingLimits {
    /// Checks `reading` against every rule; `now` is the server's Unix time in seconds.
    pub fn check(&self, reading: &Reading, now: i64) -> Result<(), Violation> {
        check_sensor_id(&reading.sensor_id)?;
        self.check_temperature(reading.temperature)?;
        self.check_timestamp(reading.timestamp, now)
    }

    fn check_temperature(&self, t: f64) -> Result<(), Violation> {
        let violation = |reason, description: String| Violation {
            field: "temperature",
            reason,
            description,
        };
        if !t.is_finite() {
            return Err(violation(
                "not_finite",
                format!("must be a finite number of degrees Celsius, got {t}"),
            ));
        }
        if t < ABSOLUTE_ZERO_C {
            return Err(violation(
                "below_absolute_zero",
                format!("{t} °C is below absolute zero ({ABSOLUTE_ZERO_C} °C)"),
            ));
        }
        if t > self.max_temperature {
            return Err(violation(
                "above_max",
                format!(
                    "{t} °C is above the highest accepted temperature ({} °C)",
                    self.max_temperature
                ),
            ));
        }
        Ok(())
    }

    fn check_timestamp(&self, ts: i64, now: i64) -> Result<(), Violation> {
        let violation = |reason, description: String| Violation {
            field: "timestamp",
            reason,
            description,
        };
        if ts <= 0 {
            return Err(violation(
                "not_positive",
                format!("must be a positive Unix time in seconds, got {ts}"),
            ));
        }
        let latest = now.saturating_add(self.max_future_skew_secs);
        if ts > latest {
            // A common mistake deserves its own hint.
            let hint = if ts / 1_000 <= latest && ts / 1_000 > 0 {
                " (it looks like milliseconds; send Unix seconds)"
            } else {
                ""
            };
            return Err(violation(
                "in_future",
                format!(
                    "{ts} is more than {}s ahead of the server clock ({now}){hint}",
                    self.max_future_skew_secs
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a sensor id on its own (for queries).
pub fn check_sensor_id(id: &str) -> Result<(), Violation> {
    let violation = |reason, description: String| Violation {
        field: "sensor_id",
        reason,
        description,
    };
    if id.is_empty() {
        return Err(violation("empty", "must not be empty".to_owned()));
    }
    if id.len() > MAX_SENSOR_ID_BYTES {
        return Err(violation(
            "too_long",
            format!(
                "must be at most {MAX_SENSOR_ID_BYTES} bytes, got {}",
                id.len()
            ),
        ));
    }
    if let Some((at, c)) = id.char_indices().find(|(_, c)| c.is_control()) {
        return Err(violation(
            "control_character",
            format!(
                "must not contain control characters, found U+{:04X} at byte {at}",
                c as u32
            ),
        ));
    }
    if let Some((at, c)) = id
        .char_indices()
        .find(|(_, c)| is_invisible_format_char(*c))
    {
        return Err(violation(
            "invisible_character",
            format!(
                "must not contain bidirectional-override or zero-width characters (they make an id display as another), found U+{:04X} at byte {at}",
                c as u32
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn reading(sensor_id: &str, temperature: f64, timestamp: i64) -> Reading {
        Reading {
            sensor_id: sensor_id.to_owned(),
            temperature,
            timestamp,
        }
    }

    fn refusal(r: Reading) -> (&'static str, &'static str) {
        let v = ReadingLimits::default().check(&r, NOW).unwrap_err();
        (v.field, v.reason)
    }

    #[test]
    fn accepts_plausible_readings() {
        let limits = ReadingLimits::default();
        for r in [
            reading("sensor-1", 21.5, NOW),
            reading("s", ABSOLUTE_ZERO_C, 1),
            reading(&"x".repeat(128), 1_000.0, NOW + 3_600),
            reading("Küche/Ofen", -40.0, NOW - 86_400),
        ] {
            assert_eq!(limits.check(&r, NOW), Ok(()), "{r:?}");
        }
    }

    #[test]
    fn refuses_each_rule_naming_field_and_reason() {
        let cases = [
            (reading("", 20.0, NOW), ("sensor_id", "empty")),
            (
                reading(&"x".repeat(129), 20.0, NOW),
                ("sensor_id", "too_long"),
            ),
            (
                reading("a\nb", 20.0, NOW),
                ("sensor_id", "control_character"),
            ),
            (
                reading("a\u{7f}", 20.0, NOW),
                ("sensor_id", "control_character"),
            ),
            (
                reading("kitchen\u{202E}1", 20.0, NOW),
                ("sensor_id", "invisible_character"),
            ),
            (reading("s", f64::NAN, NOW), ("temperature", "not_finite")),
            (
                reading("s", f64::INFINITY, NOW),
                ("temperature", "not_finite"),
            ),
            (
                reading("s", f64::NEG_INFINITY, NOW),
                ("temperature", "not_finite"),
            ),
            (
                reading("s", -273.16, NOW),
                ("temperature", "below_absolute_zero"),
            ),
            (reading("s", 1e9, NOW), ("temperature", "above_max")),
            (reading("s", 20.0, 0), ("timestamp", "not_positive")),
            (reading("s", 20.0, -5), ("timestamp", "not_positive")),
            (reading("s", 20.0, NOW + 3_601), ("timestamp", "in_future")),
        ];
        for (r, expected) in &cases {
            assert_eq!(refusal(r.clone()), *expected, "{r:?}");
        }
        let seen: std::collections::BTreeSet<_> = cases.iter().map(|(_, e)| *e).collect();
        let listed: std::collections::BTreeSet<_> = Violation::REASONS.iter().copied().collect();
        assert_eq!(
            seen, listed,
            "Violation::REASONS lists exactly the reasons refused"
        );
    }

    #[test]
    fn milliseconds_get_a_hint() {
        let v = ReadingLimits::default()
            .check(&reading("s", 20.0, NOW * 1_000), NOW)
            .unwrap_err();
        assert!(v.description.contains("milliseconds"), "{v}");
        assert_eq!(v.to_string().split(':').next(), Some("timestamp"));
    }
}
