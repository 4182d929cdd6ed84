//! What the receiver hands a test: each span, metric and log record as
//! decoded, with the resource and scope it came under, and readers that
//! stringify attributes for assertions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;

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

/// How many items the receiver accepted, per signal, over both protocols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ItemCounts {
    /// Spans.
    pub spans: u64,
    /// `Metric` messages (a metric exported twice counts twice).
    pub metrics: u64,
    /// Log records.
    pub log_records: u64,
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

/// Lowercase hex of `bytes` (empty for no bytes).
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The stringified `service.name` of a resource, or an empty string.
pub(super) fn service_name(resource_attributes: &[KeyValue]) -> String {
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
