//! A collector that is down (connection refused) or black-holed (accepts
//! and never answers) must not hurt the service: calls keep succeeding at
//! their usual latency, what cannot be exported is counted as dropped
//! (`otel_sdk_exporter_span_exported_total{error_type=..}` on `/metrics`),
//! and SIGTERM still ends the process within a bounded time. What a full
//! export queue drops before any export is tried is counted too
//! (`otel_sdk_processor_{span,log}_processed_total{error_type="queue_full"}`).

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
            l.starts_with("otel_sdk_exporter_span_exported_total")
                && l.contains("error_type=")
                // The semconv component of the exporter (OTLP/gRPC here).
                && l.contains("otel_component_type=\"otlp_grpc_span_exporter\"")
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

/// A collector that accepts connections and never says a word: its endpoint.
fn black_hole() -> String {
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming() {
            held.push(stream);
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_black_holed_costs_nothing_but_dropped_telemetry() {
    survives(black_hole()).await;
}

/// The sum of the `name` series on a Prometheus page whose labels include `label`.
fn total(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_export_queue_counts_the_spans_and_logs_it_drops() {
    // Queues of one item in front of a collector that never answers within
    // the 5 s export timeout: while one export hangs, nearly everything else
    // is dropped at the queue, before any export is tried.
    let mut env = exporting_to(black_hole());
    env.retain(|(key, _)| *key != "OTEL_EXPORTER_OTLP_TIMEOUT");
    for (key, value) in [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "1"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
        ("OTEL_BLRP_MAX_QUEUE_SIZE", "1"),
        ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "1"),
    ] {
        env.push((key, value.to_owned()));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, &env);

    // 100 calls (a server span each, and more inside), and 50 refused
    // readings (a log record each).
    calls_succeed(&server.url(), 100).await;
    let mut config = ClientConfig::new(server.url());
    config.token = Some(TOKEN.to_owned());
    let mut client = sensorhub_grpc::connect(&config).await.expect("connect");
    for _ in 0..50 {
        let refused = client
            .send_single_reading(SensorReading {
                sensor_id: "fault-refused".into(),
                temperature: f64::NAN,
                timestamp: 1,
            })
            .await
            .expect_err("a NaN is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let (spans, logs) = loop {
        let (code, page) = http::get(server.http, "/metrics");
        assert_eq!(code, 200);
        let full = "error_type=\"queue_full\"";
        let spans = total(&page, "otel_sdk_processor_span_processed_total", full);
        let logs = total(&page, "otel_sdk_processor_log_processed_total", full);
        if spans >= 50.0 && logs >= 25.0 {
            break (spans, logs);
        }
        assert!(
            Instant::now() < deadline,
            "queue-full drops not counted (spans {spans}, logs {logs}):\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("dropped at the queue: {spans} spans, {logs} log records");
    let (out, _) = server.terminate(Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
