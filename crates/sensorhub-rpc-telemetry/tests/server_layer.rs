//! `GrpcServerLayer` around a plain tower service, recording into the SDK's
//! in-memory exporters: when a call ends (on its trailers, on a
//! trailers-only head, when its body is dropped) and what it is recorded as.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, channel::Channel};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::{
    metrics::{
        InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        data::{AggregatedMetrics, MetricData},
    },
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use sensorhub_rpc_telemetry::{
    GrpcClientLayer, GrpcServerLayer, SemconvStability,
    conventions::{a66, semconv},
};
use tower::{Layer, Service, ServiceExt, service_fn};

const METHOD: &str = "Test/Stream";

/// The providers a layer records into, and what they received.
struct Recorded {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracers: SdkTracerProvider,
    meters: SdkMeterProvider,
}

impl Recorded {
    fn new() -> Recorded {
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

    fn layer(&self) -> GrpcServerLayer {
        self.layer_in(SemconvStability::default())
    }

    fn layer_in(&self, stability: SemconvStability) -> GrpcServerLayer {
        GrpcServerLayer::with_providers([METHOD], &self.tracers, &self.meters, stability, None)
    }

    /// The attribute sets of every point of the histogram `name`, as sorted
    /// (key, value) lists, with the scope's schema URL.
    fn points_of(&self, name: &str) -> Vec<(Attributes, Option<String>)> {
        self.meters.force_flush().expect("flush metrics");
        let mut points = Vec::new();
        for resource in self.metrics.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics() {
                    if metric.name() != name {
                        continue;
                    }
                    let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data()
                    else {
                        panic!("{} is not an f64 histogram", metric.name());
                    };
                    for point in histogram.data_points() {
                        let mut attrs: Vec<(String, String)> = point
                            .attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                            .collect();
                        attrs.sort();
                        points.push((attrs, scope.scope().schema_url().map(str::to_owned)));
                    }
                }
            }
        }
        self.metrics.reset();
        points
    }

    fn spans(&self) -> Vec<SpanData> {
        self.tracers.force_flush().expect("flush spans");
        self.spans.get_finished_spans().expect("spans")
    }

    /// `grpc.server.call.duration` points: (grpc.method, grpc.status, count).
    fn a66_calls(&self) -> Vec<(String, String, u64)> {
        self.meters.force_flush().expect("flush metrics");
        let mut calls = Vec::new();
        for resource in self.metrics.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics() {
                    if metric.name() != a66::SERVER_CALL_DURATION {
                        continue;
                    }
                    let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data()
                    else {
                        panic!("{} is not an f64 histogram", metric.name());
                    };
                    for point in histogram.data_points() {
                        let attrs: Vec<&KeyValue> = point.attributes().collect();
                        calls.push((
                            attribute(&attrs, a66::METHOD),
                            attribute(&attrs, a66::STATUS),
                            point.count(),
                        ));
                    }
                }
            }
        }
        self.metrics.reset();
        calls
    }
}

/// A data point's attributes as sorted (key, value) pairs.
type Attributes = Vec<(String, String)>;

fn attribute(attrs: &[&KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
        .unwrap_or_else(|| panic!("no {key} in {attrs:?}"))
}

fn span_attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn request(path: &str) -> Request<tonic::body::Body> {
    Request::builder()
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .expect("a request")
}

/// One gRPC message: the 5-byte prefix and `payload`.
fn message(payload: &[u8]) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

fn trailers(code: u8) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    trailers
}

/// A streaming call: its span and metrics end when the trailers pass, not
/// when the response head is ready; its status is the trailers'.
#[tokio::test]
async fn a_streaming_call_ends_on_its_trailers() {
    let recorded = Recorded::new();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut body = Some(body);
    let mut service = recorded.layer().layer(service_fn(move |_request| {
        let body = body.take().expect("one call");
        async move { Ok::<_, std::convert::Infallible>(Response::new(body)) }
    }));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(&format!("/{METHOD}")))
        .await
        .unwrap();
    let mut body = response.into_body();
    assert!(recorded.spans().is_empty(), "the span ended with the head");

    sender.send_data(message(b"hello")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.is_data());
    sender.send_data(message(b"world!")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(
        recorded.spans().is_empty(),
        "the span ended before the trailers"
    );

    sender.send_trailers(trailers(0)).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.is_trailers());
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.name, METHOD);
    assert_eq!(
        span_attribute(span, semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("OK"))
    );
    assert_eq!(
        span_attribute(span, semconv::RESPONSE_MESSAGES),
        Some(Value::I64(2))
    );
    assert_eq!(
        span_attribute(span, semconv::RESPONSE_BYTES),
        Some(Value::I64(11))
    );
    assert_eq!(
        recorded.a66_calls(),
        [(METHOD.to_owned(), "OK".to_owned(), 1)]
    );
}

/// A trailers-only answer (the status in the head, as for a refused call)
/// ends the call with the head, with that status.
#[tokio::test]
async fn a_trailers_only_answer_ends_with_the_head() {
    let recorded = Recorded::new();
    let mut service = recorded.layer().layer(service_fn(|_request| async {
        let mut response = Response::new(Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(16u16));
        Ok::<_, std::convert::Infallible>(response)
    }));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(&format!("/{METHOD}")))
        .await
        .unwrap();
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("UNAUTHENTICATED"))
    );
    assert_eq!(
        recorded.a66_calls(),
        [(METHOD.to_owned(), "UNAUTHENTICATED".to_owned(), 1)]
    );
    drop(response);
    assert_eq!(recorded.spans().len(), 1, "the call ended twice");
}

/// A response body dropped before its trailers (the client went away) ends
/// the call as CANCELLED.
#[tokio::test]
async fn a_dropped_body_is_cancelled() {
    let recorded = Recorded::new();
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut body = Some(body);
    let mut service = recorded.layer().layer(service_fn(move |_request| {
        let body = body.take().expect("one call");
        async move { Ok::<_, std::convert::Infallible>(Response::new(body)) }
    }));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(&format!("/{METHOD}")))
        .await
        .unwrap();
    let mut body = response.into_body();
    sender.send_data(message(b"partial")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_RESPONSE_STATUS_CODE),
        Some(Value::from("CANCELLED"))
    );
    assert_eq!(
        recorded.a66_calls(),
        [(METHOD.to_owned(), "CANCELLED".to_owned(), 1)]
    );
}

/// A path the server does not register is recorded as `other` (A66) and
/// `_OTHER` (semconv), with the original path kept on the span only.
#[tokio::test]
async fn an_unknown_method_is_other() {
    let recorded = Recorded::new();
    let mut service = recorded.layer().layer(service_fn(|_request| async {
        let mut response = Response::new(Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(12u16));
        Ok::<_, std::convert::Infallible>(response)
    }));
    service
        .ready()
        .await
        .unwrap()
        .call(request("/Scanner/Probe"))
        .await
        .unwrap();
    let spans = recorded.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name, semconv::OTHER_METHOD);
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_METHOD),
        Some(Value::from(semconv::OTHER_METHOD))
    );
    assert_eq!(
        span_attribute(&spans[0], semconv::RPC_METHOD_ORIGINAL),
        Some(Value::from("Scanner/Probe"))
    );
    assert_eq!(
        recorded.a66_calls(),
        [(a66::OTHER_METHOD.to_owned(), "UNIMPLEMENTED".to_owned(), 1)]
    );
}

/// One call through `service`, whose head is trailers-only.
async fn trailers_only_call<S>(service: &mut S, path: &str)
where
    S: Service<Request<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(path))
        .await
        .unwrap();
    drop(response);
}

fn pairs(pairs: &[(&str, &str)]) -> Attributes {
    let mut pairs: Vec<_> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.sort();
    pairs
}

/// `OTEL_SEMCONV_STABILITY_OPT_IN`'s three modes on the server: the status
/// is `rpc.response.status_code` (v1.40.0, unset), `rpc.status_code`
/// (`rpc`), or both (`rpc/dup`), on the span and on
/// `rpc.server.call.duration` alike; A66 is the same in every mode.
#[tokio::test]
async fn the_server_emits_the_semconv_mode_it_is_given() {
    for (stability, statuses, schema) in [
        (
            SemconvStability::V1_40,
            &["rpc.response.status_code"][..],
            Some("https://opentelemetry.io/schemas/1.40.0"),
        ),
        (SemconvStability::Latest, &["rpc.status_code"][..], None),
        (
            SemconvStability::Duplicate,
            &["rpc.response.status_code", "rpc.status_code"][..],
            Some("https://opentelemetry.io/schemas/1.40.0"),
        ),
    ] {
        let recorded = Recorded::new();
        let mut service = recorded
            .layer_in(stability)
            .layer(service_fn(|_request| async {
                let mut response = Response::new(Empty::<Bytes>::new());
                response
                    .headers_mut()
                    .insert("grpc-status", HeaderValue::from(14u16));
                Ok::<_, std::convert::Infallible>(response)
            }));
        trailers_only_call(&mut service, &format!("/{METHOD}")).await;

        let spans = recorded.spans();
        assert_eq!(spans.len(), 1, "{stability:?}: {spans:?}");
        let span = &spans[0];
        for key in ["rpc.response.status_code", "rpc.status_code"] {
            let expected = statuses.contains(&key).then(|| Value::from("UNAVAILABLE"));
            assert_eq!(span_attribute(span, key), expected, "{stability:?}: {key}");
        }
        assert_eq!(
            span_attribute(span, "error.type"),
            Some(Value::from("UNAVAILABLE"))
        );
        assert_eq!(
            span.instrumentation_scope.schema_url(),
            schema,
            "{stability:?}"
        );

        let mut expected = vec![
            ("rpc.system.name", "grpc"),
            ("rpc.method", METHOD),
            ("error.type", "UNAVAILABLE"),
        ];
        expected.extend(statuses.iter().map(|key| (*key, "UNAVAILABLE")));
        assert_eq!(
            recorded.points_of(semconv::SERVER_CALL_DURATION),
            [(pairs(&expected), schema.map(str::to_owned))],
            "{stability:?}"
        );
        assert_eq!(
            recorded.a66_calls(),
            [(METHOD.to_owned(), "UNAVAILABLE".to_owned(), 1)],
            "{stability:?}"
        );
    }
}

/// The client layer in the three modes: the same status keys, and
/// `rpc.client.call.duration` carries `server.address`/`server.port`
/// (conditionally required since v1.40.0).
#[tokio::test]
async fn the_client_emits_the_semconv_mode_it_is_given() {
    for (stability, statuses) in [
        (SemconvStability::V1_40, &["rpc.response.status_code"][..]),
        (SemconvStability::Latest, &["rpc.status_code"][..]),
        (
            SemconvStability::Duplicate,
            &["rpc.response.status_code", "rpc.status_code"][..],
        ),
    ] {
        let recorded = Recorded::new();
        let layer = GrpcClientLayer::with_providers(
            "https://sensors.example:50051",
            &recorded.tracers,
            &recorded.meters,
            stability,
        );
        let mut service = layer.layer(service_fn(|_request| async {
            let mut response = Response::new(Empty::<Bytes>::new());
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from(5u16));
            Ok::<_, std::convert::Infallible>(response)
        }));
        trailers_only_call(&mut service, &format!("/{METHOD}")).await;

        let spans = recorded.spans();
        assert_eq!(spans.len(), 1, "{stability:?}: {spans:?}");
        for key in ["rpc.response.status_code", "rpc.status_code"] {
            let expected = statuses.contains(&key).then(|| Value::from("NOT_FOUND"));
            assert_eq!(
                span_attribute(&spans[0], key),
                expected,
                "{stability:?}: {key}"
            );
        }
        let mut expected = vec![
            ("rpc.system.name", "grpc"),
            ("rpc.method", METHOD),
            ("error.type", "NOT_FOUND"),
            ("server.address", "sensors.example"),
            ("server.port", "50051"),
        ];
        expected.extend(statuses.iter().map(|key| (*key, "NOT_FOUND")));
        let points = recorded.points_of(semconv::CLIENT_CALL_DURATION);
        assert_eq!(points.len(), 1, "{stability:?}: {points:?}");
        assert_eq!(points[0].0, pairs(&expected), "{stability:?}");
    }
}

/// A sampled call leaves an exemplar, with its span's trace and span id, on
/// the A66 and semconv buckets its duration fell in; with sampling off a
/// call leaves none.
#[tokio::test]
async fn a_sampled_call_leaves_its_trace_as_an_exemplar() {
    use opentelemetry_sdk::trace::Sampler;
    use sensorhub_rpc_telemetry::{ExemplarReservoir, exemplars::ExemplarInstrument};

    for sampled in [true, false] {
        let spans = InMemorySpanExporter::default();
        let tracers = SdkTracerProvider::builder()
            .with_sampler(if sampled {
                Sampler::AlwaysOn
            } else {
                Sampler::AlwaysOff
            })
            .with_simple_exporter(spans.clone())
            .build();
        let meters = SdkMeterProvider::builder().build();
        let reservoir = ExemplarReservoir::new();
        let layer = GrpcServerLayer::with_providers(
            [METHOD],
            &tracers,
            &meters,
            SemconvStability::default(),
            Some(&reservoir),
        );
        let mut service = layer.layer(service_fn(|_request| async {
            let mut response = Response::new(Empty::<Bytes>::new());
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from(5u16));
            Ok::<_, std::convert::Infallible>(response)
        }));
        trailers_only_call(&mut service, &format!("/{METHOD}")).await;

        let entries = reservoir.collect();
        if !sampled {
            assert!(entries.is_empty(), "{entries:?}");
            continue;
        }
        tracers.force_flush().unwrap();
        let span = spans.get_finished_spans().unwrap().pop().expect("a span");
        assert_eq!(entries.len(), 2, "{entries:?}");
        for entry in &entries {
            assert_eq!(&*entry.method, METHOD);
            assert_eq!(entry.status, "NOT_FOUND");
            assert_eq!(entry.exemplar.trace_id, span.span_context.trace_id());
            assert_eq!(entry.exemplar.span_id, span.span_context.span_id());
            // The bucket the SDK counts the duration in: the first bound not
            // below it.
            let bounds = entry.instrument.bounds();
            let value = entry.exemplar.value;
            assert!(entry.bucket == bounds.len() || value <= bounds[entry.bucket]);
            assert!(entry.bucket == 0 || value > bounds[entry.bucket - 1]);
        }
        let instruments: Vec<_> = entries.iter().map(|e| e.instrument).collect();
        assert!(instruments.contains(&ExemplarInstrument::A66ServerDuration));
        assert!(instruments.contains(&ExemplarInstrument::SemconvServerDuration));
    }
}
