//! The one place where telemetry is wired: SDK providers, exporters chosen
//! from the standard `OTEL_*` environment, the `tracing` bridges (spans and
//! log records, both carrying trace ids), console output, the Prometheus
//! text renderer, and a shutdown that flushes all three signals within a
//! bounded time.
//!
//! Invariant: the only module that names an exporter. Domain and transport
//! code emit through `tracing` and the global OpenTelemetry API; with
//! `OTEL_SDK_DISABLED=true` those calls are no-ops.

mod accounting;
mod live_spans;
mod openmetrics;
pub mod settings;
mod span_tree;

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    KeyValue, global, propagation::TextMapCompositePropagator, trace::TracerProvider as _,
};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    logs::SdkLoggerProvider,
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::{BaggagePropagator, TraceContextPropagator},
    resource::{EnvResourceDetector, TelemetryResourceDetector},
    trace::{self as sdktrace, SdkTracerProvider},
};
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

pub use openmetrics::OPENMETRICS_CONTENT_TYPE;
pub use sensorhub_rpc_telemetry::ExemplarReservoir;
pub use sensorhub_rpc_telemetry::live::TraceRing;
pub use settings::{Exporter, Protocol, Settings, SettingsError};
pub use span_tree::SpanRecorder;

/// Console log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleFormat {
    Pretty,
    Json,
}

/// What the application decides; everything else comes from the environment.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` say otherwise.
    pub service_name: &'static str,
    pub service_version: &'static str,
    pub console: ConsoleFormat,
    /// Console level when `RUST_LOG` is not set (`info`, `warn`).
    pub console_level: &'static str,
    /// Level of the `tracing` events exported as OTLP log records.
    pub export_level: &'static str,
    /// Whether an HTTP listener will serve `/metrics` (then `prometheus` is
    /// the default metrics exporter).
    pub prometheus_served: bool,
    /// Keep finished spans in memory too (the demo prints a trace tree).
    pub recorder: Option<SpanRecorder>,
    /// Feed the live view's trace ring. Tracing is then on even without an
    /// exporter, recording only what the ring admits (`pipeline/live_spans.rs`).
    pub trace_ring: Option<TraceRing>,
}

/// Why telemetry could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot build the Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("a global `tracing` subscriber is already installed: {0}")]
    Subscriber(String),
}

/// The running pipeline. Keep it alive; call [`Telemetry::shutdown`] last.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
    prometheus: Option<PrometheusText>,
    recorder: Option<SpanRecorder>,
    trace_ring: Option<TraceRing>,
}

/// Renders the current metrics for `/metrics`: in the Prometheus text
/// format, or in OpenMetrics with the exemplars of the server's
/// call-duration histograms.
#[derive(Debug, Clone)]
pub struct PrometheusText {
    registry: prometheus::Registry,
    /// Present when spans are sampled and exported, so an exemplar's trace
    /// id names a trace that exists.
    exemplars: Option<Arc<ExemplarReservoir>>,
}

impl PrometheusText {
    /// The Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        match prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => format!("# metrics could not be encoded: {e}\n"),
        }
    }

    /// OpenMetrics 1.0, with exemplars ([`OPENMETRICS_CONTENT_TYPE`]).
    pub fn render_openmetrics(&self) -> String {
        let exemplars = self
            .exemplars
            .as_ref()
            .map(|reservoir| reservoir.collect())
            .unwrap_or_default();
        openmetrics::render(&self.registry.gather(), &exemplars)
    }

    /// Where the server's telemetry layer records exemplars for
    /// [`PrometheusText::render_openmetrics`]; `None` when no spans are
    /// exported.
    pub fn exemplars(&self) -> Option<Arc<ExemplarReservoir>> {
        self.exemplars.clone()
    }
}

/// The content type of [`PrometheusText::render`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds an OTLP exporter for one signal over the chosen protocol. The
/// three exporter builders share no trait, hence a macro rather than a
/// generic function.
macro_rules! otlp_exporter {
    ($exporter:ty, $signal:literal, $protocol:expr) => {{
        let builder = <$exporter>::builder();
        match $protocol {
            Protocol::Grpc => builder.with_tonic().build(),
            Protocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build(),
        }
        .map_err(|source| PipelineError::Exporter {
            signal: $signal,
            source,
        })
    }};
}

impl Telemetry {
    /// Reads the environment, builds the providers, installs them and the
    /// `tracing` subscriber globally. Call it once, inside a Tokio runtime
    /// (the gRPC exporter needs one).
    pub fn init(options: PipelineOptions) -> Result<Telemetry, PipelineError> {
        let settings = Settings::from_env(options.prometheus_served)?;
        Self::init_with(settings, options)
    }

    /// [`Telemetry::init`] with settings already read.
    pub fn init_with(
        settings: Settings,
        options: PipelineOptions,
    ) -> Result<Telemetry, PipelineError> {
        let enabled = !settings.disabled;
        let resource = resource(&settings, &options);

        // Metrics first: the export accounting counts into them.
        let mut prometheus = None;
        let meter = if enabled && (!settings.metrics.is_empty()) {
            let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
            for exporter in &settings.metrics {
                builder = match exporter {
                    Exporter::Prometheus => {
                        let registry = prometheus::Registry::new();
                        let reader = opentelemetry_prometheus::exporter()
                            .with_registry(registry.clone())
                            .build()
                            .map_err(|e| PipelineError::Prometheus(e.to_string()))?;
                        // Exemplars only point at traces that are exported.
                        let exemplars = (settings.exemplar_filter
                            == settings::ExemplarFilter::TraceBased
                            && !settings.traces.is_empty()
                            && settings.sampler != settings::Sampler::AlwaysOff)
                            .then(ExemplarReservoir::new);
                        prometheus = Some(PrometheusText {
                            registry,
                            exemplars,
                        });
                        builder.with_reader(reader)
                    }
                    Exporter::Otlp => {
                        let exporter = otlp_exporter!(
                            opentelemetry_otlp::MetricExporter,
                            "metrics",
                            settings.metrics_protocol
                        )?;
                        builder.with_reader(
                            PeriodicReader::builder(exporter)
                                .with_interval(settings.metric_export_interval)
                                .build(),
                        )
                    }
                    Exporter::Console => builder.with_reader(
                        PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                            .with_interval(settings.metric_export_interval)
                            .build(),
                    ),
                };
            }
            let provider = builder.build();
            global::set_meter_provider(provider.clone());
            Some(provider)
        } else {
            None
        };

        let exported = !settings.traces.is_empty() || options.recorder.is_some();
        let tracer = if enabled && (exported || options.trace_ring.is_some()) {
            let mut processors: Vec<Box<dyn sdktrace::SpanProcessor>> = Vec::new();
            let account = accounting::ExportAccount::new(
                "traces",
                "otel.sdk.exporter.span.exported",
                "{span}",
                match settings.traces_protocol {
                    Protocol::Grpc => "otlp_grpc_span_exporter",
                    Protocol::HttpProtobuf => "otlp_http_span_exporter",
                },
            );
            for exporter in &settings.traces {
                match exporter {
                    Exporter::Otlp => processors.push(Box::new(
                        sdktrace::BatchSpanProcessor::builder(accounting::Accounted {
                            inner: otlp_exporter!(
                                opentelemetry_otlp::SpanExporter,
                                "traces",
                                settings.traces_protocol
                            )?,
                            account: account.clone(),
                        })
                        .build(),
                    )),
                    Exporter::Console => processors.push(Box::new(
                        sdktrace::BatchSpanProcessor::builder(
                            opentelemetry_stdout::SpanExporter::default(),
                        )
                        .build(),
                    )),
                    Exporter::Prometheus => {}
                }
            }
            if let Some(recorder) = &options.recorder {
                processors.push(Box::new(sdktrace::SimpleSpanProcessor::new(
                    recorder.clone(),
                )));
            }
            let builder = SdkTracerProvider::builder().with_resource(resource.clone());
            let builder = match &options.trace_ring {
                // The ring's processor is the only one and hands spans on.
                Some(ring) => builder
                    .with_sampler(live_spans::LiveSampler::new(
                        exported.then(|| sampler(&settings)),
                        ring.clone(),
                    ))
                    .with_span_processor(live_spans::LiveSpanProcessor::new(
                        ring.clone(),
                        processors,
                    )),
                None => processors.into_iter().fold(
                    builder.with_sampler(sampler(&settings)),
                    |builder, processor| builder.with_span_processor(BoxedProcessor(processor)),
                ),
            };
            let provider = builder.build();
            global::set_tracer_provider(provider.clone());
            Some(provider)
        } else {
            None
        };

        let logger = if enabled && !settings.logs.is_empty() {
            let mut builder = SdkLoggerProvider::builder().with_resource(resource);
            let account = accounting::ExportAccount::new(
                "logs",
                "otel.sdk.exporter.log.exported",
                "{log_record}",
                match settings.logs_protocol {
                    Protocol::Grpc => "otlp_grpc_log_exporter",
                    Protocol::HttpProtobuf => "otlp_http_log_exporter",
                },
            );
            for exporter in &settings.logs {
                builder = match exporter {
                    Exporter::Otlp => builder.with_batch_exporter(accounting::Accounted {
                        inner: otlp_exporter!(
                            opentelemetry_otlp::LogExporter,
                            "logs",
                            settings.logs_protocol
                        )?,
                        account: account.clone(),
                    }),
                    Exporter::Console => {
                        builder.with_batch_exporter(opentelemetry_stdout::LogExporter::default())
                    }
                    Exporter::Prometheus => builder,
                };
            }
            Some(builder.build())
        } else {
            None
        };

        if enabled && !settings.propagators.is_empty() {
            let mut propagators: Vec<
                Box<dyn opentelemetry::propagation::TextMapPropagator + Send + Sync>,
            > = Vec::new();
            for propagator in &settings.propagators {
                match propagator {
                    settings::Propagator::TraceContext => {
                        propagators.push(Box::new(TraceContextPropagator::new()))
                    }
                    settings::Propagator::Baggage => {
                        propagators.push(Box::new(BaggagePropagator::new()))
                    }
                }
            }
            global::set_text_map_propagator(TextMapCompositePropagator::new(propagators));
        }

        install_subscriber(&options, tracer.as_ref(), logger.as_ref())?;
        Ok(Telemetry {
            recorder: options.recorder.filter(|_| tracer.is_some()),
            trace_ring: options.trace_ring.filter(|_| tracer.is_some()),
            tracer,
            meter,
            logger,
            prometheus,
        })
    }

    /// The `/metrics` renderer, when metrics go to Prometheus.
    pub fn prometheus(&self) -> Option<PrometheusText> {
        self.prometheus.clone()
    }

    /// The live view's trace ring, if one was asked for and tracing is on
    /// (not with `OTEL_SDK_DISABLED=true`).
    pub fn trace_ring(&self) -> Option<TraceRing> {
        self.trace_ring.clone()
    }

    /// The in-memory span recorder, if one was asked for and tracing is on.
    pub fn recorder(&self) -> Option<&SpanRecorder> {
        self.recorder.as_ref()
    }

    /// Exports what is buffered and stops the exporters, giving up after
    /// `timeout` (a dead collector must not hold the process).
    pub async fn shutdown(self, timeout: Duration) {
        let Telemetry {
            tracer,
            meter,
            logger,
            ..
        } = self;
        if tracer.is_none() && meter.is_none() && logger.is_none() {
            return;
        }
        // The providers' shutdown blocks: keep it off the async workers.
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = tracer {
                let _ = tracer.shutdown_with_timeout(timeout);
            }
            if let Some(logger) = logger {
                let _ = logger.shutdown_with_timeout(timeout);
            }
            if let Some(meter) = meter {
                let _ = meter.shutdown_with_timeout(timeout);
            }
        });
        if tokio::time::timeout(timeout, flush).await.is_err() {
            tracing::warn!(
                target: accounting::TARGET,
                ?timeout,
                "telemetry was not flushed in time; exiting without it"
            );
        }
    }
}

/// A boxed processor as one the builder takes (it wants a concrete type).
#[derive(Debug)]
struct BoxedProcessor(Box<dyn sdktrace::SpanProcessor>);

impl sdktrace::SpanProcessor for BoxedProcessor {
    fn on_start(&self, span: &mut sdktrace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx)
    }
    fn on_end(&self, span: sdktrace::SpanData) {
        self.0.on_end(span)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

fn sampler(settings: &Settings) -> sdktrace::Sampler {
    use sdktrace::Sampler;
    use settings::Sampler as S;
    match settings.sampler {
        S::AlwaysOn => Sampler::AlwaysOn,
        S::AlwaysOff => Sampler::AlwaysOff,
        S::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        S::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        S::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        S::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// Defaults first, then `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME`
/// (the spec's precedence).
fn resource(settings: &Settings, options: &PipelineOptions) -> Resource {
    let mut defaults = vec![
        KeyValue::new("service.name", options.service_name),
        KeyValue::new("service.version", options.service_version),
        KeyValue::new("process.pid", i64::from(std::process::id())),
        KeyValue::new("process.runtime.name", "rust"),
        KeyValue::new("os.type", os_type()),
        KeyValue::new("host.arch", host_arch()),
    ];
    if let Some(host) = host_name() {
        defaults.push(KeyValue::new("host.name", host));
    }
    if let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        defaults.push(KeyValue::new("process.executable.name", exe));
    }
    let mut builder = Resource::builder_empty()
        .with_attributes(defaults)
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = &settings.service_name {
        builder = builder.with_service_name(name.clone());
    }
    builder.build()
}

/// `os.type` as semconv spells it (`darwin`, not Rust's `macos`).
fn os_type() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "dragonfly" => "dragonflybsd",
        other => other,
    }
}

/// `host.arch` as semconv spells it (`amd64`, not Rust's `x86_64`).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "powerpc" => "ppc32",
        "powerpc64" => "ppc64",
        other => other,
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
}

/// Crates whose own events must never reach the OTLP log exporter: the
/// exporter's transport would log about its own exports, forever.
const NEVER_EXPORTED: &str = "h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,rustls=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off";

fn install_subscriber(
    options: &PipelineOptions,
    tracer: Option<&SdkTracerProvider>,
    logger: Option<&SdkLoggerProvider>,
) -> Result<(), PipelineError> {
    let console_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},h2=warn,hyper=warn,tower=warn,rustls=warn,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off",
            options.console_level
        ))
    });
    let console = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let console = match options.console {
        ConsoleFormat::Pretty => console.compact().boxed(),
        ConsoleFormat::Json => console.json().flatten_event(true).boxed(),
    }
    .with_filter(console_filter);

    let spans = tracer.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sensorhub"))
            .with_filter(EnvFilter::new(format!("info,{NEVER_EXPORTED}")))
    });
    let logs = logger.map(|provider| {
        OpenTelemetryTracingBridge::new(provider).with_filter(EnvFilter::new(format!(
            "{},{NEVER_EXPORTED},{}=off",
            options.export_level,
            accounting::TARGET
        )))
    });
    tracing_subscriber::registry()
        .with(console)
        .with(spans)
        .with(logs)
        .try_init()
        .map_err(|e| PipelineError::Subscriber(e.to_string()))
}
