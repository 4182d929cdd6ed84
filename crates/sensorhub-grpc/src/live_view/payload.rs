//! The JSON the page reads: the snapshot it starts from, the ticks that keep
//! it current, a sensor's series, one trace's span tree. One type per thing
//! shown, built from the domain's and the recorders' own types here, so the
//! page's contract is in one file (and `tests/it/live_view.rs` reads it back).
//!
//! Times are milliseconds since the Unix epoch (`*_ms`), durations
//! microseconds (`*_us`); a reading's own timestamp stays in seconds, as
//! sensors send it.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use sensorhub_core::{
    SensorStats,
    store::activity::{CommitTotals, RaisedAlert, StoreBacklog},
};
use sensorhub_rpc_telemetry::live::{
    InFlightSnapshot, LATENCY_BUCKET_LABELS, RpczSnapshot, RpczWindow, SpanOutcome, TraceRecord,
    TraceSummary, TracezSnapshot,
};
use serde::Serialize;

/// What the page starts from.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub server_time_ms: u64,
    /// Whether this server asks for a login (false with `--no-auth`).
    pub login_required: bool,
    /// The label of the identity the session acts as (its `name=`).
    pub identity: String,
    /// Whether the calls, calls in flight and traces are shown to it (an
    /// identity that may read every sensor); empty otherwise.
    pub sees_calls: bool,
    pub sensors: Vec<SensorRow>,
    /// More sensors exist than the table shows.
    pub more_sensors: bool,
    /// The charted sensors' series over the default range.
    pub series: Vec<Series>,
    /// Newest first.
    pub alerts: Vec<AlertItem>,
    pub calls: Vec<CallRow>,
    pub in_flight: InFlightView,
    /// `None` for an identity that does not see the calls.
    pub traces: Option<TracesView>,
    pub store: StoreView,
}

/// What changed since the last tick.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub server_time_ms: u64,
    /// Rows of the sensors whose statistics changed.
    pub sensors: Vec<SensorRow>,
    pub more_sensors: bool,
    /// New readings per sensor: `[timestamp s, temperature, seq]`, at most
    /// a few per sensor and tick (means when more arrived).
    pub points: BTreeMap<String, Vec<(i64, f64, u64)>>,
    /// Alerts raised since the last tick, oldest first.
    pub alerts: Vec<AlertItem>,
    pub calls: Vec<CallRow>,
    pub in_flight: InFlightView,
    /// `None`: the trace ring did not change.
    pub traces: Option<TracesView>,
    pub store: StoreView,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SensorRow {
    pub id: String,
    pub count: u64,
    pub last: f64,
    pub last_ts: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub rolling_mean: f64,
    pub alerts: u64,
}

impl From<&SensorStats> for SensorRow {
    fn from(s: &SensorStats) -> Self {
        Self {
            id: s.sensor_id.clone(),
            count: s.count,
            last: s.last,
            last_ts: s.last_timestamp,
            min: s.min,
            max: s.max,
            mean: s.mean(),
            rolling_mean: s.rolling_mean,
            alerts: s.alerts,
        }
    }
}

/// One sensor's readings over a range, at most a few hundred points.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub sensor: String,
    pub range: &'static str,
    /// Every reading up to this sequence number is in the series; live
    /// points after it are appended by the page.
    pub seq: u64,
    /// `[timestamp s, temperature]`: the readings, or the mean of each time
    /// bucket when there are more readings than points.
    pub points: Vec<(i64, f64)>,
    /// Whether the points are bucket means rather than the readings themselves.
    pub downsampled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertItem {
    pub number: u64,
    pub sensor: String,
    pub rule: &'static str,
    pub temperature: f64,
    pub timestamp: i64,
    pub threshold: f64,
    pub raised_ms: u64,
    pub message: String,
}

impl From<&RaisedAlert> for AlertItem {
    fn from(fed: &RaisedAlert) -> Self {
        Self {
            number: fed.number,
            sensor: fed.alert.sensor_id.clone(),
            rule: fed.alert.rule.as_str(),
            temperature: fed.alert.temperature,
            timestamp: fed.alert.timestamp,
            threshold: fed.alert.threshold,
            raised_ms: millis(fed.raised),
            message: fed.alert.describe(),
        }
    }
}

/// One row of the rpcz table.
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    pub method: String,
    pub status: &'static str,
    pub minute: WindowView,
    pub hour: WindowView,
    /// The share of the method's calls that did not end `OK`.
    pub method_error_rate_minute: f64,
    pub method_error_rate_hour: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    pub calls: u64,
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<&RpczWindow> for WindowView {
    fn from(w: &RpczWindow) -> Self {
        let ms = |s: Option<f64>| s.map(|s| s * 1e3);
        Self {
            calls: w.calls,
            rate: w.rate,
            p50_ms: ms(w.p50),
            p90_ms: ms(w.p90),
            p99_ms: ms(w.p99),
        }
    }
}

pub fn calls(snapshot: &RpczSnapshot) -> Vec<CallRow> {
    snapshot
        .rows
        .iter()
        .map(|r| CallRow {
            method: r.method.clone(),
            status: r.status,
            minute: (&r.minute).into(),
            hour: (&r.hour).into(),
            method_error_rate_minute: r.method_error_rate_minute,
            method_error_rate_hour: r.method_error_rate_hour,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct InFlightView {
    pub total: usize,
    pub untracked: u64,
    /// The oldest calls first.
    pub calls: Vec<InFlightItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InFlightItem {
    pub method: String,
    pub peer: Option<String>,
    pub started_ms: u64,
    pub age_ms: u64,
    pub received: u64,
    pub sent: u64,
    pub trace_id: Option<String>,
}

impl From<&InFlightSnapshot> for InFlightView {
    fn from(s: &InFlightSnapshot) -> Self {
        Self {
            total: s.total,
            untracked: s.untracked,
            calls: s
                .calls
                .iter()
                .map(|c| InFlightItem {
                    method: c.method.clone(),
                    peer: c.peer.map(|p| p.to_string()),
                    started_ms: millis(c.started),
                    age_ms: c.age.as_millis() as u64,
                    received: c.received,
                    sent: c.sent,
                    trace_id: c.trace_id.map(|t| t.to_string()),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TracesView {
    pub buckets: &'static [&'static str],
    pub rows: Vec<TracezRowView>,
    /// Newest first.
    pub errors: Vec<TraceSummaryView>,
    pub kept: u64,
    pub pending: usize,
    pub kept_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TracezRowView {
    pub name: String,
    /// Per latency bucket, newest first.
    pub buckets: Vec<Vec<TraceSummaryView>>,
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceSummaryView {
    pub id: u64,
    pub trace_id: Option<String>,
    pub name: String,
    pub start_ms: u64,
    pub duration_us: u64,
    pub error: bool,
    pub status: Option<String>,
    pub spans: usize,
    /// This trace in Jaeger, when `--jaeger-url` is given.
    pub jaeger: Option<String>,
}

/// Where Jaeger shows a trace.
pub fn jaeger_link(jaeger: Option<&str>, trace_id: Option<TraceId>) -> Option<String> {
    Some(format!(
        "{}/trace/{}",
        jaeger?.trim_end_matches('/'),
        trace_id?
    ))
}

fn summary(s: &TraceSummary, jaeger: Option<&str>) -> TraceSummaryView {
    TraceSummaryView {
        id: s.id,
        trace_id: s.trace_id.map(|t| t.to_string()),
        name: s.name.clone(),
        start_ms: millis(s.start),
        duration_us: micros(s.duration),
        error: s.error,
        status: s.status.clone(),
        spans: s.spans,
        jaeger: jaeger_link(jaeger, s.trace_id),
    }
}

pub fn traces(snapshot: &TracezSnapshot, jaeger: Option<&str>) -> TracesView {
    TracesView {
        buckets: &LATENCY_BUCKET_LABELS,
        rows: snapshot
            .rows
            .iter()
            .map(|row| TracezRowView {
                name: row.name.clone(),
                buckets: row
                    .buckets
                    .iter()
                    .map(|b| b.iter().map(|s| summary(s, jaeger)).collect())
                    .collect(),
                errors: row.errors,
            })
            .collect(),
        errors: snapshot.errors.iter().map(|s| summary(s, jaeger)).collect(),
        kept: snapshot.stats.kept,
        pending: snapshot.stats.pending,
        kept_bytes: snapshot.stats.kept_bytes,
    }
}

/// One trace as a span tree: `spans` in tree order (depth-first, children by
/// start time), each with its depth.
#[derive(Debug, Clone, Serialize)]
pub struct TraceView {
    pub summary: TraceSummaryView,
    pub spans: Vec<SpanView>,
    pub dropped_spans: u32,
    pub root_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanView {
    pub span_id: Option<String>,
    pub depth: usize,
    pub name: String,
    pub kind: &'static str,
    /// From the start of the trace's earliest span.
    pub offset_us: u64,
    pub duration_us: u64,
    pub error: bool,
    pub status: Option<String>,
    pub attributes: Vec<(String, String)>,
}

pub fn trace(record: &TraceRecord, jaeger: Option<&str>) -> TraceView {
    let summary = summary(
        &TraceSummary {
            id: record.id,
            trace_id: record.trace_id,
            name: record.name.clone(),
            start: record.start,
            duration: record.duration,
            error: record.error,
            status: record.status.clone(),
            spans: record.spans.len(),
        },
        jaeger,
    );
    let earliest = record
        .spans
        .iter()
        .map(|s| s.start)
        .min()
        .unwrap_or(record.start);
    let known = |id: SpanId| id != SpanId::INVALID && record.spans.iter().any(|s| s.span_id == id);
    // Roots: spans whose parent is not in the trace (the root, and orphans
    // whose parent was not kept), by start time.
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut roots: Vec<usize> = (0..record.spans.len())
        .filter(|&i| !known(record.spans[i].parent_span_id))
        .collect();
    roots.sort_by_key(|&i| record.spans[i].start);
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if order.len() > record.spans.len() {
            break; // a cycle of ids: never loop
        }
        order.push((i, depth));
        let id = record.spans[i].span_id;
        if id == SpanId::INVALID {
            continue;
        }
        let mut children: Vec<usize> = (0..record.spans.len())
            .filter(|&c| c != i && record.spans[c].parent_span_id == id)
            .collect();
        children.sort_by_key(|&c| record.spans[c].start);
        stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
    }
    let spans = order
        .into_iter()
        .map(|(i, depth)| {
            let span = &record.spans[i];
            SpanView {
                span_id: (span.span_id != SpanId::INVALID).then(|| span.span_id.to_string()),
                depth,
                name: span.name.clone(),
                kind: kind(&span.kind),
                offset_us: micros(
                    span.start
                        .duration_since(earliest)
                        .unwrap_or(Duration::ZERO),
                ),
                duration_us: micros(span.duration),
                error: span.failed(),
                status: match &span.outcome {
                    SpanOutcome::Error(message) if !message.is_empty() => Some(message.clone()),
                    _ => span.rpc_status.clone(),
                },
                attributes: span.attributes.clone(),
            }
        })
        .collect();
    TraceView {
        summary,
        spans,
        dropped_spans: record.dropped_spans,
        root_only: record.root_only,
    }
}

fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

/// The store panel: queue, lag, and the commits since the previous look.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StoreView {
    pub queued_writes: usize,
    pub queue_capacity: usize,
    /// Readings acknowledged that queries do not see yet.
    pub indexer_lag: u64,
    pub commits_per_s: f64,
    pub readings_per_s: f64,
    /// Mean readings per group commit, and mean commit time, over the interval.
    pub mean_group: Option<f64>,
    pub mean_commit_ms: Option<f64>,
}

/// The store panel from two looks at the commit totals, `elapsed` apart,
/// and the backlog now.
pub fn store(
    now: &CommitTotals,
    before: &CommitTotals,
    backlog: StoreBacklog,
    elapsed: Duration,
) -> StoreView {
    let commits = now.commits.saturating_sub(before.commits);
    let readings = now.readings.saturating_sub(before.readings);
    let micros = now.micros.saturating_sub(before.micros);
    let seconds = elapsed.as_secs_f64().max(1e-3);
    StoreView {
        queued_writes: backlog.queued_writes,
        queue_capacity: backlog.queue_capacity,
        indexer_lag: backlog.index_lag,
        commits_per_s: commits as f64 / seconds,
        readings_per_s: readings as f64 / seconds,
        mean_group: (commits > 0).then(|| readings as f64 / commits as f64),
        mean_commit_ms: (commits > 0).then(|| micros as f64 / commits as f64 / 1e3),
    }
}

pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use sensorhub_rpc_telemetry::live::SpanRecord;

    use super::*;

    fn span(id: u8, parent: u8, name: &str, start_us: u64) -> SpanRecord {
        SpanRecord {
            span_id: SpanId::from_bytes([id; 8]),
            parent_span_id: if parent == 0 {
                SpanId::INVALID
            } else {
                SpanId::from_bytes([parent; 8])
            },
            name: name.into(),
            kind: SpanKind::Internal,
            start: UNIX_EPOCH + Duration::from_micros(start_us),
            duration: Duration::from_micros(10),
            outcome: SpanOutcome::Unset,
            rpc_status: None,
            attributes: Vec::new(),
        }
    }

    #[test]
    fn a_trace_is_laid_out_depth_first_with_children_by_start() {
        let record = TraceRecord {
            id: 1,
            trace_id: Some(TraceId::from_bytes([1; 16])),
            name: "root".into(),
            start: UNIX_EPOCH,
            duration: Duration::from_micros(100),
            error: false,
            status: None,
            spans: vec![
                span(4, 2, "grandchild", 30),
                span(3, 1, "second child", 50),
                span(2, 1, "first child", 20),
                span(9, 8, "orphan", 60),
                span(1, 0, "root", 0),
            ],
            dropped_spans: 0,
            root_only: false,
        };
        let view = trace(&record, Some("http://jaeger:16686/"));
        let laid_out: Vec<_> = view
            .spans
            .iter()
            .map(|s| (s.name.as_str(), s.depth, s.offset_us))
            .collect();
        assert_eq!(
            laid_out,
            [
                ("root", 0, 0),
                ("first child", 1, 20),
                ("grandchild", 2, 30),
                ("second child", 1, 50),
                ("orphan", 0, 60),
            ]
        );
        assert_eq!(
            view.summary.jaeger.as_deref(),
            Some("http://jaeger:16686/trace/01010101010101010101010101010101")
        );
    }

    #[test]
    fn the_store_panel_is_the_difference_of_two_looks() {
        let before = CommitTotals {
            commits: 10,
            readings: 100,
            micros: 10_000,
        };
        let now = CommitTotals {
            commits: 20,
            readings: 300,
            micros: 30_000,
        };
        let backlog = StoreBacklog {
            queued_writes: 3,
            queue_capacity: 1024,
            index_lag: 20,
        };
        let view = store(&now, &before, backlog, Duration::from_secs(2));
        assert_eq!(view.commits_per_s, 5.0);
        assert_eq!(view.readings_per_s, 100.0);
        assert_eq!(view.mean_group, Some(20.0));
        assert_eq!(view.mean_commit_ms, Some(2.0));
        assert_eq!((view.indexer_lag, view.queued_writes), (20, 3));
        assert_eq!(
            store(&now, &now, backlog, Duration::from_secs(1)).mean_group,
            None
        );
    }
}
