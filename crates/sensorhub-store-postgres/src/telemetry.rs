//! The PostgreSQL engine's own telemetry, through the OpenTelemetry API only
//! (with no SDK installed, no-ops):
//!
//! - a client span per group commit, `COPY readings` (the rows go by
//!   binary `COPY`, `writer.rs`), with the database conventions' attributes
//!   (`db.system.name=postgresql`, `db.namespace`, `db.operation.name=COPY`,
//!   `db.collection.name`, `server.address`, `server.port`) and the group's
//!   size: `sensorhub.store.readings` (rows) and `sensorhub.store.writes`
//!   (the calls it holds). One COPY of many rows is one operation, so
//!   `db.operation.batch.size` is not set (as in the transport's spans). The
//!   span has no parent: one commit serves many calls, whose own `INSERT
//!   readings` spans (made by the transport, in the engine-neutral words of
//!   what the call asked for) cover their wait for it.
//! - the connection-pool metrics of the conventions:
//!   `db.client.connection.count` by `db.client.connection.state`
//!   (`idle`, `used`), `db.client.connection.max`,
//!   `db.client.connection.wait_time` (s, from asking for a connection to
//!   getting it) and `db.client.connection.use_time` (s, from getting it to
//!   giving it back), all with `db.client.connection.pool.name`.
//!
//! Invariant: no attribute or span name carries the URL's password; the
//! pool name and `db.namespace` are the database name, the address the host.

use std::{
    borrow::Cow,
    ops::{Deref, DerefMut},
    time::Instant,
};

use deadpool_postgres::{Object, Pool};
use opentelemetry::{
    KeyValue, global,
    metrics::Histogram,
    trace::{Span, SpanKind, Status, Tracer},
};
use sensorhub_core::StoreError;

use crate::{database_url::DatabaseUrl, failure};

/// Seconds, from 50 µs to 10 s.
const WAIT_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

#[derive(Debug)]
pub(crate) struct DbTelemetry {
    tracer: global::BoxedTracer,
    span_attributes: Vec<KeyValue>,
    pool_attribute: [KeyValue; 1],
    wait_time: Histogram<f64>,
    use_time: Histogram<f64>,
}

impl DbTelemetry {
    pub(crate) fn new(url: &DatabaseUrl, pool: &Pool, max_size: usize) -> Self {
        let scope = opentelemetry::InstrumentationScope::builder("sensorhub-store-postgres")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = global::meter_with_scope(scope.clone());
        let pool_name = KeyValue::new("db.client.connection.pool.name", url.database().to_owned());
        let observed = pool.clone();
        let name = pool_name.clone();
        // The callback lives as long as the meter provider; it only reads
        // the pool's counters.
        let _count = meter
            .i64_observable_up_down_counter("db.client.connection.count")
            .with_unit("{connection}")
            .with_description("Connections of the pool, by state")
            .with_callback(move |observer| {
                let status = observed.status();
                let idle = status.available as i64;
                let used = status.size as i64 - idle;
                observer.observe(
                    used,
                    &[
                        KeyValue::new("db.client.connection.state", "used"),
                        name.clone(),
                    ],
                );
                observer.observe(
                    idle,
                    &[
                        KeyValue::new("db.client.connection.state", "idle"),
                        name.clone(),
                    ],
                );
            })
            .build();
        let name = pool_name.clone();
        let max = max_size as i64;
        let _max = meter
            .i64_observable_up_down_counter("db.client.connection.max")
            .with_unit("{connection}")
            .with_description("The most connections the pool opens")
            .with_callback(move |observer| observer.observe(max, std::slice::from_ref(&name)))
            .build();
        let (host, port) = url.host_and_port();
        Self {
            tracer: global::tracer_with_scope(scope),
            span_attributes: vec![
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.namespace", url.database().to_owned()),
                KeyValue::new("db.operation.name", "COPY"),
                KeyValue::new("db.collection.name", "readings"),
                KeyValue::new("server.address", host),
                KeyValue::new("server.port", i64::from(port)),
            ],
            pool_attribute: [pool_name],
            wait_time: meter
                .f64_histogram("db.client.connection.wait_time")
                .with_unit("s")
                .with_description("Time to get a connection from the pool")
                .with_boundaries(WAIT_BUCKETS.to_vec())
                .build(),
            use_time: meter
                .f64_histogram("db.client.connection.use_time")
                .with_unit("s")
                .with_description("Time a connection was lent out before it came back")
                .with_boundaries(WAIT_BUCKETS.to_vec())
                .build(),
        }
    }

    /// A connection from `pool`, its wait and (when dropped) its use measured.
    pub(crate) async fn connection(&self, pool: &Pool) -> Result<Pooled<'_>, StoreError> {
        let asked = Instant::now();
        let object = pool.get().await;
        self.wait_time
            .record(asked.elapsed().as_secs_f64(), &self.pool_attribute);
        Ok(Pooled {
            object: Some(object.map_err(failure::pool)?),
            since: Instant::now(),
            telemetry: self,
        })
    }

    /// The span of one group commit of `readings` rows from `writes` calls.
    pub(crate) fn commit_span(&self, readings: usize, writes: usize) -> global::BoxedSpan {
        self.tracer
            .span_builder(Cow::Borrowed("COPY readings"))
            .with_kind(SpanKind::Client)
            .with_attributes(self.span_attributes.iter().cloned().chain([
                KeyValue::new("sensorhub.store.readings", readings as i64),
                KeyValue::new("sensorhub.store.writes", writes as i64),
            ]))
            .start(&self.tracer)
    }
}

/// Ends a commit span with its outcome.
pub(crate) fn end_commit_span(mut span: global::BoxedSpan, outcome: Result<(), &StoreError>) {
    if let Err(error) = outcome {
        let kind = match error {
            StoreError::Unavailable(_) => "unavailable",
            _ => "store",
        };
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// A pooled connection whose use time is recorded when it goes back.
pub(crate) struct Pooled<'a> {
    /// Always `Some` but in `discard`, which takes it out of the pool.
    object: Option<Object>,
    since: Instant,
    telemetry: &'a DbTelemetry,
}

impl Deref for Pooled<'_> {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.object.as_ref().expect("a connection until discarded")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Object {
        self.object.as_mut().expect("a connection until discarded")
    }
}

impl Pooled<'_> {
    /// Closes the connection instead of giving it back to the pool (which
    /// opens a new one when it needs one).
    pub(crate) fn discard(mut self) {
        if let Some(object) = self.object.take() {
            drop(Object::take(object));
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        self.telemetry.use_time.record(
            self.since.elapsed().as_secs_f64(),
            &self.telemetry.pool_attribute,
        );
    }
}
