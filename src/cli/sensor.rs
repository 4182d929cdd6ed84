//! `sensorhub sensor`: one simulated sensor against a server.

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Args;

use super::{ClientMetricsArgs, ConnectArgs};
use crate::simulator::{self, Counters, Mode, SensorConfig, Stop};

#[derive(Debug, Args)]
pub struct SensorArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub metrics: ClientMetricsArgs,
    /// Which RPC to use; `random` picks one per cycle, as the original clients did.
    #[arg(long, value_enum, default_value = "random")]
    pub mode: Mode,
    /// The sensor's id [default: sensor-<random>].
    #[arg(long)]
    pub sensor_id: Option<String>,
    /// Stop after this many calls (chat: readings). Default: run until Ctrl-C.
    #[arg(long)]
    pub count: Option<u64>,
    /// Longest pause between calls; each pause is random in [0, this].
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval_max: Duration,
    /// Readings per client-streaming call.
    #[arg(long, default_value_t = 5)]
    pub batch: usize,
    /// Temperature the random walk drifts around, °C.
    #[arg(long, default_value_t = 25.0, allow_hyphen_values = true)]
    pub base_temperature: f64,
    /// Chance per reading of a spike of 8–12 °C (exercises the jump alert).
    #[arg(long, default_value_t = 0.02)]
    pub spike_probability: f64,
    /// Whose readings server-streaming calls read back [default: its own].
    #[arg(long)]
    pub query_sensor: Option<String>,
    /// How long one call may take (a chat: each reading's reply, and its opening).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: SensorArgs) -> anyhow::Result<ExitCode> {
    let client = args.connect.connect(&args.metrics).await?;
    let sensor_id = args
        .sensor_id
        .unwrap_or_else(|| format!("sensor-{:04x}", rand::random::<u16>()));
    tracing::info!(sensor = %sensor_id, mode = ?args.mode, server = %args.connect.target(), "sensor started");
    // Ctrl-C or SIGTERM cancels a call in progress; a chat open between
    // calls is ended cleanly.
    let stop = Stop::new();
    super::cancel_on_shutdown_signal(stop.abort_token());
    let config = SensorConfig {
        sensor_id,
        mode: args.mode,
        interval_max: args.interval_max,
        batch: args.batch,
        count: args.count,
        base_temperature: args.base_temperature,
        spike_probability: args.spike_probability,
        query_sensor: args.query_sensor,
        timeout: args.timeout,
    };
    let failures = simulator::run(client, config, Arc::new(Counters::default()), stop).await;
    if failures > 0 {
        eprintln!("{failures} calls failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
