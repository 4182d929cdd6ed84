//! The compose stack's Prometheus configuration, exercised for real: a Debian
//! `prometheus` runs the project's `sensorhub` scrape job (its target moved to
//! a live server and a replica on PostgreSQL, its intervals shortened) and every rule file of
//! deploy/prometheus/rules, while the compose file's sensors feed the server.
//!
//! - every rule evaluates without error (many-to-many matches, bad `on()`
//!   show only at evaluation, never in `promtool check`);
//! - every Prometheus query of every dashboard panel is accepted, and every
//!   one that reads the server's series (directly or through recording
//!   rules) returns data: no panel of the gRPC, Sensors or SLO dashboards is
//!   empty after the first scrapes;
//! - the temperature alert fires for the hot and the cold sensor.
//!
//! The binary is required (`cargo xtask test` installs it).

use std::{
    collections::BTreeSet,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use deploy_stack::{PROMETHEUS_BUILTIN, dashboard_queries, deploy, rules, yaml};
use prometheus_process::PrometheusProcess;
use serde_norway::Value;

use crate::support::deploy_stack;
use crate::support::deploy_traffic;
use crate::support::prometheus_process;
use crate::support::promql::selectors;
use crate::support::system_tools::prometheus;

/// A child process killed (and reaped) when dropped, whatever happened.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The project's Prometheus configuration, reduced to what can run here:
/// the `sensorhub` job as written (path, settings) with its targets replaced,
/// 1 s intervals, and every rule file (absolute paths); no Alertmanager.
fn test_config(targets: &[String]) -> String {
    let mut config = yaml(&deploy().join("prometheus/prometheus.yml"));
    let jobs = config["scrape_configs"].as_sequence().unwrap().clone();
    let mut job = jobs
        .into_iter()
        .find(|job| job["job_name"].as_str() == Some("sensorhub"))
        .expect("a scrape job named sensorhub");
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("sensorhub:9464"),
        "the sensorhub job scrapes the compose service's HTTP listener"
    );
    job["static_configs"][0]["targets"] =
        Value::Sequence(targets.iter().cloned().map(Value::String).collect());
    job["scrape_interval"] = Value::String("1s".to_owned());
    job["scrape_timeout"] = Value::String("1s".to_owned());
    let globals = config["global"].as_mapping_mut().expect("global");
    for key in ["scrape_interval", "evaluation_interval", "scrape_timeout"] {
        globals.insert(
            Value::String(key.to_owned()),
            Value::String("1s".to_owned()),
        );
    }
    let rule_glob = config["rule_files"][0]
        .as_str()
        .expect("rule_files")
        .to_owned();
    assert_eq!(rule_glob, "rules/*.yml");
    config["rule_files"] = Value::Sequence(vec![Value::String(
        deploy()
            .join("prometheus")
            .join(&rule_glob)
            .display()
            .to_string(),
    )]);
    config["scrape_configs"] = Value::Sequence(vec![job]);
    let map = config.as_mapping_mut().unwrap();
    map.remove("alerting");
    serde_norway::to_string(&config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_with_the_project_config_serves_every_dashboard_query() {
    let binary = prometheus();
    let dir = tempfile::tempdir().unwrap();
    let (server, _collector) = deploy_traffic::start_server(&dir.path().join("data"));
    // A replica on PostgreSQL beside it, in the same job, for the PostgreSQL
    // row of the Sensors dashboard (a fleet runs one kind or the other; the
    // panels must have data with either).
    let database = sensorhub_grpc::testing::fresh_database_url().await;
    let (replica, _replica_collector) =
        deploy_traffic::start_server_storing(deploy_traffic::Storage::Database(&database));
    deploy_traffic::write_one(&replica).await;

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        test_config(&[
            format!("127.0.0.1:{}", server.http()),
            format!("127.0.0.1:{}", replica.http()),
        ]),
    )
    .unwrap();
    let mut prometheus = PrometheusProcess::start(&binary, &config, dir.path());

    deploy_traffic::drive(&server).await;
    deploy_traffic::scrape_until(&server, deploy_traffic::AFTER_TRAFFIC).await;
    // Keep traffic flowing while Prometheus scrapes, as the stack's sensors do.
    let mut sensor = server.sensor_command(
        &[
            "sensor",
            "--mode",
            "unary",
            "--sensor-id",
            "deploy-background",
            "--interval-max",
            "50ms",
        ]
        .map(String::from),
    );
    sensor
        .env("SENSORHUB_TOKEN", deploy_traffic::TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let background = KillOnDrop(sensor.spawn().expect("spawn a background sensor"));

    // Ready, scraping, and the recording rules evaluated over two scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(exit) = prometheus.exited() {
            panic!("prometheus exited ({exit}):\n{}", prometheus.log_tail(30));
        }
        if prometheus.ready()
            && prometheus
                .query("sensorhub:slo_latency_slow:ratio_rate5m")
                .is_ok_and(|r| !r.is_empty())
            && prometheus
                .query("sensorhub:grpc_server_failed_calls:ratio_rate5m")
                .is_ok_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recording rules never produced data\n{}",
            prometheus.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = prometheus.query("up{job=\"sensorhub\"}").unwrap();
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.iter().all(|u| u["value"][1] == "1"), "{up:?}");

    // Every rule loaded and evaluates cleanly (after another evaluation).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = prometheus.get("/api/v1/rules").expect("an answer");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut evaluated = 0;
    for group in json["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            evaluated += 1;
            assert_eq!(
                rule["health"], "ok",
                "rule {} does not evaluate: {}",
                rule["name"], rule["lastError"]
            );
        }
    }
    assert_eq!(evaluated, rules().len(), "not every rule was loaded");

    // Every dashboard query: accepted, and with data when it reads the server.
    let recorded: BTreeSet<String> = rules().into_iter().filter_map(|r| r.record).collect();
    let mut checked = 0;
    let mut with_data = 0;
    let mut problems = Vec::new();
    for panel in dashboard_queries() {
        if panel.datasource != "prometheus" {
            continue;
        }
        let promql = panel
            .promql()
            .unwrap_or_else(|e| panic!("{}: {e}", panel.origin()));
        checked += 1;
        let result = match prometheus.query(&promql) {
            Ok(result) => result,
            Err(e) => {
                problems.push(format!("{}: rejected: {e}", panel.origin()));
                continue;
            }
        };
        // Reads only the server (its own series, or rules made from them).
        let found =
            selectors(&promql).unwrap_or_else(|e| panic!("{}: {e}\n  in {promql}", panel.origin()));
        let from_server = found.iter().all(|s| {
            let job = s.matchers.iter().find(|(label, _, _)| label == "job");
            let Some(metric) = s.metric.exact() else {
                // A name pattern: deploy_metric_names.rs checks what it matches.
                return false;
            };
            if recorded.contains(metric) {
                true
            } else if PROMETHEUS_BUILTIN.contains(&metric) {
                job.is_some_and(|(_, _, value)| value == "sensorhub")
            } else {
                !(metric.starts_with("otelcol_") || metric.starts_with("traces_span_metrics_"))
            }
        });
        if from_server {
            with_data += 1;
            if result.is_empty() {
                problems.push(format!("{}: no data for {promql}", panel.origin()));
            }
        }
    }
    assert!(checked >= 40 && with_data >= 30, "{checked} {with_data}");
    assert!(
        problems.is_empty(),
        "{} dashboard queries failed:\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        prometheus.log_tail(30)
    );

    // The hot and the cold sensor raised the server's temperature alerts;
    // the rules turn them into a firing Prometheus alert for each rule.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let firing = prometheus
            .query("ALERTS{alertname=\"SensorTemperatureOutOfRange\",alertstate=\"firing\"}")
            .unwrap();
        let rules: BTreeSet<&str> = firing
            .iter()
            .filter_map(|a| a["metric"]["sensorhub_alert_rule"].as_str())
            .collect();
        if rules.contains("above_max") && rules.contains("below_min") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SensorTemperatureOutOfRange is not firing for above_max and below_min: {firing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    drop(background);
    drop(prometheus);
    let (out, _) = server.terminate(Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
