//! `sensorhub demo`: the whole system in one command, no Docker. A temporary
//! CA and token, the server on a durable store in a temporary directory,
//! four simulated sensors (one per RPC kind, as the original architecture
//! has it), and a summary in the terminal every few seconds: the stored
//! statistics, the server's RPC metrics (the same series `/metrics` serves)
//! and, at the end, one complete trace as a tree.

use std::{
    collections::BTreeMap, io::Write, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration,
};

use anyhow::Context;
use clap::Args;
use sensorhub_grpc::{
    ClientConfig, ServerConfig,
    auth::TokenSet,
    tls::{ClientTlsFiles, ServerTlsFiles},
};
use sensorhub_pki as pki;
use sensorhub_proto::StatsRequest;
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};
use sensorhub_telemetry::pipeline::Telemetry;
use tokio::time::Instant;

use super::call_error::CallError;
use crate::simulator::{self, Counters, Kind, Mode, SensorConfig, Stop};

/// How long the sensors get to finish their calls when the demo stops.
const SENSORS_FINISH: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s). Default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How often to print the summary.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Longest pause between a sensor's calls.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval_max: Duration,
    /// Keep the temporary directory (certificates, token, data) and print its path.
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(args: DemoArgs, telemetry: &Telemetry) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("sensorhub-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let certs = pki::generate(&[])?.write_to(&dir.path().join("certs"))?;
    let token = format!("demo-{:032x}", rand::random::<u128>());

    let tls = ServerTlsFiles {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: None,
    };
    let mut server_config = ServerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(tls),
        Some(TokenSet::new([&token])?),
    );
    server_config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    server_config.shutdown_grace = Duration::from_secs(3);
    server_config.exemplars = telemetry.prometheus().and_then(|p| p.exemplars());
    server_config.metrics = telemetry.prometheus().map(super::serve::metrics_endpoint);
    server_config.live = Some(sensorhub_grpc::LiveSettings {
        traces: telemetry.trace_ring(),
        jaeger_url: None,
    });
    let store = std::sync::Arc::new(EmbeddedStore::open(EmbeddedConfig::new(
        StoreLocation::Directory(dir.path().join("data")),
    ))?);
    let server = sensorhub_grpc::start(server_config, store).await?;

    let url = format!("https://localhost:{}", server.grpc_addr().port());
    let mut client_config = ClientConfig::new(url.clone());
    client_config.tls = ClientTlsFiles {
        ca: Some(certs.ca_cert.clone()),
        ..Default::default()
    };
    client_config.token = Some(token.clone());

    println!("sensorhub demo");
    if let Some(http) = server.http_addr() {
        // First, so a person can open it: the page, and what to log in with.
        println!("  open     http://{http}/  (the live view; log in with the token)");
        println!("  token    {token}");
    }
    println!(
        "  server   {url}  (TLS, token required; health and /metrics on http://{})",
        server
            .http_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    println!("  data     {}", dir.path().display());
    println!(
        "  try      sensorhub stats --server {url} --ca {} --token {token}",
        certs.ca_cert.display()
    );
    println!(
        "  four sensors, one per RPC kind; {}",
        match args.duration {
            Some(d) => format!("stopping after {}", humantime::format_duration(d)),
            None => "Ctrl-C to stop".into(),
        }
    );
    println!();

    let stop = Stop::new();
    let counters = Arc::new(Counters::default());
    let mut sensors = Vec::new();
    for (sensor_id, mode, query_sensor) in [
        ("sensor-unary", Mode::Unary, None),
        ("sensor-client-stream", Mode::ClientStream, None),
        ("sensor-chat", Mode::Chat, None),
        // The server-streaming sensor reads back another's history, as a dashboard would.
        (
            "sensor-server-stream",
            Mode::ServerStream,
            Some("sensor-unary".to_owned()),
        ),
    ] {
        let client = sensorhub_grpc::connect(&client_config).await?;
        let config = SensorConfig {
            sensor_id: sensor_id.into(),
            mode,
            interval_max: args.interval_max,
            batch: 5,
            count: None,
            base_temperature: 22.0,
            spike_probability: 0.03,
            query_sensor,
            timeout: Duration::from_secs(10),
        };
        sensors.push(tokio::spawn(simulator::run(
            client,
            config,
            counters.clone(),
            stop.clone(),
        )));
    }

    let mut client = sensorhub_grpc::connect(&client_config).await?;
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut ticker = tokio::time::interval_at(started + args.every, args.every);
    let signal = super::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
            _ = ticker.tick() => print_summary(&mut client, &counters, started.elapsed(), telemetry).await,
        }
    }

    // Each sensor finishes its call in progress and ends its chat with a
    // half-close, so the last table shows completed calls, not CANCELLED
    // ones. A sensor still busy after a few seconds is cancelled.
    stop.finish();
    let abort_later = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(SENSORS_FINISH).await;
            stop.abort();
        }
    });
    for sensor in sensors {
        let _ = sensor.await;
    }
    abort_later.abort();
    print_summary(&mut client, &counters, started.elapsed(), telemetry).await;
    match telemetry.recorder().and_then(|r| r.render_complete_trace()) {
        Some(tree) => {
            println!("one complete trace (client span → server span → internal spans):\n{tree}")
        }
        None if telemetry.recorder().is_none() => {
            println!("tracing is off (OTEL_SDK_DISABLED or OTEL_TRACES_SAMPLER)")
        }
        None => println!("no complete trace recorded yet: run the demo a little longer"),
    }
    drop(client);
    server.shutdown().await?;
    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    println!("demo stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

async fn print_summary(
    client: &mut sensorhub_grpc::SensorClient,
    counters: &Counters,
    elapsed: Duration,
    telemetry: &Telemetry,
) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "── after {}s ──", elapsed.as_secs());
    let calls: Vec<String> = Kind::ALL
        .iter()
        .map(|k| {
            format!(
                "{} {} ok / {} failed",
                k.name(),
                counters.ok(*k),
                counters.failed(*k)
            )
        })
        .collect();
    let _ = writeln!(out, "calls: {}", calls.join(", "));
    let _ = writeln!(
        out,
        "readings stored: {}, read back: {}, chat alerts: {}",
        counters
            .readings_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        counters
            .readings_received
            .load(std::sync::atomic::Ordering::Relaxed),
        counters
            .alerts_received
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    match client.get_sensor_stats(StatsRequest::default()).await {
        Ok(reply) => {
            let _ = super::stats::write_table(&mut out, &reply.into_inner().sensors);
        }
        Err(status) => {
            let _ = writeln!(out, "stats unavailable: {}", CallError::describe(&status));
        }
    }
    if let Some(prometheus) = telemetry.prometheus() {
        let _ = write_rpc_metrics(&mut out, &prometheus.render());
    }
    let _ = writeln!(out);
}

/// The server's calls per method and status, with their mean latency, read
/// from the A66 histogram `grpc_server_call_duration_seconds` in the
/// Prometheus text (the series a dashboard would query).
fn write_rpc_metrics(out: &mut impl Write, prometheus_text: &str) -> std::io::Result<()> {
    let mut rows: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for line in prometheus_text.lines() {
        let (series, is_count) =
            if let Some(rest) = line.strip_prefix("grpc_server_call_duration_seconds_count{") {
                (rest, true)
            } else if let Some(rest) = line.strip_prefix("grpc_server_call_duration_seconds_sum{") {
                (rest, false)
            } else {
                continue;
            };
        let Some((labels, value)) = series.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let entry = rows
            .entry((label("grpc_method"), label("grpc_status")))
            .or_default();
        if is_count {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out, "server RPCs (grpc.server.call.duration):")?;
    writeln!(
        out,
        "  {:<38} {:<18} {:>8} {:>10}",
        "method", "status", "calls", "mean ms"
    )?;
    for ((method, status), (count, sum)) in rows {
        let mean_ms = if count > 0.0 { sum / count * 1e3 } else { 0.0 };
        writeln!(
            out,
            "  {method:<38} {status:<18} {count:>8} {mean_ms:>10.2}"
        )?;
    }
    Ok(())
}
