//! Clients that spread their calls over several replicas, follow them as
//! they fail and recover, and follow a name whose addresses change.
//!
//! Why: gRPC keeps one HTTP/2 connection for as long as it works, so a
//! client given one address (or a DNS name that it resolved once) sends
//! every call to the replica it met first. Here every `--server` is resolved
//! to all of its addresses (A and AAAA, through `client/resolve.rs`), each
//! address is an endpoint, and calls go through tower's power-of-two-choices
//! balancer (`tower::balance`, the one inside tonic's
//! `Channel::balance_channel`), which sends each call to the less busy of
//! two endpoints drawn at random.
//!
//! tonic's own balanced channel takes only `Endpoint`s, so nothing could be
//! counted per endpoint; this builds the same balancer over tonic channels
//! wrapped in [`EndpointService`], which counts each endpoint's calls and
//! failures.
//!
//! The set of endpoints is live: names are looked up again
//! (`replicas/refresh.rs`) and each balancer follows the members as they
//! come and go, as it follows their health (tower's `Change::Insert` and
//! `Change::Remove`). A name is dialled by its addresses, with the name kept
//! for the certificate and the calls' `:authority`; a name goes through a
//! balancer even while it has one address, since it may gain more.
//!
//! Health: one checker per endpoint (per process, whatever the number of
//! balancers) calls `grpc.health.v1.Health/Check` for `SensorService` every
//! [`ReplicaSet::HEALTH_INTERVAL`], and at once when a call to the endpoint
//! failed in the transport. An endpoint that answers anything but SERVING,
//! cannot be connected to, or does not answer in time twice in a row, is
//! ejected from every balancer; it is inserted again once a check passes. When no endpoint is healthy, all are
//! kept (Envoy's "panic routing"): calls then fail fast with the transport's
//! error instead of waiting for a replica that may never come.
//!
//! Invariant: a balancer holds every healthy endpoint, or every endpoint when
//! none is healthy; never none.
//! Invariant: with one endpoint there is no checker and no ejection: there is
//! nowhere else to send the calls.
//! Invariant: the set never becomes empty: a lookup that fails keeps the
//! name's last addresses, and a refresh never removes the last endpoint.

mod refresh;

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt as _, future::BoxFuture};
use http::{Request, Response};
use opentelemetry::{KeyValue, global};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{
    body::Body,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{
    Service,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, Load, PendingRequests, pending_requests::Count},
    util::BoxService,
};

use super::{ClientConfig, ConnectError, endpoint, resolve::Server};
use sensorhub_proto::SERVICE_NAME;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Calls queued for a balancer before senders wait (tonic's channel default).
const BUFFER: usize = 1024;

/// One address to send calls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What the endpoint dials: the `--server` URL as given when its host is
    /// an address, else `https://ADDR:PORT` (or `http://`), an address of
    /// the name.
    pub url: String,
    /// The `--server` it came from, as given: messages name it, and calls
    /// to an address of a name carry it as their `:authority`.
    pub server_url: String,
    /// The name its certificate must carry, when `url` is an address of a
    /// name: that name.
    pub tls_name: Option<String>,
    pub address: SocketAddr,
    /// Which `--server` it came from (an index into the list).
    server: usize,
}

impl Target {
    fn new(server: &Server, index: usize, address: SocketAddr) -> Target {
        let name = server.is_name();
        Target {
            url: if name {
                format!("{}://{address}", server.scheme)
            } else {
                server.url.clone()
            },
            server_url: server.url.clone(),
            tls_name: name.then(|| server.host.clone()),
            address,
            server: index,
        }
    }
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
    /// Its last connection attempt was refused (or found no route), and
    /// neither a check nor a call has passed since: the balancers weigh it
    /// heavier than any other endpoint ([`Weighed`]).
    refused: AtomicBool,
    /// The set it belongs to, told when a call to it failed in the
    /// transport (which may mean its name has moved).
    set: Weak<Shared>,
}

impl EndpointStats {
    fn new(target: Target, set: Weak<Shared>) -> Self {
        Self {
            target,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            suspect: Notify::new(),
            refused: AtomicBool::new(false),
            set,
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
    /// (when it was added, or while it was healthy).
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// One endpoint of the set now, as the balancers see it.
#[derive(Debug, Clone)]
struct Member {
    /// Never reused: an address that leaves and comes back is a new member.
    id: u64,
    stats: Arc<EndpointStats>,
    /// Whether it passed its last check (always, while it is alone).
    healthy: bool,
}

/// What the set's clones, its tasks and its endpoints share.
#[derive(Debug)]
struct Shared {
    config: ClientConfig,
    servers: Vec<Server>,
    /// The endpoints now: the refresher adds and removes them, the checkers
    /// set their health, each balancer follows.
    members: watch::Sender<Vec<Member>>,
    next_id: AtomicU64,
    /// The health checker of each member, while there are several.
    checkers: Mutex<BTreeMap<u64, tokio::task::AbortHandle>>,
    /// Look the names up again now (at most once a second).
    resolve_soon: Notify,
    /// With one endpoint, the connection made by [`ReplicaSet::connect`],
    /// for the first balancer to use: a sensor makes one connection, not two.
    spare: Mutex<Option<(u64, Channel)>>,
    /// One `--server`, an address: nothing to look up, nothing to balance.
    direct: bool,
}

impl Shared {
    /// A new member for `target`; one that starts unhealthy counts an ejection.
    fn member(self: &Arc<Self>, target: Target, healthy: bool) -> Member {
        let stats = Arc::new(EndpointStats::new(target, Arc::downgrade(self)));
        if !healthy {
            stats.ejections.fetch_add(1, Ordering::Relaxed);
        }
        Member {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            stats,
            healthy,
        }
    }

    /// Gives every member a health checker while there are several (on
    /// `channels`, connections already made to some of them), and none to
    /// one that is alone, which is then in whatever its last check said.
    fn check_while_several(self: &Arc<Self>, mut channels: BTreeMap<u64, Channel>) {
        let members = self.members.borrow().clone();
        let several = members.len() > 1;
        let mut checkers = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
        checkers.retain(|id, checker| {
            let keep = several && members.iter().any(|m| m.id == *id);
            if !keep {
                checker.abort();
            }
            keep
        });
        if !several {
            drop(checkers);
            self.members
                .send_if_modified(|members| match members.as_mut_slice() {
                    [alone] if !alone.healthy => {
                        alone.healthy = true;
                        true
                    }
                    _ => false,
                });
            return;
        }
        for member in &members {
            if checkers.contains_key(&member.id) {
                continue;
            }
            let channel = match channels.remove(&member.id) {
                Some(channel) => channel,
                None => match target_endpoint(&self.config, &member.stats.target) {
                    Ok(endpoint) => endpoint.connect_lazy(),
                    Err(error) => {
                        tracing::warn!(endpoint = %member.stats.target.address, %error, "cannot check this endpoint's health");
                        continue;
                    }
                },
            };
            let checker = tokio::spawn(check_forever(
                self.clone(),
                member.id,
                channel,
                member.stats.clone(),
            ));
            checkers.insert(member.id, checker.abort_handle());
        }
    }

    /// The members that came from `--server` number `server`.
    fn of_server(&self, server: usize) -> Vec<Member> {
        self.members
            .borrow()
            .iter()
            .filter(|m| m.stats.target.server == server)
            .cloned()
            .collect()
    }

    /// A call to `stats` failed in the transport: if it is its name's only
    /// address, the name may have moved; look it up now.
    fn call_failed(&self, stats: &EndpointStats) {
        let server = stats.target.server;
        if self.servers[server].is_name() && self.of_server(server).len() == 1 {
            self.resolve_soon.notify_one();
        }
    }

    /// Whether `server` is a name every address of which failed its check.
    fn name_failing(&self, server: usize) -> bool {
        self.servers[server].is_name() && self.of_server(server).iter().all(|m| !m.healthy)
    }
}

/// The replicas one client process sends to: their endpoints, counters and health.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    shared: Arc<Shared>,
    /// Held so the set's tasks go on while the set (or a balancer over it) lives.
    members: watch::Receiver<Vec<Member>>,
}

impl ReplicaSet {
    /// How often each endpoint's health is checked.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
    /// How long a check may take before it counts as failed.
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

    /// Resolves `servers`, connects to each endpoint once (so that a wrong
    /// address or certificate shows up here, explained), and starts their
    /// health checks and the names' lookups on the current runtime. Fails
    /// only if no endpoint can be reached; the others start ejected and come
    /// in once they answer.
    ///
    /// An address of a name that refuses at start while another address of
    /// that name answers is dropped: `localhost` is `127.0.0.1` and `::1`,
    /// and a server usually listens on one of them. A `--server` that is
    /// down is kept, ejected, and checked: a replica that comes back.
    pub async fn connect(config: &ClientConfig, servers: &[String]) -> Result<Self, ConnectError> {
        let servers: Vec<Server> = servers
            .iter()
            .map(|s| Server::parse(s))
            .collect::<Result<_, _>>()?;
        let mut targets: Vec<Target> = Vec::new();
        for (index, server) in servers.iter().enumerate() {
            let addresses = server
                .addresses(&*config.resolver)
                .await
                .map_err(|e| server.lookup_error(&e))?;
            for address in addresses {
                if !targets.iter().any(|t| t.address == address) {
                    targets.push(Target::new(server, index, address));
                }
            }
        }
        if targets.is_empty() {
            return Err(ConnectError::Connect {
                server: config.target(),
                reason: "the names resolve to no address".to_owned(),
            });
        }
        let mut endpoints = Vec::with_capacity(targets.len());
        for target in &targets {
            endpoints.push(target_endpoint(config, target)?);
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
                Ok(channel) => kept.push((target, channel, true)),
                Err(e) => {
                    let error = target_error(config, &target, &e);
                    if servers[target.server].is_name() && answered.contains(&target.server) {
                        tracing::debug!(endpoint = %target.address, %error, "an address of the name refuses; left out");
                        continue;
                    }
                    first_error.get_or_insert(error);
                    kept.push((target, endpoint.connect_lazy(), false));
                }
            }
        }
        if answered.is_empty() {
            return Err(first_error.expect("no endpoint answered"));
        }
        let alone = kept.len() == 1;
        let healthy = if alone {
            vec![true]
        } else {
            if let Some(error) = &first_error {
                tracing::warn!(%error, "a replica is unreachable; it gets calls once its health check passes");
            }
            let first = kept.iter().map(|(_, channel, connected)| {
                check(channel.clone()).map(move |result| first_check_passed(&result, *connected))
            });
            futures_util::future::join_all(first).await
        };
        let names = servers.iter().any(Server::is_name);
        let (members, receiver) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            config: config.clone(),
            direct: servers.len() == 1 && !names,
            servers,
            members,
            next_id: AtomicU64::new(0),
            checkers: Mutex::default(),
            resolve_soon: Notify::new(),
            spare: Mutex::default(),
        });
        let mut channels = BTreeMap::new();
        let mut list = Vec::with_capacity(kept.len());
        for ((target, channel, _), healthy) in kept.into_iter().zip(healthy) {
            let member = shared.member(target, healthy);
            channels.insert(member.id, channel);
            list.push(member);
        }
        shared.members.send_replace(list);
        if alone {
            *shared.spare.lock().unwrap_or_else(|e| e.into_inner()) = channels.pop_first();
        } else {
            shared.check_while_several(channels);
        }
        observe(Arc::downgrade(&shared));
        if names {
            tokio::spawn(refresh::follow_names(shared.clone()));
        }
        Ok(Self {
            shared,
            members: receiver,
        })
    }

    /// The endpoints now, in the order they were given, resolved and added.
    pub fn endpoints(&self) -> Vec<Arc<EndpointStats>> {
        self.members
            .borrow()
            .iter()
            .map(|m| m.stats.clone())
            .collect()
    }

    /// A new balancer over the endpoints: its own connection to each,
    /// driven by the current runtime, following their health and the
    /// endpoints that come and go. Connections to healthy endpoints are made
    /// now; to the others, once they are back.
    pub async fn channel(&self) -> Result<Balanced, ConnectError> {
        let config = &self.shared.config;
        let members = self.members.borrow().clone();
        let mut spare = self
            .shared
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if self.shared.direct {
            let stats = members[0].stats.clone();
            let channel = match spare {
                Some((_, channel)) => channel,
                None => target_endpoint(config, &stats.target)?
                    .connect()
                    .await
                    .map_err(|e| target_error(config, &stats.target, &e))?,
            };
            return Ok(Balanced(Route::Direct(EndpointService { channel, stats })));
        }
        let mut opening = Vec::with_capacity(members.len());
        for member in &members {
            let made = match spare.take() {
                Some((id, channel)) if id == member.id => Some(channel),
                other => {
                    spare = other;
                    None
                }
            };
            let endpoint = target_endpoint(config, &member.stats.target)?;
            let (id, healthy, stats) = (member.id, member.healthy, member.stats.clone());
            opening.push(async move {
                let channel = match made {
                    Some(channel) => channel,
                    None if healthy => match endpoint.connect().await {
                        Ok(channel) => channel,
                        Err(_) => endpoint.connect_lazy(),
                    },
                    None => endpoint.connect_lazy(),
                };
                (id, EndpointService { channel, stats })
            });
        }
        let services = futures_util::future::join_all(opening)
            .await
            .into_iter()
            .collect();
        let (changes, discover) = mpsc::unbounded_channel();
        tokio::spawn(follow_members(
            services,
            self.members.clone(),
            config.clone(),
            changes,
        ));
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

/// The endpoint that dials `target`; an address of a name keeps the name
/// as its calls' `:authority`, as gRPC clients send it.
fn target_endpoint(config: &ClientConfig, target: &Target) -> Result<Endpoint, ConnectError> {
    let endpoint = endpoint(&target_config(config, target))?;
    Ok(match http::Uri::try_from(target.server_url.as_str()) {
        Ok(origin) if target.tls_name.is_some() => endpoint.origin(origin),
        _ => endpoint,
    })
}

/// Why connecting to `target` failed, naming the `--server` as given (and
/// the address, when it is one of a name's).
fn target_error(
    config: &ClientConfig,
    target: &Target,
    error: &tonic::transport::Error,
) -> ConnectError {
    let mut explained = ConnectError::connect(&target_config(config, target), error);
    if let ConnectError::Connect { server, .. } = &mut explained
        && target.url != target.server_url
    {
        *server = format!("{} ({})", target.server_url, target.address);
    }
    explained
}

/// What a check says when the endpoint did not answer within
/// [`ReplicaSet::HEALTH_TIMEOUT`].
const NO_ANSWER: &str = "no answer in time";

/// Checks in a row that must go unanswered before a healthy endpoint is
/// ejected for that alone. A late answer says less than a refusal or a
/// NOT_SERVING: on a loaded client or server a healthy replica's answer can
/// miss the second now and then, and ejecting it for one late answer
/// skews the spread over the others.
const LATE_CHECKS_TO_EJECT: u32 = 2;

/// Whether an endpoint comes in healthy after its first check, given
/// whether a connection to it was just made. A late first answer from an
/// endpoint that accepted a connection admits it: one late check ejects
/// nothing later on either ([`LATE_CHECKS_TO_EJECT`]), and left out it
/// would get no calls for a whole interval.
fn first_check_passed(result: &Result<(), String>, connected: bool) -> bool {
    match result {
        Ok(()) => true,
        Err(why) => connected && why == NO_ANSWER,
    }
}

/// One health check: `Ok` if the endpoint says SERVING in time.
async fn check(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: SERVICE_NAME.to_owned(),
    };
    match tokio::time::timeout(ReplicaSet::HEALTH_TIMEOUT, client.check(request)).await {
        Err(_) => Err(NO_ANSWER.to_owned()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(reply)) => Err(format!("{:?}", reply.get_ref().status())),
    }
}

/// Checks member `id` every interval, and at once when a call to it
/// failed, until it leaves the set (its checker is aborted) or the set is
/// gone. A name none of whose addresses passes is looked up again.
async fn check_forever(shared: Arc<Shared>, id: u64, channel: Channel, stats: Arc<EndpointStats>) {
    let mut late_in_a_row = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ReplicaSet::HEALTH_INTERVAL) => {}
            _ = stats.suspect.notified() => {}
        }
        if shared.members.is_closed() {
            return;
        }
        let result = check(channel.clone()).await;
        let late = matches!(&result, Err(why) if why == NO_ANSWER);
        late_in_a_row = if late { late_in_a_row + 1 } else { 0 };
        if late && late_in_a_row < LATE_CHECKS_TO_EJECT {
            // Neither in nor out on this alone: the endpoint stays as it was.
            continue;
        }
        let healthy = result.is_ok();
        if healthy {
            stats.refused.store(false, Ordering::Relaxed);
        }
        let changed = shared.members.send_if_modified(|members| {
            match members.iter_mut().find(|m| m.id == id) {
                Some(member) if member.healthy != healthy => {
                    member.healthy = healthy;
                    true
                }
                _ => false,
            }
        });
        if changed {
            match &result {
                Ok(()) => {
                    tracing::info!(endpoint = %stats.target.address, "endpoint healthy again: it gets calls")
                }
                Err(why) => {
                    stats.ejections.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %stats.target.address, why = %why, "endpoint failed its health check: ejected");
                }
            }
        }
        if !healthy && shared.name_failing(stats.target.server) {
            shared.resolve_soon.notify_one();
        }
    }
}

/// Keeps one balancer's endpoints the members that are healthy (all of
/// them when none is), with a connection of its own to each: made when a
/// member comes, dropped when it goes.
async fn follow_members(
    mut services: BTreeMap<u64, EndpointService>,
    mut members: watch::Receiver<Vec<Member>>,
    config: ClientConfig,
    changes: mpsc::UnboundedSender<Result<Change<u64, Weighed>, Infallible>>,
) {
    let mut inside = BTreeSet::new();
    loop {
        let now = members.borrow_and_update().clone();
        services.retain(|id, _| now.iter().any(|m| m.id == *id));
        for member in &now {
            if services.contains_key(&member.id) {
                continue;
            }
            match target_endpoint(&config, &member.stats.target) {
                Ok(endpoint) => {
                    let service = EndpointService {
                        channel: endpoint.connect_lazy(),
                        stats: member.stats.clone(),
                    };
                    services.insert(member.id, service);
                }
                Err(error) => {
                    tracing::warn!(endpoint = %member.stats.target.address, %error, "cannot open a connection to a new endpoint")
                }
            }
        }
        let up: BTreeSet<u64> = now
            .iter()
            .filter(|m| m.healthy && services.contains_key(&m.id))
            .map(|m| m.id)
            .collect();
        let wanted = if up.is_empty() {
            services.keys().copied().collect()
        } else {
            up
        };
        for &id in wanted.difference(&inside) {
            let service = Weighed::new(services[&id].clone());
            if changes.send(Ok(Change::Insert(id, service))).is_err() {
                return;
            }
        }
        for &id in inside.difference(&wanted) {
            if changes.send(Ok(Change::Remove(id))).is_err() {
                return;
            }
        }
        inside = wanted;
        tokio::select! {
            changed = members.changed() => if changed.is_err() {
                // The set is gone: keep what is in.
                changes.closed().await;
                return;
            },
            _ = changes.closed() => return,
        }
    }
}

/// An endpoint as a balancer holds it: its channel, weighed by calls in
/// flight, and heavier than every endpoint that is not refusing
/// connections while it is.
///
/// Why: a call to a replica that has just died fails at once ("connection
/// refused"), so by calls in flight alone the dead replica is the least
/// busy: the balancer would send it the next calls, and the transparent
/// retries of those it just refused, until its health check ejects it. Both
/// of p2c's two draws are endpoints, so a refusing one is picked only when
/// the other refuses too.
struct Weighed {
    calls: PendingRequests<EndpointService>,
    stats: Arc<EndpointStats>,
}

impl Weighed {
    fn new(service: EndpointService) -> Self {
        Self {
            stats: service.stats.clone(),
            calls: PendingRequests::new(service, CompleteOnResponse::default()),
        }
    }
}

impl Load for Weighed {
    type Metric = (bool, Count);

    fn load(&self) -> (bool, Count) {
        (
            self.stats.refused.load(Ordering::Relaxed),
            self.calls.load(),
        )
    }
}

impl Service<Request<Body>> for Weighed {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = <PendingRequests<EndpointService> as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.calls.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.calls.call(request)
    }
}

/// The OpenTelemetry view of the members' counters, read at each export
/// (nothing is recorded per call but two atomic additions). An endpoint
/// that left the set is no longer reported.
fn observe(set: Weak<Shared>) {
    let meter = global::meter("sensorhub-client");
    let attributes = |s: &EndpointStats| {
        [
            KeyValue::new("server.address", s.target.address.ip().to_string()),
            KeyValue::new("server.port", i64::from(s.target.address.port())),
        ]
    };
    let counter =
        |name: &'static str, description: &'static str, read: fn(&EndpointStats) -> u64| {
            let set = set.clone();
            meter
                .u64_observable_counter(name)
                .with_unit("{call}")
                .with_description(description)
                .with_callback(move |observer| {
                    let Some(set) = set.upgrade() else { return };
                    for member in set.members.borrow().iter() {
                        observer.observe(read(&member.stats), &attributes(&member.stats));
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
                    // Read first: a store on every call would bounce the
                    // line between the threads calling this endpoint.
                    if stats.refused.load(Ordering::Relaxed) {
                        stats.refused.store(false, Ordering::Relaxed);
                    }
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
                    if no_connection(&error) {
                        stats.refused.store(true, Ordering::Relaxed);
                    }
                    stats.suspect.notify_one();
                    if let Some(set) = stats.set.upgrade() {
                        set.call_failed(&stats);
                    }
                    Err(error.into())
                }
            }
        })
    }
}

/// Whether `error` says no connection could be made to the endpoint
/// (refused, no route to it): the call never reached it.
fn no_connection(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, HostUnreachable, NetworkUnreachable};
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable
            )
        })
    })
}

/// A balancer over a [`ReplicaSet`]'s endpoints; clones share it.
#[derive(Clone)]
pub struct Balanced(Route);

#[derive(Clone)]
enum Route {
    /// One address, or a channel made elsewhere: nothing to choose.
    Direct(EndpointService),
    /// Names or several addresses: tower's p2c balancer, behind a buffer
    /// so that clones share it.
    Balancer(Buffer<Request<Body>, BoxFuture<'static, Result<Response<Body>, BoxError>>>),
}

impl Balanced {
    /// Calls on `channel` alone, counted as calls to `address`.
    pub fn direct(channel: Channel, url: &str) -> Self {
        let address = SocketAddr::from(([0, 0, 0, 0], 0));
        Balanced(Route::Direct(EndpointService {
            channel,
            stats: Arc::new(EndpointStats::new(
                Target {
                    url: url.to_owned(),
                    server_url: url.to_owned(),
                    tls_name: None,
                    address,
                    server: 0,
                },
                Weak::new(),
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_told_apart_from_other_transport_errors() {
        // A port nobody listens on: bound, read back, and closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect_lazy();
        let error = tower::ServiceExt::ready(&mut channel)
            .await
            .unwrap()
            .call(Request::new(Body::empty()))
            .await
            .expect_err("nothing listens");
        assert!(no_connection(&error), "{error:?}");
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!no_connection(&reset));
    }
}
