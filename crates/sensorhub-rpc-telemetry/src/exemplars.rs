//! Exemplars for the server's call-duration histograms: for each series
//! (method, status) and each bucket, the last *sampled* call whose duration
//! fell in that bucket, with its trace and span id. A Prometheus scrape in
//! OpenMetrics shows them on the bucket lines, and Grafana links a slow
//! bucket to its trace.
//!
//! Why our own: the OpenTelemetry Rust SDK (0.33) records no exemplars. Its
//! data model has the types (`HistogramDataPoint::exemplars`), but their
//! fields are crate-private and every aggregator writes an empty list, and
//! there is no reservoir or exemplar-filter hook to plug in
//! (opentelemetry-rust #3369). `prometheus-client` writes OpenMetrics
//! exemplars, but only for histograms it counts itself (its `Exemplar` has
//! no public constructor), which would count every call twice, in two
//! histograms that could disagree. Here the SDK stays the one source of the
//! counts; this reservoir only remembers which trace landed in which bucket,
//! using the SDK's own bucket rule (`value <= le`, the first bound not below
//! the value), so an exemplar sits on the very series and bucket the counts
//! are in.
//!
//! Cost per call: for an unsampled call, nothing but the sampled flag; for a
//! sampled one, a bucket search and an uncontended lock per instrument. The
//! memory is bounded by the methods the server registers (plus `other`),
//! the 17 status codes and the bucket counts, and a row is only allocated
//! for a (method, status) that has been seen.
//!
//! Invariant: knows nothing of Prometheus or any exporter; the renderer (in
//! the SDK wiring) reads [`ExemplarReservoir::collect`].

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::SystemTime,
};

use opentelemetry::trace::{SpanContext, SpanId, TraceId};

use crate::conventions::{a66, semconv, status_name};

/// The histograms that carry exemplars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExemplarInstrument {
    /// A66 `grpc.server.call.duration`.
    A66ServerDuration,
    /// Semconv `rpc.server.call.duration`.
    SemconvServerDuration,
}

impl ExemplarInstrument {
    const ALL: [ExemplarInstrument; 2] = [Self::A66ServerDuration, Self::SemconvServerDuration];

    /// The instrument's OpenTelemetry name.
    pub fn name(self) -> &'static str {
        match self {
            Self::A66ServerDuration => a66::SERVER_CALL_DURATION,
            Self::SemconvServerDuration => semconv::SERVER_CALL_DURATION,
        }
    }

    /// The attribute that holds the method.
    pub fn method_key(self) -> &'static str {
        match self {
            Self::A66ServerDuration => a66::METHOD,
            Self::SemconvServerDuration => semconv::RPC_METHOD,
        }
    }

    /// The attributes that may hold the status (semconv's depends on the
    /// stability mode; any one present identifies the series).
    pub fn status_keys(self) -> &'static [&'static str] {
        match self {
            Self::A66ServerDuration => &[a66::STATUS],
            Self::SemconvServerDuration => {
                &[semconv::RPC_RESPONSE_STATUS_CODE, semconv::RPC_STATUS_CODE]
            }
        }
    }

    /// The bucket boundaries, seconds.
    pub fn bounds(self) -> &'static [f64] {
        match self {
            Self::A66ServerDuration => a66::LATENCY_BUCKETS,
            Self::SemconvServerDuration => semconv::DURATION_BUCKETS,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One sampled measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The measured duration, seconds.
    pub value: f64,
    pub time: SystemTime,
}

/// One exemplar and where it belongs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarEntry {
    pub instrument: ExemplarInstrument,
    /// The method as the instrument records it (`other` and `_OTHER` for
    /// unregistered ones).
    pub method: Arc<str>,
    /// The status name (`OK`, …).
    pub status: &'static str,
    /// The bucket's index among the instrument's buckets; `bounds().len()`
    /// is `+Inf`.
    pub bucket: usize,
    pub exemplar: Exemplar,
}

/// The 17 gRPC status codes; anything else is recorded as `UNKNOWN` (2).
const STATUSES: usize = 17;

/// The last exemplar of each bucket of one (instrument, method, status).
type Row = Box<[Mutex<Option<Exemplar>>]>;

/// One method's rows: per instrument, per status, allocated when first used.
#[derive(Debug)]
pub(crate) struct MethodExemplars {
    names: [Arc<str>; 2],
    rows: [[OnceLock<Row>; STATUSES]; 2],
}

impl MethodExemplars {
    /// Remembers a sampled call: its duration `value` with status `code`.
    pub(crate) fn record(&self, span: &SpanContext, code: i32, value: f64) {
        if !span.is_sampled() {
            return;
        }
        let status = usize::try_from(code)
            .ok()
            .filter(|&s| s < STATUSES)
            .unwrap_or(2);
        let exemplar = Exemplar {
            trace_id: span.trace_id(),
            span_id: span.span_id(),
            value,
            time: SystemTime::now(),
        };
        for instrument in ExemplarInstrument::ALL {
            let bounds = instrument.bounds();
            let row = self.rows[instrument.index()][status].get_or_init(|| {
                (0..=bounds.len())
                    .map(|_| Mutex::new(None))
                    .collect::<Vec<_>>()
                    .into_boxed_slice()
            });
            // The SDK's bucket rule: the first bound not below the value.
            let bucket = bounds.partition_point(|&bound| bound < value);
            *row[bucket].lock().unwrap_or_else(|e| e.into_inner()) = Some(exemplar);
        }
    }
}

/// Exemplars of every method of one server.
#[derive(Debug, Default)]
pub struct ExemplarReservoir {
    methods: Mutex<Vec<Arc<MethodExemplars>>>,
}

impl ExemplarReservoir {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The rows of the method recorded as `a66_name` (A66) and
    /// `semconv_name` (semconv); one set per method, however often asked.
    pub(crate) fn method(&self, a66_name: &str, semconv_name: &str) -> Arc<MethodExemplars> {
        let mut methods = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = methods.iter().find(|m| &*m.names[0] == a66_name) {
            return found.clone();
        }
        let method = Arc::new(MethodExemplars {
            names: [Arc::from(a66_name), Arc::from(semconv_name)],
            rows: Default::default(),
        });
        methods.push(method.clone());
        method
    }

    /// Every exemplar held now.
    pub fn collect(&self) -> Vec<ExemplarEntry> {
        let methods = self
            .methods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut entries = Vec::new();
        for method in methods {
            for instrument in ExemplarInstrument::ALL {
                let i = instrument.index();
                for (code, row) in method.rows[i].iter().enumerate() {
                    let Some(row) = row.get() else { continue };
                    for (bucket, slot) in row.iter().enumerate() {
                        if let Some(exemplar) = *slot.lock().unwrap_or_else(|e| e.into_inner()) {
                            entries.push(ExemplarEntry {
                                instrument,
                                method: method.names[i].clone(),
                                status: status_name(code as i32),
                                bucket,
                                exemplar,
                            });
                        }
                    }
                }
            }
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceFlags, TraceState};

    use super::*;

    fn span(trace: u128, sampled: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(trace as u64),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn a_sampled_call_lands_in_the_bucket_the_sdk_counts_it_in() {
        let reservoir = ExemplarReservoir::new();
        let method = reservoir.method("S/M", "S/M");
        // 3 ms: A66 bucket le=0.003 (index 9), semconv le=0.005 (index 0).
        method.record(&span(7, true), 0, 0.003);
        let mut entries = reservoir.collect();
        entries.sort_by_key(|e| e.instrument.index());
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0].instrument, ExemplarInstrument::A66ServerDuration);
        assert_eq!(a66::LATENCY_BUCKETS[entries[0].bucket], 0.003);
        assert_eq!(entries[1].bucket, 0);
        assert_eq!(entries[0].status, "OK");
        assert_eq!(&*entries[0].method, "S/M");
        assert_eq!(entries[0].exemplar.trace_id, TraceId::from(7u128));
        assert_eq!(entries[0].exemplar.value, 0.003);
    }

    #[test]
    fn unsampled_calls_leave_none_and_the_last_sampled_one_wins() {
        let reservoir = ExemplarReservoir::new();
        let method = reservoir.method("other", "_OTHER");
        method.record(&span(1, false), 14, 0.5);
        assert!(reservoir.collect().is_empty());
        method.record(&span(2, true), 14, 500.0);
        method.record(&span(3, true), 14, 300.0);
        let entries = reservoir.collect();
        let a66 = entries
            .iter()
            .find(|e| e.instrument == ExemplarInstrument::A66ServerDuration)
            .unwrap();
        // Over the last bound: the +Inf bucket.
        assert_eq!(a66.bucket, a66::LATENCY_BUCKETS.len());
        assert_eq!(a66.exemplar.trace_id, TraceId::from(3u128));
        assert_eq!(a66.status, "UNAVAILABLE");
        let semconv = entries
            .iter()
            .find(|e| e.instrument == ExemplarInstrument::SemconvServerDuration)
            .unwrap();
        assert_eq!(&*semconv.method, "_OTHER");
        assert!(Arc::ptr_eq(&method, &reservoir.method("other", "_OTHER")));
    }
}
