//! Data model, key encodings and the synthetic reading generator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// One temperature reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub sensor: u32,
    /// Unix seconds.
    pub ts: i64,
    /// Global arrival sequence number (starts at 1).
    pub seq: u64,
    pub temp: f64,
}

// ---------------------------------------------------------------------------
// Key encodings for the KV engines (redb, fjall).
//
// history key: sensor u32 BE | ts i64 BE with the sign bit flipped | seq u64 BE
//   -> value: temperature f64 LE (8 bytes)
// tail key:    sensor u32 BE | seq u64 BE
//   -> value: ts i64 LE | temperature f64 LE (16 bytes, so the tail path is covering)
// ---------------------------------------------------------------------------

pub const HIST_KEY_LEN: usize = 20;
pub const TAIL_KEY_LEN: usize = 12;

#[inline]
fn ts_to_ordered(ts: i64) -> u64 {
    (ts as u64) ^ (1u64 << 63)
}

#[inline]
fn ordered_to_ts(v: u64) -> i64 {
    (v ^ (1u64 << 63)) as i64
}

#[inline]
pub fn hist_key(sensor: u32, ts: i64, seq: u64) -> [u8; HIST_KEY_LEN] {
    let mut k = [0u8; HIST_KEY_LEN];
    k[0..4].copy_from_slice(&sensor.to_be_bytes());
    k[4..12].copy_from_slice(&ts_to_ordered(ts).to_be_bytes());
    k[12..20].copy_from_slice(&seq.to_be_bytes());
    k
}

#[inline]
pub fn decode_hist_key(k: &[u8]) -> (u32, i64, u64) {
    let sensor = u32::from_be_bytes(k[0..4].try_into().unwrap());
    let ts = ordered_to_ts(u64::from_be_bytes(k[4..12].try_into().unwrap()));
    let seq = u64::from_be_bytes(k[12..20].try_into().unwrap());
    (sensor, ts, seq)
}

#[inline]
pub fn tail_key(sensor: u32, seq: u64) -> [u8; TAIL_KEY_LEN] {
    let mut k = [0u8; TAIL_KEY_LEN];
    k[0..4].copy_from_slice(&sensor.to_be_bytes());
    k[4..12].copy_from_slice(&seq.to_be_bytes());
    k
}

#[inline]
pub fn decode_tail_key(k: &[u8]) -> (u32, u64) {
    let sensor = u32::from_be_bytes(k[0..4].try_into().unwrap());
    let seq = u64::from_be_bytes(k[4..12].try_into().unwrap());
    (sensor, seq)
}

#[inline]
pub fn tail_value(ts: i64, temp: f64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..8].copy_from_slice(&ts.to_le_bytes());
    v[8..16].copy_from_slice(&temp.to_le_bytes());
    v
}

#[inline]
pub fn decode_tail_value(v: &[u8]) -> (i64, f64) {
    let ts = i64::from_le_bytes(v[0..8].try_into().unwrap());
    let temp = f64::from_le_bytes(v[8..16].try_into().unwrap());
    (ts, temp)
}

#[inline]
pub fn temp_value(temp: f64) -> [u8; 8] {
    temp.to_le_bytes()
}

#[inline]
pub fn decode_temp(v: &[u8]) -> f64 {
    f64::from_le_bytes(v[0..8].try_into().unwrap())
}

// ---------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------

/// Base timestamp of the synthetic data set (2025-01-01T00:00:00Z).
pub const T0: i64 = 1_735_689_600;
/// Readings of one sensor that share one timestamp ("ts increasing slowly").
pub const READINGS_PER_SECOND: u64 = 8;
pub const SENSORS_PER_PRODUCER: u32 = 4;
/// The hot sensor (producer 0, first sensor) gets this share of producer 0's readings.
pub const HOT_SHARE: f64 = 0.85;
pub const HOT_SENSOR: u32 = 1;

pub fn sensor_id(producer: u32, k: u32) -> u32 {
    1 + producer * SENSORS_PER_PRODUCER + k
}

/// Small deterministic PRNG (xorshift64*), good enough for synthetic data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Keeps the producers in lock-step (no producer more than SLACK messages ahead of
/// the slowest unfinished one). Without it, the OS scheduler decides how the global
/// seq numbers of the 4 producers interleave, and W4 (seq-ordered tail) becomes
/// irreproducible: in unpaced trial runs producer 0 sometimes ran 1M seqs ahead.
pub struct Pacer {
    sent: Vec<AtomicU64>,
}

const PACER_SLACK: u64 = 4;
const PACER_DONE: u64 = u64::MAX;

impl Pacer {
    pub fn new(producers: usize) -> Self {
        Pacer { sent: (0..producers).map(|_| AtomicU64::new(0)).collect() }
    }
    fn wait_turn(&self, me: usize) {
        loop {
            let mine = self.sent[me].load(Ordering::Acquire);
            let slowest = self
                .sent
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != me)
                .map(|(_, c)| c.load(Ordering::Acquire))
                .min()
                .unwrap_or(PACER_DONE);
            if slowest == PACER_DONE || mine <= slowest + PACER_SLACK {
                return;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }
    fn sent_one(&self, me: usize) {
        self.sent[me].fetch_add(1, Ordering::AcqRel);
    }
    fn done(&self, me: usize) {
        self.sent[me].store(PACER_DONE, Ordering::Release);
    }
}

/// What one producer generated (for verification of the read paths).
pub struct ProducerReport {
    /// (sensor id, readings generated, max ts)
    pub per_sensor: Vec<(u32, u64, i64)>,
}

/// Runs one producer: generates `count` readings for its own sensors and sends
/// them in batches of `batch` through `tx`. Sequence numbers come from the shared
/// global counter, one block per batch.
pub fn run_producer(
    producer: u32,
    count: u64,
    batch: usize,
    seq: Arc<AtomicU64>,
    pacer: Arc<Pacer>,
    tx: SyncSender<Vec<Reading>>,
) -> ProducerReport {
    let mut rng = Rng::new(0xC0FFEE + producer as u64);
    let n = SENSORS_PER_PRODUCER as usize;
    let mut counts = vec![0u64; n];
    let mut temps: Vec<f64> = (0..n).map(|k| 18.0 + k as f64).collect();
    let mut max_ts = vec![i64::MIN; n];
    let mut left = count;
    while left > 0 {
        pacer.wait_turn(producer as usize);
        let len = (batch as u64).min(left) as usize;
        left -= len as u64;
        let base = seq.fetch_add(len as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let k = if producer == 0 {
                if rng.next_f64() < HOT_SHARE {
                    0
                } else {
                    1 + (rng.next_u64() % (n as u64 - 1)) as usize
                }
            } else {
                (rng.next_u64() % n as u64) as usize
            };
            let ts = T0 + (counts[k] / READINGS_PER_SECOND) as i64;
            counts[k] += 1;
            // random walk with 0.01 degree steps
            temps[k] += ((rng.next_u64() % 21) as f64 - 10.0) * 0.01;
            max_ts[k] = ts;
            out.push(Reading {
                sensor: sensor_id(producer, k as u32),
                ts,
                seq: base + i as u64,
                temp: temps[k],
            });
        }
        if tx.send(out).is_err() {
            break;
        }
        pacer.sent_one(producer as usize);
    }
    pacer.done(producer as usize);
    ProducerReport {
        per_sensor: (0..n)
            .map(|k| (sensor_id(producer, k as u32), counts[k], max_ts[k]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_matches_tuple_order() {
        let samples = [
            (1u32, -5i64, 3u64),
            (1, -5, 4),
            (1, 0, 0),
            (1, 7, 1),
            (1, i64::MAX, 0),
            (2, i64::MIN, 0),
            (2, 3, 9),
        ];
        for w in samples.windows(2) {
            let a = hist_key(w[0].0, w[0].1, w[0].2);
            let b = hist_key(w[1].0, w[1].1, w[1].2);
            assert!(a < b, "{:?} !< {:?}", w[0], w[1]);
        }
        for s in samples {
            assert_eq!(decode_hist_key(&hist_key(s.0, s.1, s.2)), s);
        }
        assert_eq!(decode_tail_key(&tail_key(7, 99)), (7, 99));
        assert_eq!(decode_tail_value(&tail_value(-3, 21.5)), (-3, 21.5));
    }
}
