//! The mapping between wire messages and domain values, and between domain
//! errors and gRPC statuses. The only place that knows both sides.

use sensorhub_core::{Alert, Reading, SensorStats, StoreError, Violation};

use crate::auth::{Denied, Rule};
use sensorhub_proto as pb;
use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

/// Trailer metadata on a refused stream: how many of its readings were stored.
pub const STORED_COUNT_METADATA: &str = "sensorhub-stored-count";

pub fn reading_from_wire(m: pb::SensorReading) -> Reading {
    Reading {
        sensor_id: m.sensor_id,
        temperature: m.temperature,
        timestamp: m.timestamp,
    }
}

pub fn reading_to_wire(r: Reading) -> pb::SensorReading {
    pb::SensorReading {
        sensor_id: r.sensor_id,
        temperature: r.temperature,
        timestamp: r.timestamp,
    }
}

pub fn alert_to_wire(a: &Alert, server_time: i64) -> pb::ServerMessage {
    pb::ServerMessage {
        message: a.describe(),
        server_time,
        kind: pb::ServerMessageKind::Alert as i32,
        alert: Some(pb::Alert {
            sensor_id: a.sensor_id.clone(),
            rule: a.rule.as_str().to_owned(),
            temperature: a.temperature,
            timestamp: a.timestamp,
            rolling_mean: a.rolling_mean,
            threshold: a.threshold,
        }),
    }
}

pub fn stats_to_wire(s: SensorStats) -> pb::SensorStats {
    pb::SensorStats {
        mean: s.mean(),
        sensor_id: s.sensor_id,
        count: s.count,
        min: s.min,
        max: s.max,
        last: s.last,
        last_timestamp: s.last_timestamp,
        rolling_mean: s.rolling_mean,
        alerts: s.alerts,
    }
}

/// The chat acknowledgement text, formatted as the original Python server
/// did (`f"Received {temperature}"`): Python's float repr, so `25.0` stays
/// `25.0`, not Rust's `25`.
pub fn received_message(temperature: f64) -> String {
    format!("Received {}", python_float_repr(temperature))
}

/// `repr(float)` as CPython prints it, for the finite values validation lets through.
pub fn python_float_repr(x: f64) -> String {
    let abs = x.abs();
    if x == 0.0 || (1e-4..1e16).contains(&abs) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        // Python switches to exponent notation: 1e-05, 1.5e+16.
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').expect("exponent notation");
        let exp: i32 = exp.parse().expect("exponent");
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// A refused single reading: `INVALID_ARGUMENT` naming field and rule, with
/// a `google.rpc.BadRequest` detail for programs.
pub fn invalid_reading(v: &Violation) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid reading: {v}; nothing was stored"),
        ErrorDetails::with_bad_request_violation(v.field, v.description.clone()),
    )
}

/// A refused query: `INVALID_ARGUMENT` naming the field.
pub fn invalid_request(field: &'static str, description: String) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// A refused reading in a stream: which one, why, and exactly what of the
/// stream was stored (every reading before it; nothing after).
pub fn invalid_reading_in_stream(v: &Violation, index: u64, stored: u64) -> Status {
    let mut status = Status::with_error_details(
        Code::InvalidArgument,
        format!(
            "invalid reading #{index} (counting from 0): {v}; the {stored} readings before it were stored, it and everything after it were not"
        ),
        ErrorDetails::with_bad_request_violation(
            format!("stream[{index}].{}", v.field),
            v.description.clone(),
        ),
    );
    set_stored_count(&mut status, stored);
    status
}

/// A reading for a sensor the caller may not write, or a read of one it
/// may not read: `PERMISSION_DENIED` naming the sensor and the rule.
pub fn permission_denied(denied: &Denied) -> Status {
    let what = match denied.rule {
        Rule::Write => "nothing was stored",
        Rule::Read => "nothing was sent",
    };
    Status::permission_denied(format!("permission denied: {denied}; {what}"))
}

/// A reading of a stream for a sensor the caller may not write: which one,
/// and exactly what of the stream was stored (every reading before it).
pub fn permission_denied_in_stream(denied: &Denied, index: u64, stored: u64) -> Status {
    let mut status = Status::permission_denied(format!(
        "permission denied for reading #{index} (counting from 0): {denied}; the {stored} readings before it were stored, it and everything after it were not"
    ));
    set_stored_count(&mut status, stored);
    status
}

/// Attaches how many readings of a stream were stored to a status.
pub fn set_stored_count(status: &mut Status, stored: u64) {
    status
        .metadata_mut()
        .insert(STORED_COUNT_METADATA, MetadataValue::from(stored));
}

/// A store failure as the client should see it.
pub fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::Closed => {
            Status::unavailable("the server is shutting down; retry against a running server")
        }
        StoreError::KeyConflict(why) => Status::failed_precondition(format!(
            "{}: {why}; nothing of this call was stored",
            crate::idempotency_key::METADATA_KEY
        )),
        StoreError::Unavailable(why) => Status::unavailable(why.clone()),
        StoreError::OutOfDescriptors => {
            tracing::warn!(error = %e, "store call refused");
            Status::unavailable(
                "the server is out of file descriptors (too many open connections); nothing was changed, retry with backoff",
            )
        }
        StoreError::Write(_) => {
            tracing::error!(error = %e, "store failure");
            Status::internal(
                "the store failed; the call's readings were not acknowledged, retry later",
            )
        }
        // Only reads reach the store in any other way once it is open.
        other => {
            tracing::error!(error = %other, "store read failure");
            Status::internal("reading from the store failed; nothing was changed, retry later")
        }
    }
}

/// The largest decompression window tonic's zstd decoder allocates: zstd's
/// default limit (a window log of 27), which tonic does not change.
pub const ZSTD_WINDOW_LIMIT_BYTES: u64 = 1 << 27;

/// What zstd says when a frame asks for a window over that limit.
const ZSTD_WINDOW_TOO_LARGE: &str = "Frame requires too much memory for decoding";

/// Rewrites statuses tonic produces while decoding a request into the ones
/// the gRPC spec (and our clients) expect: an over-size message is
/// `RESOURCE_EXHAUSTED`, not `OUT_OF_RANGE`, and so is a zstd message whose
/// window is over the decoder's limit, not `INTERNAL`.
pub fn decode_status(status: Status, max_message_bytes: usize) -> Status {
    remapped(status.code(), status.message(), max_message_bytes).unwrap_or(status)
}

/// The status tonic's `code` and `message` stand for, if it is one to rewrite.
fn remapped(code: Code, message: &str, max_message_bytes: usize) -> Option<Status> {
    match code {
        Code::OutOfRange if message.contains("message length too large") => {
            Some(message_too_large(max_message_bytes))
        }
        Code::Internal if message.contains(ZSTD_WINDOW_TOO_LARGE) => {
            Some(zstd_window_too_large(max_message_bytes))
        }
        _ => None,
    }
}

pub fn message_too_large(max_message_bytes: usize) -> Status {
    Status::resource_exhausted(format!(
        "a message is larger than the server accepts ({max_message_bytes} bytes after decompression); send readings one per message, or stream them"
    ))
}

/// A zstd frame whose header asks for a decompression window over
/// [`ZSTD_WINDOW_LIMIT_BYTES`]: refused before anything is allocated.
pub fn zstd_window_too_large(max_message_bytes: usize) -> Status {
    Status::resource_exhausted(format!(
        "a zstd-compressed message asks for a decompression window larger than the server allows ({ZSTD_WINDOW_LIMIT_BYTES} bytes); compress with a smaller window (zstd levels 1 to 19 all fit), messages are at most {max_message_bytes} bytes after decompression anyway"
    ))
}

/// The same rewrites for responses tonic answers before a handler runs
/// (a unary request that failed to decode): there the status travels in the
/// response headers ("trailers-only"). The call policy layer
/// (`call_policy.rs`) calls it for an `OUT_OF_RANGE` or `INTERNAL` head.
pub fn remap_trailers_only_status(headers: &mut http::HeaderMap, max_message_bytes: usize) {
    let Some(code) = headers.get(Status::GRPC_STATUS) else {
        return;
    };
    let code = Code::from_bytes(code.as_bytes());
    let message = trailers_only_message(headers).unwrap_or_default();
    if let Some(status) = remapped(code, &message, max_message_bytes) {
        set_trailers_only_status(headers, &status);
    }
}

/// A unary-request call (unary or server-streaming) whose request ended
/// without a message: a cardinality violation, `UNIMPLEMENTED` per the gRPC
/// spec (tonic says `INTERNAL "Missing request message."`).
pub fn request_message_missing(method: &str) -> Status {
    Status::unimplemented(format!(
        "/{method} expects exactly one request message (its request is unary), and the request ended without one; nothing was stored"
    ))
}

/// A unary-request call (unary or server-streaming) whose request carried a
/// second message: `INTERNAL`, as grpc-java answers it ("Too many
/// requests"); the handler never ran.
pub fn second_request_message(method: &str) -> Status {
    Status::internal(format!(
        "/{method} is unary: a call carries exactly one request message, and this one sent a second; nothing was stored (send each reading in its own call, or stream them with StreamSensorReadings)"
    ))
}

/// Request metadata over the limit, `size` bytes as HTTP/2 counts a header list.
pub fn metadata_too_large(size: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "the request metadata is {size} bytes (names, values and 32 per entry, as HTTP/2 counts them), more than the {limit} bytes this server accepts; nothing was read or stored, send less metadata"
    ))
}

/// A path naming a served service but none of its methods. `served`: what
/// the server serves, for the caller to pick from.
pub fn unknown_method(path: &str, service: &str, served: &str) -> Status {
    Status::unimplemented(format!(
        "unknown method {path}: {service} has no such method; this server serves {served}"
    ))
}

/// A path naming no served service (`service`: the part before the method,
/// if the path has one).
pub fn unknown_service(path: &str, service: Option<&str>, served: &str) -> Status {
    Status::unimplemented(match service {
        Some(service) => {
            format!("unknown service {service} (path {path}); this server serves {served}")
        }
        None => {
            format!("unknown path {path}, not /package.Service/Method; this server serves {served}")
        }
    })
}

/// The `grpc-message` of a trailers-only head, percent-decoded as the gRPC
/// spec encodes it.
pub fn trailers_only_message(headers: &http::HeaderMap) -> Option<String> {
    let raw = headers.get(Status::GRPC_MESSAGE)?.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if raw[i] == b'%'
            && let Some(&[hi, lo]) = raw.get(i + 1..i + 3)
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Replaces the status of a trailers-only head with `status`; tonic writes
/// `grpc-status` and the percent-encoded `grpc-message`.
pub fn set_trailers_only_status(headers: &mut http::HeaderMap, status: &Status) {
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if status.add_header(headers).is_err() {
        // Only a metadata value could be invalid; the code alone still goes out.
        headers.insert(
            Status::GRPC_STATUS,
            http::HeaderValue::from(status.code() as i32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python() {
        for (x, py) in [
            (25.0, "25.0"),
            (21.5, "21.5"),
            (-0.5, "-0.5"),
            (0.0, "0.0"),
            (23.456789, "23.456789"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (-273.15, "-273.15"),
            (1000.0, "1000.0"),
        ] {
            assert_eq!(python_float_repr(x), py, "{x}");
        }
        assert_eq!(received_message(22.0), "Received 22.0");
    }
}
