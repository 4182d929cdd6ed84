//! The internal spans that explain a call's latency: one `INSERT readings`
//! span per store commit a client stream waits for (per chunk) and one
//! `SELECT readings` span per history page, with the database semantic
//! conventions' attributes (stable since v1.26; checked against v1.44.0).
//! A unary call's one commit is recorded on the call's own span instead
//! (`insert_in_call`: the store, the readings, the commit's duration), so
//! each call exports one span, not two. An `INSERT` of many readings is one operation with many rows,
//! not a batch (`db.operation.batch.size` counts operations and must not be
//! set on a single one), so its size is our own `sensorhub.store.readings`;
//! a page's size is the rows it returned, `db.response.returned_rows`.
//!
//! A call whose own span is not recorded gets none: see `around`.
//!
//! They are made with the OpenTelemetry tracing API, not with `tracing`
//! spans bridged by `tracing-opentelemetry`: a unary call pays for its commit
//! span at every call, and the bridge (registry slot, console field
//! formatting, span builder in extensions) cost far more than the span
//! itself (BENCHMARKS.md, "Telemetry overhead"). The parent is the call's
//! server span, which the telemetry layer keeps current while the handler
//! runs. Without a tracer provider the global tracer is a no-op.

use std::{borrow::Cow, fmt::Display, future::Future, sync::Arc, time::Instant};

use opentelemetry::{
    Context, KeyValue, global,
    trace::{SpanKind, Status, TraceContextExt, Tracer},
};

const DB_SYSTEM_NAME: &str = "db.system.name";
const DB_OPERATION_NAME: &str = "db.operation.name";
const DB_COLLECTION_NAME: &str = "db.collection.name";
const STORE_READINGS: &str = "sensorhub.store.readings";
const DB_RETURNED_ROWS: &str = "db.response.returned_rows";
const ERROR_TYPE: &str = "error.type";
/// On a unary call's server span (`insert_in_call`): ours, not `db.*`,
/// which describe a database client span and would make backends draw the
/// server span as a call to the database.
const STORE_SYSTEM: &str = "sensorhub.store.system";
const STORE_COMMIT_DURATION: &str = "sensorhub.store.commit.duration";
const STORE_ERROR: &str = "sensorhub.store.error";

/// Makes the store's client spans.
#[derive(Debug, Clone)]
pub(crate) struct StoreSpans {
    tracer: Arc<global::BoxedTracer>,
    /// `db.system.name` of the store the service runs on.
    system: &'static str,
}

impl StoreSpans {
    pub(crate) fn new(system: &'static str) -> Self {
        let scope = opentelemetry::InstrumentationScope::builder("sensorhub-grpc")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self {
            tracer: Arc::new(global::tracer_with_scope(scope)),
            system,
        }
    }

    /// Runs `commit`, a wait for the durable commit of `readings` readings,
    /// inside an `INSERT readings` span.
    pub(crate) async fn insert<T, E: Display>(
        &self,
        readings: usize,
        commit: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.around(
            "INSERT readings",
            "INSERT",
            Some(KeyValue::new(STORE_READINGS, readings as i64)),
            |_| None,
            commit,
        )
        .await
    }

    /// Runs `commit`, the wait for a unary call's durable commit of
    /// `readings` readings, and records it on the call's own span (the
    /// server span the telemetry layer keeps current) as attributes
    /// instead of a child span: the store's system, the readings, how long
    /// the commit took and, on failure, the store's error. A unary call is
    /// one reading and one commit, so a child span would say nothing the
    /// call's span cannot, at the cost of a second span to make, convert,
    /// encode and send on every call (BENCHMARKS.md, "The cost of one
    /// reading").
    pub(crate) async fn insert_in_call<T, E: Display>(
        &self,
        readings: usize,
        commit: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let call = Context::current();
        if !call.span().is_recording() {
            return commit.await;
        }
        let start = Instant::now();
        let result = commit.await;
        let took = start.elapsed().as_secs_f64();
        let span = call.span();
        let common = [
            KeyValue::new(STORE_SYSTEM, self.system),
            KeyValue::new(STORE_READINGS, readings as i64),
            KeyValue::new(STORE_COMMIT_DURATION, took),
        ];
        match &result {
            Ok(_) => span.set_attributes(common),
            Err(error) => span.set_attributes(
                common
                    .into_iter()
                    .chain([KeyValue::new(STORE_ERROR, error.to_string())]),
            ),
        }
        result
    }

    /// Runs `read`, one history page, inside a `SELECT readings` span that
    /// records how many rows it returned.
    pub(crate) async fn select<T, E: Display>(
        &self,
        read: impl Future<Output = Result<Vec<T>, E>>,
    ) -> Result<Vec<T>, E> {
        self.around(
            "SELECT readings",
            "SELECT",
            None,
            |rows: &Vec<T>| Some(KeyValue::new(DB_RETURNED_ROWS, rows.len() as i64)),
            read,
        )
        .await
    }

    async fn around<T, E: Display>(
        &self,
        name: &'static str,
        operation: &'static str,
        size: Option<KeyValue>,
        outcome: impl FnOnce(&T) -> Option<KeyValue>,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let parent = Context::current();
        // The child of a call whose span is not sampled would not be either
        // (every sampler the binary configures decides a trace once, by its
        // root or its trace id): skip making it. What a live view's tracer
        // costs per unsampled call is then the call's span alone.
        {
            let parent_span = parent.span();
            let context = parent_span.span_context();
            if context.is_valid() && !context.is_remote() && !parent_span.is_recording() {
                return work.await;
            }
        }
        let span = self
            .tracer
            .span_builder(Cow::Borrowed(name))
            .with_kind(SpanKind::Client)
            .with_attributes(
                [
                    KeyValue::new(DB_SYSTEM_NAME, self.system),
                    KeyValue::new(DB_OPERATION_NAME, operation),
                    KeyValue::new(DB_COLLECTION_NAME, "readings"),
                ]
                .into_iter()
                .chain(size),
            )
            .start_with_context(&*self.tracer, &parent);
        let cx = parent.with_span(span);
        // If the caller drops this future (the client went away), the span
        // ends with the drop of `cx`, unfinished but not lost.
        let result = work.await;
        let span = cx.span();
        match &result {
            Ok(value) => {
                if let Some(attribute) = outcome(value) {
                    span.set_attribute(attribute);
                }
            }
            Err(error) => {
                span.set_attribute(KeyValue::new(ERROR_TYPE, "store"));
                span.set_status(Status::error(error.to_string()));
            }
        }
        span.end();
        result
    }
}
