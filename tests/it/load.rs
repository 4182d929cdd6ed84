//! `sensorhub load` against a real `sensorhub serve` (durable store, token):
//!
//! - in every mode, what its JSON report says was sent is what the server
//!   stored (its own statistics), and a history read-back reads what was seeded;
//! - errors are counted by status name, with the first message of each: a
//!   wrong token gives UNAUTHENTICATED ("Invalid token")
//!   for every call and a non-zero exit, unless `--max-error-rate` allows it;
//! - an open loop sends exactly the calls its schedule holds, at its rate.

use std::collections::BTreeMap;

use serde_json::Value;
use spawned_server::{SpawnedServer, sensorhub};

use crate::support::ports::ClosedPort;
use crate::support::spawned_server;

const TOKEN: &str = "load-test-token-5d1c";

/// Runs `sensorhub load --json` against `server`: (exit success, the report).
fn load(server: &SpawnedServer, token: &str, args: &[&str]) -> (bool, Value) {
    let url = server.url();
    let mut all = vec!["load", "--server", &url, "--token", token, "--json"];
    all.extend_from_slice(args);
    let out = sensorhub(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "load printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Readings stored per sensor, from the server's own statistics.
fn stored(server: &SpawnedServer) -> BTreeMap<String, u64> {
    let url = server.url();
    let out = sensorhub(&["stats", "--server", &url, "--token", TOKEN, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let s: Value = serde_json::from_str(line).expect("a JSON line");
            (
                s["sensor_id"].as_str().unwrap().to_owned(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn stored_with_prefix(server: &SpawnedServer, prefix: &str) -> u64 {
    stored(server)
        .iter()
        .filter(|(id, _)| id.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

fn u(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no `{key}` in {report}"))
}

#[test]
fn every_mode_reports_what_the_server_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, &[]);
    let common = ["--connections", "2", "--concurrency", "4", "--sensors", "3"];

    // mode, calls, readings each call sends
    for (mode, count, per_call) in [("unary", 40, 1), ("client-stream", 12, 7), ("chat", 30, 1)] {
        let prefix = format!("{mode}-");
        let mut args = vec!["--mode", mode, "--count"];
        let count_arg = count.to_string();
        args.push(&count_arg);
        args.extend_from_slice(&["--batch", "7", "--sensor-prefix", &prefix]);
        args.extend_from_slice(&common);
        let (ok, report) = load(&server, TOKEN, &args);
        assert!(ok, "{mode}: {report}");
        assert_eq!(report["mode"], mode);
        assert_eq!(u(&report, "ok"), count, "{mode}: {report}");
        assert_eq!(u(&report, "failed"), 0, "{mode}: {report}");
        assert_eq!(u(&report, "readings_sent"), count * per_call, "{mode}");
        assert_eq!(
            stored_with_prefix(&server, &prefix),
            count * per_call,
            "{mode}: the server stored a different number of readings than load reported"
        );
        let latency = &report["latency_ms"];
        assert!(
            latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap()
                && latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap(),
            "{latency}"
        );
    }

    // Read-back: 250 readings seeded for one sensor, read 5 times over.
    let (ok, report) = load(
        &server,
        TOKEN,
        &[
            "--mode",
            "server-stream",
            "--count",
            "5",
            "--seed",
            "250",
            "--query-sensor",
            "history-1",
            "--quiet",
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(u(&report, "ok"), 5);
    assert_eq!(u(&report, "readings_received"), 5 * 250, "{report}");
    assert_eq!(u(&report, "readings_sent"), 0, "seeding is not counted");
    assert_eq!(stored(&server)["history-1"], 250);

    // A mix: unary, client-stream, server-stream and chat calls in turn.
    let (ok, report) = load(
        &server,
        TOKEN,
        &[
            "--mode",
            "mix",
            "--count",
            "16",
            "--batch",
            "5",
            "--sensor-prefix",
            "mix-",
        ],
    );
    assert!(ok, "{report}");
    for kind in ["unary", "client-stream", "server-stream", "chat"] {
        assert_eq!(u(&report["kinds"][kind], "ok"), 4, "{kind}: {report}");
    }
    assert_eq!(u(&report, "readings_sent"), 4 + 4 * 5 + 4 * 5, "{report}");
    assert_eq!(stored_with_prefix(&server, "mix-"), 44);
}

#[test]
fn errors_are_counted_by_status_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, &[]);

    for mode in ["unary", "chat"] {
        let (ok, report) = load(
            &server,
            "not-the-token",
            &["--mode", mode, "--count", "10", "--concurrency", "2"],
        );
        assert!(
            !ok,
            "{mode}: a 100 % error rate must fail the run: {report}"
        );
        assert_eq!(u(&report, "ok"), 0, "{report}");
        assert_eq!(u(&report, "failed"), 10, "{report}");
        assert_eq!(report["errors"]["UNAUTHENTICATED"], 10, "{report}");
        assert!(
            report["error_messages"]["UNAUTHENTICATED"]
                .as_str()
                .is_some_and(|m| m.starts_with("Invalid token")),
            "{report}"
        );
        assert_eq!(report["error_rate"], 1.0);
    }

    // Allowed by --max-error-rate: the same failures, a zero exit.
    let (ok, report) = load(
        &server,
        "not-the-token",
        &["--count", "10", "--max-error-rate", "1"],
    );
    assert!(ok, "{report}");
    assert_eq!(report["errors"]["UNAUTHENTICATED"], 10);

    // No server there: an error before any call, not a report.
    let nothing = ClosedPort::new();
    let out = sensorhub(&["load", "--server", &nothing.url(), "--count", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&server).len(), 0, "nothing was stored");
}

#[test]
fn an_open_loop_keeps_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let server = SpawnedServer::start(&dir.path().join("data"), TOKEN, &[]);

    // 400 calls/s for 1.5 s: exactly 600 calls are due, whatever the server does.
    let (ok, report) = load(
        &server,
        TOKEN,
        &[
            "--rate",
            "400",
            "--duration",
            "1500ms",
            "--sensor-prefix",
            "open-",
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(report["loop"], "open");
    assert_eq!(report["latency_from"], "schedule");
    assert_eq!(u(&report, "calls"), 600, "{report}");
    assert_eq!(stored_with_prefix(&server, "open-"), 600);
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    assert!(
        (1.4..3.0).contains(&elapsed),
        "600 calls at 400/s take about 1.5 s, not {elapsed} s"
    );
    let rate = report["calls_per_s"].as_f64().unwrap();
    assert!((200.0..=430.0).contains(&rate), "{rate} calls/s: {report}");
    // A client this lightly loaded sends on time (tokio's timer ticks in 1 ms).
    let lag = report["schedule"]["max_send_lag_ms"].as_f64().unwrap();
    assert!(lag < 250.0, "sends lagged the schedule by {lag} ms");

    // A counted open loop: the calls are due over count / rate seconds.
    let (ok, report) = load(
        &server,
        TOKEN,
        &[
            "--mode",
            "chat",
            "--rate",
            "200",
            "--count",
            "100",
            "--concurrency",
            "5",
        ],
    );
    assert!(ok, "{report}");
    assert_eq!(u(&report, "ok"), 100);
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    assert!(
        (0.45..2.5).contains(&elapsed),
        "100 readings at 200/s take about 0.5 s, not {elapsed} s"
    );

    // The human report names the schedule and the percentiles.
    let url = server.url();
    let out = sensorhub(&[
        "load", "--server", &url, "--token", TOKEN, "--rate", "100", "--count", "20",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "open loop at 100 calls/s",
        "p99",
        "p99.9",
        "errors      none",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}
