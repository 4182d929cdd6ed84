//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics` and `/v1/logs` with a binary
//! protobuf body (`application/x-protobuf`) or OTLP/JSON
//! (`application/json`), gzip- or zstd-encoded or not.
//!
//! tower-http's request decompression undoes the content encoding, and
//! answers 415 with the `accept-encoding` it takes for any other; the body
//! limit applies to the decompressed body. prost, or `opentelemetry-proto`'s
//! serde types, decode it. The answer is the export response in the
//! request's own media type, as the OTLP specification asks.

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tower_http::decompression::RequestDecompressionLayer;

use super::MAX_REQUEST_BYTES;
use super::inbox::{ExportRequest, Inbox, Protocol};

/// The OTLP/HTTP protobuf media type.
const PROTOBUF: &str = "application/x-protobuf";
/// The OTLP/HTTP JSON media type.
const JSON: &str = "application/json";

/// The three export paths.
pub(super) fn router(inbox: &Inbox) -> axum::Router {
    axum::Router::new()
        .route("/v1/traces", post(export::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(export::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(export::<ExportLogsServiceRequest>))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(RequestDecompressionLayer::new().gzip(true).zstd(true))
        .with_state(inbox.clone())
}

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy)]
enum MediaType {
    Protobuf,
    Json,
}

impl MediaType {
    /// The request's media type, or what to say (with a 415) for one OTLP
    /// does not have.
    fn of(headers: &HeaderMap) -> Result<MediaType, String> {
        let value = headers
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let essence = value
            .as_deref()
            .and_then(|value| value.split(';').next())
            .map(str::trim);
        match essence {
            Some(e) if e.eq_ignore_ascii_case(PROTOBUF) => Ok(MediaType::Protobuf),
            Some(e) if e.eq_ignore_ascii_case(JSON) => Ok(MediaType::Json),
            _ => Err(format!(
                "content-type {} is not OTLP/HTTP; send {PROTOBUF} (http/protobuf) \
                 or {JSON} (http/json)",
                value.as_deref().unwrap_or("(missing)")
            )),
        }
    }

    fn decode<R: ExportRequest>(self, body: &[u8]) -> Result<R, String> {
        match self {
            MediaType::Protobuf => R::decode(body).map_err(|e| e.to_string()),
            MediaType::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
        }
    }

    fn respond(self, message: &(impl prost::Message + serde::Serialize)) -> Response {
        match self {
            MediaType::Protobuf => {
                ([(CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
            }
            MediaType::Json => match serde_json::to_vec(message) {
                Ok(json) => ([(CONTENT_TYPE, JSON)], json).into_response(),
                Err(e) => rejection(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
        }
    }
}

/// One export request of the signal `R`: 200 with the export response, 415
/// for a media type that is not OTLP's, 400 for a body that does not decode.
async fn export<R: ExportRequest>(
    State(inbox): State<Inbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let media_type = match MediaType::of(&headers) {
        Ok(media_type) => media_type,
        Err(message) => return rejection(StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
    };
    match media_type.decode::<R>(&body) {
        Ok(request) => {
            inbox.add(request, Protocol::Http);
            media_type.respond(&R::Response::default())
        }
        Err(error) => rejection(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a valid {media_type:?} export request: {error}"),
        ),
    }
}

/// A plain-text error response, readable in an exporter's error log.
fn rejection(status: StatusCode, message: String) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("otlp_receiver: {message}\n"),
    )
        .into_response()
}
