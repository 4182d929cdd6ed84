//! Exemplars from `sensorhub serve`'s `/metrics`: a scraper that asks for
//! OpenMetrics (`Accept: application/openmetrics-text`) gets the server's
//! call-duration buckets with the trace and span id of a sampled call that
//! fell in them, and a real Prometheus (Debian's, with
//! `--enable-feature=exemplar-storage`) stores them and serves them back on
//! `/api/v1/query_exemplars`. Every trace id there is one the server
//! exported. Anyone else still gets the Prometheus text format, with no
//! exemplar in it.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_process::PrometheusProcess;
use sensorhub_grpc::testing::{reading, unix_now};
use sensorhub_telemetry::otlp_receiver::OtlpReceiver;
use spawned_server::{SpawnedServer, client};

use crate::support::{http, prometheus_process, spawned_server};

const TOKEN: &str = "exemplar-test-token-8d2a";
const METHOD: &str = "SensorService/SendSingleReading";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";
const CALLS: usize = 8;

/// Spans exported over OTLP to `receiver`, so calls are sampled and their
/// traces exist; `/metrics` on the HTTP listener.
fn start(receiver: &OtlpReceiver, data: &std::path::Path) -> SpawnedServer {
    SpawnedServer::start(
        data,
        TOKEN,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint()),
            ("OTEL_METRICS_EXPORTER", "prometheus".to_owned()),
            ("OTEL_LOGS_EXPORTER", "none".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    )
}

async fn send_readings(url: &str) {
    let mut client = client(url, TOKEN).await;
    for i in 0..CALLS {
        client
            .send_single_reading(reading("exemplars", 20.0 + i as f64, unix_now()))
            .await
            .expect("SendSingleReading");
    }
}

/// The trace ids on the exemplar lines of `family`'s OK buckets of METHOD.
fn exemplar_trace_ids(page: &str, family: &str, status_label: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}_bucket{{")))
        .filter(|l| l.contains(&format!("=\"{METHOD}\"")) && l.contains(status_label))
        .filter_map(|l| l.split_once(" # {trace_id=\""))
        .map(|(_, rest)| rest[..32].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn openmetrics_exemplars_link_buckets_to_exported_traces_and_prometheus_keeps_them() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let dir = tempfile::tempdir().unwrap();
    let server = start(&receiver, &dir.path().join("data"));
    send_readings(&server.url()).await;

    // The server spans the calls made, as exported.
    let exported: BTreeSet<String> = receiver
        .wait_for(Duration::from_secs(20), |r| {
            let ids: BTreeSet<String> = r
                .spans()
                .iter()
                .filter(|s| s.service_name == "sensorhub" && s.name() == METHOD)
                .map(|s| s.trace_id_hex())
                .collect();
            (ids.len() >= CALLS).then_some(ids)
        })
        .await
        .expect("the calls' server spans");

    // OpenMetrics, on request, with exemplars of exported traces on both
    // duration histograms. Calls are recorded as they end, so scrape until
    // all are counted (the body is also cached for a second).
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let response = http::get_accepting(server.http, "/metrics", OPENMETRICS);
        assert_eq!(response.status, 200, "{}", response.body);
        let content_type = response
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/openmetrics-text")
                && content_type.contains("version=1.0.0"),
            "{content_type}"
        );
        let counted = response.body.lines().any(|l| {
            l.starts_with("grpc_server_call_duration_seconds_count{")
                && l.contains(METHOD)
                && l.contains("grpc_status=\"OK\"")
                && l.ends_with(&format!(" {CALLS}"))
        });
        if counted {
            break response.body;
        }
        assert!(Instant::now() < deadline, "{}", response.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(page.ends_with("# EOF\n"), "{page}");
    let a66 = exemplar_trace_ids(
        &page,
        "grpc_server_call_duration_seconds",
        "grpc_status=\"OK\"",
    );
    let semconv = exemplar_trace_ids(
        &page,
        "rpc_server_call_duration_seconds",
        "rpc_response_status_code=\"OK\"",
    );
    assert!(!a66.is_empty(), "no A66 exemplar:\n{page}");
    assert!(!semconv.is_empty(), "no semconv exemplar:\n{page}");
    for id in a66.iter().chain(&semconv) {
        assert!(
            exported.contains(id),
            "exemplar trace {id} is no exported trace"
        );
    }
    // Only the duration histograms carry them.
    for line in page.lines().filter(|l| l.contains(" # {")) {
        assert!(
            line.starts_with("grpc_server_call_duration_seconds_bucket{")
                || line.starts_with("rpc_server_call_duration_seconds_bucket{"),
            "{line}"
        );
    }

    // Everyone else: the Prometheus text format, no exemplar.
    let plain = http::get_response(server.http, "/metrics");
    let content_type = plain
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    assert!(!plain.body.contains(" # {"), "{}", plain.body);
    assert!(!plain.body.contains("# EOF"));

    // A real Prometheus with exemplar storage scrapes it (it asks for
    // OpenMetrics itself) and serves the exemplars back.
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sensorhub\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            server.http
        ),
    )
    .unwrap();
    let binary = crate::support::system_tools::prometheus();
    let mut prometheus = PrometheusProcess::start_with(
        &binary,
        &config,
        dir.path(),
        &["--enable-feature=exemplar-storage"],
    );
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 600.0;
    // New calls after Prometheus started, so their exemplars are new to it.
    send_readings(&server.url()).await;
    let promql = format!(
        "grpc_server_call_duration_seconds_bucket{{job=\"sensorhub\",grpc_method=\"{METHOD}\"}}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        if let Some(exit) = prometheus.exited() {
            panic!("prometheus exited ({exit}):\n{}", prometheus.log_tail(20));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 60.0;
        if let Ok(series) = prometheus.query_exemplars(&promql, since, now) {
            let ids: BTreeSet<String> = series
                .iter()
                .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
                .collect();
            if !ids.is_empty() {
                break ids;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus stored no exemplar\n{}",
            prometheus.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let exported: BTreeSet<String> = receiver
        .wait_for(Duration::from_secs(20), |r| {
            let ids: BTreeSet<String> = r
                .spans()
                .iter()
                .filter(|s| s.service_name == "sensorhub" && s.name() == METHOD)
                .map(|s| s.trace_id_hex())
                .collect();
            stored.is_subset(&ids).then_some(ids)
        })
        .await
        .unwrap_or_else(|| panic!("Prometheus's exemplars {stored:?} are not exported traces"));
    assert!(stored.is_subset(&exported));

    drop(prometheus);
    let (out, _) = server.terminate(Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exemplars point only at traces that exist: with no span exporter the
/// OpenMetrics page has none; nor with `OTEL_METRICS_EXEMPLAR_FILTER=always_off`
/// although spans are exported.
#[tokio::test(flavor = "multi_thread")]
async fn without_exported_spans_or_with_the_filter_off_there_are_no_exemplars() {
    let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
    let filtered = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint()),
        ("OTEL_METRICS_EXPORTER", "prometheus".to_owned()),
        ("OTEL_LOGS_EXPORTER", "none".to_owned()),
        ("OTEL_METRICS_EXEMPLAR_FILTER", "always_off".to_owned()),
    ];
    for env in [&[][..], &filtered[..]] {
        let dir = tempfile::tempdir().unwrap();
        let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, env);
        send_readings(&server.url()).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let response = http::get_accepting(server.http, "/metrics", OPENMETRICS);
            if response
                .body
                .contains("grpc_server_call_duration_seconds_count{")
            {
                assert!(
                    !response.body.contains(" # {"),
                    "{env:?}: {}",
                    response.body
                );
                assert!(response.body.ends_with("# EOF\n"));
                break;
            }
            assert!(Instant::now() < deadline, "{}", response.body);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
