//! The conformance suite: what every store engine must do, written once
//! against the [`Store`] trait and run unchanged against each engine.
//!
//! Why one suite: the transport relies on the promises in `store.rs`
//! whichever engine the binary picked. An engine crate runs the suite from
//! its tests with [`store_conformance!`](crate::store_conformance), giving
//! it an [`Engine`]: a factory that opens stores on storage of its own,
//! which outlives each store (a temporary directory, a database), so that
//! closing and opening again shows what is durable.
//!
//! Each case is a public async function taking the engine, so an engine may
//! also call one directly (with a tweak of its own around it).
//!
//! Invariant: a case uses only the [`Store`] trait and [`StoreSettings`];
//! nothing in it names an engine.

use std::time::Duration;

use crate::{
    HistoryCursor, HistoryQuery, Reading, SensorStats, SharedStore, StoreError, StoreSettings,
    idempotency::{Fingerprint, IdempotencyKey, KeyLimits, KeyedPart},
    store::{Readiness, StoreFuture},
};

/// Opens stores of one engine on one engine-owned storage.
pub trait Engine: Send + Sync {
    /// Opens a store on this engine's storage: what earlier stores opened
    /// here and closed made durable is there.
    fn open(&self, settings: StoreSettings) -> StoreFuture<'_, SharedStore>;
}

/// Runs every case as a test of its own: `store_conformance!(fresh_engine())`,
/// where `fresh_engine()` is a future of a new [`Engine`] (one per test).
#[macro_export]
macro_rules! store_conformance {
    ($engine:expr) => {
        $crate::store_conformance!(@cases $engine;
            readings_survive_close_and_reopen_in_time_order,
            time_range_and_snapshot_and_unknown_sensor,
            the_tail_follows_commit_order_and_the_watch_announces_it,
            the_tail_keeps_commit_order_when_clocks_go_back,
            concurrent_writers_share_commits_and_lose_nothing,
            statistics_and_alerts_are_applied_once_in_commit_order,
            a_query_after_a_receipt_sees_the_write,
            writes_after_close_are_refused,
            history_last_leaves_the_last_n_readings_of_the_range,
            stats_pages_cover_every_sensor_once_in_id_order,
            a_retried_keyed_write_is_stored_once_also_after_reopening,
            a_retried_stream_stores_only_from_where_the_first_attempt_stopped,
            a_key_reused_for_other_readings_is_refused_and_stores_nothing,
            keys_beyond_the_limit_are_forgotten_oldest_first_and_stay_forgotten,
            retention_deletes_only_old_readings,
            an_open_store_is_ready
        );
    };
    (@cases $engine:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let engine = $engine.await;
                $crate::conformance::$case(&engine).await;
            }
        )*
    };
}

fn reading(sensor: &str, temperature: f64, timestamp: i64) -> Reading {
    Reading {
        sensor_id: sensor.into(),
        temperature,
        timestamp,
    }
}

async fn open(engine: &dyn Engine) -> SharedStore {
    open_with(engine, StoreSettings::default()).await
}

async fn open_with(engine: &dyn Engine, settings: StoreSettings) -> SharedStore {
    engine.open(settings).await.expect("open the store")
}

async fn reopen(engine: &dyn Engine, store: SharedStore) -> SharedStore {
    store.close().await.expect("close the store");
    drop(store);
    open(engine).await
}

/// (timestamp, temperature, seq) of every reading of `query` after `cursor`,
/// read in pages of `page`.
async fn history_from(
    store: &SharedStore,
    query: &HistoryQuery,
    mut cursor: HistoryCursor,
    page: usize,
) -> Vec<(i64, f64, u64)> {
    let mut out = Vec::new();
    loop {
        let rows = store.history_page(query, cursor, page).await.unwrap();
        assert!(rows.len() <= page, "a page of {page} held {}", rows.len());
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

async fn history(store: &SharedStore, query: &HistoryQuery, page: usize) -> Vec<(i64, f64, u64)> {
    history_from(store, query, HistoryCursor::default(), page).await
}

/// Readings stored, history in (timestamp, seq) order with ties, and
/// sequence numbers that go on after a reopen.
pub async fn readings_survive_close_and_reopen_in_time_order(engine: &impl Engine) {
    let store = open(engine).await;
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
    let store = reopen(engine, store).await;
    let got = history(&store, &HistoryQuery::sensor("a"), 2).await;
    assert_eq!(got, vec![(10, 1.0, 2), (10, 2.0, 4), (30, 3.0, 1)]);
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
    store.close().await.unwrap();
}

/// `since` is inclusive, `until` exclusive, `up_to_seq` a snapshot; an
/// unknown sensor has an empty history and no statistics.
pub async fn time_range_and_snapshot_and_unknown_sensor(engine: &impl Engine) {
    let store = open(engine).await;
    let readings: Vec<_> = (1..=100).map(|i| reading("s", i as f64, i)).collect();
    store.append(readings).await.unwrap();
    let ranged = HistoryQuery {
        since: Some(10),
        until: Some(20),
        ..HistoryQuery::sensor("s")
    };
    let got: Vec<i64> = history(&store, &ranged, 3)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(got, (10..20).collect::<Vec<_>>());
    let snapshot = HistoryQuery {
        up_to_seq: Some(5),
        ..HistoryQuery::sensor("s")
    };
    assert_eq!(history(&store, &snapshot, 100).await.len(), 5);
    assert!(
        history(&store, &HistoryQuery::sensor("nobody"), 10)
            .await
            .is_empty()
    );
    assert!(store.stats(Some("nobody")).await.unwrap().is_empty());
    store.close().await.unwrap();
}

/// The tail is in commit order, not time order; the watch announces what
/// queries see.
pub async fn the_tail_follows_commit_order_and_the_watch_announces_it(engine: &impl Engine) {
    let store = open(engine).await;
    let mut committed = store.committed_seq();
    assert_eq!(*committed.borrow_and_update(), 0);
    store
        .append(vec![reading("s", 1.0, 50), reading("x", 0.0, 1)])
        .await
        .unwrap();
    store.append(vec![reading("s", 2.0, 10)]).await.unwrap();
    let visible = tokio::time::timeout(Duration::from_secs(5), committed.wait_for(|seq| *seq >= 3))
        .await
        .expect("announced within 5 s")
        .map(|seq| *seq)
        .unwrap();
    assert_eq!(visible, 3);
    let tail = store.tail_page("s", 1, 10).await.unwrap();
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    let tail = store.tail_page("s", 0, 10).await.unwrap();
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(store.tail_page("s", 0, 1).await.unwrap().len(), 1);
    assert_eq!(store.caught_up_seq().await.unwrap(), 3);
    store.close().await.unwrap();
}

/// The readings of `sensor` after `after`, read through the tail in pages
/// of `page`: (seq, timestamp, temperature).
async fn tail_from(
    store: &SharedStore,
    sensor: &str,
    after: u64,
    page: usize,
) -> Vec<(u64, i64, f64)> {
    let (mut out, mut after) = (Vec::new(), after);
    loop {
        let rows = store.tail_page(sensor, after, page).await.unwrap();
        assert!(rows.len() <= page, "a page of {page} held {}", rows.len());
        let Some(last) = rows.last() else {
            return out;
        };
        after = last.seq;
        out.extend(
            rows.iter()
                .map(|r| (r.seq, r.reading.timestamp, r.reading.temperature)),
        );
    }
}

/// Readings `from..to` of sensor `s`, whose clock (`ts`) repeats seconds,
/// goes back 5 s every 11th reading and runs an hour behind for readings
/// 700..900, with every 4th followed by one of `x`; appended 37 at a time.
/// Returns `s`'s (seq, timestamp, temperature).
async fn append_with_clock_faults(
    store: &SharedStore,
    from: i64,
    to: i64,
    ts: &mut i64,
) -> Vec<(u64, i64, f64)> {
    let mut readings = Vec::new();
    for i in from..to {
        *ts += i64::from(i % 3 == 0);
        let at = match i {
            _ if i % 11 == 0 => *ts - 5,
            _ if (700..900).contains(&i) => *ts - 3_600 + (i - 700),
            _ => *ts,
        };
        readings.push(reading("s", 20.0 + (i % 50) as f64 / 10.0, at));
        if i % 4 == 0 {
            readings.push(reading("x", 1.0, *ts));
        }
    }
    let mut of_s = Vec::new();
    for chunk in readings.chunks(37) {
        let receipt = store.append(chunk.to_vec()).await.unwrap();
        for (seq, r) in (receipt.first_seq..).zip(chunk) {
            if r.sensor_id == "s" {
                of_s.push((seq, r.timestamp, r.temperature));
            }
        }
    }
    store.caught_up_seq().await.unwrap();
    of_s
}

/// `s`'s tail from points before, inside and after the clock's faults, in
/// pages of 7, 100 and 1,000: every reading of `expected` after the point.
async fn check_tails(store: &SharedStore, expected: &[(u64, i64, f64)]) {
    let last = expected.last().unwrap().0;
    let points = [0, 1, 2, 250, 257, 300, 701, 850, 1_000, last - 1, last];
    for (n, after) in points.into_iter().enumerate() {
        let want: Vec<_> = expected.iter().copied().filter(|r| r.0 > after).collect();
        let page = [7, 100, 1_000][n % 3];
        let got = tail_from(store, "s", after, page).await;
        assert_eq!(got, want, "after {after}, pages of {page}");
    }
}

/// A sensor whose timestamps repeat, go back a little, and jump back an
/// hour and run on from there (a clock set back), among another sensor's
/// readings: from any point, in any page size and after a reopen, its tail
/// is every later reading once, in commit order. (An engine may keep the
/// readings that arrive in time order apart from the others: the embedded
/// one does, `late` in its `schema.rs`.)
pub async fn the_tail_keeps_commit_order_when_clocks_go_back(engine: &impl Engine) {
    let mut store = open(engine).await;
    let mut ts = 1_700_000_000;
    let mut expected = append_with_clock_faults(&store, 0, 1_200, &mut ts).await;
    check_tails(&store, &expected).await;
    store = reopen(engine, store).await;
    check_tails(&store, &expected).await;
    // After the reopen, on from a clock that went back again.
    ts -= 100;
    expected.extend(append_with_clock_faults(&store, 1_200, 1_500, &mut ts).await);
    check_tails(&store, &expected).await;
    assert_eq!(tail_from(&store, "s", 0, 1).await, expected);
    store.close().await.unwrap();
}

/// Eight concurrent writers: every reading stored once, numbers unique and
/// gap-free, all there after a reopen.
pub async fn concurrent_writers_share_commits_and_lose_nothing(engine: &impl Engine) {
    let store = open(engine).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let receipt = store
                    .append(vec![reading(&format!("w{w}"), 20.0, 1 + i)])
                    .await
                    .unwrap();
                seqs.push(receipt.first_seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
    let store = reopen(engine, store).await;
    for w in 0..8 {
        let query = HistoryQuery::sensor(format!("w{w}"));
        assert_eq!(history(&store, &query, 1000).await.len(), 50);
    }
    store.close().await.unwrap();
}

/// Statistics and alerts equal the analysis applied to every reading once,
/// in sequence order, across writes, sensors and a reopen.
pub async fn statistics_and_alerts_are_applied_once_in_commit_order(engine: &impl Engine) {
    let settings = StoreSettings::default();
    let rules = settings.alert_rules;
    let store = open_with(engine, settings).await;
    let sensors = ["hall", "roof"];
    let temperatures = [20.0, 21.5, 99.0, 20.5, -40.0, 35.0, 19.0, 19.5, 60.0, 20.0];
    let mut written = Vec::new();
    for (i, t) in temperatures.iter().enumerate() {
        written.push(reading(sensors[i % 2], *t, 100 - i as i64));
    }
    let mut alerts = Vec::new();
    for group in written.chunks(3) {
        alerts.extend(store.append(group.to_vec()).await.unwrap().alerts);
    }
    let store = reopen(engine, store).await;
    let mut expected_alerts = Vec::new();
    for sensor in sensors {
        let mut expected = SensorStats::new(sensor.to_owned());
        for r in written.iter().filter(|r| r.sensor_id == sensor) {
            expected_alerts.extend(expected.observe(r, &rules));
        }
        assert_eq!(store.stats(Some(sensor)).await.unwrap(), vec![expected]);
    }
    let order = |a: &crate::Alert| (a.timestamp, a.sensor_id.clone());
    alerts.sort_by_key(order);
    expected_alerts.sort_by_key(order);
    assert!(!expected_alerts.is_empty(), "the readings raise alerts");
    assert_eq!(alerts, expected_alerts);
    store.close().await.unwrap();
}

/// Read your writes: right after a receipt, the statistics count it.
pub async fn a_query_after_a_receipt_sees_the_write(engine: &impl Engine) {
    let store = open(engine).await;
    for i in 0..100 {
        store.append(vec![reading("a", 20.0, i)]).await.unwrap();
        let stats = store.stats(Some("a")).await.unwrap();
        assert_eq!(stats[0].count, i as u64 + 1);
        let seen = store.caught_up_seq().await.unwrap();
        assert!(seen > i as u64, "caught up to {seen} after write {i}");
    }
    store.close().await.unwrap();
}

/// Once closed, writes fail with `Closed`.
pub async fn writes_after_close_are_refused(engine: &impl Engine) {
    let store = open(engine).await;
    store.close().await.unwrap();
    assert!(matches!(
        store.append(vec![reading("s", 1.0, 1)]).await,
        Err(StoreError::Closed)
    ));
}

/// `tail -n N`: the cursor from `history_last` leaves exactly the last N
/// readings of the range, in history order, ties on the timestamp included.
pub async fn history_last_leaves_the_last_n_readings_of_the_range(engine: &impl Engine) {
    let store = open(engine).await;
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
    let full = history(&store, &HistoryQuery::sensor("a"), 100).await;
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
            last(HistoryQuery::sensor("a"), n).await,
            full[full.len() - keep..],
            "n = {n}"
        );
    }
    let ranged = HistoryQuery {
        since: Some(10),
        until: Some(40),
        ..HistoryQuery::sensor("a")
    };
    assert_eq!(
        last(ranged.clone(), 2).await,
        vec![(20, 5.0, 6), (30, 3.0, 1)]
    );
    assert_eq!(last(ranged, 9).await, full[..4]);
    let snapshot = HistoryQuery {
        up_to_seq: Some(4),
        ..HistoryQuery::sensor("a")
    };
    assert_eq!(last(snapshot, 2).await, vec![(10, 2.0, 4), (30, 3.0, 1)]);
    assert_eq!(last(HistoryQuery::sensor("nobody"), 3).await, vec![]);
    store.close().await.unwrap();
}

/// Stats pages in byte order of the ids (non-ASCII included), each sensor once.
pub async fn stats_pages_cover_every_sensor_once_in_id_order(engine: &impl Engine) {
    let store = open(engine).await;
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
    assert_eq!(store.stats(None).await.unwrap().len(), ids.len());
    store.close().await.unwrap();
}

fn keyed_reading(i: i64) -> Reading {
    reading("keyed", 20.0 + (i % 10) as f64, 1_700_000_000 + i)
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

/// Sends `readings` as one keyed call would: parts of `part_len` from the
/// start. Returns (stored now, already stored) summed over the parts.
async fn send_keyed(
    store: &SharedStore,
    k: &str,
    readings: &[Reading],
    part_len: usize,
) -> Result<(usize, usize), StoreError> {
    let mut before = Fingerprint::EMPTY;
    let (mut stored, mut already) = (0, 0);
    for (i, chunk) in readings.chunks(part_len).enumerate() {
        let part = KeyedPart::new(key(k), (i * part_len) as u64, before, chunk);
        before = part.after;
        let receipt = store.append_keyed(chunk.to_vec(), part).await?;
        stored += receipt.count;
        already += receipt.already_stored;
    }
    Ok((stored, already))
}

async fn keyed_count(store: &SharedStore) -> u64 {
    store
        .stats(Some("keyed"))
        .await
        .unwrap()
        .first()
        .map_or(0, |s| s.count)
}

/// A retried keyed unary write stores nothing more, also after a reopen;
/// without a key, or with another, it is a new write.
pub async fn a_retried_keyed_write_is_stored_once_also_after_reopening(engine: &impl Engine) {
    let store = open(engine).await;
    let one = [keyed_reading(1)];
    assert_eq!(
        send_keyed(&store, "unary-1", &one, 1).await.unwrap(),
        (1, 0)
    );
    assert_eq!(
        send_keyed(&store, "unary-1", &one, 1).await.unwrap(),
        (0, 1)
    );
    store.append(one.to_vec()).await.unwrap();
    assert_eq!(
        send_keyed(&store, "unary-2", &one, 1).await.unwrap(),
        (1, 0)
    );
    assert_eq!(keyed_count(&store).await, 3);
    let store = reopen(engine, store).await;
    assert_eq!(
        send_keyed(&store, "unary-1", &one, 1).await.unwrap(),
        (0, 1)
    );
    assert_eq!(
        send_keyed(&store, "unary-2", &one, 1).await.unwrap(),
        (0, 1)
    );
    assert_eq!(keyed_count(&store).await, 3);
    store.close().await.unwrap();
}

/// A stream's retry, in other parts, stores only what the first attempt did not.
pub async fn a_retried_stream_stores_only_from_where_the_first_attempt_stopped(
    engine: &impl Engine,
) {
    let store = open(engine).await;
    let readings: Vec<Reading> = (0..10).map(keyed_reading).collect();
    assert_eq!(
        send_keyed(&store, "stream", &readings[..6], 3)
            .await
            .unwrap(),
        (6, 0)
    );
    assert_eq!(
        send_keyed(&store, "stream", &readings, 4).await.unwrap(),
        (4, 6)
    );
    assert_eq!(keyed_count(&store).await, 10);
    assert_eq!(
        send_keyed(&store, "stream", &readings, 10).await.unwrap(),
        (0, 10)
    );
    let stats = store.stats(Some("keyed")).await.unwrap();
    assert_eq!(stats[0].last, readings[9].temperature);
    store.close().await.unwrap();
}

/// A key that stored other readings: `KeyConflict`, and nothing stored.
pub async fn a_key_reused_for_other_readings_is_refused_and_stores_nothing(engine: &impl Engine) {
    let store = open(engine).await;
    let readings: Vec<Reading> = (0..4).map(keyed_reading).collect();
    let other: Vec<Reading> = (100..104).map(keyed_reading).collect();
    send_keyed(&store, "k", &readings, 4).await.unwrap();
    let err = send_keyed(&store, "k", &other, 4).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::KeyConflict(why) if why.contains("already stored 4 readings")),
        "{err}"
    );
    assert_eq!(keyed_count(&store).await, 4);
    store.close().await.unwrap();
}

/// Past `max_keys`, the oldest key is forgotten, also after a reopen.
pub async fn keys_beyond_the_limit_are_forgotten_oldest_first_and_stay_forgotten(
    engine: &impl Engine,
) {
    let limited = StoreSettings {
        idempotency: KeyLimits {
            max_keys: 2,
            window: Duration::from_secs(3600),
        },
        ..StoreSettings::default()
    };
    let store = open_with(engine, limited.clone()).await;
    let one = [keyed_reading(1)];
    for k in ["a", "b", "c"] {
        send_keyed(&store, k, &one, 1).await.unwrap();
    }
    assert_eq!(send_keyed(&store, "c", &one, 1).await.unwrap(), (0, 1));
    store.close().await.unwrap();
    drop(store);
    let store = open_with(engine, limited).await;
    assert_eq!(send_keyed(&store, "b", &one, 1).await.unwrap(), (0, 1));
    assert_eq!(send_keyed(&store, "a", &one, 1).await.unwrap(), (1, 0));
    store.close().await.unwrap();
}

/// With a retention period, readings older than it go (within a few
/// seconds of opening); younger ones stay.
pub async fn retention_deletes_only_old_readings(engine: &impl Engine) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |sensor: &str, age_s: i64| reading(sensor, 20.0, now - age_s);
    let store = open(engine).await;
    store
        .append(vec![
            at("a", 7_200),
            at("a", 60),
            at("b", 5_000),
            at("b", 10),
        ])
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let retained = StoreSettings {
        retention: Some(Duration::from_secs(3_600)),
        ..StoreSettings::default()
    };
    let store = open_with(engine, retained).await;
    for (sensor, left) in [("a", 60), ("b", 10)] {
        let query = HistoryQuery::sensor(sensor);
        let mut ages = Vec::new();
        for _ in 0..250 {
            ages = history(&store, &query, 10)
                .await
                .iter()
                .map(|r| now - r.0)
                .collect();
            if ages.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ages, vec![left], "{sensor}");
    }
    store.close().await.unwrap();
}

/// A store that opened serves.
pub async fn an_open_store_is_ready(engine: &impl Engine) {
    let store = open(engine).await;
    assert_eq!(*store.readiness().borrow(), Readiness::Ready);
    store.close().await.unwrap();
}
