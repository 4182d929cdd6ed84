//! The `sensorhub` binary as users run it: refusals that say what to pass,
//! `certs`, `serve` + `sensor` + `readings` + `stats` over TLS with a token,
//! a clean stop on SIGTERM, and `demo`.

use std::{path::Path, process::Output, time::Duration};

use crate::support::spawned_server::{Serve, SpawnedServer, command, sensorhub};

/// `sensorhub serve` on port 0, without the HTTP listener, on a fresh data
/// directory, with `args`: for a refusal at startup.
fn serve_refusal(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "off",
        "--data",
        data.to_str().unwrap(),
    ];
    sensorhub(&[&base[..], args].concat())
}

/// The command failed, and its stderr says each of `says`.
fn refused_saying(out: Output, says: &[&str]) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in says {
        assert!(stderr.contains(said), "{said:?} not in: {stderr}");
    }
}

#[test]
fn serve_refuses_to_start_insecure_or_open_unless_told_by_name() {
    refused_saying(
        serve_refusal(&["--token", "t"]),
        &["--tls-cert", "--insecure"],
    );
    refused_saying(serve_refusal(&["--insecure"]), &["--token", "--no-auth"]);
}

#[cfg(unix)]
#[test]
fn certs_writes_a_ca_and_leaves_with_private_keys_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = sensorhub(&[
        "certs",
        "--out",
        dir.path().to_str().unwrap(),
        "--name",
        "sensors.example",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, mode) in [
        ("ca.pem", 0o644),
        ("server.pem", 0o644),
        ("server.key", 0o600),
        ("client.pem", 0o644),
        ("client.key", 0o600),
    ] {
        let meta =
            std::fs::metadata(dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
}

struct ServeProcess {
    server: SpawnedServer,
    url: String,
}

impl ServeProcess {
    fn start(dir: &Path, token: &str) -> ServeProcess {
        let certs = dir.join("certs");
        assert!(
            sensorhub(&["certs", "--out", certs.to_str().unwrap()])
                .status
                .success()
        );
        let mut serve = Serve::new();
        serve
            .command()
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server.key"))
            .arg("--data")
            .arg(dir.join("data"))
            .env("SENSORHUB_TOKENS", token);
        let server = serve.start();
        ServeProcess {
            url: format!("https://localhost:{}", server.grpc),
            server,
        }
    }

    fn client(&self, dir: &Path, token: &str, args: &[&str]) -> Output {
        command()
            .args(args)
            .args([
                "--server",
                &self.url,
                "--ca",
                dir.join("certs/ca.pem").to_str().unwrap(),
            ])
            .env("SENSORHUB_TOKEN", token)
            .output()
            .expect("run client")
    }
}

#[cfg(unix)]
#[test]
fn serve_sensor_readings_stats_then_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let token = "cli-test-token";
    let server = ServeProcess::start(dir.path(), token);

    for mode in ["unary", "client-stream", "chat"] {
        let out = server.client(
            dir.path(),
            token,
            &[
                "sensor",
                "--mode",
                mode,
                "--sensor-id",
                "cli-1",
                "--count",
                "3",
                "--interval-max",
                "10ms",
                "--spike-probability",
                "0",
            ],
        );
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // 3 unary + 3 × 5 streamed + 3 chat readings.
    let out = server.client(
        dir.path(),
        token,
        &["readings", "--sensor-id", "cli-1", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 21);
    let timestamps: Vec<i64> = lines
        .iter()
        .map(|l| l["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        timestamps.windows(2).all(|w| w[0] <= w[1]),
        "time order: {timestamps:?}"
    );
    assert!(lines.iter().all(|l| l["sensor_id"] == "cli-1"));

    let out = server.client(dir.path(), token, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["sensor_id"], "cli-1");
    assert_eq!(stats["count"], 21);

    // A refused call is reported by its canonical code and the server's
    // message, by every client command, never in tonic's debugging form,
    // and the command fails. (`load` says it in its report, per code, and
    // when seeding; the demo runs its own server with its own token.)
    for args in [
        &["stats"][..],
        &["readings", "--sensor-id", "cli-1"],
        &[
            "sensor",
            "--sensor-id",
            "cli-2",
            "--mode",
            "unary",
            "--count",
            "1",
        ],
        &["load", "--mode", "unary", "--count", "3", "--quiet"],
        &["load", "--seed", "5", "--count", "1", "--quiet"],
    ] {
        let out = server.client(dir.path(), "wrong-token", args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{args:?} succeeded:\n{said}");
        assert!(
            said.contains("UNAUTHENTICATED: Invalid token"),
            "{args:?}:\n{said}"
        );
        assert!(
            !said.contains("authentication credentials") && !said.contains("code: '"),
            "{args:?}:\n{said}"
        );
    }

    // SIGTERM: graceful stop, exit 0, and the token never reached the logs.
    let (out, _) = server.server.terminate(Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("sensorhub stopped"), "{log}");
    assert!(!log.contains(token), "token leaked into logs: {log}");
}

#[test]
fn demo_runs_four_sensors_and_stops_by_itself() {
    let out = sensorhub(&[
        "demo",
        "--duration",
        "4s",
        "--every",
        "2s",
        "--interval-max",
        "200ms",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The live view's address and the token to log in with come first.
    let mut lines = stdout.lines().skip(1);
    let open = lines.next().unwrap_or_default();
    assert!(
        open.starts_with("  open     http://127.0.0.1:") && open.contains("/  (the live view"),
        "{stdout}"
    );
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("  token    demo-"),
        "{stdout}"
    );
    for sensor in ["sensor-unary", "sensor-client-stream", "sensor-chat"] {
        assert!(stdout.contains(sensor), "{sensor} missing from:\n{stdout}");
    }
    let last = stdout.rsplit("calls: ").next().unwrap();
    for kind in ["unary", "client-stream", "server-stream", "chat"] {
        let ok: u64 = last
            .split(&format!("{kind} "))
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} count in:\n{last}"));
        assert!(ok > 0, "no successful {kind} call:\n{stdout}");
    }
    let calls = last.lines().next().unwrap();
    assert!(
        calls.split(", ").all(|kind| kind.ends_with("/ 0 failed")),
        "failures: {calls}"
    );
    // The last table lists the server's calls by status: the chat sensor
    // ended its stream cleanly (half-close), so nothing was cancelled.
    let rpcs = stdout
        .rsplit("server RPCs (grpc.server.call.duration):")
        .next()
        .and_then(|table| table.split("\n\n").next())
        .unwrap_or_default();
    assert!(
        rpcs.lines()
            .any(|l| l.contains("SensorService/SensorChat") && l.contains(" OK ")),
        "no completed chat in the last table:\n{rpcs}"
    );
    assert!(
        !rpcs.contains("CANCELLED"),
        "a cancelled call in the last table:\n{rpcs}"
    );
    assert!(stdout.contains("demo stopped cleanly"));
}

/// `--enable-metrics`, one parser for `serve` and the clients: a name
/// nobody records, or the other side's, stops the command at once, saying
/// which names it takes.
#[test]
fn enable_metrics_refuses_a_name_it_does_not_record_and_lists_those_it_does() {
    let client = ["--server", "https://127.0.0.1:9", "--enable-metrics"];
    refused_saying(
        sensorhub(
            &[
                &["stats"],
                &client[..],
                &["grpc.client.call.transparent_retry"],
            ]
            .concat(),
        ),
        &[
            "unknown metric `grpc.client.call.transparent_retry`",
            "grpc.client.call.transparent_retries",
            "grpc.client.call.retry_delay",
        ],
    );
    refused_saying(
        command()
            .args(["sensor", "--server", "https://127.0.0.1:9", "--count", "1"])
            .env(
                "SENSORHUB_CLIENT_ENABLE_METRICS",
                "grpc.server.tls.handshakes",
            )
            .output()
            .expect("run sensorhub"),
        &[
            "`grpc.server.tls.handshakes` is the server's",
            "grpc.client.call.transparent_retries",
        ],
    );
    refused_saying(
        serve_refusal(&[
            "--insecure",
            "--no-auth",
            "--enable-metrics",
            "grpc.server.tls.handshakes,grpc.client.call.retries",
        ]),
        &[
            "`grpc.client.call.retries` is a client's",
            "sensorhub.connection.duration",
        ],
    );
}
