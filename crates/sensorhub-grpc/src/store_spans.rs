//! The internal spans that explain a call's latency: one `INSERT readings`
//! span per store commit a call waits for (per unary call, per client-stream
//! chunk) and one `SELECT readings` span per history page, with the database
//! semantic conventions' attributes.
//!
//! They are made with the OpenTelemetry tracing API, not with `tracing`
//! spans bridged by `tracing-opentelemetry`: a unary call pays for its commit
//! span at every call, and the bridge (registry slot, console field
//! formatting, span builder in extensions) cost far more than the span
//! itself (BENCHMARKS.md, "Telemetry overhead"). The parent is the call's
//! server span, which the telemetry layer keeps current while the handler
//! runs. Without a tracer provider the global tracer is a no-op.

use std::{borrow::Cow, fmt::Display, future::Future, sync::Arc};

use opentelemetry::{
    Context, KeyValue, global,
    trace::{SpanKind, Status, TraceContextExt, Tracer},
};

const DB_SYSTEM_NAME: &str = "db.system.name";
const DB_OPERATION_NAME: &str = "db.operation.name";
const DB_COLLECTION_NAME: &str = "db.collection.name";
const DB_BATCH_SIZE: &str = "db.operation.batch.size";
const DB_PAGE_SIZE: &str = "db.query.page_size";
const ERROR_TYPE: &str = "error.type";

/// Makes the store's client spans.
#[derive(Debug, Clone)]
pub(crate) struct StoreSpans {
    tracer: Arc<global::BoxedTracer>,
}

impl StoreSpans {
    pub(crate) fn new() -> Self {
        let scope = opentelemetry::InstrumentationScope::builder("sensorhub-grpc")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self {
            tracer: Arc::new(global::tracer_with_scope(scope)),
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
            KeyValue::new(DB_BATCH_SIZE, readings as i64),
            commit,
        )
        .await
    }

    /// Runs `read`, one history page of up to `page_size` readings, inside a
    /// `SELECT readings` span.
    pub(crate) async fn select<T, E: Display>(
        &self,
        page_size: usize,
        read: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.around(
            "SELECT readings",
            "SELECT",
            KeyValue::new(DB_PAGE_SIZE, page_size as i64),
            read,
        )
        .await
    }

    async fn around<T, E: Display>(
        &self,
        name: &'static str,
        operation: &'static str,
        size: KeyValue,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let parent = Context::current();
        let span = self
            .tracer
            .span_builder(Cow::Borrowed(name))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new(DB_SYSTEM_NAME, "sqlite"),
                KeyValue::new(DB_OPERATION_NAME, operation),
                KeyValue::new(DB_COLLECTION_NAME, "readings"),
                size,
            ])
            .start_with_context(&*self.tracer, &parent);
        let cx = parent.with_span(span);
        // If the caller drops this future (the client went away), the span
        // ends with the drop of `cx`, unfinished but not lost.
        let result = work.await;
        let span = cx.span();
        if let Err(error) = &result {
            span.set_attribute(KeyValue::new(ERROR_TYPE, "store"));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
        result
    }
}
