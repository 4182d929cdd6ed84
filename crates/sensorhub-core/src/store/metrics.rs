//! The measurements every engine records, through the OpenTelemetry metrics API only
//! (no SDK, no exporter: with none installed these are no-ops).
//!
//! - `sensorhub.store.commit.duration` (s) and `sensorhub.store.commit.size`
//!   ({reading}): one record per group commit (the durable write every
//!   caller of the group waits for), never per reading;
//! - `sensorhub.alerts.raised` ({alert}) by `sensorhub.alert.rule`;
//! - `sensorhub.sensor.temperature` (Cel): the last temperature per sensor,
//!   as a gauge with `sensor.id`, for at most `max_tracked_sensors` sensors
//!   (the first ones seen) so that a flood of ids cannot blow up cardinality.
//!
//! The same commits also feed the store's [`StoreActivity`] (commit totals
//! and recent alerts, for the live view), which needs no SDK either.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
};

use super::activity::StoreActivity;
use crate::{Alert, AlertRule};

/// Commit durations, seconds: from 50 µs (an fsync-free memory commit) to 5 s.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
/// Readings per commit.
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

#[derive(Debug)]
pub struct StoreMetrics {
    commit_duration: Histogram<f64>,
    commit_size: Histogram<u64>,
    alerts: Counter<u64>,
    last: Arc<LastTemperatures>,
    activity: Arc<StoreActivity>,
}

#[derive(Debug)]
struct LastTemperatures {
    cap: usize,
    by_sensor: Mutex<HashMap<String, f64>>,
}

impl StoreMetrics {
    pub fn new(max_tracked_sensors: usize) -> Self {
        let meter = global::meter("sensorhub-core");
        let last = Arc::new(LastTemperatures {
            cap: max_tracked_sensors,
            by_sensor: Mutex::new(HashMap::new()),
        });
        let observed = last.clone();
        // The callback lives as long as the meter provider; it only reads the map.
        let _gauge = meter
            .f64_observable_gauge("sensorhub.sensor.temperature")
            .with_unit("Cel")
            .with_description("Last stored temperature per sensor")
            .with_callback(move |observer| {
                let by_sensor = observed.by_sensor.lock().unwrap_or_else(|e| e.into_inner());
                for (sensor, temperature) in by_sensor.iter() {
                    observer.observe(*temperature, &[KeyValue::new("sensor.id", sensor.clone())]);
                }
            })
            .build();
        let alerts = meter
            .u64_counter("sensorhub.alerts.raised")
            .with_unit("{alert}")
            .with_description("Alerts raised by the analysis of stored readings")
            .build();
        // Every rule's series exists from the start, so a rate or an
        // increase sees the first alert too.
        for rule in AlertRule::ALL {
            alerts.add(0, &[KeyValue::new("sensorhub.alert.rule", rule.as_str())]);
        }
        Self {
            commit_duration: meter
                .f64_histogram("sensorhub.store.commit.duration")
                .with_unit("s")
                .with_description("Duration of one durable group commit")
                .with_boundaries(COMMIT_BUCKETS.to_vec())
                .build(),
            commit_size: meter
                .u64_histogram("sensorhub.store.commit.size")
                .with_unit("{reading}")
                .with_description("Readings made durable by one group commit")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            alerts,
            last,
            activity: Arc::default(),
        }
    }

    /// What the engine hands a live view: the totals and alerts of the
    /// commits recorded here.
    pub fn activity(&self) -> Arc<StoreActivity> {
        self.activity.clone()
    }

    /// One successful group commit.
    pub fn committed<'a>(
        &self,
        elapsed: Duration,
        readings: usize,
        alerts: impl Iterator<Item = &'a Alert> + Clone,
        last: impl Iterator<Item = (&'a str, f64)>,
    ) {
        self.activity.committed(elapsed, readings, alerts.clone());
        self.commit_duration.record(elapsed.as_secs_f64(), &[]);
        self.commit_size.record(readings as u64, &[]);
        for alert in alerts {
            self.alerts.add(
                1,
                &[KeyValue::new("sensorhub.alert.rule", alert.rule.as_str())],
            );
        }
        let mut by_sensor = self
            .last
            .by_sensor
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (sensor, temperature) in last {
            if let Some(value) = by_sensor.get_mut(sensor) {
                *value = temperature;
            } else if by_sensor.len() < self.last.cap {
                by_sensor.insert(sensor.to_owned(), temperature);
            }
        }
    }
}
