//! What both sides' tests share: SDK providers with in-memory exporters,
//! readers of what they received, and hand-built gRPC requests, messages and
//! trailers.

use std::{collections::BTreeMap, convert::Infallible};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{Empty, channel::Channel};
use opentelemetry::Value;
use opentelemetry_sdk::{
    metrics::{
        InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        data::{AggregatedMetrics, MetricData},
    },
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use tower::{Service, ServiceExt, service_fn};

/// The providers a layer records into, and what they received.
pub struct Recorded {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    pub tracers: SdkTracerProvider,
    pub meters: SdkMeterProvider,
}

/// One data point: its attributes (values as text) and its count (a
/// histogram's) or value (a counter's).
pub type Point = (BTreeMap<String, String>, u64);

/// Attributes from `(key, value)` pairs, to compare with a [`Point`]'s.
pub fn attributes_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One call of `path` through `service`: its response.
pub async fn call<S>(service: &mut S, path: &str) -> S::Response
where
    S: Service<Request<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    service
        .ready()
        .await
        .unwrap()
        .call(request(path))
        .await
        .unwrap()
}

/// One call through `service`, whose answer is a trailers-only head.
pub async fn trailers_only_call<S>(service: &mut S, path: &str)
where
    S: Service<Request<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    drop(call(service, path).await);
}

/// A service answering every call with a trailers-only head of gRPC status
/// `code`, as a refused call is answered.
pub fn answers_trailers_only(
    code: u16,
) -> impl Service<
    Request<tonic::body::Body>,
    Response = Response<Empty<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_request| async move {
        let mut response = Response::new(Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(code));
        Ok::<_, Infallible>(response)
    })
}

/// A service answering its one call with `body`, whose sender the test
/// holds: the test decides when each frame and the trailers come.
pub fn answers_once_with(
    body: Channel<Bytes>,
) -> impl Service<
    Request<tonic::body::Body>,
    Response = Response<Channel<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> {
    let mut body = Some(body);
    service_fn(move |_request| {
        let body = body.take().expect("one call");
        async move { Ok::<_, Infallible>(Response::new(body)) }
    })
}

impl Recorded {
    pub fn new() -> Recorded {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let tracers = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Recorded {
            spans,
            metrics,
            tracers,
            meters,
        }
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.tracers.force_flush().expect("flush spans");
        self.spans.get_finished_spans().expect("spans")
    }

    /// The points of the histogram or counter `name`, cumulative: all that
    /// was recorded since the providers were made.
    pub fn points(&self, name: &str) -> Vec<Point> {
        self.scoped_points(name)
            .into_iter()
            .map(|(point, _)| point)
            .collect()
    }

    /// The points of the histogram `name`: attributes, count and sum.
    pub fn histogram(&self, name: &str) -> Vec<(BTreeMap<String, String>, u64, f64)> {
        self.meters.force_flush().expect("flush metrics");
        let mut points = Vec::new();
        for resource in self.metrics.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    match metric.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(histogram)) => points.extend(
                            histogram
                                .data_points()
                                .map(|p| (attributes(p.attributes()), p.count(), p.sum())),
                        ),
                        AggregatedMetrics::U64(MetricData::Histogram(histogram)) => points.extend(
                            histogram
                                .data_points()
                                .map(|p| (attributes(p.attributes()), p.count(), p.sum() as f64)),
                        ),
                        _ => panic!("{name}: not a histogram"),
                    }
                }
            }
        }
        self.metrics.reset();
        points
    }

    /// [`points`](Recorded::points), each with its scope's schema URL.
    pub fn scoped_points(&self, name: &str) -> Vec<(Point, Option<String>)> {
        self.meters.force_flush().expect("flush metrics");
        let mut points = Vec::new();
        for resource in self.metrics.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                let schema = scope.scope().schema_url().map(str::to_owned);
                let mut add = |point: Point| points.push((point, schema.clone()));
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    match metric.data() {
                        AggregatedMetrics::F64(MetricData::Histogram(histogram)) => histogram
                            .data_points()
                            .for_each(|p| add((attributes(p.attributes()), p.count()))),
                        AggregatedMetrics::U64(MetricData::Histogram(histogram)) => histogram
                            .data_points()
                            .for_each(|p| add((attributes(p.attributes()), p.count()))),
                        AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                            .data_points()
                            .for_each(|p| add((attributes(p.attributes()), p.value()))),
                        _ => panic!("{name}: a kind of metric these tests do not read"),
                    }
                }
            }
        }
        self.metrics.reset();
        points
    }
}

fn attributes<'a>(
    attributes: impl Iterator<Item = &'a opentelemetry::KeyValue>,
) -> BTreeMap<String, String> {
    attributes
        .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
        .collect()
}

pub fn span_attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

pub fn request(path: &str) -> Request<tonic::body::Body> {
    Request::builder()
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .expect("a request")
}

/// One gRPC message: the 5-byte prefix and `payload`.
pub fn message(payload: &[u8]) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

pub fn trailers(code: u8) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    trailers
}
