//! A store of schema 3 (every reading in the index `readings_by_arrival`)
//! opens as schema 4 (`late`, `readings_late`, `tail_marks`; `schema.rs`):
//! its readings keep their history and live tail, and the readings written
//! after the upgrade join both, also after a reopen.

use std::path::Path;

use rusqlite::Connection;
use sensorhub_core::{HistoryCursor, HistoryQuery, Reading, Store};
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
        dir.to_owned(),
    )))
    .expect("open store")
}

/// Reading `i` of sensor `a` or `b`; `a`'s clock goes back every 5th reading.
fn reading(i: i64) -> Reading {
    let sensor = ["a", "b"][i as usize % 2];
    let back = if sensor == "a" && i % 5 == 0 { 40 } else { 0 };
    Reading {
        sensor_id: sensor.into(),
        temperature: 20.0 + (i % 13) as f64,
        timestamp: 1_700_000_000 + i - back,
    }
}

/// Turns a store of this build back into what schema 3 wrote: the same
/// tables and rows, without `late` and `tail_marks`, with the index of every
/// reading by (sensor, seq). (Schema 3's readings table was schema 1's; the
/// format 1 fixture, `journal_compat.rs`, is a store of that version.)
fn as_schema_3(dir: &Path) {
    let conn = Connection::open(dir.join("readings.db")).unwrap();
    conn.execute_batch(
        "DROP INDEX readings_late;
         ALTER TABLE readings DROP COLUMN late;
         DROP TABLE tail_marks;
         CREATE INDEX readings_by_arrival ON readings (sensor, seq);
         PRAGMA user_version = 3;",
    )
    .unwrap();
}

fn indexes(dir: &Path) -> Vec<String> {
    let conn = Connection::open(dir.join("readings.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'readings' AND sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn user_version(dir: &Path) -> i64 {
    let conn = Connection::open(dir.join("readings.db")).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

async fn tail(store: &EmbeddedStore, sensor: &str, mut after: u64, page: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let rows = store.tail_page(sensor, after, page).await.unwrap();
        let Some(last) = rows.last() else {
            return seqs;
        };
        after = last.seq;
        seqs.extend(rows.iter().map(|r| r.seq));
    }
}

async fn history(store: &EmbeddedStore, sensor: &str) -> Vec<(i64, u64)> {
    let query = HistoryQuery {
        sensor_id: sensor.into(),
        since: None,
        until: None,
        up_to_seq: None,
    };
    let (mut cursor, mut all) = (HistoryCursor::default(), Vec::new());
    loop {
        let page = store.history_page(&query, cursor, 100).await.unwrap();
        if page.is_empty() {
            return all;
        }
        cursor.advance(&page);
        all.extend(page.iter().map(|r| (r.reading.timestamp, r.seq)));
    }
}

/// `sensor`'s readings among 1..=through as (timestamp, seq), in time order.
fn expected_history(sensor: &str, through: i64) -> Vec<(i64, u64)> {
    let mut all: Vec<(i64, u64)> = (1..=through)
        .map(|i| (i, reading(i)))
        .filter(|(_, r)| r.sensor_id == sensor)
        .map(|(i, r)| (r.timestamp, i as u64))
        .collect();
    all.sort_unstable();
    all
}

fn expected_tail(sensor: &str, after: u64, through: i64) -> Vec<u64> {
    (after as i64 + 1..=through)
        .filter(|i| reading(*i).sensor_id == sensor)
        .map(|i| i as u64)
        .collect()
}

/// Readings `range`, `group` per write.
async fn append(store: &EmbeddedStore, range: std::ops::RangeInclusive<i64>, group: usize) {
    for group in range.collect::<Vec<i64>>().chunks(group) {
        let readings = group.iter().copied().map(reading).collect();
        store.append(readings).await.unwrap();
    }
}

#[tokio::test]
async fn a_schema_3_store_opens_as_schema_4_and_keeps_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, 1..=600, 50).await;
    store.close().await.unwrap();
    drop(store);
    as_schema_3(dir.path());
    assert_eq!(indexes(dir.path()), ["readings_by_arrival"]);

    let store = open(dir.path());
    assert_eq!(user_version(dir.path()), 4);
    assert_eq!(indexes(dir.path()), ["readings_late"]);
    for after in [0, 1, 299, 598, 600] {
        for sensor in ["a", "b"] {
            assert_eq!(
                tail(&store, sensor, after, 64).await,
                expected_tail(sensor, after, 600),
                "{sensor} after {after}"
            );
        }
    }
    // Written after the upgrade: in and out of time order, before and after
    // the newest timestamp of the old readings.
    append(&store, 601..=1_400, 70).await;
    store.caught_up_seq().await.unwrap();
    for after in [0, 500, 600, 601, 1_000, 1_399] {
        assert_eq!(
            tail(&store, "a", after, 100).await,
            expected_tail("a", after, 1_400)
        );
    }
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path());
    for sensor in ["a", "b"] {
        assert_eq!(
            tail(&store, sensor, 0, 333).await,
            expected_tail(sensor, 0, 1_400)
        );
        assert_eq!(
            history(&store, sensor).await,
            expected_history(sensor, 1_400)
        );
    }
    assert_eq!(store.stats(Some("a")).await.unwrap()[0].count, 700);
    store.close().await.unwrap();
}
