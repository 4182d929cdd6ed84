//! Clients that spread their calls over several replicas, and follow them
//! as they fail and recover.
//!
//! Why: gRPC keeps one HTTP/2 connection for as long as it works, so a
//! client given one address (or a DNS name that it resolved once) sends
//! every call to the replica it met first. Here every `--server` is resolved
//! to all of its addresses (A and AAAA), each address is an endpoint, and
//! calls go through tower's power-of-two-choices balancer (`tower::balance`,
//! the one inside tonic's `Channel::balance_channel`), which sends each call
//! to the less busy of two endpoints drawn at random.
//!
//! tonic's own balanced channel takes only `Endpoint`s, so nothing could be
//! counted per endpoint; this builds the same balancer over tonic channels
//! wrapped in [`EndpointService`], which counts each endpoint's calls and
//! failures.
//!
//! Health: one checker per endpoint (per process, whatever the number of
//! balancers) calls `grpc.health.v1.Health/Check` for `SensorService` every
//! [`ReplicaSet::HEALTH_INTERVAL`], and at once when a call to the endpoint
//! failed in the transport. An endpoint that answers anything but SERVING,
//! or does not answer in time, is ejected from every balancer; it is
//! inserted again once a check passes. When no endpoint is healthy, all are
//! kept (Envoy's "panic routing"): calls then fail fast with the transport's
//! error instead of waiting for a replica that may never come.
//!
//! Invariant: a balancer holds every healthy endpoint, or every endpoint when
//! none is healthy; never none.
//! Invariant: with one endpoint there is no checker and no ejection: there is
//! nowhere else to send the calls.

use std::{
    collections::BTreeSet,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt as _, future::BoxFuture};
use http::{Request, Response};
use opentelemetry::{KeyValue, global};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{body::Body, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{
    Service,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
    util::BoxService,
};

use super::{ClientConfig, ConnectError, endpoint};
use sensorhub_proto::SERVICE_NAME;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Calls queued for a balancer before senders wait (tonic's channel default).
const BUFFER: usize = 1024;

/// One address to send calls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What the endpoint dials: the `--server` URL as given when it has one
    /// address (so errors name it as the user wrote it), else
    /// `https://ADDR:PORT` (or `http://`).
    pub url: String,
    /// The name its certificate must carry, when `url` is an address the
    /// user did not write: the host of the `--server` it came from.
    pub tls_name: Option<String>,
    pub address: SocketAddr,
    /// Which `--server` it came from (an index into the list).
    server: usize,
}

/// Every address of every server URL, in order, without repeats. A host
/// name is resolved to all its addresses (the system resolver: A and AAAA
/// records, `/etc/hosts`).
pub async fn resolve(servers: &[String]) -> Result<Vec<Target>, ConnectError> {
    let mut targets: Vec<Target> = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let uri =
            http::Uri::try_from(server.as_str()).map_err(|_| ConnectError::Url(server.clone()))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("https" | "http")) => s,
            _ => return Err(ConnectError::Url(server.clone())),
        };
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::Url(server.clone()))?
            .trim_matches(['[', ']']);
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let literal = host.parse::<std::net::IpAddr>().ok();
        let mut addresses: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ConnectError::Connect {
                    server: server.clone(),
                    reason: format!("cannot resolve `{host}`: {e}"),
                })?
                .collect(),
        };
        addresses.retain(|a| !targets.iter().any(|t| t.address == *a));
        let alone = addresses.len() == 1;
        for address in addresses {
            targets.push(Target {
                url: if alone {
                    server.clone()
                } else {
                    format!("{scheme}://{address}")
                },
                tls_name: (!alone && literal.is_none()).then(|| host.to_owned()),
                address,
                server: index,
            });
        }
    }
    if targets.is_empty() {
        return Err(ConnectError::Connect {
            server: servers.join(", "),
            reason: "the names resolve to no address".to_owned(),
        });
    }
    Ok(targets)
}

/// What the client saw of one endpoint, shared by every balancer sending to it.
#[derive(Debug)]
pub struct EndpointStats {
    pub target: Target,
    calls: AtomicU64,
    failures: AtomicU64,
    ejections: AtomicU64,
    /// Notified when a call failed in the transport: check health now.
    suspect: Notify,
}

impl EndpointStats {
    fn new(target: Target) -> Self {
        Self {
            target,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            suspect: Notify::new(),
        }
    }

    /// Calls sent to this endpoint (whatever their outcome).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed without an answer from it (no connection, reset),
    /// or whose answer was an error status in the response head.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Times it was taken out of the balancers: its health check failed
    /// (at start, or while it was healthy).
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// The replicas one client process sends to: their endpoints, counters and health.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    config: ClientConfig,
    stats: Arc<[Arc<EndpointStats>]>,
    /// Whether each endpoint passed its last check.
    health: watch::Receiver<Vec<bool>>,
    /// With one endpoint, the connection made by [`ReplicaSet::connect`],
    /// for the first balancer to use: a sensor makes one connection, not two.
    spare: Arc<std::sync::Mutex<Option<Channel>>>,
}

impl ReplicaSet {
    /// How often each endpoint's health is checked.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
    /// How long a check may take before it counts as failed.
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

    /// Resolves `servers`, connects to each endpoint once (so that a wrong
    /// address or certificate shows up here, explained), and starts their
    /// health checks on the current runtime. Fails only if no endpoint can
    /// be reached; the others start ejected and come in once they answer.
    ///
    /// An address of a name that refuses at start while another address of
    /// that name answers is dropped: `localhost` is `127.0.0.1` and `::1`,
    /// and a server usually listens on one of them. A `--server` that is
    /// down is kept, ejected, and checked: a replica that comes back.
    pub async fn connect(config: &ClientConfig, servers: &[String]) -> Result<Self, ConnectError> {
        let targets = resolve(servers).await?;
        let mut endpoints = Vec::with_capacity(targets.len());
        for target in &targets {
            endpoints.push(endpoint(&target_config(config, target))?);
        }
        let probes = futures_util::future::join_all(endpoints.iter().map(|e| e.connect())).await;
        let answered: BTreeSet<usize> = targets
            .iter()
            .zip(&probes)
            .filter(|(_, probe)| probe.is_ok())
            .map(|(t, _)| t.server)
            .collect();
        let mut first_error = None;
        let mut kept = Vec::with_capacity(targets.len());
        for ((probe, endpoint), target) in probes.into_iter().zip(endpoints).zip(targets) {
            match probe {
                Ok(channel) => kept.push((target, channel)),
                Err(e) => {
                    let error = ConnectError::connect(&target_config(config, &target), &e);
                    let from_name = target.tls_name.is_some();
                    if from_name && answered.contains(&target.server) {
                        tracing::debug!(endpoint = %target.address, %error, "an address of the name refuses; left out");
                        continue;
                    }
                    first_error.get_or_insert(error);
                    kept.push((target, endpoint.connect_lazy()));
                }
            }
        }
        if answered.is_empty() {
            return Err(first_error.expect("no endpoint answered"));
        }
        if kept.len() == 1 {
            let (target, channel) = kept.pop().expect("one endpoint");
            let stats: Arc<[Arc<EndpointStats>]> = Arc::new([Arc::new(EndpointStats::new(target))]);
            // No checker: the one endpoint stays in.
            observe(&stats);
            let (_, health) = watch::channel(vec![true]);
            return Ok(Self {
                config: config.clone(),
                stats,
                health,
                spare: Arc::new(std::sync::Mutex::new(Some(channel))),
            });
        }
        if let Some(error) = &first_error {
            tracing::warn!(%error, "a replica is unreachable; it gets calls once its health check passes");
        }
        let first = kept
            .iter()
            .map(|(_, channel)| check(channel.clone()).map(|ok| ok.is_ok()));
        let healthy = futures_util::future::join_all(first).await;
        let mut stats = Vec::with_capacity(kept.len());
        let mut checked = Vec::with_capacity(kept.len());
        for ((target, channel), healthy) in kept.into_iter().zip(&healthy) {
            let endpoint = Arc::new(EndpointStats::new(target));
            if !healthy {
                // Out of the balancers from the start: an ejection too.
                endpoint.ejections.fetch_add(1, Ordering::Relaxed);
            }
            checked.push((endpoint, channel));
        }
        let (report, health) = watch::channel(healthy);
        let report = Arc::new(report);
        for (index, (endpoint, channel)) in checked.into_iter().enumerate() {
            tokio::spawn(check_forever(
                index,
                channel,
                endpoint.clone(),
                report.clone(),
            ));
            stats.push(endpoint);
        }
        let stats: Arc<[Arc<EndpointStats>]> = stats.into();
        observe(&stats);
        Ok(Self {
            config: config.clone(),
            stats,
            health,
            spare: Arc::default(),
        })
    }

    /// The endpoints, in the order they were given and resolved.
    pub fn endpoints(&self) -> &[Arc<EndpointStats>] {
        &self.stats
    }

    /// A new balancer over the endpoints: its own connection to each,
    /// driven by the current runtime, following their health. Connections
    /// to healthy endpoints are made now; to the others, once they are back.
    pub async fn channel(&self) -> Result<Balanced, ConnectError> {
        if let [stats] = &*self.stats {
            let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
            let channel = match spare {
                Some(channel) => channel,
                None => {
                    let config = target_config(&self.config, &stats.target);
                    endpoint(&config)?
                        .connect()
                        .await
                        .map_err(|e| ConnectError::connect(&config, &e))?
                }
            };
            return Ok(Balanced(Route::Direct(EndpointService {
                channel,
                stats: stats.clone(),
            })));
        }
        let healthy = self.health.borrow().clone();
        let opening = self
            .stats
            .iter()
            .zip(healthy)
            .map(|(stats, healthy)| async move {
                let endpoint = endpoint(&target_config(&self.config, &stats.target))?;
                let channel = match healthy {
                    true => match endpoint.connect().await {
                        Ok(channel) => channel,
                        Err(_) => endpoint.connect_lazy(),
                    },
                    false => endpoint.connect_lazy(),
                };
                Ok::<_, ConnectError>(EndpointService {
                    channel,
                    stats: stats.clone(),
                })
            });
        let services = futures_util::future::try_join_all(opening).await?;
        let (changes, discover) = mpsc::unbounded_channel();
        tokio::spawn(follow_health(services, self.health.clone(), changes));
        let balance: Balance<_, Request<Body>> =
            Balance::new(UnboundedReceiverStream::new(discover));
        Ok(Balanced(Route::Balancer(Buffer::new(
            BoxService::new(balance),
            BUFFER,
        ))))
    }
}

/// `config` aimed at `target`.
fn target_config(config: &ClientConfig, target: &Target) -> ClientConfig {
    let mut aimed = config.clone();
    aimed.server = target.url.clone();
    if aimed.tls.domain.is_none() {
        aimed.tls.domain = target.tls_name.clone();
    }
    aimed
}

/// One health check: `Ok` if the endpoint says SERVING in time.
async fn check(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: SERVICE_NAME.to_owned(),
    };
    match tokio::time::timeout(ReplicaSet::HEALTH_TIMEOUT, client.check(request)).await {
        Err(_) => Err("no answer in time".to_owned()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(reply)) => Err(format!("{:?}", reply.get_ref().status())),
    }
}

/// Checks one endpoint every interval, and at once when a call to it failed.
async fn check_forever(
    index: usize,
    channel: Channel,
    stats: Arc<EndpointStats>,
    report: Arc<watch::Sender<Vec<bool>>>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ReplicaSet::HEALTH_INTERVAL) => {}
            _ = stats.suspect.notified() => {}
        }
        if report.is_closed() {
            return;
        }
        let result = check(channel.clone()).await;
        let healthy = result.is_ok();
        let was = report.borrow()[index];
        if healthy != was {
            match &result {
                Ok(()) => {
                    tracing::info!(endpoint = %stats.target.address, "endpoint healthy again: it gets calls")
                }
                Err(why) => {
                    stats.ejections.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %stats.target.address, why = %why, "endpoint failed its health check: ejected");
                }
            }
            report.send_modify(|h| h[index] = healthy);
        }
    }
}

/// Keeps one balancer's endpoints those that are healthy (all of them when none is).
async fn follow_health(
    services: Vec<EndpointService>,
    mut health: watch::Receiver<Vec<bool>>,
    changes: mpsc::UnboundedSender<Result<Change<usize, Weighed>, Infallible>>,
) {
    let mut inside = BTreeSet::new();
    loop {
        let wanted: BTreeSet<usize> = {
            let healthy = health.borrow_and_update();
            let up: BTreeSet<usize> = (0..services.len()).filter(|i| healthy[*i]).collect();
            if up.is_empty() {
                (0..services.len()).collect()
            } else {
                up
            }
        };
        for &index in wanted.difference(&inside) {
            let service =
                PendingRequests::new(services[index].clone(), CompleteOnResponse::default());
            if changes.send(Ok(Change::Insert(index, service))).is_err() {
                return;
            }
        }
        for &index in inside.difference(&wanted) {
            if changes.send(Ok(Change::Remove(index))).is_err() {
                return;
            }
        }
        inside = wanted;
        tokio::select! {
            changed = health.changed() => if changed.is_err() {
                // Nobody reports health any more (one endpoint): keep what is in.
                changes.closed().await;
                return;
            },
            _ = changes.closed() => return,
        }
    }
}

/// An endpoint as a balancer holds it: its channel, weighed by calls in flight.
type Weighed = PendingRequests<EndpointService>;

/// The OpenTelemetry view of the endpoints' counters, read at each export
/// (nothing is recorded per call but two atomic additions).
fn observe(stats: &Arc<[Arc<EndpointStats>]>) {
    let meter = global::meter("sensorhub-client");
    let attributes = |s: &EndpointStats| {
        [
            KeyValue::new("server.address", s.target.address.ip().to_string()),
            KeyValue::new("server.port", i64::from(s.target.address.port())),
        ]
    };
    let counter =
        |name: &'static str, description: &'static str, read: fn(&EndpointStats) -> u64| {
            let stats = stats.clone();
            meter
                .u64_observable_counter(name)
                .with_unit("{call}")
                .with_description(description)
                .with_callback(move |observer| {
                    for s in stats.iter() {
                        observer.observe(read(s), &attributes(s));
                    }
                })
                .build()
        };
    // The SDK keeps the callbacks as long as the meter provider lives.
    let _ = counter(
        "sensorhub.client.endpoint.calls",
        "Calls the client sent to each endpoint (replica address)",
        EndpointStats::calls,
    );
    let _ = counter(
        "sensorhub.client.endpoint.failures",
        "Calls to each endpoint that failed in the transport or with an error status in the response head",
        EndpointStats::failures,
    );
    let _ = counter(
        "sensorhub.client.endpoint.ejections",
        "Times each endpoint failed its health check and was taken out of the balancers",
        EndpointStats::ejections,
    );
}

/// One endpoint's channel, counting its calls.
#[derive(Debug, Clone)]
pub struct EndpointService {
    channel: Channel,
    stats: Arc<EndpointStats>,
}

impl Service<Request<Body>> for EndpointService {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let stats = self.stats.clone();
        let call = self.channel.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    let refused = response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|code| code.as_bytes() != b"0");
                    if refused {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response)
                }
                Err(error) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    stats.suspect.notify_one();
                    Err(error.into())
                }
            }
        })
    }
}

/// A balancer over a [`ReplicaSet`]'s endpoints; clones share it.
#[derive(Clone)]
pub struct Balanced(Route);

#[derive(Clone)]
enum Route {
    /// One endpoint, or a channel made elsewhere: nothing to choose.
    Direct(EndpointService),
    /// Several: tower's p2c balancer, behind a buffer so that clones share it.
    Balancer(Buffer<Request<Body>, BoxFuture<'static, Result<Response<Body>, BoxError>>>),
}

impl Balanced {
    /// Calls on `channel` alone, counted as calls to `address`.
    pub fn direct(channel: Channel, url: &str) -> Self {
        let address = SocketAddr::from(([0, 0, 0, 0], 0));
        Balanced(Route::Direct(EndpointService {
            channel,
            stats: Arc::new(EndpointStats::new(Target {
                url: url.to_owned(),
                tls_name: None,
                address,
                server: 0,
            })),
        }))
    }
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Balanced")
    }
}

impl Service<Request<Body>> for Balanced {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.0 {
            Route::Direct(service) => service.poll_ready(cx),
            Route::Balancer(balancer) => balancer.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match &mut self.0 {
            Route::Direct(service) => service.call(request),
            Route::Balancer(balancer) => Box::pin(balancer.call(request)),
        }
    }
}
