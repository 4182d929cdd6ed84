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
