//! Names, units and bucket boundaries from the two conventions we emit, kept
//! here as our own constants: gRPC's OpenTelemetry metrics (gRFC A66, and
//! A96's retry metrics) and the OpenTelemetry RPC semantic conventions,
//! v1.40.0 and the rename after v1.44.0 (`crate::stability` chooses between
//! them; the `opentelemetry-semantic-conventions` crate lags the spec, so its
//! constants would be older names still).

/// gRFC A66 instruments.
pub mod a66 {
    pub const SERVER_CALL_STARTED: &str = "grpc.server.call.started";
    pub const SERVER_CALL_DURATION: &str = "grpc.server.call.duration";
    pub const SERVER_SENT_SIZE: &str = "grpc.server.call.sent_total_compressed_message_size";
    pub const SERVER_RCVD_SIZE: &str = "grpc.server.call.rcvd_total_compressed_message_size";
    pub const CLIENT_ATTEMPT_STARTED: &str = "grpc.client.attempt.started";
    pub const CLIENT_ATTEMPT_DURATION: &str = "grpc.client.attempt.duration";
    pub const CLIENT_SENT_SIZE: &str = "grpc.client.attempt.sent_total_compressed_message_size";
    pub const CLIENT_RCVD_SIZE: &str = "grpc.client.attempt.rcvd_total_compressed_message_size";
    pub const CLIENT_CALL_DURATION: &str = "grpc.client.call.duration";

    pub const METHOD: &str = "grpc.method";
    pub const STATUS: &str = "grpc.status";
    pub const TARGET: &str = "grpc.target";
    /// What A66 records for a method the server did not register.
    pub const OTHER_METHOD: &str = "other";

    /// A66 latency buckets, seconds.
    pub const LATENCY_BUCKETS: &[f64] = &[
        0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
        0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13,
        0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
    ];
    /// A66 message-size buckets, bytes.
    pub const SIZE_BUCKETS: &[f64] = &[
        0.0,
        1024.0,
        2048.0,
        4096.0,
        16384.0,
        65536.0,
        262144.0,
        1048576.0,
        4194304.0,
        16777216.0,
        67108864.0,
        268435456.0,
        1073741824.0,
        4294967296.0,
    ];
}

/// gRFC A96's retry metrics: histograms recorded once per call, at its end,
/// with A66's `grpc.method` and `grpc.target`. Experimental, so off until
/// switched on by name (gRFC A79).
pub mod a96 {
    /// Retries by a retry policy (the first attempt not counted).
    pub const CLIENT_CALL_RETRIES: &str = "grpc.client.call.retries";
    /// Transparent retries (gRFC A6: attempts whose request never left the client).
    pub const CLIENT_CALL_TRANSPARENT_RETRIES: &str = "grpc.client.call.transparent_retries";
    /// Hedged attempts.
    pub const CLIENT_CALL_HEDGES: &str = "grpc.client.call.hedges";
    /// Total time, seconds, with no attempt under way between the first
    /// attempt and the call's end.
    pub const CLIENT_CALL_RETRY_DELAY: &str = "grpc.client.call.retry_delay";

    /// A96's recommended buckets for `grpc.client.call.transparent_retries`
    /// (`retry_delay` takes A66's latency buckets).
    pub const TRANSPARENT_RETRY_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0];
}

/// OpenTelemetry RPC semantic conventions (v1.40: `rpc.system.name`, fully
/// qualified `rpc.method`, string `rpc.response.status_code`, durations in
/// seconds; after v1.44: `rpc.status_code`).
pub mod semconv {
    pub const SEMCONV_VERSION: &str = "1.40.0";
    pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.40.0";

    pub const SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
    pub const CLIENT_CALL_DURATION: &str = "rpc.client.call.duration";

    pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
    pub const RPC_METHOD: &str = "rpc.method";
    pub const RPC_METHOD_ORIGINAL: &str = "rpc.method_original";
    /// The status, v1.40.0 to v1.44.0.
    pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
    /// The status after v1.44.0 (semantic-conventions #3921).
    pub const RPC_STATUS_CODE: &str = "rpc.status_code";
    pub const ERROR_TYPE: &str = "error.type";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
    pub const NETWORK_PEER_PORT: &str = "network.peer.port";
    /// What semconv records for a method the server did not register.
    pub const OTHER_METHOD: &str = "_OTHER";

    /// Per-call message tallies. Not in semconv (which deprecated per-message
    /// events in v1.40 and has no per-call replacement yet): our own names.
    pub const REQUEST_MESSAGES: &str = "rpc.grpc.request.message_count";
    pub const REQUEST_BYTES: &str = "rpc.grpc.request.compressed_size";
    pub const RESPONSE_MESSAGES: &str = "rpc.grpc.response.message_count";
    pub const RESPONSE_BYTES: &str = "rpc.grpc.response.compressed_size";

    /// Semconv's recommended duration buckets, seconds.
    pub const DURATION_BUCKETS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];
}

/// The canonical name of a gRPC status code (`UNAUTHENTICATED`), which tonic's
/// `Code` Display does not give (it prints a sentence).
pub fn status_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Whether a status makes a *server* span an error (semconv: only codes that
/// say the server failed, not that the caller asked for something wrong).
pub fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The gRPC status a non-200 HTTP response stands for (gRPC's HTTP→status mapping).
pub fn status_from_http(status: http::StatusCode) -> i32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// `grpc-status` of a header map (trailers, or headers of a trailers-only response).
pub fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_the_canonical_ones() {
        let all: Vec<_> = (0..=16).map(status_name).collect();
        assert_eq!(all[0], "OK");
        assert_eq!(all[3], "INVALID_ARGUMENT");
        assert_eq!(all[16], "UNAUTHENTICATED");
        assert_eq!(status_name(99), "UNKNOWN");
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 17);
    }

    #[test]
    fn bucket_boundaries_are_increasing() {
        for buckets in [
            a66::LATENCY_BUCKETS,
            a66::SIZE_BUCKETS,
            semconv::DURATION_BUCKETS,
        ] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(a66::LATENCY_BUCKETS.len(), 41);
        assert_eq!(a66::SIZE_BUCKETS.len(), 14);
    }

    #[test]
    fn grpc_status_is_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(grpc_status(&headers), Some(16));
    }
}
