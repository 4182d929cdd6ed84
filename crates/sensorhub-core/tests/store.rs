//! The store on its own: durability across reopen, paging, the live tail,
//! statistics, the process lock and damaged files.

use std::time::Duration;

use sensorhub_core::{
    HistoryQuery, Reading, Store, StoreConfig, StoreError,
    store::{HistoryCursor, StoreLocation},
};

fn reading(sensor: &str, temperature: f64, timestamp: i64) -> Reading {
    Reading {
        sensor_id: sensor.into(),
        temperature,
        timestamp,
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig::new(StoreLocation::Directory(dir.to_owned()))).expect("open store")
}

async fn all_history(store: &Store, query: &HistoryQuery, page: usize) -> Vec<(i64, f64, u64)> {
    history_from(store, query, HistoryCursor::default(), page).await
}

async fn history_from(
    store: &Store,
    query: &HistoryQuery,
    mut cursor: HistoryCursor,
    page: usize,
) -> Vec<(i64, f64, u64)> {
    let mut out = Vec::new();
    loop {
        let rows = store.history_page(query, cursor, page).await.unwrap();
        if rows.is_empty() {
            return out;
        }
        cursor.advance(&rows);
        out.extend(
            rows.iter()
                .map(|r| (r.reading.timestamp, r.reading.temperature, r.seq)),
        );
    }
}

fn query(sensor: &str) -> HistoryQuery {
    HistoryQuery {
        sensor_id: sensor.into(),
        since: None,
        until: None,
        up_to_seq: None,
    }
}

#[tokio::test]
async fn readings_survive_close_and_reopen_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Out of time order, with ties on the timestamp.
    let receipt = store
        .append(vec![
            reading("a", 3.0, 30),
            reading("a", 1.0, 10),
            reading("b", 9.0, 5),
            reading("a", 2.0, 10),
        ])
        .await
        .unwrap();
    assert_eq!((receipt.first_seq, receipt.count), (1, 4));
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path());
    let got = all_history(&store, &query("a"), 2).await;
    assert_eq!(got, vec![(10, 1.0, 2), (10, 2.0, 4), (30, 3.0, 1)]);
    // Sequence numbers continue after a reopen.
    let receipt = store.append(vec![reading("a", 4.0, 40)]).await.unwrap();
    assert_eq!(receipt.first_seq, 5);
    let stats = store.stats(Some("a")).await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].count, stats[0].min, stats[0].max, stats[0].last),
        (4, 1.0, 4.0, 4.0)
    );
    assert!((stats[0].mean() - 2.5).abs() < 1e-12);
    assert_eq!(store.stats(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn time_range_snapshot_and_unknown_sensor() {
    let store = Store::open(StoreConfig::new(StoreLocation::Memory)).unwrap();
    let readings: Vec<_> = (1..=100).map(|i| reading("s", i as f64, i)).collect();
    store.append(readings).await.unwrap();
    let q = HistoryQuery {
        since: Some(10),
        until: Some(20),
        ..query("s")
    };
    let got: Vec<i64> = all_history(&store, &q, 3)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(got, (10..20).collect::<Vec<_>>());
    let q = HistoryQuery {
        up_to_seq: Some(5),
        ..query("s")
    };
    assert_eq!(all_history(&store, &q, 100).await.len(), 5);
    assert!(all_history(&store, &query("nobody"), 10).await.is_empty());
}

#[tokio::test]
async fn tail_follows_commit_order_and_watch_announces_what_is_visible() {
    let store = Store::open(StoreConfig::new(StoreLocation::Memory)).unwrap();
    let mut committed = store.visible_seq();
    assert_eq!(*committed.borrow_and_update(), 0);
    store
        .append(vec![reading("s", 1.0, 50), reading("x", 0.0, 1)])
        .await
        .unwrap();
    store.append(vec![reading("s", 2.0, 10)]).await.unwrap();
    // Indexing follows the acknowledgement; the watch announces it.
    let visible = tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|seq| *seq >= 3))
        .await
        .expect("indexed within 5 s")
        .map(|seq| *seq)
        .unwrap();
    assert_eq!(visible, 3);
    let tail = store.tail_page("s", 1, 10).await.unwrap();
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .append(vec![reading(&format!("w{w}"), 20.0, 1 + i)])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    for w in 0..8 {
        assert_eq!(
            all_history(&store, &query(&format!("w{w}")), 1000)
                .await
                .len(),
            50
        );
    }
}

#[tokio::test]
async fn alerts_come_back_with_the_receipt() {
    let store = Store::open(StoreConfig::new(StoreLocation::Memory)).unwrap();
    let receipt = store
        .append(vec![reading("s", 20.0, 1), reading("s", 99.0, 2)])
        .await
        .unwrap();
    assert_eq!(receipt.alerts.len(), 1);
    assert_eq!(receipt.alerts[0].rule.as_str(), "above_max");
    assert_eq!(store.stats(Some("s")).await.unwrap()[0].alerts, 1);
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = Store::open(StoreConfig::new(StoreLocation::Directory(
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

    let err = Store::open(StoreConfig::new(StoreLocation::Directory(
        dir.path().to_owned(),
    )))
    .map(drop)
    .unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");

    // Once the reader lets the checkpoint finish, the threads end and the
    // directory opens, holding what the dropped store was given.
    drop(reader);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let store = loop {
        match Store::open(StoreConfig::new(StoreLocation::Directory(
            dir.path().to_owned(),
        ))) {
            Ok(store) => break store,
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(all_history(&store, &query("a"), 64).await.len(), 100);
    let receipt = store.append(vec![reading("a", 20.0, 101)]).await.unwrap();
    assert_eq!(receipt.first_seq, 101);
}

#[tokio::test]
async fn a_damaged_file_is_reported_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(dir.path().join("readings.db"), &garbage).unwrap();
    let err = Store::open(StoreConfig::new(StoreLocation::Directory(
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

#[tokio::test]
async fn writes_after_close_are_refused() {
    let store = Store::open(StoreConfig::new(StoreLocation::Memory)).unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.append(vec![reading("s", 1.0, 1)]).await,
        Err(StoreError::Closed)
    ));
}

/// `tail -n N`: the cursor from `history_last` leaves exactly the last N
/// readings of the range, in history order, ties on the timestamp included.
#[tokio::test]
async fn history_last_leaves_the_last_n_readings_of_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(vec![
            reading("a", 3.0, 30),
            reading("a", 1.0, 10),
            reading("b", 9.0, 5),
            reading("a", 2.0, 10),
            reading("a", 4.0, 40),
            reading("a", 5.0, 20),
        ])
        .await
        .unwrap();
    let full = all_history(&store, &query("a"), 100).await;
    assert_eq!(
        full,
        vec![
            (10, 1.0, 2),
            (10, 2.0, 4),
            (20, 5.0, 6),
            (30, 3.0, 1),
            (40, 4.0, 5)
        ]
    );
    let last = |q: HistoryQuery, n: u64| {
        let store = store.clone();
        async move {
            let start = store.history_last(&q, n).await.unwrap();
            history_from(&store, &q, start, 2).await
        }
    };
    for n in 1..=7u64 {
        let keep = full.len().min(n as usize);
        assert_eq!(
            last(query("a"), n).await,
            full[full.len() - keep..],
            "n = {n}"
        );
    }
    let ranged = HistoryQuery {
        since: Some(10),
        until: Some(40),
        ..query("a")
    };
    assert_eq!(
        last(ranged.clone(), 2).await,
        vec![(20, 5.0, 6), (30, 3.0, 1)]
    );
    assert_eq!(last(ranged, 9).await, full[..4]);
    let snapshot = HistoryQuery {
        up_to_seq: Some(4),
        ..query("a")
    };
    assert_eq!(last(snapshot, 2).await, vec![(10, 2.0, 4), (30, 3.0, 1)]);
    assert_eq!(last(query("nobody"), 3).await, vec![]);
}
#[tokio::test]
async fn stats_pages_cover_every_sensor_once_in_id_order() {
    let store = Store::open(StoreConfig::new(StoreLocation::Memory)).unwrap();
    // Ids whose byte order differs from their numeric order, and non-ASCII.
    let mut ids: Vec<String> = (0..1_000).map(|i| format!("s{i}")).collect();
    ids.extend(["Küche".to_owned(), "z".to_owned(), "é".to_owned()]);
    store
        .append(ids.iter().map(|id| reading(id, 1.0, 1)).collect())
        .await
        .unwrap();
    ids.sort();
    for page_size in [1, 7, 1_000, 1_003, 5_000] {
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = store.stats_page(&after, page_size).await.unwrap();
            assert!(page.len() <= page_size);
            seen.extend(page.iter().map(|s| s.sensor_id.clone()));
            match page.last() {
                Some(last) if page.len() == page_size => after = last.sensor_id.clone(),
                _ => break,
            }
        }
        assert_eq!(seen, ids, "pages of {page_size}");
    }
    // After the last id (é: 0xC3 sorts after every ASCII byte), nothing.
    assert_eq!(ids.last().map(String::as_str), Some("é"));
    assert!(store.stats_page("é", 10).await.unwrap().is_empty());
}
