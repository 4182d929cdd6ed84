//! A simulated temperature sensor, as the original clients behaved: it wakes
//! at random intervals (0 to `interval_max`), makes one call of its RPC kind
//! (or, in `random` mode, of a kind picked per cycle), and reports a
//! temperature that follows a plausible random walk around a base value,
//! with rare spikes that the server's jump alert should catch.
//!
//! It must work against any SensorService, the original grpcio server
//! included, so it assumes nothing a server may leave out: a chat's first
//! reading goes out before the response headers arrive (grpcio sends them
//! only with its first reply), an `Ack` without a count is reported as
//! such, and every call has a deadline. A chat ends with a half-close and
//! its last replies read, never by dropping the call (`CANCELLED`). A signal
//! (see [`Stop`]) cancels a call still in progress.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sensorhub_grpc::SensorClient;
use sensorhub_proto::{SensorReading, SensorRequest, ServerMessageKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{cli::CallError, time_arg::unix_now};

/// Which RPC a sensor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// SendSingleReading: one reading per call.
    Unary,
    /// StreamSensorReadings: a batch of readings per call.
    ClientStream,
    /// GetSensorReadings: read back the last minute of readings.
    ServerStream,
    /// SensorChat: one long-lived stream, a reading per cycle, replies and alerts back.
    Chat,
    /// A kind picked at random each cycle, as the original clients did.
    Random,
}

/// The four RPC kinds, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unary = 0,
    ClientStream = 1,
    ServerStream = 2,
    Chat = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Unary,
        Kind::ClientStream,
        Kind::ServerStream,
        Kind::Chat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ClientStream => "client-stream",
            Kind::ServerStream => "server-stream",
            Kind::Chat => "chat",
        }
    }
}

/// What simulated sensors did, shared with whoever reports on them.
#[derive(Debug, Default)]
pub struct Counters {
    ok: [AtomicU64; 4],
    failed: [AtomicU64; 4],
    pub readings_sent: AtomicU64,
    pub readings_received: AtomicU64,
    pub alerts_received: AtomicU64,
}

impl Counters {
    pub fn ok(&self, kind: Kind) -> u64 {
        self.ok[kind as usize].load(Ordering::Relaxed)
    }
    pub fn failed(&self, kind: Kind) -> u64 {
        self.failed[kind as usize].load(Ordering::Relaxed)
    }
    fn record(&self, kind: Kind, ok: bool) {
        let slot = if ok { &self.ok } else { &self.failed };
        slot[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How one simulated sensor behaves.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    pub sensor_id: String,
    pub mode: Mode,
    /// Longest pause between calls; each pause is uniform in [0, this].
    pub interval_max: Duration,
    /// Readings per client-streaming call.
    pub batch: usize,
    /// Stop after this many calls (chat: readings). `None`: until stopped.
    pub count: Option<u64>,
    pub base_temperature: f64,
    /// Chance that a reading is a spike far from the walk (to exercise alerts).
    pub spike_probability: f64,
    /// Whose readings server-streaming calls read back (default: its own).
    pub query_sensor: Option<String>,
    /// How long one call may take: a unary or streaming call to its answer,
    /// a chat reading to its reply (the chat's opening included), a chat's end.
    pub timeout: Duration,
}

/// How simulated sensors are told to stop.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Cancelled by [`Stop::abort`]: a call in progress is cancelled too.
    abort: CancellationToken,
    /// Cancelled by either: no new call starts, an open chat is ended cleanly.
    finish: CancellationToken,
}

impl Stop {
    pub fn new() -> Self {
        let abort = CancellationToken::new();
        let finish = abort.child_token();
        Self { abort, finish }
    }

    /// After the call in progress: no new call, an open chat is half-closed
    /// and its remaining replies read.
    pub fn finish(&self) {
        self.finish.cancel();
    }

    /// At once: the call in progress is cancelled (a signal, the user wants out).
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// The token that [`Stop::abort`] cancels, for a signal handler.
    pub fn abort_token(&self) -> CancellationToken {
        self.abort.clone()
    }
}

/// A random walk that drifts back towards its base.
#[derive(Debug)]
struct TemperatureWalk {
    value: f64,
    base: f64,
    spike_probability: f64,
}

impl TemperatureWalk {
    fn next(&mut self, rng: &mut impl Rng) -> f64 {
        self.value += 0.2 * (self.base - self.value) + rng.random_range(-0.6..0.6);
        let value = if rng.random_bool(self.spike_probability.clamp(0.0, 1.0)) {
            let spike = rng.random_range(8.0..12.0);
            self.value + if rng.random_bool(0.5) { spike } else { -spike }
        } else {
            self.value
        };
        (value * 100.0).round() / 100.0
    }
}

/// A chat stream kept open across cycles.
struct Chat {
    outbound: mpsc::Sender<SensorReading>,
    replies: tonic::Streaming<sensorhub_proto::ServerMessage>,
}

impl Chat {
    /// Ends the chat the way the protocol means: half-close, then read the
    /// replies still due (alerts for the last reading) until the server ends
    /// the call with its status.
    async fn close(self, counters: &Counters) -> Result<(), tonic::Status> {
        let Chat {
            outbound,
            mut replies,
        } = self;
        drop(outbound);
        while let Some(message) = replies.message().await? {
            note_late_reply(&message, counters);
        }
        Ok(())
    }
}

/// A chat message read after the reply the sensor waited for.
fn note_late_reply(message: &sensorhub_proto::ServerMessage, counters: &Counters) {
    if message.kind == ServerMessageKind::Alert as i32 {
        counters.alerts_received.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(kind = "chat", alert = %message.message, "alert");
    } else {
        tracing::info!(kind = "chat", reply = %message.message, "late reply");
    }
}

/// Runs one simulated sensor until `count` calls are done or `stop` says
/// so. Returns how many calls failed (failures are logged and the sensor
/// carries on, as a real one would). A call cancelled by [`Stop::abort`]
/// is not a failure.
pub async fn run(
    mut client: SensorClient,
    config: SensorConfig,
    counters: Arc<Counters>,
    stop: Stop,
) -> u64 {
    let mut rng = StdRng::from_os_rng();
    let mut walk = TemperatureWalk {
        value: config.base_temperature + rng.random_range(-2.0..2.0),
        base: config.base_temperature,
        spike_probability: config.spike_probability,
    };
    let mut chat: Option<Chat> = None;
    let mut failures = 0;
    let mut done = 0;
    while config.count.is_none_or(|c| done < c) {
        let pause = config.interval_max.mul_f64(rng.random_range(0.0..=1.0));
        tokio::select! {
            _ = stop.finish.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let kind = match config.mode {
            Mode::Unary => Kind::Unary,
            Mode::ClientStream => Kind::ClientStream,
            Mode::ServerStream => Kind::ServerStream,
            Mode::Chat => Kind::Chat,
            Mode::Random => Kind::ALL[rng.random_range(0..4)],
        };
        let mut reading = || SensorReading {
            sensor_id: config.sensor_id.clone(),
            temperature: walk.next(&mut rng),
            timestamp: unix_now(),
        };
        // One span per cycle: the RPC's client span is its child, the
        // server's span a grandchild, all in one trace.
        let cycle = tracing::info_span!(
            "sensor cycle",
            sensor.id = %config.sensor_id,
            sensorhub.rpc.kind = kind.name()
        );
        let call = async {
            match kind {
                Kind::Unary => unary(&mut client, reading(), &counters).await,
                Kind::ClientStream => {
                    let batch: Vec<_> = (0..config.batch.max(1)).map(|_| reading()).collect();
                    client_stream(&mut client, batch, &counters).await
                }
                Kind::ServerStream => {
                    let sensor = config
                        .query_sensor
                        .clone()
                        .unwrap_or_else(|| config.sensor_id.clone());
                    server_stream(&mut client, sensor, &counters).await
                }
                Kind::Chat => {
                    let mut result = chat_once(&mut client, &mut chat, reading(), &counters).await;
                    if result.is_err() {
                        chat = None;
                    } else if config.mode == Mode::Random
                        && let Some(open) = chat.take()
                    {
                        // One reading per chat in random mode, as the original.
                        result = open.close(&counters).await;
                    }
                    result
                }
            }
        };
        let deadline = config.timeout;
        let call = async {
            tokio::time::timeout(deadline, call)
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "no answer from the server within {} (--timeout)",
                        humantime::format_duration(deadline)
                    )))
                })
        }
        .instrument(cycle);
        let result = tokio::select! {
            biased;
            _ = stop.abort.cancelled() => None,
            result = call => Some(result),
        };
        let Some(result) = result else {
            tracing::info!(sensor = %config.sensor_id, kind = kind.name(), "stopped: the call in progress was cancelled");
            return failures;
        };
        counters.record(kind, result.is_ok());
        if let Err(status) = result {
            failures += 1;
            tracing::warn!(sensor = %config.sensor_id, kind = kind.name(), status = %CallError::describe(&status), "call failed");
        }
        done += 1;
    }
    // Stopped between calls: end an open chat cleanly, promptly when aborted.
    if let Some(open) = chat.take() {
        let aborted = stop.abort.is_cancelled();
        let within = if aborted {
            config.timeout.min(CLOSE_AFTER_ABORT)
        } else {
            config.timeout
        };
        let closed = tokio::select! {
            biased;
            _ = stop.abort.cancelled(), if !aborted => None,
            closed = tokio::time::timeout(within, open.close(&counters)) => Some(closed),
        };
        match closed {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(status))) => {
                failures += 1;
                tracing::warn!(sensor = %config.sensor_id, kind = "chat", status = %CallError::describe(&status), "the chat ended with an error");
            }
            Some(Err(_)) | None => {
                tracing::warn!(sensor = %config.sensor_id, kind = "chat", "the server did not end the chat in time; it is cancelled");
            }
        }
    }
    failures
}

/// How long a chat may take to end once a signal arrived between calls.
const CLOSE_AFTER_ABORT: Duration = Duration::from_secs(1);

async fn unary(
    client: &mut SensorClient,
    reading: SensorReading,
    counters: &Counters,
) -> Result<(), tonic::Status> {
    let temperature = reading.temperature;
    let ack = client.send_single_reading(reading).await?.into_inner();
    counters.readings_sent.fetch_add(1, Ordering::Relaxed);
    tracing::info!(kind = "unary", temperature, reply = %ack.message, "sent");
    Ok(())
}

async fn client_stream(
    client: &mut SensorClient,
    batch: Vec<SensorReading>,
    counters: &Counters,
) -> Result<(), tonic::Status> {
    let sent = batch.len() as u64;
    let ack = client
        .stream_sensor_readings(futures_util::stream::iter(batch))
        .await?
        .into_inner();
    // `Ack.count` is a sensorhub addition: an original server leaves it 0,
    // and an OK with 0 for a non-empty stream means "not reported".
    if ack.count == 0 && sent > 0 {
        counters.readings_sent.fetch_add(sent, Ordering::Relaxed);
        tracing::info!(kind = "client-stream", sent, stored = "not reported by the server (its Ack has no count)", reply = %ack.message, "sent");
    } else {
        counters
            .readings_sent
            .fetch_add(ack.count, Ordering::Relaxed);
        tracing::info!(kind = "client-stream", sent, stored = ack.count, reply = %ack.message, "sent");
    }
    Ok(())
}

async fn server_stream(
    client: &mut SensorClient,
    sensor_id: String,
    counters: &Counters,
) -> Result<(), tonic::Status> {
    let request = SensorRequest {
        sensor_id: sensor_id.clone(),
        since: unix_now() - 60,
        ..Default::default()
    };
    let mut stream = client.get_sensor_readings(request).await?.into_inner();
    let mut received = 0u64;
    let mut last = None;
    while let Some(reading) = stream.next().await {
        last = Some(reading?.temperature);
        received += 1;
    }
    counters
        .readings_received
        .fetch_add(received, Ordering::Relaxed);
    tracing::info!(kind = "server-stream", sensor = %sensor_id, received, last = ?last, "read back the last minute");
    Ok(())
}

async fn chat_once(
    client: &mut SensorClient,
    chat: &mut Option<Chat>,
    reading: SensorReading,
    counters: &Counters,
) -> Result<(), tonic::Status> {
    let temperature = reading.temperature;
    let session = match chat {
        Some(session) => {
            if session.outbound.send(reading).await.is_err() {
                return Err(tonic::Status::unavailable("the chat stream closed"));
            }
            session
        }
        None => {
            // The first reading is queued before the call opens: a server
            // may hold its response headers until its first reply (grpcio
            // does), so waiting for them before sending would wait for ever.
            let (outbound, rx) = mpsc::channel(16);
            outbound
                .try_send(reading)
                .map_err(|_| tonic::Status::internal("a new chat's queue is full"))?;
            let replies = client
                .sensor_chat(ReceiverStream::new(rx))
                .await?
                .into_inner();
            chat.insert(Chat { outbound, replies })
        }
    };
    // The reply to this reading, then any alerts it raised, arrive in order.
    loop {
        let message = session
            .replies
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("the server ended the chat"))?;
        if message.kind == ServerMessageKind::Alert as i32 {
            counters.alerts_received.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(kind = "chat", alert = %message.message, "alert");
            continue;
        }
        counters.readings_sent.fetch_add(1, Ordering::Relaxed);
        tracing::info!(kind = "chat", temperature, reply = %message.message, server_time = message.server_time, "sent");
        return Ok(());
    }
}
