//! Assembles and runs the gRPC server: the listener (connection limits,
//! TLS, the HTTP/2 preface), each connection's life (`connection.rs`), token
//! check and rate limit, message limits and the request budget, health,
//! reflection, the HTTP health listener, reloads, and graceful shutdown.
//!
//! tonic provides the services and their router; hyper serves the
//! connections (see `connection.rs` for why not tonic's own server).
//!
//! Shutdown, in order (tonic has no drain deadline of its own, tonic#1820):
//! 1. health turns `NOT_SERVING`, `/readyz` answers 503, the listener stops
//!    accepting and open connections get GOAWAY (new calls: `UNAVAILABLE`);
//!    follow streams end at once with `UNAVAILABLE` (they never end by themselves);
//! 2. in-flight calls have `shutdown_grace` to finish normally;
//! 3. then every stream still open is told to stop: it commits what it
//!    received and ends with `UNAVAILABLE` stating how much was stored;
//! 4. after a short last wait, remaining connections are dropped;
//! 5. the store commits what is queued, checkpoints and closes.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sensorhub_core::{Readiness, SharedStore};
use sensorhub_proto::{
    FILE_DESCRIPTOR_SET, SERVICE_NAME, sensor_service_server::SensorServiceServer,
};
use sensorhub_rpc_telemetry::{ExemplarReservoir, GrpcServerLayer, LiveRecorders, live::TraceRing};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    codec::CompressionEncoding,
    service::{RecoverError, Routes, interceptor::InterceptedService},
};
use tonic_health::ServingStatus;
use tower::{ServiceBuilder, util::BoxCloneSyncService};

use crate::{
    auth::{RateLimit, TokenCheck, TokenSet},
    call_policy::{CallPolicyLayer, HTTP2_MAX_HEADER_LIST_BYTES, Requests},
    connection::{Http2Server, Http2Settings},
    connection_metrics::ConnectionMetrics,
    deadline::HeadDeadline,
    debug_pprof::{self, Profiler},
    health_http::{self, HttpLimits, MetricsEndpoint},
    listener::{self, ConnectionLimits, Connections, ServerTls},
    live_view,
    optional_metrics::OptionalMetrics,
    request_budget::{MethodShape, RequestBudgetLayer, RequestLimits},
    service::{Lifecycle, SensorHub, ServiceConfig},
    tls::{ServerTlsFiles, TlsFileError},
};

/// Everything `sensorhub serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `None`: plaintext. Only ever `None` because the operator said `--insecure`.
    pub tls: Option<ServerTlsFiles>,
    /// `None`: every caller accepted. Only ever `None` because the operator said `--no-auth`.
    pub tokens: Option<TokenSet>,
    /// The HTTP listener for health and metrics. `None`: off.
    pub http: Option<SocketAddr>,
    /// What `/metrics` on the HTTP listener serves. `None`: no `/metrics`.
    pub metrics: Option<MetricsEndpoint>,
    /// The HTTP listener's connection limit and header-read timeout.
    pub http_limits: HttpLimits,
    /// Where the telemetry layer keeps the exemplars of the call-duration
    /// histograms (the same reservoir the `/metrics` renderer reads).
    /// `None`: no exemplars.
    pub exemplars: Option<Arc<ExemplarReservoir>>,
    pub service: ServiceConfig,
    pub shutdown_grace: Duration,
    /// HTTP/2 streams (concurrent calls) per connection.
    pub max_concurrent_streams: u32,
    /// Ping idle connections this often; drop them if no answer within `keepalive_timeout`.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Open connections (in all, per address), the handshake deadline and the idle closes.
    pub connections: ConnectionLimits,
    /// Calls per second per token. `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// What the server holds of request messages still arriving, and for how long.
    pub requests: RequestLimits,
    /// The optional connection metrics switched on (`--enable-metrics`).
    pub optional_metrics: OptionalMetrics,
    /// Serves `/debug/pprof/profile` on the HTTP listener (`--pprof`).
    /// `None`: no such route.
    pub profiler: Option<Arc<dyn Profiler>>,
    /// The live view's recorders (calls in flight, rpcz, recent traces).
    /// `None`: off, and the telemetry layer records only metrics and spans.
    pub live: Option<LiveSettings>,
}

/// What the live view is built from.
#[derive(Debug, Clone, Default)]
pub struct LiveSettings {
    /// The trace ring the telemetry pipeline feeds (`None`: tracing is off;
    /// the ring then holds only the failed calls the server layer saw).
    pub traces: Option<TraceRing>,
    /// Jaeger's base URL (`http://localhost:16686`): each trace links there.
    pub jaeger_url: Option<String>,
}

/// The decode limit of health and reflection: their requests are a service
/// name or a symbol, a few hundred bytes at most. Anyone may call them, so
/// they must not let a stranger make the server reserve more.
pub const SMALL_MESSAGE_BYTES: usize = 1024;

/// The HTTP/2 windows for a decode limit: a stream may send one whole
/// message (and the start of the next) without waiting for a window update,
/// and a connection four such streams. h2 holds at most the connection
/// window of request bytes that no handler has read yet.
fn http2_windows(max_message_bytes: usize) -> (u32, u32) {
    let stream = (max_message_bytes + 5)
        .next_power_of_two()
        .clamp(65_535, 1 << 24);
    (stream as u32, (stream * 4) as u32)
}

impl ServerConfig {
    /// Secure defaults except for TLS and tokens, which the caller must supply.
    pub fn new(listen: SocketAddr, tls: Option<ServerTlsFiles>, tokens: Option<TokenSet>) -> Self {
        Self {
            listen,
            tls,
            tokens,
            http: None,
            metrics: None,
            http_limits: HttpLimits::default(),
            exemplars: None,
            service: ServiceConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            max_concurrent_streams: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            connections: ConnectionLimits::default(),
            rate_limit: None,
            requests: RequestLimits::default(),
            optional_metrics: OptionalMetrics::default(),
            profiler: None,
            live: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    #[error("reflection could not be set up: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("closing the store failed: {0}")]
    Store(#[from] sensorhub_core::StoreError),
}

/// A server that is running; shut it down with [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
    reload: Reload,
    live: Option<LiveRecorders>,
}

/// What can be replaced while the server runs.
#[derive(Debug, Clone)]
pub struct Reload {
    tls: Option<ServerTls>,
    tokens: TokenCheck,
}

impl Reload {
    /// Reads the TLS certificate, key (and client CA) files again; new
    /// connections use them. `Ok(false)`: the server runs without TLS.
    pub fn tls(&self) -> Result<bool, TlsFileError> {
        match &self.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Replaces the accepted tokens for every call from now on. `false`:
    /// the server runs without tokens (`--no-auth`).
    pub fn tokens(&self, tokens: TokenSet) -> bool {
        self.tokens.replace(tokens)
    }
}

impl RunningServer {
    /// What can be reloaded while the server runs (on SIGHUP).
    pub fn reload(&self) -> Reload {
        self.reload.clone()
    }

    /// The address the gRPC listener is bound to (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The live view's recorders, when they are on.
    pub fn live(&self) -> Option<&LiveRecorders> {
        self.live.as_ref()
    }

    /// The address of the HTTP health listener, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A token that starts the graceful shutdown when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after someone cancelled [`stop_token`](Self::stop_token)).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Health follows the store: `NOT_SERVING` while it cannot serve (a shared
/// database unreachable), `SERVING` again once it can; from the drain on,
/// the shutdown owns health.
async fn follow_store_readiness(
    health: tonic_health::server::HealthReporter,
    mut readiness: tokio::sync::watch::Receiver<Readiness>,
    draining: CancellationToken,
) {
    loop {
        let status = match &*readiness.borrow_and_update() {
            Readiness::Ready => ServingStatus::Serving,
            Readiness::Unavailable(_) => ServingStatus::NotServing,
        };
        if draining.is_cancelled() {
            return;
        }
        health.set_service_status("", status).await;
        health.set_service_status(SERVICE_NAME, status).await;
        if draining.is_cancelled() {
            // The drain began meanwhile and may have been overwritten.
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                .await;
            return;
        }
        tokio::select! {
            changed = readiness.changed() => if changed.is_err() { return },
            _ = draining.cancelled() => return,
        }
    }
}

/// Binds the listeners and starts serving. The server owns `store` and
/// closes it when it stops.
pub async fn start(config: ServerConfig, store: SharedStore) -> Result<RunningServer, ServeError> {
    let max_message_bytes = config.service.max_message_bytes;
    let (stream_window, connection_window) = http2_windows(max_message_bytes);
    let http2 = Http2Settings {
        max_concurrent_streams: config.max_concurrent_streams,
        keepalive_interval: config.keepalive_interval,
        keepalive_timeout: config.keepalive_timeout,
        stream_window,
        connection_window,
        // Oversized metadata reaches the call policy, which refuses it with
        // a status (call_policy.rs).
        max_header_list_size: HTTP2_MAX_HEADER_LIST_BYTES,
    };
    // The listener does the handshakes (see listener.rs), not tonic.
    let tls = config.tls.clone().map(ServerTls::load).transpose()?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;

    let life = Lifecycle::default();
    let (health, health_service) = tonic_health::server::health_reporter();
    let health_service = health_service.max_decoding_message_size(SMALL_MESSAGE_BYTES);
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    let reflection_v1 = reflection()
        .build_v1()?
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);
    let reflection_v1alpha = reflection()
        .build_v1alpha()?
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);

    tokio::spawn(follow_store_readiness(
        health.clone(),
        store.readiness(),
        life.draining.clone(),
    ));

    let hub = SensorHub::new(store.clone(), config.service.clone(), life.clone());
    let sensors = SensorServiceServer::new(hub)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd);
    let token_check = TokenCheck::new(config.tokens.clone(), config.rate_limit);
    let sensors = InterceptedService::new(sensors, token_check.clone());

    let methods = registered_methods(max_message_bytes);
    let live = config.live.as_ref().map(|settings| {
        LiveRecorders::new(
            methods.iter().map(|m| &m.path),
            settings.traces.clone().unwrap_or_default(),
        )
    });
    let mut telemetry = GrpcServerLayer::new(
        methods.iter().map(|m| m.path.clone()),
        config.exemplars.as_deref(),
    );
    if let Some(live) = &live {
        telemetry = telemetry.with_live(live.clone());
    }
    let routes = Routes::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(sensors)
        .clone()
        .routes()
        .prepare();
    let calls = ServiceBuilder::new()
        .layer(BoxCloneSyncService::layer())
        .map_response(|response: http::Response<_>| response.map(Body::new))
        // As tonic's own server: an error becomes a status, and a call's
        // grpc-timeout bounds its response head (deadline.rs).
        .layer_fn(RecoverError::new)
        .layer_fn(HeadDeadline::new)
        // Outermost of ours: it sees every call, also those refused by the
        // token check or by the call policy, with their final status.
        .layer(telemetry)
        // Right around the router: 415 for a non-gRPC content-type, and
        // clear statuses for too much metadata, a missing or second unary
        // message, an unknown path or an over-size message (see call_policy.rs).
        .layer(CallPolicyLayer::new(
            methods
                .iter()
                .map(|m| (&m.path, m.requests, m.max_message_bytes)),
        ))
        // Every request body: the server-wide budget for partial messages
        // and their deadline (see request_budget.rs).
        .layer(RequestBudgetLayer::new(
            config.requests,
            methods.iter().map(|m| (&m.path, m.shape())),
        ))
        .service(routes);

    let stop = CancellationToken::new();
    // The HTTP listener outlives the drain: `/readyz` answers 503 while
    // calls finish, and `/metrics` shows the drain.
    let http_stop = CancellationToken::new();
    let view = match (&live, &config.live) {
        (Some(recorders), Some(settings)) => Some(
            Arc::new(live_view::LiveView::new(
                live_view::Sources {
                    store: store.clone(),
                    recorders: recorders.clone(),
                    jaeger: settings.jaeger_url.clone(),
                },
                token_check.clone(),
                life.draining.clone(),
            ))
            .routes(),
        ),
        _ => None,
    };
    let (http_addr, http_task) = match config.http {
        Some(addr) => {
            let (addr, task) = health_http::start(
                addr,
                config.http_limits,
                life.draining.clone(),
                store.readiness(),
                http_stop.clone(),
                config.metrics.clone(),
                config
                    .profiler
                    .clone()
                    .map(|profiler| {
                        debug_pprof::routes(profiler, token_check.clone(), life.draining.clone())
                    })
                    .into_iter()
                    .chain(view)
                    .collect(),
            )
            .await?;
            (Some(addr), Some(task))
        }
        None => (None, None),
    };

    tracing::info!(
        grpc = %grpc_addr,
        http = ?http_addr,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        auth = config.tokens.is_some(),
        "sensorhub serving"
    );

    let grace = config.shutdown_grace;
    let reload_tls = tls.clone();
    let connections = Connections::new();
    let connection_metrics = ConnectionMetrics::new(config.optional_metrics);
    let http2 = Http2Server::new(
        http2,
        calls,
        config.connections,
        stop.clone(),
        connections.force_token(),
        connection_metrics.clone(),
    );
    // Stops accepting, and closes every connection gracefully, when `stop` is cancelled.
    listener::accept(
        listener,
        config.connections,
        tls,
        stop.clone(),
        http2,
        &connections,
        connection_metrics,
    );
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tracing::info!(grace = ?grace, "shutting down: draining calls");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                .await;
            life.draining.cancel();
            if tokio::time::timeout(grace, connections.closed())
                .await
                .is_err()
            {
                tracing::warn!("grace period over: ending the calls still open");
                life.cancelled.cancel();
                if tokio::time::timeout(Duration::from_secs(2), connections.closed())
                    .await
                    .is_err()
                {
                    tracing::warn!("closing connections that are still open");
                    connections.force_close();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), connections.closed()).await;
                }
            }
            life.cancelled.cancel();
            http_stop.cancel();
            if let Some(task) = http_task {
                let _ = task.await;
            }
            let closed = store.close().await;
            tracing::info!("sensorhub stopped");
            closed?;
            Ok(())
        }
    });

    Ok(RunningServer {
        grpc_addr,
        http_addr,
        stop,
        task,
        reload: Reload {
            tls: reload_tls,
            tokens: token_check,
        },
        live,
    })
}

/// The encoded descriptor sets of every service the router serves:
/// SensorService, health (tonic-health ships its set) and both reflection
/// versions. Reflection lists and describes all of them, so a service added
/// to the router goes here too.
const SERVED_DESCRIPTOR_SETS: [&[u8]; 4] = [
    FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// A reflection builder that knows every served service, for v1 and
/// v1alpha alike (by default each version would list only itself).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    SERVED_DESCRIPTOR_SETS.iter().fold(
        tonic_reflection::server::Builder::configure().include_reflection_service(false),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    )
}

/// A method this server registers: its path, `package.Service/Method`, how
/// many request messages it takes, and its decode limit.
#[derive(Debug)]
struct RegisteredMethod {
    path: String,
    requests: Requests,
    max_message_bytes: usize,
}

impl RegisteredMethod {
    /// What the request budget needs to know of it.
    fn shape(&self) -> MethodShape {
        MethodShape {
            client_streaming: self.requests == Requests::Stream,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// Every method this server registers: the SensorService's from its
/// descriptor set (decode limit `max_message_bytes`), then health and
/// reflection ([`SMALL_MESSAGE_BYTES`]). Telemetry records any other path
/// as `other`.
fn registered_methods(max_message_bytes: usize) -> Vec<RegisteredMethod> {
    use prost::Message as _;
    let small = |path: &str, requests| RegisteredMethod {
        path: path.to_owned(),
        requests,
        max_message_bytes: SMALL_MESSAGE_BYTES,
    };
    let mut methods = vec![
        small("grpc.health.v1.Health/Check", Requests::One),
        small("grpc.health.v1.Health/Watch", Requests::One),
        small(
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Requests::Stream,
        ),
        small(
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            Requests::Stream,
        ),
    ];
    let files = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into sensorhub-proto decodes");
    for file in &files.file {
        let package = file.package();
        for service in &file.service {
            let service_path = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            for method in &service.method {
                let requests = if method.client_streaming() {
                    Requests::Stream
                } else {
                    Requests::One
                };
                methods.push(RegisteredMethod {
                    path: format!("{service_path}/{}", method.name()),
                    requests,
                    max_message_bytes,
                });
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    #[test]
    fn registered_methods_are_the_wire_paths_with_their_limits() {
        let methods = super::registered_methods(65_536);
        use super::Requests::{One, Stream};
        for expected in [
            ("SensorService/SendSingleReading", One, 65_536),
            ("SensorService/StreamSensorReadings", Stream, 65_536),
            ("SensorService/GetSensorReadings", One, 65_536),
            ("SensorService/SensorChat", Stream, 65_536),
            ("SensorService/GetSensorStats", One, 65_536),
            ("grpc.health.v1.Health/Check", One, 1_024),
            (
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                Stream,
                1_024,
            ),
        ] {
            assert!(
                methods
                    .iter()
                    .any(|m| (m.path.as_str(), m.requests, m.max_message_bytes) == expected),
                "{expected:?} in {methods:?}"
            );
        }
    }

    #[test]
    fn windows_hold_a_whole_message() {
        assert_eq!(super::http2_windows(65_536), (131_072, 524_288));
        assert_eq!(super::http2_windows(100), (65_535, 262_140));
    }
}
