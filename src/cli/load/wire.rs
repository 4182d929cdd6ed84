//! The load generator's side of the wire: one connection per [`Conn`], the
//! calls it makes, and codecs that keep the client cheap.
//!
//! Readings go out pre-encoded (the [`Fleet`](super::fleet::Fleet) encodes
//! every message once, before the run), so sending one is a copy into
//! tonic's buffer. History pages coming back are counted, not decoded. Acks
//! and chat replies are small and decoded with prost. There is no telemetry
//! layer on these channels: a load tool must not make a span per call. The
//! transparent retry of calls that never left the client is there, as on
//! every client of sensorhub's: without it, a replica that dies mid-run
//! fails the calls queued for it, and those the balancer sends it before
//! its health check ejects it, although none of them reached it.

use std::{marker::PhantomData, pin::Pin};

use bytes::{BufMut as _, Bytes};
use futures_util::{Stream, StreamExt as _};
use http::uri::PathAndQuery;
use prost::Message;
use sensorhub_grpc::client::{
    AttachToken, ConnectError,
    replicas::{Balanced, ReplicaSet},
    unsent_retry::UnsentRetry,
};
use sensorhub_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{
    Request, Status, Streaming,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    service::interceptor::InterceptedService,
};

/// One HTTP/2 connection to each replica (balanced over them), with the
/// token attached to every call.
pub type Conn = tonic::client::Grpc<InterceptedService<UnsentRetry<Balanced>, AttachToken>>;

/// Opens `n` separate balancers over `replicas` (each with its own
/// connection to every replica), driven by the current runtime.
pub async fn connect(
    replicas: &ReplicaSet,
    token: Option<&str>,
    n: usize,
) -> Result<Vec<Conn>, ConnectError> {
    let token = AttachToken::new(token)?;
    let opening = (0..n).map(|_| replicas.channel());
    let mut conns = Vec::with_capacity(n);
    for channel in futures_util::future::join_all(opening).await {
        conns.push(tonic::client::Grpc::new(InterceptedService::new(
            UnsentRetry::new(channel?),
            token.clone(),
        )));
    }
    Ok(conns)
}

mod path {
    pub const UNARY: &str = "/SensorService/SendSingleReading";
    pub const CLIENT_STREAM: &str = "/SensorService/StreamSensorReadings";
    pub const SERVER_STREAM: &str = "/SensorService/GetSensorReadings";
    pub const CHAT: &str = "/SensorService/SensorChat";
}

/// Sends messages that are already encoded; decodes replies as `D`.
///
/// tonic allocates an encode and a decode buffer per call (8 KiB each by
/// default); a unary call needs a few dozen bytes of each, so the sizes are
/// set per call kind.
#[derive(Debug)]
pub struct PreEncoded<D> {
    send: BufferSettings,
    receive: BufferSettings,
    reply: PhantomData<fn() -> D>,
}

/// Buffer sizes for one message of a few dozen bytes.
const SMALL: usize = 128;
/// tonic's default: a body chunk is yielded once this much is encoded.
const YIELD: usize = 32 * 1024;

impl<D> PreEncoded<D> {
    /// One small message each way.
    fn small() -> Self {
        Self::sized(SMALL, SMALL)
    }

    fn sized(send: usize, receive: usize) -> Self {
        PreEncoded {
            send: BufferSettings::new(send, YIELD),
            receive: BufferSettings::new(receive, YIELD),
            reply: PhantomData,
        }
    }
}

#[derive(Debug)]
pub struct CopyEncoder(BufferSettings);

impl Encoder for CopyEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0
    }
}

/// What a reply decodes to.
pub trait Reply: Send + Sync + 'static {
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status>
    where
        Self: Sized;
}

impl Reply for pb::Ack {
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Message::decode(src).map_err(|e| Status::internal(format!("bad Ack: {e}")))
    }
}

/// A chat reply: only whether it answers a reading or is an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatReply {
    Received,
    Alert,
}

impl Reply for ChatReply {
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let message: pb::ServerMessage = Message::decode(src)
            .map_err(|e| Status::internal(format!("bad ServerMessage: {e}")))?;
        Ok(if message.kind == pb::ServerMessageKind::Alert as i32 {
            ChatReply::Alert
        } else {
            ChatReply::Received
        })
    }
}

/// A history reading, counted and skipped: decoding millions of them per
/// second would make the client the bottleneck of a read-back benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Skipped;

impl Reply for Skipped {
    fn decode(src: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        use bytes::Buf as _;
        let n = src.remaining();
        src.advance(n);
        Ok(Skipped)
    }
}

#[derive(Debug)]
pub struct ReplyDecoder<D>(BufferSettings, PhantomData<fn() -> D>);

impl<D: Reply> Decoder for ReplyDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0
    }
}

impl<D: Reply> Codec for PreEncoded<D> {
    type Encode = Bytes;
    type Decode = D;
    type Encoder = CopyEncoder;
    type Decoder = ReplyDecoder<D>;

    fn encoder(&mut self) -> CopyEncoder {
        CopyEncoder(self.send)
    }
    fn decoder(&mut self) -> ReplyDecoder<D> {
        ReplyDecoder(self.receive, PhantomData)
    }
}

async fn ready(conn: &mut Conn) -> Result<(), Status> {
    conn.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))
}

/// `SendSingleReading`: one pre-encoded reading. Returns the readings stored (1).
pub async fn unary(mut conn: Conn, reading: Bytes) -> Result<u64, Status> {
    ready(&mut conn).await?;
    let path = PathAndQuery::from_static(path::UNARY);
    conn.unary::<_, pb::Ack, _>(Request::new(reading), path, PreEncoded::small())
        .await?;
    Ok(1)
}

/// `StreamSensorReadings`: the given readings in one call. Returns how many were sent.
pub async fn client_stream<S>(mut conn: Conn, readings: S, sent: u64) -> Result<u64, Status>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    ready(&mut conn).await?;
    let path = PathAndQuery::from_static(path::CLIENT_STREAM);
    let codec = PreEncoded::sized(YIELD + 4096, SMALL);
    conn.client_streaming::<_, _, pb::Ack, _>(Request::new(readings), path, codec)
        .await?;
    Ok(sent)
}

/// `GetSensorReadings` for a pre-encoded `SensorRequest`. Returns the readings received.
pub async fn server_stream(mut conn: Conn, request: Bytes) -> Result<u64, Status> {
    ready(&mut conn).await?;
    let path = PathAndQuery::from_static(path::SERVER_STREAM);
    let mut stream = conn
        .server_streaming::<_, Skipped, _>(
            Request::new(request),
            path,
            PreEncoded::sized(SMALL, 64 * 1024),
        )
        .await?
        .into_inner();
    let mut received = 0;
    while stream.message().await?.is_some() {
        received += 1;
    }
    Ok(received)
}

/// A short `SensorChat`: sends `readings`, half-closes, and waits for a reply
/// to each. Returns the readings acknowledged and the alerts seen.
pub async fn chat_call<S>(mut conn: Conn, readings: S, sent: u64) -> Result<(u64, u64), Status>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let mut replies = open_chat(&mut conn, readings).await?;
    let (mut received, mut alerts) = (0, 0);
    while let Some(reply) = replies.message().await? {
        match reply {
            ChatReply::Received => received += 1,
            ChatReply::Alert => alerts += 1,
        }
    }
    if received != sent {
        return Err(Status::data_loss(format!(
            "chat ended after {received} of {sent} replies"
        )));
    }
    Ok((received, alerts))
}

/// Opens a `SensorChat` whose readings come from `readings`.
pub async fn open_chat<S>(conn: &mut Conn, readings: S) -> Result<Streaming<ChatReply>, Status>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    ready(conn).await?;
    let path = PathAndQuery::from_static(path::CHAT);
    Ok(conn
        .streaming(Request::new(readings), path, PreEncoded::small())
        .await?
        .into_inner())
}

/// Which chat stream replies belong to: (session, how many times it was opened).
pub type Tag = (usize, u32);

/// A boxed stream of chat replies tagged with their stream; its last item
/// is `(tag, None)`: the chat has ended.
pub type TaggedReplies =
    Pin<Box<dyn Stream<Item = (Tag, Option<Result<ChatReply, Status>>)> + Send>>;

/// Starts a long-lived chat: returns the sender for its readings and a
/// future that resolves to its tagged replies once the server has answered
/// the call's headers. Readings may be sent before that.
pub fn start_chat(
    mut conn: Conn,
    tag: Tag,
) -> (
    mpsc::UnboundedSender<Bytes>,
    impl Future<Output = Result<TaggedReplies, (Tag, Status)>> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let opening = async move {
        let replies = open_chat(&mut conn, UnboundedReceiverStream::new(rx))
            .await
            .map_err(|status| (tag, status))?;
        let ended = futures_util::stream::once(async move { (tag, None) });
        let tagged: TaggedReplies =
            Box::pin(replies.map(move |reply| (tag, Some(reply))).chain(ended));
        Ok(tagged)
    };
    (tx, opening)
}
