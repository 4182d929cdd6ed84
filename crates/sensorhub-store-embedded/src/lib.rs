//! The embedded store engine: a commit log in front of SQLite, for one
//! process on one machine (the default, the demo and most tests). It
//! implements `sensorhub_core::Store`; the transport knows only that.
//!
//! Why this shape:
//! - **Durable before acknowledged.** A write returns only after the group
//!   holding it is in the journal (`journal.rs`) and fsynced. The
//!   transport acknowledges nothing before that.
//! - **Group commit.** One fsync costs a millisecond or more; one per call
//!   would cap ingest at a few hundred calls/s. The writer takes every write
//!   waiting in its queue (up to `StoreSettings::max_batch` readings) into
//!   one journal append, so concurrent calls share the fsync. A small group
//!   waits a moment for more while writes arrive fast (`commit_pacing.rs`).
//! - **Indexed off the acknowledgement's path.** The indexer thread folds
//!   journaled readings into SQLite (WAL, `synchronous=FULL`) in
//!   transactions as large as the backlog, so under load many readings
//!   share each page write. Queries wait until the tables hold every write
//!   acknowledged before the query began (read-your-writes), and a restart
//!   replays what the journal holds beyond the tables.
//! - **Bounded memory everywhere.** The write queue and the indexer's queue
//!   are bounded (callers wait: backpressure), history is read in
//!   keyset-paginated pages, and a live tail is a cursor over the store, not
//!   a buffer: a slow follower costs one page.
//! - **Analysis in commit order.** The writer applies the alert rules and the
//!   running statistics to each reading in the order it numbers them; the
//!   indexer stores the statistics in the same transaction as the readings.
//!
//! `--memory` uses the same code on SQLite's in-process `memdb` VFS, without
//! a journal: nothing touches the disk and nothing survives the process, as
//! in the original.

mod commit_pacing;
mod index_metrics;
mod indexer;
mod journal;
mod reader;
mod schema;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sensorhub_core::{
    HistoryCursor, HistoryQuery, PendingWrite, Readiness, Reading, SensorStats, Store, StoreError,
    StoreSettings, StoredReading,
    idempotency::KeyedPart,
    store::{
        StoreFuture,
        activity::{StoreActivity, StoreBacklog},
    },
};
use tokio::sync::{mpsc, oneshot, watch};

use self::{
    indexer::{Backlog, Checkpoints, Indexer},
    journal::Journal,
    reader::ReaderPool,
    writer::{Command, Loaded, Outlets, WriteRequest, Writer},
};

/// Readings that may wait for the indexer before the writer waits too
/// (about 3 MiB, and 50 ms of indexing on the bench machine): this bounds
/// how far the tables lag and how long closing takes.
const INDEX_BACKLOG: usize = 65_536;
/// The longest a query waits for the indexer to catch up with what was
/// acknowledged before it, before it fails.
const INDEX_WAIT: Duration = Duration::from_secs(10);

/// Where the store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory holding `readings.db` (and its WAL). Created if missing.
    Directory(PathBuf),
    /// Process memory only: gone when the process exits.
    Memory,
}

/// How to open an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub location: StoreLocation,
    /// How large a journal file grows before the next one starts (64 MiB);
    /// a closed file is deleted once the database file holds all of it.
    pub journal_file_bytes: u64,
    /// What every engine is configured with.
    pub settings: StoreSettings,
}

impl EmbeddedConfig {
    pub fn new(location: StoreLocation) -> Self {
        Self {
            location,
            journal_file_bytes: journal::SEGMENT_BYTES,
            settings: StoreSettings::default(),
        }
    }
}

/// A handle to the embedded store; cheap to clone, shared by all calls.
///
/// Dropping the last handle without [`close`](Store::close) stops the store
/// the same way, in the background: the writer commits and answers what was
/// queued, the indexer indexes and checkpoints it, and the data directory
/// stays locked until both threads (and any query still running) are done
/// with its files. Opening the directory meanwhile fails with
/// [`StoreError::Locked`]. Await `close` to know that the store has stopped.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    /// The last sequence number answered to a writer.
    acknowledged: Arc<AtomicU64>,
    /// The last sequence number queries see.
    visible: watch::Receiver<u64>,
    /// Asks the indexer not to linger (a query is waiting).
    nudge: std::sync::mpsc::Sender<indexer::IndexCommand>,
    readers: ReaderPool,
    /// Always `Ready`: an open embedded store can serve; kept so that the
    /// watch never reports its sender gone.
    readiness: watch::Sender<Readiness>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The writer's commit totals and recent alerts.
    activity: Arc<StoreActivity>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store, replays what its journal holds
    /// beyond its tables, and starts the writer and indexer threads.
    pub fn open(config: EmbeddedConfig) -> Result<EmbeddedStore, StoreError> {
        let target = schema::Target::new(&config.location)?;
        let conn = target.open_writer()?;
        let loaded = Loaded::read(&conn).map_err(|e| target.classify(e))?;
        tracing::info!(
            store = %target.display.display(),
            sensors = loaded.sensor_count(),
            last_seq = loaded.last_seq,
            "store opened"
        );
        let mut writer = Writer::new(loaded, &config.settings);
        let activity = writer.activity();
        let backlog = Arc::new(Backlog::new(INDEX_BACKLOG));
        let checkpoints = Arc::new(Checkpoints::default());
        let mut indexer = Indexer::new(
            conn,
            backlog.clone(),
            checkpoints.clone(),
            target.display.clone(),
            config.settings.retention,
        );
        if let Some(dir) = &target.journal {
            // Each batch is one transaction: should this start stop half-way,
            // the tables are still a prefix of the journal.
            let recovered = Journal::recover(dir, writer.last_seq(), |readings, keys| {
                let batch = writer.replay(readings, keys);
                indexer
                    .index(std::slice::from_ref(&batch))
                    .map(drop)
                    .map_err(|e| target.classify(e))
            })?;
            if recovered.replayed > 0 {
                tracing::info!(
                    readings = recovered.replayed,
                    first_seq = recovered.first_seq,
                    "replayed acknowledged readings from the journal into the tables"
                );
            }
            // The journal's files go next: first the database file must
            // hold all they held, not only its WAL.
            let checkpointed = indexer
                .checkpoint_fully(writer.last_seq())
                .map_err(|e| target.classify(e))?;
            if !checkpointed {
                return Err(StoreError::Open {
                    path: target.display.clone(),
                    reason: "its WAL could not be checkpointed into the database file (is another program reading it?); the journal was kept".into(),
                });
            }
            let journal =
                Journal::start_with(dir, writer.last_seq() + 1, config.journal_file_bytes)
                    .map_err(|e| StoreError::Open {
                        path: dir.clone(),
                        reason: e.to_string(),
                    })?;
            writer.use_journal(journal);
        }
        let last_seq = writer.last_seq();
        // Each thread holds the directory lock until it ends: a store
        // dropped without `close` keeps its directory until they are done.
        let (indexer_lock, writer_lock) = (target.lock(), target.lock());
        let readers = ReaderPool::new(target);
        let (commands_tx, commands_rx) = mpsc::channel(config.settings.queue_depth.max(1));
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let (indexed_tx, indexed_rx) = watch::channel(last_seq);
        let acknowledged = Arc::new(AtomicU64::new(last_seq));
        let nudge = index_tx.clone();
        let outlets = Outlets {
            index: index_tx,
            backlog: backlog.clone(),
            acknowledged: acknowledged.clone(),
            checkpoints,
        };
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| StoreError::Open {
                    path: PathBuf::from(name),
                    reason: e.to_string(),
                })
        };
        let threads = vec![
            spawn(
                "store-indexer",
                Box::new(move || {
                    indexer.run(index_rx, indexed_tx);
                    drop(indexer_lock);
                }),
            )?,
            spawn(
                "store-writer",
                Box::new(move || {
                    writer.run(commands_rx, outlets);
                    drop(writer_lock);
                }),
            )?,
        ];
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                commands: commands_tx,
                acknowledged,
                visible: indexed_rx,
                nudge,
                readers,
                readiness: watch::Sender::new(Readiness::Ready),
                threads: std::sync::Mutex::new(threads),
                activity,
            }),
        })
    }

    /// Waits until queries see every write acknowledged before this call.
    async fn see_acknowledged(&self) -> Result<(), StoreError> {
        let target = self.inner.acknowledged.load(Ordering::Acquire);
        if *self.inner.visible.borrow() >= target {
            return Ok(());
        }
        let _ = self.inner.nudge.send(indexer::IndexCommand::Nudge);
        let mut visible = self.inner.visible.clone();
        match tokio::time::timeout(INDEX_WAIT, visible.wait_for(|seq| *seq >= target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Read(format!(
                "the tables are more than {} s behind the acknowledged writes (the journal holds them); see the server log for why indexing stalls",
                INDEX_WAIT.as_secs()
            ))),
        }
    }
}

impl Store for EmbeddedStore {
    fn system_name(&self) -> &'static str {
        "sqlite"
    }

    fn enqueue(
        &self,
        readings: Vec<Reading>,
        keyed: Option<KeyedPart>,
    ) -> StoreFuture<'_, PendingWrite> {
        Box::pin(async move {
            let (reply, pending) = PendingWrite::channel();
            self.inner
                .commands
                .send(Command::Write(WriteRequest {
                    readings,
                    // Boxed: most writes have no key.
                    keyed: keyed.map(Box::new),
                    reply,
                }))
                .await
                .map_err(|_| StoreError::Closed)?;
            Ok(pending)
        })
    }

    fn caught_up_seq(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            self.see_acknowledged().await?;
            Ok(*self.inner.visible.borrow())
        })
    }

    /// Changes as the indexer catches up: every reading up to it is in the tables.
    fn committed_seq(&self) -> watch::Receiver<u64> {
        self.inner.visible.clone()
    }

    fn history_page<'a>(
        &'a self,
        query: &'a HistoryQuery,
        cursor: HistoryCursor,
        page_size: usize,
    ) -> StoreFuture<'a, Vec<StoredReading>> {
        Box::pin(async move {
            self.see_acknowledged().await?;
            let query = query.clone();
            self.inner
                .readers
                .with(move |conn| reader::history_page(conn, &query, cursor, page_size))
                .await
        })
    }

    fn history_last<'a>(
        &'a self,
        query: &'a HistoryQuery,
        n: u64,
    ) -> StoreFuture<'a, HistoryCursor> {
        Box::pin(async move {
            self.see_acknowledged().await?;
            let query = query.clone();
            let start = self
                .inner
                .readers
                .with(move |conn| reader::nth_from_end(conn, &query, n))
                .await?;
            Ok(start.map_or_else(HistoryCursor::default, |(ts, seq)| {
                HistoryCursor::at(ts, seq)
            }))
        })
    }

    fn tail_page<'a>(
        &'a self,
        sensor_id: &'a str,
        after_seq: u64,
        page_size: usize,
    ) -> StoreFuture<'a, Vec<StoredReading>> {
        Box::pin(async move {
            let sensor_id = sensor_id.to_owned();
            self.inner
                .readers
                .with(move |conn| reader::tail_page(conn, &sensor_id, after_seq, page_size))
                .await
        })
    }

    fn stats<'a>(&'a self, sensor_id: Option<&'a str>) -> StoreFuture<'a, Vec<SensorStats>> {
        Box::pin(async move {
            self.see_acknowledged().await?;
            let sensor_id = sensor_id.map(str::to_owned);
            self.inner
                .readers
                .with(move |conn| reader::stats(conn, sensor_id.as_deref()))
                .await
        })
    }

    fn stats_page<'a>(&'a self, after: &'a str, limit: usize) -> StoreFuture<'a, Vec<SensorStats>> {
        Box::pin(async move {
            self.see_acknowledged().await?;
            let after = after.to_owned();
            self.inner
                .readers
                .with(move |conn| reader::stats_page(conn, &after, limit))
                .await
        })
    }

    fn readiness(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness.subscribe()
    }

    fn activity(&self) -> Arc<StoreActivity> {
        self.inner.activity.clone()
    }

    fn backlog(&self) -> StoreBacklog {
        let capacity = self.inner.commands.max_capacity();
        StoreBacklog {
            queued_writes: capacity - self.inner.commands.capacity(),
            queue_capacity: capacity,
            index_lag: self
                .inner
                .acknowledged
                .load(Ordering::Acquire)
                .saturating_sub(*self.inner.visible.borrow()),
        }
    }

    /// Commits everything queued so far, has it indexed, checkpoints the
    /// WAL and stops.
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, rx) = oneshot::channel();
            if self.inner.commands.send(Command::Close(done)).await.is_ok() {
                let _ = rx.await;
            }
            let threads = std::mem::take(&mut *self.inner.threads.lock().expect("poisoned"));
            for thread in threads {
                tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .map_err(|e| StoreError::Write(e.to_string()))?
                    .map_err(|_| StoreError::Write("a store thread panicked".into()))?;
            }
            Ok(())
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn reading(sensor: &str, i: i64) -> Reading {
        Reading {
            sensor_id: sensor.to_owned(),
            temperature: 20.0 + (i % 7) as f64,
            timestamp: 1_700_000_000 + i,
        }
    }

    fn config(dir: &Path) -> EmbeddedConfig {
        EmbeddedConfig::new(StoreLocation::Directory(dir.to_path_buf()))
    }

    /// A crash between the journal's fsync and the indexer's commit leaves
    /// acknowledged readings in the journal only: opening replays them, and
    /// the statistics come out as if they had been indexed before the crash.
    #[tokio::test]
    async fn opening_replays_what_the_journal_holds_beyond_the_tables() {
        let (crashed, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let before: Vec<Reading> = (0..50)
            .map(|i| reading(["a", "b"][i as usize % 2], i))
            .collect();
        let after: Vec<Reading> = (50..80)
            .map(|i| reading(["b", "c"][i as usize % 2], i))
            .collect();
        for dir in [crashed.path(), reference.path()] {
            let store = EmbeddedStore::open(config(dir)).unwrap();
            store.append(before.clone()).await.unwrap();
            store.close().await.unwrap();
            drop(store);
        }
        // The crashed store: `after` reached the journal, not the tables.
        let mut journal = Journal::start(&crashed.path().join("journal"), 51).unwrap();
        journal.append(51, after.len(), after.iter(), &[]).unwrap();
        drop(journal);
        let store = EmbeddedStore::open(config(reference.path())).unwrap();
        store.append(after.clone()).await.unwrap();
        store.close().await.unwrap();
        drop(store);

        let replayed = EmbeddedStore::open(config(crashed.path())).unwrap();
        let reference = EmbeddedStore::open(config(reference.path())).unwrap();
        assert_eq!(*replayed.committed_seq().borrow(), 80);
        assert_eq!(
            replayed.stats(None).await.unwrap(),
            reference.stats(None).await.unwrap()
        );
        let query = HistoryQuery {
            sensor_id: "c".into(),
            since: None,
            until: None,
            up_to_seq: None,
        };
        let page = replayed
            .history_page(&query, HistoryCursor::default(), 100)
            .await
            .unwrap();
        assert_eq!(page.len(), 15);
        assert_eq!(page[0].seq, 52);
        // The next write continues the numbering.
        let receipt = replayed.append(vec![reading("a", 80)]).await.unwrap();
        assert_eq!(receipt.first_seq, 81);
    }

    /// A keyed write acknowledged, then a crash before the tables held it:
    /// replay restores its key's state from the journal, so a retry after
    /// the restart stores nothing.
    #[tokio::test]
    async fn a_keyed_write_the_journal_alone_holds_is_stored_once_after_replay() {
        use sensorhub_core::idempotency::{Fingerprint, IdempotencyKey, KeyState, KeyedPart};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        store.append(vec![reading("a", 0)]).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let readings = vec![reading("a", 1), reading("a", 2)];
        let key = IdempotencyKey::parse("crash-key").unwrap();
        let part = KeyedPart::new(key.clone(), 0, Fingerprint::EMPTY, &readings);
        let entry = journal::KeyEntry {
            key: key.as_str().into(),
            state: KeyState {
                through: 2,
                fingerprint: part.after,
                first_seq: 2,
                // Now: a key first used a day ago would be forgotten.
                first_used: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64,
            },
        };
        let mut journal = Journal::start(&dir.path().join("journal"), 2).unwrap();
        journal.append(2, 2, readings.iter(), &[entry]).unwrap();
        drop(journal);

        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        let receipt = store
            .append_keyed(readings.clone(), part.clone())
            .await
            .unwrap();
        assert_eq!((receipt.count, receipt.already_stored), (0, 2));
        assert_eq!(store.stats(Some("a")).await.unwrap()[0].count, 3);
        // And the tables hold it now too.
        store.close().await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        let receipt = store.append_keyed(readings, part).await.unwrap();
        assert_eq!((receipt.count, receipt.already_stored), (0, 2));
    }

    /// Retention (run by the indexer when it starts, then at most once a
    /// minute) deletes readings older than the period and keeps the rest.
    #[tokio::test]
    async fn retention_deletes_only_old_readings() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = |sensor: &str, age_s: i64| Reading {
            sensor_id: sensor.into(),
            temperature: 20.0,
            timestamp: now - age_s,
        };
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        store
            .append(vec![
                at("a", 7_200),
                at("a", 60),
                at("b", 5_000),
                at("b", 10),
            ])
            .await
            .unwrap();
        store.close().await.unwrap();
        drop(store);

        let mut retained = config(dir.path());
        retained.settings.retention = Some(Duration::from_secs(3_600));
        let store = EmbeddedStore::open(retained).unwrap();
        for (sensor, left) in [("a", 60), ("b", 10)] {
            let query = HistoryQuery {
                sensor_id: sensor.into(),
                since: None,
                until: None,
                up_to_seq: None,
            };
            // Retention runs on the indexer thread as it starts.
            let mut ages = Vec::new();
            for _ in 0..100 {
                let page = store
                    .history_page(&query, HistoryCursor::default(), 10)
                    .await
                    .unwrap();
                ages = page.iter().map(|r| now - r.reading.timestamp).collect();
                if ages.len() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(ages, vec![left], "{sensor}");
        }
    }

    /// A query right after a receipt sees the write, though indexing is
    /// asynchronous.
    #[tokio::test]
    async fn a_query_after_a_receipt_sees_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        for i in 0..200 {
            store.append(vec![reading("a", i)]).await.unwrap();
            let stats = store.stats(Some("a")).await.unwrap();
            assert_eq!(stats[0].count, i as u64 + 1);
        }
    }

    /// Many concurrent callers, as the unary path has under load: the
    /// writer's pacing gathers them into shared commits, and every write is
    /// still numbered once, answered once and kept across a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_concurrent_writes_is_numbered_once_each_and_kept() {
        const CALLERS: usize = 64;
        const WRITES: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    let sensor = format!("s{c}");
                    let mut seqs = Vec::new();
                    for i in 0..WRITES {
                        let receipt = store
                            .append(vec![reading(&sensor, i as i64)])
                            .await
                            .unwrap();
                        assert_eq!(receipt.count, 1);
                        seqs.push(receipt.first_seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for caller in callers {
            seqs.extend(caller.await.unwrap());
        }
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=(CALLERS * WRITES) as u64).collect();
        assert_eq!(seqs, expected, "each write numbered exactly once");
        store.close().await.unwrap();
        drop(store);
        let reopened = EmbeddedStore::open(config(dir.path())).unwrap();
        let stats = reopened.stats(None).await.unwrap();
        assert_eq!(stats.len(), CALLERS);
        assert!(stats.iter().all(|s| s.count == WRITES as u64), "{stats:?}");
    }

    /// A follower of the live tail (a receiver of `committed_seq`) sees a
    /// reading within the short linger, not the long one the indexer
    /// keeps while nobody follows.
    #[tokio::test]
    async fn a_follower_sees_a_reading_without_the_long_linger() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        let mut committed = store.committed_seq();
        for i in 0..3 {
            let receipt = store.append(vec![reading("a", i)]).await.unwrap();
            let started = Instant::now();
            committed
                .wait_for(|seq| *seq >= receipt.first_seq)
                .await
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_millis(600),
                "a follower waited {:?} for an acknowledged reading",
                started.elapsed()
            );
        }
    }

    /// While nobody follows, the tables lag behind the journal for up to
    /// the long linger, and a query still sees every acknowledged write.
    #[tokio::test]
    async fn unfollowed_the_tables_lag_and_queries_still_see_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        store.append(vec![reading("a", 0)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            store.backlog().index_lag,
            1,
            "indexed before the linger ended"
        );
        let stats = store.stats(Some("a")).await.unwrap();
        assert_eq!(stats[0].count, 1);
        assert_eq!(store.backlog().index_lag, 0);
    }

    /// Copies what a crash would leave of a store: the journal, the
    /// database file and its WAL (not the WAL index, which SQLite rebuilds).
    fn copy_as_crashed(from: &Path, to: &Path) {
        std::fs::create_dir_all(to.join("journal")).unwrap();
        for entry in std::fs::read_dir(from.join("journal")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join("journal").join(entry.file_name())).unwrap();
        }
        for file in ["readings.db", "readings.db-wal"] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }

    /// Flips a byte in the first frame of a WAL: SQLite then ignores that
    /// frame and every one after it, and says nothing.
    fn damage_wal(dir: &Path) {
        let wal = dir.join("readings.db-wal");
        let mut bytes = std::fs::read(&wal).unwrap();
        assert!(bytes.len() > 32 + 24 + 4096, "the WAL holds frames");
        bytes[32 + 24 + 100] ^= 0x5a;
        std::fs::write(&wal, &bytes).unwrap();
    }

    /// Issue 13 §2: readings the indexer committed to the WAL but no
    /// checkpoint copied into the database file. A journal file is kept
    /// until a checkpoint has copied all of it, so when the WAL of a crashed
    /// store is damaged, replay restores every reading from the journal.
    #[tokio::test]
    async fn a_damaged_wal_loses_nothing_the_journal_kept() {
        let (live, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut small_files = config(live.path());
        small_files.journal_file_bytes = 16 << 10;
        let store = EmbeddedStore::open(small_files).unwrap();
        let mut i = 0;
        for _ in 0..60 {
            let group: Vec<Reading> = (0..200)
                .map(|_| {
                    i += 1;
                    reading(["a", "b", "c"][i as usize % 3], i)
                })
                .collect();
            store.append(group).await.unwrap();
        }
        assert_eq!(store.caught_up_seq().await.unwrap(), 12_000);
        // Let a checkpoint the last transaction asked for finish, so the
        // copy is of files at rest, as a crash would leave them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let files = std::fs::read_dir(live.path().join("journal"))
            .unwrap()
            .count();
        assert!(
            files > 1,
            "closed journal files wait for a checkpoint: {files}"
        );
        copy_as_crashed(live.path(), crashed.path());
        drop(store);
        damage_wal(crashed.path());

        let store = EmbeddedStore::open(config(crashed.path())).unwrap();
        let counts: u64 = store
            .stats(None)
            .await
            .unwrap()
            .iter()
            .map(|s| s.count)
            .sum();
        assert_eq!(counts, 12_000);
        assert_eq!(*store.committed_seq().borrow(), 12_000);
        let receipt = store.append(vec![reading("a", 0)]).await.unwrap();
        assert_eq!(receipt.first_seq, 12_001);
    }

    /// Closed journal files are deleted once a checkpoint has copied them
    /// into the database file, without waiting for the store to close.
    #[tokio::test]
    async fn closed_journal_files_go_once_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let mut small_files = config(dir.path());
        small_files.journal_file_bytes = 16 << 10;
        let store = EmbeddedStore::open(small_files).unwrap();
        let journal_files = || {
            std::fs::read_dir(dir.path().join("journal"))
                .unwrap()
                .count()
        };
        let mut most = 0;
        for i in 0..200 {
            store
                .append((0..50).map(|j| reading("a", i * 50 + j)).collect())
                .await
                .unwrap();
            store.caught_up_seq().await.unwrap();
            most = most.max(journal_files());
        }
        assert!(most < 5, "{most} journal files at once");
    }
}
