//! The durable embedded store: SQLite in WAL mode, one writer thread doing
//! group commit, a small pool of reader connections.
//!
//! Why this shape:
//! - **Durable before acknowledged.** A write returns only after the
//!   transaction holding it has been committed with `synchronous=FULL`, i.e.
//!   the WAL is fsynced. The transport acknowledges nothing before that.
//! - **Group commit.** One fsync costs milliseconds; one per call would cap
//!   ingest at a few hundred calls/s. The writer takes every write waiting in
//!   its queue (up to [`StoreConfig::max_batch`] readings) into one
//!   transaction, so concurrent calls share the fsync.
//! - **Bounded memory everywhere.** The write queue is bounded (callers wait:
//!   backpressure), history is read in keyset-paginated pages, and a live tail
//!   is a cursor over the store, not a buffer: a slow follower costs one page.
//! - **Analysis in commit order.** The writer applies the alert rules and the
//!   running statistics to each reading in the order it commits them, and
//!   persists the statistics in the same transaction.
//!
//! `--memory` uses the same code on SQLite's in-process `memdb` VFS: nothing
//! touches the disk and nothing survives the process, as in the original.

mod metrics;
mod reader;
mod schema;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, watch};

use crate::{Alert, AlertRules, Reading, SensorStats, StoredReading};

use self::{
    reader::ReaderPool,
    writer::{Command, WriteRequest},
};

/// Where the store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory holding `readings.db` (and its WAL). Created if missing.
    Directory(PathBuf),
    /// Process memory only: gone when the process exits.
    Memory,
}

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub location: StoreLocation,
    pub alert_rules: AlertRules,
    /// Delete readings whose timestamp is older than this. `None`: keep everything.
    pub retention: Option<Duration>,
    /// Most readings one group commit takes.
    pub max_batch: usize,
    /// Writes (calls, not readings) that may wait for the writer before callers block.
    pub queue_depth: usize,
    /// Sensors whose last temperature is exported as a gauge (the first ones seen).
    pub max_tracked_sensors: usize,
}

impl StoreConfig {
    pub fn new(location: StoreLocation) -> Self {
        Self {
            location,
            alert_rules: AlertRules::default(),
            retention: None,
            max_batch: 65_536,
            queue_depth: 1_024,
            max_tracked_sensors: 1_000,
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
}

/// What one durable write did.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteReceipt {
    /// The sequence number given to the first reading of the write.
    pub first_seq: u64,
    /// How many readings were stored.
    pub count: usize,
    /// Alerts raised by these readings, in order.
    pub alerts: Vec<Alert>,
}

/// A write that has been queued and will be acknowledged once committed.
#[derive(Debug)]
pub struct PendingWrite(oneshot::Receiver<Result<WriteReceipt, StoreError>>);

impl PendingWrite {
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

/// Where a paginated history read has got to: the last (timestamp, seq) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryCursor {
    last: Option<(i64, u64)>,
}

impl HistoryCursor {
    /// Moves the cursor past the last reading of `page`.
    pub fn advance(&mut self, page: &[StoredReading]) {
        if let Some(r) = page.last() {
            self.last = Some((r.reading.timestamp, r.seq));
        }
    }
}

/// A handle to the store; cheap to clone, shared by all calls.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    committed: watch::Receiver<u64>,
    readers: ReaderPool,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating if needed) the store and starts its writer thread.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let target = schema::Target::new(&config.location)?;
        let (writer, last_seq) = writer::Writer::open(&target, &config)?;
        let readers = ReaderPool::new(target);
        let (commands_tx, commands_rx) = mpsc::channel(config.queue_depth.max(1));
        let (committed_tx, committed_rx) = watch::channel(last_seq);
        let thread = std::thread::Builder::new()
            .name("sensorhub-store-writer".into())
            .spawn(move || writer.run(commands_rx, committed_tx))
            .map_err(|e| StoreError::Open {
                path: PathBuf::from("writer thread"),
                reason: e.to_string(),
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                commands: commands_tx,
                committed: committed_rx,
                readers,
                writer_thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    /// Queues `readings` (already validated) for the next group commit. Waits
    /// only while the writer's queue is full. Await the result to know the
    /// readings are durable.
    pub async fn enqueue(&self, readings: Vec<Reading>) -> Result<PendingWrite, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Write(WriteRequest { readings, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(PendingWrite(rx))
    }

    /// Stores `readings` durably: [`enqueue`](Self::enqueue) then wait for the commit.
    pub async fn append(&self, readings: Vec<Reading>) -> Result<WriteReceipt, StoreError> {
        self.enqueue(readings).await?.committed().await
    }

    /// The highest sequence number committed so far; changes after every commit.
    pub fn committed_seq(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// The next page (at most `page_size` readings) of `query`, after `cursor`.
    pub async fn history_page(
        &self,
        query: &HistoryQuery,
        cursor: HistoryCursor,
        page_size: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let query = query.clone();
        self.inner
            .readers
            .with(move |conn| reader::history_page(conn, &query, cursor, page_size))
            .await
    }

    /// Readings of `sensor_id` committed after `after_seq`, in commit order.
    pub async fn tail_page(
        &self,
        sensor_id: &str,
        after_seq: u64,
        page_size: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let sensor_id = sensor_id.to_owned();
        self.inner
            .readers
            .with(move |conn| reader::tail_page(conn, &sensor_id, after_seq, page_size))
            .await
    }

    /// Committed statistics of one sensor, or of every sensor (sorted by id).
    pub async fn stats(&self, sensor_id: Option<&str>) -> Result<Vec<SensorStats>, StoreError> {
        let sensor_id = sensor_id.map(str::to_owned);
        self.inner
            .readers
            .with(move |conn| reader::stats(conn, sensor_id.as_deref()))
            .await
    }

    /// Commits everything queued so far, checkpoints the WAL and stops the
    /// writer. Later writes fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
        let thread = self.inner.writer_thread.lock().expect("poisoned").take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| StoreError::Write(e.to_string()))?
                .map_err(|_| StoreError::Write("the writer thread panicked".into()))?;
        }
        Ok(())
    }
}

/// The default data directory: `$XDG_DATA_HOME/sensorhub`, else
/// `~/.local/share/sensorhub`, else `./sensorhub-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("sensorhub");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".local/share/sensorhub");
    }
    PathBuf::from("sensorhub-data")
}
