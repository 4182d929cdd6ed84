//! Clients follow a DNS name's changing address set (issue 16): real
//! `sensorhub serve` replicas on 127.0.0.1, 127.0.0.2 and 127.0.0.3, all on
//! one port (loopback aliases need no root), and a client in the test whose
//! resolver answers for one name what the test says.
//!
//! - two replicas added to the answer get calls within a refresh;
//! - a lookup that fails keeps the set and the calls going, says so once
//!   (and once when lookups work again), and the next answer that works is
//!   followed;
//! - a replica removed from the answer gets no more calls, the others keep
//!   their counters, and no call fails in the whole test;
//! - when the name's only replica dies and the name now points elsewhere,
//!   calls move there within 5 s, with the refresh at 600 s; so do they
//!   when every address of a name with two fails its health check;
//! - an answer whose only address does not answer leaves the last endpoint
//!   in place;
//! - the client commands take `--dns-refresh`.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sensorhub_grpc::{
    ClientConfig, SensorClient,
    client::{client_over, replicas::ReplicaSet, resolve::Resolve},
    testing::{CALL_TIMEOUT, reading, unix_now},
};

use crate::support::spawned_server::{Serve, SpawnedServer, command};

const NAME: &str = "replicas.sensorhub.test";
const TOKEN: &str = "dns-refresh-token-5e81";
/// Longer than a server renders its `/metrics` page for (once a second).
const PAGE_AGE: Duration = Duration::from_millis(1500);

/// Answers for [`NAME`] the addresses the test sets (`127.0.0.N`), or fails.
#[derive(Debug, Clone, Default)]
struct TestResolver(Arc<Mutex<Option<Vec<IpAddr>>>>);

impl TestResolver {
    fn answering(hosts: &[u8]) -> TestResolver {
        let resolver = TestResolver::default();
        resolver.answer(hosts);
        resolver
    }

    /// From now on the name has `127.0.0.N` for each `N` of `hosts`.
    fn answer(&self, hosts: &[u8]) {
        let addresses = hosts
            .iter()
            .map(|h| IpAddr::from([127, 0, 0, *h]))
            .collect();
        *self.0.lock().unwrap() = Some(addresses);
    }

    /// From now on every lookup fails.
    fn fail(&self) {
        *self.0.lock().unwrap() = None;
    }
}

impl Resolve for TestResolver {
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        let answer = (host == NAME)
            .then(|| self.0.lock().unwrap().clone())
            .flatten();
        Box::pin(async move {
            let addresses = answer.ok_or_else(|| io::Error::other("no answer (the test says)"))?;
            Ok(addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect())
        })
    }
}

/// A replica (in memory) on `127.0.0.{host}:{port}`.
fn replica(host: u8, port: u16) -> SpawnedServer {
    let mut serve = Serve::without_listen_flags();
    serve
        .command()
        .args(["--insecure", "--memory", "--shutdown-grace", "2s"])
        .args(["--listen", &format!("127.0.0.{host}:{port}")])
        .args(["--http", "127.0.0.1:0"])
        .env("SENSORHUB_TOKENS", TOKEN);
    serve.start()
}

/// Replicas on 127.0.0.1 to `127.0.0.{n}`: the first on port 0, the others
/// on the port it got.
fn replicas(n: u8) -> Vec<SpawnedServer> {
    let first = replica(1, 0);
    let port = first.grpc;
    std::iter::once(first)
        .chain((2..=n).map(|host| replica(host, port)))
        .collect()
}

/// A client of `http://NAME:PORT` through `resolver`, and its replica set.
async fn client(
    resolver: &TestResolver,
    port: u16,
    refresh: Duration,
) -> (ReplicaSet, SensorClient) {
    let mut config = ClientConfig::new(format!("http://{NAME}:{port}"));
    config.token = Some(TOKEN.to_owned());
    config.dns_refresh = refresh;
    config.resolver = Arc::new(resolver.clone());
    let set = ReplicaSet::connect(&config, &config.servers())
        .await
        .expect("connect");
    let channel = set.channel().await.expect("a balancer");
    let client = client_over(channel, &config.target(), config.token.as_deref()).unwrap();
    (set, client)
}

/// The last byte of each endpoint's address, in the set's order.
fn hosts(set: &ReplicaSet) -> Vec<u8> {
    set.endpoints()
        .iter()
        .map(|e| match e.target.address.ip() {
            IpAddr::V4(ip) => ip.octets()[3],
            IpAddr::V6(ip) => panic!("an IPv6 endpoint {ip}"),
        })
        .collect()
}

/// Whether the client has sent calls to each endpoint of the set.
fn sent(set: &ReplicaSet) -> Vec<bool> {
    set.endpoints().iter().map(|e| e.calls() > 0).collect()
}

/// Unary calls one after another until stopped: how many succeeded, and why
/// the others failed.
struct Calls {
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Calls {
    fn start(mut client: SensorClient) -> Calls {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let call = client.send_single_reading(reading("dns-sensor", 21.5, unix_now()));
                    match tokio::time::timeout(CALL_TIMEOUT, call).await {
                        Ok(Ok(_)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(status)) => failed.lock().unwrap().push(format!("{status:?}")),
                        Err(_) => failed.lock().unwrap().push("no answer in time".to_owned()),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Calls {
            ok,
            failed,
            stop,
            task,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the calls; why those that failed did.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self.failed.clone();
        self.task.await.expect("the calls ran");
        failed.lock().unwrap().clone()
    }
}

/// Waits (at most `limit`) until `done`; how long that took.
async fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_replicas_added_to_the_answer_get_calls_within_a_refresh() {
    let servers = replicas(3);
    let resolver = TestResolver::answering(&[1]);
    let refresh = Duration::from_secs(1);
    let (set, client) = client(&resolver, servers[0].grpc, refresh).await;
    let calls = Calls::start(client);
    // Two refreshes with the same answer change nothing.
    tokio::time::sleep(refresh * 2).await;
    assert_eq!(hosts(&set), [1]);
    assert!(servers[0].unary_calls_started() > 0.0);
    assert_eq!(servers[1].unary_calls_started(), 0.0);
    assert_eq!(servers[2].unary_calls_started(), 0.0);

    resolver.answer(&[1, 2, 3]);
    // The client's own counters, which lag nothing; the replicas' below.
    let took = within(
        refresh + Duration::from_secs(2),
        "calls to .2 and .3",
        || sent(&set) == [true, true, true],
    )
    .await;
    assert_eq!(hosts(&set), [1, 2, 3]);
    tokio::time::sleep(PAGE_AGE).await;
    assert!(servers[1].unary_calls_started() > 0.0 && servers[2].unary_calls_started() > 0.0);
    let before = servers[0].unary_calls_started();
    tokio::time::sleep(PAGE_AGE).await;
    let sent: Vec<_> = set.endpoints().iter().map(|e| e.calls()).collect();
    assert!(
        servers[0].unary_calls_started() > before,
        "127.0.0.1 kept: {before} then {}, the client sent {sent:?}",
        servers[0].unary_calls_started()
    );
    let failed = calls.stop().await;
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    eprintln!("the added replicas got calls {took:?} after the answer changed");
}

/// What the client logs on this thread (a current-thread test: its tasks too).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The lines that contain `needle`.
    fn lines(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

impl io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// On one thread, so that the client's tasks log where the test listens.
#[tokio::test(flavor = "current_thread")]
async fn dns_refresh_a_failing_lookup_keeps_the_set_and_the_calls_go_on() {
    let log = Log::default();
    let _capture = log.capture();
    let servers = replicas(3);
    let resolver = TestResolver::answering(&[1, 2]);
    let refresh = Duration::from_millis(500);
    let (set, client) = client(&resolver, servers[0].grpc, refresh).await;
    let calls = Calls::start(client);
    within(Duration::from_secs(5), "calls on .1 and .2", || {
        servers[0].unary_calls_started() > 0.0 && servers[1].unary_calls_started() > 0.0
    })
    .await;

    resolver.fail();
    let (ok, one, two) = (
        calls.ok(),
        servers[0].unary_calls_started(),
        servers[1].unary_calls_started(),
    );
    // Four lookups fail meanwhile.
    tokio::time::sleep(refresh * 4).await;
    assert_eq!(hosts(&set), [1, 2], "the set is kept");
    assert!(calls.ok() > ok + 20, "the calls went on");
    assert!(servers[0].unary_calls_started() > one);
    assert!(servers[1].unary_calls_started() > two);
    // Said once, not at every lookup.
    assert_eq!(log.lines("cannot look the name up again"), 1);

    // The lookups go on, and the first that works again is followed.
    resolver.answer(&[1, 2, 3]);
    within(refresh + Duration::from_secs(2), "calls to .3", || {
        sent(&set) == [true, true, true]
    })
    .await;
    assert_eq!(hosts(&set), [1, 2, 3]);
    tokio::time::sleep(PAGE_AGE).await;
    assert!(servers[2].unary_calls_started() > 0.0);
    assert_eq!(log.lines("the name resolves again"), 1);
    assert_eq!(log.lines("cannot look the name up again"), 1);
    let failed = calls.stop().await;
    assert!(failed.is_empty(), "failed calls: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_a_replica_removed_from_the_answer_gets_no_more_calls_and_none_fails() {
    let servers = replicas(3);
    let resolver = TestResolver::answering(&[1, 2, 3]);
    let refresh = Duration::from_millis(500);
    let (set, client) = client(&resolver, servers[0].grpc, refresh).await;
    let calls = Calls::start(client);
    within(Duration::from_secs(5), "calls on all three", || {
        servers.iter().all(|s| s.unary_calls_started() > 0.0)
    })
    .await;
    let staying: Vec<_> = set.endpoints().into_iter().take(2).collect();

    resolver.answer(&[1, 2]);
    within(
        refresh + Duration::from_secs(2),
        "127.0.0.3 removed",
        || hosts(&set) == [1, 2],
    )
    .await;
    // The calls it had in flight finish, and its page shows them; then
    // nothing more comes.
    tokio::time::sleep(PAGE_AGE).await;
    let removed = servers[2].unary_calls_started();
    let (one, two) = (
        servers[0].unary_calls_started(),
        servers[1].unary_calls_started(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        servers[2].unary_calls_started(),
        removed,
        "calls after removal"
    );
    assert!(servers[0].unary_calls_started() > one);
    assert!(servers[1].unary_calls_started() > two);
    let failed = calls.stop().await;
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    // Those that stay are the same endpoints, their counters counting on
    // from the start: each still says what its replica served.
    tokio::time::sleep(PAGE_AGE).await;
    let now = set.endpoints();
    assert_eq!(now.len(), 2);
    for ((before, after), server) in staying.iter().zip(&now).zip(&servers) {
        assert!(Arc::ptr_eq(before, after), "{:?}", after.target);
        assert_eq!(after.calls() as f64, server.unary_calls_started());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_calls_move_within_5s_when_the_only_replica_dies_and_the_name_moves() {
    let servers = replicas(2);
    let resolver = TestResolver::answering(&[1]);
    // No refresh on a timer within the test: only the failure looks again.
    let (set, client) = client(&resolver, servers[0].grpc, Duration::from_secs(600)).await;
    let calls = Calls::start(client);
    within(Duration::from_secs(5), "calls on .1", || {
        servers[0].unary_calls_started() > 0.0
    })
    .await;
    resolver.answer(&[2]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        servers[1].unary_calls_started(),
        0.0,
        "moved before .1 died"
    );

    servers[0].signal("KILL");
    let took = within(Duration::from_secs(5), "calls on .2", || {
        servers[1].unary_calls_started() > 0.0
    })
    .await;
    assert_eq!(hosts(&set), [2]);
    let ok = calls.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls.ok() > ok, "calls succeed on .2");
    let failed = calls.stop().await;
    eprintln!(
        "calls moved {took:?} after the kill; {} failed meanwhile",
        failed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_an_answer_where_nothing_listens_keeps_the_last_endpoint() {
    let servers = replicas(1);
    let resolver = TestResolver::answering(&[1]);
    let refresh = Duration::from_millis(300);
    let (set, client) = client(&resolver, servers[0].grpc, refresh).await;
    let calls = Calls::start(client);
    // 127.0.0.4 has no server on the port: its connection fails, so it is
    // not admitted, and the one endpoint there is stays.
    resolver.answer(&[4]);
    tokio::time::sleep(refresh * 5).await;
    assert_eq!(hosts(&set), [1]);
    let ok = calls.ok();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls.ok() > ok, "the calls go on");
    let failed = calls.stop().await;
    assert!(failed.is_empty(), "failed calls: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_calls_move_within_5s_when_every_address_of_the_name_fails_its_check() {
    let servers = replicas(3);
    let resolver = TestResolver::answering(&[1, 2]);
    // Two addresses: no call is to a name's only address, so the failed
    // health checks are what looks again.
    let (set, client) = client(&resolver, servers[0].grpc, Duration::from_secs(600)).await;
    let calls = Calls::start(client);
    within(Duration::from_secs(5), "calls to .1 and .2", || {
        sent(&set) == [true, true]
    })
    .await;
    resolver.answer(&[3]);
    servers[0].signal("KILL");
    servers[1].signal("KILL");
    let took = within(Duration::from_secs(5), "calls on .3", || {
        servers[2].unary_calls_started() > 0.0
    })
    .await;
    assert_eq!(hosts(&set), [3]);
    let failed = calls.stop().await;
    eprintln!(
        "calls moved {took:?} after both died; {} failed meanwhile",
        failed.len()
    );
}

/// The command line: `--dns-refresh` on a client command, a name with one
/// address through the balancer (`load` over `localhost`, looked up every
/// 200 ms), and a value that is no duration refused.
#[test]
fn dns_refresh_the_client_commands_take_the_flag() {
    let servers = replicas(1);
    let out = command()
        .args([
            "load",
            "--server",
            &format!("http://localhost:{}", servers[0].grpc),
        ])
        .args(["--token", TOKEN, "--json", "--quiet", "--mode", "unary"])
        .args(["--duration", "1s", "--connections", "2"])
        .args(["--dns-refresh", "200ms"])
        .output()
        .expect("run sensorhub load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{report}");
    assert_eq!(
        endpoints[0]["address"].as_str(),
        Some(format!("127.0.0.1:{}", servers[0].grpc).as_str())
    );
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");

    let out = command()
        .args([
            "stats",
            "--server",
            "http://localhost:1",
            "--dns-refresh",
            "soon",
        ])
        .output()
        .expect("run sensorhub stats");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--dns-refresh"), "{stderr}");
}
