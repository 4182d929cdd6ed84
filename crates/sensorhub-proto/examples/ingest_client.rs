//! A plain tonic ingest client: the other feeder of the ingest benchmark
//! (bench/rpc/ingest.sh), beside `sensorhub load`.
//!
//! Why a second client: `sensorhub load` encodes every message once, before
//! the run, and replays the bytes, so its streams cost the two cores little
//! and leave the server more of them than real senders would. This client is
//! what a gateway forwarding readings looks like: the generated
//! `SensorServiceClient` on a multi-thread runtime, each reading built (sensor
//! id, temperature, the current Unix second) and encoded by tonic as the
//! stream is polled. It opens `--streams` connections and keeps one
//! `StreamSensorReadings` call of `--batch` readings in flight on each, its
//! readings cycling over that stream's share of `--sensors` sensor ids.
//! TLS (`--ca`) and a token (`--token`, sent as `authorization`) let it drive
//! both bare tonic and sensorhub.
//!
//! It prints the readings acknowledged per second, counted from calls that
//! end after the warm-up, over the time from the warm-up to the last of them.
//!
//! ```sh
//! cargo run --release -p sensorhub-proto --example ingest_client -- \
//!     --server https://127.0.0.1:50051 --ca ca.pem --token TOKEN \
//!     [--streams 4] [--batch 10000] [--sensors 100] [--duration 10] [--warmup 1] [--json]
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sensorhub_proto::{SensorReading, sensor_service_client::SensorServiceClient};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

struct Options {
    server: String,
    ca: Option<String>,
    token: Option<String>,
    streams: usize,
    batch: u64,
    sensors: usize,
    duration: Duration,
    warmup: Duration,
    json: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: ingest_client --server URL [--ca PEM] [--token TOKEN] [--streams N] [--batch N]\n\
         \x20                    [--sensors N] [--duration SECONDS] [--warmup SECONDS] [--json]\n\
         defaults: 4 streams (one connection each), calls of 10,000 readings, 100 sensors, 10 s, 1 s warm-up"
    );
    std::process::exit(2);
}

fn options() -> Options {
    let mut options = Options {
        server: String::new(),
        ca: None,
        token: None,
        streams: 4,
        batch: 10_000,
        sensors: 100,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        json: false,
    };
    let mut args = std::env::args().skip(1);
    let seconds = |v: String| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage()));
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--server" => options.server = value(),
            "--ca" => options.ca = Some(value()),
            "--token" => options.token = Some(value()),
            "--streams" => options.streams = value().parse().unwrap_or_else(|_| usage()),
            "--batch" => options.batch = value().parse().unwrap_or_else(|_| usage()),
            "--sensors" => options.sensors = value().parse().unwrap_or_else(|_| usage()),
            "--duration" => options.duration = seconds(value()),
            "--warmup" => options.warmup = seconds(value()),
            "--json" => options.json = true,
            _ => usage(),
        }
    }
    if options.server.is_empty() || options.streams == 0 || options.batch == 0 {
        usage();
    }
    options.sensors = options.sensors.max(options.streams);
    options
}

async fn connect(options: &Options) -> Result<Channel, Box<dyn std::error::Error>> {
    let mut endpoint = Endpoint::from_shared(options.server.clone())?.tcp_nodelay(true);
    if let Some(ca) = &options.ca {
        let ca = Certificate::from_pem(std::fs::read(ca)?);
        endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(ca))?;
    }
    Ok(endpoint.connect().await?)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What every stream adds to.
#[derive(Default)]
struct Totals {
    readings: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    /// Nanoseconds after the warm-up at which the last counted call ended.
    last_end_ns: AtomicU64,
}

/// One connection's calls, back to back, until `end`.
async fn stream(
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    sensors: Arc<Vec<String>>,
    batch: u64,
    measure_from: Instant,
    end: Instant,
    totals: Arc<Totals>,
) {
    let mut client = SensorServiceClient::new(channel);
    let mut n = 0u64;
    while Instant::now() < end {
        let sensors = sensors.clone();
        let first = n;
        // Built and encoded as tonic polls the stream, one reading at a time.
        let readings = tokio_stream::iter((0..batch).map(move |i| {
            let k = first + i;
            SensorReading {
                sensor_id: sensors[(k % sensors.len() as u64) as usize].clone(),
                temperature: 20.0 + (k % 1000) as f64 / 100.0,
                timestamp: unix_now(),
            }
        }));
        n += batch;
        let mut request = Request::new(readings);
        if let Some(token) = &token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        let result = client.stream_sensor_readings(request).await;
        let ended = Instant::now();
        if ended < measure_from {
            continue;
        }
        match result {
            Ok(ack) => {
                totals
                    .readings
                    .fetch_add(ack.into_inner().count, Ordering::Relaxed);
                totals.calls.fetch_add(1, Ordering::Relaxed);
                let at = ended.duration_since(measure_from).as_nanos() as u64;
                totals.last_end_ns.fetch_max(at, Ordering::Relaxed);
            }
            Err(status) => {
                if totals.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("ingest_client: a call failed: {status}");
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    let token = options
        .token
        .as_deref()
        .map(MetadataValue::try_from)
        .transpose()?;
    let mut channels = Vec::with_capacity(options.streams);
    for _ in 0..options.streams {
        channels.push(connect(&options).await?);
    }
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let totals = Arc::new(Totals::default());
    let mut tasks = Vec::new();
    for (s, channel) in channels.into_iter().enumerate() {
        // Stream s sends sensors s, s + streams, s + 2 × streams, …
        let share: Vec<String> = (s..options.sensors)
            .step_by(options.streams)
            .map(|i| format!("ingest-{i:05}"))
            .collect();
        tasks.push(tokio::spawn(stream(
            channel,
            token.clone(),
            Arc::new(share),
            options.batch,
            measure_from,
            end,
            totals.clone(),
        )));
    }
    for task in tasks {
        task.await?;
    }
    let readings = totals.readings.load(Ordering::Relaxed);
    let seconds = (totals.last_end_ns.load(Ordering::Relaxed) as f64 / 1e9).max(1e-9);
    let per_s = readings as f64 / seconds;
    let (calls, errors) = (
        totals.calls.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed),
    );
    if options.json {
        println!(
            "{{\"readings\": {readings}, \"seconds\": {seconds:.3}, \"readings_per_s\": {per_s:.0}, \"calls\": {calls}, \"errors\": {errors}}}"
        );
    } else {
        println!(
            "{readings} readings in {seconds:.2} s: {per_s:.0} readings/s ({calls} calls, {errors} failed)"
        );
    }
    Ok(())
}
