//! `sensorhub readings`: a sensor's stored readings through the
//! server-streaming call, as a table or JSON lines; `--follow` keeps tailing.

use std::{io::Write, process::ExitCode};

use clap::Args;
use futures_util::StreamExt;
use sensorhub_proto::SensorRequest;

use super::{ClientMetricsArgs, ConnectArgs, call_error::CallError};
use crate::time_arg::{format_time, parse_time};

#[derive(Debug, Args)]
pub struct ReadingsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub metrics: ClientMetricsArgs,
    /// The sensor whose readings to print.
    #[arg(long)]
    pub sensor_id: String,
    /// Only readings at or after this time: Unix seconds, RFC 3339, or a duration ago (15m).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only readings before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// At most this many readings of history: the first N from --since, or with --follow
    /// the last N before following (like `tail -n N -f`).
    #[arg(long)]
    pub limit: Option<u64>,
    /// After the history, keep printing new readings as they are stored (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ReadingsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connect.connect(&args.metrics).await?;
    let request = SensorRequest {
        sensor_id: args.sensor_id,
        since: args.since.unwrap_or(0),
        until: args.until.unwrap_or(0),
        limit: args.limit.unwrap_or(0),
        follow: args.follow,
    };
    let mut stream = client
        .get_sensor_readings(request)
        .await
        .map_err(CallError::from)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:<22} {:<24} {:>12}",
            "TIME (UTC)", "SENSOR", "TEMPERATURE"
        )?;
    }
    let print = async {
        while let Some(reading) = stream.next().await {
            let r = reading.map_err(CallError::from)?;
            if args.json {
                let line = serde_json::json!({"sensor_id": r.sensor_id, "temperature": r.temperature, "timestamp": r.timestamp});
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{:<22} {:<24} {:>10.2} °C",
                    format_time(r.timestamp),
                    r.sensor_id,
                    r.temperature
                )?;
            }
            if args.follow {
                out.flush()?;
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        printed = print => printed?,
        _ = super::shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}
