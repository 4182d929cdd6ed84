//! The writer: numbers and analyses writes, makes them durable, answers.
//!
//! It drains the queue into group commits. For each one it gives every
//! reading its sequence number, runs the statistics and alert rules in that
//! order, appends the whole group to the journal with one fsync, and then
//! answers each caller. The rows go on to the indexer, which makes them
//! visible to queries. It also tells the indexer which rows are *late* (an
//! earlier reading of the sensor has a later timestamp) and where to put a
//! tail mark (`schema.rs`): it already looks up each reading's sensor, so
//! the live tail's bookkeeping costs a comparison here instead of a second
//! index on the indexer's thread.
//!
//! Invariant: this thread alone hands out sequence numbers and sensor ids
//! and keeps the running statistics, so none of them needs a lock. Each
//! queued write is answered exactly once: with its receipt after the
//! journal holds it durably, or with the error that kept the whole group
//! out of the journal (and then the in-memory state is unchanged too). It
//! never touches SQLite: that is the indexer's (`Loaded::read` runs before
//! the thread starts).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    time::Instant,
};

use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::{
    commit_pacing::CommitPacing,
    indexer::{Backlog, Checkpoints, IndexBatch, IndexCommand, Row, TailMark},
    journal::{Journal, KeyEntry},
    schema::MARK_EVERY,
};
use sensorhub_core::store::group_commit::{QueuedWrite, WriterCommand, take_group, top_up};
use sensorhub_core::{
    AlertRules, Reading, SensorStats, StoreError, StoreSettings, WriteReceipt,
    idempotency::{self, Decision, Fingerprint, KeyRegistry, KeyState, KeyedPart},
    store::{CommitReply, metrics::StoreMetrics},
};

/// What the store sends the writer; a `Close` also has everything before
/// it indexed before it is answered.
pub(super) type Command = WriterCommand<WriteRequest>;

pub(super) struct WriteRequest {
    pub(super) readings: Vec<Reading>,
    /// Set for a write with an idempotency key (boxed: most writes have none).
    pub(super) keyed: Option<Box<KeyedPart>>,
    pub(super) reply: CommitReply,
}

impl QueuedWrite for WriteRequest {
    fn readings(&self) -> usize {
        self.readings.len()
    }
}

#[derive(Clone)]
struct SensorEntry {
    id: i64,
    stats: SensorStats,
    /// The latest timestamp of the sensor's readings (`i64::MIN`: none): a
    /// reading before it is late. At least that of every reading not late,
    /// so those stay in commit order along the table's key.
    max_ts: i64,
    /// Readings not late since the sensor's last tail mark.
    since_mark: u32,
}

impl SensorEntry {
    fn new(id: i64, stats: SensorStats, max_ts: Option<i64>) -> Self {
        Self {
            id,
            stats,
            max_ts: max_ts.unwrap_or(i64::MIN),
            since_mark: 0,
        }
    }
}

/// What the tables hold: the writer's starting point.
pub(super) struct Loaded {
    sensors: HashMap<String, SensorEntry>,
    pub(super) last_seq: u64,
    /// Idempotency keys, oldest first.
    keys: Vec<KeyEntry>,
}

impl Loaded {
    /// Reads the sensors, their statistics and the last sequence number.
    pub(super) fn read(conn: &Connection) -> rusqlite::Result<Loaded> {
        let mut sensors = HashMap::new();
        // The latest timestamp: one descent of the key per sensor.
        let mut stmt = conn.prepare(
            "SELECT id, name, count, sum, min, max, last, last_ts, rolling_mean, alerts,
                    (SELECT max(ts) FROM readings WHERE sensor = sensors.id) FROM sensors",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let stats = super::reader::sensor_stats(row, 1)?;
            sensors.insert(
                stats.sensor_id.clone(),
                SensorEntry::new(row.get(0)?, stats, row.get(10)?),
            );
        }
        let meta: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get(0)
            })
            .ok();
        let max_stored: Option<i64> =
            conn.query_row("SELECT max(seq) FROM readings", [], |r| r.get(0))?;
        let last_seq = meta.unwrap_or(0).max(max_stored.unwrap_or(0)) as u64;
        let mut stmt = conn.prepare(
            "SELECT row, key, through, fingerprint, first_used FROM idempotency_keys ORDER BY row",
        )?;
        let keys = stmt
            .query_map([], |r| {
                Ok(KeyEntry {
                    key: r.get(1)?,
                    state: KeyState {
                        first_seq: r.get::<_, i64>(0)? as u64,
                        through: r.get::<_, i64>(2)? as u64,
                        fingerprint: Fingerprint(r.get::<_, i64>(3)? as u64),
                        first_used: r.get(4)?,
                    },
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Loaded {
            sensors,
            last_seq,
            keys,
        })
    }

    pub(super) fn sensor_count(&self) -> usize {
        self.sensors.len()
    }
}

/// A group of writes, numbered and analysed but not yet durable: applied
/// to the writer's state only once the journal holds it.
struct Sequenced {
    rows: Vec<Row>,
    marks: Vec<TailMark>,
    /// Per write, in order: its receipt, or why it stores nothing (a keyed
    /// write whose key holds other readings).
    receipts: Vec<Result<WriteReceipt, StoreError>>,
    /// Per write: how many of its first readings an earlier attempt stored.
    skips: Vec<usize>,
    /// Copies of the sensors the group touches, as of its last reading.
    touched: HashMap<String, SensorEntry>,
    /// The keys the group's keyed writes moved on, as of its end.
    keys: Vec<KeyEntry>,
    next_sensor_id: i64,
    last_seq: u64,
}

/// One write as the group commit sees it.
struct Part<'a> {
    readings: &'a [Reading],
    keyed: Option<&'a KeyedPart>,
}

pub(super) struct Writer {
    sensors: HashMap<String, SensorEntry>,
    next_sensor_id: i64,
    last_seq: u64,
    rules: AlertRules,
    max_batch: usize,
    metrics: StoreMetrics,
    /// `None` for `--memory`: nothing to make durable.
    journal: Option<Journal>,
    /// The idempotency keys remembered (`crate::idempotency`).
    keys: KeyRegistry,
    /// Whether a small group waits for more before its fsync.
    pacing: CommitPacing,
}

/// Where the writer's results go.
pub(super) struct Outlets {
    pub(super) index: std_mpsc::Sender<IndexCommand>,
    pub(super) backlog: Arc<Backlog>,
    /// The last sequence number answered to a caller (read-your-writes).
    pub(super) acknowledged: Arc<AtomicU64>,
    /// How far the database file holds the readings (journal trimming).
    pub(super) checkpoints: Arc<Checkpoints>,
}

impl Writer {
    pub(super) fn new(loaded: Loaded, config: &StoreSettings) -> Writer {
        let next_sensor_id = loaded.sensors.values().map(|s| s.id).max().unwrap_or(0) + 1;
        let mut keys = KeyRegistry::new(config.idempotency);
        for entry in &loaded.keys {
            keys.insert(&entry.key, entry.state);
        }
        Writer {
            sensors: loaded.sensors,
            next_sensor_id,
            last_seq: loaded.last_seq,
            rules: config.alert_rules,
            max_batch: config.max_batch.max(1),
            metrics: StoreMetrics::new(config.max_tracked_sensors),
            journal: None,
            keys,
            pacing: CommitPacing::default(),
        }
    }

    /// The commit totals and recent alerts this writer records.
    pub(super) fn activity(
        &self,
    ) -> std::sync::Arc<sensorhub_core::store::activity::StoreActivity> {
        self.metrics.activity()
    }

    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// From now on, every group is made durable in `journal` before it is answered.
    pub(super) fn use_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// Takes readings the journal held beyond the tables (numbered from
    /// `last_seq + 1`) back into the statistics, as if written now, and the
    /// key states their frames recorded; returns them for the indexer.
    /// Nobody is answered and nothing counted: they were acknowledged
    /// before the restart.
    pub(super) fn replay(&mut self, readings: &[Reading], keys: &[KeyEntry]) -> IndexBatch {
        let mut sequenced = self.sequence([Part {
            readings,
            keyed: None,
        }]);
        sequenced.keys = keys.to_vec();
        self.accept(sequenced)
    }

    /// The writer thread's body: runs until `Close` or until every sender is gone.
    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>, outlets: Outlets) {
        while let Some(first) = commands.blocking_recv() {
            let mut group = take_group(first, &mut commands, self.max_batch);
            // Without a journal a commit costs no fsync: nothing to share.
            if self.journal.is_some() && group.close.is_none() {
                let wait =
                    self.pacing
                        .on_group(Instant::now(), group.writes.len(), group.readings());
                if let Some(wait) = wait {
                    std::thread::sleep(wait);
                    let more = top_up(&mut group, &mut commands, self.max_batch);
                    self.pacing.topped_up(more);
                }
            }
            if !group.writes.is_empty() {
                self.commit(group.writes, &outlets);
            }
            if let Some(done) = group.close {
                self.close(outlets);
                let _ = done.send(());
                return;
            }
        }
        self.close(outlets);
    }

    /// One group commit: numbered, analysed, journaled with one fsync, answered,
    /// handed to the indexer. The acknowledged sequence number is published
    /// before any caller hears back, so a query after a receipt waits for it.
    fn commit(&mut self, batch: Vec<WriteRequest>, outlets: &Outlets) {
        let started = Instant::now();
        let mut sequenced = self.sequence(batch.iter().map(|w| Part {
            readings: &w.readings,
            keyed: w.keyed.as_deref(),
        }));
        let readings = sequenced.rows.len();
        if let Some(journal) = &mut self.journal {
            let first_seq = self.last_seq + 1;
            let stored = batch
                .iter()
                .zip(&sequenced.skips)
                .flat_map(|(w, skip)| w.readings[*skip..].iter());
            if let Err(why) = journal.append(first_seq, readings, stored, &sequenced.keys) {
                let error = StoreError::Write(why);
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
                return;
            }
        }
        self.metrics.committed(
            started.elapsed(),
            readings,
            sequenced
                .receipts
                .iter()
                .flat_map(|r| r.iter().flat_map(|r| r.alerts.iter())),
            sequenced
                .touched
                .iter()
                .map(|(name, e)| (name.as_str(), e.stats.last)),
        );
        let receipts = std::mem::take(&mut sequenced.receipts);
        let index = self.accept(sequenced);
        outlets.acknowledged.store(self.last_seq, Ordering::Release);
        for (request, receipt) in batch.into_iter().zip(receipts) {
            let _ = request.reply.send(receipt);
        }
        // A group whose writes were all stored before has nothing to index.
        let empty = index.rows.is_empty() && index.keys.is_empty() && index.forget_keys.is_empty();
        // Waits while the indexer is far behind: backpressure on the callers.
        outlets.backlog.reserve(index.rows.len());
        if !empty && outlets.index.send(IndexCommand::Index(index)).is_err() {
            tracing::error!(
                "the indexer has stopped; acknowledged readings stay in the journal until the next start"
            );
        }
        if let Some(journal) = &mut self.journal {
            trim(journal, &outlets.checkpoints);
        }
    }

    /// Numbers and analyses `parts` against copies of the sensors and keys
    /// they touch, leaving the writer's own state as it was. A keyed part
    /// skips what an earlier attempt with its key stored
    /// ([`idempotency::decide`]).
    fn sequence<'a>(&self, parts: impl IntoIterator<Item = Part<'a>>) -> Sequenced {
        let mut touched: HashMap<String, SensorEntry> = HashMap::new();
        let mut keys: HashMap<&str, KeyState> = HashMap::new();
        let mut next_sensor_id = self.next_sensor_id;
        let mut seq = self.last_seq;
        let mut rows = Vec::new();
        let mut marks = Vec::new();
        let mut receipts = Vec::new();
        let mut skips = Vec::new();
        let mut now = None;
        for Part { readings, keyed } in parts {
            let mut skip = 0;
            if let Some(part) = keyed {
                let key = part.key.as_str();
                let state = keys.get(key).or_else(|| self.keys.get(key)).copied();
                match idempotency::decide(state.as_ref(), part, readings) {
                    Decision::Store { skip: s } => skip = s,
                    Decision::Conflict(why) => {
                        receipts.push(Err(StoreError::KeyConflict(why)));
                        skips.push(readings.len());
                        continue;
                    }
                }
                let now = *now.get_or_insert_with(unix_now);
                if let Some(next) =
                    idempotency::next_state(state.as_ref(), part, readings, skip, seq + 1, now)
                {
                    keys.insert(key, next);
                }
            }
            let stored = &readings[skip..];
            let mut alerts = Vec::new();
            for reading in stored {
                let entry = match touched.get_mut(&reading.sensor_id) {
                    Some(entry) => entry,
                    None => {
                        let entry = self
                            .sensors
                            .get(&reading.sensor_id)
                            .cloned()
                            .unwrap_or_else(|| {
                                next_sensor_id += 1;
                                let stats = SensorStats::new(reading.sensor_id.clone());
                                SensorEntry::new(next_sensor_id - 1, stats, None)
                            });
                        touched.entry(reading.sensor_id.clone()).or_insert(entry)
                    }
                };
                seq += 1;
                alerts.extend(entry.stats.observe(reading, &self.rules));
                let late = reading.timestamp < entry.max_ts;
                if !late {
                    entry.max_ts = reading.timestamp;
                    entry.since_mark += 1;
                    if entry.since_mark >= MARK_EVERY {
                        entry.since_mark = 0;
                        marks.push(TailMark {
                            sensor: entry.id,
                            seq: seq as i64,
                            ts: reading.timestamp,
                        });
                    }
                }
                rows.push(Row {
                    sensor: entry.id,
                    ts: reading.timestamp,
                    seq: seq as i64,
                    temperature: reading.temperature,
                    late,
                });
            }
            receipts.push(Ok(WriteReceipt {
                first_seq: seq + 1 - stored.len() as u64,
                count: stored.len(),
                already_stored: skip,
                alerts,
            }));
            skips.push(skip);
        }
        Sequenced {
            rows,
            marks,
            receipts,
            skips,
            touched,
            keys: keys
                .into_iter()
                .map(|(key, state)| KeyEntry {
                    key: key.to_owned(),
                    state,
                })
                .collect(),
            next_sensor_id,
            last_seq: seq,
        }
    }

    /// Makes a durable group part of the writer's state; returns the indexer's share.
    fn accept(&mut self, sequenced: Sequenced) -> IndexBatch {
        let sensors = sequenced
            .touched
            .values()
            .map(|e| (e.id, e.stats.clone()))
            .collect();
        self.sensors.extend(sequenced.touched);
        self.next_sensor_id = sequenced.next_sensor_id;
        self.last_seq = sequenced.last_seq;
        let mut forget = Vec::new();
        if !sequenced.keys.is_empty() || !self.keys.is_empty() {
            for entry in &sequenced.keys {
                self.keys.insert(&entry.key, entry.state);
            }
            forget = self.keys.expire(unix_now());
        }
        IndexBatch {
            rows: sequenced.rows,
            marks: sequenced.marks,
            sensors,
            keys: sequenced.keys,
            forget_keys: forget,
            last_seq: sequenced.last_seq,
        }
    }

    /// Has everything indexed and checkpointed; the journal is then empty.
    fn close(&mut self, outlets: Outlets) {
        let (done, indexed) = std_mpsc::channel();
        if outlets.index.send(IndexCommand::Close(done)).is_ok() {
            let _ = indexed.recv();
        }
        if let Some(journal) = &mut self.journal {
            trim(journal, &outlets.checkpoints);
        }
        tracing::info!(last_seq = self.last_seq, "store closed");
    }
}

/// Deletes the journal files the database file holds all of, and tells the
/// indexer how far the next checkpoint must reach for the next one to go.
fn trim(journal: &mut Journal, checkpoints: &Checkpoints) {
    journal.trim(checkpoints.done());
    checkpoints.want(journal.oldest_sealed_last());
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
