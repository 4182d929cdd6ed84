//! Per method and status: calls per second, error rate and latency p50, p90
//! and p99 over the last minute and the last hour, as OpenCensus zPages'
//! `/rpcz` showed them.
//!
//! Fed by the server layer with the very duration it records into the A66
//! `grpc.server.call.duration` histogram, into histograms with the A66
//! buckets, so a quantile here is computed the way Prometheus'
//! `histogram_quantile` computes it from `/metrics` (linear within a bucket).
//!
//! Two rings of slots, 60 of one second and 60 of one minute. A slot keeps
//! one histogram per (method, status) seen in it, cleared when the ring comes
//! round to it again. Each thread records into its own of [`SHARDS`] such
//! pairs (`thread_shard.rs`), so the workers share no lock; a snapshot merges
//! them. Bounds: per shard 120 slots × the (method, status) pairs seen in a
//! slot, at most (methods + 1) × 17, × 176 bytes; a server with ten methods
//! and a handful of statuses in use holds well under 1 MiB. Recording takes
//! one uncontended lock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::thread_shard;
use crate::conventions::{a66, status_name};

const SLOTS: usize = 60;
/// A66 latency buckets plus the +Inf bucket.
const BUCKETS: usize = a66::LATENCY_BUCKETS.len() + 1;
/// gRPC status codes 0..=16.
const STATUSES: u8 = 17;

/// The aggregator. Cheap to share; all state is behind one short lock.
#[derive(Debug)]
pub struct Rpcz {
    /// Method names by index; the last is `other`.
    methods: Vec<Arc<str>>,
    index: HashMap<String, u16>,
    epoch: Instant,
    windows: [Mutex<Windows>; SHARDS],
}

/// Independent copies of the windows, one per recording thread (modulo).
const SHARDS: usize = 4;

#[derive(Debug)]
struct Windows {
    seconds: Ring,
    minutes: Ring,
}

#[derive(Debug)]
struct Ring {
    slot_secs: u64,
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Which second (or minute) since `epoch` this slot holds; `None`: never used.
    period: Option<u64>,
    cells: Vec<Cell>,
}

#[derive(Debug, Clone)]
struct Cell {
    method: u16,
    status: u8,
    count: u64,
    buckets: [u32; BUCKETS],
}

/// One window of one (method, status).
#[derive(Debug, Clone, PartialEq)]
pub struct RpczWindow {
    pub calls: u64,
    /// Calls per second over the window (or over the uptime, if shorter).
    pub rate: f64,
    /// Latency quantiles, seconds (`None` without calls).
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// One row of the table: a method and a status, over both windows.
#[derive(Debug, Clone, PartialEq)]
pub struct RpczRow {
    pub method: String,
    pub status: &'static str,
    pub minute: RpczWindow,
    pub hour: RpczWindow,
    /// The share of this method's calls (all statuses) that did not end
    /// `OK`, over the minute and the hour.
    pub method_error_rate_minute: f64,
    pub method_error_rate_hour: f64,
}

/// Every (method, status) with calls in the last hour, by method then status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RpczSnapshot {
    pub rows: Vec<RpczRow>,
}

impl Rpcz {
    /// An aggregator for these methods (full paths without the leading slash).
    pub fn new<M: AsRef<str>>(methods: impl IntoIterator<Item = M>) -> Self {
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut index = HashMap::new();
        for method in methods {
            let method = method.as_ref();
            if !index.contains_key(method) && names.len() < u16::MAX as usize - 1 {
                index.insert(method.to_owned(), names.len() as u16);
                names.push(Arc::from(method));
            }
        }
        names.push(Arc::from(a66::OTHER_METHOD));
        Self {
            methods: names,
            index,
            epoch: Instant::now(),
            windows: std::array::from_fn(|_| {
                Mutex::new(Windows {
                    seconds: Ring::new(1),
                    minutes: Ring::new(60),
                })
            }),
        }
    }

    /// The index of a method path; unknown paths are `other`.
    pub fn method_index(&self, path: &str) -> u16 {
        self.index
            .get(path)
            .copied()
            .unwrap_or((self.methods.len() - 1) as u16)
    }

    /// Records one finished call: its method index, gRPC status code and
    /// duration, at `now`.
    pub fn record(&self, method: u16, status: i32, elapsed: Duration, now: Instant) {
        let status = if (0..STATUSES as i32).contains(&status) {
            status as u8
        } else {
            2 // UNKNOWN, as status_name says
        };
        let method = method.min((self.methods.len() - 1) as u16);
        let bucket = bucket_of(elapsed.as_secs_f64());
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let mut windows = self.windows[thread_shard::index(SHARDS)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        windows.seconds.record(second, method, status, bucket);
        windows.minutes.record(second, method, status, bucket);
    }

    /// The table at `now`.
    pub fn snapshot(&self, now: Instant) -> RpczSnapshot {
        let uptime = now.saturating_duration_since(self.epoch);
        let second = uptime.as_secs();
        let (mut minute, mut hour) = (HashMap::new(), HashMap::new());
        for shard in &self.windows {
            let windows = shard.lock().unwrap_or_else(|e| e.into_inner());
            windows.seconds.merge_into(second, &mut minute);
            windows.minutes.merge_into(second, &mut hour);
        }
        // A window's rate divides by its length, or by the uptime while that is shorter.
        let span = |window: f64| uptime.as_secs_f64().clamp(1.0, window);
        let method_errors = |cells: &HashMap<(u16, u8), Cell>, method: u16| {
            let (mut all, mut failed) = (0u64, 0u64);
            for ((m, status), cell) in cells {
                if *m == method {
                    all += cell.count;
                    if *status != 0 {
                        failed += cell.count;
                    }
                }
            }
            if all == 0 {
                0.0
            } else {
                failed as f64 / all as f64
            }
        };
        let mut keys: Vec<(u16, u8)> = hour.keys().chain(minute.keys()).copied().collect();
        keys.sort_unstable_by(|a, b| {
            self.methods[a.0 as usize]
                .cmp(&self.methods[b.0 as usize])
                .then(a.1.cmp(&b.1))
        });
        keys.dedup();
        let rows = keys
            .into_iter()
            .map(|key| RpczRow {
                method: self.methods[key.0 as usize].to_string(),
                status: status_name(key.1 as i32),
                minute: window(minute.get(&key), span(60.0)),
                hour: window(hour.get(&key), span(3600.0)),
                method_error_rate_minute: method_errors(&minute, key.0),
                method_error_rate_hour: method_errors(&hour, key.0),
            })
            .collect();
        RpczSnapshot { rows }
    }
}

impl Ring {
    fn new(slot_secs: u64) -> Self {
        Self {
            slot_secs,
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }

    fn record(&mut self, second: u64, method: u16, status: u8, bucket: usize) {
        let period = second / self.slot_secs;
        let slot = &mut self.slots[(period % SLOTS as u64) as usize];
        if slot.period != Some(period) {
            slot.period = Some(period);
            slot.cells.clear();
        }
        let cell = match slot
            .cells
            .iter_mut()
            .position(|c| c.method == method && c.status == status)
        {
            Some(i) => &mut slot.cells[i],
            None => {
                slot.cells.push(Cell {
                    method,
                    status,
                    count: 0,
                    buckets: [0; BUCKETS],
                });
                slot.cells.last_mut().expect("just pushed")
            }
        };
        cell.count += 1;
        cell.buckets[bucket] = cell.buckets[bucket].saturating_add(1);
    }

    /// Adds the cells of the slots still inside the window ending at
    /// `second` into `merged`.
    fn merge_into(&self, second: u64, merged: &mut HashMap<(u16, u8), Cell>) {
        let now = second / self.slot_secs;
        for slot in &self.slots {
            let Some(period) = slot.period else { continue };
            if period > now || now - period >= SLOTS as u64 {
                continue;
            }
            for cell in &slot.cells {
                let into = merged
                    .entry((cell.method, cell.status))
                    .or_insert_with(|| Cell {
                        count: 0,
                        buckets: [0; BUCKETS],
                        ..cell.clone()
                    });
                into.count += cell.count;
                for (sum, n) in into.buckets.iter_mut().zip(cell.buckets) {
                    *sum = sum.saturating_add(n);
                }
            }
        }
    }
}

fn window(cell: Option<&Cell>, seconds: f64) -> RpczWindow {
    match cell {
        Some(cell) if cell.count > 0 => RpczWindow {
            calls: cell.count,
            rate: cell.count as f64 / seconds,
            p50: Some(quantile(&cell.buckets, 0.50)),
            p90: Some(quantile(&cell.buckets, 0.90)),
            p99: Some(quantile(&cell.buckets, 0.99)),
        },
        _ => RpczWindow {
            calls: 0,
            rate: 0.0,
            p50: None,
            p90: None,
            p99: None,
        },
    }
}

/// The bucket a duration falls in: the first whose upper bound is at least it.
fn bucket_of(seconds: f64) -> usize {
    a66::LATENCY_BUCKETS.partition_point(|&bound| bound < seconds)
}

/// A quantile from bucket counts, interpolated linearly within its bucket
/// (as Prometheus' `histogram_quantile`); in the +Inf bucket, the largest
/// finite bound.
fn quantile(buckets: &[u32; BUCKETS], q: f64) -> f64 {
    let total: u64 = buckets.iter().map(|&n| n as u64).sum();
    let rank = q * total as f64;
    let bounds = a66::LATENCY_BUCKETS;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        let n = n as u64;
        if n > 0 && (below + n) as f64 >= rank {
            if i >= bounds.len() {
                return bounds[bounds.len() - 1];
            }
            let upper = bounds[i];
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return lower + (upper - lower) * within.clamp(0.0, 1.0);
        }
        below += n;
    }
    bounds[bounds.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNARY: &str = "S/Unary";

    fn rpcz() -> Rpcz {
        Rpcz::new([UNARY, "S/Chat"])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn buckets_follow_a66_upper_bounds() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.00001), 1, "a bound belongs to its bucket (le)");
        assert_eq!(bucket_of(0.000011), 2);
        assert_eq!(bucket_of(1000.0), BUCKETS - 1, "+Inf");
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_as_prometheus_does() {
        let mut buckets = [0u32; BUCKETS];
        // 100 calls in (1 ms, 2 ms]: p50 is half-way, 1.5 ms.
        buckets[bucket_of(0.0015)] = 100;
        assert!((quantile(&buckets, 0.5) - 0.0015).abs() < 1e-9);
        assert!((quantile(&buckets, 0.9) - 0.0019).abs() < 1e-9);
        buckets[BUCKETS - 1] = 1000;
        assert_eq!(quantile(&buckets, 0.99), 100.0, "+Inf: the largest bound");
    }

    #[test]
    fn rates_errors_and_quantiles_per_method_and_status() {
        let rpcz = rpcz();
        let start = rpcz.epoch;
        let unary = rpcz.method_index(UNARY);
        // 30 s of uptime: 90 OK calls at ~1.5 ms, 10 INVALID_ARGUMENT at ~0.1 ms.
        for i in 0..90 {
            rpcz.record(unary, 0, Duration::from_micros(1500), start + ms(i * 300));
        }
        for i in 0..10 {
            rpcz.record(unary, 3, Duration::from_micros(90), start + ms(i * 300));
        }
        rpcz.record(rpcz.method_index("Nope/Nope"), 12, ms(1), start);
        let snapshot = rpcz.snapshot(start + Duration::from_secs(30));
        let rows: Vec<_> = snapshot
            .rows
            .iter()
            .map(|r| (r.method.as_str(), r.status, r.minute.calls, r.hour.calls))
            .collect();
        assert_eq!(
            rows,
            [
                (UNARY, "OK", 90, 90),
                (UNARY, "INVALID_ARGUMENT", 10, 10),
                ("other", "UNIMPLEMENTED", 1, 1)
            ]
        );
        let ok = &snapshot.rows[0];
        assert!((ok.minute.rate - 3.0).abs() < 1e-9, "90 calls in 30 s");
        let p50 = ok.minute.p50.unwrap();
        assert!((0.001..=0.002).contains(&p50), "{p50}");
        assert!((ok.method_error_rate_minute - 0.1).abs() < 1e-9);
        assert!((snapshot.rows[1].method_error_rate_hour - 0.1).abs() < 1e-9);
    }

    #[test]
    fn the_minute_forgets_and_the_hour_remembers() {
        let rpcz = rpcz();
        let start = rpcz.epoch;
        let unary = rpcz.method_index(UNARY);
        rpcz.record(unary, 0, ms(1), start);
        let later = start + Duration::from_secs(600);
        rpcz.record(unary, 0, ms(1), later);
        let row = &rpcz.snapshot(later).rows[0];
        assert_eq!((row.minute.calls, row.hour.calls), (1, 2));
        assert!((row.minute.rate - 1.0 / 60.0).abs() < 1e-9);
        assert!(
            (row.hour.rate - 2.0 / 600.0).abs() < 1e-9,
            "hour over uptime"
        );

        let much_later = start + Duration::from_secs(3 * 3600);
        assert!(rpcz.snapshot(much_later).rows.is_empty());
        rpcz.record(unary, 0, ms(1), much_later);
        let row = &rpcz.snapshot(much_later).rows[0];
        assert_eq!(
            (row.minute.calls, row.hour.calls),
            (1, 1),
            "old slots cleared"
        );
    }

    #[test]
    fn unknown_status_codes_are_unknown() {
        let rpcz = rpcz();
        rpcz.record(0, 99, ms(1), rpcz.epoch);
        assert_eq!(rpcz.snapshot(rpcz.epoch).rows[0].status, "UNKNOWN");
    }
}
