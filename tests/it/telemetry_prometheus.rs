//! `/metrics` on the HTTP listener of `sensorhub serve`, the pull side of its
//! telemetry: with no `OTEL_*` settings the metrics exporter is Prometheus,
//! and this is the only place those metrics can be seen.
//!
//! - After unary calls (and one refused for a wrong token), the page is
//!   Prometheus text with the gRPC A66 series: the call-duration histogram
//!   per method and status, with the A66 bucket boundaries as `le` labels
//!   (printed as plain decimals: `0.0001`, `0.65`, `100`), and the
//!   started-calls counter. The token never leaks into a label.
//! - `OTEL_SDK_DISABLED=true` removes `/metrics` (404), not the listener:
//!   `/healthz` still answers.
//! - A real Prometheus (the Debian `prometheus` binary) scrapes the page and
//!   answers a PromQL query with the calls made: the text is not only
//!   well-formed to our eyes but accepted by the consumer it is written for.
//!   The binary is required (`cargo xtask test` installs it).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use prometheus_process::PrometheusProcess;
use sensorhub_grpc::testing::{reading, unix_now};
use spawned_server::{SpawnedServer, client};

use crate::support::exposition::{self, series};
use crate::support::http;
use crate::support::prometheus_process;
use crate::support::spawned_server;

const TOKEN: &str = "prometheus-test-token-c41e";
const WRONG_TOKEN: &str = "wrong-token-77b0";
const METHOD: &str = "SensorService/SendSingleReading";
const DURATION_COUNT: &str = "grpc_server_call_duration_seconds_count";

/// The server, stopped with a checked SIGTERM (and killed on drop by
/// `SpawnedServer` if a test fails first).
struct Server(Option<SpawnedServer>);

impl Server {
    fn start(data: &Path, env: &[(&str, String)]) -> Server {
        Server(Some(SpawnedServer::start(data, TOKEN, env)))
    }

    fn get(&self) -> &SpawnedServer {
        self.0.as_ref().expect("running")
    }

    /// SIGTERM: the server must exit cleanly and promptly.
    fn stop(mut self) {
        let server = self.0.take().expect("running");
        let (out, _) = server.terminate(Duration::from_secs(15));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A child process killed (and reaped) when dropped, whatever happened.
/// `calls` accepted SendSingleReading calls.
async fn send_readings(url: &str, sensor: &str, calls: usize) {
    let mut client = client(url, TOKEN).await;
    for i in 0..calls {
        client
            .send_single_reading(reading(sensor, 20.0 + i as f64, unix_now()))
            .await
            .expect("SendSingleReading");
    }
}

/// A GET: status, headers (names in lower case), body.
fn get_with_headers(port: u16, path: &str) -> (u16, Vec<(String, String)>, String) {
    let response = http::get_response(port, path);
    (response.status, response.headers, response.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_serves_the_a66_series_after_traffic() {
    const CALLS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = server.get().url();
    let http = server.get().http;

    // Before any traffic, each domain counter's series is already there at
    // zero, so the first alert or refusal is seen by rate() and increase().
    let (_, _, fresh) = get_with_headers(http, "/metrics");
    let samples = exposition::samples(&fresh);
    for (name, label) in [
        (
            "sensorhub_alerts_raised_total",
            ("sensorhub_alert_rule", "jump"),
        ),
        (
            "sensorhub_readings_refused_total",
            ("sensorhub_refusal_reason", "temperature.not_finite"),
        ),
        ("sensorhub_streams_active", ("sensorhub_rpc_kind", "chat")),
    ] {
        let found = series(&samples, name, &[label]);
        assert_eq!(
            found.len(),
            1,
            "{name}{label:?} on a fresh server:\n{fresh}"
        );
        assert_eq!(found[0].value, 0.0, "{:?}", found[0]);
    }

    send_readings(&url, "prom-1", CALLS).await;
    let refused = client(&url, WRONG_TOKEN)
        .await
        .send_single_reading(reading("prom-1", 20.0, unix_now()))
        .await
        .expect_err("a wrong token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A call is recorded as it ends, which may be a moment after the client
    // has its answer: scrape until all four calls are counted.
    let method = ("grpc_method", METHOD);
    let ok = [method, ("grpc_status", "OK")];
    let refused = [method, ("grpc_status", "UNAUTHENTICATED")];
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, headers, page, samples) = loop {
        let (status, headers, page) = get_with_headers(http, "/metrics");
        let samples = if status == 200 {
            exposition::samples(&page)
        } else {
            Vec::new()
        };
        let counted = |labels: &[(&str, &str)]| {
            series(&samples, DURATION_COUNT, labels)
                .first()
                .map(|s| s.value)
        };
        if status == 200 && counted(&ok) == Some(CALLS as f64) && counted(&refused) == Some(1.0) {
            break (status, headers, page, samples);
        }
        assert!(
            Instant::now() < deadline,
            "four calls never showed on /metrics ({status}):\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200);

    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
        .expect("a content type");
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "not the Prometheus text format: {content_type}"
    );
    assert!(page.contains("# TYPE grpc_server_call_duration_seconds histogram"));
    assert!(page.contains("# TYPE grpc_server_call_started_total counter"));

    // The A66 duration histogram, per method and status. The bounds are
    // compared as the text the server wrote (`le` stays a string).
    let buckets = series(&samples, "grpc_server_call_duration_seconds_bucket", &ok);
    assert!(!buckets.is_empty(), "no OK buckets:\n{page}");
    assert!(
        !series(
            &samples,
            "grpc_server_call_duration_seconds_bucket",
            &refused
        )
        .is_empty(),
        "no UNAUTHENTICATED buckets:\n{page}"
    );
    let bounds: Vec<&str> = buckets.iter().map(|s| s.labels["le"].as_str()).collect();
    for bound in ["0.0001", "0.005", "0.65", "100", "+Inf"] {
        assert!(
            bounds.contains(&bound),
            "le=\"{bound}\" missing from {bounds:?}"
        );
    }
    let inf = buckets.iter().find(|s| s.labels["le"] == "+Inf").unwrap();
    assert_eq!(inf.value, CALLS as f64, "{inf:?}");

    // Started calls: the refused one is counted too.
    let started = series(&samples, "grpc_server_call_started_total", &[method]);
    assert_eq!(started.len(), 1, "{page}");
    assert_eq!(started[0].value, (CALLS + 1) as f64, "{:?}", started[0]);

    assert!(!page.contains(TOKEN), "the token leaked into /metrics");
    assert!(
        !page.contains(WRONG_TOKEN),
        "a presented token leaked into /metrics"
    );
    server.stop();

    // With the SDK off there is nothing to render: no /metrics, but the
    // listener and its health endpoint stay.
    let off = Server::start(
        &dir.path().join("data-off"),
        &[("OTEL_SDK_DISABLED", "true".to_owned())],
    );
    send_readings(&off.get().url(), "prom-off", 1).await;
    let (status, body) = http::get(off.get().http, "/metrics");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http::get(off.get().http, "/healthz");
    assert_eq!(status, 200, "{body}");
    off.stop();
}

/// The number in an instant-vector element: `{"metric": {..}, "value": [t, "3"]}`.
fn sample(element: &serde_json::Value) -> f64 {
    element["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {element}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_server() {
    const CALLS: usize = 5;
    let binary = crate::support::system_tools::prometheus();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sensorhub\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            server.get().http
        ),
    )
    .unwrap();
    let mut prometheus = PrometheusProcess::start(&binary, &config, dir.path());

    send_readings(&server.get().url(), "prom-scraped", CALLS).await;

    let promql = format!("{DURATION_COUNT}{{grpc_method=\"{METHOD}\",grpc_status=\"OK\"}}");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        if let Some(exit) = prometheus.exited() {
            panic!("prometheus exited ({exit}):\n{}", prometheus.log_tail(20));
        }
        let ready = prometheus.ready();
        if ready
            && prometheus
                .query(&promql)
                .is_ok_and(|r| r.iter().any(|e| sample(e) >= CALLS as f64))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {CALLS} calls; last answer {:?}\n{}",
            ready.then(|| prometheus.query(&promql)),
            prometheus.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("Prometheus saw the calls after {:?}", started.elapsed());

    let up = prometheus.query("up{job=\"sensorhub\"}").unwrap();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(sample(&up[0]), 1.0, "{up:?}");

    drop(prometheus);
    server.stop();
}
