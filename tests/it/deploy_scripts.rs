//! The scripts the compose stack runs, run here for real (no container):
//!
//! - `sensorhub-init` (deploy/sensorhub/init.sh) makes a CA, certificates, a
//!   token, the profiler's token and the server's tokens file (the
//!   profiler's line as a SHA-256 only); a second run keeps them; with
//!   PYTHON_CLIENT_TOKEN that token is accepted too;
//! - a TLS server started as compose starts it (certificates and tokens
//!   file from the init, profiles on) answers `sensorhub-healthcheck`
//!   (deploy/sensorhub/healthcheck.sh), the check fails where nothing
//!   listens, and Alloy's request (deploy/alloy/config.alloy: its path, its
//!   `seconds`, the profiler's token) gets a CPU profile;
//! - `sensorhub-entrypoint sensor ...` (deploy/sensorhub/entrypoint.sh)
//!   reads the token file and its readings are stored over TLS;
//! - the alert log (deploy/alert-log/alert_log.py) prints and lists what an
//!   Alertmanager sends it; with Debian's `prometheus-alertmanager`, the
//!   project's alertmanager.yml routes a page to it end to end.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use deploy_stack::{deploy, output_text, run, yaml};
use spawned_server::{BIN, Serve, clean_env};

use crate::support::deploy_stack;
use crate::support::spawned_server;
use crate::support::system_tools::{self, amtool};
use crate::support::{http, ports::ClosedPort, prometheus_process::listening_port};

/// A child process killed (and reaped) when dropped, whatever happened.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PATH with the test's `sensorhub` binary first, as the image has it.
fn path_with_binary() -> String {
    let dir = Path::new(BIN).parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

fn script(name: &str) -> PathBuf {
    deploy().join("sensorhub").join(name)
}

fn init(dir: &Path, python_token: Option<&str>) -> std::process::Output {
    let mut command = Command::new("sh");
    command
        .arg(script("init.sh"))
        .arg(dir)
        .env("PATH", path_with_binary())
        .env("CERT_NAMES", "sensorhub grpc-server");
    match python_token {
        Some(token) => command.env("PYTHON_CLIENT_TOKEN", token),
        None => command.env_remove("PYTHON_CLIENT_TOKEN"),
    };
    clean_env(&mut command);
    run(&mut command)
}

fn healthcheck(http: &str) -> std::process::Output {
    run(Command::new("bash")
        .arg(script("healthcheck.sh"))
        .env("SENSORHUB_HTTP", http))
}

#[test]
fn init_serve_healthcheck_and_a_sensor_through_the_entrypoint() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");

    let out = init(&certs, None);
    assert!(out.status.success(), "init:\n{}", output_text(&out));
    for file in [
        "ca.pem",
        "server.pem",
        "server.key",
        "token",
        "profiler-token",
        "tokens",
    ] {
        let len = std::fs::metadata(certs.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .len();
        assert!(len > 0, "{file} is empty");
    }
    let token = std::fs::read_to_string(certs.join("token")).unwrap();
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token:?}"
    );
    let tokens = std::fs::read_to_string(certs.join("tokens")).unwrap();
    assert!(tokens.lines().any(|l| l == token), "{tokens}");
    assert!(!tokens.contains("sensor_token_abc"), "{tokens}");
    let profiler = std::fs::read_to_string(certs.join("profiler-token")).unwrap();
    assert!(
        profiler.len() >= 32 && profiler != token,
        "{profiler:?} against {token:?}"
    );
    // The `scale` profile's database: a random password, and the URL the
    // replicas read through the entrypoint.
    let password = std::fs::read_to_string(certs.join("postgres-password")).unwrap();
    assert!(
        password.len() >= 32 && password.chars().all(|c| c.is_ascii_hexdigit()),
        "{password:?}"
    );
    let database_url = std::fs::read_to_string(certs.join("database-url")).unwrap();
    assert_eq!(
        database_url.trim(),
        format!("postgres://sensorhub:{password}@postgres:5432/sensorhub?sslmode=disable")
    );
    assert!(
        !tokens.contains(&profiler),
        "a plain profiler token: {tokens}"
    );
    let profiler_line = format!("sha256:{} name=profiler", sha256_hex(&profiler));
    assert!(tokens.lines().any(|l| l == profiler_line), "{tokens}");

    // A second run keeps the certificates and the token; the Python
    // clients' token is added when asked for.
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let out = init(&certs, Some("sensor_token_abc"));
    assert!(out.status.success(), "second init:\n{}", output_text(&out));
    assert_eq!(
        std::fs::read(certs.join("ca.pem")).unwrap(),
        ca,
        "the CA was remade"
    );
    assert_eq!(std::fs::read_to_string(certs.join("token")).unwrap(), token);
    assert_eq!(
        std::fs::read_to_string(certs.join("profiler-token")).unwrap(),
        profiler
    );
    let tokens = std::fs::read_to_string(certs.join("tokens")).unwrap();
    assert!(tokens.lines().any(|l| l == token), "{tokens}");
    assert!(tokens.lines().any(|l| l == profiler_line), "{tokens}");
    assert!(tokens.lines().any(|l| l == "sensor_token_abc"), "{tokens}");

    // The server as compose runs it: TLS and the tokens file from the init.
    let mut serve = Serve::without_listen_flags();
    serve
        .command()
        .env("SENSORHUB_LISTEN", "127.0.0.1:0")
        .env("SENSORHUB_HTTP", "127.0.0.1:0")
        .env("SENSORHUB_TLS_CERT", certs.join("server.pem"))
        .env("SENSORHUB_TLS_KEY", certs.join("server.key"))
        .env("SENSORHUB_TOKENS_FILE", certs.join("tokens"))
        .env("SENSORHUB_DATA", dir.path().join("data"))
        .env("SENSORHUB_LOG_FORMAT", "json")
        .env("SENSORHUB_PPROF", "true")
        .env_remove("SENSORHUB_TOKENS");
    let server = serve.start();
    let (grpc, http) = (server.grpc, server.http);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = healthcheck(&format!("0.0.0.0:{http}"));
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the health check never passed:\n{}",
            output_text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let nothing = ClosedPort::new();
    let out = healthcheck(&format!("0.0.0.0:{}", nothing.port));
    assert!(
        !out.status.success(),
        "the health check passed with nothing listening"
    );
    let out = healthcheck("off");
    assert!(
        !out.status.success(),
        "the health check passed with --http off"
    );

    // Alloy's scrape, as deploy/alloy/config.alloy asks for it.
    let scrape = alloy_scrape();
    let url = format!(
        "http://127.0.0.1:{http}{}?seconds={}",
        scrape.path, scrape.seconds
    );
    let profile = reqwest::blocking::Client::new()
        .get(&url)
        .bearer_auth(&profiler)
        .timeout(Duration::from_secs(scrape.seconds + 20))
        .send()
        .unwrap();
    assert_eq!(profile.status(), 200, "{url}");
    let body = profile.bytes().unwrap();
    assert_eq!(body[..2], [0x1f, 0x8b], "not a gzipped pprof profile");

    // A sensor through the entrypoint: token from the file, TLS with the CA.
    let mut sensor = Command::new("sh");
    sensor
        .arg(script("entrypoint.sh"))
        .args([
            "sensor",
            "--mode",
            "unary",
            "--sensor-id",
            "entrypoint-sensor",
        ])
        .args(["--count", "3", "--interval-max", "10ms"])
        .env("PATH", path_with_binary())
        .env("SENSORHUB_SERVER", format!("https://localhost:{grpc}"))
        .env("SENSORHUB_CA", certs.join("ca.pem"))
        .env("SENSORHUB_TOKEN_FILE", certs.join("token"))
        .env_remove("SENSORHUB_TOKEN");
    clean_env(&mut sensor);
    let out = run(&mut sensor);
    assert!(
        out.status.success(),
        "sensor via the entrypoint:\n{}",
        output_text(&out)
    );

    let out = run(spawned_server::command()
        .args(["stats", "--server", &format!("https://localhost:{grpc}")])
        .env("SENSORHUB_CA", certs.join("ca.pem"))
        .env("SENSORHUB_TOKEN", &token));
    assert!(out.status.success(), "stats:\n{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("entrypoint-sensor"),
        "the sensor's readings were not stored:\n{}",
        output_text(&out)
    );

    // Without a readable token file the entrypoint refuses to start.
    let mut bad = Command::new("sh");
    bad.arg(script("entrypoint.sh"))
        .args(["sensor", "--count", "1"])
        .env("PATH", path_with_binary())
        .env("SENSORHUB_TOKEN_FILE", dir.path().join("missing"))
        .env_remove("SENSORHUB_TOKEN");
    let out = run(&mut bad);
    assert_eq!(out.status.code(), Some(64), "{}", output_text(&out));
    // Nor without a readable database URL file.
    let mut bad = Command::new("sh");
    bad.arg(script("entrypoint.sh"))
        .arg("serve")
        .env("PATH", path_with_binary())
        .env("SENSORHUB_DATABASE_URL_FILE", dir.path().join("missing"))
        .env_remove("SENSORHUB_DATABASE_URL");
    let out = run(&mut bad);
    assert_eq!(out.status.code(), Some(64), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("SENSORHUB_DATABASE_URL_FILE"),
        "{}",
        output_text(&out)
    );
    drop(server);
}

/// The digest the server's tokens file compares, as `sha256:` lines hold it.
fn sha256_hex(text: &str) -> String {
    use sensorhub_grpc::auth::tokens_file;
    tokens_file::hex(&tokens_file::digest(text.as_bytes()))
}

/// What deploy/alloy/config.alloy's `pyroscope.scrape` asks the server for.
struct AlloyScrape {
    path: String,
    seconds: u64,
}

/// Reads the few settings of deploy/alloy/config.alloy that must agree with
/// the server and compose: its target is the server's HTTP listener, its
/// token the profiler's file (mounted from the certificates volume), and
/// the profile it asks for one the server serves. No crate reads Alloy's
/// configuration language; the settings read here are `key = "value"` lines.
fn alloy_scrape() -> AlloyScrape {
    let config = std::fs::read_to_string(deploy().join("alloy/config.alloy")).unwrap();
    let value = |key: &str| -> String {
        let found: Vec<&str> = config
            .lines()
            .map(str::trim)
            .filter_map(|line| line.strip_prefix(key))
            .filter_map(|rest| rest.trim_start().strip_prefix('='))
            .map(|rest| rest.trim().trim_matches('"'))
            .collect();
        assert_eq!(found.len(), 1, "{key} in config.alloy: {found:?}");
        found[0].to_owned()
    };
    let compose = deploy_stack::compose();
    let server = deploy_stack::environment_of(&compose, "sensorhub");
    let http_port = server["SENSORHUB_HTTP"]
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        config.contains(&format!("\"__address__\" = \"sensorhub:{http_port}\"")),
        "Alloy does not scrape the server's HTTP listener (port {http_port})"
    );
    assert_eq!(
        server.get("SENSORHUB_PPROF").map(String::as_str),
        Some("true")
    );
    let token_file = value("bearer_token_file");
    let mounts: Vec<String> = compose["services"]["alloy"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(token_file, "/certs/profiler-token");
    assert!(mounts.contains(&"certs:/certs:ro".to_owned()), "{mounts:?}");
    assert!(
        config.contains("url = \"http://pyroscope:4040\""),
        "Alloy writes elsewhere than the stack's Pyroscope"
    );
    let seconds = value("delta_profiling_duration");
    let seconds: u64 = seconds.trim_end_matches('s').parse().unwrap();
    assert!((1..=60).contains(&seconds), "the server serves 1 to 60 s");
    AlloyScrape {
        path: value("path"),
        seconds,
    }
}

/// The alert log, started on port 0: the child, the port it reported and a
/// channel of its later stdout lines.
fn start_alert_log() -> (KillOnDrop, u16, mpsc::Receiver<String>) {
    let python = system_tools::python3();
    let mut child = Command::new(python)
        .arg(deploy().join("alert-log/alert_log.py"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn alert_log.py");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let child = KillOnDrop(child);
    let listening = wait_for_line(&rx, &["alert-log listening on"], Duration::from_secs(20));
    let port = listening
        .rsplit(':')
        .next()
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {listening:?}"));
    (child, port, rx)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &[&str], limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if needle.iter().all(|n| line.contains(n)) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {needle:?} within {limit:?}; saw {seen:?}"),
        }
    }
}

#[test]
fn the_alert_log_prints_and_lists_notifications() {
    let (_child, port, rx) = start_alert_log();
    assert_eq!(http::get(port, "/healthz").0, 200);
    let (status, page) = http::get(port, "/");
    assert_eq!(status, 200);
    assert!(page.contains("No notification"), "{page}");

    // Alertmanager's webhook payload (version 4).
    let notification = r#"{"version":"4","status":"firing","receiver":"alert-log",
        "groupLabels":{"alertname":"SensorSilent"},"commonLabels":{},"commonAnnotations":{},
        "alerts":[{"status":"firing","labels":{"alertname":"SensorSilent","severity":"warning","sensor_id":"sensor-7"},
        "annotations":{"summary":"Sensor sensor-7 went silent"},"startsAt":"2026-01-01T00:00:00Z"}]}"#;
    let (status, _) = http::post_json(port, "/alerts", notification);
    assert_eq!(status, 200);
    let line = wait_for_line(&rx, &["FIRING", "SensorSilent"], Duration::from_secs(5));
    assert!(line.contains("severity=warning"), "{line}");
    assert!(line.contains("sensor_id=sensor-7"), "{line}");
    assert!(line.contains("Sensor sensor-7 went silent"), "{line}");
    let (_, page) = http::get(port, "/");
    assert!(
        page.contains("SensorSilent") && page.contains("sensor-7"),
        "{page}"
    );
    assert_eq!(http::post_json(port, "/alerts", "not json").0, 400);
}

#[test]
fn alertmanager_with_the_project_config_notifies_the_alert_log() {
    let alertmanager = system_tools::alertmanager();
    let amtool = amtool();
    let (_log, log_port, rx) = start_alert_log();

    // The project's config, its webhook moved from the compose service to
    // the local alert log.
    let mut config = yaml(&deploy().join("alertmanager/alertmanager.yml"));
    let hook = &mut config["receivers"][0]["webhook_configs"][0]["url"];
    assert_eq!(hook.as_str(), Some("http://alert-log:8080/alerts"));
    *hook = serde_norway::Value::String(format!("http://127.0.0.1:{log_port}/alerts"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alertmanager.yml");
    std::fs::write(&file, serde_norway::to_string(&config).unwrap()).unwrap();

    let log = dir.path().join("alertmanager.log");
    let mut am = KillOnDrop(
        Command::new(&alertmanager)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn alertmanager"),
    );
    let web = listening_port(&mut am.0, &log);
    let url = format!("--alertmanager.url=http://127.0.0.1:{web}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(Command::new(&amtool).args([
            "alert",
            "add",
            &url,
            "alertname=SensorhubDown",
            "severity=page",
            "job=sensorhub",
            "--annotation=summary=the test's page",
        ]));
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "amtool alert add:\n{}",
            output_text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Pages have no group wait: the notification arrives at once.
    let line = wait_for_line(
        &rx,
        &["FIRING", "SensorhubDown", "severity=page"],
        Duration::from_secs(20),
    );
    assert!(line.contains("the test's page"), "{line}");
}
