//! The workers. Each owns one connection, its share of the sensors, of the
//! concurrency and of the schedule, and its own [`Tally`].
//!
//! - [`calls`] drives unary, client-stream, server-stream and mixed calls.
//!   Closed loop: keep `concurrency` calls in flight, a new one as soon as
//!   one finishes; latency runs from the actual send. Open loop: call `j` of
//!   the whole run is due at `start + j / rate`; worker `w` of `W` takes
//!   `j = w, w + W, …`. Latency runs from the *due* time (or the send, if
//!   that was earlier), so a server (or a
//!   client) that falls behind shows as latency, not as fewer calls
//!   (no coordinated omission). `concurrency` caps what is in flight.
//! - [`chat`] holds long-lived `SensorChat` streams, one reading in flight
//!   per stream in a closed loop, or readings dealt round-robin onto the
//!   streams on the open-loop schedule; latency per reading, until its
//!   "Received" reply.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{
    StreamExt as _,
    stream::{FuturesUnordered, SelectAll},
};
use tokio::{sync::mpsc, time::sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    fleet::Fleet,
    tally::{Live, Tally},
    wire::{self, ChatReply, Conn, Tag, TaggedReplies},
};
use crate::simulator::Kind;

/// What every worker of a run shares.
#[derive(Debug)]
pub struct Plan {
    pub fleet: &'static Fleet,
    /// The kinds calls cycle through (one entry unless mixed).
    pub kinds: Vec<Kind>,
    /// Readings per client-stream call (and per short chat in a mix).
    pub batch: u64,
    /// The encoded history request of server-stream calls.
    pub query: Bytes,
    /// Open loop: calls (chat: readings) per second, the whole run.
    pub rate: Option<f64>,
    pub start: Instant,
    /// No new call is due at or after this (duration runs).
    pub end: Option<Instant>,
    /// Calls due before this are not counted (warm-up).
    pub measure_from: Instant,
    /// How long calls in flight at the end may still finish.
    pub drain: Duration,
    pub workers: usize,
}

/// One worker's share.
#[derive(Debug)]
pub struct Job {
    pub index: usize,
    pub conn: Conn,
    /// Indices into the fleet.
    pub sensors: Vec<usize>,
    /// In flight (closed loop), at most in flight (open loop), or chat streams.
    pub concurrency: usize,
    /// Calls (chat: readings) this worker makes, when the run is counted.
    pub count: Option<u64>,
}

/// The schedule of one worker.
struct Schedule<'a> {
    plan: &'a Plan,
    index: u64,
    count: Option<u64>,
    /// Calls (readings) issued so far by this worker.
    issued: u64,
}

impl Schedule<'_> {
    /// When the next call is due (open loop; the closed loop returns `now`),
    /// or `None` when this worker has nothing more to send.
    #[inline]
    fn next_due(&self, now: Instant) -> Option<Instant> {
        if self.count.is_some_and(|c| self.issued >= c) {
            return None;
        }
        let due = match self.plan.rate {
            Some(rate) => {
                let j = self.index + self.issued * self.plan.workers as u64;
                self.plan.start + Duration::from_secs_f64(j as f64 / rate)
            }
            None => now,
        };
        match self.plan.end {
            Some(end) if due >= end => None,
            _ => Some(due),
        }
    }
}

/// tokio's timer fires on the first millisecond tick after a deadline, so an
/// open loop wakes this much early and sends what is due by then: sends are
/// on time rather than up to a tick late. A call sent early has its latency
/// measured from the send, never from before it.
const LOOKAHEAD: Duration = Duration::from_millis(1);

type CallFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A finished call: its kind, when its latency starts, its result.
struct Done {
    kind: Kind,
    /// When the call was due, or when it was sent if that was earlier (a
    /// send within the look-ahead, or a closed loop): never after the send.
    from: Instant,
    finished: Instant,
    /// (readings sent, readings received, alerts)
    result: Result<(u64, u64, u64), Status>,
}

/// Call number `n` of this worker. The kind follows the run-wide call number
/// (`index + n * workers`), so a mix keeps its weights across workers.
fn call(plan: &'static Plan, job: &Job, n: u64, from: Instant) -> (Kind, CallFuture) {
    let j = job.index as u64 + n * plan.workers as u64;
    let kind = plan.kinds[(j % plan.kinds.len() as u64) as usize];
    let per = job.sensors.len() as u64;
    let sensor = job.sensors[(n % per) as usize];
    let k = (n / per) as usize;
    let conn = job.conn.clone();
    let (fleet, batch) = (plan.fleet, plan.batch);
    // One small future per kind: the state machine of each is moved into its box.
    let future: CallFuture = match kind {
        Kind::Unary => {
            let reading = fleet.reading(sensor, k);
            Box::pin(async move {
                let result = wire::unary(conn, reading).await;
                done(kind, from, result.map(|sent| (sent, 0, 0)))
            })
        }
        Kind::ClientStream => Box::pin(async move {
            let result = wire::client_stream(conn, fleet.batch(sensor, batch), batch).await;
            done(kind, from, result.map(|sent| (sent, 0, 0)))
        }),
        Kind::ServerStream => Box::pin(async move {
            let result = wire::server_stream(conn, plan.query.clone()).await;
            done(kind, from, result.map(|received| (0, received, 0)))
        }),
        Kind::Chat => Box::pin(async move {
            let result = wire::chat_call(conn, fleet.batch(sensor, batch), batch).await;
            done(kind, from, result.map(|(sent, alerts)| (sent, 0, alerts)))
        }),
    };
    (kind, future)
}

#[inline]
fn done(kind: Kind, from: Instant, result: Result<(u64, u64, u64), Status>) -> Done {
    Done {
        kind,
        from,
        finished: Instant::now(),
        result,
    }
}

/// Unary, client-stream, server-stream and mixed calls, closed or open loop.
pub async fn calls(
    plan: &'static Plan,
    job: Job,
    live: Arc<Live>,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut schedule = Schedule {
        plan,
        index: job.index as u64,
        count: job.count,
        issued: 0,
    };
    let cap = job.concurrency.max(1);
    let mut in_flight = FuturesUnordered::new();
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    // Wakes the loop for the next due call (open loop) or at the end (closed loop).
    let tick = sleep_until(far.into());
    tokio::pin!(tick);
    let mut tick_at = far;
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let drain = sleep_until(far.into());
    tokio::pin!(drain);
    let mut issuing = true;
    // Calls in flight by kind, to say what was unfinished.
    let mut pending = [0u64; 4];

    loop {
        if issuing {
            let now = Instant::now();
            loop {
                let Some(due) = schedule.next_due(now) else {
                    issuing = false;
                    drain.as_mut().reset((now + plan.drain).into());
                    break;
                };
                if due > now + LOOKAHEAD {
                    let wake = due - LOOKAHEAD;
                    if tick_at != wake {
                        tick.as_mut().reset(wake.into());
                        tick_at = wake;
                    }
                    break;
                }
                if in_flight.len() >= cap {
                    break;
                }
                if plan.rate.is_some() {
                    tally.lag(now.saturating_duration_since(due));
                } else if let Some(end) = plan.end
                    && tick_at != end
                {
                    tick.as_mut().reset(end.into());
                    tick_at = end;
                }
                let (kind, future) = call(plan, &job, schedule.issued, due.min(now));
                pending[kind as usize] += 1;
                in_flight.push(future);
                schedule.issued += 1;
            }
        }
        if !issuing && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = in_flight.next() => {
                pending[done.kind as usize] -= 1;
                record(plan, &mut tally, &live, done);
            }
            _ = &mut cancelled, if issuing => {
                issuing = false;
                drain.as_mut().reset((Instant::now() + plan.drain).into());
            }
            _ = &mut tick, if issuing => {
                // Past the end of a closed-loop run: stop sending.
                if plan.rate.is_none() {
                    issuing = false;
                    drain.as_mut().reset((Instant::now() + plan.drain).into());
                }
                tick_at = far;
            }
            _ = &mut drain, if !issuing => {
                for kind in Kind::ALL {
                    tally.kind(kind).unfinished += pending[kind as usize];
                }
                break;
            }
        }
    }
    tally
}

#[inline]
fn record(plan: &Plan, tally: &mut Tally, live: &Live, done: Done) {
    let counted = done.from >= plan.measure_from;
    match done.result {
        Ok((sent, received, alerts)) => {
            live.add(true, sent + received);
            if counted {
                let kind = tally.kind(done.kind);
                kind.ok(done.finished - done.from, sent, received);
                kind.alerts += alerts;
            }
        }
        Err(status) => {
            live.add(false, 0);
            if counted {
                tally
                    .kind(done.kind)
                    .failed(status.code(), status.message());
            }
        }
    }
    if counted {
        tally.last_done = Some(done.finished);
    }
}

/// One long-lived chat stream.
struct Session {
    sensor: usize,
    /// `None` when the stream has failed (it is reopened on the next send) or at the end.
    outbound: Option<mpsc::UnboundedSender<Bytes>>,
    /// Due times of the readings sent and not yet answered, oldest first.
    waiting: VecDeque<Instant>,
    /// Readings this session has sent (picks the next temperature).
    sent: usize,
    /// Closed loop: queued in `idle`.
    idle: bool,
    /// How many times the stream was opened; replies of an older one are stale.
    generation: u32,
}

type Opening = Pin<Box<dyn Future<Output = Result<TaggedReplies, (Tag, Status)>> + Send>>;

/// A worker's chat streams and what they are owed.
struct Chats {
    plan: &'static Plan,
    conn: Conn,
    sessions: Vec<Session>,
    opening: FuturesUnordered<Opening>,
    replies: SelectAll<TaggedReplies>,
    /// Closed loop: sessions ready for their next reading.
    idle: VecDeque<usize>,
    /// Readings sent and not yet answered, all sessions.
    waiting: usize,
    tally: Tally,
    live: Arc<Live>,
}

impl Chats {
    fn open(&mut self, i: usize) {
        let session = &mut self.sessions[i];
        session.generation = session.generation.wrapping_add(1);
        let (tx, open) = wire::start_chat(self.conn.clone(), (i, session.generation));
        session.outbound = Some(tx);
        self.opening.push(Box::pin(open));
    }

    /// Sends session `i` its next reading; its latency runs from `from`.
    fn send(&mut self, i: usize, from: Instant) {
        if self.sessions[i].outbound.is_none() {
            self.open(i);
        }
        let session = &mut self.sessions[i];
        let reading = self.plan.fleet.reading(session.sensor, session.sent);
        session.sent += 1;
        session.waiting.push_back(from);
        self.waiting += 1;
        if let Some(tx) = &session.outbound {
            // A stream that has closed shows up on the replies side.
            let _ = tx.send(reading);
        }
    }

    fn make_idle(&mut self, i: usize) {
        let session = &mut self.sessions[i];
        if self.plan.rate.is_none() && !session.idle && session.waiting.is_empty() {
            session.idle = true;
            self.idle.push_back(i);
        }
    }

    fn received(&mut self, i: usize) {
        if let Some(due) = self.sessions[i].waiting.pop_front() {
            self.waiting -= 1;
            let finished = Instant::now();
            self.live.add(true, 1);
            if due >= self.plan.measure_from {
                self.tally.kind(Kind::Chat).ok(finished - due, 1, 0);
                self.tally.last_done = Some(finished);
            }
        }
        self.make_idle(i);
    }

    /// Every reading a failed stream still owed a reply for failed with `code`.
    fn failed(&mut self, i: usize, code: Code, message: &str) {
        let session = &mut self.sessions[i];
        session.outbound = None;
        for due in session.waiting.drain(..) {
            self.waiting -= 1;
            self.live.add(false, 0);
            if due >= self.plan.measure_from {
                self.tally.kind(Kind::Chat).failed(code, message);
                self.tally.last_done = Some(Instant::now());
            }
        }
        self.make_idle(i);
    }

    /// Half-closes every stream: the server ends each once it has replied.
    fn close_all(&mut self) {
        for session in &mut self.sessions {
            session.outbound = None;
        }
    }
}

/// Long-lived chat streams: `job.concurrency` of them on this worker's connection.
pub async fn chat(
    plan: &'static Plan,
    job: Job,
    live: Arc<Live>,
    stop: CancellationToken,
) -> Tally {
    let streams = job.concurrency.max(1);
    let mut schedule = Schedule {
        plan,
        index: job.index as u64,
        count: job.count,
        issued: 0,
    };
    let mut chats = Chats {
        plan,
        conn: job.conn.clone(),
        sessions: (0..streams)
            .map(|i| Session {
                sensor: job.sensors[i % job.sensors.len()],
                outbound: None,
                waiting: VecDeque::new(),
                sent: 0,
                idle: false,
                generation: 0,
            })
            .collect(),
        opening: FuturesUnordered::new(),
        replies: SelectAll::new(),
        idle: VecDeque::new(),
        waiting: 0,
        tally: Tally::default(),
        live,
    };
    // Every stream is opened up front and held for the whole run.
    for i in 0..streams {
        chats.open(i);
        chats.make_idle(i);
    }

    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let tick = sleep_until(far.into());
    tokio::pin!(tick);
    let mut tick_at = far;
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let drain = sleep_until(far.into());
    tokio::pin!(drain);
    let mut issuing = true;
    let mut next_session = 0usize;

    loop {
        if issuing {
            let now = Instant::now();
            loop {
                let Some(due) = schedule.next_due(now) else {
                    issuing = false;
                    break;
                };
                if due > now + LOOKAHEAD {
                    let wake = due - LOOKAHEAD;
                    if tick_at != wake {
                        tick.as_mut().reset(wake.into());
                        tick_at = wake;
                    }
                    break;
                }
                let i = if plan.rate.is_some() {
                    chats.tally.lag(now.saturating_duration_since(due));
                    let i = next_session;
                    next_session = (next_session + 1) % streams;
                    i
                } else {
                    if let Some(end) = plan.end
                        && tick_at != end
                    {
                        tick.as_mut().reset(end.into());
                        tick_at = end;
                    }
                    match chats.idle.pop_front() {
                        Some(i) => {
                            chats.sessions[i].idle = false;
                            i
                        }
                        None => break,
                    }
                };
                chats.send(i, due.min(now));
                schedule.issued += 1;
            }
            if !issuing {
                drain.as_mut().reset((now + plan.drain).into());
                chats.close_all();
            }
        }
        if !issuing && chats.waiting == 0 {
            break;
        }
        tokio::select! {
            biased;
            Some(((i, generation), reply)) = chats.replies.next() => {
                if chats.sessions[i].generation == generation {
                    match reply {
                        Some(Ok(ChatReply::Received)) => chats.received(i),
                        Some(Ok(ChatReply::Alert)) => chats.tally.kind(Kind::Chat).alerts += 1,
                        Some(Err(status)) => chats.failed(i, status.code(), status.message()),
                        // The server ended the chat: normal once everything is answered.
                        None => chats.failed(i, Code::DataLoss, "the server ended the chat before replying to every reading"),
                    }
                }
            }
            Some(opened) = chats.opening.next() => match opened {
                Ok(stream) => chats.replies.push(stream),
                Err(((i, generation), status)) => {
                    if chats.sessions[i].generation == generation {
                        chats.failed(i, status.code(), status.message());
                    }
                }
            },
            _ = &mut cancelled, if issuing => {
                issuing = false;
                drain.as_mut().reset((Instant::now() + plan.drain).into());
                chats.close_all();
            }
            _ = &mut tick, if issuing => {
                if plan.rate.is_none() {
                    issuing = false;
                    drain.as_mut().reset((Instant::now() + plan.drain).into());
                    chats.close_all();
                }
                tick_at = far;
            }
            _ = &mut drain, if !issuing => {
                chats.tally.kind(Kind::Chat).unfinished += chats.waiting as u64;
                break;
            }
        }
    }
    chats.tally
}
