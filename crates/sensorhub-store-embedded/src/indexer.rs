//! The indexer: folds acknowledged readings into SQLite, where queries see them.
//!
//! Readings reach it from the writer once they are durable in the journal
//! (or, for `--memory`, once they are sequenced). It takes everything waiting
//! into one transaction, so the busier the store, the more readings share
//! each touched page and each fsync. Each transaction also stores the
//! statistics as of its last reading and `meta.last_seq`, so after a crash
//! the tables are a prefix of the journal, ending exactly where replay starts.
//!
//! It also says how far the database file itself holds the readings
//! ([`Checkpoints`]): a commit reaches SQLite's WAL, and only a checkpoint
//! that completes copies it into `readings.db`. The journal keeps each file
//! until then, because SQLite ignores every WAL frame after one that fails
//! its checksum: with the journal file gone, a damaged WAL would lose
//! committed readings without a word. So once the journal's oldest closed
//! file is indexed, the next transaction is followed by a passive
//! checkpoint (one per closed journal file, 64 MiB); SQLite's own
//! auto-checkpoint runs as before.
//!
//! Invariant: this thread is the only code that writes to the database. It
//! knows rows, not requests: it never answers a caller, and a failure here
//! loses nothing, since the journal still holds every reading it was given.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Condvar, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, params};
use tokio::sync::watch;

use crate::{index_metrics::IndexMetrics, journal::KeyEntry};
use sensorhub_core::SensorStats;

/// Rows per multi-row INSERT: one statement step for this many readings
/// instead of one each (SQLite allows 32,766 parameters; 5 per row).
const ROWS_PER_INSERT: usize = 64;
/// How long the first batch waiting for a transaction waits for others
/// while someone follows the live tail (holds a receiver of the indexed
/// sequence besides the store's own): a follower sees a reading this long
/// after it was acknowledged, at most.
const LINGER_FOLLOWED: Duration = Duration::from_millis(20);
/// The same while nobody follows. A query nudges the indexer and a
/// follower shortens the wait as soon as it appears, so only the tables'
/// lag behind the journal grows; the transaction gathers more readings of
/// each sensor, and a page is written once for all of them (BENCHMARKS.md,
/// "The indexer's linger").
const LINGER_UNFOLLOWED: Duration = Duration::from_secs(1);
/// Receivers of the indexed sequence the store itself holds (`Inner::visible`).
const STORE_OWN_RECEIVERS: usize = 1;
/// Readings that start a transaction without lingering.
const ENOUGH_ROWS: usize = 16_384;
/// The largest sort buffer kept for the next transaction: a replay at
/// startup can index a whole journal frame at once, and its buffer is not
/// worth keeping (rows are 40 bytes; this holds a few ordinary transactions).
const KEEP_SORT_BUFFER: usize = 4 * ENOUGH_ROWS;
/// How often retention runs, at most.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// The longest wait between attempts at a transaction that failed.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// One row of `readings`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) sensor: i64,
    pub(super) ts: i64,
    pub(super) seq: i64,
    pub(super) temperature: f64,
    /// An earlier reading of the sensor has a later timestamp (`schema.rs`).
    pub(super) late: bool,
}

/// One row of `tail_marks`: the tail of `sensor` after any sequence number
/// from `seq` on starts at or after `(ts, seq)` along the key.
#[derive(Debug, Clone, Copy)]
pub(super) struct TailMark {
    pub(super) sensor: i64,
    pub(super) seq: i64,
    pub(super) ts: i64,
}

/// One group commit's worth of work for the indexer.
#[derive(Debug)]
pub(super) struct IndexBatch {
    pub(super) rows: Vec<Row>,
    pub(super) marks: Vec<TailMark>,
    /// The statistics of each sensor the rows touch, as of the last row
    /// (key: the sensor's integer id).
    pub(super) sensors: Vec<(i64, SensorStats)>,
    /// Idempotency keys the rows' writes moved on, as of the last row, and
    /// keys forgotten (by their `first_seq`).
    pub(super) keys: Vec<KeyEntry>,
    pub(super) forget_keys: Vec<u64>,
    /// The sequence number of the last row.
    pub(super) last_seq: u64,
}

/// Rows handed to the indexer and not yet in the tables, capped: while the
/// indexer is that far behind, the writer waits, and so do its callers.
/// This bounds the memory between the two threads by rows, whatever the
/// size of each group commit.
#[derive(Debug)]
pub(super) struct Backlog {
    rows: Mutex<usize>,
    drained: Condvar,
    cap: usize,
}

impl Backlog {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            rows: Mutex::new(0),
            drained: Condvar::new(),
            cap,
        }
    }

    /// Waits until `n` more rows fit (a group larger than the cap waits
    /// for an empty backlog), then counts them.
    pub(super) fn reserve(&self, n: usize) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        while *rows > 0 && *rows + n > self.cap {
            rows = self.drained.wait(rows).unwrap_or_else(|e| e.into_inner());
        }
        *rows += n;
    }

    fn release(&self, n: usize) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        *rows = rows.saturating_sub(n);
        self.drained.notify_all();
    }
}

/// How far the database file holds the readings, and how far the journal
/// needs it to: shared by the writer, which deletes journal files, and the
/// indexer, which checkpoints.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    /// Every reading up to this sequence number is in the database file
    /// itself, not only in its WAL.
    done: AtomicU64,
    /// The journal's oldest closed file ends here (0: there is none).
    wanted: AtomicU64,
}

impl Checkpoints {
    pub(super) fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// The writer: the journal's oldest closed file now ends at `last`.
    pub(super) fn want(&self, last: Option<u64>) {
        self.wanted.store(last.unwrap_or(0), Ordering::Release);
    }

    fn wanted_by(&self, indexed: u64) -> bool {
        let wanted = self.wanted.load(Ordering::Acquire);
        wanted > self.done() && indexed >= wanted
    }

    fn reached(&self, seq: u64) {
        self.done.fetch_max(seq, Ordering::AcqRel);
    }
}

pub(super) enum IndexCommand {
    Index(IndexBatch),
    /// A query waits for what is queued: index it now.
    Nudge,
    /// Index what is queued before this, checkpoint, stop; then answer.
    Close(mpsc::Sender<()>),
}

pub(super) struct Indexer {
    conn: Connection,
    backlog: Arc<Backlog>,
    checkpoints: Arc<Checkpoints>,
    display: PathBuf,
    retention: Option<Duration>,
    last_retention: Option<Instant>,
    metrics: IndexMetrics,
    /// The rows of one transaction, sorted by key before they are inserted
    /// (kept between transactions for its allocation).
    in_key_order: Vec<Row>,
}

impl Indexer {
    pub(super) fn new(
        conn: Connection,
        backlog: Arc<Backlog>,
        checkpoints: Arc<Checkpoints>,
        display: PathBuf,
        retention: Option<Duration>,
    ) -> Self {
        Self {
            conn,
            backlog,
            checkpoints,
            display,
            retention,
            last_retention: None,
            metrics: IndexMetrics::new(),
            in_key_order: Vec::new(),
        }
    }

    /// The indexer thread's body: runs until `Close` or until the writer is gone.
    ///
    /// A transaction starts [`LINGER_FOLLOWED`] or [`LINGER_UNFOLLOWED`]
    /// after the first batch waiting for it, or sooner when
    /// [`ENOUGH_ROWS`] are waiting, a query is waiting (`Nudge`), or the
    /// store closes. Lingering is what makes the transactions large under a
    /// load of small calls: each touched page is written once for all the
    /// readings on it. Whether anyone follows is asked again at least every
    /// [`LINGER_FOLLOWED`], so a follower that appears mid-linger waits no
    /// longer than that.
    pub(super) fn run(
        mut self,
        commands: mpsc::Receiver<IndexCommand>,
        indexed: watch::Sender<u64>,
    ) {
        self.apply_retention_if_due();
        let mut nudged = false;
        let mut open = true;
        while open {
            let mut batches = Vec::new();
            let mut rows = 0;
            let mut close = None;
            let mut first_at = None;
            while close.is_none() && rows < ENOUGH_ROWS && !(nudged && rows > 0) {
                let next = match first_at {
                    None => commands
                        .recv()
                        .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(first_at) => {
                        let until = first_at + linger(&indexed);
                        let now = Instant::now();
                        if now >= until {
                            break;
                        }
                        commands.recv_timeout((until - now).min(LINGER_FOLLOWED))
                    }
                };
                match next {
                    Ok(IndexCommand::Index(batch)) => {
                        rows += batch.rows.len();
                        batches.push(batch);
                        first_at.get_or_insert_with(Instant::now);
                    }
                    Ok(IndexCommand::Nudge) => nudged = true,
                    Ok(IndexCommand::Close(done)) => close = Some(done),
                    // Asks again whether anyone follows, and whether the linger is over.
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !batches.is_empty() {
                self.index_retrying(&batches, close.is_some() || !open, &indexed);
                self.backlog.release(rows);
                nudged = false;
            }
            if let Some(done) = close {
                self.finish(*indexed.borrow());
                let _ = done.send(());
                return;
            }
            self.checkpoint_if_wanted(*indexed.borrow());
            self.apply_retention_if_due();
        }
        self.finish(*indexed.borrow());
    }

    /// Indexes `batches`, trying again (with a growing wait) until it
    /// works; closing, it gives up after a few attempts and leaves the
    /// readings to the journal's replay at the next start.
    fn index_retrying(
        &mut self,
        batches: &[IndexBatch],
        closing: bool,
        indexed: &watch::Sender<u64>,
    ) {
        let mut wait = Duration::from_millis(50);
        for attempt in 1.. {
            let started = Instant::now();
            match self.index(batches) {
                Ok(last_seq) => {
                    indexed.send_replace(last_seq);
                    let rows = batches.iter().map(|b| b.rows.len()).sum();
                    self.metrics.indexed(started.elapsed(), rows);
                    if attempt > 1 {
                        tracing::info!(attempt, "indexing works again");
                    }
                    return;
                }
                Err(e) => {
                    let rows: usize = batches.iter().map(|b| b.rows.len()).sum();
                    tracing::error!(
                        store = %self.display.display(),
                        error = %e,
                        rows,
                        attempt,
                        "indexing acknowledged readings failed; they are safe in the journal, and queries wait until this works"
                    );
                    if closing && attempt >= 3 {
                        return;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                }
            }
        }
    }

    /// One transaction holding `batches`. Returns the last sequence number.
    ///
    /// The rows go in in key order, `(sensor, ts, seq)`, not in the order
    /// they were acknowledged: under unary calls from many sensors,
    /// consecutive readings belong to different sensors and each insert
    /// would walk to a different leaf of `readings`, while sorted, the
    /// readings of one leaf follow one another and SQLite finds that leaf
    /// in the CPU's cache (BENCHMARKS.md, "The indexer's rows in key
    /// order"). What the tables end up holding is the same either way:
    /// the transaction is all or nothing.
    pub(super) fn index(&mut self, batches: &[IndexBatch]) -> rusqlite::Result<u64> {
        let Some(last_seq) = batches.last().map(|b| b.last_seq) else {
            return Ok(0);
        };
        let mut rows = std::mem::take(&mut self.in_key_order);
        rows.extend(batches.iter().flat_map(|b| b.rows.iter().copied()));
        // Stable, so that the runs a client stream's rows already form are kept cheaply.
        rows.sort_by_key(|r| (r.sensor, r.ts, r.seq));
        let result = self.index_sorted(batches, &rows, last_seq);
        rows.clear();
        if rows.capacity() <= KEEP_SORT_BUFFER {
            self.in_key_order = rows;
        }
        result
    }

    /// The transaction of [`Indexer::index`], given the rows in key order.
    fn index_sorted(
        &mut self,
        batches: &[IndexBatch],
        in_key_order: &[Row],
        last_seq: u64,
    ) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        {
            let mut rows = RowBuffer::new();
            for row in in_key_order {
                rows.push(&tx, *row)?;
            }
            rows.flush(&tx)?;
            let mut mark = tx.prepare_cached(
                "INSERT OR REPLACE INTO tail_marks (sensor, seq, ts) VALUES (?1, ?2, ?3)",
            )?;
            for m in batches.iter().flat_map(|b| &b.marks) {
                mark.execute(params![m.sensor, m.seq, m.ts])?;
            }
            // Each sensor once, as of its latest batch, in id order (the
            // key of `sensors`, for the reason the rows are sorted).
            let mut latest: BTreeMap<i64, &SensorStats> = BTreeMap::new();
            for batch in batches {
                latest.extend(batch.sensors.iter().map(|(id, s)| (*id, s)));
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO sensors (id, name, count, sum, min, max, last, last_ts, rolling_mean, alerts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (id) DO UPDATE SET count = excluded.count, sum = excluded.sum,
                   min = excluded.min, max = excluded.max, last = excluded.last,
                   last_ts = excluded.last_ts, rolling_mean = excluded.rolling_mean,
                   alerts = excluded.alerts",
            )?;
            for (id, s) in latest {
                upsert.execute(params![
                    id,
                    s.sensor_id,
                    s.count as i64,
                    s.sum,
                    s.min,
                    s.max,
                    s.last,
                    s.last_timestamp,
                    s.rolling_mean,
                    s.alerts as i64
                ])?;
            }
            for batch in batches
                .iter()
                .filter(|b| !b.keys.is_empty() || !b.forget_keys.is_empty())
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO idempotency_keys (row, key, through, fingerprint, first_used)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for KeyEntry { key, state } in &batch.keys {
                    upsert.execute(params![
                        state.first_seq as i64,
                        key,
                        state.through as i64,
                        state.fingerprint.0 as i64,
                        state.first_used
                    ])?;
                }
                let mut forget =
                    tx.prepare_cached("DELETE FROM idempotency_keys WHERE row = ?1")?;
                for row in &batch.forget_keys {
                    forget.execute([*row as i64])?;
                }
            }
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)")?
                .execute([last_seq as i64])?;
        }
        tx.commit()?;
        Ok(last_seq)
    }

    /// Deletes readings older than the retention period, at most once a minute.
    fn apply_retention_if_due(&mut self) {
        let Some(retention) = self.retention else {
            return;
        };
        if self
            .last_retention
            .is_some_and(|t| t.elapsed() < RETENTION_EVERY)
        {
            return;
        }
        self.last_retention = Some(Instant::now());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(retention).as_secs() as i64;
        let result = (|| -> rusqlite::Result<usize> {
            let tx = self.conn.transaction()?;
            // One range delete per sensor: a prefix of its (sensor, ts) range.
            let sensors: Vec<i64> = tx
                .prepare("SELECT id FROM sensors")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut deleted = 0;
            {
                let mut delete =
                    tx.prepare_cached("DELETE FROM readings WHERE sensor = ?1 AND ts < ?2")?;
                // A tail from before the oldest mark left starts at the
                // sensor's first reading left, which is no earlier.
                let mut marks =
                    tx.prepare_cached("DELETE FROM tail_marks WHERE sensor = ?1 AND ts < ?2")?;
                for sensor in sensors {
                    deleted += delete.execute(params![sensor, cutoff])?;
                    marks.execute(params![sensor, cutoff])?;
                }
            }
            tx.commit()?;
            Ok(deleted)
        })();
        match result {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, cutoff, "retention deleted old readings"),
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
    }

    /// A passive checkpoint (it waits for no reader), once the journal's
    /// oldest closed file is all indexed; if it copies the whole WAL, the
    /// database file holds everything up to `indexed`. One that readers
    /// kept short is tried again after the next transaction.
    fn checkpoint_if_wanted(&mut self, indexed: u64) {
        if !self.checkpoints.wanted_by(indexed) {
            return;
        }
        match checkpoint(&self.conn, "PASSIVE") {
            Ok(true) => self.checkpoints.reached(indexed),
            Ok(false) => tracing::debug!("a checkpoint was cut short by readers; will retry"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }

    /// Copies the whole WAL into the database file and empties it; fails
    /// unless it completes. At startup, before the journal files whose
    /// readings the WAL holds are deleted (no reader is open yet).
    pub(super) fn checkpoint_fully(&mut self, indexed: u64) -> rusqlite::Result<bool> {
        let complete = checkpoint(&self.conn, "TRUNCATE")?;
        if complete {
            self.checkpoints.reached(indexed);
        }
        Ok(complete)
    }

    fn finish(&mut self, indexed: u64) {
        match self.checkpoint_fully(indexed) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the final WAL checkpoint was cut short; the journal keeps what the WAL holds"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "final WAL checkpoint failed; the journal keeps what the WAL holds")
            }
        }
    }
}

/// How long a transaction waits for more batches: short while anyone
/// follows the live tail, long while nobody does.
fn linger(indexed: &watch::Sender<u64>) -> Duration {
    if indexed.receiver_count() > STORE_OWN_RECEIVERS {
        LINGER_FOLLOWED
    } else {
        LINGER_UNFOLLOWED
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`; whether it copied every frame of the
/// WAL into the database file (and synced it: `synchronous=FULL`).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<bool> {
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy == 0 && log == copied)
}

/// Collects rows and inserts them `ROWS_PER_INSERT` at a time, which
/// halves the time per reading against one INSERT per row (fewer statement
/// steps, binds and resets; BENCHMARKS.md, "Ingest").
struct RowBuffer {
    rows: Vec<Row>,
}

impl RowBuffer {
    fn new() -> Self {
        Self {
            rows: Vec::with_capacity(ROWS_PER_INSERT),
        }
    }

    fn push(&mut self, tx: &rusqlite::Transaction<'_>, row: Row) -> rusqlite::Result<()> {
        self.rows.push(row);
        if self.rows.len() == ROWS_PER_INSERT {
            self.flush(tx)?;
        }
        Ok(())
    }

    /// Inserts what is collected: a full buffer in one statement, a partial
    /// one row by row (so the statement cache holds two INSERTs, not 64).
    fn flush(&mut self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        if self.rows.len() == ROWS_PER_INSERT {
            static MANY: LazyLock<String> = LazyLock::new(|| insert_statement(ROWS_PER_INSERT));
            let mut insert = tx.prepare_cached(&MANY)?;
            for (i, row) in self.rows.iter().enumerate() {
                let at = COLUMNS * i + 1;
                insert.raw_bind_parameter(at, row.sensor)?;
                insert.raw_bind_parameter(at + 1, row.ts)?;
                insert.raw_bind_parameter(at + 2, row.seq)?;
                insert.raw_bind_parameter(at + 3, row.temperature)?;
                insert.raw_bind_parameter(at + 4, row.late)?;
            }
            insert.raw_execute()?;
        } else if !self.rows.is_empty() {
            let mut insert = tx.prepare_cached(
                "INSERT OR ROLLBACK INTO readings (sensor, ts, seq, temperature, late) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for row in &self.rows {
                insert.execute(params![
                    row.sensor,
                    row.ts,
                    row.seq,
                    row.temperature,
                    row.late
                ])?;
            }
        }
        self.rows.clear();
        Ok(())
    }
}

/// Parameters per row of the multi-row INSERT.
const COLUMNS: usize = 5;

/// `INSERT INTO readings ... VALUES (?,?,?,?,?), ...` for `rows` rows.
fn insert_statement(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR ROLLBACK INTO readings (sensor, ts, seq, temperature, late) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?)");
    }
    sql
}
