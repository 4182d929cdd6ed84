//! What `GrpcServerLayer` adds to one unary call, on one thread: the span
//! (started, ended, handed to a batch processor), the five A66 and semconv
//! measurements, the exemplars and the live view's recorders, against the
//! same call without the layer.
//!
//! Why a bench of its own: end to end (`bench/rpc/threads.sh`) the layer is
//! a few microseconds inside a call of forty, shared with the load tool on
//! two cores, and an A/B of one change to it drowns in that noise. Here the
//! call is the layer and a service that answers at once, so a change to the
//! layer shows as a change of this figure. The SDK stands in for the
//! binary's with traces exported and `--http` on: a batch span processor
//! (its exporter drops what it is given: the export's cost is on its own
//! thread, not the caller's), two periodic in-memory metric readers in place
//! of the OTLP reader and Prometheus's (each measurement goes to both),
//! exemplars and the live view's recorders (not its trace-ring sampler and
//! processor, which live in `sensorhub-telemetry`).
//!
//! `cargo bench -p sensorhub-rpc-telemetry --bench server_layer`

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::{Pin, pin},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use opentelemetry::{metrics::noop::NoopMeterProvider, trace::noop::NoopTracerProvider};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider},
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter},
};
use sensorhub_rpc_telemetry::{
    ExemplarReservoir, GrpcServerLayer, SemconvStability,
    live::{LiveRecorders, TraceRing},
};
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service, service_fn};

const METHOD: &str = "sensorhub.SensorService/SendSingleReading";

/// A unary answer: one message, then the trailers with `grpc-status: 0`.
struct UnaryAnswer {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl UnaryAnswer {
    fn new() -> Self {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Self {
            message: Some(grpc_message(24)),
            trailers: Some(trailers),
        }
    }
}

impl Body for UnaryAnswer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// One length-prefixed gRPC message of `len` payload bytes.
fn grpc_message(len: usize) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.resize(5 + len, 7);
    Bytes::from(frame)
}

/// A unary request as tonic hands it to the layer: path, headers, the
/// connection's addresses and one message.
fn request(message: &Bytes) -> Request<tonic::body::Body> {
    let mut request = Request::builder()
        .uri(format!("http://127.0.0.1:50051/{METHOD}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(message.clone())))
        .expect("a request");
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    request.extensions_mut().insert(TcpConnectInfo {
        local_addr: None,
        remote_addr: Some(peer),
    });
    request
}

/// Runs a future that never waits (everything here answers at once).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the bench's calls never wait"),
    }
}

/// One call through `service`, its request read and its answer read to the
/// trailers, as hyper would.
fn one_call<S, B>(service: &mut S, message: &Bytes)
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let response = ready(service.call(request(message))).expect("an answer");
    let mut body = response.into_body();
    while let Some(frame) = ready(body.frame()) {
        std::hint::black_box(frame.expect("a frame"));
    }
}

/// The inner service: reads the request's message, answers at once.
fn answers_at_once() -> impl Service<
    Request<tonic::body::Body>,
    Response = Response<UnaryAnswer>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<UnaryAnswer>, Infallible>>,
> + Clone {
    service_fn(|request: Request<tonic::body::Body>| async move {
        let read = request.into_body().collect().await.expect("a request body");
        std::hint::black_box(read);
        Ok::<_, Infallible>(Response::new(UnaryAnswer::new()))
    })
}

/// An exporter that drops its batches.
#[derive(Debug)]
struct Dropped;

impl SpanExporter for Dropped {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

/// The providers the binary builds with traces exported and `--http` on.
fn sdk(sampler: Sampler) -> (SdkTracerProvider, SdkMeterProvider) {
    let tracers = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(BatchSpanProcessor::builder(Dropped).build())
        .build();
    let reader = || {
        PeriodicReader::builder(InMemoryMetricExporter::default())
            .with_interval(Duration::from_secs(3600))
            .build()
    };
    let meters = SdkMeterProvider::builder()
        .with_reader(reader())
        .with_reader(reader())
        .build();
    (tracers, meters)
}

fn with_sdk(sampler: Sampler) -> (GrpcServerLayer, SdkTracerProvider, SdkMeterProvider) {
    let (tracers, meters) = sdk(sampler);
    let exemplars = ExemplarReservoir::new();
    let layer = GrpcServerLayer::with_providers(
        [METHOD],
        &tracers,
        &meters,
        SemconvStability::default(),
        Some(&exemplars),
    )
    .with_live(LiveRecorders::new([METHOD], TraceRing::new()));
    (layer, tracers, meters)
}

fn server_layer(c: &mut Criterion) {
    let message = grpc_message(40);
    let mut group = c.benchmark_group("unary call");

    let mut bare = answers_at_once();
    group.bench_function("without the layer", |b| {
        b.iter(|| one_call(&mut bare, &message))
    });

    let mut noop = GrpcServerLayer::with_providers(
        [METHOD],
        &NoopTracerProvider::new(),
        &NoopMeterProvider::new(),
        SemconvStability::default(),
        None,
    )
    .layer(answers_at_once());
    group.bench_function("layer, no SDK", |b| {
        b.iter(|| one_call(&mut noop, &message))
    });

    for (name, sampler) in [
        ("layer, SDK, traces at 100 %", Sampler::AlwaysOn),
        (
            "layer, SDK, traces at 10 %",
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.1))),
        ),
    ] {
        let (layer, tracers, meters) = with_sdk(sampler);
        let mut service = layer.layer(answers_at_once());
        group.bench_function(name, |b| b.iter(|| one_call(&mut service, &message)));
        tracers.shutdown().expect("the span processor stops");
        meters.shutdown().expect("the readers stop");
    }
    group.finish();
}

criterion_group!(benches, server_layer);
criterion_main!(benches);
