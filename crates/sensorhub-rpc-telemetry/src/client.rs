//! The client layer: a client span per call whose context travels to the
//! server in `traceparent`, and the A66 client metrics. A call is one
//! attempt unless a retry layer beneath reports more (`attempts.rs`: each
//! attempt counted as A66 says, and A96's retry metrics when switched on).
//!
//! Invariant: like the server layer, it knows gRPC and the OpenTelemetry API only.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use http::{Request, Response};
use opentelemetry::{
    Context, KeyValue, Value,
    global::{self, BoxedTracer, ObjectSafeTracerProvider},
    metrics::{Counter, Histogram, Meter, MeterProvider},
    trace::{SpanKind, TraceContextExt, Tracer},
};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{
    SemconvStability,
    attempts::{CallAttempts, RetryInstruments, RetryMetrics},
    body::{CANCELLED, CallEnd, CountedBody, ObservedBody, status_of_error},
    conventions::{a66, semconv, status_name},
    frames::Tally,
    instrumentation_scope,
    outcome::{end_span, latency_histogram, semconv_attributes, size_histogram, status_in_head},
    propagation::HeaderInjector,
};

/// Instruments the calls made through a tonic `Channel`.
#[derive(Clone, Debug)]
pub struct GrpcClientLayer {
    shared: Arc<ClientShared>,
}

impl GrpcClientLayer {
    /// `target`: the server as the channel was given it (`https://host:port`),
    /// recorded as A66's `grpc.target` and semconv's `server.address`/`server.port`.
    ///
    /// Records through the global tracer and meter providers, in the
    /// semantic conventions `OTEL_SEMCONV_STABILITY_OPT_IN` chooses.
    pub fn new(target: &str) -> Self {
        let stability = SemconvStability::from_env();
        let scope = instrumentation_scope(stability);
        let meter = global::meter_with_scope(scope.clone());
        Self::build(target, global::tracer_with_scope(scope), &meter, stability)
    }

    /// Like [`GrpcClientLayer::new`], recording through the given providers
    /// instead of the global ones, in the conventions `stability` names.
    pub fn with_providers(
        target: &str,
        tracers: &dyn ObjectSafeTracerProvider,
        meters: &dyn MeterProvider,
        stability: SemconvStability,
    ) -> Self {
        let scope = instrumentation_scope(stability);
        let tracer = BoxedTracer::new(tracers.boxed_tracer(scope.clone()));
        Self::build(target, tracer, &meters.meter_with_scope(scope), stability)
    }

    fn build(
        target: &str,
        tracer: BoxedTracer,
        meter: &Meter,
        stability: SemconvStability,
    ) -> Self {
        let uri: Option<http::Uri> = target.parse().ok();
        let host = uri.as_ref().and_then(|u| u.host().map(str::to_owned));
        let port = uri.as_ref().and_then(|u| {
            u.port_u16().or(match u.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })
        });
        let mut server = Vec::with_capacity(2);
        if let Some(host) = &host {
            server.push(KeyValue::new(
                semconv::SERVER_ADDRESS,
                Value::from(Arc::<str>::from(host.as_str())),
            ));
            if let Some(port) = port {
                server.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
            }
        }
        Self {
            shared: Arc::new(ClientShared {
                target: Value::from(Arc::<str>::from(target)),
                server,
                tracer: Arc::new(tracer),
                stability,
                started: meter
                    .u64_counter(a66::CLIENT_ATTEMPT_STARTED)
                    .with_unit("{attempt}")
                    .with_description("Number of call attempts started by the client")
                    .build(),
                attempt_duration: latency_histogram(
                    meter,
                    a66::CLIENT_ATTEMPT_DURATION,
                    "Time from the start of an attempt to its status",
                    a66::LATENCY_BUCKETS,
                ),
                call_duration: latency_histogram(
                    meter,
                    a66::CLIENT_CALL_DURATION,
                    "Time from the start of a call to its status, as the application sees it",
                    a66::LATENCY_BUCKETS,
                ),
                sent: size_histogram(
                    meter,
                    a66::CLIENT_SENT_SIZE,
                    "Compressed payload bytes the client sent in one attempt",
                ),
                rcvd: size_histogram(
                    meter,
                    a66::CLIENT_RCVD_SIZE,
                    "Compressed payload bytes the client received in one attempt",
                ),
                semconv_duration: latency_histogram(
                    meter,
                    semconv::CLIENT_CALL_DURATION,
                    "Duration of client calls (RPC semantic conventions)",
                    semconv::DURATION_BUCKETS,
                ),
                retry: RetryInstruments::default(),
                meter: meter.clone(),
            }),
        }
    }

    /// Records the A96 retry metrics that `enabled` switches on, from the
    /// attempts a retry layer beneath reports (`CallAttempts`).
    pub fn with_retry_metrics(mut self, enabled: RetryMetrics) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        shared.retry = RetryInstruments::new(&shared.meter, enabled);
        self
    }
}

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ClientShared {
    pub(crate) target: Value,
    /// `server.address` and `server.port` from the target, for the span and
    /// the semconv metric.
    server: Vec<KeyValue>,
    tracer: Arc<BoxedTracer>,
    stability: SemconvStability,
    pub(crate) started: Counter<u64>,
    pub(crate) attempt_duration: Histogram<f64>,
    call_duration: Histogram<f64>,
    pub(crate) sent: Histogram<u64>,
    pub(crate) rcvd: Histogram<u64>,
    semconv_duration: Histogram<f64>,
    pub(crate) retry: RetryInstruments,
    meter: Meter,
}

impl std::fmt::Debug for ClientShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientShared")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The service [`GrpcClientLayer`] wraps around a channel.
#[derive(Clone, Debug)]
pub struct GrpcClientService<S> {
    inner: S,
    shared: Arc<ClientShared>,
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for GrpcClientService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ObservedBody<ResBody, ClientCall>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let start = Instant::now();
        let shared = &self.shared;
        let method: Value = Value::from(request.uri().path().trim_start_matches('/').to_owned());

        let mut attributes = Vec::with_capacity(2 + shared.server.len());
        attributes.push(KeyValue::new(semconv::RPC_SYSTEM_NAME, "grpc"));
        attributes.push(KeyValue::new(semconv::RPC_METHOD, method.clone()));
        attributes.extend_from_slice(&shared.server);
        let parent = Context::current();
        let span = shared
            .tracer
            .span_builder(method.as_str().into_owned())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&*shared.tracer, &parent);
        let otel = parent.with_span(span);
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&otel, &mut HeaderInjector(request.headers_mut()))
        });

        shared.started.add(
            1,
            &[
                KeyValue::new(a66::METHOD, method.clone()),
                KeyValue::new(a66::TARGET, shared.target.clone()),
            ],
        );
        let sent = Arc::new(Tally::default());
        let attempts = CallAttempts::new(shared.clone(), method.clone(), sent.clone(), start);
        request.extensions_mut().insert(attempts.clone());
        let request =
            request.map(|body| tonic::body::Body::new(CountedBody::new(body, sent.clone())));
        ClientFuture {
            inner: self.inner.call(request),
            call: Some(ClientCall {
                shared: shared.clone(),
                start,
                method,
                otel,
                sent,
                attempts,
            }),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcClientService`].
    pub struct ClientFuture<F> {
        #[pin]
        inner: F,
        call: Option<ClientCall>,
    }

    impl<F> PinnedDrop for ClientFuture<F> {
        // Dropped before the response head arrived: the caller gave up.
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(CANCELLED, (0, 0));
            }
        }
    }
}

impl<F> std::fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<
        Response<ObservedBody<ResBody, ClientCall>>,
        Box<dyn std::error::Error + Send + Sync>,
    >;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(response) => response,
        };
        let call = this.call.take().expect("polled after completion");
        Poll::Ready(match response {
            Ok(response) => {
                let call = match status_in_head(&response) {
                    Some(status) => {
                        call.finish(status, (0, 0));
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|body| ObservedBody::new(body, call, None)))
            }
            Err(error) => {
                let error = error.into();
                call.finish(status_of_error(&*error), (0, 0));
                Err(error)
            }
        })
    }
}

/// One call in flight on the client; ends when the response trailers arrive.
#[derive(Debug)]
pub struct ClientCall {
    shared: Arc<ClientShared>,
    start: Instant,
    method: Value,
    otel: Context,
    sent: Arc<Tally>,
    attempts: CallAttempts,
}

impl CallEnd for ClientCall {
    fn finish(self, status: i32, (received_messages, received_bytes): (u64, u64)) {
        let now = Instant::now();
        let elapsed = (now - self.start).as_secs_f64();
        let (sent_messages, sent_bytes) = self.sent.get();
        let name = status_name(status);
        let shared = &self.shared;

        self.attempts.finish(now, name, received_bytes);
        let a66 = [
            KeyValue::new(a66::METHOD, self.method.clone()),
            KeyValue::new(a66::TARGET, shared.target.clone()),
            KeyValue::new(a66::STATUS, name),
        ];
        shared.call_duration.record(elapsed, &a66);

        let failed = status != 0;
        shared.semconv_duration.record(
            elapsed,
            &semconv_attributes(shared.stability, self.method, name, failed, &shared.server),
        );
        end_span(
            shared.stability,
            &self.otel,
            name,
            failed,
            (sent_messages, sent_bytes),
            (received_messages, received_bytes),
        );
    }
}
