//! Property tests (fuzzing) of the path every ingested message takes:
//! protobuf decoding of `SensorReading`, the wire → domain conversion, the
//! validation and the status a refusal becomes. For any bytes at all it
//! never panics and ends in exactly one of: a decode error, a reading that
//! meets every rule, or a `Violation` whose status names the field.
//! Valid messages round-trip through encoding and the conversion unchanged.
//!
//! 256 cases per property by default (a few seconds); run longer with
//! `PROPTEST_CASES=100000 cargo test -p sensorhub-grpc --test wire_props`.

use proptest::prelude::*;
use prost::Message;
use sensorhub_core::{Reading, ReadingLimits};
use sensorhub_grpc::convert::{
    STORED_COUNT_METADATA, invalid_reading, invalid_reading_in_stream, reading_from_wire,
    reading_to_wire,
};
use sensorhub_proto::SensorReading;
use tonic::Code;
use tonic_types::StatusExt;

const NOW: i64 = 1_700_000_000;

/// Appends a protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field as raw bytes: any field number and wire type, with a payload
/// shaped for the wire type (or not, when `payload` is too short).
fn field_bytes(number: u32, wire_type: u8, value: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(
        (u64::from(number) << 3) | u64::from(wire_type & 7),
        &mut out,
    );
    match wire_type & 7 {
        0 => varint(value, &mut out),
        1 => out.extend_from_slice(&value.to_le_bytes()),
        2 => {
            varint(payload.len() as u64, &mut out);
            out.extend_from_slice(payload);
        }
        5 => out.extend_from_slice(&(value as u32).to_le_bytes()),
        // Groups (3, 4) and the invalid 6 and 7: whatever follows.
        _ => out.extend_from_slice(payload),
    }
    out
}

fn wire_readings() -> impl Strategy<Value = SensorReading> {
    (
        prop_oneof![
            1 => ".{0,20}",
            1 => "[a-z0-9/-]{1,130}",
            3 => "[a-z]{1,10}",
            1 => prop::collection::vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect()),
        ],
        prop_oneof![
            3 => -300.0..1_100.0f64,
            1 => any::<u64>().prop_map(f64::from_bits),
            1 => prop::sample::select(vec![0.0, -0.0, f64::NAN, -f64::NAN, f64::INFINITY, f64::MIN_POSITIVE]),
        ],
        prop_oneof![1 => any::<i64>(), 3 => (NOW - 1_000_000)..(NOW + 10_000)],
    )
        .prop_map(|(sensor_id, temperature, timestamp)| SensorReading {
            sensor_id,
            temperature,
            timestamp,
        })
}

/// Bytes a server might receive in a gRPC frame: noise, a valid encoding
/// damaged in a few places, or a soup of fields with arbitrary numbers and
/// wire types (including the real fields 1–3 with the wrong type).
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..200);
    let damaged = (
        wire_readings(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..3),
    )
        .prop_map(|(reading, edits)| {
            let mut bytes = reading.encode_to_vec();
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        });
    let soup = prop::collection::vec(
        (
            prop_oneof![1..4u32, 1..20u32, any::<u32>().prop_map(|n| n >> 3)],
            0..8u8,
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..20),
        ),
        0..6,
    )
    .prop_map(|fields| {
        fields
            .into_iter()
            .flat_map(|(n, wt, v, p)| field_bytes(n, wt, v, &p))
            .collect()
    });
    // The real fields, repeated and in any order (the last one wins), among
    // unknown ones that must be skipped.
    let shuffled = prop::collection::vec(
        (
            wire_readings(),
            0..4u32,
            prop::collection::vec(any::<u8>(), 0..8),
        ),
        1..4,
    )
    .prop_map(|fields| {
        let mut out = Vec::new();
        for (r, which, unknown) in fields {
            out.extend(match which {
                0 => field_bytes(1, 2, 0, r.sensor_id.as_bytes()),
                1 => field_bytes(2, 1, r.temperature.to_bits(), &[]),
                2 => field_bytes(3, 0, r.timestamp as u64, &[]),
                _ => field_bytes(9, 2, 0, &unknown),
            });
        }
        out
    });
    prop_oneof![noise, damaged, soup, shuffled]
}

/// Equal bit for bit (so NaN payloads count), except that -0.0 may come
/// back as 0.0: prost leaves a double equal to the proto3 default 0.0 out
/// of the encoding, and -0.0 == 0.0. The same temperature either way.
fn same_temperature(sent: f64, got: f64) -> bool {
    sent.to_bits() == got.to_bits() || (sent == 0.0 && got.to_bits() == 0)
}

fn same_reading(a: &SensorReading, b: &SensorReading) -> bool {
    a.sensor_id == b.sensor_id
        && same_temperature(a.temperature, b.temperature)
        && a.timestamp == b.timestamp
}

proptest! {
    /// Whatever arrives, the outcome is a decode error, an accepted reading
    /// that meets every rule, or a refusal the client can act on.
    #[test]
    fn any_bytes_decode_convert_and_validate_without_panicking(
        bytes in message_bytes(),
        index in 0..10_000u64,
        stored in 0..10_000u64,
    ) {
        let Ok(message) = SensorReading::decode(bytes.as_slice()) else {
            return Ok(());
        };
        // A decoded message is canonical: encoding it again gives the same message.
        let again = SensorReading::decode(message.encode_to_vec().as_slice()).expect("re-decodes");
        prop_assert!(same_reading(&message, &again), "{:?} vs {:?}", message, again);

        let reading = reading_from_wire(message.clone());
        match ReadingLimits::default().check(&reading, NOW) {
            Ok(()) => {
                prop_assert!(!reading.sensor_id.is_empty() && reading.sensor_id.len() <= 128);
                prop_assert!(!reading.sensor_id.chars().any(char::is_control));
                prop_assert!((-273.15..=1_000.0).contains(&reading.temperature));
                prop_assert!(reading.timestamp > 0 && reading.timestamp <= NOW + 3_600);
            }
            Err(v) => {
                let status = invalid_reading(&v);
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                prop_assert!(status.message().contains(v.field), "{}", status.message());
                prop_assert!(status.message().contains("nothing was stored"), "{}", status.message());
                let detail = status.get_details_bad_request().expect("BadRequest detail");
                prop_assert_eq!(detail.field_violations.len(), 1);
                prop_assert_eq!(&detail.field_violations[0].field, v.field);
                prop_assert!(!detail.field_violations[0].description.is_empty());

                let status = invalid_reading_in_stream(&v, index, stored);
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                let number = format!("#{index}");
                prop_assert!(status.message().contains(&number), "{}", status.message());
                let trailer = status.metadata().get(STORED_COUNT_METADATA).expect("stored count");
                prop_assert_eq!(trailer.to_str().unwrap(), stored.to_string());
                let detail = status.get_details_bad_request().expect("BadRequest detail");
                prop_assert_eq!(
                    &detail.field_violations[0].field,
                    &format!("stream[{index}].{}", v.field)
                );
            }
        }
    }

    /// A string field that is not UTF-8 never decodes into a reading.
    #[test]
    fn sensor_id_that_is_not_utf8_is_a_decode_error(
        prefix in "[a-z]{0,5}",
        bad in prop_oneof![Just(vec![0xff]), Just(vec![0xc3]), Just(vec![0xed, 0xa0, 0x80]), Just(vec![0x80, 0x80])],
        suffix in "[a-z]{0,5}",
    ) {
        let mut id = prefix.into_bytes();
        id.extend_from_slice(&bad);
        id.extend_from_slice(suffix.as_bytes());
        prop_assume!(std::str::from_utf8(&id).is_err());
        let mut bytes = field_bytes(1, 2, 0, &id);
        bytes.extend(field_bytes(2, 1, 20.5f64.to_bits(), &[]));
        prop_assert!(SensorReading::decode(bytes.as_slice()).is_err());
    }

    /// Any message round-trips through the wire format and the conversion
    /// to the domain and back, bit for bit (NaN payloads included; see
    /// [`same_temperature`] for -0.0).
    #[test]
    fn readings_round_trip_through_the_wire(message in wire_readings()) {
        let decoded = SensorReading::decode(message.encode_to_vec().as_slice()).expect("decodes");
        prop_assert!(same_reading(&message, &decoded), "{:?} vs {:?}", message, decoded);

        let domain: Reading = reading_from_wire(decoded.clone());
        prop_assert_eq!(&domain.sensor_id, &message.sensor_id);
        prop_assert_eq!(domain.temperature.to_bits(), decoded.temperature.to_bits());
        prop_assert_eq!(domain.timestamp, message.timestamp);
        let back = reading_to_wire(domain);
        prop_assert!(same_reading(&message, &back), "{:?} vs {:?}", message, back);
    }
}
