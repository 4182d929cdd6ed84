//! What the server holds of request messages that have not arrived yet: a
//! server-wide byte budget and a deadline, as one tower layer that wraps
//! every request body before tonic decodes it.
//!
//! Why: tonic reserves a message's declared length as soon as its 5-byte
//! prefix arrives, and keeps what came of it until the rest does. Without a
//! bound, anyone who can open streams (health and reflection need no token)
//! makes the server hold memory for as long as they like by declaring large
//! messages and never finishing them. The decode limit bounds one message;
//! this layer bounds their sum and their time:
//!
//! - **the budget**: the bytes of messages that are declared but not yet
//!   complete, summed over every stream of the server, stay under
//!   `max_buffered_bytes`. A stream whose partial message would go over it is
//!   ended with `UNAVAILABLE`, which names the limit, instead of being
//!   buffered. A message that arrives whole in one DATA frame (every normal
//!   call) is never charged, so it is served even while the budget is full.
//! - **the deadline**: a request message must arrive complete within
//!   `message_timeout`; for a call with a unary request (tonic waits for the
//!   end of the request before the handler runs) the whole request must.
//!   Otherwise the call ends with `DEADLINE_EXCEEDED`, naming the limit, and
//!   what it held is released. A client stream may stay quiet between
//!   messages for as long as it likes.
//!
//! The accounting reads only the 5-byte prefixes as the frames pass, as the
//! telemetry layer does; the budget is touched (one atomic add and one
//! subtract) only for a message that spans DATA frames.

use std::{
    collections::HashMap,
    fmt,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC message prefix: the compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// The limits, server-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Bytes of request messages declared but not yet complete, over all streams.
    pub max_buffered_bytes: usize,
    /// How long a request message (for a unary request: the whole request) may take to arrive.
    pub message_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_buffered_bytes: 64 * 1024 * 1024,
            message_timeout: Duration::from_secs(10),
        }
    }
}

/// What the layer needs to know of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodShape {
    /// The request is a stream (client streaming or bidirectional).
    pub client_streaming: bool,
    /// The method's decode limit: a longer message is tonic's to refuse.
    pub max_message_bytes: usize,
}

/// Wraps each request body of a registered method in a [`BudgetedBody`].
#[derive(Clone)]
pub struct RequestBudgetLayer {
    shared: Arc<Shared>,
}

struct Shared {
    limits: RequestLimits,
    /// Bytes charged now, over every stream.
    held: AtomicUsize,
    /// Path (with the leading slash) → shape.
    methods: HashMap<Box<str>, MethodShape>,
}

impl RequestBudgetLayer {
    /// `methods`: every registered path as `package.Service/Method`, without
    /// the leading slash. Other paths are not wrapped (tonic answers them
    /// without reading their body).
    pub fn new<M: AsRef<str>>(
        limits: RequestLimits,
        methods: impl IntoIterator<Item = (M, MethodShape)>,
    ) -> Self {
        let methods = methods
            .into_iter()
            .map(|(path, shape)| (format!("/{}", path.as_ref()).into_boxed_str(), shape))
            .collect();
        Self {
            shared: Arc::new(Shared {
                limits,
                held: AtomicUsize::new(0),
                methods,
            }),
        }
    }

    /// Bytes charged to the budget now (for tests and metrics).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RequestBudgetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBudgetLayer")
            .field("limits", &self.shared.limits)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RequestBudgetLayer {
    type Service = RequestBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBudget {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`RequestBudgetLayer`] makes.
#[derive(Clone)]
pub struct RequestBudget<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for RequestBudget<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBudget").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RequestBudget<S>
where
    S: Service<Request<BudgetedBody<B>>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let tracker = self
            .shared
            .methods
            .get(request.uri().path())
            .map(|shape| Tracker::new(self.shared.clone(), *shape));
        self.inner.call(request.map(|inner| BudgetedBody {
            inner,
            tracker,
            deadline: None,
        }))
    }
}

pin_project_lite::pin_project! {
    /// A request body whose partial messages are charged to the budget and timed.
    pub struct BudgetedBody<B> {
        #[pin]
        inner: B,
        tracker: Option<Tracker>,
        // Armed only once the body is waited on while a message is incomplete.
        #[pin]
        deadline: Option<Sleep>,
    }
}

impl<B> fmt::Debug for BudgetedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetedBody").finish_non_exhaustive()
    }
}

/// One stream's accounting.
struct Tracker {
    shared: Arc<Shared>,
    shape: MethodShape,
    /// When the call began (the deadline of a unary request counts from here).
    started: Instant,
    /// When the message now in progress began to arrive.
    message_started: Option<Instant>,
    /// The prefix bytes of the message now in progress, while fewer than 5 arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the message now in progress still to come, once its prefix is in.
    remaining: usize,
    /// What this stream has charged to the budget.
    charged: usize,
    /// The request has ended (END_STREAM), or the decoder refuses it anyway.
    done: bool,
}

impl Tracker {
    fn new(shared: Arc<Shared>, shape: MethodShape) -> Self {
        Self {
            shared,
            shape,
            started: Instant::now(),
            message_started: None,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            charged: 0,
            done: false,
        }
    }

    /// A message is partly here: its prefix, or its prefix and part of its body.
    fn in_message(&self) -> bool {
        self.prefix_len > 0 || self.remaining > 0
    }

    /// Whether the server is waiting for bytes it has a deadline for.
    fn waiting(&self) -> bool {
        !self.done && (!self.shape.client_streaming || self.in_message())
    }

    /// When the wait must end.
    fn deadline(&self) -> Instant {
        let from = if self.shape.client_streaming {
            self.message_started.unwrap_or(self.started)
        } else {
            self.started
        };
        from + self.shared.limits.message_timeout
    }

    /// Follows the message prefixes through one DATA frame, then charges the
    /// message left incomplete at its end (if any) and releases what
    /// completed messages had been charged.
    fn observe(&mut self, mut data: &[u8]) -> Result<(), Status> {
        if self.done {
            return Ok(());
        }
        let mut declared = None;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    self.message_started = None;
                }
                continue;
            }
            let n = (PREFIX - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len < PREFIX {
                break;
            }
            self.prefix_len = 0;
            let len = u32::from_be_bytes([
                self.prefix[1],
                self.prefix[2],
                self.prefix[3],
                self.prefix[4],
            ]) as usize;
            if len > self.shape.max_message_bytes {
                // tonic refuses it with the limit it applied; nothing more is read.
                self.done = true;
                self.release();
                return Ok(());
            }
            self.remaining = len;
            declared = Some(len);
            if len == 0 {
                self.message_started = None;
            }
        }
        let owed = if self.remaining > 0 {
            // tonic has reserved the declared length.
            PREFIX + declared.unwrap_or(self.charged.saturating_sub(PREFIX))
        } else if self.prefix_len > 0 {
            PREFIX
        } else {
            0
        };
        if self.in_message() && self.message_started.is_none() {
            self.message_started = Some(Instant::now());
        }
        self.charge_to(owed)
    }

    /// Makes this stream's charge `owed`, refusing if the budget cannot hold it.
    fn charge_to(&mut self, owed: usize) -> Result<(), Status> {
        if owed <= self.charged {
            if owed < self.charged {
                self.shared
                    .held
                    .fetch_sub(self.charged - owed, Ordering::Relaxed);
                self.charged = owed;
            }
            return Ok(());
        }
        let more = owed - self.charged;
        let limit = self.shared.limits.max_buffered_bytes;
        let before = self.shared.held.fetch_add(more, Ordering::Relaxed);
        if before + more > limit {
            self.shared.held.fetch_sub(more, Ordering::Relaxed);
            self.done = true;
            self.release();
            return Err(Status::unavailable(format!(
                "the server already holds its limit of {limit} bytes of request messages that have not fully arrived (--max-buffered-request-bytes); this call was ended before its message was read, retry with backoff"
            )));
        }
        self.charged = owed;
        Ok(())
    }

    fn release(&mut self) {
        if self.charged > 0 {
            self.shared.held.fetch_sub(self.charged, Ordering::Relaxed);
            self.charged = 0;
        }
    }

    fn expired(&mut self) -> Status {
        self.done = true;
        self.release();
        let timeout = self.shared.limits.message_timeout;
        if self.shape.client_streaming {
            Status::deadline_exceeded(format!(
                "a request message did not arrive complete within {timeout:?} of its first byte (--message-timeout); the call ends here"
            ))
        } else {
            Status::deadline_exceeded(format!(
                "the request did not arrive complete within {timeout:?} (--message-timeout); nothing was done"
            ))
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.release();
    }
}

impl<B> Body for BudgetedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker.as_mut() else {
            return this
                .inner
                .poll_frame(cx)
                .map_err(|e| Status::from_error(e.into()));
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(refused) = tracker.observe(data.chunk())
                {
                    return Poll::Ready(Some(Err(refused)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracker.done = true;
                tracker.release();
                Poll::Ready(Some(Err(Status::from_error(e.into()))))
            }
            Poll::Ready(None) => {
                tracker.done = true;
                tracker.release();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !tracker.waiting() {
                    return Poll::Pending;
                }
                let deadline = tracker.deadline();
                match this.deadline.as_mut().as_pin_mut() {
                    Some(sleep) => {
                        if sleep.deadline() != deadline {
                            sleep.reset(deadline);
                        }
                    }
                    None => this.deadline.set(Some(tokio::time::sleep_until(deadline))),
                }
                let sleep = this.deadline.as_pin_mut().expect("just armed");
                match sleep.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(tracker.expired()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(max_buffered_bytes: usize) -> Arc<Shared> {
        Arc::new(Shared {
            limits: RequestLimits {
                max_buffered_bytes,
                message_timeout: Duration::from_secs(10),
            },
            held: AtomicUsize::new(0),
            methods: HashMap::new(),
        })
    }

    const STREAM: MethodShape = MethodShape {
        client_streaming: true,
        max_message_bytes: 1_000,
    };

    fn prefix(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&len.to_be_bytes());
        out
    }

    #[tokio::test]
    async fn whole_messages_are_never_charged_partial_ones_until_complete() {
        let shared = shared(10_000);
        let mut tracker = Tracker::new(shared.clone(), STREAM);
        // Two whole messages in one frame: nothing held.
        let mut frame = prefix(3);
        frame.extend_from_slice(b"abc");
        frame.extend_from_slice(&prefix(0));
        tracker.observe(&frame).unwrap();
        assert_eq!(shared.held.load(Ordering::Relaxed), 0);
        assert!(!tracker.waiting());

        // A prefix split across frames, then a body across three.
        tracker.observe(&prefix(500)[..2]).unwrap();
        assert_eq!(shared.held.load(Ordering::Relaxed), PREFIX);
        assert!(tracker.waiting());
        tracker.observe(&prefix(500)[2..]).unwrap();
        assert_eq!(shared.held.load(Ordering::Relaxed), 505);
        tracker.observe(&[0; 200]).unwrap();
        assert_eq!(shared.held.load(Ordering::Relaxed), 505);
        let mut last = vec![0; 300];
        last.extend_from_slice(&prefix(100)); // the next one begins
        tracker.observe(&last).unwrap();
        assert_eq!(shared.held.load(Ordering::Relaxed), 105);
        drop(tracker);
        assert_eq!(shared.held.load(Ordering::Relaxed), 0, "released on drop");
    }

    #[tokio::test]
    async fn a_partial_message_over_the_budget_is_refused_naming_the_limit() {
        let shared = shared(1_500);
        let mut first = Tracker::new(shared.clone(), STREAM);
        first.observe(&prefix(900)).unwrap();
        let mut second = Tracker::new(shared.clone(), STREAM);
        let refused = second.observe(&prefix(900)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().contains("1500 bytes"), "{refused:?}");
        assert_eq!(shared.held.load(Ordering::Relaxed), 905);
        // A whole message still passes while the budget is full.
        let mut third = Tracker::new(shared.clone(), STREAM);
        let mut whole = prefix(900);
        whole.extend_from_slice(&[0; 900]);
        third.observe(&whole).unwrap();
        drop(first);
        assert_eq!(shared.held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_message_over_the_decode_limit_is_left_to_tonic() {
        let shared = shared(100);
        let mut tracker = Tracker::new(shared.clone(), STREAM);
        tracker.observe(&prefix(4_000_000)).unwrap();
        assert_eq!(shared.held.load(Ordering::Relaxed), 0);
        assert!(!tracker.waiting());
    }

    #[tokio::test]
    async fn a_unary_request_is_timed_from_its_start_until_it_ends() {
        let shared = shared(10_000);
        let unary = MethodShape {
            client_streaming: false,
            ..STREAM
        };
        let tracker = Tracker::new(shared.clone(), unary);
        assert!(tracker.waiting(), "even before any byte");
        assert_eq!(
            tracker.deadline(),
            tracker.started + Duration::from_secs(10)
        );
        let mut streaming = Tracker::new(shared, STREAM);
        assert!(!streaming.waiting(), "a quiet client stream is not timed");
        streaming.observe(&prefix(10)).unwrap();
        assert!(streaming.waiting());
        let status = streaming.expired();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("10s"), "{status:?}");
    }
}
