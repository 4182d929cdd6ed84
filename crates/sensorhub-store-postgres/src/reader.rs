//! The queries: history pages, the last N, the tail, statistics.
//!
//! Every one is a range scan of a primary key or index from its cursor,
//! bounded by `LIMIT`: `readings (sensor_id, ts, seq)` for history,
//! `readings_by_seq (sensor_id, seq)` for the tail, `sensor_stats
//! (sensor_id)` for the stats pages. Absent bounds become the widest
//! values (timestamps are positive and never in the future, sequence
//! numbers start at 1), so each query is one statement with one plan.

use sensorhub_core::{HistoryCursor, HistoryQuery, Reading, SensorStats, StoredReading};
use tokio_postgres::{Client, Row};

pub(crate) const HISTORY_PAGE: &str = "SELECT ts, seq, temperature FROM readings \
     WHERE sensor_id = $1 AND (ts, seq) > ($2, $3) AND ts < $4 AND seq <= $5 \
     ORDER BY ts, seq LIMIT $6";

pub(crate) const HISTORY_LAST: &str = "SELECT ts, seq FROM readings \
     WHERE sensor_id = $1 AND ts >= $2 AND ts < $3 AND seq <= $4 \
     ORDER BY ts DESC, seq DESC OFFSET $5 LIMIT 1";

pub(crate) const TAIL_PAGE: &str = "SELECT ts, seq, temperature FROM readings \
     WHERE sensor_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

macro_rules! stats_select {
    ($rest:literal) => {
        concat!(
            "SELECT sensor_id, count, sum, min, max, last, last_ts, rolling_mean, alerts ",
            "FROM sensor_stats ",
            $rest
        )
    };
}

pub(crate) const STATS_ONE: &str = stats_select!("WHERE sensor_id = $1");
pub(crate) const STATS_ALL: &str = stats_select!("ORDER BY sensor_id");
pub(crate) const STATS_PAGE: &str =
    stats_select!("WHERE sensor_id > $1 ORDER BY sensor_id LIMIT $2");
/// The statistics the writer reads under the clock lock.
pub(crate) const STATS_ANY: &str = stats_select!("WHERE sensor_id = ANY($1)");

fn bounds(query: &HistoryQuery) -> (i64, i64, i64) {
    (
        query.since.unwrap_or(i64::MIN),
        query.until.unwrap_or(i64::MAX),
        query
            .up_to_seq
            .map_or(i64::MAX, |s| s.min(i64::MAX as u64) as i64),
    )
}

fn limit(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

fn stored(sensor_id: &str, row: &Row) -> StoredReading {
    StoredReading {
        seq: row.get::<_, i64>(1) as u64,
        reading: Reading {
            sensor_id: sensor_id.to_owned(),
            temperature: row.get(2),
            timestamp: row.get(0),
        },
    }
}

pub(crate) async fn history_page(
    client: &Client,
    query: &HistoryQuery,
    cursor: HistoryCursor,
    page_size: usize,
) -> Result<Vec<StoredReading>, tokio_postgres::Error> {
    let (since, until, up_to) = bounds(query);
    // The page starts after the cursor and at `since`, whichever is later.
    let (ts, seq) = match cursor.after() {
        Some((ts, seq)) if ts >= since => (ts, seq as i64),
        _ => (since, 0),
    };
    let rows = client
        .query(
            HISTORY_PAGE,
            &[
                &query.sensor_id,
                &ts,
                &seq,
                &until,
                &up_to,
                &limit(page_size),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| stored(&query.sensor_id, r)).collect())
}

pub(crate) async fn history_last(
    client: &Client,
    query: &HistoryQuery,
    n: u64,
) -> Result<HistoryCursor, tokio_postgres::Error> {
    if n == 0 {
        // As the embedded engine: no "last 0", the whole range.
        return Ok(HistoryCursor::default());
    }
    let (since, until, up_to) = bounds(query);
    let offset = (n - 1).min(i64::MAX as u64) as i64;
    let row = client
        .query_opt(
            HISTORY_LAST,
            &[&query.sensor_id, &since, &until, &up_to, &offset],
        )
        .await?;
    Ok(row.map_or_else(HistoryCursor::default, |r| {
        HistoryCursor::at(r.get(0), r.get::<_, i64>(1) as u64)
    }))
}

pub(crate) async fn tail_page(
    client: &Client,
    sensor_id: &str,
    after_seq: u64,
    page_size: usize,
) -> Result<Vec<StoredReading>, tokio_postgres::Error> {
    let after = after_seq.min(i64::MAX as u64) as i64;
    let rows = client
        .query(TAIL_PAGE, &[&sensor_id, &after, &limit(page_size)])
        .await?;
    Ok(rows.iter().map(|r| stored(sensor_id, r)).collect())
}

pub(crate) async fn stats(
    client: &Client,
    sensor_id: Option<&str>,
) -> Result<Vec<SensorStats>, tokio_postgres::Error> {
    let rows = match sensor_id {
        Some(id) => client.query(STATS_ONE, &[&id]).await?,
        None => client.query(STATS_ALL, &[]).await?,
    };
    Ok(rows.iter().map(stats_from_row).collect())
}

pub(crate) async fn stats_page(
    client: &Client,
    after: &str,
    limit_n: usize,
) -> Result<Vec<SensorStats>, tokio_postgres::Error> {
    let rows = client.query(STATS_PAGE, &[&after, &limit(limit_n)]).await?;
    Ok(rows.iter().map(stats_from_row).collect())
}

pub(crate) fn stats_from_row(r: &Row) -> SensorStats {
    SensorStats {
        sensor_id: r.get(0),
        count: r.get::<_, i64>(1) as u64,
        sum: r.get(2),
        min: r.get(3),
        max: r.get(4),
        last: r.get(5),
        last_timestamp: r.get(6),
        rolling_mean: r.get(7),
        alerts: r.get::<_, i64>(8) as u64,
    }
}
