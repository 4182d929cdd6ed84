//! The embedded engine's own behaviour, beyond the conformance suite
//! (`tests/conformance.rs`): the process lock (also of a dropped store),
//! damaged files, `--memory`.

use sensorhub_core::{HistoryCursor, HistoryQuery, Reading, Store, StoreError};
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};

fn reading(sensor: &str, temperature: f64, timestamp: i64) -> Reading {
    Reading {
        sensor_id: sensor.into(),
        temperature,
        timestamp,
    }
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
        dir.to_owned(),
    )))
    .expect("open store")
}

/// `--memory`: the same engine with nothing on disk, and nothing left after close.
#[tokio::test]
async fn a_memory_store_serves_and_forgets() {
    let store = EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Memory)).unwrap();
    let receipt = store
        .append(vec![reading("s", 1.0, 2), reading("s", 2.0, 1)])
        .await
        .unwrap();
    assert_eq!((receipt.first_seq, receipt.count), (1, 2));
    let page = store
        .history_page(&HistoryQuery::sensor("s"), HistoryCursor::default(), 10)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(store.stats(Some("s")).await.unwrap()[0].count, 2);
    store.close().await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Memory)).unwrap();
    assert!(store.stats(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
        dir.path().to_owned(),
    )))
    .unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("--data"), "{err}");
}

/// A store dropped without `close` stops in the background; until its
/// threads are done with the files, the directory is still its own. Here
/// another program's read transaction holds the dropped store's final
/// checkpoint, so its indexer is certainly still running when the second
/// open comes.
#[tokio::test]
async fn a_dropped_store_keeps_its_directory_until_its_threads_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append((1..=100).map(|i| reading("a", 20.0, i)).collect())
        .await
        .unwrap();
    store.caught_up_seq().await.unwrap();
    let reader = rusqlite::Connection::open_with_flags(
        dir.path().join("readings.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 100);
    drop(store);

    let err = EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
        dir.path().to_owned(),
    )))
    .map(drop)
    .unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");

    // Once the reader lets the checkpoint finish, the threads end and the
    // directory opens, holding what the dropped store was given.
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let store = loop {
        match EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
            dir.path().to_owned(),
        ))) {
            Ok(store) => break store,
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let page = store
        .history_page(&HistoryQuery::sensor("a"), HistoryCursor::default(), 1000)
        .await
        .unwrap();
    assert_eq!(page.len(), 100);
    let receipt = store.append(vec![reading("a", 20.0, 101)]).await.unwrap();
    assert_eq!(receipt.first_seq, 101);
}

#[tokio::test]
async fn a_damaged_file_is_reported_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(dir.path().join("readings.db"), &garbage).unwrap();
    let err = EmbeddedStore::open(EmbeddedConfig::new(StoreLocation::Directory(
        dir.path().to_owned(),
    )))
    .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("readings.db")).unwrap(),
        garbage
    );
}

/// The indexer inserts a transaction's rows sorted by key, not in the
/// order they were acknowledged. Readings of many sensors, interleaved
/// within each write and across writes, some of them late (older than the
/// sensor's last), must read back per sensor in `(timestamp, seq)` order,
/// each once, with statistics that match them, before and after a reopen
/// (which finds every reading in the tables, not in a replay).
#[tokio::test]
async fn interleaved_sensors_are_stored_each_in_key_order() {
    fn sensor_name(s: usize) -> String {
        format!("sensor-{s:03}")
    }
    const SENSORS: usize = 300;
    const ROUNDS: i64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Per sensor: (timestamp, seq, temperature) of every reading written.
    let mut expected: Vec<Vec<(i64, u64, f64)>> = vec![Vec::new(); SENSORS];
    for round in 0..ROUNDS {
        // Odd rounds go through the sensors backwards, so that neither the
        // order of the writes nor of the readings in one follows the key.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..SENSORS).collect()
        } else {
            (0..SENSORS).rev().collect()
        };
        let readings: Vec<Reading> = order
            .iter()
            .map(|&s| {
                // Round 2 is late for every third sensor: older than round 1.
                let ts = if round == 2 && s % 3 == 0 {
                    50 + s as i64 % 7
                } else {
                    1_000 * round + (s as i64 * 37) % 101
                };
                reading(&sensor_name(s), 10.0 + s as f64 / 10.0 + round as f64, ts)
            })
            .collect();
        let receipt = store.append(readings.clone()).await.unwrap();
        assert_eq!(receipt.count, SENSORS);
        for (i, (&s, r)) in order.iter().zip(&readings).enumerate() {
            expected[s].push((r.timestamp, receipt.first_seq + i as u64, r.temperature));
        }
    }
    for per_sensor in &mut expected {
        per_sensor.sort_by_key(|&(ts, seq, _)| (ts, seq));
    }

    async fn check(store: &EmbeddedStore, expected: &[Vec<(i64, u64, f64)>], when: &str) {
        for (s, want) in expected.iter().enumerate() {
            let sensor = sensor_name(s);
            let page = store
                .history_page(
                    &HistoryQuery::sensor(&sensor),
                    HistoryCursor::default(),
                    100,
                )
                .await
                .unwrap();
            let got: Vec<(i64, u64, f64)> = page
                .iter()
                .map(|r| (r.reading.timestamp, r.seq, r.reading.temperature))
                .collect();
            assert_eq!(&got, want, "{sensor}'s history {when}");
            assert!(page.iter().all(|r| r.reading.sensor_id == sensor));
            let stats = &store.stats(Some(&sensor)).await.unwrap()[0];
            let temperatures = want.iter().map(|&(_, _, t)| t);
            assert_eq!(stats.count, want.len() as u64, "{sensor} {when}");
            assert_eq!(
                stats.min,
                temperatures.clone().fold(f64::INFINITY, f64::min)
            );
            assert_eq!(stats.max, temperatures.fold(f64::NEG_INFINITY, f64::max));
        }
    }
    check(&store, &expected, "before the reopen").await;
    let before = store.stats(None).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path());
    check(&store, &expected, "after the reopen").await;
    assert_eq!(store.stats(None).await.unwrap(), before);
    let receipt = store
        .append(vec![reading("sensor-000", 1.0, 9_999)])
        .await
        .unwrap();
    assert_eq!(receipt.first_seq, (SENSORS as u64) * ROUNDS as u64 + 1);
}
