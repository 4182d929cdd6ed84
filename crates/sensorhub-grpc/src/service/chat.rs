//! SensorChat: readings in, replies out in arrival order, each once its
//! reading is durable, followed by any alert it raised.

use std::{collections::VecDeque, pin::Pin, sync::Arc};

use futures_util::{StreamExt, stream::FuturesOrdered};
use sensorhub_core::{StoreError, WriteReceipt};
use sensorhub_proto as pb;
use tonic::{Request, Response, Status, Streaming};

use super::{BoxStream, SensorHub, shutting_down, unix_now};
use crate::auth::Identity;
use crate::convert::{
    alert_to_wire, decode_status, reading_from_wire, received_message, set_stored_count,
    store_status,
};
use crate::deadline;
use crate::service_metrics::RpcKind;

/// The reply stream is the chat itself: each poll for the next reply
/// reads readings and waits for their commits. No task and no channel
/// per chat, so an idle chat costs only its state (10,000 open chats
/// are in BENCHMARKS.md), and a client that stops reading replies stops
/// the server reading its readings (HTTP/2 flow control does the rest).
pub(super) async fn sensor_chat(
    hub: &SensorHub,
    request: Request<Streaming<pb::SensorReading>>,
) -> Result<Response<BoxStream<pb::ServerMessage>>, Status> {
    let timeout = deadline::requested_timeout(request.metadata());
    let identity = Identity::of(&request)?;
    let chat = Chat::new(hub.clone(), identity, request.into_inner());
    let replies = futures_util::stream::unfold(chat, |mut chat| async move {
        let reply = chat.next_reply().await?;
        Some((reply, chat))
    });
    Ok(Response::new(deadline::limit(Box::pin(replies), timeout)))
}

type Commit =
    Pin<Box<dyn std::future::Future<Output = (f64, Result<WriteReceipt, StoreError>)> + Send>>;

/// One chat: readings in, replies out in the order the readings arrived,
/// each sent once its reading is durable and followed by any alert it raised.
struct Chat {
    hub: SensorHub,
    /// Who is chatting: what it may write is checked per reading.
    identity: Arc<Identity>,
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
    fn new(hub: SensorHub, identity: Arc<Identity>, inbound: Streaming<pb::SensorReading>) -> Self {
        Self {
            identity,
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
                    if let Err(refused) = self.hub.admissible(&self.identity, &reading) {
                        // Everything before it is stored: acknowledge it first.
                        self.drain().await?;
                        return Err(refused.in_stream(self.received, self.stored));
                    }
                    self.received += 1;
                    let temperature = reading.temperature;
                    let pending = self.hub.store.enqueue(vec![reading], None).await.map_err(|e| store_status(&e))?;
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
