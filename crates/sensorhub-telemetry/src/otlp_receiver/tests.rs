//! The receiver against real clients: tonic's generated OTLP clients,
//! reqwest for OTLP/HTTP (bodies compressed by flate2 and zstd), and the
//! `opentelemetry-otlp` exporters themselves.

use std::io::Write as _;
use std::time::Duration;

use super::*;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValueList;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
use prost::Message as _;
use tonic::codec::CompressionEncoding;

const TRACE_ID: [u8; 16] = [0xab; 16];
const SPAN_ID: [u8; 8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
const PARENT_ID: [u8; 8] = [0xff; 8];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_owned()))
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            text("service.name", service),
            text("deployment.environment", "resource-secret"),
        ],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.to_owned(),
        version: "1.2.3".to_owned(),
        attributes: vec![text("scope.key", "scope-secret")],
        ..Default::default()
    })
}

fn trace_request(service: &str, name: &str, parent: &[u8]) -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        parent_span_id: parent.to_vec(),
        name: name.to_owned(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_250_000_000,
        attributes: vec![
            text("rpc.method", "GetReading"),
            kv("rpc.grpc.status_code", Value::IntValue(5)),
            kv("ratio", Value::DoubleValue(0.5)),
            kv("retry", Value::BoolValue(true)),
            kv(
                "nested",
                Value::KvlistValue(KeyValueList {
                    values: vec![text("inner", "span-secret")],
                }),
            ),
        ],
        status: Some(Status {
            message: "not found".to_owned(),
            code: SpanStatusCode::Error as i32,
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                scope: scope("test-tracer"),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics_request(service: &str) -> ExportMetricsServiceRequest {
    let number = |value, attribute: KeyValue| NumberDataPoint {
        attributes: vec![attribute],
        value: Some(value),
        ..Default::default()
    };
    let metrics = vec![
        Metric {
            name: "rpc.server.call.duration".to_owned(),
            unit: "s".to_owned(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![text("rpc.method", "GetReading")],
                    count: 3,
                    sum: Some(0.75),
                    bucket_counts: vec![1, 2, 0],
                    explicit_bounds: vec![0.1, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
        Metric {
            name: "readings.ingested".to_owned(),
            unit: "{reading}".to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![number(
                    number_data_point::Value::AsInt(42),
                    text("sensor", "metric-secret"),
                )],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "queue.depth".to_owned(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![number(
                    number_data_point::Value::AsDouble(1.5),
                    kv("shard", Value::IntValue(7)),
                )],
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("test-meter"),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs_request(service: &str, body: &str) -> ExportLogsServiceRequest {
    let record = LogRecord {
        severity_number: SeverityNumber::Warn as i32,
        severity_text: "WARN".to_owned(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(body.to_owned())),
        }),
        attributes: vec![kv("attempt", Value::IntValue(3))],
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                scope: scope("test-logger"),
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A response as a test reads it.
#[derive(Debug)]
struct HttpReply {
    status: u16,
    content_type: String,
    accept_encoding: String,
    body: Vec<u8>,
}

/// One HTTP/1.1 request through reqwest, and its whole reply.
async fn send(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = reqwest::Client::new()
        .request(method, format!("{endpoint}{path}"))
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = request.send().await.expect("an HTTP reply");
    let header = |name| {
        reply
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let (content_type, accept_encoding) = (header("content-type"), header("accept-encoding"));
    HttpReply {
        status: reply.status().as_u16(),
        content_type,
        accept_encoding,
        body: reply.bytes().await.expect("a reply body").to_vec(),
    }
}

async fn post(endpoint: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    send(endpoint, "POST", path, headers, body).await
}

const PROTOBUF_HEADERS: &[(&str, &str)] = &[("content-type", "application/x-protobuf")];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

#[tokio::test]
async fn traces_arrive_over_grpc_and_http() {
    let rx = OtlpReceiver::start().await.expect("start");
    assert_ne!(rx.grpc_endpoint(), rx.http_endpoint());

    let mut client = TraceServiceClient::connect(rx.grpc_endpoint())
        .await
        .expect("connect");
    client
        .export(trace_request("grpc-svc", "grpc-span", &PARENT_ID))
        .await
        .expect("gRPC export");

    let body = trace_request("http-svc", "http-span", &[]).encode_to_vec();
    let reply = post(&rx.http_endpoint(), "/v1/traces", PROTOBUF_HEADERS, &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.content_type, "application/x-protobuf");
    ExportTraceServiceResponse::decode(reply.body.as_slice()).expect("a protobuf response");

    assert_eq!(
        rx.requests(),
        RequestCounts {
            grpc_traces: 1,
            http_traces: 1,
            ..RequestCounts::default()
        }
    );
    let spans = rx.spans();
    assert_eq!(spans.len(), 2);
    let grpc = &spans[0];
    assert_eq!(grpc.service_name, "grpc-svc");
    assert_eq!(grpc.scope, "test-tracer");
    assert_eq!(grpc.name(), "grpc-span");
    assert_eq!(grpc.trace_id_hex(), "ab".repeat(16));
    assert_eq!(grpc.span_id_hex(), "0102030405060708");
    assert_eq!(grpc.parent_span_id_hex(), "ff".repeat(8));
    assert_eq!(grpc.kind(), SpanKind::Server);
    assert_eq!(grpc.duration(), Duration::from_millis(250));
    assert_eq!(grpc.status_code(), SpanStatusCode::Error);
    assert_eq!(grpc.status_message(), "not found");
    assert_eq!(grpc.attr("rpc.method").as_deref(), Some("GetReading"));
    assert_eq!(grpc.attr("rpc.grpc.status_code").as_deref(), Some("5"));
    assert_eq!(grpc.attr("ratio").as_deref(), Some("0.5"));
    assert_eq!(grpc.attr("retry").as_deref(), Some("true"));
    assert_eq!(grpc.attr("nested").as_deref(), Some("{inner: span-secret}"));
    assert_eq!(grpc.attr("missing"), None);
    assert_eq!(
        grpc.resource_attr("deployment.environment").as_deref(),
        Some("resource-secret")
    );

    let http = &spans[1];
    assert_eq!(http.service_name, "http-svc");
    assert_eq!(http.name(), "http-span");
    assert_eq!(http.parent_span_id_hex(), "", "a root span");

    rx.clear();
    assert!(rx.spans().is_empty());
    assert_eq!(rx.requests(), RequestCounts::default());
}

#[tokio::test]
async fn compressed_grpc_exports_are_accepted() {
    let rx = OtlpReceiver::start().await.expect("start");
    for (encoding, name) in [
        (CompressionEncoding::Gzip, "gzip-span"),
        (CompressionEncoding::Zstd, "zstd-span"),
    ] {
        let mut client = TraceServiceClient::connect(rx.grpc_endpoint())
            .await
            .expect("connect")
            .send_compressed(encoding);
        client
            .export(trace_request("svc", name, &[]))
            .await
            .unwrap_or_else(|status| panic!("{name}: {status}"));
    }
    let names: Vec<String> = rx.spans().iter().map(|s| s.name().to_owned()).collect();
    assert_eq!(names, ["gzip-span", "zstd-span"]);
    assert_eq!(rx.requests().grpc_traces, 2);
}

#[tokio::test]
async fn compressed_http_exports_are_accepted() {
    let rx = OtlpReceiver::start().await.expect("start");
    let plain = trace_request("svc", "gzip-span", &[]).encode_to_vec();
    let reply = post(
        &rx.http_endpoint(),
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
        &gzip(&plain),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let plain = trace_request("svc", "zstd-span", &[]).encode_to_vec();
    let reply = post(
        &rx.http_endpoint(),
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "zstd"),
        ],
        &zstd(&plain),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let names: Vec<String> = rx.spans().iter().map(|s| s.name().to_owned()).collect();
    assert_eq!(names, ["gzip-span", "zstd-span"]);
    assert_eq!(rx.requests().http_traces, 2);
}

/// OTLP/JSON (protocol `http/json`): ids in hex, answered in JSON.
#[tokio::test]
async fn json_exports_are_accepted_and_answered_in_json() {
    let rx = OtlpReceiver::start().await.expect("start");
    let request = trace_request("json-svc", "json-span", &PARENT_ID);
    let body = serde_json::to_vec(&request).expect("OTLP/JSON");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        text.contains(&"ab".repeat(16)),
        "ids are hex in OTLP/JSON: {text}"
    );
    let reply = post(
        &rx.http_endpoint(),
        "/v1/traces",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &gzip(&body),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.content_type, "application/json");
    let _: ExportTraceServiceResponse =
        serde_json::from_slice(&reply.body).expect("a JSON export response");
    let spans = rx.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].span,
        request.resource_spans[0].scope_spans[0].spans[0]
    );
    assert_eq!(spans[0].parent_span_id_hex(), "ff".repeat(8));
    assert_eq!(rx.requests().http_traces, 1);
}

#[tokio::test]
async fn http_rejects_what_it_cannot_read() {
    let rx = OtlpReceiver::start().await.expect("start");
    let endpoint = rx.http_endpoint();
    let body = trace_request("svc", "span", &[]).encode_to_vec();

    let text = post(
        &endpoint,
        "/v1/traces",
        &[("content-type", "text/plain")],
        &body,
    )
    .await;
    assert_eq!(text.status, 415);
    let said = String::from_utf8_lossy(&text.body);
    assert!(
        said.contains("application/x-protobuf") && said.contains("application/json"),
        "{said}"
    );

    let missing = post(&endpoint, "/v1/traces", &[], &body).await;
    assert_eq!(missing.status, 415);

    let brotli = post(
        &endpoint,
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "br"),
        ],
        &body,
    )
    .await;
    assert_eq!(brotli.status, 415);
    let accepted: std::collections::BTreeSet<&str> = brotli.accept_encoding.split(',').collect();
    assert_eq!(accepted, ["gzip", "zstd"].into(), "{brotli:?}");

    let bad_gzip = post(
        &endpoint,
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
        b"not gzip",
    )
    .await;
    assert_eq!(bad_gzip.status, 400, "{bad_gzip:?}");

    let bad_json = post(
        &endpoint,
        "/v1/traces",
        &[("content-type", "application/json")],
        b"{\"resourceSpans\": 7}",
    )
    .await;
    assert_eq!(bad_json.status, 400, "{bad_json:?}");

    // Field 1, length-delimited, claims 5 bytes but has 1.
    let truncated = post(
        &endpoint,
        "/v1/traces",
        PROTOBUF_HEADERS,
        &[0x0a, 0x05, 0x01],
    )
    .await;
    assert_eq!(truncated.status, 400);

    let get = send(&endpoint, "GET", "/v1/traces", &[], b"").await;
    assert_eq!(get.status, 405);
    let unknown = post(&endpoint, "/v1/profiles", PROTOBUF_HEADERS, &body).await;
    assert_eq!(unknown.status, 404);

    // Content type parameters and case do not matter.
    let ok = post(
        &endpoint,
        "/v1/traces",
        &[("content-type", "Application/X-Protobuf; charset=binary")],
        &body,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");

    assert_eq!(
        rx.requests().http_total(),
        1,
        "only accepted requests count"
    );
    assert_eq!(rx.spans().len(), 1);
}

#[tokio::test]
async fn metrics_and_logs_arrive_over_grpc_and_http() {
    let rx = OtlpReceiver::start().await.expect("start");

    MetricsServiceClient::connect(rx.grpc_endpoint())
        .await
        .expect("connect")
        .export(metrics_request("grpc-svc"))
        .await
        .expect("gRPC metrics export");
    LogsServiceClient::connect(rx.grpc_endpoint())
        .await
        .expect("connect")
        .export(logs_request("grpc-svc", "from grpc"))
        .await
        .expect("gRPC logs export");

    let reply = post(
        &rx.http_endpoint(),
        "/v1/metrics",
        PROTOBUF_HEADERS,
        &metrics_request("http-svc").encode_to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    ExportMetricsServiceResponse::decode(reply.body.as_slice()).expect("a protobuf response");
    let reply = post(
        &rx.http_endpoint(),
        "/v1/logs",
        PROTOBUF_HEADERS,
        &logs_request("http-svc", "log-body-secret").encode_to_vec(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    ExportLogsServiceResponse::decode(reply.body.as_slice()).expect("a protobuf response");

    assert_eq!(
        rx.requests(),
        RequestCounts {
            grpc_metrics: 1,
            grpc_logs: 1,
            http_metrics: 1,
            http_logs: 1,
            ..RequestCounts::default()
        }
    );

    let metrics = rx.metrics();
    assert_eq!(metrics.len(), 6);
    assert_eq!(metrics[0].service_name, "grpc-svc");
    assert_eq!(metrics[3].service_name, "http-svc");
    assert!(metrics.iter().all(|m| m.scope == "test-meter"));

    let histogram = &metrics[0];
    assert_eq!(histogram.name(), "rpc.server.call.duration");
    assert_eq!(histogram.unit(), "s");
    assert_eq!(histogram.data_kind(), "histogram");
    let points = histogram.histogram_points();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count, 3);
    assert_eq!(points[0].sum, 0.75);
    assert_eq!(points[0].bounds, [0.1, 1.0]);
    assert_eq!(points[0].bucket_counts, [1, 2, 0]);
    assert_eq!(points[0].attributes["rpc.method"], "GetReading");
    assert!(histogram.sum_points().is_empty());
    assert!(histogram.gauge_points().is_empty());

    let sum = &metrics[1];
    assert_eq!(sum.name(), "readings.ingested");
    let points = sum.sum_points();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].0["sensor"], "metric-secret");
    assert_eq!(points[0].1, 42.0);
    assert!(sum.histogram_points().is_empty());

    let gauge = &metrics[2];
    assert_eq!(gauge.unit(), "");
    let points = gauge.gauge_points();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].0["shard"], "7");
    assert_eq!(points[0].1, 1.5);

    let logs = rx.logs();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].service_name, "grpc-svc");
    assert_eq!(logs[0].scope, "test-logger");
    assert_eq!(logs[0].body_text(), "from grpc");
    assert_eq!(logs[0].severity_text(), "WARN");
    assert_eq!(logs[0].severity_number(), SeverityNumber::Warn);
    assert_eq!(logs[0].trace_id_hex(), "ab".repeat(16));
    assert_eq!(logs[0].span_id_hex(), "0102030405060708");
    assert_eq!(logs[0].attr("attempt").as_deref(), Some("3"));
    assert_eq!(logs[1].service_name, "http-svc");
    assert_eq!(logs[1].body_text(), "log-body-secret");

    let all = rx.all_text();
    for expected in [
        "log-body-secret",
        "metric-secret",
        "resource-secret",
        "scope-secret",
        "rpc.server.call.duration",
        "GetReading",
    ] {
        assert!(all.contains(expected), "{expected} missing from:\n{all}");
    }
    assert!(!all.contains("span-secret"), "no span was sent");
}

#[tokio::test]
async fn all_text_includes_span_details() {
    let rx = OtlpReceiver::start().await.expect("start");
    let body = trace_request("svc", "span-name", &[]).encode_to_vec();
    let reply = post(&rx.http_endpoint(), "/v1/traces", PROTOBUF_HEADERS, &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let all = rx.all_text();
    for expected in [
        "span-name",
        "span-secret",
        "rpc.method",
        "not found",
        "resource-secret",
    ] {
        assert!(all.contains(expected), "{expected} missing from:\n{all}");
    }
}

#[tokio::test]
async fn wait_for_polls_until_found_or_timeout() {
    let rx = OtlpReceiver::start().await.expect("start");

    let started = tokio::time::Instant::now();
    let nothing = rx
        .wait_for(Duration::from_millis(200), |rx| rx.spans().pop())
        .await;
    assert!(nothing.is_none());
    assert!(started.elapsed() >= Duration::from_millis(200));

    let endpoint = rx.grpc_endpoint();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        TraceServiceClient::connect(endpoint)
            .await
            .expect("connect")
            .export(trace_request("svc", "late-span", &[]))
            .await
            .expect("export");
    });
    let found = rx
        .wait_for(Duration::from_secs(10), |rx| {
            rx.spans()
                .into_iter()
                .find(|span| span.name() == "late-span")
        })
        .await;
    assert_eq!(found.expect("the late span").service_name, "svc");
    sender.await.expect("sender task");
}

/// The real OpenTelemetry SDK exporters, gzip on, over both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_otlp_exporters_are_understood() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::{
        Compression, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
    };

    let rx = OtlpReceiver::start().await.expect("start");
    let http_url = format!("{}/v1/traces", rx.http_endpoint());
    let grpc_url = rx.grpc_endpoint();
    let runtime = tokio::runtime::Handle::current();
    // The simple processor blocks on each export (and the HTTP exporter
    // uses a blocking client), so spans are ended off the runtime.
    tokio::task::spawn_blocking(move || {
        let _runtime = runtime.enter();
        let http = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(http_url)
            .with_compression(Compression::Gzip)
            .build()
            .expect("HTTP exporter");
        let grpc = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(grpc_url)
            .with_compression(Compression::Gzip)
            .build()
            .expect("gRPC exporter");
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name("sdk-svc")
                    .build(),
            )
            .with_simple_exporter(http)
            .with_simple_exporter(grpc)
            .build();
        provider.tracer("sdk-tracer").in_span("sdk-span", |_| {});
        provider.shutdown().expect("provider shutdown");
    })
    .await
    .expect("exporting thread");

    let counts = rx.requests();
    assert_eq!(
        (counts.grpc_traces, counts.http_traces),
        (1, 1),
        "{counts:?}"
    );
    let spans = rx.spans();
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert_eq!(span.name(), "sdk-span");
        assert_eq!(span.service_name, "sdk-svc");
        assert_eq!(span.scope, "sdk-tracer");
        assert_eq!(span.trace_id_hex().len(), 32);
    }
    assert_eq!(spans[0].span_id_hex(), spans[1].span_id_hex());
}

#[tokio::test]
async fn stop_closes_both_ports() {
    let rx = OtlpReceiver::start().await.expect("start");
    let grpc = rx.grpc_endpoint().replace("http://", "");
    let http = rx.http_endpoint().replace("http://", "");
    tokio::net::TcpStream::connect(&grpc)
        .await
        .expect("gRPC port open");
    tokio::net::TcpStream::connect(&http)
        .await
        .expect("HTTP port open");
    rx.stop();

    for address in [grpc, http] {
        let closed = async {
            while tokio::net::TcpStream::connect(&address).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .unwrap_or_else(|_| panic!("{address} still accepts connections"));
    }
}

/// A benchmark's receiver decodes and answers every request as a test's
/// does, over both protocols, and keeps only how many requests and items
/// arrived.
#[tokio::test]
async fn a_counting_receiver_answers_and_keeps_only_counts() {
    let rx = OtlpReceiver::start_counting().await.expect("start");
    let mut client = TraceServiceClient::connect(rx.grpc_endpoint())
        .await
        .expect("connect");
    let mut three = trace_request("svc", "a", &[]);
    let scope_spans = &mut three.resource_spans[0].scope_spans[0];
    let span = scope_spans.spans[0].clone();
    scope_spans.spans.extend([span.clone(), span]);
    client.export(three).await.expect("gRPC export");
    let body = trace_request("svc", "b", &[]).encode_to_vec();
    let reply = post(&rx.http_endpoint(), "/v1/traces", PROTOBUF_HEADERS, &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // An undecodable body is still refused, and not counted.
    let reply = post(
        &rx.http_endpoint(),
        "/v1/traces",
        PROTOBUF_HEADERS,
        b"\xff\xff",
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");

    assert_eq!(
        rx.requests(),
        RequestCounts {
            grpc_traces: 1,
            http_traces: 1,
            ..RequestCounts::default()
        }
    );
    assert_eq!(
        rx.items(),
        ItemCounts {
            spans: 4,
            ..ItemCounts::default()
        }
    );
    assert!(rx.spans().is_empty());
    assert_eq!(rx.all_text(), "");
    rx.clear();
    assert_eq!(rx.items(), ItemCounts::default());
}
