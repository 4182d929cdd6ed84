//! Idempotency keys at the store: a retried keyed write stores its readings
//! once, within one run, across a restart and across a crash's replay; a
//! stream's retry resumes where the first attempt stopped; a key reused for
//! other readings is refused; keys expire by count.

use std::{path::Path, time::Duration};

use sensorhub_core::{
    Reading, Store, StoreConfig, StoreError,
    idempotency::{Fingerprint, IdempotencyKey, KeyLimits, KeyedPart},
    store::StoreLocation,
};

fn reading(i: i64) -> Reading {
    Reading {
        sensor_id: "keyed".into(),
        temperature: 20.0 + (i % 10) as f64,
        timestamp: 1_700_000_000 + i,
    }
}

fn config(dir: &Path) -> StoreConfig {
    StoreConfig::new(StoreLocation::Directory(dir.to_owned()))
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

/// Sends `readings` as one keyed call would: parts of `part_len` from the
/// start. Returns (stored now, already stored) summed over the parts.
async fn send(
    store: &Store,
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

async fn count(store: &Store) -> u64 {
    store
        .stats(Some("keyed"))
        .await
        .unwrap()
        .first()
        .map_or(0, |s| s.count)
}

#[tokio::test]
async fn a_retried_unary_write_is_stored_once_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let one = [reading(1)];
    assert_eq!(send(&store, "unary-1", &one, 1).await.unwrap(), (1, 0));
    assert_eq!(send(&store, "unary-1", &one, 1).await.unwrap(), (0, 1));
    // Without a key, or with another, it is a new write.
    store.append(one.to_vec()).await.unwrap();
    assert_eq!(send(&store, "unary-2", &one, 1).await.unwrap(), (1, 0));
    assert_eq!(count(&store).await, 3);
    store.close().await.unwrap();
    drop(store);

    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(send(&store, "unary-1", &one, 1).await.unwrap(), (0, 1));
    assert_eq!(send(&store, "unary-2", &one, 1).await.unwrap(), (0, 1));
    assert_eq!(count(&store).await, 3);
}

#[tokio::test]
async fn a_retried_stream_stores_only_from_where_the_first_attempt_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let readings: Vec<Reading> = (0..10).map(reading).collect();
    // The first attempt got 6 readings stored, in parts of 3, then failed.
    assert_eq!(
        send(&store, "stream", &readings[..6], 3).await.unwrap(),
        (6, 0)
    );
    // The retry sends all 10, in other parts: 4 are new, 10 answered.
    assert_eq!(send(&store, "stream", &readings, 4).await.unwrap(), (4, 6));
    assert_eq!(count(&store).await, 10);
    // Once more: nothing new.
    assert_eq!(
        send(&store, "stream", &readings, 10).await.unwrap(),
        (0, 10)
    );
    let stats = store.stats(Some("keyed")).await.unwrap();
    assert_eq!(stats[0].last, readings[9].temperature);
}

#[tokio::test]
async fn a_key_reused_for_other_readings_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let readings: Vec<Reading> = (0..4).map(reading).collect();
    let other: Vec<Reading> = (100..104).map(reading).collect();
    send(&store, "k", &readings, 4).await.unwrap();
    let err = send(&store, "k", &other, 4).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::KeyConflict(why) if why.contains("already stored 4 readings")),
        "{err}"
    );
    assert_eq!(count(&store).await, 4);
}

#[tokio::test]
async fn keys_beyond_the_limit_are_forgotten_oldest_first_and_stay_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = config(dir.path());
    limited.idempotency = KeyLimits {
        max_keys: 2,
        window: Duration::from_secs(3600),
    };
    let store = Store::open(limited.clone()).unwrap();
    for k in ["a", "b", "c"] {
        send(&store, k, &[reading(1)], 1).await.unwrap();
    }
    // "a" was forgotten when "c" came: a retry with it is a new write.
    assert_eq!(send(&store, "c", &[reading(1)], 1).await.unwrap(), (0, 1));
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(limited).unwrap();
    assert_eq!(send(&store, "b", &[reading(1)], 1).await.unwrap(), (0, 1));
    assert_eq!(send(&store, "a", &[reading(1)], 1).await.unwrap(), (1, 0));
}
