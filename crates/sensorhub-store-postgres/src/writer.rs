//! The group commit: one task per replica takes every write waiting in its
//! queue into one PostgreSQL transaction.
//!
//! Why a clock row and not a sequence: sequence values are handed out
//! before commit, so across replicas they are not commit-ordered, and a
//! follower reading `seq > cursor` would skip a row that commits late. Each
//! transaction instead locks the one `store_clock` row first
//! (`UPDATE ... RETURNING`), reads the statistics and key states of what it
//! touches, numbers its readings after the clock, writes rows, statistics,
//! keys and the new clock, notifies, and commits. PostgreSQL makes a commit
//! visible before it releases the row lock, so the next transaction to take
//! the lock starts after every lower number is visible: `seq > cursor` is
//! gap-free for every reader, and the statistics and alerts are applied
//! exactly once, in commit order, across replicas. A rolled-back transaction
//! leaves nothing, its numbers included. The price: commits serialise across
//! replicas, which group commit keeps few and large.
//!
//! Invariant: each queued write is answered exactly once: with its receipt
//! after `COMMIT` returned, or with the error that kept the group out.

use std::{
    collections::{HashMap, HashSet},
    pin::pin,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use deadpool_postgres::Pool;
use sensorhub_core::store::group_commit::{QueuedWrite, WriterCommand, take_group};
use sensorhub_core::{
    Reading, SensorStats, StoreError, StoreSettings, WriteReceipt,
    idempotency::{self, Decision, Fingerprint, KeyState, KeyedPart},
    store::{CommitReply, metrics::StoreMetrics},
};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{
    Transaction,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};

use crate::{answer_limit, failure};

/// The channel NOTIFY announces a new `store_clock.last_seq` on.
pub(crate) const CHANNEL: &str = "sensorhub_committed";

pub(crate) struct WriteRequest {
    pub(crate) readings: Vec<Reading>,
    pub(crate) keyed: Option<KeyedPart>,
    pub(crate) reply: CommitReply,
}

impl QueuedWrite for WriteRequest {
    fn readings(&self) -> usize {
        self.readings.len()
    }
}

pub(crate) type Command = WriterCommand<WriteRequest>;

pub(crate) struct Writer {
    pub(crate) pool: Pool,
    pub(crate) settings: StoreSettings,
    pub(crate) metrics: StoreMetrics,
    /// What this replica's own commits make visible.
    pub(crate) committed: watch::Sender<u64>,
    pub(crate) telemetry: std::sync::Arc<crate::telemetry::DbTelemetry>,
}

/// A group numbered and analysed, ready to be written.
#[derive(Default)]
struct Planned {
    sensor_ids: Vec<String>,
    timestamps: Vec<i64>,
    seqs: Vec<i64>,
    temperatures: Vec<f64>,
    receipts: Vec<Result<WriteReceipt, StoreError>>,
    stats: HashMap<String, SensorStats>,
    keys: HashMap<String, KeyState>,
    last_seq: u64,
}

impl Writer {
    /// Runs until `Close` or until every sender is gone.
    pub(crate) async fn run(self, mut commands: mpsc::Receiver<Command>) {
        let max_batch = self.settings.max_batch.max(1);
        while let Some(first) = commands.recv().await {
            let group = take_group(first, &mut commands, max_batch);
            if !group.writes.is_empty() {
                self.commit(group.writes).await;
            }
            if let Some(done) = group.close {
                let _ = done.send(());
                return;
            }
        }
    }

    async fn commit(&self, batch: Vec<WriteRequest>) {
        let started = Instant::now();
        let readings: usize = batch.iter().map(|w| w.readings.len()).sum();
        let span = self.telemetry.commit_span(readings, batch.len());
        let outcome = self.transact(&batch).await;
        crate::telemetry::end_commit_span(span, outcome.as_ref().map(drop));
        match outcome {
            Ok(planned) => {
                let _ = self.committed.send_if_modified(|seen| {
                    std::mem::replace(seen, (*seen).max(planned.last_seq)) < planned.last_seq
                });
                self.metrics.committed(
                    started.elapsed(),
                    planned.seqs.len(),
                    planned
                        .receipts
                        .iter()
                        .flat_map(|r| r.iter().flat_map(|r| r.alerts.iter())),
                    planned.stats.iter().map(|(id, s)| (id.as_str(), s.last)),
                );
                for (request, receipt) in batch.into_iter().zip(planned.receipts) {
                    let _ = request.reply.send(receipt);
                }
            }
            Err(error) => {
                tracing::warn!(readings, error = %error, "group commit failed; nothing of it was acknowledged");
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// The transaction: clock lock, plan, write, commit, within the answer
    /// limit (`answer_limit.rs`).
    async fn transact(&self, batch: &[WriteRequest]) -> Result<Planned, StoreError> {
        let client = self.telemetry.connection(&self.pool).await?;
        let mut commit_sent = false;
        let answer = answer_limit::answered(client, async |client| {
            let tx = client.transaction().await.map_err(failure::write)?;
            let last: i64 = tx
                .query_one(
                    "UPDATE store_clock SET last_seq = last_seq WHERE id RETURNING last_seq",
                    &[],
                )
                .await
                .map_err(failure::write)?
                .get(0);
            let keys = load_keys(&tx, batch).await?;
            let stats = load_stats(&tx, batch).await?;
            let planned = plan(batch, last as u64, stats, &keys, &self.settings);
            write(&tx, &planned, &self.settings).await?;
            // The one ambiguous step: a connection lost here may or may not
            // have committed (failure::commit says what the caller sees).
            commit_sent = true;
            tx.commit().await.map_err(failure::commit)?;
            Ok(planned)
        })
        .await;
        answer.unwrap_or_else(|answer_limit::Silent| Err(failure::silent_write(commit_sent)))
    }
}

async fn load_keys(
    tx: &Transaction<'_>,
    batch: &[WriteRequest],
) -> Result<HashMap<String, KeyState>, StoreError> {
    let names: Vec<&str> = batch
        .iter()
        .filter_map(|w| w.keyed.as_ref().map(|k| k.key.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tx
        .query(
            "SELECT key, through, fingerprint, first_seq, first_used FROM idempotency_keys WHERE key = ANY($1)",
            &[&names],
        )
        .await
        .map_err(failure::write)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                KeyState {
                    through: r.get::<_, i64>(1) as u64,
                    fingerprint: Fingerprint(r.get::<_, i64>(2) as u64),
                    first_seq: r.get::<_, i64>(3) as u64,
                    first_used: r.get(4),
                },
            )
        })
        .collect())
}

async fn load_stats(
    tx: &Transaction<'_>,
    batch: &[WriteRequest],
) -> Result<HashMap<String, SensorStats>, StoreError> {
    let ids: Vec<&str> = batch
        .iter()
        .flat_map(|w| w.readings.iter().map(|r| r.sensor_id.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tx
        .query(crate::reader::STATS_ANY, &[&ids])
        .await
        .map_err(failure::write)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stats = crate::reader::stats_from_row(&r);
            (stats.sensor_id.clone(), stats)
        })
        .collect())
}

/// Numbers and analyses the group after `last`: what the embedded engine's
/// writer does, against the state read under the clock lock.
fn plan(
    batch: &[WriteRequest],
    last: u64,
    mut stats: HashMap<String, SensorStats>,
    stored_keys: &HashMap<String, KeyState>,
    settings: &StoreSettings,
) -> Planned {
    let mut planned = Planned {
        last_seq: last,
        ..Planned::default()
    };
    let mut touched = HashSet::new();
    let mut seq = last;
    let now = unix_now();
    for w in batch {
        let mut skip = 0;
        if let Some(part) = &w.keyed {
            let key = part.key.as_str();
            let state = planned
                .keys
                .get(key)
                .or_else(|| stored_keys.get(key))
                .copied();
            match idempotency::decide(state.as_ref(), part, &w.readings) {
                Decision::Store { skip: s } => skip = s,
                Decision::Conflict(why) => {
                    planned.receipts.push(Err(StoreError::KeyConflict(why)));
                    continue;
                }
            }
            if let Some(next) =
                idempotency::next_state(state.as_ref(), part, &w.readings, skip, seq + 1, now)
            {
                planned.keys.insert(key.to_owned(), next);
            }
        }
        let stored = &w.readings[skip..];
        let mut alerts = Vec::new();
        for reading in stored {
            let entry = stats
                .entry(reading.sensor_id.clone())
                .or_insert_with(|| SensorStats::new(reading.sensor_id.clone()));
            seq += 1;
            alerts.extend(entry.observe(reading, &settings.alert_rules));
            touched.insert(reading.sensor_id.as_str());
            planned.sensor_ids.push(reading.sensor_id.clone());
            planned.timestamps.push(reading.timestamp);
            planned.seqs.push(seq as i64);
            planned.temperatures.push(reading.temperature);
        }
        planned.receipts.push(Ok(WriteReceipt {
            first_seq: seq + 1 - stored.len() as u64,
            count: stored.len(),
            already_stored: skip,
            alerts,
        }));
    }
    stats.retain(|id, _| touched.contains(id.as_str()));
    planned.stats = stats;
    planned.last_seq = seq;
    planned
}

/// Rows, statistics, keys and the clock, pipelined on the one connection.
async fn write(
    tx: &Transaction<'_>,
    planned: &Planned,
    settings: &StoreSettings,
) -> Result<(), StoreError> {
    if planned.seqs.is_empty() && planned.keys.is_empty() {
        return Ok(());
    }
    let rows = copy_rows(tx, planned);
    let stats = write_stats(tx, planned);
    let keys = write_keys(tx, planned, settings);
    let last = planned.last_seq as i64;
    let clock = async {
        if planned.seqs.is_empty() {
            return Ok(0);
        }
        tx.execute("UPDATE store_clock SET last_seq = $1 WHERE id", &[&last])
            .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &last.to_string()])
            .await
    };
    futures_util::try_join!(rows, stats, keys, clock).map_err(failure::write)?;
    Ok(())
}

/// The group's rows by binary `COPY`: per row, less work in the one backend
/// every commit runs on than a multi-row `INSERT ... SELECT * FROM unnest(...)`
/// (BENCHMARKS.md, "Replicas on one PostgreSQL"). The connection sends the
/// statements queued behind it once the copy ends, so it still pipelines
/// with them.
async fn copy_rows(tx: &Transaction<'_>, planned: &Planned) -> Result<u64, tokio_postgres::Error> {
    if planned.seqs.is_empty() {
        return Ok(0);
    }
    let sink = tx
        .copy_in("COPY readings (sensor_id, ts, seq, temperature) FROM STDIN (FORMAT binary)")
        .await?;
    let mut rows = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::INT8, Type::INT8, Type::FLOAT8]
    ));
    for i in 0..planned.seqs.len() {
        rows.as_mut()
            .write(&[
                &planned.sensor_ids[i],
                &planned.timestamps[i],
                &planned.seqs[i],
                &planned.temperatures[i],
            ])
            .await?;
    }
    rows.finish().await
}

async fn write_stats(
    tx: &Transaction<'_>,
    planned: &Planned,
) -> Result<u64, tokio_postgres::Error> {
    if planned.stats.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::new();
    let (mut count, mut sum, mut min, mut max, mut last, mut last_ts, mut mean, mut alerts) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for s in planned.stats.values() {
        ids.push(s.sensor_id.as_str());
        count.push(s.count as i64);
        sum.push(s.sum);
        min.push(s.min);
        max.push(s.max);
        last.push(s.last);
        last_ts.push(s.last_timestamp);
        mean.push(s.rolling_mean);
        alerts.push(s.alerts as i64);
    }
    let params: [&(dyn ToSql + Sync); 9] = [
        &ids, &count, &sum, &min, &max, &last, &last_ts, &mean, &alerts,
    ];
    tx.execute(
        "INSERT INTO sensor_stats (sensor_id, count, sum, min, max, last, last_ts, rolling_mean, alerts) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::float8[], $4::float8[], $5::float8[], \
                              $6::float8[], $7::int8[], $8::float8[], $9::int8[]) \
         ON CONFLICT (sensor_id) DO UPDATE SET count = EXCLUDED.count, sum = EXCLUDED.sum, \
             min = EXCLUDED.min, max = EXCLUDED.max, last = EXCLUDED.last, \
             last_ts = EXCLUDED.last_ts, rolling_mean = EXCLUDED.rolling_mean, \
             alerts = EXCLUDED.alerts",
        &params,
    )
    .await
}

/// The keys the group moved on, then the ones past the limits forgotten
/// (oldest first, as `KeyRegistry` does in the embedded engine).
async fn write_keys(
    tx: &Transaction<'_>,
    planned: &Planned,
    settings: &StoreSettings,
) -> Result<u64, tokio_postgres::Error> {
    if planned.keys.is_empty() {
        return Ok(0);
    }
    let mut names = Vec::new();
    let (mut through, mut fingerprint, mut first_seq, mut first_used) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, state) in &planned.keys {
        names.push(key.as_str());
        through.push(state.through as i64);
        fingerprint.push(state.fingerprint.0 as i64);
        first_seq.push(state.first_seq as i64);
        first_used.push(state.first_used);
    }
    tx.execute(
        "INSERT INTO idempotency_keys (key, through, fingerprint, first_seq, first_used) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
         ON CONFLICT (key) DO UPDATE SET through = EXCLUDED.through, fingerprint = EXCLUDED.fingerprint",
        &[&names, &through, &fingerprint, &first_seq, &first_used],
    )
    .await?;
    forget_keys(tx, settings).await
}

/// Forgets keys older than the window or beyond the newest `max_keys`.
pub(crate) async fn forget_keys(
    tx: &Transaction<'_>,
    settings: &StoreSettings,
) -> Result<u64, tokio_postgres::Error> {
    let oldest_kept = unix_now().saturating_sub(settings.idempotency.window.as_secs() as i64);
    let keep = settings.idempotency.max_keys as i64;
    tx.execute(
        "DELETE FROM idempotency_keys WHERE first_used < $1 OR first_seq < \
         (SELECT first_seq FROM idempotency_keys ORDER BY first_seq DESC OFFSET $2 LIMIT 1)",
        &[&oldest_kept, &(keep - 1).max(0)],
    )
    .await
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
