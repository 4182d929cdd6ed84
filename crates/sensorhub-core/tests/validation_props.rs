//! Property tests of validation: for any reading, any server clock and any
//! operator limits, `ReadingLimits::check` returns (never panics) and agrees
//! with the rules as README states them, in their order. A refusal names the
//! wire field, a machine reason and a description a client author can act on.
//!
//! 256 cases per property by default (a few seconds); run longer with
//! `PROPTEST_CASES=100000 cargo test -p sensorhub-core --test validation_props`.

use proptest::prelude::*;
use sensorhub_core::{
    Reading, ReadingLimits, Violation,
    validation::{ABSOLUTE_ZERO_C, MAX_SENSOR_ID_BYTES, check_sensor_id},
};

/// The characters README lists as refused in a `sensor_id` besides control
/// characters (bidirectional controls and zero-width characters), written
/// out one by one.
const INVISIBLE: [char; 16] = [
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', // embeddings, overrides
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', // isolates
    '\u{200E}', '\u{200F}', '\u{061C}', // marks
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{FEFF}', // zero-width
];

/// The rules, written out independently of the implementation: the field
/// and reason of the first rule `r` breaks, or `None` if it meets them all.
fn expected_refusal(
    r: &Reading,
    limits: &ReadingLimits,
    now: i64,
) -> Option<(&'static str, &'static str)> {
    let id = &r.sensor_id;
    let t = r.temperature;
    let latest = now.saturating_add(limits.max_future_skew_secs);
    if id.is_empty() {
        Some(("sensor_id", "empty"))
    } else if id.len() > MAX_SENSOR_ID_BYTES {
        Some(("sensor_id", "too_long"))
    } else if id.chars().any(char::is_control) {
        Some(("sensor_id", "control_character"))
    } else if id.chars().any(|c| INVISIBLE.contains(&c)) {
        Some(("sensor_id", "invisible_character"))
    } else if t.is_nan() || t.is_infinite() {
        Some(("temperature", "not_finite"))
    } else if t < ABSOLUTE_ZERO_C {
        Some(("temperature", "below_absolute_zero"))
    } else if t > limits.max_temperature {
        Some(("temperature", "above_max"))
    } else if r.timestamp <= 0 {
        Some(("timestamp", "not_positive"))
    } else if r.timestamp > latest {
        Some(("timestamp", "in_future"))
    } else {
        None
    }
}

fn sensor_ids() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => any::<char>(),
        1 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => proptest::char::range('\u{7f}', '\u{9f}'),
        1 => Just('é'),
        1 => Just('/'),
        1 => prop::sample::select(INVISIBLE.to_vec()),
        // The neighbours of each refused range, which are accepted.
        1 => prop::sample::select(vec!['\u{2029}', '\u{202F}', '\u{2065}', '\u{206A}', '\u{200A}', '\u{2010}', '\u{061B}', '\u{061D}', '\u{FEFE}', '\u{FF00}']),
    ];
    prop_oneof![
        prop::collection::vec(chars.clone(), 0..8),
        // Around the length limit, in bytes (é is two).
        prop::collection::vec(chars, 60..140),
    ]
    .prop_map(|chars| chars.into_iter().collect())
}

fn temperatures() -> impl Strategy<Value = f64> {
    prop_oneof![
        -300.0..1_100.0f64,
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            ABSOLUTE_ZERO_C,
            ABSOLUTE_ZERO_C - 1e-9,
            1_000.0,
            1_000.000_001,
            f64::MAX,
            f64::MIN,
            -0.0,
        ]),
    ]
}

const NOW: i64 = 1_700_000_000;

fn timestamps() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -5..5i64,
        (NOW - 100_000)..(NOW + 10_000),
        // Milliseconds, the common mistake.
        (NOW - 100_000)..(NOW + 100),
    ]
    .prop_flat_map(|ts| prop_oneof![Just(ts), Just(ts.saturating_mul(1_000))])
}

fn clocks() -> impl Strategy<Value = i64> {
    prop_oneof![4 => Just(NOW), 1 => any::<i64>()]
}

fn limits() -> impl Strategy<Value = ReadingLimits> {
    (
        prop_oneof![4 => Just(1_000.0), 2 => -300.0..5_000.0f64, 1 => any::<f64>()],
        prop_oneof![4 => Just(3_600i64), 2 => 0..1_000_000i64, 1 => any::<i64>()],
    )
        .prop_map(|(max_temperature, max_future_skew_secs)| ReadingLimits {
            max_temperature,
            max_future_skew_secs,
        })
}

fn readings() -> impl Strategy<Value = Reading> {
    (sensor_ids(), temperatures(), timestamps()).prop_map(|(sensor_id, temperature, timestamp)| {
        Reading {
            sensor_id,
            temperature,
            timestamp,
        }
    })
}

fn assert_actionable(v: &Violation) {
    assert!(
        ["sensor_id", "temperature", "timestamp"].contains(&v.field),
        "{v:?}"
    );
    assert!(!v.reason.is_empty(), "{v:?}");
    assert!(v.description.len() >= 10, "says what is wrong: {v:?}");
    assert!(v.to_string().starts_with(&format!("{}: ", v.field)), "{v}");
}

proptest! {
    #[test]
    fn check_agrees_with_the_rules(
        reading in readings(),
        limits in limits(),
        now in clocks(),
    ) {
        let outcome = limits.check(&reading, now);
        let expected = expected_refusal(&reading, &limits, now);
        match (&outcome, expected) {
            (Ok(()), None) => {}
            (Err(v), Some((field, reason))) => {
                prop_assert_eq!((v.field, v.reason), (field, reason), "{:?}", reading);
                assert_actionable(v);
            }
            _ => prop_assert!(false, "{:?}: got {:?}, rules say {:?}", reading, outcome, expected),
        }
    }

    #[test]
    fn refusals_say_what_to_fix(reading in readings(), now in clocks()) {
        let limits = ReadingLimits::default();
        if let Err(v) = limits.check(&reading, now) {
            match v.reason {
                "too_long" => prop_assert!(v.description.contains("128"), "{}", v),
                "control_character" => {
                    let c = reading.sensor_id.chars().find(|c| c.is_control()).unwrap();
                    let code = format!("U+{:04X}", c as u32);
                    prop_assert!(v.description.contains(&code), "{} names {}", v, code);
                }
                "invisible_character" => {
                    let c = reading.sensor_id.chars().find(|c| INVISIBLE.contains(c)).unwrap();
                    let code = format!("U+{:04X}", c as u32);
                    prop_assert!(v.description.contains(&code), "{} names {}", v, code);
                }
                "below_absolute_zero" => prop_assert!(v.description.contains("absolute zero"), "{}", v),
                "above_max" => prop_assert!(v.description.contains("1000"), "{}", v),
                "not_positive" | "in_future" => {
                    prop_assert!(v.description.contains(&reading.timestamp.to_string()), "{}", v)
                }
                _ => {}
            }
        }
    }

    #[test]
    // Any time in seconds up to the latest accepted one, sent in milliseconds
    // (the smallest such value already lies ahead of the clock).
    fn milliseconds_get_the_hint(seconds in (NOW + 3_600) / 1_000 + 1..=NOW + 3_600) {
        let reading = Reading {
            sensor_id: "s".into(),
            temperature: 20.0,
            timestamp: seconds * 1_000,
        };
        let v = ReadingLimits::default().check(&reading, NOW).unwrap_err();
        prop_assert_eq!(v.reason, "in_future");
        prop_assert!(v.description.contains("milliseconds"), "{}", v);
    }

    #[test]
    fn sensor_id_check_alone_matches_the_reading_check(id in sensor_ids()) {
        let alone = check_sensor_id(&id).err().map(|v| v.reason);
        let reading = Reading { sensor_id: id, temperature: 20.0, timestamp: NOW };
        let whole = ReadingLimits::default().check(&reading, NOW).err().map(|v| v.reason);
        prop_assert_eq!(alone, whole);
    }

    #[test]
    fn every_invisible_character_is_refused_anywhere(
        c in prop::sample::select(INVISIBLE.to_vec()),
        before in "[a-z0-9-]{0,20}",
        after in "[a-z0-9-]{0,20}",
    ) {
        let id = format!("{before}{c}{after}");
        let v = check_sensor_id(&id).unwrap_err();
        prop_assert_eq!(v.reason, "invisible_character");
        let at = format!("at byte {}", before.len());
        prop_assert!(v.description.contains(&at), "{} says {}", v, at);
    }
}
