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
    COLLECTOR_METRICS, PROMETHEUS_BUILTIN, SPAN_METRICS, dashboard_queries, deploy, rules, yaml,
};
use promql::{MetricName, Selector, selectors};

use crate::support::deploy_stack;
use crate::support::deploy_traffic;
use crate::support::promql;

/// Where each expression comes from, and its selectors. An expression that
/// does not parse, or a panel that reads no metric, fails the test, naming
/// its file, panel or rule, and text. (A recording rule may be a constant:
/// the SLO objectives are `vector(0.999)`.)
fn used_selectors() -> Vec<(String, Selector)> {
    let mut used = Vec::new();
    let mut unreadable = Vec::new();
    let mut read =
        |origin: String, promql: Result<String, String>, expr: &str, panel: bool| match promql
            .and_then(|promql| selectors(&promql))
        {
            Ok(found) if found.is_empty() && panel => {
                unreadable.push(format!("{origin}: no metric in {expr:?}"));
            }
            Ok(found) => used.extend(found.into_iter().map(|s| (origin.clone(), s))),
            Err(e) => unreadable.push(format!("{origin}: {e}\n  in {expr:?}")),
        };
    for rule in rules() {
        read(rule.origin(), Ok(rule.expr.clone()), &rule.expr, false);
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
        read(query.origin(), query.promql(), &query.expr, true);
    }
    assert!(
        unreadable.is_empty(),
        "{} expression(s) cannot be checked:\n{}",
        unreadable.len(),
        unreadable.join("\n")
    );
    used
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
    let (page, mut live) =
        deploy_traffic::scrape_until(&server, deploy_traffic::AFTER_TRAFFIC).await;
    // The PostgreSQL panels read a replica's series: a server configured
    // the same, on a fresh database, after a write (its pool is in use from
    // the start: the readiness probe borrows a connection every 250 ms).
    let database = sensorhub_grpc::testing::fresh_database_url().await;
    let (replica, _replica_collector) =
        deploy_traffic::start_server_storing(deploy_traffic::Storage::Database(&database));
    deploy_traffic::write_one(&replica).await;
    let (replica_page, replica_live) =
        deploy_traffic::scrape_until(&replica, deploy_traffic::ON_A_REPLICA).await;
    for (metric, labels) in replica_live {
        let merged = live.entry(metric).or_default();
        for (label, values) in labels {
            merged.entry(label).or_default().extend(values);
        }
    }
    let page = format!("{page}\n# the replica's page\n{replica_page}");

    let mut problems = Vec::new();
    let mut server_metrics = BTreeSet::new();
    // Every name a selector can mean: the live page's, the recording rules',
    // the collector's and Prometheus's own.
    let known: BTreeSet<&str> = live
        .keys()
        .map(String::as_str)
        .chain(recorded.iter().map(String::as_str))
        .chain(COLLECTOR_METRICS.iter().copied())
        .chain(SPAN_METRICS.iter().copied())
        .chain(PROMETHEUS_BUILTIN.iter().copied())
        .collect();
    let named: Vec<(&String, &str, &Selector)> = used
        .iter()
        .flat_map(|(origin, selector)| {
            let names = match &selector.metric {
                MetricName::Exactly(name) => vec![name.as_str()],
                MetricName::Matching(_) => selector.metric.select(known.iter().copied()),
            };
            if names.is_empty() {
                problems.push(format!("{origin}: {:?} matches no metric", selector.metric));
            }
            names.into_iter().map(move |name| (origin, name, selector))
        })
        .collect();
    for (origin, metric, selector) in named {
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
        "db_client_connection_count",
        "db_client_connection_max",
        "db_client_connection_wait_time_seconds_bucket",
        "db_client_connection_use_time_seconds_bucket",
    ] {
        assert!(
            server_metrics.contains(expected),
            "no dashboard or rule reads {expected}: {server_metrics:?}"
        );
    }

    let (out, _) = replica.terminate(Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, _) = server.terminate(Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
