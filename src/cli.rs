//! The command line: one subcommand per job. Every `serve` flag can also be
//! set from a `SENSORHUB_*` environment variable, so containers are
//! configured by env; client commands read `SENSORHUB_SERVER`,
//! `SENSORHUB_CA`, `SENSORHUB_TOKEN` and `SENSORHUB_CLIENT_ENABLE_METRICS`
//! (not `SENSORHUB_ENABLE_METRICS`, which names the server's in its
//! container).

mod call_error;
mod certs;
mod demo;
mod load;
mod readings;
mod sensor;
mod serve;
mod stats;
mod token;

pub use call_error::CallError;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use sensorhub_grpc::{
    ClientConfig, SensorClient,
    optional_metrics::{OptionalMetrics, Side},
    tls::ClientTlsFiles,
};
use sensorhub_telemetry::pipeline::{
    ConsoleFormat, PipelineOptions, SpanRecorder, Telemetry, TraceRing,
};

/// Console log format (`RUST_LOG` sets the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "sensorhub", version, about = "Collect, store and analyse temperature readings over gRPC", long_about = None)]
pub struct Cli {
    /// Console log format.
    #[arg(
        long,
        global = true,
        env = "SENSORHUB_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a CA and server/client certificates signed by it.
    Certs(certs::CertsArgs),
    /// Run the gRPC server.
    Serve(serve::ServeArgs),
    /// Run a simulated temperature sensor against a server.
    Sensor(sensor::SensorArgs),
    /// Print a sensor's stored readings (and follow new ones).
    Readings(readings::ReadingsArgs),
    /// Print per-sensor statistics: count, min, max, mean, last, alerts.
    Stats(stats::StatsArgs),
    /// Everything at once, no Docker: a server, four sensors and a live summary.
    Demo(demo::DemoArgs),
    /// Make credentials: `token new` prints a random token and its tokens-file line.
    Token(token::TokenArgs),
    /// Generate load: a fleet of simulated sensors, closed or open loop; report throughput and latency.
    Load(load::LoadArgs),
}

impl Cli {
    /// What this command wants from telemetry; the `OTEL_*` environment
    /// decides the rest (see the README's Observability section).
    pub fn pipeline_options(&self) -> PipelineOptions {
        let (service_name, console_level, prometheus_served, recorder) = match &self.command {
            Command::Serve(args) => ("sensorhub", "info", args.http_enabled(), None),
            Command::Sensor(_) => ("sensorhub-sensor", "info", false, None),
            // Server and sensors in one process: one service, and the spans
            // kept in memory to print a trace tree.
            Command::Demo(_) => ("sensorhub", "warn", true, Some(SpanRecorder::new())),
            // Its calls go out without a telemetry layer: no span per call.
            Command::Load(_) => ("sensorhub-load", "warn", false, None),
            Command::Certs(_) | Command::Readings(_) | Command::Stats(_) | Command::Token(_) => {
                ("sensorhub-sensor", "warn", false, None)
            }
        };
        PipelineOptions {
            service_name,
            service_version: env!("CARGO_PKG_VERSION"),
            console: match self.log_format {
                LogFormat::Pretty => ConsoleFormat::Pretty,
                LogFormat::Json => ConsoleFormat::Json,
            },
            console_level,
            export_level: "info",
            prometheus_served,
            recorder,
            // The live view's trace ring, fed by the pipeline when the view is on.
            trace_ring: match &self.command {
                Command::Serve(args) => args.view_enabled().then(TraceRing::new),
                Command::Demo(_) => Some(TraceRing::new()),
                _ => None,
            },
        }
    }
}

impl Command {
    pub async fn run(self, telemetry: &Telemetry) -> anyhow::Result<ExitCode> {
        match self {
            Command::Certs(args) => certs::run(args),
            Command::Serve(args) => serve::run(args, telemetry).await,
            Command::Sensor(args) => sensor::run(args).await,
            Command::Readings(args) => readings::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Demo(args) => demo::run(args, telemetry).await,
            Command::Load(args) => load::run(args).await,
            Command::Token(args) => token::run(args),
        }
    }
}

/// How client commands reach the server.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Server URL: https://HOST:PORT, or http://HOST:PORT for a server run
    /// with --insecure. Repeat it (or give a name with several addresses)
    /// for replicas: calls are balanced over every address, and one that
    /// fails its health checks gets none until it recovers.
    #[arg(
        long = "server",
        env = "SENSORHUB_SERVER",
        value_delimiter = ',',
        default_value = "https://localhost:50051"
    )]
    pub servers: Vec<String>,
    /// CA certificate to trust (PEM). Default: the system's roots.
    #[arg(long, env = "SENSORHUB_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate for servers that require one (mutual TLS).
    #[arg(long, env = "SENSORHUB_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key of --client-cert.
    #[arg(long, env = "SENSORHUB_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Name to verify the server certificate against, if not the URL's host.
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Token sent as `authorization` metadata.
    #[arg(long, env = "SENSORHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How often the host names of --server are looked up again, so that
    /// calls follow a name's addresses as they change; `0s`: never on a
    /// timer. A name is also looked up again at once when every address it
    /// has fails its health check, or the call to its only address fails.
    #[arg(long, env = "SENSORHUB_DNS_REFRESH", default_value = "30s", value_parser = humantime::parse_duration)]
    pub dns_refresh: Duration,
}

impl ConnectArgs {
    /// The servers as one name, for messages.
    pub fn target(&self) -> String {
        self.servers.join(",")
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            replicas: self.servers.iter().skip(1).cloned().collect(),
            tls: ClientTlsFiles {
                ca: self.ca.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
                domain: self.tls_server_name.clone(),
            },
            token: self.token.clone(),
            dns_refresh: self.dns_refresh,
            ..ClientConfig::new(self.servers.first().cloned().unwrap_or_default())
        }
    }

    /// Connects, recording the optional metrics `metrics` names.
    pub async fn connect(&self, metrics: &ClientMetricsArgs) -> anyhow::Result<SensorClient> {
        let mut config = self.config();
        config.retry_metrics = metrics.enabled()?.retry;
        Ok(sensorhub_grpc::connect(&config).await?)
    }
}

/// The optional metrics of a client command whose calls are measured
/// (`sensor`, `readings`, `stats`; `load` makes no metric per call).
#[derive(Debug, Clone, Args)]
pub struct ClientMetricsArgs {
    /// Optional metrics to switch on (comma-separated; off by default, as
    /// gRFC A79 has experimental metrics): gRFC A96's
    /// grpc.client.call.transparent_retries (calls sent again because no
    /// attempt had sent them) and grpc.client.call.retry_delay (time between
    /// their attempts). grpc.client.call.retries and .hedges are accepted
    /// and never recorded: there is no retry policy and no hedging.
    #[arg(long, env = "SENSORHUB_CLIENT_ENABLE_METRICS", value_delimiter = ',')]
    pub enable_metrics: Vec<String>,
}

impl ClientMetricsArgs {
    /// The metrics named, checked (`serve`'s parser, for a client).
    pub fn enabled(&self) -> anyhow::Result<OptionalMetrics> {
        Ok(OptionalMetrics::enable(&self.enable_metrics, Side::Client)?)
    }
}

/// Cancels `stop` on Ctrl-C or SIGTERM, from a task of its own.
pub fn cancel_on_shutdown_signal(stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
