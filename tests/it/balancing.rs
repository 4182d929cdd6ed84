//! Clients spread over replicas (issue 16): three `sensorhub serve` replicas
//! on one real PostgreSQL, and `sensorhub load` given all three as
//! `--server`s.
//!
//! - its calls are spread within ±20 % of a third on each;
//! - a replica killed mid-run costs no acknowledged reading (the store holds
//!   at least what load says was acknowledged), the run goes on through the
//!   other two, and the replica started again on the same port gets calls
//!   again within 10 s;
//! - a sensor given a replica that is down sends everything to the other,
//!   and exports its per-endpoint counters over OTLP.

use std::{
    collections::BTreeMap,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use sensorhub_grpc::testing::fresh_database_url;
use sensorhub_telemetry::otlp_receiver::OtlpReceiver;
use serde_json::Value;

use crate::support::{
    ports::ClosedPort,
    spawned_server::{Serve, SpawnedServer, command, sensorhub},
};

const TOKEN: &str = "balancing-token-4b1e";

/// A replica on the database at `url`, listening on `port` (0: any).
fn replica(url: &str, port: u16) -> SpawnedServer {
    let mut serve = Serve::without_listen_flags();
    serve
        .command()
        .args(["--insecure", "--shutdown-grace", "2s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--http", "127.0.0.1:0"])
        .env("SENSORHUB_DATABASE_URL", url)
        .env("SENSORHUB_TOKENS", TOKEN);
    serve.start()
}

async fn replicas(url: &str) -> Vec<SpawnedServer> {
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.to_owned();
            tokio::task::spawn_blocking(move || replica(&url, 0))
        })
        .collect();
    let mut servers = Vec::new();
    for start in starts {
        servers.push(start.await.expect("replica started"));
    }
    servers
}

/// `sensorhub load --json` over every replica, started in the background.
fn start_load(servers: &[SpawnedServer], args: &[&str]) -> Child {
    let mut load = command();
    load.arg("load");
    for server in servers {
        load.args(["--server", &server.url()]);
    }
    load.args(["--token", TOKEN, "--json", "--quiet"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sensorhub load")
}

/// The report of a finished load run.
fn report(load: Child) -> Value {
    let out = load.wait_with_output().expect("load ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "load printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Calls per endpoint in the report, keyed by port.
fn calls_by_port(report: &Value) -> Vec<(u16, u64)> {
    report["endpoints"]
        .as_array()
        .expect("endpoints in the report")
        .iter()
        .map(|e| {
            let address: std::net::SocketAddr = e["address"].as_str().unwrap().parse().unwrap();
            (address.port(), e["calls"].as_u64().unwrap())
        })
        .collect()
}

/// Readings the store holds for sensors named `prefix…`, read through `server`.
fn stored(server: &SpawnedServer, prefix: &str) -> u64 {
    let out = sensorhub(&[
        "stats",
        "--server",
        &server.url(),
        "--token",
        TOKEN,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|s| s["sensor_id"].as_str().unwrap().starts_with(prefix))
        .map(|s| s["count"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_load_over_three_replicas_spreads_its_calls_evenly() {
    let url = fresh_database_url().await;
    let servers = replicas(&url).await;
    let load = start_load(
        &servers,
        &[
            "--mode",
            "unary",
            "--duration",
            "4s",
            "--connections",
            "4",
            "--sensors",
            "20",
            "--sensor-prefix",
            "spread-",
        ],
    );
    let report = tokio::task::spawn_blocking(move || report(load))
        .await
        .unwrap();
    let by_port = calls_by_port(&report);
    assert_eq!(by_port.len(), 3, "{report}");
    let all: u64 = by_port.iter().map(|(_, n)| n).sum();
    assert!(all >= 300, "only {all} calls: {report}");
    for (port, calls) in &by_port {
        let share = *calls as f64 / all as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.2 / 3.0,
            "replica on port {port} got {calls} of {all} calls ({:.1} %): {report}",
            share * 100.0
        );
    }
    // Each replica served what the client counted for it.
    for server in &servers {
        let (_, calls) = by_port.iter().find(|(p, _)| *p == server.grpc).unwrap();
        assert_eq!(
            server.unary_calls_started(),
            *calls as f64,
            "port {}",
            server.grpc
        );
    }
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_a_replica_killed_mid_run_loses_no_acknowledged_reading_and_gets_calls_again() {
    let url = fresh_database_url().await;
    let mut servers = replicas(&url).await;
    let load = start_load(
        &servers,
        &[
            "--mode",
            "mix",
            "--mix",
            "4,1,0,0",
            "--batch",
            "20",
            "--duration",
            "12s",
            "--connections",
            "4",
            "--sensors",
            "20",
            "--sensor-prefix",
            "killed-",
            "--max-error-rate",
            "1",
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let port = servers[1].grpc;
    servers[1].signal("KILL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let url_again = url.clone();
    let restarted = tokio::task::spawn_blocking(move || replica(&url_again, port))
        .await
        .unwrap();
    let back_at = Instant::now();
    // The restarted replica is a new process: every call it counts came
    // after it started.
    let mut back_within = None;
    while back_at.elapsed() < Duration::from_secs(10) {
        if restarted.unary_calls_started() > 0.0 {
            back_within = Some(back_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back_within = back_within.expect("the restarted replica got no call within 10 s");
    servers[1] = restarted;

    let report = tokio::task::spawn_blocking(move || report(load))
        .await
        .unwrap();
    let acknowledged = report["readings_sent"].as_u64().unwrap();
    let stored = stored(&servers[0], "killed-");
    assert!(
        stored >= acknowledged,
        "acknowledged {acknowledged} readings, the store holds {stored}: {report}"
    );
    // The run went on: the other two served calls all along, and only
    // calls in flight on the killed replica may have failed.
    let ok = report["ok"].as_u64().unwrap();
    let failed = report["failed"].as_u64().unwrap();
    assert!(ok >= 500, "only {ok} calls succeeded: {report}");
    assert!(
        failed <= 50,
        "{failed} calls failed, more than those in flight at the kill: {report}"
    );
    // None failed for want of a connection: a call the killed replica
    // refused never reached it, and went to another one.
    assert!(
        !report["error_messages"].to_string().contains("connect"),
        "calls failed because the killed replica refused them: {report}"
    );
    let by_port = calls_by_port(&report);
    let killed = report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"].as_str() == Some(&format!("127.0.0.1:{port}")))
        .unwrap();
    assert!(killed["ejections"].as_u64().unwrap() >= 1, "{report}");
    for server in [&servers[0], &servers[2]] {
        let (_, calls) = by_port.iter().find(|(p, _)| *p == server.grpc).unwrap();
        assert!(
            *calls > ok / 4,
            "port {} got {calls}: {report}",
            server.grpc
        );
    }
    eprintln!(
        "restarted replica back within {back_within:?}; {failed} failed of {}",
        ok + failed
    );
}

/// A sensor given a replica that serves and one that is down: every call goes
/// to the one that serves, and its OTLP metrics say so per endpoint: calls,
/// failures, and the ejection of the one that is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_a_sensor_skips_a_replica_that_is_down_and_exports_per_endpoint_metrics() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let data = tempfile::tempdir().unwrap();
    let up = SpawnedServer::start(data.path(), TOKEN, &[]);
    let down = ClosedPort::new();
    let out = command()
        .args(["sensor", "--server", &up.url(), "--server", &down.url()])
        .args(["--mode", "unary", "--count", "6", "--interval-max", "10ms"])
        .args(["--sensor-id", "balanced-sensor"])
        .env("SENSORHUB_TOKEN", TOKEN)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .output()
        .expect("run sensorhub sensor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&up, "balanced-sensor"), 6);

    let by_port = |name: &str| {
        let metrics = receiver.metrics();
        let metric = metrics
            .iter()
            .rev()
            .find(|m| m.service_name == "sensorhub-sensor" && m.name() == name)?;
        let points: BTreeMap<u16, f64> = metric
            .sum_points()
            .into_iter()
            .map(|(attributes, value)| {
                assert_eq!(
                    attributes.get("server.address").map(String::as_str),
                    Some("127.0.0.1")
                );
                (attributes["server.port"].parse().unwrap(), value)
            })
            .collect();
        Some(points)
    };
    let calls = receiver
        .wait_for(Duration::from_secs(20), |_| {
            by_port("sensorhub.client.endpoint.calls")
        })
        .await
        .expect("sensorhub.client.endpoint.calls exported");
    assert_eq!(calls, BTreeMap::from([(up.grpc, 6.0), (down.port, 0.0)]));
    let ejections = by_port("sensorhub.client.endpoint.ejections").expect("ejections exported");
    assert_eq!(
        ejections,
        BTreeMap::from([(up.grpc, 0.0), (down.port, 1.0)])
    );
    let failures = by_port("sensorhub.client.endpoint.failures").expect("failures exported");
    assert_eq!(failures, BTreeMap::from([(up.grpc, 0.0), (down.port, 0.0)]));
}
