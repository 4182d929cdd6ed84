//! Every metric a dashboard panel or a rule of the compose stack reads exists
//! where it is read from, so no panel says "No data" because of a name:
//!
//! - a live `sensorhub serve`, configured as compose configures it and fed
//!   the compose file's own sensors (plus a wrong token, refused readings
//!   and temperature alerts), is scraped; every server metric named in
//!   deploy/ must be on that page, with every label it is filtered or
//!   grouped by, and the exact label values it is compared with
//!   (`grpc_method="SensorService/SendSingleReading"`, `le="0.05"`, ...);
//! - every server metric is selected with `job="sensorhub"`, the scrape job
//!   of the server, so series pushed by the sensors never mix in;
//! - recording rules are defined; the collector's own metrics and the span
//!   metrics (no collector runs here) are among the names the collector
//!   writes (see deploy_stack.rs); other jobs are scrape jobs that exist.

use std::{collections::BTreeSet, time::Duration};

use deploy_stack::{
    COLLECTOR_METRICS, PROMETHEUS_BUILTIN, SPAN_METRICS, Selector, dashboard_queries, deploy,
    rules, selectors, yaml,
};

use crate::support::deploy_stack;
use crate::support::deploy_traffic;

/// Where each expression comes from, and its selectors.
fn used_selectors() -> Vec<(String, Selector)> {
    let mut used = Vec::new();
    for rule in rules() {
        let name = rule.record.or(rule.alert).unwrap();
        let origin = format!("{} rule {name}", rule.file.display());
        for selector in selectors(&rule.expr) {
            used.push((origin.clone(), selector));
        }
    }
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 40,
        "only {} dashboard queries",
        queries.len()
    );
    for query in queries {
        if query.datasource != "prometheus" {
            continue;
        }
        let origin = format!("dashboard {} panel {:?}", query.dashboard, query.panel);
        let found = selectors(&query.expr);
        assert!(!found.is_empty(), "{origin}: no metric in {:?}", query.expr);
        for selector in found {
            used.push((origin.clone(), selector));
        }
    }
    used
}

#[test]
fn the_promql_scanner_finds_metrics_not_functions_or_labels() {
    let found = selectors(
        r#"sum by (grpc_method, le) (rate(grpc_server_call_duration_seconds_bucket{job="sensorhub",grpc_status=~"OK|CANCELLED"}[5m]))
           / ignoring (le) group_left sensorhub:slo_latency:objective or vector(0) and on () max(up{job="x"}) == 1
           unless x_total offset 5m"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "grpc_server_call_duration_seconds_bucket",
            "sensorhub:slo_latency:objective",
            "up",
            "x_total"
        ]
    );
    assert_eq!(
        found[0].matchers,
        [
            ("job".into(), "=".into(), "sensorhub".into()),
            ("grpc_status".into(), "=~".into(), "OK|CANCELLED".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboards_and_rules_use_exists() {
    let used = used_selectors();
    let recorded: BTreeSet<String> = rules().into_iter().filter_map(|r| r.record).collect();
    let prometheus = yaml(&deploy().join("prometheus/prometheus.yml"));
    let jobs: BTreeSet<String> = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|job| job["job_name"].as_str().unwrap().to_owned())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let (server, _collector) = deploy_traffic::start_server(&dir.path().join("data"));
    deploy_traffic::drive(&server).await;
    let (page, live) = deploy_traffic::scrape_until(&server, deploy_traffic::AFTER_TRAFFIC).await;

    let mut problems = Vec::new();
    let mut server_metrics = BTreeSet::new();
    for (origin, selector) in &used {
        let metric = selector.metric.as_str();
        for (label, _, value) in &selector.matchers {
            if label == "job" && !jobs.contains(value) {
                problems.push(format!(
                    "{origin}: job {value:?} is no scrape job ({jobs:?})"
                ));
            }
        }
        if metric.contains(':') {
            if !recorded.contains(metric) {
                problems.push(format!("{origin}: no recording rule makes {metric}"));
            }
        } else if PROMETHEUS_BUILTIN.contains(&metric) {
        } else if metric.starts_with("otelcol_") {
            if !COLLECTOR_METRICS.contains(&metric) {
                problems.push(format!("{origin}: {metric} is not a collector metric"));
            }
        } else if metric.starts_with("traces_span_metrics_") {
            if !SPAN_METRICS.contains(&metric) {
                problems.push(format!("{origin}: {metric} is not a span metric"));
            }
        } else if let Some(labels) = live.get(metric) {
            server_metrics.insert(metric.to_owned());
            let job = selector
                .matchers
                .iter()
                .find(|(label, _, _)| label == "job");
            if job.map(|(_, op, value)| (op.as_str(), value.as_str())) != Some(("=", "sensorhub")) {
                problems.push(format!(
                    "{origin}: {metric} is the server's; select it with job=\"sensorhub\""
                ));
            }
            for (label, op, value) in &selector.matchers {
                if label == "job" || label == "instance" {
                    continue;
                }
                let Some(values) = labels.get(label) else {
                    problems.push(format!("{origin}: {metric} has no label {label}"));
                    continue;
                };
                if op == "=" && !value.is_empty() && !values.contains(value) {
                    problems.push(format!(
                        "{origin}: {metric}{{{label}={value:?}}} never appears (values: {values:?})"
                    ));
                }
            }
        } else {
            problems.push(format!(
                "{origin}: {metric} is not on the live server's /metrics"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n\nthe live page:\n{page}",
        problems.len(),
        problems.join("\n")
    );
    // The dashboards read the server's own series, not only derived ones.
    for expected in [
        "grpc_server_call_duration_seconds_bucket",
        "grpc_server_call_started_total",
        "grpc_server_call_rcvd_total_compressed_message_size_bytes_bucket",
        "sensorhub_readings_stored_total",
        "sensorhub_readings_refused_total",
        "sensorhub_alerts_raised_total",
        "sensorhub_sensor_temperature_celsius",
        "sensorhub_streams_active",
        "sensorhub_store_commit_duration_seconds_bucket",
        "otel_sdk_exporter_span_exported_total",
        "otel_sdk_processor_span_processed_total",
        "otel_sdk_processor_log_processed_total",
        "grpc_server_tls_handshakes_total",
        "sensorhub_connections_created_total",
        "sensorhub_connections_closed_total",
        "sensorhub_connection_duration_seconds_bucket",
    ] {
        assert!(
            server_metrics.contains(expected),
            "no dashboard or rule reads {expected}: {server_metrics:?}"
        );
    }

    let (out, _) = server.terminate(Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
