//! The indexer's own measurements (OpenTelemetry metrics API only):
//! `sensorhub.store.index.duration` (s) and `sensorhub.store.index.size`
//! ({reading}), one record per indexer transaction, which is what queries
//! wait for. The measurements every engine records are in
//! `sensorhub_core::store::metrics`.

use std::time::Duration;

use opentelemetry::{global, metrics::Histogram};
use sensorhub_core::store::metrics::{COMMIT_BUCKETS, SIZE_BUCKETS};

#[derive(Debug)]
pub(crate) struct IndexMetrics {
    duration: Histogram<f64>,
    size: Histogram<u64>,
}

impl IndexMetrics {
    pub(crate) fn new() -> Self {
        let meter = global::meter("sensorhub-store-embedded");
        Self {
            duration: meter
                .f64_histogram("sensorhub.store.index.duration")
                .with_unit("s")
                .with_description("Duration of one indexer transaction into the tables")
                .with_boundaries(COMMIT_BUCKETS.to_vec())
                .build(),
            size: meter
                .u64_histogram("sensorhub.store.index.size")
                .with_unit("{reading}")
                .with_description("Readings made visible to queries by one indexer transaction")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
        }
    }

    pub(crate) fn indexed(&self, elapsed: Duration, readings: usize) {
        self.duration.record(elapsed.as_secs_f64(), &[]);
        self.size.record(readings as u64, &[]);
    }
}
