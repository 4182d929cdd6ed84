//! The SensorService: the five RPCs, on top of the domain's store.
//!
//! Each handler turns wire messages into domain readings, validates them,
//! hands them to the store and acknowledges only what the store has made
//! durable. Streams are pipelined (several chunks in flight towards the
//! group commit) but bounded, so a fast client meets backpressure, never an
//! unbounded buffer.
//!
//! Every call carries the identity the token check found (`auth.rs`): a
//! reading is stored only for a sensor the identity may write, and a read
//! is served only for sensors it may read (`PERMISSION_DENIED` otherwise,
//! counted in `sensorhub.calls.denied`).
//!
//! This file holds what every RPC shares (the configuration, admission,
//! validation and scope, the shutdown status) and the unary call; each other concept
//! has its own file: [`ingest`] (client streams), [`history`] (history and
//! follow), [`chat`] and [`stats`].

mod chat;
mod history;
mod ingest;
mod stats;

use std::{
    pin::Pin,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use futures_util::Stream;
use sensorhub_core::{
    Reading, ReadingLimits, SharedStore,
    idempotency::{Fingerprint, KeyedPart},
};
use sensorhub_proto as pb;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Denied, Identity};
use crate::convert::{
    invalid_reading, invalid_reading_in_stream, permission_denied, permission_denied_in_stream,
    reading_from_wire, set_stored_count, store_status,
};
use crate::idempotency_key;
use crate::service_metrics::{RpcKind, ServiceMetrics};
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
    store: SharedStore,
    config: Arc<ServiceConfig>,
    life: Lifecycle,
    metrics: ServiceMetrics,
    spans: StoreSpans,
    unary_slots: Arc<Semaphore>,
}

impl SensorHub {
    pub fn new(store: SharedStore, config: ServiceConfig, life: Lifecycle) -> Self {
        let unary_slots = Arc::new(Semaphore::new(config.max_unary_in_flight.max(1)));
        let spans = StoreSpans::new(store.system_name());
        Self {
            store,
            config: Arc::new(config),
            life,
            metrics: ServiceMetrics::new(),
            spans,
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

    /// Whether `reading` may be stored: it is valid, and its sensor is one
    /// `identity` may write. A refusal is counted and logged.
    fn admissible(&self, identity: &Identity, reading: &Reading) -> Result<(), Refused> {
        if let Err(violation) = self.config.limits.check(reading, unix_now()) {
            self.metrics.refused(&violation);
            return Err(Refused::Invalid(violation));
        }
        identity.may_write(&reading.sensor_id).map_err(|denied| {
            self.metrics.denied(&denied);
            Refused::Denied(denied)
        })
    }

    /// Whether `identity` may read `sensor_id`; a refusal is counted.
    fn readable(&self, identity: &Identity, sensor_id: &str) -> Result<(), Status> {
        identity.may_read(sensor_id).map_err(|denied| {
            self.metrics.denied(&denied);
            permission_denied(&denied)
        })
    }
}

/// Why a reading is not stored.
enum Refused {
    Invalid(sensorhub_core::Violation),
    Denied(Denied),
}

impl Refused {
    /// The status for a single reading.
    fn alone(&self) -> Status {
        match self {
            Refused::Invalid(v) => invalid_reading(v),
            Refused::Denied(d) => permission_denied(d),
        }
    }

    /// The status for reading `index` of a stream, `stored` readings before it stored.
    fn in_stream(&self, index: u64, stored: u64) -> Status {
        match self {
            Refused::Invalid(v) => invalid_reading_in_stream(v, index, stored),
            Refused::Denied(d) => permission_denied_in_stream(d, index, stored),
        }
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
        let identity = Identity::of(&request)?;
        let key = idempotency_key::from_metadata(request.metadata())?;
        let reading = reading_from_wire(request.into_inner());
        self.admissible(&identity, &reading)
            .map_err(|refused| refused.alone())?;
        let written = match key {
            None => {
                self.spans
                    .insert_in_call(1, self.store.append(vec![reading]))
                    .await
            }
            Some(key) => {
                let part =
                    KeyedPart::new(key, 0, Fingerprint::EMPTY, std::slice::from_ref(&reading));
                let write = self.store.append_keyed(vec![reading], part);
                self.spans.insert_in_call(1, write).await
            }
        };
        let receipt = written.map_err(|e| store_status(&e))?;
        self.metrics.stored(RpcKind::Unary, receipt.count as u64);
        Ok(Response::new(pb::Ack {
            message: "Reading received.".into(),
            // A retry with a key answers as the call that stored it did.
            count: (receipt.count + receipt.already_stored) as u64,
        }))
    }

    /// See [`ingest::stream_sensor_readings`].
    async fn stream_sensor_readings(
        &self,
        request: Request<Streaming<pb::SensorReading>>,
    ) -> Result<Response<pb::Ack>, Status> {
        ingest::stream_sensor_readings(self, request).await
    }

    type GetSensorReadingsStream = BoxStream<pb::SensorReading>;

    async fn get_sensor_readings(
        &self,
        request: Request<pb::SensorRequest>,
    ) -> Result<Response<Self::GetSensorReadingsStream>, Status> {
        history::get_sensor_readings(self, request).await
    }

    type SensorChatStream = BoxStream<pb::ServerMessage>;

    /// See [`chat::sensor_chat`].
    async fn sensor_chat(
        &self,
        request: Request<Streaming<pb::SensorReading>>,
    ) -> Result<Response<Self::SensorChatStream>, Status> {
        chat::sensor_chat(self, request).await
    }

    async fn get_sensor_stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        stats::get_sensor_stats(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use http_body::Frame;
    use prost::Message as _;
    use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};
    use tonic::{Code, codec::Codec as _};

    use super::*;
    use pb::sensor_service_server::SensorService as _;

    /// One gRPC length-prefixed message.
    fn framed(reading: &pb::SensorReading) -> Bytes {
        let body = reading.encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + body.len());
        frame.put_u8(0);
        frame.put_u32(body.len() as u32);
        frame.put_slice(&body);
        frame.freeze()
    }

    /// A client stream whose request body delivers `readings`, then fails
    /// with `error`, as the transport reports a reset or a dropped peer.
    fn failing_stream(
        readings: &[pb::SensorReading],
        error: Status,
    ) -> Request<Streaming<pb::SensorReading>> {
        let mut frames: Vec<Result<Frame<Bytes>, Status>> = readings
            .iter()
            .map(|r| Ok(Frame::data(framed(r))))
            .collect();
        frames.push(Err(error));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let decoder =
            sensorhub_proto::codec::CompactCodec::<pb::Ack, pb::SensorReading>::default().decoder();
        let mut request = Request::new(Streaming::new_request(decoder, body, None, None));
        request
            .extensions_mut()
            .insert(Arc::new(Identity::unrestricted("test")));
        request
    }

    /// An UNAVAILABLE from the stream itself (here the reset code a peer
    /// sends for "refused") is that status, with the count stored, and not
    /// the server's "shutting down", which only a real shutdown may say.
    #[tokio::test]
    async fn an_unavailable_inbound_stream_is_not_reported_as_shutdown() {
        let store: SharedStore = Arc::new(
            EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Memory)).expect("store"),
        );
        let hub = SensorHub::new(
            store.clone(),
            ServiceConfig::default(),
            Lifecycle::default(),
        );
        let reading = pb::SensorReading {
            sensor_id: "reset".into(),
            temperature: 21.5,
            timestamp: unix_now() - 1,
        };
        let cause = "h2 protocol error: stream error received: refused stream before processing any application logic";
        let status = hub
            .stream_sensor_readings(failing_stream(
                &[reading.clone(), reading],
                Status::unavailable(cause),
            ))
            .await
            .expect_err("the stream failed");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("refused stream")
                && !status.message().contains("shutting down"),
            "{}",
            status.message()
        );
        assert_eq!(
            status
                .metadata()
                .get(crate::convert::STORED_COUNT_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("2"),
            "what arrived before the failure is stored"
        );
        store.close().await.expect("close");
    }
}
