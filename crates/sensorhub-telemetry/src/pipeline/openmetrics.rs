//! The metrics of the Prometheus registry in the OpenMetrics 1.0 text
//! format, with exemplars on the buckets of the server's call-duration
//! histograms, for a scraper that asks for it (`Accept:
//! application/openmetrics-text`). Everyone else keeps the Prometheus text
//! format, written by the `prometheus` crate as before.
//!
//! Hand-written: the `prometheus` crate writes no OpenMetrics, and
//! `prometheus-client`, which does, only writes exemplars of histograms it
//! counts itself (see `sensorhub_rpc_telemetry::exemplars`). The numbers
//! here are the very ones of the text format: both render one `gather()` of
//! the same registry, which the SDK's aggregation fills.
//!
//! What differs from the text format, as OpenMetrics 1.0 asks: a counter's
//! family is named without `_total` (its samples keep it), `le` bounds are
//! canonical floats (`1.0`, `+Inf`), and the exposition ends with `# EOF`.
//! An exemplar is written ` # {trace_id="…",span_id="…"} <value> <time>`
//! after a bucket's count; only sampled calls leave one.

use std::{collections::HashMap, fmt::Write as _, time::UNIX_EPOCH};

use prometheus::proto::{LabelPair, MetricFamily, MetricType};
use sensorhub_rpc_telemetry::exemplars::{Exemplar, ExemplarEntry};

/// The content type of [`render`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exemplars of one histogram series, by bucket index.
type SeriesExemplars = HashMap<usize, Exemplar>;

/// Renders `families` in OpenMetrics, with `exemplars` on the bucket lines
/// of the series they belong to.
pub fn render(families: &[MetricFamily], exemplars: &[ExemplarEntry]) -> String {
    let by_series = index(exemplars);
    let mut out = String::with_capacity(16 * 1024);
    for family in families {
        let name = family.name();
        let kind = family.get_field_type();
        let base = match kind {
            MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let type_name = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            _ => "unknown",
        };
        if !family.help().is_empty() {
            let _ = writeln!(out, "# HELP {base} {}", escape(family.help()));
        }
        let _ = writeln!(out, "# TYPE {base} {type_name}");
        for metric in family.get_metric() {
            let labels = metric.get_label();
            match kind {
                MetricType::COUNTER => {
                    sample(&mut out, base, "_total", labels, None);
                    number(&mut out, metric.get_counter().get_value());
                    out.push('\n');
                }
                MetricType::GAUGE => {
                    sample(&mut out, name, "", labels, None);
                    number(&mut out, metric.get_gauge().get_value());
                    out.push('\n');
                }
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let series = by_series.get(&series_key(name, labels));
                    let mut inf_seen = false;
                    for (i, bucket) in histogram.get_bucket().iter().enumerate() {
                        let bound = bucket.upper_bound();
                        inf_seen |= bound == f64::INFINITY;
                        let le = canonical(bound);
                        sample(&mut out, name, "_bucket", labels, Some(&le));
                        let _ = write!(out, "{}", bucket.cumulative_count());
                        if let Some(exemplar) = series.and_then(|s| s.get(&i)) {
                            write_exemplar(&mut out, exemplar);
                        }
                        out.push('\n');
                    }
                    if !inf_seen {
                        let i = histogram.get_bucket().len();
                        sample(&mut out, name, "_bucket", labels, Some("+Inf"));
                        let _ = write!(out, "{}", histogram.get_sample_count());
                        if let Some(exemplar) = series.and_then(|s| s.get(&i)) {
                            write_exemplar(&mut out, exemplar);
                        }
                        out.push('\n');
                    }
                    sample(&mut out, name, "_sum", labels, None);
                    number(&mut out, histogram.get_sample_sum());
                    out.push('\n');
                    sample(&mut out, name, "_count", labels, None);
                    let _ = writeln!(out, "{}", histogram.get_sample_count());
                }
                // The SDK's exporter writes no summaries or untyped metrics;
                // anything else is left out rather than written wrong.
                _ => {}
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The Prometheus name of an instrument measured in seconds, as
/// opentelemetry-prometheus writes it.
fn prometheus_name(otel_name: &str) -> String {
    format!("{}_seconds", sanitize(otel_name))
}

/// An attribute key as a Prometheus label name.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// (family, method, status): what picks out one exemplar series.
type SeriesKey = (String, String, String);

fn index(exemplars: &[ExemplarEntry]) -> HashMap<SeriesKey, SeriesExemplars> {
    let mut by_series: HashMap<SeriesKey, SeriesExemplars> = HashMap::new();
    for entry in exemplars {
        let key = (
            prometheus_name(entry.instrument.name()),
            entry.method.to_string(),
            entry.status.to_owned(),
        );
        by_series
            .entry(key)
            .or_default()
            .insert(entry.bucket, entry.exemplar);
    }
    by_series
}

/// The key of a histogram series whose family may carry exemplars: its
/// method and status labels, whichever names they have.
fn series_key(family: &str, labels: &[LabelPair]) -> SeriesKey {
    use sensorhub_rpc_telemetry::exemplars::ExemplarInstrument::{
        A66ServerDuration, SemconvServerDuration,
    };
    let label = |key: &str| {
        let name = sanitize(key);
        labels
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_owned())
    };
    for instrument in [A66ServerDuration, SemconvServerDuration] {
        if family != prometheus_name(instrument.name()) {
            continue;
        }
        let method = label(instrument.method_key()).unwrap_or_default();
        let status = instrument
            .status_keys()
            .iter()
            .find_map(|key| label(key))
            .unwrap_or_default();
        return (family.to_owned(), method, status);
    }
    (String::new(), String::new(), String::new())
}

/// `name<suffix>{labels[,le]} ` (the value follows).
fn sample(out: &mut String, name: &str, suffix: &str, labels: &[LabelPair], le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for label in labels {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{}=\"{}\"", label.name(), escape(label.value()));
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    out.push(' ');
}

fn write_exemplar(out: &mut String, exemplar: &Exemplar) {
    let _ = write!(
        out,
        " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
        exemplar.trace_id, exemplar.span_id
    );
    number(out, exemplar.value);
    let seconds = exemplar
        .time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = write!(out, " {seconds:.3}");
}

/// A sample value: `+Inf`, `-Inf`, `NaN`, or the shortest form that reads
/// back as the same float.
fn number(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// A bound as OpenMetrics' canonical float: `1.0`, `0.005`, `+Inf`.
fn canonical(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".to_owned()
    } else if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{bound:.1}")
    } else {
        format!("{bound}")
    }
}

/// Escapes a label value or help text: backslash, double quote, newline.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '"', '\n']) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use opentelemetry::trace::{SpanId, TraceId};
    use prometheus::{HistogramOpts, HistogramVec, IntCounter, Registry};
    use sensorhub_rpc_telemetry::exemplars::{Exemplar, ExemplarEntry, ExemplarInstrument};

    use super::render;

    fn registry() -> Registry {
        let registry = Registry::new();
        let counter =
            IntCounter::new("grpc_server_call_started_total", "Calls \"started\"").unwrap();
        counter.inc_by(3);
        registry.register(Box::new(counter)).unwrap();
        let histogram = HistogramVec::new(
            HistogramOpts::new("grpc_server_call_duration_seconds", "Duration")
                .buckets(vec![0.001, 0.005, 1.0]),
            &["grpc_method", "grpc_status"],
        )
        .unwrap();
        histogram.with_label_values(&["S/M", "OK"]).observe(0.004);
        histogram
            .with_label_values(&["S/M", "INTERNAL"])
            .observe(0.004);
        registry.register(Box::new(histogram)).unwrap();
        registry
    }

    fn exemplar(bucket: usize, status: &'static str) -> ExemplarEntry {
        ExemplarEntry {
            instrument: ExemplarInstrument::A66ServerDuration,
            method: Arc::from("S/M"),
            status,
            bucket,
            exemplar: Exemplar {
                trace_id: TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
                span_id: SpanId::from(0xb7ad6b7169203331_u64),
                value: 0.004,
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            },
        }
    }

    #[test]
    fn counters_histograms_and_the_end_marker() {
        let text = render(&registry().gather(), &[]);
        assert!(
            text.contains("# TYPE grpc_server_call_started counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP grpc_server_call_started Calls \\\"started\\\"\n"));
        assert!(
            text.contains("grpc_server_call_started_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE grpc_server_call_duration_seconds histogram\n"));
        assert!(text.contains(
            "grpc_server_call_duration_seconds_bucket{grpc_method=\"S/M\",grpc_status=\"OK\",le=\"1.0\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "grpc_server_call_duration_seconds_bucket{grpc_method=\"S/M\",grpc_status=\"OK\",le=\"+Inf\"} 1\n"
        ));
        assert!(text.contains(
            "grpc_server_call_duration_seconds_count{grpc_method=\"S/M\",grpc_status=\"OK\"} 1\n"
        ));
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains(" # {"), "no exemplar was given: {text}");
    }

    #[test]
    fn label_values_and_help_are_escaped_as_openmetrics_says() {
        // A backslash, a double quote and a line feed are the three characters
        // an OpenMetrics label value and HELP text escape; anything else
        // (here a tab, a brace, a comma and non-ASCII) stays as it is.
        let registry = Registry::new();
        let gauge = prometheus::GaugeVec::new(
            prometheus::Opts::new(
                "sensorhub_sensor_temperature",
                "Last \\ \"reading\"\nper sensor",
            ),
            &["sensor_id"],
        )
        .unwrap();
        gauge
            .with_label_values(&["hall \"north\"\\wall\nb\t{x},é"])
            .set(21.5);
        registry.register(Box::new(gauge)).unwrap();
        let text = render(&registry.gather(), &[]);
        assert!(
            text.contains(
                "# HELP sensorhub_sensor_temperature Last \\\\ \\\"reading\\\"\\nper sensor\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sensorhub_sensor_temperature{sensor_id=\"hall \\\"north\\\"\\\\wall\\nb\t{x},é\"} 21.5\n"
            ),
            "{text}"
        );
        // Every line is one sample or one comment: no raw line feed leaked.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("sensorhub_sensor_temperature{"),
                "{line:?} in {text}"
            );
        }
    }

    #[test]
    fn an_exemplar_sits_on_its_series_and_bucket_only() {
        // 4 ms: bucket 1 (le=0.005) of the OK series.
        let text = render(&registry().gather(), &[exemplar(1, "OK")]);
        let with: Vec<&str> = text.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(
            with,
            [
                "grpc_server_call_duration_seconds_bucket{grpc_method=\"S/M\",grpc_status=\"OK\",le=\"0.005\"} 1 \
                 # {trace_id=\"0af7651916cd43dd8448eb211c80319c\",span_id=\"b7ad6b7169203331\"} 0.004 1700000000.250"
            ],
            "{text}"
        );
        // An exemplar of the +Inf bucket, which the registry lists too.
        let inf = render(&registry().gather(), &[exemplar(3, "INTERNAL")]);
        assert!(
            inf.lines()
                .any(|l| l.contains("grpc_status=\"INTERNAL\",le=\"+Inf\"} 1 # {")),
            "{inf}"
        );
    }
}
