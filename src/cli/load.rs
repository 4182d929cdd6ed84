//! `sensorhub load`: a load generator for SensorService servers (this one,
//! the bare tonic example, the Python original).
//!
//! A fleet of `--sensors` simulated sensors over `--connections` HTTP/2
//! connections makes calls of one kind (`--mode`) or a mix. Closed loop by
//! default: `--concurrency` calls in flight, each replaced as soon as it
//! finishes. Open loop with `--rate`: calls are due on a fixed timeline and
//! latency is measured from when each was due, so a server that stalls
//! cannot hide it by slowing the client down (coordinated omission).
//!
//! The hot path does as little as it can: messages are encoded once before
//! the run ([`fleet`]), history readings are counted without decoding
//! ([`wire`]), each worker counts into its own histogram ([`tally`]) and no
//! span or metric is made per call.

mod driver;
mod fleet;
mod report;
mod tally;
mod wire;

use std::{
    io::IsTerminal as _,
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sensorhub_grpc::client::replicas::ReplicaSet;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::{
    driver::{Job, Plan},
    fleet::Fleet,
    report::{Report, thousands},
    tally::{Live, Tally},
};
use super::{ConnectArgs, call_error::CallError};
use crate::{simulator::Kind, time_arg::unix_now};

/// Which calls `load` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// SendSingleReading: one reading per call.
    Unary,
    /// StreamSensorReadings: `--batch` readings per call.
    ClientStream,
    /// GetSensorReadings: read back `--query-sensor`'s history per call.
    ServerStream,
    /// SensorChat: `--concurrency` long-lived streams; a call is one reading and its reply.
    Chat,
    /// Unary, client-stream, server-stream and short chat calls in turn (see `--mix`).
    Mix,
}

impl LoadMode {
    fn name(self) -> &'static str {
        match self {
            LoadMode::Unary => "unary",
            LoadMode::ClientStream => "client-stream",
            LoadMode::ServerStream => "server-stream",
            LoadMode::Chat => "chat",
            LoadMode::Mix => "mix",
        }
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Which calls to make.
    #[arg(long, value_enum, default_value = "unary")]
    pub mode: LoadMode,
    /// Simulated sensors (distinct sensor ids), spread over the connections.
    #[arg(long, default_value_t = 100)]
    pub sensors: usize,
    /// Sensor ids are this prefix and a 5-digit number.
    #[arg(long, default_value = "load-")]
    pub sensor_prefix: String,
    /// HTTP/2 connections, each driven by its own worker.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Closed loop: calls kept in flight. Open loop: most calls in flight
    /// [default: 1000]. Chat: streams held open.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: calls per second on a fixed schedule (chat: readings per
    /// second; client-stream: calls of --batch readings). Without it (and
    /// --readings-rate), closed loop.
    #[arg(long, conflicts_with = "readings_rate")]
    pub rate: Option<f64>,
    /// Open loop, in readings per second sent: --rate times readings per call.
    #[arg(long)]
    pub readings_rate: Option<f64>,
    /// How long to send [default: 10s, unless --count].
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Make exactly this many calls (chat: readings), then stop.
    #[arg(long)]
    pub count: Option<u64>,
    /// Run this long before counting (added to --duration).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s", conflicts_with = "count")]
    pub warmup: Duration,
    /// Readings per client-stream call (and per short chat call in --mode mix).
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Whose history server-stream calls read [default: the first simulated sensor].
    #[arg(long)]
    pub query_sensor: Option<String>,
    /// At most this many readings per history read (0: all) [default: 0; 1000 in a mix].
    #[arg(long)]
    pub query_limit: Option<u64>,
    /// Before the run, store this many readings for the query sensor (client
    /// streams, not counted), so a read-back has history to read.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Load threads, each with its own runtime and a share of the
    /// connections [default: one per CPU, at most one per connection].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Mix weights: unary,client-stream,server-stream,chat.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 1, 1, 1])]
    pub mix: Vec<u32>,
    /// After sending stops, how long calls in flight may take to finish
    /// (the rest are reported as unfinished).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain: Duration,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
    /// Exit non-zero when failed (or unfinished) calls exceed this fraction of all calls.
    #[arg(long, default_value_t = 0.0)]
    pub max_error_rate: f64,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.sensors == 0 {
        bail!("--connections and --sensors must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.mix.len() != 4 || args.mix.iter().all(|w| *w == 0) {
        bail!(
            "--mix takes four weights, unary,client-stream,server-stream,chat, not all zero (e.g. 4,1,1,0)"
        );
    }
    let kinds = kinds(&args);
    let rate = calls_rate(&args, &kinds)?;
    if let Some(rate) = rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("the rate must be a positive number");
    }
    let concurrency = args
        .concurrency
        .unwrap_or(if rate.is_some() && args.mode != LoadMode::Chat {
            1000
        } else {
            64
        })
        .max(1);
    // A closed loop needs a call in flight per worker; an open loop or chat
    // streams spread over every connection.
    let workers = if rate.is_none() && args.mode != LoadMode::Chat {
        args.connections.min(concurrency)
    } else {
        args.connections
    };
    if args.mode == LoadMode::Chat && concurrency / workers > 256 {
        eprintln!(
            "warning: {} chat streams per connection; servers commonly allow 100-256 (sensorhub: --max-concurrent-streams 256), raise --connections",
            concurrency.div_ceil(workers)
        );
    }

    let config = args.connect.config();
    // Health checks run on this runtime; each load thread makes its own
    // balancers (and connections) over the same endpoints and counters.
    let replicas = ReplicaSet::connect(&config, &config.servers()).await?;
    let token = config.token.clone();
    let timestamp = unix_now();
    let fleet = Fleet::numbered(&args.sensor_prefix, args.sensors, timestamp);
    let query_sensor = args
        .query_sensor
        .clone()
        .unwrap_or_else(|| fleet.ids[0].clone());
    if args.seed > 0 {
        // On connections of its own: the run's belong to the load threads.
        let conns = wire::connect(&replicas, token.as_deref(), args.connections.min(4)).await?;
        seed(&conns, &query_sensor, args.seed, timestamp, args.quiet).await?;
    }
    let query_limit = args
        .query_limit
        .unwrap_or(if args.mode == LoadMode::Mix { 1000 } else { 0 });

    let stop = CancellationToken::new();
    super::cancel_on_shutdown_signal(stop.clone());

    // Each load thread runs its own single-threaded runtime with its
    // connections and their workers: a call, its connection task and the
    // wake-ups between them stay on one core (as h2load does).
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, workers);
    let lives: Vec<Arc<Live>> = (0..workers).map(|_| Arc::new(Live::default())).collect();
    let mut loaders = Vec::with_capacity(threads);
    for t in 0..threads {
        let jobs: Vec<JobSpec> = (t..workers)
            .step_by(threads)
            .map(|index| JobSpec {
                index,
                sensors: sensors_of(index, workers, args.sensors),
                concurrency: share(concurrency as u64, index, workers) as usize,
                count: args.count.map(|c| share(c, index, workers)),
                live: lives[index].clone(),
            })
            .collect();
        loaders.push(Loader::spawn(
            t,
            replicas.clone(),
            token.clone(),
            jobs,
            args.mode == LoadMode::Chat,
            stop.clone(),
        )?);
    }
    let mut connect_error = None;
    for loader in &mut loaders {
        if let Err(e) = loader.connected().await {
            connect_error.get_or_insert(e);
        }
    }
    if let Some(e) = connect_error {
        return Err(e);
    }

    let duration = match (args.count, args.duration) {
        (Some(_), _) => None,
        (None, Some(d)) => Some(d),
        (None, None) => Some(Duration::from_secs(10)),
    };
    let start = Instant::now();
    let plan: &'static Plan = Box::leak(Box::new(Plan {
        fleet,
        kinds,
        batch: args.batch,
        query: fleet::history_request(&query_sensor, query_limit),
        rate,
        start,
        end: duration.map(|d| start + args.warmup + d),
        measure_from: start + args.warmup,
        drain: args.drain,
        workers,
    }));
    for loader in &mut loaders {
        loader.go(plan);
    }

    let bar = progress_bar(&args, duration);
    let ticker = tokio::spawn({
        let bar = bar.clone();
        let lives = lives.clone();
        let counted = args.count.is_some();
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                every.tick().await;
                let (calls, errors, readings) = lives.iter().fold((0, 0, 0), |acc, l| {
                    (
                        acc.0 + l.calls.load(Ordering::Relaxed),
                        acc.1 + l.errors.load(Ordering::Relaxed),
                        acc.2 + l.readings.load(Ordering::Relaxed),
                    )
                });
                let elapsed = start.elapsed();
                bar.set_position(if counted {
                    calls
                } else {
                    elapsed.as_millis() as u64
                });
                let per_s = calls as f64 / elapsed.as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{} calls  {}/s  {} readings  {} errors",
                    thousands(calls as f64),
                    thousands(per_s),
                    thousands(readings as f64),
                    thousands(errors as f64)
                ));
            }
        }
    });

    let mut tally = Tally::default();
    for loader in loaders {
        tally.merge(loader.finished().await?);
    }
    ticker.abort();
    bar.finish_and_clear();

    let report = Report {
        args: &args,
        rate,
        concurrency,
        query_sensor: &query_sensor,
        elapsed: tally
            .last_done
            .map(|t| t.saturating_duration_since(plan.measure_from))
            .unwrap_or_default(),
        interrupted: stop.is_cancelled(),
        tally,
        // Those present at the end: names may have gained or lost addresses.
        endpoints: &replicas.endpoints(),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    let total = report.tally.total();
    let attempted = total.ok + total.failed_total() + total.unfinished;
    if attempted == 0 {
        eprintln!("error: no call finished");
        return Ok(ExitCode::FAILURE);
    }
    let error_rate = report.error_rate(&total);
    if error_rate > args.max_error_rate {
        eprintln!(
            "error: error rate {:.4} % is above --max-error-rate {} %",
            error_rate * 100.0,
            args.max_error_rate * 100.0
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A worker's share of the run, before it has a connection.
struct JobSpec {
    index: usize,
    sensors: Vec<usize>,
    concurrency: usize,
    count: Option<u64>,
    live: Arc<Live>,
}

/// One load thread: its own current-thread runtime, connections and workers.
struct Loader {
    connected: Option<oneshot::Receiver<anyhow::Result<()>>>,
    go: Option<oneshot::Sender<&'static Plan>>,
    done: oneshot::Receiver<Result<Tally, String>>,
}

impl Loader {
    fn spawn(
        t: usize,
        replicas: ReplicaSet,
        token: Option<String>,
        jobs: Vec<JobSpec>,
        chat: bool,
        stop: CancellationToken,
    ) -> anyhow::Result<Loader> {
        let (connected_tx, connected) = oneshot::channel();
        let (go, go_rx) = oneshot::channel::<&'static Plan>();
        let (done_tx, done) = oneshot::channel();
        let body = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = connected_tx.send(Err(anyhow::anyhow!("cannot start a runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let conns = match wire::connect(&replicas, token.as_deref(), jobs.len()).await {
                    Ok(conns) => conns,
                    Err(e) => {
                        let _ = connected_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = connected_tx.send(Ok(()));
                // Dropped unsent: the run was called off.
                let Ok(plan) = go_rx.await else { return };
                let handles: Vec<_> = jobs
                    .into_iter()
                    .zip(conns)
                    .map(|(spec, conn)| {
                        let job = Job {
                            index: spec.index,
                            conn,
                            sensors: spec.sensors,
                            concurrency: spec.concurrency,
                            count: spec.count,
                        };
                        if chat {
                            tokio::spawn(driver::chat(plan, job, spec.live, stop.clone()))
                        } else {
                            tokio::spawn(driver::calls(plan, job, spec.live, stop.clone()))
                        }
                    })
                    .collect();
                let mut tally = Tally::default();
                for handle in handles {
                    match handle.await {
                        Ok(worker) => tally.merge(worker),
                        Err(e) => {
                            let _ = done_tx.send(Err(format!("a load worker failed: {e}")));
                            return;
                        }
                    }
                }
                let _ = done_tx.send(Ok(tally));
            });
        };
        std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(body)
            .context("cannot start a load thread")?;
        Ok(Loader {
            connected: Some(connected),
            go: Some(go),
            done,
        })
    }

    /// Waits until this thread's connections are up.
    async fn connected(&mut self) -> anyhow::Result<()> {
        match self.connected.take() {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread ended"))),
            None => Ok(()),
        }
    }

    fn go(&mut self, plan: &'static Plan) {
        if let Some(go) = self.go.take() {
            let _ = go.send(plan);
        }
    }

    async fn finished(self) -> anyhow::Result<Tally> {
        match self.done.await {
            Ok(result) => result.map_err(anyhow::Error::msg),
            Err(_) => bail!("a load thread ended without its counts"),
        }
    }
}

/// The kinds calls cycle through: one, or the mix spread out evenly.
fn kinds(args: &LoadArgs) -> Vec<Kind> {
    match args.mode {
        LoadMode::Unary => vec![Kind::Unary],
        LoadMode::ClientStream => vec![Kind::ClientStream],
        LoadMode::ServerStream => vec![Kind::ServerStream],
        LoadMode::Chat => vec![Kind::Chat],
        LoadMode::Mix => {
            // Interleave: with weights 2,1,1,0 the cycle is U C S U.
            let mut left: Vec<u32> = args.mix.clone();
            let mut cycle = Vec::new();
            while left.iter().any(|w| *w > 0) {
                for (kind, w) in Kind::ALL.into_iter().zip(left.iter_mut()) {
                    if *w > 0 {
                        cycle.push(kind);
                        *w -= 1;
                    }
                }
            }
            cycle
        }
    }
}

/// Open loop: calls per second, from --rate or --readings-rate.
fn calls_rate(args: &LoadArgs, kinds: &[Kind]) -> anyhow::Result<Option<f64>> {
    let Some(readings_rate) = args.readings_rate else {
        return Ok(args.rate);
    };
    let per_call = |kind: &Kind| match kind {
        Kind::Unary => 1.0,
        Kind::ClientStream => args.batch as f64,
        Kind::ServerStream => 0.0,
        // Long-lived chat: a call is one reading; a short chat in a mix sends a batch.
        Kind::Chat if args.mode == LoadMode::Chat => 1.0,
        Kind::Chat => args.batch as f64,
    };
    let mean = kinds.iter().map(per_call).sum::<f64>() / kinds.len() as f64;
    if mean == 0.0 {
        bail!("--readings-rate counts readings sent; server-stream calls send none, use --rate");
    }
    Ok(Some(readings_rate / mean))
}

/// Worker `index`'s part of `total` split over `workers` as evenly as possible.
fn share(total: u64, index: usize, workers: usize) -> u64 {
    let w = workers as u64;
    total / w + u64::from((index as u64) < total % w)
}

/// The fleet sensors worker `index` reports for: every `workers`-th one.
fn sensors_of(index: usize, workers: usize, sensors: usize) -> Vec<usize> {
    if sensors < workers {
        return vec![index % sensors];
    }
    (index..sensors).step_by(workers).collect()
}

/// Stores `n` readings for `sensor_id` before the run, over all connections at once.
async fn seed(
    conns: &[wire::Conn],
    sensor_id: &str,
    n: u64,
    timestamp: i64,
    quiet: bool,
) -> anyhow::Result<()> {
    let fleet = Fleet::with_ids(vec![sensor_id.to_owned()], timestamp);
    let started = Instant::now();
    let calls = conns.iter().enumerate().map(|(i, conn)| {
        let part = share(n, i, conns.len());
        wire::client_stream(conn.clone(), fleet.batch(0, part), part)
    });
    for result in futures_util::future::join_all(calls).await {
        result.map_err(|s| anyhow::anyhow!("seeding {sensor_id}: {}", CallError::describe(&s)))?;
    }
    if !quiet {
        eprintln!(
            "seeded {n} readings for {sensor_id} in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn progress_bar(args: &LoadArgs, duration: Option<Duration>) -> ProgressBar {
    if args.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let len = match (args.count, duration) {
        (Some(count), _) => count,
        (None, Some(d)) => (args.warmup + d).as_millis() as u64,
        (None, None) => 0,
    };
    let style = ProgressStyle::with_template(
        "{spinner:.green} [{elapsed_precise}] [{bar:30.cyan/blue}] {percent:>3}%  {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(5))
        .with_style(style)
}
