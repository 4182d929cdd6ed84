//! Queries, on a small pool of read-only connections.
//!
//! Why a hand-written pool: it is a free list of at most [`MAX_IDLE`]
//! connections behind a mutex, used from `spawn_blocking`. r2d2 and deadpool
//! would add a reaper thread or an async runtime dependency for no gain here.

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use crate::schema::Target;
use sensorhub_core::{HistoryCursor, HistoryQuery, StoreError};
use sensorhub_core::{Reading, SensorStats, StoredReading};

const MAX_IDLE: usize = 16;

#[derive(Debug, Clone)]
pub(super) struct ReaderPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    target: Target,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub(super) fn new(target: Target) -> Self {
        ReaderPool {
            inner: Arc::new(PoolInner {
                target,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    pub(super) async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.idle.lock().expect("poisoned").pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => inner.target.open_reader()?,
            };
            let result = f(&conn).map_err(read_failure);
            let mut idle = inner.idle.lock().expect("poisoned");
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Read(e.to_string()))?
    }
}

/// A failed read as the caller should see it: out of descriptors when
/// SQLite could not open a file (a temporary file, the WAL) and the process
/// has none left, otherwise the error itself.
pub(super) fn read_failure(e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen) && out_of_descriptors() {
        StoreError::OutOfDescriptors
    } else {
        StoreError::Read(e.to_string())
    }
}

/// Whether opening a file fails right now for want of a descriptor. SQLite
/// reports only "unable to open database file"; its errno is gone by then.
pub(super) fn out_of_descriptors() -> bool {
    match std::fs::File::open("/dev/null") {
        Ok(_) => false,
        Err(e) => matches!(e.raw_os_error(), Some(24 | 23)),
    }
}

fn sensor_key(conn: &Connection, sensor_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM sensors WHERE name = ?1")?
        .query_row([sensor_id], |r| r.get(0))
        .optional()
}

fn stored(sensor_id: &str, ts: i64, seq: i64, temperature: f64) -> StoredReading {
    StoredReading {
        seq: seq as u64,
        reading: Reading {
            sensor_id: sensor_id.to_owned(),
            temperature,
            timestamp: ts,
        },
    }
}

/// One page of a sensor's history in time order, after a `(ts, seq)` cursor.
const HISTORY_PAGE: &str = "SELECT ts, seq, temperature FROM readings
     WHERE sensor = ?1 AND (ts, seq) > (?2, ?3) AND ts < ?4 AND seq <= ?5
     ORDER BY ts, seq LIMIT ?6";

/// Where the last N readings of a sensor's history start: the N-th from
/// the end, walking the primary key backwards from `until`.
const LAST_N_START: &str = "SELECT ts, seq FROM readings
     WHERE sensor = ?1 AND ts >= ?2 AND ts < ?3 AND seq <= ?4
     ORDER BY ts DESC, seq DESC LIMIT 1 OFFSET ?5";

/// Where a sensor's live tail after a `seq` can start along the key: its
/// last tail mark at or before it (`schema.rs`).
const TAIL_START: &str = "SELECT ts, seq FROM tail_marks WHERE sensor = ?1 AND seq <= ?2
     ORDER BY seq DESC LIMIT 1";

/// The readings of a sensor's live tail that are not late: in commit order
/// along the key, from the tail's start (`TAIL_START`, or the sensor's
/// first reading) on, after a `seq`.
const TAIL_PAGE_IN_ORDER: &str = "SELECT ts, seq, temperature FROM readings
     WHERE sensor = ?1 AND (ts, seq) >= (?2, ?3) AND seq > ?4 AND late = 0
     ORDER BY ts, seq LIMIT ?5";

/// The late readings of a sensor's live tail, after a `seq`, in commit order.
const TAIL_PAGE_LATE: &str = "SELECT ts, seq, temperature FROM readings
     WHERE sensor = ?1 AND seq > ?2 AND late = 1 ORDER BY seq LIMIT ?3";

/// One page of every sensor's statistics, by name after a cursor.
const STATS_PAGE: &str =
    "SELECT name, count, sum, min, max, last, last_ts, rolling_mean, alerts FROM sensors
     WHERE name > ?1 ORDER BY name LIMIT ?2";

pub(super) fn history_page(
    conn: &Connection,
    query: &HistoryQuery,
    cursor: HistoryCursor,
    page_size: usize,
) -> rusqlite::Result<Vec<StoredReading>> {
    let Some(sensor) = sensor_key(conn, &query.sensor_id)? else {
        return Ok(Vec::new());
    };
    // (ts, seq) > (since, 0) is ts >= since, as every seq is at least 1.
    let (after_ts, after_seq) = cursor
        .after()
        .map(|(ts, seq)| (ts, seq as i64))
        .unwrap_or((query.since.unwrap_or(i64::MIN), 0));
    let mut stmt = conn.prepare_cached(HISTORY_PAGE)?;
    let rows = stmt.query_map(
        params![
            sensor,
            after_ts,
            after_seq,
            query.until.unwrap_or(i64::MAX),
            query.up_to_seq.map_or(i64::MAX, |s| s as i64),
            page_size as i64
        ],
        |r| Ok(stored(&query.sensor_id, r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    rows.collect()
}

/// The (timestamp, seq) of the `n`-th reading of `query` counted back from
/// its end, or `None` when it holds fewer than `n` (or `n` is 0). Walks the
/// primary key backwards from `until`: a range scan of `n` index entries.
pub(super) fn nth_from_end(
    conn: &Connection,
    query: &HistoryQuery,
    n: u64,
) -> rusqlite::Result<Option<(i64, u64)>> {
    let Some(sensor) = sensor_key(conn, &query.sensor_id)? else {
        return Ok(None);
    };
    if n == 0 {
        return Ok(None);
    }
    conn.prepare_cached(LAST_N_START)?
        .query_row(
            params![
                sensor,
                query.since.unwrap_or(i64::MIN),
                query.until.unwrap_or(i64::MAX),
                query.up_to_seq.map_or(i64::MAX, |s| s as i64),
                i64::try_from(n - 1).unwrap_or(i64::MAX),
            ],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )
        .optional()
}

pub(super) fn tail_page(
    conn: &Connection,
    sensor_id: &str,
    after_seq: u64,
    page_size: usize,
) -> rusqlite::Result<Vec<StoredReading>> {
    let Some(sensor) = sensor_key(conn, sensor_id)? else {
        return Ok(Vec::new());
    };
    let after = after_seq as i64;
    let start: (i64, i64) = conn
        .prepare_cached(TAIL_START)?
        .query_row(params![sensor, after], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((i64::MIN, 0));
    let row = |r: &rusqlite::Row<'_>| Ok(stored(sensor_id, r.get(0)?, r.get(1)?, r.get(2)?));
    let limit = page_size as i64;
    let in_order: Vec<StoredReading> = conn
        .prepare_cached(TAIL_PAGE_IN_ORDER)?
        .query_map(params![sensor, start.0, start.1, after, limit], row)?
        .collect::<rusqlite::Result<_>>()?;
    let late: Vec<StoredReading> = conn
        .prepare_cached(TAIL_PAGE_LATE)?
        .query_map(params![sensor, after, limit], row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(merge_by_seq(in_order, late, page_size))
}

/// The first `n` readings of two lists each in `seq` order, in `seq` order.
fn merge_by_seq(a: Vec<StoredReading>, b: Vec<StoredReading>, n: usize) -> Vec<StoredReading> {
    if b.is_empty() {
        return a;
    }
    let mut merged = Vec::with_capacity(n.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while merged.len() < n {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.seq < y.seq => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(r) => merged.push(r),
            None => break,
        }
    }
    merged
}

pub(super) fn stats(
    conn: &Connection,
    sensor_id: Option<&str>,
) -> rusqlite::Result<Vec<SensorStats>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, count, sum, min, max, last, last_ts, rolling_mean, alerts FROM sensors
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([sensor_id], |r| sensor_stats(r, 0))?;
    rows.collect()
}

/// At most `limit` sensors' statistics, those whose id sorts after `after`
/// (byte order), in that order: one page of every sensor, read along the
/// `name` index.
pub(super) fn stats_page(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> rusqlite::Result<Vec<SensorStats>> {
    let mut stmt = conn.prepare_cached(STATS_PAGE)?;
    let rows = stmt.query_map(params![after, limit as i64], |r| sensor_stats(r, 0))?;
    rows.collect()
}

/// A sensor's statistics from a row holding `name, count, sum, min, max,
/// last, last_ts, rolling_mean, alerts` of `sensors`, from column `at` on.
pub(super) fn sensor_stats(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SensorStats> {
    Ok(SensorStats {
        sensor_id: row.get(at)?,
        count: row.get::<_, i64>(at + 1)? as u64,
        sum: row.get(at + 2)?,
        min: row.get(at + 3)?,
        max: row.get(at + 4)?,
        last: row.get(at + 5)?,
        last_timestamp: row.get(at + 6)?,
        rolling_mean: row.get(at + 7)?,
        alerts: row.get::<_, i64>(at + 8)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddedConfig, EmbeddedStore, StoreLocation};
    use sensorhub_core::{Reading, Store};

    /// The plans of the statements the reader runs must be index range
    /// searches, never a scan plus a sort: a sensor with ten million
    /// readings is read page by page.
    #[test]
    fn history_and_tail_pages_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
                dir.path().to_owned(),
            )))
            .unwrap();
            let reading = Reading {
                sensor_id: "s".into(),
                temperature: 1.0,
                timestamp: 1,
            };
            store.append(vec![reading]).await.unwrap();
            store.close().await.unwrap();
        });
        let conn = Connection::open(dir.path().join("readings.db")).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params =
                rusqlite::params_from_iter(std::iter::repeat_n(1_i64, stmt.parameter_count()));
            let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let cases = [
            (
                HISTORY_PAGE,
                "SEARCH readings USING PRIMARY KEY (sensor=? AND",
            ),
            // The start of the last N (follow with a limit): the same key, backwards.
            (
                LAST_N_START,
                "SEARCH readings USING PRIMARY KEY (sensor=? AND ts>? AND ts<?)",
            ),
            // The live tail: a mark, then the key from it on, and the late
            // readings' partial index.
            (
                TAIL_START,
                "SEARCH tail_marks USING PRIMARY KEY (sensor=? AND seq<?)",
            ),
            (
                TAIL_PAGE_IN_ORDER,
                "SEARCH readings USING PRIMARY KEY (sensor=? AND",
            ),
            (
                TAIL_PAGE_LATE,
                "USING INDEX readings_late (sensor=? AND seq>?)",
            ),
            // A page of every sensor's statistics reads the name index from the cursor on.
            (STATS_PAGE, "SEARCH sensors USING INDEX"),
        ];
        for (sql, wanted) in cases {
            let found = plan(sql);
            assert!(found.contains(wanted), "{sql}\n{found}");
            assert!(!found.contains("TEMP B-TREE"), "{sql}\n{found}");
        }
        assert!(plan(STATS_PAGE).contains("(name>?)"));
    }
}
