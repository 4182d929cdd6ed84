//! The single writer: drains the queue into group commits.
//!
//! Invariant: this thread is the only code that writes to the database, so
//! sequence numbers, sensor ids and statistics need no locks. Each queued
//! write is answered exactly once: with its receipt after the transaction
//! holding it has committed durably, or with the error that made the whole
//! transaction roll back (and then the in-memory state is unchanged too).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::LazyLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::{StoreConfig, StoreError, WriteReceipt, metrics::StoreMetrics, schema::Target};
use crate::{AlertRules, Reading, SensorStats};

/// Rows per multi-row INSERT: one statement step for this many readings
/// instead of one each (SQLite allows 32,766 parameters; 4 per row).
const ROWS_PER_INSERT: usize = 64;

/// One row of `readings`.
#[derive(Clone, Copy)]
struct Row {
    sensor: i64,
    ts: i64,
    seq: i64,
    temperature: f64,
}

/// Collects rows and inserts them `ROWS_PER_INSERT` at a time, which
/// halves the writer's time per reading against one INSERT per row
/// (fewer statement steps, binds and resets; BENCHMARKS.md, "Ingest").
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
                let at = 4 * i + 1;
                insert.raw_bind_parameter(at, row.sensor)?;
                insert.raw_bind_parameter(at + 1, row.ts)?;
                insert.raw_bind_parameter(at + 2, row.seq)?;
                insert.raw_bind_parameter(at + 3, row.temperature)?;
            }
            insert.raw_execute()?;
        } else if !self.rows.is_empty() {
            let mut insert = tx.prepare_cached(
                "INSERT OR ROLLBACK INTO readings (sensor, ts, seq, temperature) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for row in &self.rows {
                insert.execute(params![row.sensor, row.ts, row.seq, row.temperature])?;
            }
        }
        self.rows.clear();
        Ok(())
    }
}

/// `INSERT INTO readings ... VALUES (?,?,?,?), ...` for `rows` rows.
fn insert_statement(rows: usize) -> String {
    let mut sql =
        String::from("INSERT OR ROLLBACK INTO readings (sensor, ts, seq, temperature) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?)");
    }
    sql
}

/// How often retention runs, at most.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

pub(super) enum Command {
    Write(WriteRequest),
    /// Commit what is queued before this, checkpoint, stop; then answer.
    Close(oneshot::Sender<()>),
}

pub(super) struct WriteRequest {
    pub(super) readings: Vec<Reading>,
    pub(super) reply: oneshot::Sender<Result<WriteReceipt, StoreError>>,
}

#[derive(Clone)]
struct SensorEntry {
    id: i64,
    stats: SensorStats,
}

pub(super) struct Writer {
    conn: Connection,
    display: PathBuf,
    sensors: HashMap<String, SensorEntry>,
    next_sensor_id: i64,
    last_seq: u64,
    rules: AlertRules,
    retention: Option<Duration>,
    max_batch: usize,
    last_retention: Option<Instant>,
    metrics: StoreMetrics,
}

impl Writer {
    /// Opens the database and loads what the writer keeps in memory.
    /// Returns the writer and the last committed sequence number.
    pub(super) fn open(target: &Target, config: &StoreConfig) -> Result<(Writer, u64), StoreError> {
        let conn = target.open_writer()?;
        let load = |conn: &Connection| -> rusqlite::Result<(HashMap<String, SensorEntry>, u64)> {
            let mut sensors = HashMap::new();
            let mut stmt = conn.prepare(
                "SELECT id, name, count, sum, min, max, last, last_ts, rolling_mean, alerts FROM sensors",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let name: String = row.get(1)?;
                let stats = SensorStats {
                    sensor_id: name.clone(),
                    count: row.get::<_, i64>(2)? as u64,
                    sum: row.get(3)?,
                    min: row.get(4)?,
                    max: row.get(5)?,
                    last: row.get(6)?,
                    last_timestamp: row.get(7)?,
                    rolling_mean: row.get(8)?,
                    alerts: row.get::<_, i64>(9)? as u64,
                };
                sensors.insert(
                    name,
                    SensorEntry {
                        id: row.get(0)?,
                        stats,
                    },
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
            Ok((sensors, last_seq))
        };
        let (sensors, last_seq) = load(&conn).map_err(|e| target.classify(e))?;
        let next_sensor_id = sensors.values().map(|s| s.id).max().unwrap_or(0) + 1;
        tracing::info!(
            store = %target.display.display(),
            sensors = sensors.len(),
            last_seq,
            "store opened"
        );
        Ok((
            Writer {
                conn,
                display: target.display.clone(),
                sensors,
                next_sensor_id,
                last_seq,
                rules: config.alert_rules,
                retention: config.retention,
                max_batch: config.max_batch.max(1),
                last_retention: None,
                metrics: StoreMetrics::new(config.max_tracked_sensors),
            },
            last_seq,
        ))
    }

    /// The writer thread's body: runs until `Close` or until every sender is gone.
    pub(super) fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        committed: watch::Sender<u64>,
    ) {
        self.apply_retention_if_due();
        while let Some(first) = commands.blocking_recv() {
            let mut batch = Vec::new();
            let mut queued = 0;
            let mut close = None;
            match first {
                Command::Write(w) => {
                    queued += w.readings.len();
                    batch.push(w);
                }
                Command::Close(done) => close = Some(done),
            }
            while close.is_none() && queued < self.max_batch {
                match commands.try_recv() {
                    Ok(Command::Write(w)) => {
                        queued += w.readings.len();
                        batch.push(w);
                    }
                    Ok(Command::Close(done)) => close = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(batch, &committed);
            }
            if let Some(done) = close {
                self.finish();
                let _ = done.send(());
                return;
            }
            self.apply_retention_if_due();
        }
        self.finish();
    }

    /// One group commit: every request of `batch` in one transaction. The
    /// new high-water sequence number is published before any caller hears
    /// back, so whoever holds a receipt can rely on `committed_seq` covering it.
    fn commit(&mut self, batch: Vec<WriteRequest>, committed: &watch::Sender<u64>) {
        let started = Instant::now();
        let readings: usize = batch.iter().map(|w| w.readings.len()).sum();
        // Sensors touched by this batch, copied: they replace the originals
        // only if the transaction commits.
        let mut touched: HashMap<String, SensorEntry> = HashMap::new();
        let mut next_sensor_id = self.next_sensor_id;
        let mut seq = self.last_seq;

        let result = (|| -> rusqlite::Result<Vec<WriteReceipt>> {
            let tx = self.conn.transaction()?;
            let mut receipts = Vec::with_capacity(batch.len());
            {
                let mut rows = RowBuffer::new();
                for request in &batch {
                    let mut alerts = Vec::new();
                    for reading in &request.readings {
                        let entry = match touched.get_mut(&reading.sensor_id) {
                            Some(entry) => entry,
                            None => {
                                let entry = self
                                    .sensors
                                    .get(&reading.sensor_id)
                                    .cloned()
                                    .unwrap_or_else(|| {
                                        next_sensor_id += 1;
                                        SensorEntry {
                                            id: next_sensor_id - 1,
                                            stats: SensorStats::new(reading.sensor_id.clone()),
                                        }
                                    });
                                touched.entry(reading.sensor_id.clone()).or_insert(entry)
                            }
                        };
                        seq += 1;
                        alerts.extend(entry.stats.observe(reading, &self.rules));
                        rows.push(
                            &tx,
                            Row {
                                sensor: entry.id,
                                ts: reading.timestamp,
                                seq: seq as i64,
                                temperature: reading.temperature,
                            },
                        )?;
                    }
                    receipts.push(WriteReceipt {
                        first_seq: seq + 1 - request.readings.len() as u64,
                        count: request.readings.len(),
                        alerts,
                    });
                }
                rows.flush(&tx)?;
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO sensors (id, name, count, sum, min, max, last, last_ts, rolling_mean, alerts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (id) DO UPDATE SET count = excluded.count, sum = excluded.sum,
                       min = excluded.min, max = excluded.max, last = excluded.last,
                       last_ts = excluded.last_ts, rolling_mean = excluded.rolling_mean,
                       alerts = excluded.alerts",
                )?;
                for (name, e) in &touched {
                    let s = &e.stats;
                    upsert.execute(params![
                        e.id,
                        name,
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
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)",
                )?
                .execute([seq as i64])?;
            }
            tx.commit()?;
            Ok(receipts)
        })();

        match result {
            Ok(receipts) => {
                self.metrics.committed(
                    started.elapsed(),
                    readings,
                    receipts.iter().flat_map(|r| r.alerts.iter()),
                    touched
                        .iter()
                        .map(|(name, e)| (name.as_str(), e.stats.last)),
                );
                self.sensors.extend(touched);
                self.next_sensor_id = next_sensor_id;
                self.last_seq = seq;
                committed.send_replace(seq);
                for (request, receipt) in batch.into_iter().zip(receipts) {
                    let _ = request.reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                tracing::error!(store = %self.display.display(), error = %e, calls = batch.len(), readings, "group commit failed; nothing of it was stored");
                let error = StoreError::Write(e.to_string());
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
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
            let mut deleted = 0;
            {
                let mut delete =
                    tx.prepare_cached("DELETE FROM readings WHERE sensor = ?1 AND ts < ?2")?;
                for entry in self.sensors.values() {
                    deleted += delete.execute(params![entry.id, cutoff])?;
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

    fn finish(&mut self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL will be replayed on next open");
        }
        tracing::info!(store = %self.display.display(), last_seq = self.last_seq, "store closed");
    }
}
