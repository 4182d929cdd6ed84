//! A collector that is down (connection refused) or black-holed (accepts
//! and never answers) must not hurt the service: calls keep succeeding at
//! their usual latency, what cannot be exported is counted as dropped
//! (`otel_sdk_exporter_span_exported_total{error_type=..}` on `/metrics`),
//! and SIGTERM still ends the process within a bounded time.

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use sensorhub_grpc::ClientConfig;
use sensorhub_proto::SensorReading;
use spawned_server::SpawnedServer;

use crate::support::spawned_server;
use crate::support::{http, ports::ClosedPort};

const TOKEN: &str = "fault-test-token-77e2";

fn exporting_to(endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
    ]
}

/// Makes `calls` unary calls; every one must succeed, each well within a second.
async fn calls_succeed(url: &str, calls: usize) -> Duration {
    let mut config = ClientConfig::new(url);
    config.token = Some(TOKEN.to_owned());
    let mut client = sensorhub_grpc::connect(&config).await.expect("connect");
    let started = Instant::now();
    for i in 0..calls {
        let call = client.send_single_reading(SensorReading {
            sensor_id: "fault-1".into(),
            temperature: 20.0 + i as f64 / 10.0,
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        });
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .expect("a call is not held up by telemetry")
            .expect("the call succeeds");
    }
    started.elapsed()
}

async fn survives(endpoint: String) {
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, &exporting_to(endpoint));
    let took = calls_succeed(&server.url(), 200).await;
    assert!(took < Duration::from_secs(10), "200 calls took {took:?}");

    // The failed exports are counted, visible on /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = http::get(server.http, "/metrics");
        assert_eq!(code, 200);
        if body.lines().any(|l| {
            l.starts_with("otel_sdk_exporter_span_exported_total") && l.contains("error_type=")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // More calls, still fine, then a bounded shutdown.
    calls_succeed(&server.url(), 50).await;
    let (out, took) = server.terminate(Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        log.matches("telemetry export failed").count() <= 3,
        "export warnings are rate-limited: {log}"
    );
    assert!(!log.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_down_costs_nothing_but_dropped_telemetry() {
    let collector = ClosedPort::new();
    survives(collector.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_black_holed_costs_nothing_but_dropped_telemetry() {
    // Accepts connections and never says a word.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming() {
            held.push(stream);
        }
    });
    survives(endpoint).await;
}
