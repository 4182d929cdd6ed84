//! StreamSensorReadings: a client stream's readings, validated and handed to
//! the group commit in chunks, several chunks in flight but bounded, so a
//! fast client meets backpressure, never an unbounded buffer.

use std::collections::VecDeque;

use sensorhub_core::{
    PendingWrite, Reading, SharedStore, StoreError,
    idempotency::{Fingerprint, IdempotencyKey, KeyedPart},
};
use sensorhub_proto as pb;
use tonic::{Request, Response, Status, Streaming};

use super::{SensorHub, shutting_down};
use crate::auth::Identity;
use crate::convert::{decode_status, reading_from_wire, set_stored_count, store_status};
use crate::idempotency_key;
use crate::service_metrics::{RpcKind, ServiceMetrics};
use crate::store_spans::StoreSpans;

/// Stores readings chunk by chunk as they arrive. A refused reading ends
/// the call with `INVALID_ARGUMENT` (invalid) or `PERMISSION_DENIED` (a
/// sensor the caller may not write); everything before it is committed
/// first, and the status says how many readings that was.
pub(super) async fn stream_sensor_readings(
    hub: &SensorHub,
    request: Request<Streaming<pb::SensorReading>>,
) -> Result<Response<pb::Ack>, Status> {
    let identity = Identity::of(&request)?;
    let key = idempotency_key::from_metadata(request.metadata())?;
    let mut inbound = request.into_inner();
    let _active = hub.metrics.stream(RpcKind::ClientStream);
    let mut ingest = Ingest::new(
        hub.store.clone(),
        hub.config.ingest_in_flight,
        hub.metrics.clone(),
        hub.spans.clone(),
    );
    ingest.key = key.map(|key| (key, 0, Fingerprint::EMPTY));
    let mut chunk = Vec::with_capacity(hub.config.ingest_chunk);
    let mut index: u64 = 0;
    // `Err(None)`: the server is shutting down; `Err(Some(status))`: the
    // request stream failed (a decode error, the request budget, ...).
    let ended_by: Result<(), Option<Status>> = loop {
        let next = tokio::select! {
            biased;
            _ = hub.life.cancelled.cancelled() => break Err(None),
            next = inbound.message() => next,
        };
        match next {
            Ok(Some(message)) => {
                let reading = reading_from_wire(message);
                if let Err(refused) = hub.admissible(&identity, &reading) {
                    ingest.push(std::mem::take(&mut chunk)).await?;
                    let stored = ingest.finish().await?;
                    return Err(refused.in_stream(index, stored));
                }
                index += 1;
                chunk.push(reading);
                if chunk.len() >= hub.config.ingest_chunk {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(hub.config.ingest_chunk));
                    ingest.push(full).await?;
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(Some(decode_status(status, hub.config.max_message_bytes)));
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

/// A client stream's writes on their way to the group commit: at most
/// `max_in_flight` chunks queued, the count of what is durable so far.
struct Ingest {
    store: SharedStore,
    /// The call's idempotency key, the readings sent so far, and their
    /// fingerprint: each chunk is the next part of the key's sequence.
    key: Option<(IdempotencyKey, u64, Fingerprint)>,
    /// Queued writes and their sizes, oldest first.
    in_flight: VecDeque<(PendingWrite, usize)>,
    max_in_flight: usize,
    stored: u64,
    metrics: ServiceMetrics,
    spans: StoreSpans,
}

impl Ingest {
    fn new(
        store: SharedStore,
        max_in_flight: usize,
        metrics: ServiceMetrics,
        spans: StoreSpans,
    ) -> Self {
        Self {
            store,
            key: None,
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
        let queued = match &mut self.key {
            None => self.store.enqueue(chunk, None).await,
            Some((key, offset, before)) => {
                let part = KeyedPart::new(key.clone(), *offset, *before, &chunk);
                (*offset, *before) = (*offset + readings as u64, part.after);
                self.store.enqueue(chunk, Some(part)).await
            }
        };
        let pending = queued.map_err(|e| self.failed(&e))?;
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
            // With a key, what an earlier attempt stored counts as stored.
            self.stored += (receipt.count + receipt.already_stored) as u64;
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
