//! An in-process OTLP receiver for integration tests.
//!
//! Asserting on telemetry through an exporter's in-memory test double only
//! proves that the SDK was called; it says nothing about what actually goes
//! over the wire. [`OtlpReceiver`] is a real, minimal OTLP collector that a
//! test starts next to the code under test: it listens on loopback for
//! OTLP/gRPC (the three `Export` services, gzip and zstd accepted) and for
//! OTLP/HTTP with protobuf bodies (`POST /v1/traces`, `/v1/metrics`,
//! `/v1/logs`), decodes every export request, and keeps the flattened spans,
//! metrics and log records so the test can assert on exactly what an exporter
//! sent — including that a secret appears nowhere ([`OtlpReceiver::all_text`]).
//!
//! Both servers write into one shared store guarded by a `std::sync::Mutex`
//! that is only ever held for short, synchronous sections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, Metric, NumberDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codec::{CompressionEncoding, DecodeBuf, Decoder};

/// Largest export request accepted, compressed or not, on either protocol.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How often [`OtlpReceiver::wait_for`] re-evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The OTLP/HTTP protobuf media type, for both requests and responses.
const PROTOBUF: &str = "application/x-protobuf";

/// A running in-process OTLP collector: one OTLP/gRPC server and one
/// OTLP/HTTP (protobuf) server on loopback, sharing what they received.
///
/// Start it with [`OtlpReceiver::start`], point the exporter under test at
/// [`grpc_endpoint`](OtlpReceiver::grpc_endpoint) or
/// [`http_endpoint`](OtlpReceiver::http_endpoint), then read back
/// [`spans`](OtlpReceiver::spans), [`metrics`](OtlpReceiver::metrics) and
/// [`logs`](OtlpReceiver::logs), usually through
/// [`wait_for`](OtlpReceiver::wait_for) because exporters batch. Both servers
/// stop when the receiver is dropped or [`stop`](OtlpReceiver::stop)ped.
#[derive(Debug)]
pub struct OtlpReceiver {
    inbox: Inbox,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc_shutdown: Option<oneshot::Sender<()>>,
    http_shutdown: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Binds two fresh ports on `127.0.0.1` and starts serving OTLP/gRPC on
    /// one and OTLP/HTTP on the other, as tasks of the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if a loopback port cannot be bound.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub async fn start() -> std::io::Result<OtlpReceiver> {
        let inbox = Inbox::default();

        let grpc_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let http_addr = http_listener.local_addr()?;

        let (grpc_shutdown, grpc_stop) = oneshot::channel::<()>();
        let sink = GrpcSink {
            inbox: inbox.clone(),
        };
        // Routing by gRPC path is done with axum (tonic's own router needs
        // its `router` feature); tonic's server still provides HTTP/2 and
        // the gRPC framing.
        let grpc_routes = axum::Router::new()
            .route_service(
                &grpc_path::<TraceServiceServer<GrpcSink>>(),
                TraceServiceServer::new(sink.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .route_service(
                &grpc_path::<MetricsServiceServer<GrpcSink>>(),
                MetricsServiceServer::new(sink.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .route_service(
                &grpc_path::<LogsServiceServer<GrpcSink>>(),
                LogsServiceServer::new(sink)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Zstd)
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .fallback(grpc_unimplemented);
        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            let stopped = async {
                // A dropped sender means the receiver is gone: stop as well.
                let _ = grpc_stop.await;
            };
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(grpc_routes, incoming, stopped)
                .await;
            if let Err(error) = served {
                eprintln!("otlp_receiver: the OTLP/gRPC server failed: {error}");
            }
        });

        let (http_shutdown, http_stop) = oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_traces))
            .route("/v1/metrics", axum::routing::post(http_metrics))
            .route("/v1/logs", axum::routing::post(http_logs))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(inbox.clone());
        tokio::spawn(async move {
            let stopped = async {
                let _ = http_stop.await;
            };
            if let Err(error) = axum::serve(http_listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                eprintln!("otlp_receiver: the OTLP/HTTP server failed: {error}");
            }
        });

        Ok(OtlpReceiver {
            inbox,
            grpc_addr,
            http_addr,
            grpc_shutdown: Some(grpc_shutdown),
            http_shutdown: Some(http_shutdown),
        })
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT`, as expected by a tonic
    /// channel or `OTEL_EXPORTER_OTLP_ENDPOINT` with protocol `grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The OTLP/HTTP base endpoint, `http://127.0.0.1:PORT`, without a path:
    /// the signals are served at `/v1/traces`, `/v1/metrics` and `/v1/logs`
    /// (what an exporter appends to `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Every span received so far, over either protocol, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.inbox.lock().spans.clone()
    }

    /// Every metric received so far (one entry per `Metric` message of every
    /// export request, so a metric exported twice appears twice).
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.inbox.lock().metrics.clone()
    }

    /// Every log record received so far, over either protocol, in arrival
    /// order.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.inbox.lock().logs.clone()
    }

    /// How many export requests were accepted, per signal and per protocol.
    /// Rejected requests (bad media type, undecodable body) are not counted.
    pub fn requests(&self) -> RequestCounts {
        self.inbox.lock().counts
    }

    /// Forgets everything received so far, including the request counts.
    pub fn clear(&self) {
        *self.inbox.lock() = Store::default();
    }

    /// Calls `what` now and then every 50 ms until it returns `Some`, and
    /// returns that; returns `None` once `timeout` has passed (after a last
    /// try).
    ///
    /// `what` must not call [`wait_for`](Self::wait_for) itself; calling the
    /// other accessors is what it is for:
    /// `rx.wait_for(t, |rx| rx.spans().into_iter().find(|s| s.name() == "x"))`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut what: impl FnMut(&OtlpReceiver) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = what(self) {
                return Some(found);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// Renders everything received — span, metric and log names, every
    /// attribute key and value (resource, scope, span, event, link, data
    /// point, exemplar, log record), log bodies, status messages, units and
    /// descriptions — as one text, strings unescaped, so that a test can
    /// check that a secret appears nowhere in the exported telemetry.
    pub fn all_text(&self) -> String {
        let store = self.inbox.lock();
        let mut out = String::new();
        for span in &store.spans {
            render_span(&mut out, span);
        }
        for metric in &store.metrics {
            render_metric(&mut out, metric);
        }
        for log in &store.logs {
            render_log(&mut out, log);
        }
        out.push_str(&store.scope_text);
        out
    }

    /// Stops both servers: they stop accepting connections at once and
    /// finish the requests in flight in the background. Dropping the
    /// receiver does the same.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.grpc_shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.http_shutdown.take() {
            let _ = stop.send(());
        }
    }
}

/// One span as received, with the resource and scope it was exported under.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` resource attribute (empty when absent).
    pub service_name: String,
    /// The name of the instrumentation scope (tracer) that produced the span.
    pub scope: String,
    /// The span exactly as decoded.
    pub span: Span,
    /// All attributes of the resource the span was exported under.
    pub resource_attributes: Vec<KeyValue>,
}

impl ReceivedSpan {
    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id as 16 lowercase hex digits, or an empty string for
    /// a root span.
    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// The span name.
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// The span kind (`Unspecified` for a value this proto version does not
    /// know).
    pub fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    /// The span attribute `key`, stringified (strings as is, ints, doubles
    /// and bools through `Display`, arrays and maps in a JSON-like form).
    pub fn attr(&self, key: &str) -> Option<String> {
        find_attr(&self.span.attributes, key)
    }

    /// The resource attribute `key`, stringified like [`attr`](Self::attr).
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find_attr(&self.resource_attributes, key)
    }

    /// End time minus start time (zero if the end is before the start).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(
            self.span
                .end_time_unix_nano
                .saturating_sub(self.span.start_time_unix_nano),
        )
    }

    /// The status code (`Unset` when the span has no status).
    pub fn status_code(&self) -> SpanStatusCode {
        self.span
            .status
            .as_ref()
            .and_then(|status| SpanStatusCode::try_from(status.code).ok())
            .unwrap_or(SpanStatusCode::Unset)
    }

    /// The status message (empty when the span has none).
    pub fn status_message(&self) -> &str {
        self.span
            .status
            .as_ref()
            .map_or("", |status| status.message.as_str())
    }

    /// The names of the span's events, in order.
    pub fn event_names(&self) -> Vec<&str> {
        self.span
            .events
            .iter()
            .map(|event| event.name.as_str())
            .collect()
    }
}

/// One metric as received, with the resource and scope it was exported under.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// The `service.name` resource attribute (empty when absent).
    pub service_name: String,
    /// The name of the instrumentation scope (meter) that produced it.
    pub scope: String,
    /// The metric exactly as decoded, data points included.
    pub metric: Metric,
    /// All attributes of the resource the metric was exported under.
    pub resource_attributes: Vec<KeyValue>,
}

/// One histogram data point, simplified for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramPoint {
    /// The data point attributes, stringified.
    pub attributes: BTreeMap<String, String>,
    /// The number of recorded values.
    pub count: u64,
    /// The sum of recorded values (`0.0` when the exporter omitted it).
    pub sum: f64,
    /// The explicit bucket boundaries.
    pub bounds: Vec<f64>,
    /// The per-bucket counts (one more than `bounds`, or empty).
    pub bucket_counts: Vec<u64>,
}

impl ReceivedMetric {
    /// The metric name.
    pub fn name(&self) -> &str {
        &self.metric.name
    }

    /// The metric unit (empty when none).
    pub fn unit(&self) -> &str {
        &self.metric.unit
    }

    /// The metric description (empty when none).
    pub fn description(&self) -> &str {
        &self.metric.description
    }

    /// The kind of data: `"gauge"`, `"sum"`, `"histogram"`,
    /// `"exponential_histogram"`, `"summary"`, or `"none"`.
    pub fn data_kind(&self) -> &'static str {
        match &self.metric.data {
            Some(metric::Data::Gauge(_)) => "gauge",
            Some(metric::Data::Sum(_)) => "sum",
            Some(metric::Data::Histogram(_)) => "histogram",
            Some(metric::Data::ExponentialHistogram(_)) => "exponential_histogram",
            Some(metric::Data::Summary(_)) => "summary",
            None => "none",
        }
    }

    /// The data points of an explicit-bucket histogram; empty for any other
    /// kind of metric.
    pub fn histogram_points(&self) -> Vec<HistogramPoint> {
        let Some(metric::Data::Histogram(histogram)) = &self.metric.data else {
            return Vec::new();
        };
        histogram
            .data_points
            .iter()
            .map(|point| HistogramPoint {
                attributes: attr_map(&point.attributes),
                count: point.count,
                sum: point.sum.unwrap_or(0.0),
                bounds: point.explicit_bounds.clone(),
                bucket_counts: point.bucket_counts.clone(),
            })
            .collect()
    }

    /// The data points of a sum (counter or up-down counter) as (attributes,
    /// value), int values converted to `f64`; empty for any other kind.
    pub fn sum_points(&self) -> Vec<(BTreeMap<String, String>, f64)> {
        match &self.metric.data {
            Some(metric::Data::Sum(sum)) => number_points(&sum.data_points),
            _ => Vec::new(),
        }
    }

    /// The data points of a gauge as (attributes, value), int values
    /// converted to `f64`; empty for any other kind.
    pub fn gauge_points(&self) -> Vec<(BTreeMap<String, String>, f64)> {
        match &self.metric.data {
            Some(metric::Data::Gauge(gauge)) => number_points(&gauge.data_points),
            _ => Vec::new(),
        }
    }

    /// The resource attribute `key`, stringified.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find_attr(&self.resource_attributes, key)
    }
}

/// One log record as received, with the resource and scope it was exported
/// under.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLog {
    /// The `service.name` resource attribute (empty when absent).
    pub service_name: String,
    /// The name of the instrumentation scope (logger) that produced it.
    pub scope: String,
    /// The log record exactly as decoded.
    pub record: LogRecord,
    /// All attributes of the resource the record was exported under.
    pub resource_attributes: Vec<KeyValue>,
}

impl ReceivedLog {
    /// The trace id of the span the record was emitted in, as 32 lowercase
    /// hex digits, or an empty string when it has none.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.record.trace_id)
    }

    /// The span id of the span the record was emitted in, as 16 lowercase
    /// hex digits, or an empty string when it has none.
    pub fn span_id_hex(&self) -> String {
        hex(&self.record.span_id)
    }

    /// The body: a string body as is, anything else stringified like
    /// [`attr`](Self::attr), an empty string when there is no body.
    pub fn body_text(&self) -> String {
        self.record
            .body
            .as_ref()
            .map(any_value_text)
            .unwrap_or_default()
    }

    /// The log record attribute `key`, stringified (strings as is, ints,
    /// doubles and bools through `Display`).
    pub fn attr(&self, key: &str) -> Option<String> {
        find_attr(&self.record.attributes, key)
    }

    /// The resource attribute `key`, stringified.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find_attr(&self.resource_attributes, key)
    }

    /// The severity text, such as `"INFO"` (empty when not set).
    pub fn severity_text(&self) -> &str {
        &self.record.severity_text
    }

    /// The severity number (`Unspecified` for a value this proto version
    /// does not know).
    pub fn severity_number(&self) -> SeverityNumber {
        SeverityNumber::try_from(self.record.severity_number).unwrap_or(SeverityNumber::Unspecified)
    }

    /// The event name (empty when the record is not an event).
    pub fn event_name(&self) -> &str {
        &self.record.event_name
    }
}

/// How many export requests the receiver accepted, per signal and protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RequestCounts {
    /// `TraceService/Export` calls over gRPC.
    pub grpc_traces: u64,
    /// `MetricsService/Export` calls over gRPC.
    pub grpc_metrics: u64,
    /// `LogsService/Export` calls over gRPC.
    pub grpc_logs: u64,
    /// `POST /v1/traces` requests over HTTP.
    pub http_traces: u64,
    /// `POST /v1/metrics` requests over HTTP.
    pub http_metrics: u64,
    /// `POST /v1/logs` requests over HTTP.
    pub http_logs: u64,
}

impl RequestCounts {
    /// All export requests over gRPC.
    pub fn grpc_total(&self) -> u64 {
        self.grpc_traces + self.grpc_metrics + self.grpc_logs
    }

    /// All export requests over HTTP.
    pub fn http_total(&self) -> u64 {
        self.http_traces + self.http_metrics + self.http_logs
    }
}

/// The transport an export request arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

/// Everything received so far.
#[derive(Debug, Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ReceivedMetric>,
    logs: Vec<ReceivedLog>,
    counts: RequestCounts,
    /// Scope versions and attributes, which the flattened items do not keep,
    /// rendered for [`OtlpReceiver::all_text`].
    scope_text: String,
}

/// The store shared by both servers and the receiver handle.
#[derive(Debug, Clone, Default)]
struct Inbox(Arc<Mutex<Store>>);

impl Inbox {
    /// Locks the store; a panic elsewhere while it was held does not hide
    /// what was received.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_traces(&self, request: ExportTraceServiceRequest, protocol: Protocol) {
        let mut spans = Vec::new();
        let mut scope_text = String::new();
        for resource_spans in request.resource_spans {
            let resource_attributes = resource_spans
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            let service_name = service_name(&resource_attributes);
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.unwrap_or_default();
                render_scope(&mut scope_text, &scope);
                spans.extend(scope_spans.spans.into_iter().map(|span| ReceivedSpan {
                    service_name: service_name.clone(),
                    scope: scope.name.clone(),
                    span,
                    resource_attributes: resource_attributes.clone(),
                }));
            }
        }
        let mut store = self.lock();
        store.spans.append(&mut spans);
        store.scope_text.push_str(&scope_text);
        match protocol {
            Protocol::Grpc => store.counts.grpc_traces += 1,
            Protocol::Http => store.counts.http_traces += 1,
        }
    }

    fn add_metrics(&self, request: ExportMetricsServiceRequest, protocol: Protocol) {
        let mut metrics = Vec::new();
        let mut scope_text = String::new();
        for resource_metrics in request.resource_metrics {
            let resource_attributes = resource_metrics
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            let service_name = service_name(&resource_attributes);
            for scope_metrics in resource_metrics.scope_metrics {
                let scope = scope_metrics.scope.unwrap_or_default();
                render_scope(&mut scope_text, &scope);
                metrics.extend(
                    scope_metrics
                        .metrics
                        .into_iter()
                        .map(|metric| ReceivedMetric {
                            service_name: service_name.clone(),
                            scope: scope.name.clone(),
                            metric,
                            resource_attributes: resource_attributes.clone(),
                        }),
                );
            }
        }
        let mut store = self.lock();
        store.metrics.append(&mut metrics);
        store.scope_text.push_str(&scope_text);
        match protocol {
            Protocol::Grpc => store.counts.grpc_metrics += 1,
            Protocol::Http => store.counts.http_metrics += 1,
        }
    }

    fn add_logs(&self, request: ExportLogsServiceRequest, protocol: Protocol) {
        let mut logs = Vec::new();
        let mut scope_text = String::new();
        for resource_logs in request.resource_logs {
            let resource_attributes = resource_logs
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            let service_name = service_name(&resource_attributes);
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs.scope.unwrap_or_default();
                render_scope(&mut scope_text, &scope);
                logs.extend(
                    scope_logs
                        .log_records
                        .into_iter()
                        .map(|record| ReceivedLog {
                            service_name: service_name.clone(),
                            scope: scope.name.clone(),
                            record,
                            resource_attributes: resource_attributes.clone(),
                        }),
                );
            }
        }
        let mut store = self.lock();
        store.logs.append(&mut logs);
        store.scope_text.push_str(&scope_text);
        match protocol {
            Protocol::Grpc => store.counts.grpc_logs += 1,
            Protocol::Http => store.counts.http_logs += 1,
        }
    }
}

// ---------------------------------------------------------------------------
// OTLP/gRPC

/// The implementation of the three OTLP `Export` gRPC services.
#[derive(Debug, Clone)]
struct GrpcSink {
    inbox: Inbox,
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.inbox.add_traces(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.inbox.add_metrics(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.inbox.add_logs(request.into_inner(), Protocol::Grpc);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// The route of every method of the gRPC service `S`.
fn grpc_path<S: tonic::server::NamedService>() -> String {
    format!("/{}/{{*method}}", S::NAME)
}

/// The answer to a gRPC call of a service this receiver does not implement.
async fn grpc_unimplemented() -> Response {
    tonic::Status::unimplemented("otlp_receiver only implements the OTLP Export services")
        .into_http()
}

// ---------------------------------------------------------------------------
// OTLP/HTTP (binary protobuf encoding)

async fn http_traces(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_export::<ExportTraceServiceRequest>(&headers, body).await {
        Ok(request) => {
            inbox.add_traces(request, Protocol::Http);
            protobuf_response(&ExportTraceServiceResponse::default())
        }
        Err(rejection) => rejection,
    }
}

async fn http_metrics(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_export::<ExportMetricsServiceRequest>(&headers, body).await {
        Ok(request) => {
            inbox.add_metrics(request, Protocol::Http);
            protobuf_response(&ExportMetricsServiceResponse::default())
        }
        Err(rejection) => rejection,
    }
}

async fn http_logs(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_export::<ExportLogsServiceRequest>(&headers, body).await {
        Ok(request) => {
            inbox.add_logs(request, Protocol::Http);
            protobuf_response(&ExportLogsServiceResponse::default())
        }
        Err(rejection) => rejection,
    }
}

/// A 200 response carrying `message` as `application/x-protobuf`.
fn protobuf_response(message: &impl prost::Message) -> Response {
    ([(CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
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

/// Checks the media type and content encoding of an OTLP/HTTP request and
/// decodes its body, or returns the error response to send (415 for a
/// media type or encoding this receiver does not handle, 400 for a body that
/// does not decompress or decode).
async fn decode_export<M: prost::Message + Default>(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<M, Response> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let essence = media_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .map(str::trim);
    if !essence.is_some_and(|essence| essence.eq_ignore_ascii_case(PROTOBUF)) {
        return Err(rejection(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type {} is not supported; this test receiver only \
                 accepts OTLP/HTTP with {PROTOBUF} bodies (protocol http/protobuf, \
                 not http/json)",
                media_type.as_deref().unwrap_or("(missing)")
            ),
        ));
    }

    let encoding = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|value| !value.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let compression = match encoding.as_str() {
        "" | "identity" => None,
        "gzip" | "x-gzip" => Some(CompressionEncoding::Gzip),
        "zstd" => Some(CompressionEncoding::Zstd),
        other => {
            return Err(rejection(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-encoding {other} is not supported; use gzip, zstd or \
                     no compression"
                ),
            ));
        }
    };

    let body = match compression {
        None => body,
        Some(compression) => decompress(compression, body).await.map_err(|error| {
            rejection(
                StatusCode::BAD_REQUEST,
                format!("the {encoding} request body does not decompress: {error}"),
            )
        })?,
    };
    M::decode(body).map_err(|error| {
        rejection(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a valid protobuf export request: {error}"),
        )
    })
}

/// Decompresses an HTTP body with the decompressors tonic already carries
/// for gRPC: the body is wrapped in one compressed gRPC message frame and
/// read back through [`tonic::codec::Streaming`].
async fn decompress(compression: CompressionEncoding, body: Bytes) -> Result<Bytes, String> {
    let length = u32::try_from(body.len()).map_err(|_| "the body is too large".to_owned())?;
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(1); // compressed
    frame.put_u32(length);
    frame.put_slice(&body);
    let mut messages = tonic::codec::Streaming::new_request(
        RawMessage,
        axum::body::Body::from(frame.freeze()),
        Some(compression),
        Some(MAX_REQUEST_BYTES),
    );
    match messages.message().await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err("no data".to_owned()),
        Err(status) => Err(status.message().to_owned()),
    }
}

/// A gRPC message decoder that returns the (decompressed) message bytes.
#[derive(Debug)]
struct RawMessage;

impl Decoder for RawMessage {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Lowercase hex of `bytes` (empty for no bytes).
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The stringified `service.name` of a resource, or an empty string.
fn service_name(resource_attributes: &[KeyValue]) -> String {
    find_attr(resource_attributes, "service.name").unwrap_or_default()
}

/// The first attribute named `key`, stringified.
fn find_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .map(|attribute| {
            attribute
                .value
                .as_ref()
                .map(any_value_text)
                .unwrap_or_default()
        })
}

/// Attributes as a sorted map of stringified values.
fn attr_map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|attribute| {
            let value = attribute
                .value
                .as_ref()
                .map(any_value_text)
                .unwrap_or_default();
            (attribute.key.clone(), value)
        })
        .collect()
}

/// Number data points as (attributes, value as `f64`; NaN when missing).
fn number_points(points: &[NumberDataPoint]) -> Vec<(BTreeMap<String, String>, f64)> {
    points
        .iter()
        .map(|point| (attr_map(&point.attributes), number_value(point.value)))
        .collect()
}

fn number_value(value: Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(value)) => value,
        // Precision loss above 2^53 is acceptable for test assertions.
        Some(number_data_point::Value::AsInt(value)) => value as f64,
        None => f64::NAN,
    }
}

/// Stringifies an `AnyValue`: strings as is, scalars through `Display`,
/// bytes as hex, arrays as `[a, b]` and maps as `{k: v, …}`.
fn any_value_text(value: &AnyValue) -> String {
    let mut out = String::new();
    write_any_value(&mut out, value);
    out
}

fn write_any_value(out: &mut String, value: &AnyValue) {
    match &value.value {
        None => {}
        Some(Value::StringValue(text)) => out.push_str(text),
        Some(Value::BoolValue(flag)) => {
            let _ = write!(out, "{flag}");
        }
        Some(Value::IntValue(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(Value::DoubleValue(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(Value::BytesValue(bytes)) => out.push_str(&hex(bytes)),
        Some(Value::StringValueStrindex(index)) => {
            let _ = write!(out, "<string #{index}>");
        }
        Some(Value::ArrayValue(array)) => {
            out.push('[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_any_value(out, item);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(list)) => {
            out.push('{');
            for (i, entry) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&entry.key);
                out.push_str(": ");
                if let Some(value) = &entry.value {
                    write_any_value(out, value);
                }
            }
            out.push('}');
        }
    }
}

fn render_attrs(out: &mut String, indent: &str, label: &str, attributes: &[KeyValue]) {
    for attribute in attributes {
        let value = attribute
            .value
            .as_ref()
            .map(any_value_text)
            .unwrap_or_default();
        let _ = writeln!(out, "{indent}{label} {} = {value}", attribute.key);
    }
}

fn render_scope(out: &mut String, scope: &InstrumentationScope) {
    let _ = writeln!(out, "scope {} version={}", scope.name, scope.version);
    render_attrs(out, "  ", "scope.attr", &scope.attributes);
}

fn render_span(out: &mut String, received: &ReceivedSpan) {
    let span = &received.span;
    let _ = writeln!(
        out,
        "span {} service={} scope={} trace_id={} span_id={} parent={} kind={} status={} {} trace_state={}",
        span.name,
        received.service_name,
        received.scope,
        received.trace_id_hex(),
        received.span_id_hex(),
        received.parent_span_id_hex(),
        received.kind().as_str_name(),
        received.status_code().as_str_name(),
        received.status_message(),
        span.trace_state,
    );
    render_attrs(out, "  ", "attr", &span.attributes);
    for event in &span.events {
        let _ = writeln!(out, "  event {}", event.name);
        render_attrs(out, "    ", "attr", &event.attributes);
    }
    for link in &span.links {
        let _ = writeln!(
            out,
            "  link trace_id={} span_id={} trace_state={}",
            hex(&link.trace_id),
            hex(&link.span_id),
            link.trace_state
        );
        render_attrs(out, "    ", "attr", &link.attributes);
    }
    render_attrs(out, "  ", "resource", &received.resource_attributes);
}

fn render_metric(out: &mut String, received: &ReceivedMetric) {
    let metric = &received.metric;
    let _ = writeln!(
        out,
        "metric {} ({}) unit={} service={} scope={} description={}",
        metric.name,
        received.data_kind(),
        metric.unit,
        received.service_name,
        received.scope,
        metric.description,
    );
    render_attrs(out, "  ", "metadata", &metric.metadata);
    match &metric.data {
        Some(metric::Data::Gauge(gauge)) => {
            for p in &gauge.data_points {
                let value = number_value(p.value).to_string();
                render_point(out, &p.attributes, &value, &p.exemplars);
            }
        }
        Some(metric::Data::Sum(sum)) => {
            for p in &sum.data_points {
                let value = number_value(p.value).to_string();
                render_point(out, &p.attributes, &value, &p.exemplars);
            }
        }
        Some(metric::Data::Histogram(histogram)) => {
            for p in &histogram.data_points {
                let value = format!(
                    "count={} sum={:?} bounds={:?} buckets={:?}",
                    p.count, p.sum, p.explicit_bounds, p.bucket_counts
                );
                render_point(out, &p.attributes, &value, &p.exemplars);
            }
        }
        Some(metric::Data::ExponentialHistogram(histogram)) => {
            for p in &histogram.data_points {
                let value = format!("count={} sum={:?} scale={}", p.count, p.sum, p.scale);
                render_point(out, &p.attributes, &value, &p.exemplars);
            }
        }
        Some(metric::Data::Summary(summary)) => {
            for p in &summary.data_points {
                let value = format!("count={} sum={}", p.count, p.sum);
                render_point(out, &p.attributes, &value, &[]);
            }
        }
        None => {}
    }
    render_attrs(out, "  ", "resource", &received.resource_attributes);
}

fn render_point(out: &mut String, attributes: &[KeyValue], value: &str, exemplars: &[Exemplar]) {
    let _ = writeln!(out, "  point {value}");
    render_attrs(out, "    ", "attr", attributes);
    for exemplar in exemplars {
        let _ = writeln!(
            out,
            "    exemplar trace_id={} span_id={}",
            hex(&exemplar.trace_id),
            hex(&exemplar.span_id)
        );
        render_attrs(out, "      ", "attr", &exemplar.filtered_attributes);
    }
}

fn render_log(out: &mut String, received: &ReceivedLog) {
    let record = &received.record;
    let _ = writeln!(
        out,
        "log {} service={} scope={} severity={} event={} trace_id={} span_id={}",
        received.body_text(),
        received.service_name,
        received.scope,
        record.severity_text,
        record.event_name,
        received.trace_id_hex(),
        received.span_id_hex(),
    );
    render_attrs(out, "  ", "attr", &record.attributes);
    render_attrs(out, "  ", "resource", &received.resource_attributes);
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

    /// A response read off the wire by [`post`].
    #[derive(Debug)]
    struct HttpReply {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    }

    /// Sends one HTTP/1.1 request written by hand and reads the whole reply.
    async fn send(
        endpoint: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpReply {
        let authority = endpoint
            .strip_prefix("http://")
            .expect("an http:// endpoint");
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .expect("connect");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read reply");

        let split = reply
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8(reply[..split].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let mut content_type = String::new();
        let mut content_length = None;
        for line in lines {
            let (name, value) = line.split_once(':').expect("a header line");
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.trim().to_owned(),
                "content-length" => content_length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => panic!("unexpected transfer-encoding {value}"),
                _ => {}
            }
        }
        let body = reply[split + 4..].to_vec();
        if let Some(length) = content_length {
            assert_eq!(body.len(), length, "body length vs content-length");
        }
        HttpReply {
            status,
            content_type,
            body,
        }
    }

    async fn post(endpoint: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
        send(endpoint, "POST", path, headers, body).await
    }

    const PROTOBUF_HEADERS: &[(&str, &str)] = &[("content-type", "application/x-protobuf")];

    /// CRC-32 (IEEE), for hand-made gzip members.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A valid gzip member holding `data` in one stored (uncompressed)
    /// deflate block.
    fn gzip_stored(data: &[u8]) -> Vec<u8> {
        let length = u16::try_from(data.len()).expect("small test data");
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.push(0x01); // final block, stored
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&(!length).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    /// A valid zstd frame holding `data` (at most 64 KiB) in one raw block.
    fn zstd_raw(data: &[u8]) -> Vec<u8> {
        let mut out = 0xFD2F_B528u32.to_le_bytes().to_vec();
        // Single segment, no checksum, content size in 1 byte or in 2 bytes
        // (minus 256).
        match u8::try_from(data.len()) {
            Ok(length) => out.extend_from_slice(&[0x20, length]),
            Err(_) => {
                let length = u16::try_from(data.len() - 256).expect("small test data");
                out.push(0x60);
                out.extend_from_slice(&length.to_le_bytes());
            }
        }
        let size = u32::try_from(data.len()).expect("small test data");
        let block_header = 1 | (size << 3); // last block, raw
        out.extend_from_slice(&block_header.to_le_bytes()[..3]);
        out.extend_from_slice(data);
        out
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
            &gzip_stored(&plain),
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
            &zstd_raw(&plain),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");

        let names: Vec<String> = rx.spans().iter().map(|s| s.name().to_owned()).collect();
        assert_eq!(names, ["gzip-span", "zstd-span"]);
        assert_eq!(rx.requests().http_traces, 2);
    }

    #[tokio::test]
    async fn http_rejects_what_it_cannot_read() {
        let rx = OtlpReceiver::start().await.expect("start");
        let endpoint = rx.http_endpoint();
        let body = trace_request("svc", "span", &[]).encode_to_vec();

        let json = post(
            &endpoint,
            "/v1/traces",
            &[("content-type", "application/json")],
            b"{}",
        )
        .await;
        assert_eq!(json.status, 415);
        assert!(String::from_utf8_lossy(&json.body).contains("application/x-protobuf"));

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
        assert!(String::from_utf8_lossy(&brotli.body).contains("content-encoding br"));

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
}
