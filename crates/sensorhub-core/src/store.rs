//! The store boundary: what the service asks of a store, in the domain's
//! terms, whichever engine keeps the data.
//!
//! Why a trait here and the engines elsewhere: the transport and the domain
//! must not know how readings are kept (an embedded commit log in front of
//! SQLite, or a shared PostgreSQL). Each engine is its own crate that
//! depends on this one, so Cargo enforces that nothing here reaches into
//! an engine; the binary picks one and hands the transport a
//! [`SharedStore`].
//!
//! The promises every engine keeps (and `conformance` checks, one suite for
//! all engines):
//! - **Durable before acknowledged.** [`PendingWrite::committed`] answers
//!   only once the write survives a crash of the process (and, for a
//!   shared engine, of the host it runs on).
//! - **Group commit.** Writes queued at once share one durable commit.
//! - **Commit order.** Every stored reading gets a sequence number; numbers
//!   grow in commit order, never repeat, and the statistics and alerts are
//!   applied to readings in that order, exactly once.
//! - **Read your writes.** A query sees every write acknowledged before it
//!   began ([`Store::caught_up_seq`]).
//! - **Bounded memory.** History is read in keyset pages and a live tail is
//!   a cursor (`seq > after`) over the store, woken by
//!   [`Store::committed_seq`], never a buffer.
//!
//! Invariant: the trait is object-safe (methods return boxed futures), so
//! the transport holds one `Arc<dyn Store>` chosen at start.

pub mod activity;
pub mod group_commit;
pub mod metrics;

use std::{future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::{oneshot, watch};

use crate::{
    Alert, AlertRules, Reading, SensorStats, StoredReading,
    idempotency::{KeyLimits, KeyedPart},
};

/// What a store method returns: a future that may borrow the store and the
/// method's arguments.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store the service runs on, shared by every call.
pub type SharedStore = Arc<dyn Store>;

/// How any engine treats readings: the settings that are not about where or
/// how the data is kept.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub alert_rules: AlertRules,
    /// Delete readings whose timestamp is older than this. `None`: keep everything.
    pub retention: Option<Duration>,
    /// Most readings one group commit takes.
    pub max_batch: usize,
    /// Writes (calls, not readings) that may wait for the writer before callers block.
    pub queue_depth: usize,
    /// Sensors whose last temperature is exported as a gauge (the first ones seen).
    pub max_tracked_sensors: usize,
    /// How many idempotency keys are remembered, and for how long.
    pub idempotency: KeyLimits,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            alert_rules: AlertRules::default(),
            retention: None,
            max_batch: 65_536,
            queue_depth: 1_024,
            max_tracked_sensors: 1_000,
            idempotency: KeyLimits::default(),
        }
    }
}

/// What the store could not do, in words an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is closed")]
    Closed,
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "the store at {path} is damaged ({reason}); restore it from a backup or move it aside to start empty. Nothing was changed"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the store at {0} is in use by another sensorhub process; stop it or pass another --data directory"
    )]
    Locked(PathBuf),
    #[error("writing to the store failed: {0}")]
    Write(String),
    #[error("reading from the store failed: {0}")]
    Read(String),
    /// A keyed write whose key stored other readings: nothing was stored.
    #[error("{0}")]
    KeyConflict(String),
    /// A store file could not be opened because the process has no file
    /// descriptor left (`EMFILE`, `ENFILE`): a transient overload, not a
    /// failure of the store.
    #[error(
        "the process is out of file descriptors, so a store file could not be opened (too many open connections or files)"
    )]
    OutOfDescriptors,
    /// The store cannot be reached now (a shared database down or cut
    /// off); it recovers by itself. The message says what happened to the
    /// write, when that is unknown.
    #[error("{0}")]
    Unavailable(String),
    /// The store refused to open: the message is one line saying what to fix.
    #[error("{0}")]
    Refused(String),
}

/// What one durable write did.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteReceipt {
    /// The sequence number given to the first reading of the write.
    pub first_seq: u64,
    /// How many readings were stored.
    pub count: usize,
    /// How many of the write's first readings were not stored because an
    /// earlier write with the same idempotency key had stored them.
    pub already_stored: usize,
    /// Alerts raised by these readings, in order.
    pub alerts: Vec<Alert>,
}

/// Where an engine answers a queued write, exactly once.
pub type CommitReply = oneshot::Sender<Result<WriteReceipt, StoreError>>;

/// A write that has been queued and will be acknowledged once committed.
#[derive(Debug)]
pub struct PendingWrite(oneshot::Receiver<Result<WriteReceipt, StoreError>>);

impl PendingWrite {
    /// A pending write and the reply its engine answers it through. A reply
    /// dropped unanswered reads as [`StoreError::Closed`].
    pub fn channel() -> (CommitReply, PendingWrite) {
        let (reply, rx) = oneshot::channel();
        (reply, PendingWrite(rx))
    }

    /// Waits until the write is durable (or has failed).
    pub async fn committed(self) -> Result<WriteReceipt, StoreError> {
        self.0.await.unwrap_or(Err(StoreError::Closed))
    }
}

/// Which history to read: one sensor, a time range, in (timestamp, seq) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub sensor_id: String,
    /// Only readings with `timestamp >= since`.
    pub since: Option<i64>,
    /// Only readings with `timestamp < until`.
    pub until: Option<i64>,
    /// Only readings committed with `seq <= up_to_seq` (a snapshot for follow mode).
    pub up_to_seq: Option<u64>,
}

impl HistoryQuery {
    /// All of one sensor's history.
    pub fn sensor(sensor_id: impl Into<String>) -> Self {
        Self {
            sensor_id: sensor_id.into(),
            since: None,
            until: None,
            up_to_seq: None,
        }
    }
}

/// Where a paginated history read has got to: the last (timestamp, seq) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryCursor {
    last: Option<(i64, u64)>,
}

impl HistoryCursor {
    /// A cursor whose next page starts at the reading (`timestamp`, `seq`).
    pub fn at(timestamp: i64, seq: u64) -> Self {
        // Pages continue after (ts, seq) > the cursor: every seq is at
        // least 1, so (timestamp, seq - 1) is just before this reading.
        Self {
            last: Some((timestamp, seq.saturating_sub(1))),
        }
    }

    /// The (timestamp, seq) the next page starts after; `None`: the start.
    pub fn after(&self) -> Option<(i64, u64)> {
        self.last
    }

    /// Moves the cursor past the last reading of `page`.
    pub fn advance(&mut self, page: &[StoredReading]) {
        if let Some(r) = page.last() {
            self.last = Some((r.reading.timestamp, r.seq));
        }
    }
}

/// Whether the store can serve calls now (health and `/readyz` follow it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Calls fail until it recovers by itself; the reason is for operators.
    Unavailable(String),
}

/// What the service asks of a store. Cheap to share: one per process.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The engine's name in the database semantic conventions
    /// (`db.system.name`: `sqlite`, `postgresql`), for the transport's spans.
    fn system_name(&self) -> &'static str;

    /// Queues `readings` (already validated) for the next group commit.
    /// Waits only while the engine's queue is full. Await the result to
    /// know the readings are durable. With `keyed`, `readings` are the part
    /// `keyed` of its key's sequence, and only those no earlier write with
    /// the key stored are stored (`crate::idempotency`); the receipt counts
    /// both, and [`StoreError::KeyConflict`] says the key holds others.
    fn enqueue(
        &self,
        readings: Vec<Reading>,
        keyed: Option<KeyedPart>,
    ) -> StoreFuture<'_, PendingWrite>;

    /// Waits until queries see every write acknowledged so far, then returns
    /// the sequence number they see: the snapshot for "history up to here,
    /// then the live tail after it", with everything acknowledged before
    /// the call in the history.
    fn caught_up_seq(&self) -> StoreFuture<'_, u64>;

    /// The highest sequence number queries see, announced as it grows:
    /// what wakes a live tail. Every reading up to it is readable.
    fn committed_seq(&self) -> watch::Receiver<u64>;

    /// The next page (at most `page_size` readings) of `query`, after `cursor`.
    fn history_page<'a>(
        &'a self,
        query: &'a HistoryQuery,
        cursor: HistoryCursor,
        page_size: usize,
    ) -> StoreFuture<'a, Vec<StoredReading>>;

    /// Where to start reading `query` so that only its last `n` readings
    /// (in history order) remain: the start of `tail -n N`. Beginning of
    /// the range when it holds `n` readings or fewer.
    fn history_last<'a>(
        &'a self,
        query: &'a HistoryQuery,
        n: u64,
    ) -> StoreFuture<'a, HistoryCursor>;

    /// Readings of `sensor_id` committed after `after_seq`, in commit order.
    fn tail_page<'a>(
        &'a self,
        sensor_id: &'a str,
        after_seq: u64,
        page_size: usize,
    ) -> StoreFuture<'a, Vec<StoredReading>>;

    /// Committed statistics of one sensor, or of every sensor (sorted by id).
    fn stats<'a>(&'a self, sensor_id: Option<&'a str>) -> StoreFuture<'a, Vec<SensorStats>>;

    /// Committed statistics of at most `limit` sensors whose ids sort after
    /// `after` (byte order; `""` for the first page), sorted by id.
    fn stats_page<'a>(&'a self, after: &'a str, limit: usize) -> StoreFuture<'a, Vec<SensorStats>>;

    /// Whether calls can be served now, announced as it changes.
    fn readiness(&self) -> watch::Receiver<Readiness>;

    /// Its commits' totals and recent alerts (`activity.rs`), for a live view.
    fn activity(&self) -> Arc<activity::StoreActivity>;

    /// Its write queue and index lag now; a few atomic loads, never a wait.
    fn backlog(&self) -> activity::StoreBacklog;

    /// Commits everything queued so far and stops. Later writes fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> StoreFuture<'_, ()>;

    /// Stores `readings` durably: [`enqueue`](Self::enqueue) then wait for the commit.
    fn append(&self, readings: Vec<Reading>) -> StoreFuture<'_, WriteReceipt> {
        Box::pin(async move { self.enqueue(readings, None).await?.committed().await })
    }

    /// A keyed [`append`](Self::append).
    fn append_keyed(
        &self,
        readings: Vec<Reading>,
        part: KeyedPart,
    ) -> StoreFuture<'_, WriteReceipt> {
        Box::pin(async move { self.enqueue(readings, Some(part)).await?.committed().await })
    }
}
