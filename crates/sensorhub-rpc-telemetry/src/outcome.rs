//! What the server and client layers share: their histograms, and what
//! happens when a call ends (how its status is found in a response head,
//! the semconv attributes, the span's last attributes and its end).

use http::Response;
use opentelemetry::{
    Context, KeyValue, Value,
    metrics::{Histogram, Meter},
    trace::{Status, TraceContextExt},
};

use crate::{
    SemconvStability,
    conventions::{a66, grpc_status, semconv, status_from_http},
};

/// A latency histogram in seconds with explicit buckets.
pub(crate) fn latency_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    buckets: &[f64],
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(buckets.to_vec())
        .build()
}

/// An A66 message-size histogram in bytes.
pub(crate) fn size_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<u64> {
    meter
        .u64_histogram(name)
        .with_unit("By")
        .with_description(description)
        .with_boundaries(a66::SIZE_BUCKETS.to_vec())
        .build()
}

/// The status of a call that ended with its response head: a non-200 HTTP
/// answer, or a trailers-only response (the status is in the head and the
/// body is empty). `None`: the status will come in the trailers.
pub(crate) fn status_in_head<B>(response: &Response<B>) -> Option<i32> {
    if response.status() != http::StatusCode::OK {
        Some(status_from_http(response.status()))
    } else {
        grpc_status(response.headers())
    }
}

/// The attributes of `rpc.{server,client}.call.duration`: `server` is what
/// the client side adds (`server.address`, `server.port`, conditionally
/// required on the client metric), empty on the server (opt-in there).
pub(crate) fn semconv_attributes(
    stability: SemconvStability,
    method: Value,
    status: &'static str,
    failed: bool,
    server: &[KeyValue],
) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(5 + server.len());
    attributes.push(KeyValue::new(semconv::RPC_SYSTEM_NAME, "grpc"));
    attributes.push(KeyValue::new(semconv::RPC_METHOD, method));
    for key in stability.status_keys() {
        attributes.push(KeyValue::new(*key, status));
    }
    if failed {
        attributes.push(KeyValue::new(semconv::ERROR_TYPE, status));
    }
    attributes.extend_from_slice(server);
    attributes
}

/// Sets the call's outcome on its span and ends it. `request`/`response`:
/// messages and compressed bytes in each direction.
pub(crate) fn end_span(
    stability: SemconvStability,
    otel: &Context,
    status: &'static str,
    failed: bool,
    (request_messages, request_bytes): (u64, u64),
    (response_messages, response_bytes): (u64, u64),
) {
    let span = otel.span();
    // One call, one lock of the span's data.
    let statuses = stability
        .status_keys()
        .iter()
        .map(|key| KeyValue::new(*key, status));
    span.set_attributes(statuses.chain([
        KeyValue::new(semconv::REQUEST_MESSAGES, request_messages as i64),
        KeyValue::new(semconv::REQUEST_BYTES, request_bytes as i64),
        KeyValue::new(semconv::RESPONSE_MESSAGES, response_messages as i64),
        KeyValue::new(semconv::RESPONSE_BYTES, response_bytes as i64),
    ]));
    if failed {
        span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, status));
        span.set_status(Status::error(status));
    }
    span.end();
}
