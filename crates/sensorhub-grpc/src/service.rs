//! The SensorService: the five RPCs, on top of the domain's store.
//!
//! Each handler turns wire messages into domain readings, validates them,
//! hands them to the store and acknowledges only what the store has made
//! durable. Streams are pipelined (several chunks in flight towards the
//! group commit) but bounded, so a fast client meets backpressure, never an
//! unbounded buffer.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use futures_util::{Stream, StreamExt, stream::FuturesOrdered};
use opentelemetry::context::FutureExt as _;
use sensorhub_core::{
    HistoryQuery, Reading, ReadingLimits, Store, StoreError, StoredReading, WriteReceipt,
    store::{HistoryCursor, PendingWrite},
};
use sensorhub_proto as pb;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{
    alert_to_wire, decode_status, invalid_reading, invalid_reading_in_stream, invalid_request,
    reading_from_wire, reading_to_wire, received_message, set_stored_count, stats_to_wire,
    store_status,
};
use crate::deadline;
use crate::service_metrics::{RpcKind, ServiceMetrics};
use crate::stats_paging::StatsPaging;
use crate::store_spans::StoreSpans;

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub limits: ReadingLimits,
    /// Largest accepted message (after decompression), bytes.
    pub max_message_bytes: usize,
    /// Readings of a client stream handed to the store at once.
    pub ingest_chunk: usize,
    /// Chunks (client stream) or readings (chat) awaiting their commit at once, per call.
    pub ingest_in_flight: usize,
    /// Readings read from the store per page when streaming history.
    pub page_size: usize,
    /// Unary calls in the server at once; one more is refused at once with
    /// `UNAVAILABLE` (retry with backoff) instead of waiting in a queue
    /// that grows with the overload.
    pub max_unary_in_flight: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            limits: ReadingLimits::default(),
            max_message_bytes: 64 * 1024,
            ingest_chunk: 4_096,
            ingest_in_flight: 4,
            page_size: 4_096,
            max_unary_in_flight: 2_048,
        }
    }
}

/// How the server tells handlers to wind down.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Shutdown has begun: open-ended streams (follow) end now.
    pub draining: CancellationToken,
    /// The grace period is over: every stream ends now, keeping what it stored.
    pub cancelled: CancellationToken,
}

/// The SensorService implementation.
#[derive(Debug, Clone)]
pub struct SensorHub {
    store: Store,
    config: Arc<ServiceConfig>,
    life: Lifecycle,
    metrics: ServiceMetrics,
    spans: StoreSpans,
    unary_slots: Arc<Semaphore>,
}

impl SensorHub {
    pub fn new(store: Store, config: ServiceConfig, life: Lifecycle) -> Self {
        let unary_slots = Arc::new(Semaphore::new(config.max_unary_in_flight.max(1)));
        Self {
            store,
            config: Arc::new(config),
            life,
            metrics: ServiceMetrics::new(),
            spans: StoreSpans::new(),
            unary_slots,
        }
    }

    /// A place for one unary call, or `UNAVAILABLE` when all are taken.
    fn admit(&self) -> Result<SemaphorePermit<'_>, Status> {
        self.unary_slots.try_acquire().map_err(|_| {
            self.metrics.shed();
            Status::unavailable(format!(
                "overloaded: {} calls are already in progress; retry with backoff, or batch readings in a client stream",
                self.config.max_unary_in_flight
            ))
        })
    }

    fn check(&self, reading: &Reading) -> Result<(), sensorhub_core::Violation> {
        let checked = self.config.limits.check(reading, unix_now());
        if let Err(violation) = &checked {
            self.metrics.refused(violation);
        }
        checked
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn shutting_down(stored: u64) -> Status {
    let mut status = Status::unavailable(format!(
        "the server is shutting down; {stored} readings of this call were stored, send the rest to a running server"
    ));
    set_stored_count(&mut status, stored);
    status
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::sensor_service_server::SensorService for SensorHub {
    async fn send_single_reading(
        &self,
        request: Request<pb::SensorReading>,
    ) -> Result<Response<pb::Ack>, Status> {
        let _slot = self.admit()?;
        let reading = reading_from_wire(request.into_inner());
        self.check(&reading).map_err(|v| invalid_reading(&v))?;
        let receipt = self
            .spans
            .insert(1, self.store.append(vec![reading]))
            .await
            .map_err(|e| store_status(&e))?;
        self.metrics.stored(RpcKind::Unary, receipt.count as u64);
        Ok(Response::new(pb::Ack {
            message: "Reading received.".into(),
            count: receipt.count as u64,
        }))
    }

    /// Stores readings chunk by chunk as they arrive. A refused reading ends
    /// the call with `INVALID_ARGUMENT`; everything before it is committed
    /// first, and the status says how many readings that was.
    async fn stream_sensor_readings(
        &self,
        request: Request<Streaming<pb::SensorReading>>,
    ) -> Result<Response<pb::Ack>, Status> {
        let mut inbound = request.into_inner();
        let _active = self.metrics.stream(RpcKind::ClientStream);
        let mut ingest = Ingest::new(
            self.store.clone(),
            self.config.ingest_in_flight,
            self.metrics.clone(),
            self.spans.clone(),
        );
        let mut chunk = Vec::with_capacity(self.config.ingest_chunk);
        let mut index: u64 = 0;
        // `Err(None)`: the server is shutting down; `Err(Some(status))`: the
        // request stream failed (a decode error, the request budget, ...).
        let ended_by: Result<(), Option<Status>> = loop {
            let next = tokio::select! {
                biased;
                _ = self.life.cancelled.cancelled() => break Err(None),
                next = inbound.message() => next,
            };
            match next {
                Ok(Some(message)) => {
                    let reading = reading_from_wire(message);
                    if let Err(v) = self.check(&reading) {
                        ingest.push(std::mem::take(&mut chunk)).await?;
                        let stored = ingest.finish().await?;
                        return Err(invalid_reading_in_stream(&v, index, stored));
                    }
                    index += 1;
                    chunk.push(reading);
                    if chunk.len() >= self.config.ingest_chunk {
                        let full = std::mem::replace(
                            &mut chunk,
                            Vec::with_capacity(self.config.ingest_chunk),
                        );
                        ingest.push(full).await?;
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => {
                    break Err(Some(decode_status(status, self.config.max_message_bytes)));
                }
            }
        };
        // Whatever ended the stream, what was received and valid is stored.
        ingest.push(chunk).await?;
        let stored = ingest.finish().await?;
        match ended_by {
            Ok(()) => Ok(Response::new(pb::Ack {
                message: "All readings stored.".into(),
                count: stored,
            })),
            Err(None) => Err(shutting_down(stored)),
            Err(Some(mut status)) => {
                set_stored_count(&mut status, stored);
                Err(status)
            }
        }
    }

    type GetSensorReadingsStream = BoxStream<pb::SensorReading>;

    async fn get_sensor_readings(
        &self,
        request: Request<pb::SensorRequest>,
    ) -> Result<Response<Self::GetSensorReadingsStream>, Status> {
        let timeout = deadline::requested_timeout(request.metadata());
        let request = request.into_inner();
        let query = history_query(&request)?;
        let (tx, rx) = mpsc::channel::<Result<Vec<StoredReading>, Status>>(2);
        let reader = HistoryReader {
            _active: self.metrics.stream(RpcKind::ServerStream),
            store: self.store.clone(),
            spans: self.spans.clone(),
            page_size: self.config.page_size,
            life: self.life.clone(),
            limit: (request.limit > 0).then_some(request.limit),
            follow: request.follow,
        };
        // The reader works in its own task: it carries the call's context,
        // so its spans and logs belong to the call's trace.
        tokio::spawn(reader.run(query, tx).with_current_context());
        let stream = ReceiverStream::new(rx).flat_map(|page| {
            let items: Vec<Result<pb::SensorReading, Status>> = match page {
                Ok(page) => page
                    .into_iter()
                    .map(|r| Ok(reading_to_wire(r.reading)))
                    .collect(),
                Err(status) => vec![Err(status)],
            };
            futures_util::stream::iter(items)
        });
        Ok(Response::new(deadline::limit(Box::pin(stream), timeout)))
    }

    type SensorChatStream = BoxStream<pb::ServerMessage>;

    /// The reply stream is the chat itself: each poll for the next reply
    /// reads readings and waits for their commits. No task and no channel
    /// per chat, so an idle chat costs only its state (10,000 open chats
    /// are in BENCHMARKS.md), and a client that stops reading replies stops
    /// the server reading its readings (HTTP/2 flow control does the rest).
    async fn sensor_chat(
        &self,
        request: Request<Streaming<pb::SensorReading>>,
    ) -> Result<Response<Self::SensorChatStream>, Status> {
        let timeout = deadline::requested_timeout(request.metadata());
        let chat = Chat::new(self.clone(), request.into_inner());
        let replies = futures_util::stream::unfold(chat, |mut chat| async move {
            let reply = chat.next_reply().await?;
            Some((reply, chat))
        });
        Ok(Response::new(deadline::limit(Box::pin(replies), timeout)))
    }

    async fn get_sensor_stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        let _slot = self.admit()?;
        let request = request.into_inner();
        if !request.sensor_id.is_empty() {
            let stats = self
                .store
                .stats(Some(&request.sensor_id))
                .await
                .map_err(|e| store_status(&e))?;
            return Ok(Response::new(pb::StatsReply {
                sensors: stats.into_iter().map(stats_to_wire).collect(),
                next_cursor: String::new(),
            }));
        }
        // Every sensor, one page per call (stats_paging.rs).
        let paging = StatsPaging::of(&request)?;
        let page = self
            .store
            .stats_page(&request.cursor, paging.to_read())
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(paging.reply(page)?))
    }
}

type Commit =
    Pin<Box<dyn std::future::Future<Output = (f64, Result<WriteReceipt, StoreError>)> + Send>>;

/// One chat: readings in, replies out in the order the readings arrived,
/// each sent once its reading is durable and followed by any alert it raised.
struct Chat {
    hub: SensorHub,
    inbound: Streaming<pb::SensorReading>,
    /// Commits awaited, oldest first; several readings may be in flight.
    in_flight: FuturesOrdered<Commit>,
    max_in_flight: usize,
    /// Replies ready to go (an acknowledgement and its alerts), oldest first.
    outgoing: VecDeque<Result<pb::ServerMessage, Status>>,
    /// Readings received so far (the index of the next one).
    received: u64,
    stored: u64,
    /// The last reply (or the end) is queued: nothing more is read.
    ended: bool,
    /// Counts the call in `sensorhub.streams.active` while it is open.
    _active: crate::service_metrics::ActiveStream,
}

impl Chat {
    fn new(hub: SensorHub, inbound: Streaming<pb::SensorReading>) -> Self {
        Self {
            max_in_flight: hub.config.ingest_in_flight.max(1) * 16,
            _active: hub.metrics.stream(RpcKind::Chat),
            hub,
            inbound,
            in_flight: FuturesOrdered::new(),
            outgoing: VecDeque::new(),
            received: 0,
            stored: 0,
            ended: false,
        }
    }

    /// The next reply, or `None` once the chat is over.
    async fn next_reply(&mut self) -> Option<Result<pb::ServerMessage, Status>> {
        loop {
            if let Some(reply) = self.outgoing.pop_front() {
                return Some(reply);
            }
            if self.ended {
                return None;
            }
            if let Err(status) = self.step().await {
                self.ended = true;
                self.outgoing.push_back(Err(status));
            }
        }
    }

    /// Does one thing: a commit finishes, or a reading arrives, or the
    /// chat ends. Ends with the status the client gets last, if any.
    async fn step(&mut self) -> Result<(), Status> {
        tokio::select! {
            biased;
            _ = self.hub.life.cancelled.cancelled() => {
                self.drain().await?;
                Err(shutting_down(self.stored))
            }
            Some(done) = self.in_flight.next() => self.acknowledge(done),
            next = self.inbound.message(), if self.in_flight.len() < self.max_in_flight => match next {
                Ok(Some(message)) => {
                    let reading = reading_from_wire(message);
                    if let Err(v) = self.hub.check(&reading) {
                        // Everything before it is stored: acknowledge it first.
                        self.drain().await?;
                        return Err(invalid_reading_in_stream(&v, self.received, self.stored));
                    }
                    self.received += 1;
                    let temperature = reading.temperature;
                    let pending = self.hub.store.enqueue(vec![reading]).await.map_err(|e| store_status(&e))?;
                    self.in_flight.push_back(Box::pin(async move { (temperature, pending.committed().await) }));
                    Ok(())
                }
                Ok(None) => {
                    self.drain().await?;
                    self.ended = true;
                    Ok(())
                }
                Err(status) => {
                    let mut status = decode_status(status, self.hub.config.max_message_bytes);
                    self.drain().await?;
                    set_stored_count(&mut status, self.stored);
                    Err(status)
                }
            },
        }
    }

    /// Queues the reply for one committed reading, then its alerts.
    fn acknowledge(
        &mut self,
        (temperature, result): (f64, Result<WriteReceipt, StoreError>),
    ) -> Result<(), Status> {
        let receipt = result.map_err(|e| store_status(&e))?;
        self.stored += receipt.count as u64;
        self.hub.metrics.stored(RpcKind::Chat, receipt.count as u64);
        let now = unix_now();
        self.outgoing.push_back(Ok(pb::ServerMessage {
            message: received_message(temperature),
            server_time: now,
            kind: pb::ServerMessageKind::Received as i32,
            alert: None,
        }));
        self.outgoing
            .extend(receipt.alerts.iter().map(|a| Ok(alert_to_wire(a, now))));
        Ok(())
    }

    /// Acknowledges everything still in flight.
    async fn drain(&mut self) -> Result<(), Status> {
        while let Some(done) = self.in_flight.next().await {
            self.acknowledge(done)?;
        }
        Ok(())
    }
}

/// A client stream's writes on their way to the group commit: at most
/// `max_in_flight` chunks queued, the count of what is durable so far.
struct Ingest {
    store: Store,
    /// Queued writes and their sizes, oldest first.
    in_flight: VecDeque<(PendingWrite, usize)>,
    max_in_flight: usize,
    stored: u64,
    metrics: ServiceMetrics,
    spans: StoreSpans,
}

impl Ingest {
    fn new(store: Store, max_in_flight: usize, metrics: ServiceMetrics, spans: StoreSpans) -> Self {
        Self {
            store,
            spans,
            in_flight: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            stored: 0,
            metrics,
        }
    }

    fn failed(&self, e: &StoreError) -> Status {
        let mut status = store_status(e);
        set_stored_count(&mut status, self.stored);
        status
    }

    /// Queues a chunk; waits for the oldest chunk's commit when too many are in flight.
    async fn push(&mut self, chunk: Vec<Reading>) -> Result<(), Status> {
        if chunk.is_empty() {
            return Ok(());
        }
        let readings = chunk.len();
        let pending = self
            .store
            .enqueue(chunk)
            .await
            .map_err(|e| self.failed(&e))?;
        self.in_flight.push_back((pending, readings));
        while self.in_flight.len() > self.max_in_flight {
            self.commit_oldest().await?;
        }
        Ok(())
    }

    async fn commit_oldest(&mut self) -> Result<(), Status> {
        if let Some((pending, readings)) = self.in_flight.pop_front() {
            let receipt = self
                .spans
                .insert(readings, pending.committed())
                .await
                .map_err(|e| self.failed(&e))?;
            self.stored += receipt.count as u64;
            self.metrics
                .stored(RpcKind::ClientStream, receipt.count as u64);
        }
        Ok(())
    }

    /// Waits until every queued chunk is durable; returns how many readings are stored.
    async fn finish(&mut self) -> Result<u64, Status> {
        while !self.in_flight.is_empty() {
            self.commit_oldest().await?;
        }
        Ok(self.stored)
    }
}

/// Checks a `GetSensorReadings` request and turns it into a store query.
fn history_query(request: &pb::SensorRequest) -> Result<HistoryQuery, Status> {
    let refuse = invalid_request;
    sensorhub_core::validation::check_sensor_id(&request.sensor_id)
        .map_err(|v| refuse(v.field, v.description))?;
    for (field, value) in [("since", request.since), ("until", request.until)] {
        if value < 0 {
            return Err(refuse(
                field,
                format!("must be Unix seconds, or 0 for no bound, got {value}"),
            ));
        }
    }
    if request.since > 0 && request.until > 0 && request.until <= request.since {
        return Err(refuse(
            "until",
            format!(
                "must be after since ({}), got {}",
                request.since, request.until
            ),
        ));
    }
    Ok(HistoryQuery {
        sensor_id: request.sensor_id.clone(),
        since: (request.since > 0).then_some(request.since),
        until: (request.until > 0).then_some(request.until),
        up_to_seq: None,
    })
}

/// Streams one sensor's history page by page, then (follow) its live tail.
struct HistoryReader {
    /// Counts the call in `sensorhub.streams.active` while the reader runs.
    _active: crate::service_metrics::ActiveStream,
    store: Store,
    spans: StoreSpans,
    page_size: usize,
    life: Lifecycle,
    limit: Option<u64>,
    follow: bool,
}

type PageSender = mpsc::Sender<Result<Vec<StoredReading>, Status>>;

impl HistoryReader {
    async fn run(self, query: HistoryQuery, tx: PageSender) {
        if let Err(status) = self.stream(query, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    }

    async fn stream(&self, mut query: HistoryQuery, tx: &PageSender) -> Result<(), Status> {
        let mut committed = self.store.visible_seq();
        // Follow: history up to this point, the tail after it. No gap, no
        // repeat, and everything acknowledged before the call is history.
        let snapshot = self
            .store
            .caught_up_seq()
            .await
            .map_err(|e| store_status(&e))?;
        committed.borrow_and_update();
        if self.follow {
            query.up_to_seq = Some(snapshot);
        }
        let mut cursor = HistoryCursor::default();
        let mut remaining = self.limit.unwrap_or(u64::MAX);
        while remaining > 0 {
            let page_size = remaining.min(self.page_size as u64) as usize;
            let page = tokio::select! {
                _ = tx.closed() => return Ok(()),
                page = self.spans.select(page_size, self.store.history_page(&query, cursor, page_size)) => page.map_err(|e| store_status(&e))?,
            };
            let full = page.len() == page_size;
            remaining -= page.len() as u64;
            cursor.advance(&page);
            if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
        if !self.follow {
            return Ok(());
        }

        let in_range = |r: &StoredReading| {
            query.since.is_none_or(|s| r.reading.timestamp >= s)
                && query.until.is_none_or(|u| r.reading.timestamp < u)
        };
        let mut after = snapshot;
        loop {
            let page = self
                .store
                .tail_page(&query.sensor_id, after, self.page_size)
                .await
                .map_err(|e| store_status(&e))?;
            let full = page.len() == self.page_size;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            let page: Vec<_> = page.into_iter().filter(in_range).collect();
            if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                return Ok(());
            }
            if full {
                continue;
            }
            tokio::select! {
                biased;
                _ = self.life.draining.cancelled() => {
                    return Err(Status::unavailable(
                        "the server is shutting down; subscribe again to a running server with since set to the last timestamp you received",
                    ));
                }
                _ = tx.closed() => return Ok(()),
                changed = committed.changed() => if changed.is_err() {
                    return Err(Status::unavailable("the store closed"));
                },
            }
        }
    }
}
