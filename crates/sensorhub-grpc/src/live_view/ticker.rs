//! A page's ticks: once a second, what changed since the last one, read
//! for that page's identity (it sees only the sensors its `read=` scope
//! permits) and sent as one event.
//!
//! A tick reads the first [`MAX_ROWS`] permitted sensors' statistics, the
//! new readings of the charted ones whose count changed (their live tail
//! after the last sequence number sent, at most [`TAIL_PAGE`], then a skip,
//! averaged into at most [`POINTS_PER_TICK`] points), the alerts after the
//! last one sent, and the recorders. So a page is at most one tick (plus that
//! read) behind what is committed, and one reading or a thousand in a second
//! make one event.
//!
//! Each page has its own ticks (at most `MAX_STREAMS` pages), not a shared
//! broadcast: pages of different identities see different sensors, and a
//! page that reads slowly delays only its own next tick (the event stream is
//! pulled, so nothing queues for it). Its state is bounded by [`MAX_ROWS`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use sensorhub_core::{SensorStats, StoreError, StoredReading, store::activity::CommitTotals};

use super::{
    Sources,
    payload::{self, SensorRow, Tick},
};
use crate::auth::Identity;

pub const TICK: Duration = Duration::from_secs(1);
/// Sensors in the table.
pub const MAX_ROWS: usize = 64;
/// Sensors charted (their live readings are sent).
pub const MAX_CHARTS: usize = 16;
/// New readings read per charted sensor and tick; a sensor with more skips
/// ahead (the chart then shows this tick's first readings only).
pub const TAIL_PAGE: usize = 1024;
/// Points per sensor and tick: more new readings are averaged into these.
pub const POINTS_PER_TICK: usize = 8;
/// Calls in flight listed.
pub const IN_FLIGHT_SHOWN: usize = 50;
/// Sensors looked at, at most, to find the permitted ones of a scoped identity.
const MAX_SCANNED: usize = 4096;
const SCAN_PAGE: usize = 256;

/// The sensors `identity` may read, the first `limit` by id, and whether
/// there are more.
pub async fn visible_sensors(
    sources: &Sources,
    identity: &Identity,
    limit: usize,
) -> Result<(Vec<SensorStats>, bool), StoreError> {
    let store = &sources.store;
    if identity.read.is_all() {
        let mut stats = store.stats_page("", limit + 1).await?;
        let more = stats.len() > limit;
        stats.truncate(limit);
        return Ok((stats, more));
    }
    let mut visible = Vec::new();
    let mut after = String::new();
    let mut scanned = 0;
    while scanned < MAX_SCANNED {
        let page = store.stats_page(&after, SCAN_PAGE).await?;
        scanned += page.len();
        let last = page.last().map(|s| s.sensor_id.clone());
        let full = page.len() == SCAN_PAGE;
        visible.extend(
            page.into_iter()
                .filter(|s| identity.read.permits(&s.sensor_id)),
        );
        if visible.len() > limit {
            break;
        }
        match last {
            Some(last) if full => after = last,
            _ => break,
        }
    }
    let more = visible.len() > limit;
    visible.truncate(limit);
    Ok((visible, more))
}

/// What this page's previous tick sent.
#[derive(Debug)]
pub struct PageTicks {
    identity: Arc<Identity>,
    counts: HashMap<String, u64>,
    /// Per charted sensor: the last sequence number whose reading was sent.
    cursors: HashMap<String, u64>,
    /// Where a sensor first charted after the page opened begins.
    start_seq: u64,
    alert_after: u64,
    trace_generation: Option<u64>,
    store_before: (CommitTotals, Instant),
}

impl PageTicks {
    /// Ticks after what a snapshot taken now shows.
    pub fn new(sources: &Sources, identity: Arc<Identity>) -> PageTicks {
        let activity = sources.store.activity();
        PageTicks {
            identity,
            // Empty: the first tick carries every row, so a page whose
            // snapshot raced its stream misses no change.
            counts: HashMap::new(),
            cursors: HashMap::new(),
            // Readings up to here are in the series the page fetches with
            // its snapshot; later ones come as points.
            start_seq: *sources.store.committed_seq().borrow(),
            alert_after: activity.last_alert(),
            trace_generation: None,
            store_before: (activity.totals(), Instant::now()),
        }
    }

    /// The identity this page acts as.
    pub fn set_identity(&mut self, identity: Arc<Identity>) {
        self.identity = identity;
    }

    pub async fn next(&mut self, sources: &Sources) -> Result<Tick, StoreError> {
        let store = &sources.store;
        let visible = *store.committed_seq().borrow();
        let (stats, more_sensors) = visible_sensors(sources, &self.identity, MAX_ROWS).await?;

        let mut sensors = Vec::new();
        let mut points = BTreeMap::new();
        let mut counts = HashMap::with_capacity(stats.len());
        for (i, s) in stats.iter().enumerate() {
            let changed = self.counts.get(&s.sensor_id) != Some(&s.count);
            counts.insert(s.sensor_id.clone(), s.count);
            if !changed {
                continue;
            }
            sensors.push(SensorRow::from(s));
            if i >= MAX_CHARTS {
                continue;
            }
            let after = *self
                .cursors
                .entry(s.sensor_id.clone())
                .or_insert(self.start_seq.min(visible));
            let tail = store.tail_page(&s.sensor_id, after, TAIL_PAGE).await?;
            let last = tail.last().map_or(after, |r| r.seq);
            let cursor = if tail.len() == TAIL_PAGE {
                visible.max(last)
            } else {
                last
            };
            self.cursors.insert(s.sensor_id.clone(), cursor);
            if !tail.is_empty() {
                points.insert(s.sensor_id.clone(), compress(&tail, POINTS_PER_TICK));
            }
        }
        self.counts = counts;
        self.cursors
            .retain(|id, _| stats.iter().take(MAX_CHARTS).any(|s| &s.sensor_id == id));

        let activity = store.activity();
        let raised = activity.alerts_after(self.alert_after);
        if let Some(last) = raised.last() {
            self.alert_after = last.number;
        }
        let alerts: Vec<_> = raised
            .iter()
            .filter(|a| self.identity.read.permits(&a.alert.sensor_id))
            .map(payload::AlertItem::from)
            .collect();

        let now = Instant::now();
        let recorders = &sources.recorders;
        let generation = recorders.traces.generation();
        let traces = (self.trace_generation != Some(generation)).then(|| {
            self.trace_generation = Some(generation);
            payload::traces(&recorders.traces.snapshot(), sources.jaeger.as_deref())
        });
        let totals = activity.totals();
        let store_view = payload::store(
            &totals,
            &self.store_before.0,
            store.backlog(),
            now - self.store_before.1,
        );
        self.store_before = (totals, now);
        Ok(Tick {
            server_time_ms: payload::millis(std::time::SystemTime::now()),
            sensors,
            more_sensors,
            points,
            alerts,
            calls: payload::calls(&recorders.rpcz.snapshot(now)),
            in_flight: (&recorders.calls.snapshot(IN_FLIGHT_SHOWN)).into(),
            traces,
            store: store_view,
        })
    }
}

/// At most `max` points from a tick's new readings, in order: the readings
/// themselves, or the means of equal runs of them (each with its last seq).
pub fn compress(tail: &[StoredReading], max: usize) -> Vec<(i64, f64, u64)> {
    if tail.len() <= max {
        return tail
            .iter()
            .map(|r| (r.reading.timestamp, r.reading.temperature, r.seq))
            .collect();
    }
    let run = tail.len().div_ceil(max);
    tail.chunks(run)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let temperature = chunk.iter().map(|r| r.reading.temperature).sum::<f64>() / n;
            let ts = chunk
                .iter()
                .map(|r| r.reading.timestamp as f64)
                .sum::<f64>()
                / n;
            let seq = chunk.last().expect("a chunk is not empty").seq;
            (ts.round() as i64, temperature, seq)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sensorhub_core::Reading;

    use super::*;

    fn stored(seq: u64, temperature: f64) -> StoredReading {
        StoredReading {
            seq,
            reading: Reading {
                sensor_id: "s".into(),
                temperature,
                timestamp: 1_700_000_000 + seq as i64,
            },
        }
    }

    #[test]
    fn a_few_readings_go_as_they_are_and_many_as_means() {
        let few: Vec<_> = (1..=3).map(|i| stored(i, i as f64)).collect();
        assert_eq!(
            compress(&few, 8),
            [
                (1_700_000_001, 1.0, 1),
                (1_700_000_002, 2.0, 2),
                (1_700_000_003, 3.0, 3)
            ]
        );
        let many: Vec<_> = (1..=100).map(|i| stored(i, i as f64)).collect();
        let points = compress(&many, 8);
        assert!(points.len() <= 8);
        assert_eq!(points.last().unwrap().2, 100, "the last seq is carried");
        assert_eq!(points[0].1, 7.0, "the mean of 1..=13");
    }
}
