//! A live `sensorhub serve` configured as the compose file configures it, and
//! traffic that makes it expose every series the dashboards and rules read:
//! the compose file's own sensors (their commands, bounded), a wrong token,
//! refused readings, and readings that raise each temperature alert.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use sensorhub_grpc::{
    ClientConfig, SensorClient,
    testing::{reading, unix_now},
    tls::ClientTlsFiles,
};
use sensorhub_pki as pki;

use super::{
    deploy_stack::{compose, environment_of, local_sensor_args, sensor_services},
    exposition::{self, LabelValues},
    http,
    ports::ClosedPort,
    spawned_server::{Serve, SpawnedServer, command},
};

pub const TOKEN: &str = "deploy-test-token-5be1";

/// `sensorhub serve` with the OTEL_* settings of the compose file's
/// `sensorhub` service, batches flushed quickly, and the OTLP endpoint moved
/// to the returned port where nothing listens: the exports fail there, so
/// the SDK's `otel_sdk_exporter_*` series (with `error_type`) appear as in a
/// stack whose collector is down.
pub fn start_server(data: &Path) -> (DeployServer, ClosedPort) {
    start_server_storing(Storage::Data(data))
}

/// Where a deploy-configured server keeps its readings.
pub enum Storage<'a> {
    /// `--data DIR`, as compose runs it.
    Data(&'a Path),
    /// A replica: `SENSORHUB_DATABASE_URL` (the PostgreSQL panels' series).
    Database(&'a str),
}

/// [`start_server`], the readings kept where `storage` says.
pub fn start_server_storing(storage: Storage<'_>) -> (DeployServer, ClosedPort) {
    let collector = ClosedPort::new();
    let compose = compose();
    let service_env = environment_of(&compose, "sensorhub");
    assert!(
        service_env.get("OTEL_METRICS_EXPORTER").map(String::as_str) == Some("prometheus"),
        "compose: the server must not push its metrics over OTLP too (Prometheus scrapes it)"
    );
    let mut owned: Vec<(String, String)> = service_env
        .into_iter()
        .filter(|(key, _)| key.starts_with("OTEL_") || key == "SENSORHUB_ENABLE_METRICS")
        .map(|(key, value)| {
            if key == "OTEL_EXPORTER_OTLP_ENDPOINT" {
                (key, collector.url())
            } else {
                (key, value)
            }
        })
        .collect();
    assert!(
        owned
            .iter()
            .any(|(key, _)| key == "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "compose: the server exports traces and logs to the collector"
    );
    for (key, value) in [
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
    ] {
        owned.push((key.to_owned(), value.to_owned()));
    }
    // TLS, as in compose (its handshakes are on the dashboards).
    let certs_dir = tempfile::tempdir().expect("temp dir");
    let certs = pki::generate(&[])
        .expect("certificates")
        .write_to(certs_dir.path())
        .expect("write certificates");
    let mut serve = Serve::new();
    serve
        .command()
        .args(["--shutdown-grace", "2s"])
        .arg("--tls-cert")
        .arg(&certs.server_cert)
        .arg("--tls-key")
        .arg(&certs.server_key)
        .env("SENSORHUB_TOKENS", TOKEN)
        .envs(owned);
    match storage {
        Storage::Data(data) => serve.command().arg("--data").arg(data),
        Storage::Database(url) => serve.command().env("SENSORHUB_DATABASE_URL", url),
    };
    let server = serve.start();
    let url = format!("https://localhost:{}", server.grpc);
    let server = DeployServer {
        server,
        url,
        ca: certs.ca_cert.clone(),
        _certs: certs_dir,
    };
    (server, collector)
}

/// The server of [`start_server`]: TLS with a CA of its own.
pub struct DeployServer {
    pub server: SpawnedServer,
    /// `https://localhost:PORT`.
    pub url: String,
    /// The CA its clients trust.
    pub ca: PathBuf,
    _certs: tempfile::TempDir,
}

impl DeployServer {
    /// The HTTP listener's port.
    pub fn http(&self) -> u16 {
        self.server.http
    }

    /// A `sensorhub` command that reaches the server: `--server` and `--ca`
    /// are set (after `args`, the subcommand and its flags).
    pub fn sensor_command(&self, args: &[String]) -> std::process::Command {
        let mut command = command();
        command
            .args(args)
            .args(["--server", &self.url])
            .arg("--ca")
            .arg(&self.ca);
        command
    }

    /// A client over TLS that sends `token`.
    pub async fn client(&self, token: &str) -> SensorClient {
        let mut config = ClientConfig::new(self.url.clone());
        config.tls = ClientTlsFiles {
            ca: Some(self.ca.clone()),
            cert: None,
            key: None,
            domain: None,
        };
        config.token = Some(token.to_owned());
        sensorhub_grpc::connect(&config).await.expect("connect")
    }

    /// SIGTERM, then its output and how long it took to stop.
    pub fn terminate(self, limit: Duration) -> (Output, Duration) {
        self.server.terminate(limit)
    }
}

/// Runs `sensorhub <args>` against the server with `token`; its exit status.
fn sensor(server: &DeployServer, token: &str, args: &[String]) -> std::process::Child {
    server
        .sensor_command(args)
        .env("SENSORHUB_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sensorhub sensor")
}

/// The traffic described at the top of this file.
pub async fn drive(server: &DeployServer) {
    let compose = compose();

    // The compose file's own sensors, as compose runs them, bounded.
    let sensors = sensor_services(&compose);
    assert!(sensors.len() >= 4, "{sensors:?}");
    let children: Vec<_> = sensors
        .iter()
        .map(|service| {
            let args = local_sensor_args(&compose, service, 12);
            (service.clone(), sensor(server, TOKEN, &args))
        })
        .collect();
    // A sensor with a wrong token; one hot and one cold sensor for the
    // above_max and below_min alerts (45 and -30 °C by default).
    let wrong = sensor(
        server,
        "not-the-token",
        &[
            "sensor",
            "--mode",
            "unary",
            "--count",
            "2",
            "--interval-max",
            "10ms",
        ]
        .map(String::from),
    );
    let hot = sensor(
        server,
        TOKEN,
        &[
            "sensor",
            "--mode",
            "unary",
            "--sensor-id",
            "deploy-hot",
            "--base-temperature",
            "60",
            "--count",
            "3",
            "--interval-max",
            "10ms",
        ]
        .map(String::from),
    );
    let cold = sensor(
        server,
        TOKEN,
        &[
            "sensor",
            "--mode",
            "unary",
            "--sensor-id",
            "deploy-cold",
            "--base-temperature=-50",
            "--count",
            "3",
            "--interval-max",
            "10ms",
        ]
        .map(String::from),
    );

    // Refused readings (validation) and a jump from the rolling mean.
    let mut ok = server.client(TOKEN).await;
    for (temperature, timestamp) in [(5000.0, unix_now()), (20.0, 0)] {
        let refused = ok
            .send_single_reading(reading("deploy-refused", temperature, timestamp))
            .await
            .expect_err("an invalid reading is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    // Jump alerts start after a 5-reading warm-up.
    for temperature in [20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 35.0] {
        ok.send_single_reading(reading("deploy-jump", temperature, unix_now()))
            .await
            .expect("SendSingleReading");
    }

    for (service, child) in children
        .into_iter()
        .chain([("hot".to_owned(), hot), ("cold".to_owned(), cold)])
    {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sensor {service} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = wrong.wait_with_output().unwrap();
}

/// Scrapes /metrics until every name in `wanted` is there (calls are
/// recorded as they end, exports fail a moment later).
pub async fn scrape_until(server: &DeployServer, wanted: &[&str]) -> (String, LabelValues) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, page) = http::get(server.http(), "/metrics");
        let exposition = exposition::label_values(&exposition::samples(&page));
        let missing: Vec<&&str> = wanted
            .iter()
            .filter(|name| !exposition.contains_key(**name))
            .collect();
        if status == 200 && missing.is_empty() {
            return (page, exposition);
        }
        assert!(
            Instant::now() < deadline,
            "/metrics ({status}) still lacks {missing:?}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One reading through `server`: enough for a replica's store series.
pub async fn write_one(server: &DeployServer) {
    server
        .client(TOKEN)
        .await
        .send_single_reading(reading("deploy-replica", 21.0, unix_now()))
        .await
        .expect("a write through the replica");
}

/// Series a replica on PostgreSQL has once [`write_one`] was recorded.
pub const ON_A_REPLICA: &[&str] = &[
    "db_client_connection_count",
    "db_client_connection_max",
    "db_client_connection_wait_time_seconds_bucket",
    "db_client_connection_use_time_seconds_bucket",
    "sensorhub_store_commit_duration_seconds_bucket",
];

/// Series that only appear after [`drive`]'s traffic has been recorded.
pub const AFTER_TRAFFIC: &[&str] = &[
    "grpc_server_call_duration_seconds_bucket",
    "sensorhub_readings_refused_total",
    "sensorhub_alerts_raised_total",
    "sensorhub_streams_active",
    "otel_sdk_exporter_span_exported_total",
    "otel_sdk_exporter_log_exported_total",
];
