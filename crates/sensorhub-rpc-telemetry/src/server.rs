//! The server layer: one span and one set of A66 + semconv measurements per
//! call, from the first request header to the trailers.
//!
//! Invariant: knows gRPC over HTTP/2 and OpenTelemetry's API, nothing of any
//! particular service; the SDK and exporters are wired elsewhere
//! (the binary's `sensorhub-telemetry`), so with no SDK installed every
//! record is a no-op.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context as TaskContext, Poll},
    time::{Instant, SystemTime},
};

use http::{Request, Response};
use opentelemetry::{
    Context, KeyValue, Value,
    global::{self, BoxedTracer, ObjectSafeTracerProvider},
    metrics::{BoundCounter, BoundHistogram, Counter, Histogram, Meter, MeterProvider},
    trace::{FutureExt as _, SpanKind, TraceContextExt, Tracer},
};
use pin_project_lite::pin_project;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::{
    SemconvStability,
    body::{CANCELLED, CallEnd, CountedBody, ObservedBody, UNKNOWN},
    conventions::{a66, is_server_error, semconv, status_name},
    exemplars::{ExemplarReservoir, MethodExemplars},
    frames::Tally,
    instrumentation_scope,
    live::{LiveRecorders, in_flight::Registration},
    outcome::{end_span, latency_histogram, semconv_attributes, size_histogram, status_in_head},
    propagation::HeaderExtractor,
};

/// The rpcz row of a method before `with_live` (never read without it).
const NO_RPCZ_ROW: u16 = u16::MAX;

/// The room a call's span list is made with: the attributes it starts with
/// and those its end adds (status, message counts, what the service sets,
/// such as a commit's), so the list is allocated once.
const SPAN_ATTRIBUTES: usize = 20;

/// Instruments the calls of a tonic server. Put it outermost
/// (`Server::builder().layer(..)`), so it sees every call, also the ones an
/// interceptor refuses.
#[derive(Clone, Debug)]
pub struct GrpcServerLayer {
    shared: Arc<ServerShared>,
}

impl GrpcServerLayer {
    /// `methods`: the full paths the server registers, without the leading
    /// slash (`SensorService/SendSingleReading`); any other path is recorded
    /// as `other` (A66) and `_OTHER` (semconv), so a scanner cannot blow up
    /// the metrics' cardinality.
    ///
    /// Records through the global tracer and meter providers, in the
    /// semantic conventions `OTEL_SEMCONV_STABILITY_OPT_IN` chooses; the
    /// sampled calls' exemplars of the duration histograms go to `exemplars`.
    pub fn new<M: Into<String>>(
        methods: impl IntoIterator<Item = M>,
        exemplars: Option<&ExemplarReservoir>,
    ) -> Self {
        let stability = SemconvStability::from_env();
        let scope = instrumentation_scope(stability);
        let meter = global::meter_with_scope(scope.clone());
        Self::build(
            methods,
            global::tracer_with_scope(scope),
            &meter,
            stability,
            exemplars,
        )
    }

    /// Like [`GrpcServerLayer::new`], recording through the given providers
    /// instead of the global ones, in the conventions `stability` names.
    pub fn with_providers<M: Into<String>>(
        methods: impl IntoIterator<Item = M>,
        tracers: &dyn ObjectSafeTracerProvider,
        meters: &dyn MeterProvider,
        stability: SemconvStability,
        exemplars: Option<&ExemplarReservoir>,
    ) -> Self {
        let scope = instrumentation_scope(stability);
        let tracer = BoxedTracer::new(tracers.boxed_tracer(scope.clone()));
        Self::build(
            methods,
            tracer,
            &meters.meter_with_scope(scope),
            stability,
            exemplars,
        )
    }

    fn build<M: Into<String>>(
        methods: impl IntoIterator<Item = M>,
        tracer: BoxedTracer,
        meter: &Meter,
        stability: SemconvStability,
        exemplars: Option<&ExemplarReservoir>,
    ) -> Self {
        let methods = methods
            .into_iter()
            .map(|m| {
                let m: String = m.into();
                let value = Value::from(Arc::<str>::from(m.as_str()));
                let method = Method::new(value.clone(), value, exemplars);
                (m, Arc::new(method))
            })
            .collect();
        let other = Method::new(
            Value::from(a66::OTHER_METHOD),
            Value::from(semconv::OTHER_METHOD),
            exemplars,
        );
        Self {
            shared: Arc::new(ServerShared {
                methods,
                other: Arc::new(other),
                tracer,
                stability,
                started: meter
                    .u64_counter(a66::SERVER_CALL_STARTED)
                    .with_unit("{call}")
                    .with_description("Number of calls started on the server")
                    .build(),
                duration: latency_histogram(
                    meter,
                    a66::SERVER_CALL_DURATION,
                    "Time from the first request header to the trailers being sent",
                    a66::LATENCY_BUCKETS,
                ),
                sent: size_histogram(
                    meter,
                    a66::SERVER_SENT_SIZE,
                    "Compressed payload bytes the server sent in one call",
                ),
                rcvd: size_histogram(
                    meter,
                    a66::SERVER_RCVD_SIZE,
                    "Compressed payload bytes the server received in one call",
                ),
                semconv_duration: latency_histogram(
                    meter,
                    semconv::SERVER_CALL_DURATION,
                    "Duration of server calls (RPC semantic conventions)",
                    semconv::DURATION_BUCKETS,
                ),
                live: None,
            }),
        }
    }

    /// Also feeds the live view's recorders: every call is listed in flight
    /// while it runs, counted in the rpcz table when it ends, and, when it
    /// fails without a recorded span, kept among the trace ring's errors.
    ///
    /// # Panics
    /// When the layer was cloned before (call it on a new layer).
    pub fn with_live(mut self, live: LiveRecorders) -> Self {
        let shared =
            Arc::get_mut(&mut self.shared).expect("with_live is called on a layer not yet cloned");
        // Each method's rpcz row, found once here rather than per call.
        for (path, method) in shared.methods.iter_mut() {
            Arc::get_mut(method).expect("not shared yet").rpcz_row = live.rpcz.method_index(path);
        }
        Arc::get_mut(&mut shared.other)
            .expect("not shared yet")
            .rpcz_row = live.rpcz.method_index("");
        shared.live = Some(live);
        self
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

struct ServerShared {
    /// Each registered method, by its path without the leading slash.
    methods: HashMap<String, Arc<Method>>,
    /// Every other path, as one method (`other`, `_OTHER`).
    other: Arc<Method>,
    tracer: BoxedTracer,
    stability: SemconvStability,
    started: Counter<u64>,
    duration: Histogram<f64>,
    sent: Histogram<u64>,
    rcvd: Histogram<u64>,
    semconv_duration: Histogram<f64>,
    live: Option<LiveRecorders>,
}

/// What the layer records one method as, found once per call.
#[derive(Debug)]
struct Method {
    /// The A66 `grpc.method` value.
    a66: Value,
    /// The semconv `rpc.method` value (and the span's name).
    semconv: Value,
    exemplars: Option<Arc<MethodExemplars>>,
    /// Its row in the rpcz table.
    rpcz_row: u16,
    /// `grpc.server.call.started` bound to the method, at its first call.
    started: OnceLock<BoundCounter<u64>>,
    /// The end-of-call measurements bound to the method and `OK`, at its
    /// first `OK` call.
    ok: OnceLock<OkSeries>,
}

/// The series an `OK` call of one method records into. Bound at the first
/// such call rather than when the layer is made: binding makes the series,
/// and a method never called must not export one.
#[derive(Debug)]
struct OkSeries {
    duration: BoundHistogram<f64>,
    sent: BoundHistogram<u64>,
    rcvd: BoundHistogram<u64>,
    semconv_duration: BoundHistogram<f64>,
}

impl Method {
    fn new(a66: Value, semconv: Value, exemplars: Option<&ExemplarReservoir>) -> Self {
        let exemplars =
            exemplars.map(|reservoir| reservoir.method(&a66.as_str(), &semconv.as_str()));
        Self {
            a66,
            semconv,
            exemplars,
            rpcz_row: NO_RPCZ_ROW,
            started: OnceLock::new(),
            ok: OnceLock::new(),
        }
    }

    fn a66_attributes(&self, status: &'static str) -> [KeyValue; 2] {
        [
            KeyValue::new(a66::METHOD, self.a66.clone()),
            KeyValue::new(a66::STATUS, status),
        ]
    }

    fn started(&self, shared: &ServerShared) -> &BoundCounter<u64> {
        self.started.get_or_init(|| {
            shared
                .started
                .bind(&[KeyValue::new(a66::METHOD, self.a66.clone())])
        })
    }

    fn ok(&self, shared: &ServerShared) -> &OkSeries {
        self.ok.get_or_init(|| {
            let a66 = self.a66_attributes(status_name(0));
            let semconv = semconv_attributes(
                shared.stability,
                self.semconv.clone(),
                status_name(0),
                false,
                &[],
            );
            OkSeries {
                duration: shared.duration.bind(&a66),
                sent: shared.sent.bind(&a66),
                rcvd: shared.rcvd.bind(&a66),
                semconv_duration: shared.semconv_duration.bind(&semconv),
            }
        })
    }
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared")
            .field("methods", &self.methods.len())
            .field("stability", &self.stability)
            .finish_non_exhaustive()
    }
}

/// The service [`GrpcServerLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
    shared: Arc<ServerShared>,
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for GrpcServerService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody, ServerCall>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let start = Instant::now();
        let shared = &self.shared;
        let path = request.uri().path().trim_start_matches('/');
        let (known, method) = match shared.methods.get(path) {
            Some(method) => (true, method.clone()),
            None => (false, shared.other.clone()),
        };

        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let mut attributes = Vec::with_capacity(SPAN_ATTRIBUTES);
        attributes.push(KeyValue::new(semconv::RPC_SYSTEM_NAME, "grpc"));
        attributes.push(KeyValue::new(semconv::RPC_METHOD, method.semconv.clone()));
        if !known {
            let original: String = path.chars().take(128).collect();
            attributes.push(KeyValue::new(semconv::RPC_METHOD_ORIGINAL, original));
        }
        if let Some(host) = request.uri().host() {
            attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, host.to_owned()));
        }
        if let Some(port) = request.uri().port_u16() {
            attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
        let peer = peer_address(&request);
        if let Some(peer) = peer {
            attributes.push(KeyValue::new(
                semconv::NETWORK_PEER_ADDRESS,
                peer.ip().to_string(),
            ));
            attributes.push(KeyValue::new(
                semconv::NETWORK_PEER_PORT,
                i64::from(peer.port()),
            ));
        }
        let span = shared
            .tracer
            .span_builder(method.semconv.as_str().into_owned())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&shared.tracer, &parent);
        let otel = parent.with_span(span);

        method.started(shared).add(1);
        let received = Arc::new(Tally::default());
        let live = shared.live.as_ref().map(|live| CallLive {
            peer,
            registration: live.calls.register(
                method.a66.clone(),
                peer,
                start,
                otel.span().span_context().trace_id(),
                received.clone(),
            ),
        });
        let request =
            request.map(|body| tonic::body::Body::new(CountedBody::new(body, received.clone())));
        let inner = {
            let _attached = otel.clone().attach();
            self.inner.call(request)
        };
        ServerFuture {
            inner: inner.with_context(otel.clone()),
            call: Some(ServerCall {
                shared: shared.clone(),
                start,
                method,
                otel,
                received,
                live,
            }),
        }
    }
}

fn peer_address<B>(request: &Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    if let Some(info) = extensions.get::<TcpConnectInfo>() {
        return info.remote_addr();
    }
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
}

pin_project! {
    /// The response future of [`GrpcServerService`].
    pub struct ServerFuture<F> {
        #[pin]
        inner: opentelemetry::context::WithContext<F>,
        call: Option<ServerCall>,
    }

    impl<F> PinnedDrop for ServerFuture<F> {
        // Dropped before the handler answered: the connection went away.
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(CANCELLED, (0, 0));
            }
        }
    }
}

impl<F> std::fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ObservedBody<ResBody, ServerCall>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(response) => response,
        };
        let call = this.call.take().expect("polled after completion");
        Poll::Ready(match response {
            Ok(response) => {
                let (call, otel) = match status_in_head(&response) {
                    Some(status) => {
                        call.finish(status, (0, 0));
                        (None, None)
                    }
                    None => {
                        let otel = call.otel.clone();
                        (Some(call), Some(otel))
                    }
                };
                Ok(response.map(|body| ObservedBody::new(body, call, otel)))
            }
            Err(error) => {
                call.finish(UNKNOWN, (0, 0));
                Err(error)
            }
        })
    }
}

/// One call in flight on the server; ends when its trailers pass.
#[derive(Debug)]
pub struct ServerCall {
    shared: Arc<ServerShared>,
    start: Instant,
    method: Arc<Method>,
    otel: Context,
    received: Arc<Tally>,
    live: Option<CallLive>,
}

/// What the live view's recorders hold of one call.
#[derive(Debug)]
struct CallLive {
    peer: Option<SocketAddr>,
    /// `None` when the in-flight registry was full; dropping it (when the
    /// call ends, with this `ServerCall`) removes the call from the registry.
    registration: Option<Registration>,
}

impl CallEnd for ServerCall {
    fn sent(&self, messages: (u64, u64)) {
        if let Some(registration) = self.live.as_ref().and_then(|l| l.registration.as_ref()) {
            registration.state.sent.add(messages);
        }
    }

    fn finish(self, status: i32, (sent_messages, sent_bytes): (u64, u64)) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.start);
        let elapsed = took.as_secs_f64();
        let received = self.received.get();
        let name = status_name(status);
        let shared = &self.shared;
        if let (Some(recorders), Some(call)) = (&shared.live, &self.live) {
            recorders
                .rpcz
                .record(self.method.rpcz_row, status, took, now);
            if status != 0 && !self.otel.span().is_recording() {
                recorders.traces.keep_unrecorded_call(
                    self.otel.span().span_context().trace_id(),
                    &self.method.a66.as_str(),
                    name,
                    SystemTime::now() - took,
                    took,
                    call.peer,
                    (received.0, sent_messages),
                );
            }
        }

        let method = &self.method;
        let failed = is_server_error(status);
        if status == 0 {
            let series = method.ok(shared);
            series.duration.record(elapsed);
            series.sent.record(sent_bytes);
            series.rcvd.record(received.1);
            series.semconv_duration.record(elapsed);
        } else {
            let a66 = method.a66_attributes(name);
            shared.duration.record(elapsed, &a66);
            shared.sent.record(sent_bytes, &a66);
            shared.rcvd.record(received.1, &a66);
            let semconv =
                semconv_attributes(shared.stability, method.semconv.clone(), name, failed, &[]);
            shared.semconv_duration.record(elapsed, &semconv);
        }
        if let Some(exemplars) = &method.exemplars {
            exemplars.record(self.otel.span().span_context(), status, elapsed);
        }
        end_span(
            shared.stability,
            &self.otel,
            name,
            failed,
            received,
            (sent_messages, sent_bytes),
        );
    }
}
