//! Counting what an exporter failed to deliver, and saying so without
//! flooding the console.
//!
//! A collector that is down or black-holed makes every export fail (after
//! the OTLP timeout). The batch processors' queues are bounded, so memory
//! stays flat; what cannot be delivered is dropped. These wrappers count
//! the dropped items in the semconv SDK metrics
//! `otel.sdk.exporter.{span,log}.exported` (with `error.type` on failure)
//! and warn at most once per [`WARN_EVERY`]. Metrics need no wrapper: they
//! are cumulative, so the next successful export carries the totals.
//!
//! What a full batch queue drops never reaches an exporter, so it is not
//! counted here: the SDK counts it itself, in the semconv
//! `otel.sdk.processor.{span,log}.processed` with `error.type=queue_full`
//! (the `experimental_metrics_bound_instruments` feature of
//! `opentelemetry_sdk`, on for the workspace). Those counters are made when
//! the batch processors are built, which is why the meter provider is
//! installed first (`pipeline.rs`).

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, global, metrics::Counter};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
    trace::{SpanData, SpanExporter},
};

/// At most one warning per signal this often.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// The `tracing` target of these warnings. The OTel log bridge filters it
/// out: a warning that an export failed must not be exported through it.
pub const TARGET: &str = "sensorhub_telemetry::export";

#[derive(Debug)]
pub(crate) struct ExportAccount {
    signal: &'static str,
    metric: &'static str,
    unit: &'static str,
    /// `otel.component.type`: `otlp_grpc_span_exporter`, ….
    component: KeyValue,
    counter: OnceLock<Counter<u64>>,
    warned: Mutex<(Option<Instant>, u64)>,
}

impl ExportAccount {
    /// `metric` in `unit` (the semconv SDK metric of the signal), for the
    /// exporter of `component_type` (semconv's `otel.component.type`).
    pub(crate) fn new(
        signal: &'static str,
        metric: &'static str,
        unit: &'static str,
        component_type: &'static str,
    ) -> Arc<Self> {
        Arc::new(Self {
            signal,
            metric,
            unit,
            component: KeyValue::new("otel.component.type", component_type),
            counter: OnceLock::new(),
            warned: Mutex::new((None, 0)),
        })
    }

    fn record(&self, items: usize, result: &OTelSdkResult) {
        // Created on first use: the meter provider is installed after the
        // exporters are built.
        let counter = self.counter.get_or_init(|| {
            global::meter("sensorhub-telemetry")
                .u64_counter(self.metric)
                .with_unit(self.unit)
                .with_description("Items the exporter handled; with error.type: dropped")
                .build()
        });
        match result {
            Ok(()) => counter.add(items as u64, std::slice::from_ref(&self.component)),
            Err(error) => {
                let kind = match error {
                    opentelemetry_sdk::error::OTelSdkError::Timeout(_) => "timeout",
                    opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown => "shutdown",
                    opentelemetry_sdk::error::OTelSdkError::InternalFailure(_) => "export_failed",
                };
                counter.add(
                    items as u64,
                    &[self.component.clone(), KeyValue::new("error.type", kind)],
                );
                let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
                warned.1 += items as u64;
                let due = warned.0.is_none_or(|at| at.elapsed() >= WARN_EVERY);
                if due {
                    tracing::warn!(
                        target: TARGET,
                        signal = self.signal,
                        dropped = warned.1,
                        error = %error,
                        "telemetry export failed; dropping data (next warning in 30 s at the earliest)"
                    );
                    *warned = (Some(Instant::now()), 0);
                }
            }
        }
    }
}

/// An exporter whose outcomes are counted.
#[derive(Debug)]
pub(crate) struct Accounted<E> {
    pub(crate) inner: E,
    pub(crate) account: Arc<ExportAccount>,
}

impl<E: SpanExporter> SpanExporter for Accounted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let items = batch.len();
        let result = self.inner.export(batch).await;
        self.account.record(items, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        SpanExporter::shutdown_with_timeout(&self.inner, timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        SpanExporter::force_flush(&self.inner)
    }

    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(&mut self.inner, resource);
    }
}

impl<E: LogExporter> LogExporter for Accounted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let items = batch.iter().count();
        let result = self.inner.export(batch).await;
        self.account.record(items, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        LogExporter::shutdown_with_timeout(&self.inner, timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        LogExporter::set_resource(&mut self.inner, resource);
    }
}
