//! The standard `OTEL_*` environment, read and checked in one pass.
//!
//! The Rust SDK reads some of these variables itself and silently falls back
//! to a default on a bad value; it does not read `OTEL_SDK_DISABLED`,
//! `OTEL_*_EXPORTER` or `OTEL_PROPAGATORS` at all. We read them all here so
//! that a typo is a startup error naming the variable and the accepted
//! values, and so the embedded default (no collector configured) is explicit.

use std::time::Duration;

/// A variable with a value we cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?}: {problem}")]
pub struct SettingsError {
    pub variable: String,
    pub value: String,
    pub problem: String,
}

/// Where one signal goes. A list, because the spec allows several (`otlp,console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    Otlp,
    Console,
    /// Metrics only: served as Prometheus text on the HTTP listener.
    Prometheus,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagator {
    TraceContext,
    Baggage,
}

/// Which measurements leave exemplars (`OTEL_METRICS_EXEMPLAR_FILTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExemplarFilter {
    /// Those made in a sampled span (the spec's default).
    TraceBased,
    AlwaysOff,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// The three signals, for per-signal variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }
}

/// Everything the pipeline needs from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub disabled: bool,
    pub traces: Vec<Exporter>,
    pub metrics: Vec<Exporter>,
    pub logs: Vec<Exporter>,
    pub traces_protocol: Protocol,
    pub metrics_protocol: Protocol,
    pub logs_protocol: Protocol,
    pub propagators: Vec<Propagator>,
    pub sampler: Sampler,
    /// `OTEL_METRICS_EXEMPLAR_FILTER`: whether sampled calls leave exemplars.
    pub exemplar_filter: ExemplarFilter,
    pub metric_export_interval: Duration,
    pub service_name: Option<String>,
}

impl Settings {
    /// Reads the process environment. `prometheus_served`: whether an HTTP
    /// listener will serve `/metrics` (it makes `prometheus` the default
    /// metrics exporter).
    pub fn from_env(prometheus_served: bool) -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok(), prometheus_served)
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        prometheus_served: bool,
    ) -> Result<Self, SettingsError> {
        let env = Env(lookup);
        let disabled = match env.get("OTEL_SDK_DISABLED") {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" | "" => false,
                _ => return Err(env.error("OTEL_SDK_DISABLED", &v, "use true or false")),
            },
        };

        // Embedded default: with no collector configured anywhere, export
        // nothing over OTLP (no connection errors on a laptop); metrics go to
        // the Prometheus endpoint when there is one.
        let otlp_configured = |signal: Signal| {
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || env
                    .get(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.name()))
                    .is_some()
        };
        let default_for = |signal: Signal| {
            let mut list = Vec::new();
            if signal == Signal::Metrics && prometheus_served {
                list.push(Exporter::Prometheus);
            }
            if otlp_configured(signal) {
                list.push(Exporter::Otlp);
            }
            list
        };
        let traces = env.exporters(Signal::Traces, default_for(Signal::Traces))?;
        let metrics = env.exporters(Signal::Metrics, default_for(Signal::Metrics))?;
        let logs = env.exporters(Signal::Logs, default_for(Signal::Logs))?;

        for signal in [Signal::Traces, Signal::Metrics, Signal::Logs] {
            for name in [
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.name()),
            ] {
                if let Some(v) = env.get(&name) {
                    check_endpoint(&env, &name, &v)?;
                }
            }
            for name in [
                "OTEL_EXPORTER_OTLP_TIMEOUT".to_owned(),
                format!("OTEL_EXPORTER_OTLP_{}_TIMEOUT", signal.name()),
            ] {
                env.millis(&name)?;
            }
            for name in [
                "OTEL_EXPORTER_OTLP_COMPRESSION".to_owned(),
                format!("OTEL_EXPORTER_OTLP_{}_COMPRESSION", signal.name()),
            ] {
                if let Some(v) = env.get(&name)
                    && !matches!(v.as_str(), "gzip" | "zstd" | "none" | "")
                {
                    return Err(env.error(&name, &v, "use gzip, zstd or none"));
                }
            }
            for name in [
                "OTEL_EXPORTER_OTLP_HEADERS".to_owned(),
                format!("OTEL_EXPORTER_OTLP_{}_HEADERS", signal.name()),
            ] {
                if let Some(v) = env.get(&name) {
                    check_key_values(&env, &name, &v)?;
                }
            }
        }
        let traces_protocol = env.protocol(Signal::Traces)?;
        let metrics_protocol = env.protocol(Signal::Metrics)?;
        let logs_protocol = env.protocol(Signal::Logs)?;

        let propagators = match env.get("OTEL_PROPAGATORS") {
            None => vec![Propagator::TraceContext, Propagator::Baggage],
            Some(v) => {
                let mut list = Vec::new();
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match item {
                        "tracecontext" => list.push(Propagator::TraceContext),
                        "baggage" => list.push(Propagator::Baggage),
                        "none" => {}
                        _ => {
                            return Err(env.error(
                                "OTEL_PROPAGATORS",
                                &v,
                                &format!(
                                    "`{item}` is not supported; use a list of tracecontext, baggage, or none"
                                ),
                            ));
                        }
                    }
                }
                list
            }
        };

        let sampler = env.sampler()?;
        let metric_export_interval = env
            .millis("OTEL_METRIC_EXPORT_INTERVAL")?
            .unwrap_or(Duration::from_secs(60));
        if metric_export_interval.is_zero() {
            return Err(env.error("OTEL_METRIC_EXPORT_INTERVAL", "0", "must be above 0 ms"));
        }
        env.millis("OTEL_METRIC_EXPORT_TIMEOUT")?;
        for name in [
            "OTEL_BSP_SCHEDULE_DELAY",
            "OTEL_BSP_EXPORT_TIMEOUT",
            "OTEL_BLRP_SCHEDULE_DELAY",
            "OTEL_BLRP_EXPORT_TIMEOUT",
        ] {
            env.millis(name)?;
        }
        for name in [
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BLRP_MAX_QUEUE_SIZE",
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        ] {
            if let Some(v) = env.get(name)
                && !v.parse::<usize>().is_ok_and(|n| n > 0)
            {
                return Err(env.error(name, &v, "use a whole number above 0"));
            }
        }
        if let Some(v) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
            check_key_values(&env, "OTEL_RESOURCE_ATTRIBUTES", &v)?;
        }
        let service_name = env.get("OTEL_SERVICE_NAME").filter(|s| !s.is_empty());
        // The layers read it themselves (`SemconvStability::from_env`); a
        // misspelt RPC value is refused here, before anything is emitted.
        if let Some(v) = env.get(sensorhub_rpc_telemetry::OPT_IN_VARIABLE) {
            sensorhub_rpc_telemetry::SemconvStability::parse(&v).map_err(|problem| {
                env.error(sensorhub_rpc_telemetry::OPT_IN_VARIABLE, &v, &problem)
            })?;
        }

        Ok(Settings {
            disabled,
            traces,
            metrics,
            logs,
            traces_protocol,
            metrics_protocol,
            logs_protocol,
            propagators,
            sampler,
            exemplar_filter: env.exemplar_filter()?,
            metric_export_interval,
            service_name,
        })
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned())
    }

    fn error(&self, variable: &str, value: &str, problem: &str) -> SettingsError {
        SettingsError {
            variable: variable.to_owned(),
            value: value.to_owned(),
            problem: problem.to_owned(),
        }
    }

    fn exporters(
        &self,
        signal: Signal,
        default: Vec<Exporter>,
    ) -> Result<Vec<Exporter>, SettingsError> {
        let name = format!("OTEL_{}_EXPORTER", signal.name());
        let Some(v) = self.get(&name) else {
            return Ok(default);
        };
        let accepted = if signal == Signal::Metrics {
            "otlp, prometheus, console or none"
        } else {
            "otlp, console or none"
        };
        let mut list = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let exporter = match item {
                "otlp" => Exporter::Otlp,
                "console" => Exporter::Console,
                "prometheus" if signal == Signal::Metrics => Exporter::Prometheus,
                "none" => continue,
                _ => {
                    return Err(self.error(
                        &name,
                        &v,
                        &format!("`{item}` is not supported; use a list of {accepted}"),
                    ));
                }
            };
            if !list.contains(&exporter) {
                list.push(exporter);
            }
        }
        Ok(list)
    }

    fn protocol(&self, signal: Signal) -> Result<Protocol, SettingsError> {
        let specific = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.name());
        let (name, value) = match self.get(&specific) {
            Some(v) => (specific, v),
            None => match self.get("OTEL_EXPORTER_OTLP_PROTOCOL") {
                Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), v),
                None => return Ok(Protocol::Grpc),
            },
        };
        match value.as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err(self.error(
                &name,
                &value,
                "http/json is not supported; use grpc or http/protobuf",
            )),
            _ => Err(self.error(&name, &value, "use grpc or http/protobuf")),
        }
    }

    fn millis(&self, name: &str) -> Result<Option<Duration>, SettingsError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(|ms| Some(Duration::from_millis(ms)))
                .map_err(|_| self.error(name, &v, "use a whole number of milliseconds")),
        }
    }

    fn exemplar_filter(&self) -> Result<ExemplarFilter, SettingsError> {
        match self.get("OTEL_METRICS_EXEMPLAR_FILTER").as_deref() {
            None | Some("trace_based") => Ok(ExemplarFilter::TraceBased),
            Some("always_off") => Ok(ExemplarFilter::AlwaysOff),
            Some(v) => Err(self.error(
                "OTEL_METRICS_EXEMPLAR_FILTER",
                v,
                "use trace_based (the default: sampled calls leave exemplars) or always_off; always_on is not offered, as an exemplar here names its call's trace and only sampled calls have one",
            )),
        }
    }

    fn sampler(&self) -> Result<Sampler, SettingsError> {
        let ratio = || -> Result<f64, SettingsError> {
            match self.get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        self.error("OTEL_TRACES_SAMPLER_ARG", &v, "use a ratio from 0 to 1")
                    }),
            }
        };
        let Some(v) = self.get("OTEL_TRACES_SAMPLER") else {
            return Ok(Sampler::ParentBasedAlwaysOn);
        };
        Ok(match v.as_str() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBasedAlwaysOn,
            "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(ratio()?),
            _ => {
                return Err(self.error(
                    "OTEL_TRACES_SAMPLER",
                    &v,
                    "use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
                ));
            }
        })
    }
}

fn check_endpoint(env: &Env<'_>, name: &str, value: &str) -> Result<(), SettingsError> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| env.error(name, value, "not a URL; use e.g. http://localhost:4317"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(env.error(
            name,
            value,
            "use an http:// or https:// URL with a host, e.g. http://localhost:4317",
        )),
    }
}

fn check_key_values(env: &Env<'_>, name: &str, value: &str) -> Result<(), SettingsError> {
    for pair in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match pair.split_once('=') {
            Some((key, _)) if !key.trim().is_empty() => {}
            // Never echo the value: headers carry credentials.
            _ => {
                return Err(env.error(name, "(hidden)", "use comma-separated key=value pairs"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)], prometheus: bool) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&move |name| map.get(name).cloned(), prometheus)
    }

    #[test]
    fn embedded_default_is_prometheus_only() {
        let s = settings(&[], true).unwrap();
        assert!(!s.disabled);
        assert!(s.traces.is_empty() && s.logs.is_empty());
        assert_eq!(s.metrics, vec![Exporter::Prometheus]);
        assert_eq!(
            s.propagators,
            vec![Propagator::TraceContext, Propagator::Baggage]
        );
        assert_eq!(s.sampler, Sampler::ParentBasedAlwaysOn);
    }

    #[test]
    fn an_endpoint_turns_otlp_on_for_every_signal() {
        let s = settings(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")],
            false,
        )
        .unwrap();
        assert_eq!(s.traces, vec![Exporter::Otlp]);
        assert_eq!(s.metrics, vec![Exporter::Otlp]);
        assert_eq!(s.logs, vec![Exporter::Otlp]);
        let s = settings(
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://jaeger:4318/v1/traces",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.traces, vec![Exporter::Otlp]);
        assert!(s.logs.is_empty());
        assert_eq!(s.traces_protocol, Protocol::HttpProtobuf);
        assert_eq!(s.logs_protocol, Protocol::Grpc);
    }

    #[test]
    fn explicit_lists_win() {
        let s = settings(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_METRICS_EXPORTER", "prometheus,otlp"),
                ("OTEL_LOGS_EXPORTER", "console"),
                ("OTEL_PROPAGATORS", "tracecontext"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ],
            false,
        )
        .unwrap();
        assert!(s.disabled);
        assert!(s.traces.is_empty());
        assert_eq!(s.metrics, vec![Exporter::Prometheus, Exporter::Otlp]);
        assert_eq!(s.logs, vec![Exporter::Console]);
        assert_eq!(s.propagators, vec![Propagator::TraceContext]);
        assert_eq!(s.sampler, Sampler::ParentBasedTraceIdRatio(0.25));
    }

    #[test]
    fn bad_values_name_the_variable_and_what_to_use() {
        let cases: &[(&str, &str, &str)] = &[
            ("OTEL_SDK_DISABLED", "yes", "true or false"),
            ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console or none"),
            ("OTEL_LOGS_EXPORTER", "prometheus", "otlp, console or none"),
            (
                "OTEL_METRICS_EXPORTER",
                "statsd",
                "otlp, prometheus, console or none",
            ),
            (
                "OTEL_PROPAGATORS",
                "tracecontext,b3",
                "`b3` is not supported",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "not supported"),
            (
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
                "udp",
                "grpc or http/protobuf",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector:4317",
                "http:// or https://",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                "brotli",
                "gzip, zstd or none",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "secret-token", "key=value"),
            ("OTEL_TRACES_SAMPLER", "sometimes", "always_on"),
            ("OTEL_METRICS_EXEMPLAR_FILTER", "always_on", "trace_based"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "fast", "milliseconds"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1", "whole number"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment", "key=value"),
            ("OTEL_SEMCONV_STABILITY_OPT_IN", "http,rpc/dupe", "rpc/dup"),
        ];
        for (variable, value, hint) in cases {
            let err = settings(&[(variable, value)], true).expect_err(variable);
            let text = err.to_string();
            assert!(text.starts_with(variable), "{text}");
            assert!(text.contains(hint), "{variable}: {text}");
        }
        let err = settings(
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ratio from 0 to 1"));
    }

    #[test]
    fn other_categories_of_the_semconv_opt_in_are_accepted() {
        for list in ["rpc", "rpc/dup", "http/dup,database", ""] {
            settings(&[("OTEL_SEMCONV_STABILITY_OPT_IN", list)], true).expect(list);
        }
    }

    #[test]
    fn header_values_are_never_echoed() {
        let err = settings(&[("OTEL_EXPORTER_OTLP_HEADERS", "Bearer-s3cr3t")], true).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
