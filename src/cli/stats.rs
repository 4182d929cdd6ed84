//! `sensorhub stats`: per-sensor analysis from the server.

use std::{io::Write, process::ExitCode};

use clap::Args;
use sensorhub_proto::{SensorStats, StatsRequest};

use super::{ClientMetricsArgs, ConnectArgs, call_error::CallError};
use crate::time_arg::format_time;

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub metrics: ClientMetricsArgs,
    /// Only this sensor. Default: every sensor.
    #[arg(long)]
    pub sensor_id: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Sensors asked for per page: the most a reply holds.
const PAGE: u32 = sensorhub_grpc::stats_paging::MAX_STATS_PER_REPLY as u32;

pub async fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connect.connect(&args.metrics).await?;
    // Every sensor: page by page, each reply's next_cursor asking for the next.
    let mut sensors = Vec::new();
    let mut cursor = String::new();
    loop {
        let request = StatsRequest {
            sensor_id: args.sensor_id.clone().unwrap_or_default(),
            limit: PAGE,
            cursor: std::mem::take(&mut cursor),
        };
        let reply = client
            .get_sensor_stats(request)
            .await
            .map_err(CallError::from)?
            .into_inner();
        sensors.extend(reply.sensors);
        if reply.next_cursor.is_empty() {
            break;
        }
        cursor = reply.next_cursor;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for s in &sensors {
            writeln!(out, "{}", stats_json(s))?;
        }
    } else {
        write_table(&mut out, &sensors)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn stats_json(s: &SensorStats) -> serde_json::Value {
    serde_json::json!({
        "sensor_id": s.sensor_id, "count": s.count, "min": s.min, "max": s.max, "mean": s.mean,
        "last": s.last, "last_timestamp": s.last_timestamp, "rolling_mean": s.rolling_mean, "alerts": s.alerts,
    })
}

/// The statistics table, shared with `demo`'s live summary.
pub fn write_table(out: &mut impl Write, sensors: &[SensorStats]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}  LAST SEEN (UTC)",
        "SENSOR", "READINGS", "MIN", "MAX", "MEAN", "ROLLING", "LAST", "ALERTS"
    )?;
    for s in sensors {
        writeln!(
            out,
            "{:<24} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}  {}",
            s.sensor_id,
            s.count,
            s.min,
            s.max,
            s.mean,
            s.rolling_mean,
            s.last,
            s.alerts,
            format_time(s.last_timestamp)
        )?;
    }
    if sensors.is_empty() {
        writeln!(out, "(no readings yet)")?;
    }
    Ok(())
}
