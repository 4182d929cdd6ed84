//! What both servers write into: the flattened spans, metrics and log
//! records, the request and item counts, and every string of every request
//! for [`OtlpReceiver::all_text`](super::OtlpReceiver::all_text). A counting
//! inbox (a benchmark's receiver) keeps the counts only.
//!
//! The three signals differ only in how their items nest (resource, then
//! scope, then items), which [`ExportRequest::file`] says once per signal;
//! what is done with a request is the same for all three ([`Inbox::add`]).
//! The text is taken from the request's OTLP/JSON form
//! (`opentelemetry-proto`'s serde support), so every field that proto has, or
//! gains, is in it without a renderer of ours.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::received::{
    ItemCounts, ReceivedLog, ReceivedMetric, ReceivedSpan, RequestCounts, service_name,
};

/// The transport an export request arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Grpc,
    Http,
}

/// Everything received so far.
#[derive(Debug, Default)]
pub(super) struct Store {
    pub spans: Vec<ReceivedSpan>,
    pub metrics: Vec<ReceivedMetric>,
    pub logs: Vec<ReceivedLog>,
    pub counts: RequestCounts,
    pub items: ItemCounts,
    /// Every key and string, number and bool value of every request, one
    /// to a line, strings unescaped.
    pub text: String,
}

/// The store shared by both servers and the receiver handle.
#[derive(Debug, Clone)]
pub(super) struct Inbox {
    store: Arc<Mutex<Store>>,
    /// Keeps the items and their text, not only their counts.
    keep: bool,
}

impl Inbox {
    /// An inbox for tests: keeps everything received.
    pub fn keeping() -> Self {
        Self {
            store: Arc::default(),
            keep: true,
        }
    }

    /// An inbox for benchmarks: counts requests and items, keeps nothing.
    /// Rendering every request to text and flattening its items costs the
    /// receiver more CPU per span than the exporter spends on it, which a
    /// benchmark's two shared cores would charge to the server under test.
    pub fn counting() -> Self {
        Self {
            store: Arc::default(),
            keep: false,
        }
    }

    /// Locks the store; a panic elsewhere while it was held does not hide
    /// what was received.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `request` as one request over `protocol`, and its items; a
    /// keeping inbox also keeps them and their text.
    pub fn add<R: ExportRequest>(&self, request: R, protocol: Protocol) {
        let items = request.items();
        let mut text = String::new();
        if self.keep {
            match serde_json::to_value(&request) {
                Ok(json) => collect_text(&json, &mut text),
                // The proto's serde form cannot fail for decoded messages; if it
                // ever did, say so where a test looks.
                Err(error) => text.push_str(&format!("(not rendered: {error})\n")),
            }
        }
        let mut store = self.lock();
        store.text.push_str(&text);
        *match R::SIGNAL {
            Signal::Traces => &mut store.items.spans,
            Signal::Metrics => &mut store.items.metrics,
            Signal::Logs => &mut store.items.log_records,
        } += items;
        let counts = &mut store.counts;
        *match (R::SIGNAL, protocol) {
            (Signal::Traces, Protocol::Grpc) => &mut counts.grpc_traces,
            (Signal::Metrics, Protocol::Grpc) => &mut counts.grpc_metrics,
            (Signal::Logs, Protocol::Grpc) => &mut counts.grpc_logs,
            (Signal::Traces, Protocol::Http) => &mut counts.http_traces,
            (Signal::Metrics, Protocol::Http) => &mut counts.http_metrics,
            (Signal::Logs, Protocol::Http) => &mut counts.http_logs,
        } += 1;
        if self.keep {
            request.file(&mut store);
        }
    }
}

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    Traces,
    Metrics,
    Logs,
}

/// An OTLP export request: what both protocols decode, and how its items
/// are filed.
pub(super) trait ExportRequest:
    prost::Message + Default + serde::Serialize + serde::de::DeserializeOwned + Send + 'static
{
    const SIGNAL: Signal;

    /// What a successful export is answered with.
    type Response: prost::Message + serde::Serialize + Default;

    /// Appends its items to the store's list for the signal, each with its
    /// resource's attributes and its scope's name.
    fn file(self, store: &mut Store);

    /// How many items (spans, metrics or log records) it holds.
    fn items(&self) -> u64;
}

/// A resource's attributes (none when the exporter sent no resource).
fn attributes(resource: Option<Resource>) -> Vec<KeyValue> {
    resource.map(|r| r.attributes).unwrap_or_default()
}

impl ExportRequest for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const SIGNAL: Signal = Signal::Traces;

    fn items(&self) -> u64 {
        let scopes = self.resource_spans.iter().flat_map(|r| &r.scope_spans);
        scopes.map(|s| s.spans.len() as u64).sum()
    }

    fn file(self, store: &mut Store) {
        for resource_spans in self.resource_spans {
            let resource_attributes = attributes(resource_spans.resource);
            let service_name = service_name(&resource_attributes);
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.unwrap_or_default().name;
                store
                    .spans
                    .extend(scope_spans.spans.into_iter().map(|span| ReceivedSpan {
                        service_name: service_name.clone(),
                        scope: scope.clone(),
                        span,
                        resource_attributes: resource_attributes.clone(),
                    }));
            }
        }
    }
}

impl ExportRequest for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const SIGNAL: Signal = Signal::Metrics;

    fn items(&self) -> u64 {
        let scopes = self.resource_metrics.iter().flat_map(|r| &r.scope_metrics);
        scopes.map(|s| s.metrics.len() as u64).sum()
    }

    fn file(self, store: &mut Store) {
        for resource_metrics in self.resource_metrics {
            let resource_attributes = attributes(resource_metrics.resource);
            let service_name = service_name(&resource_attributes);
            for scope_metrics in resource_metrics.scope_metrics {
                let scope = scope_metrics.scope.unwrap_or_default().name;
                store
                    .metrics
                    .extend(
                        scope_metrics
                            .metrics
                            .into_iter()
                            .map(|metric| ReceivedMetric {
                                service_name: service_name.clone(),
                                scope: scope.clone(),
                                metric,
                                resource_attributes: resource_attributes.clone(),
                            }),
                    );
            }
        }
    }
}

impl ExportRequest for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const SIGNAL: Signal = Signal::Logs;

    fn items(&self) -> u64 {
        let scopes = self.resource_logs.iter().flat_map(|r| &r.scope_logs);
        scopes.map(|s| s.log_records.len() as u64).sum()
    }

    fn file(self, store: &mut Store) {
        for resource_logs in self.resource_logs {
            let resource_attributes = attributes(resource_logs.resource);
            let service_name = service_name(&resource_attributes);
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs.scope.unwrap_or_default().name;
                store.logs.extend(
                    scope_logs
                        .log_records
                        .into_iter()
                        .map(|record| ReceivedLog {
                            service_name: service_name.clone(),
                            scope: scope.clone(),
                            record,
                            resource_attributes: resource_attributes.clone(),
                        }),
                );
            }
        }
    }
}

/// Every key and scalar of `json`, one to a line, strings as they are (not
/// JSON-escaped, so a secret is found however it is spelled).
fn collect_text(json: &serde_json::Value, out: &mut String) {
    match json {
        serde_json::Value::Null => {}
        serde_json::Value::Bool(b) => out.push_str(if *b { "true\n" } else { "false\n" }),
        serde_json::Value::Number(n) => {
            out.push_str(&n.to_string());
            out.push('\n');
        }
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_text(item, out)),
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                out.push_str(key);
                out.push('\n');
                collect_text(value, out);
            }
        }
    }
}
