//! Stores written by earlier versions open: a crashed store of journal
//! format 1 (`tests/fixtures/store-v1-crashed`, written by that version's own
//! code; its README says how) replays what its journal holds beyond its
//! tables, takes new writes, and reopens.

use std::path::{Path, PathBuf};

use sensorhub_core::{HistoryCursor, HistoryQuery, Reading, Store, StoreError};
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};

const SENSORS: [&str; 3] = ["fixture-a", "fixture-b", "fixture-ü"];
/// Readings 1..=21 are in the fixture's journal, 1..=12 in its tables.
const IN_JOURNAL: i64 = 21;
/// The last group (two readings), which a cut-short variant loses.
const LAST_GROUP: i64 = 2;

fn fixture_reading(i: i64) -> Reading {
    Reading {
        sensor_id: SENSORS[i as usize % 3].to_owned(),
        temperature: 18.5 + (i % 9) as f64 * 0.75,
        timestamp: 1_700_000_000 + i * 10,
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1-crashed")
}

/// A writable copy of the fixture.
fn copy_of_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn v1_journal_file(dir: &Path) -> PathBuf {
    dir.join("journal/00000000000000000001.journal")
}

fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
    EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
        dir.to_owned(),
    )))
}

/// Every stored reading of every fixture sensor, as (seq, reading), in seq order.
async fn stored(store: &EmbeddedStore) -> Vec<(u64, Reading)> {
    let mut all = Vec::new();
    for sensor in SENSORS {
        let query = HistoryQuery {
            sensor_id: sensor.into(),
            since: None,
            until: None,
            up_to_seq: None,
        };
        let mut cursor = HistoryCursor::default();
        loop {
            let page = store.history_page(&query, cursor, 7).await.unwrap();
            if page.is_empty() {
                break;
            }
            cursor.advance(&page);
            all.extend(page.into_iter().map(|r| (r.seq, r.reading)));
        }
    }
    all.sort_by_key(|(seq, _)| *seq);
    all
}

fn expected(through: i64) -> Vec<(u64, Reading)> {
    (1..=through)
        .map(|i| (i as u64, fixture_reading(i)))
        .collect()
}

async fn assert_holds(store: &EmbeddedStore, through: i64) {
    assert_eq!(stored(store).await, expected(through));
    // The live tail too, through the upgrade to schema 4 (`late` readings).
    for (k, sensor) in SENSORS.iter().enumerate() {
        let tail: Vec<u64> = store
            .tail_page(sensor, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let mine: Vec<u64> = (1..=through as u64)
            .filter(|i| *i as usize % 3 == k)
            .collect();
        assert_eq!(tail, mine, "{sensor}");
    }
    let stats = store.stats(None).await.unwrap();
    for s in &stats {
        let mine: Vec<Reading> = (1..=through)
            .map(fixture_reading)
            .filter(|r| r.sensor_id == s.sensor_id)
            .collect();
        assert_eq!(s.count, mine.len() as u64, "{}", s.sensor_id);
        assert_eq!(s.last, mine.last().unwrap().temperature, "{}", s.sensor_id);
    }
    assert_eq!(stats.len(), 3);
}

#[tokio::test]
async fn a_crashed_format_1_store_replays_its_journal_and_takes_new_writes() {
    let dir = copy_of_fixture();
    let store = open(dir.path()).unwrap();
    // 13..=21 came from the old journal, 1..=12 from the tables.
    assert_holds(&store, IN_JOURNAL).await;
    let receipt = store
        .append(vec![fixture_reading(IN_JOURNAL + 1)])
        .await
        .unwrap();
    assert_eq!(receipt.first_seq, IN_JOURNAL as u64 + 1);
    // The old file is gone once replayed; new writes go to a format 2 file.
    let files: Vec<String> = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["00000000000000000022.v2.journal"]);
    store.close().await.unwrap();
    drop(store);

    // The store reopens with the new write, and again after that.
    let store = open(dir.path()).unwrap();
    assert_holds(&store, IN_JOURNAL + 1).await;
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_holds(&store, IN_JOURNAL + 1).await;
}

#[tokio::test]
async fn a_format_1_journal_cut_short_loses_only_its_last_write() {
    let dir = copy_of_fixture();
    let path = v1_journal_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let frames = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    // A crash inside the last frame's write: cut 5 bytes short of its end.
    std::fs::write(&path, &bytes[..frames - 5]).unwrap();
    let store = open(dir.path()).unwrap();
    assert_holds(&store, IN_JOURNAL - LAST_GROUP).await;
    let receipt = store
        .append(vec![fixture_reading(IN_JOURNAL - 1)])
        .await
        .unwrap();
    assert_eq!(receipt.first_seq, (IN_JOURNAL - LAST_GROUP + 1) as u64);
}

#[tokio::test]
async fn a_damaged_format_1_frame_is_refused_and_left_as_it_was() {
    let dir = copy_of_fixture();
    let path = v1_journal_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // A reading of the second frame (the first is 8 + 0x95 bytes long).
    bytes[8 + 0x95 + 8 + 20] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let err = open(dir.path()).map(drop).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::Corrupt { .. })
            && message.contains("00000000000000000001.journal")
            && message.contains("checksum"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}
