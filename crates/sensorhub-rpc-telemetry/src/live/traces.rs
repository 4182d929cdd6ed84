//! Recent finished traces, as OpenCensus zPages' `/tracez` kept them: per
//! root span name, a few samples in each latency bucket, and every recent
//! error, each a whole span tree.
//!
//! A trace is assembled while it runs, so its root must be chosen when it
//! starts: [`TraceRing::admit`] is asked at each local root's sampling
//! decision (the SDK crate's sampler does it), and admits at most one trace
//! per root name every [`ADMIT_INTERVAL`]. The spans of an admitted trace are
//! kept as they end ([`TraceRing::span_ended`]); when its root ends, the
//! trace is filed under its name and latency bucket, or among the errors.
//! Spans of other traces cost one lock and a hash lookup, and nothing is
//! copied. A failed root that was not admitted is still kept, alone
//! ([`TraceRing::keep_root_only`]), and so is a failed call whose span was not
//! recorded at all ([`TraceRing::keep_unrecorded_call`], from the layer), so
//! every recent error is listed even when tracing is sampled or off.
//!
//! An error is a span with an error status or with a gRPC status other than
//! `OK` (zPages counted any non-OK status; OpenTelemetry's server-span rule
//! would hide `INVALID_ARGUMENT`, which is what a user looks for).
//!
//! Bounds, all enforced here whoever feeds the ring:
//! - a span keeps at most [`MAX_NAME_CHARS`] of its name, [`MAX_ATTRIBUTES`]
//!   attributes of at most [`MAX_VALUE_CHARS`], and [`MAX_VALUE_CHARS`] of
//!   its status message;
//! - at most [`MAX_PENDING`] traces are assembled at once ([`MAX_PENDING_PER_NAME`]
//!   per name, so long streams of one method cannot take every place),
//!   each with at most [`MAX_SPANS_PER_TRACE`] spans, all of them within
//!   [`MAX_PENDING_BYTES`];
//! - at most [`SAMPLES_PER_BUCKET`] traces per name and bucket for
//!   [`MAX_NAMES`] names, and [`MAX_ERRORS`] errors, all within
//!   [`MAX_KEPT_BYTES`] (the oldest go first).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::trace::{SpanId, SpanKind, TraceId};

/// At most one trace per root name is admitted this often.
pub const ADMIT_INTERVAL: Duration = Duration::from_millis(250);
pub const MAX_PENDING: usize = 256;
pub const MAX_PENDING_PER_NAME: usize = 16;
/// A pending trace older than this gives its place to a new one of its name.
pub const PENDING_REPLACEABLE_AFTER: Duration = Duration::from_secs(60);
pub const MAX_SPANS_PER_TRACE: usize = 128;
pub const MAX_PENDING_BYTES: usize = 4 << 20;
pub const MAX_NAMES: usize = 32;
pub const SAMPLES_PER_BUCKET: usize = 2;
pub const MAX_ERRORS: usize = 64;
pub const MAX_KEPT_BYTES: usize = 8 << 20;
pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_ATTRIBUTES: usize = 24;
pub const MAX_VALUE_CHARS: usize = 256;

/// zPages' latency buckets: upper bounds, the last one open.
const BUCKET_BOUNDS: [Duration; 8] = [
    Duration::from_micros(10),
    Duration::from_micros(100),
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(100),
];
pub const LATENCY_BUCKET_LABELS: [&str; 9] = [
    "<10µs", "<100µs", "<1ms", "<10ms", "<100ms", "<1s", "<10s", "<100s", "≥100s",
];

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanOutcome {
    Unset,
    Ok,
    Error(String),
}

/// One finished span, in the ring's own terms (no SDK type).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub span_id: SpanId,
    /// `SpanId::INVALID`: no parent.
    pub parent_span_id: SpanId,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub duration: Duration,
    pub outcome: SpanOutcome,
    /// The gRPC status name of an RPC span (`OK`, `INVALID_ARGUMENT`).
    pub rpc_status: Option<String>,
    /// Attribute keys and values, formatted.
    pub attributes: Vec<(String, String)>,
}

impl SpanRecord {
    /// Whether this span failed (see the module docs).
    pub fn failed(&self) -> bool {
        matches!(self.outcome, SpanOutcome::Error(_))
            || self.rpc_status.as_deref().is_some_and(|s| s != "OK")
    }

    /// Cuts every string to the ring's bounds.
    fn clamp(&mut self) {
        truncate(&mut self.name, MAX_NAME_CHARS);
        if let SpanOutcome::Error(message) = &mut self.outcome {
            truncate(message, MAX_VALUE_CHARS);
        }
        if let Some(status) = &mut self.rpc_status {
            truncate(status, MAX_NAME_CHARS);
        }
        self.attributes.truncate(MAX_ATTRIBUTES);
        for (key, value) in &mut self.attributes {
            truncate(key, MAX_NAME_CHARS);
            truncate(value, MAX_VALUE_CHARS);
        }
    }

    /// What the span holds in memory, approximately.
    fn bytes(&self) -> usize {
        let message = match &self.outcome {
            SpanOutcome::Error(m) => m.len(),
            _ => 0,
        };
        std::mem::size_of::<Self>()
            + self.name.len()
            + message
            + self.rpc_status.as_ref().map_or(0, String::len)
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
    }
}

/// One kept trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    /// The ring's own number for it (a trace may have no valid trace id).
    pub id: u64,
    /// `None` for a call recorded without a trace id (tracing off).
    pub trace_id: Option<TraceId>,
    /// The local root's name.
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    pub error: bool,
    /// The root's gRPC status, or the first error's.
    pub status: Option<String>,
    /// Spans in the order they ended (the root last).
    pub spans: Vec<SpanRecord>,
    /// Spans of this trace that ended but were not kept (over a bound, or
    /// before the trace was admitted).
    pub dropped_spans: u32,
    /// Only the root was kept: the trace was not admitted when it began.
    pub root_only: bool,
}

/// A kept trace in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub id: u64,
    pub trace_id: Option<TraceId>,
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    pub error: bool,
    pub status: Option<String>,
    pub spans: usize,
}

/// One root name of the tracez table: its samples per latency bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct TracezRow {
    pub name: String,
    /// Newest first, per bucket of [`LATENCY_BUCKET_LABELS`].
    pub buckets: Vec<Vec<TraceSummary>>,
    pub errors: usize,
}

/// What the ring holds, for the page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TracezSnapshot {
    /// Changes whenever a trace is kept or dropped.
    pub generation: u64,
    pub rows: Vec<TracezRow>,
    /// Newest first.
    pub errors: Vec<TraceSummary>,
    pub stats: TraceRingStats,
}

/// Counters since the ring was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceRingStats {
    pub admitted: u64,
    pub kept: u64,
    pub pending: usize,
    pub kept_bytes: usize,
    pub pending_bytes: usize,
    pub dropped_spans: u64,
}

/// The ring. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct TraceRing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    generation: AtomicU64,
    /// Before this (nanoseconds since `epoch`) no known name may be admitted.
    quiet_until: AtomicU64,
    epoch: Instant,
    /// How many traces are being assembled (`State::pending.len()`, written
    /// under the lock).
    pending_traces: AtomicUsize,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            generation: AtomicU64::new(0),
            quiet_until: AtomicU64::new(0),
            epoch: Instant::now(),
            pending_traces: AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<TraceId, Pending>,
    pending_bytes: usize,
    names: HashMap<String, NameState>,
    kept: VecDeque<Kept>,
    kept_bytes: usize,
    next_id: u64,
    stats: TraceRingStats,
}

#[derive(Debug)]
struct Pending {
    name: String,
    admitted: Instant,
    spans: Vec<SpanRecord>,
    bytes: usize,
    dropped: u32,
}

#[derive(Debug, Default)]
struct NameState {
    next_admit: Option<Instant>,
    pending: usize,
}

#[derive(Debug)]
struct Kept {
    trace: Arc<TraceRecord>,
    role: Role,
    bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Sample { name: String, bucket: usize },
    Error,
}

impl TraceRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// At the start of a local root (a span with no parent in this process):
    /// should its trace be assembled? `true` if it is already, or if its
    /// name may have one more now.
    pub fn admit(&self, trace_id: TraceId, name: &str, now: Instant) -> bool {
        let mut state = self.lock();
        if state.pending.contains_key(&trace_id) {
            return true;
        }
        self.admit_locked(&mut state, trace_id, name, now)
    }

    /// [`Self::admit`] for a trace that starts here (it cannot be pending):
    /// while no known name may have one more ([`ADMIT_INTERVAL`] since each
    /// was last admitted), it answers from one atomic load, without the
    /// lock. So most calls of a busy server pay nothing here, and a name
    /// seen for the first time waits at most one interval.
    pub fn admit_new(&self, trace_id: TraceId, name: &str, now: Instant) -> bool {
        if self.nanos(now) < self.inner.quiet_until.load(Ordering::Relaxed) {
            return false;
        }
        let mut state = self.lock();
        self.admit_locked(&mut state, trace_id, name, now)
    }

    /// Nanoseconds from the ring's epoch to `now`.
    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.epoch).as_nanos() as u64
    }

    fn admit_locked(&self, state: &mut State, trace_id: TraceId, name: &str, now: Instant) -> bool {
        let key = clamped(name, MAX_NAME_CHARS);
        if !state.names.contains_key(key.as_ref()) {
            if state.names.len() >= MAX_NAMES {
                return false;
            }
            state
                .names
                .insert(key.clone().into_owned(), NameState::default());
        }
        let entry = &state.names[key.as_ref()];
        if entry.next_admit.is_some_and(|next| now < next) {
            return false;
        }
        if entry.pending >= MAX_PENDING_PER_NAME {
            // Make room by dropping this name's oldest pending trace, if it
            // has waited long enough (a stream open for hours).
            let oldest = state
                .pending
                .iter()
                .filter(|(_, p)| p.name == key.as_ref())
                .min_by_key(|(_, p)| p.admitted)
                .map(|(id, p)| (*id, p.admitted));
            match oldest {
                Some((id, admitted))
                    if now.saturating_duration_since(admitted) >= PENDING_REPLACEABLE_AFTER =>
                {
                    state.forget_pending(&id);
                    self.inner
                        .pending_traces
                        .store(state.pending.len(), Ordering::Relaxed);
                }
                _ => return false,
            }
        }
        if state.pending.len() >= MAX_PENDING {
            return false;
        }
        let entry = state.names.get_mut(key.as_ref()).expect("inserted above");
        entry.next_admit = Some(now + ADMIT_INTERVAL);
        entry.pending += 1;
        // The earliest moment any known name may have one more.
        let quiet = state
            .names
            .values()
            .map(|n| n.next_admit.map_or(0, |next| self.nanos(next)))
            .min()
            .unwrap_or(0);
        self.inner.quiet_until.store(quiet, Ordering::Relaxed);
        state.pending.insert(
            trace_id,
            Pending {
                name: key.into_owned(),
                admitted: now,
                spans: Vec::new(),
                bytes: 0,
                dropped: 0,
            },
        );
        state.stats.admitted += 1;
        self.inner
            .pending_traces
            .store(state.pending.len(), Ordering::Relaxed);
        true
    }

    /// Whether the trace is being assembled (its spans are wanted). While
    /// none is, one atomic load answers, without the lock: a server that
    /// exports every span asks this at the end of each.
    pub fn is_pending(&self, trace_id: TraceId) -> bool {
        if self.inner.pending_traces.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.lock().pending.contains_key(&trace_id)
    }

    /// A span of a pending trace ended; `local_root`: it is the trace's
    /// root in this process, so the trace is complete. Spans of traces
    /// that are not pending are ignored.
    pub fn span_ended(&self, trace_id: TraceId, mut span: SpanRecord, local_root: bool) {
        span.clamp();
        let bytes = span.bytes();
        let mut state = self.lock();
        if !state.pending.contains_key(&trace_id) {
            return;
        }
        if local_root {
            let mut pending = state.forget_pending(&trace_id).expect("pending");
            self.inner
                .pending_traces
                .store(state.pending.len(), Ordering::Relaxed);
            pending.spans.push(span);
            let trace = state.finish(Some(trace_id), pending);
            state.keep(trace);
            drop(state);
            self.inner.generation.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let over_bytes = state.pending_bytes + bytes > MAX_PENDING_BYTES;
        let pending = state.pending.get_mut(&trace_id).expect("pending");
        if pending.spans.len() >= MAX_SPANS_PER_TRACE || over_bytes {
            pending.dropped += 1;
            state.stats.dropped_spans += 1;
        } else {
            pending.spans.push(span);
            pending.bytes += bytes;
            state.pending_bytes += bytes;
        }
    }

    /// A failed local root whose trace was not admitted: kept alone among
    /// the errors (a root that did not fail is ignored).
    pub fn keep_root_only(&self, trace_id: TraceId, mut root: SpanRecord) {
        if !root.failed() {
            return;
        }
        root.clamp();
        let mut state = self.lock();
        let trace = state.single(Some(trace_id), root);
        state.keep(trace);
        drop(state);
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed call whose span was not recorded (tracing off or not
    /// sampled), as the server layer saw it. A call that ended `OK` is ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn keep_unrecorded_call(
        &self,
        trace_id: TraceId,
        method: &str,
        status: &'static str,
        start: SystemTime,
        duration: Duration,
        peer: Option<SocketAddr>,
        (received, sent): (u64, u64),
    ) {
        if status == "OK" {
            return;
        }
        let mut attributes = vec![
            ("rpc.method".to_owned(), method.to_owned()),
            ("rpc.response.status_code".to_owned(), status.to_owned()),
            ("messages.received".to_owned(), received.to_string()),
            ("messages.sent".to_owned(), sent.to_string()),
        ];
        if let Some(peer) = peer {
            attributes.push(("network.peer.address".to_owned(), peer.ip().to_string()));
        }
        let mut root = SpanRecord {
            span_id: SpanId::INVALID,
            parent_span_id: SpanId::INVALID,
            name: method.to_owned(),
            kind: SpanKind::Server,
            start,
            duration,
            outcome: SpanOutcome::Unset,
            rpc_status: Some(status.to_owned()),
            attributes,
        };
        root.clamp();
        let trace_id = (trace_id != TraceId::INVALID).then_some(trace_id);
        let mut state = self.lock();
        let trace = state.single(trace_id, root);
        state.keep(trace);
        drop(state);
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever the kept traces change: a reader can skip an
    /// unchanged ring.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    /// The tracez table and the errors.
    pub fn snapshot(&self) -> TracezSnapshot {
        let state = self.lock();
        let mut rows: Vec<TracezRow> = Vec::new();
        let mut errors = Vec::new();
        for kept in state.kept.iter().rev() {
            let summary = summary(&kept.trace);
            let row = match rows.iter().position(|r| r.name == kept.trace.name) {
                Some(i) => i,
                None => {
                    rows.push(TracezRow {
                        name: kept.trace.name.clone(),
                        buckets: vec![Vec::new(); LATENCY_BUCKET_LABELS.len()],
                        errors: 0,
                    });
                    rows.len() - 1
                }
            };
            match &kept.role {
                Role::Sample { bucket, .. } => rows[row].buckets[*bucket].push(summary),
                Role::Error => {
                    rows[row].errors += 1;
                    errors.push(summary);
                }
            }
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut stats = state.stats;
        stats.pending = state.pending.len();
        stats.kept_bytes = state.kept_bytes;
        stats.pending_bytes = state.pending_bytes;
        TracezSnapshot {
            generation: self.generation(),
            rows,
            errors,
            stats,
        }
    }

    /// One kept trace, by the ring's number for it.
    pub fn get(&self, id: u64) -> Option<Arc<TraceRecord>> {
        self.lock()
            .kept
            .iter()
            .find(|k| k.trace.id == id)
            .map(|k| k.trace.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn forget_pending(&mut self, trace_id: &TraceId) -> Option<Pending> {
        let pending = self.pending.remove(trace_id)?;
        self.pending_bytes -= pending.bytes;
        if let Some(name) = self.names.get_mut(&pending.name) {
            name.pending -= 1;
        }
        Some(pending)
    }

    fn finish(&mut self, trace_id: Option<TraceId>, pending: Pending) -> TraceRecord {
        let root = pending.spans.last().expect("the root");
        let error = pending.spans.iter().any(SpanRecord::failed);
        let status = root
            .rpc_status
            .clone()
            .filter(|_| !error || root.failed())
            .or_else(|| {
                pending
                    .spans
                    .iter()
                    .find(|s| s.failed())
                    .and_then(|s| match &s.outcome {
                        SpanOutcome::Error(m) => Some(m.clone()),
                        _ => s.rpc_status.clone(),
                    })
            })
            .or_else(|| root.rpc_status.clone());
        self.next_id += 1;
        TraceRecord {
            id: self.next_id,
            trace_id,
            name: root.name.clone(),
            start: root.start,
            duration: root.duration,
            error,
            status,
            dropped_spans: pending.dropped,
            root_only: false,
            spans: pending.spans,
        }
    }

    fn single(&mut self, trace_id: Option<TraceId>, root: SpanRecord) -> TraceRecord {
        let status = match &root.outcome {
            SpanOutcome::Error(message) if root.rpc_status.is_none() => Some(message.clone()),
            _ => root.rpc_status.clone(),
        };
        self.next_id += 1;
        TraceRecord {
            id: self.next_id,
            trace_id,
            name: root.name.clone(),
            start: root.start,
            duration: root.duration,
            error: true,
            status,
            dropped_spans: 0,
            root_only: true,
            spans: vec![root],
        }
    }

    fn keep(&mut self, trace: TraceRecord) {
        let role = if trace.error {
            Role::Error
        } else {
            Role::Sample {
                name: trace.name.clone(),
                bucket: bucket_of(trace.duration),
            }
        };
        let (same_role, limit) = match &role {
            Role::Error => (
                self.kept.iter().filter(|k| k.role == Role::Error).count(),
                MAX_ERRORS,
            ),
            sample => (
                self.kept.iter().filter(|k| &k.role == sample).count(),
                SAMPLES_PER_BUCKET,
            ),
        };
        if same_role >= limit
            && let Some(oldest) = self.kept.iter().position(|k| k.role == role)
        {
            let gone = self.kept.remove(oldest).expect("present");
            self.kept_bytes -= gone.bytes;
        }
        let bytes = std::mem::size_of::<TraceRecord>()
            + trace.name.len()
            + trace.spans.iter().map(SpanRecord::bytes).sum::<usize>();
        self.kept_bytes += bytes;
        self.stats.kept += 1;
        self.kept.push_back(Kept {
            trace: Arc::new(trace),
            role,
            bytes,
        });
        while self.kept_bytes > MAX_KEPT_BYTES {
            match self.kept.pop_front() {
                Some(gone) => self.kept_bytes -= gone.bytes,
                None => break,
            }
        }
    }
}

fn summary(trace: &TraceRecord) -> TraceSummary {
    TraceSummary {
        id: trace.id,
        trace_id: trace.trace_id,
        name: trace.name.clone(),
        start: trace.start,
        duration: trace.duration,
        error: trace.error,
        status: trace.status.clone(),
        spans: trace.spans.len(),
    }
}

/// The zPages latency bucket of a duration.
pub fn bucket_of(duration: Duration) -> usize {
    BUCKET_BOUNDS.partition_point(|&bound| bound <= duration)
}

/// `text` cut to at most `chars` characters, borrowed when it is short enough.
fn clamped(text: &str, chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(chars) {
        Some((at, _)) => std::borrow::Cow::Owned(text[..at].to_owned()),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// Cuts `text` to at most `chars` characters.
fn truncate(text: &mut String, chars: usize) {
    if let Some((at, _)) = text.char_indices().nth(chars) {
        text.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(n: u8) -> TraceId {
        TraceId::from_bytes([n; 16])
    }

    fn span(id: u8, parent: u8, name: &str, micros: u64, rpc_status: Option<&str>) -> SpanRecord {
        SpanRecord {
            span_id: SpanId::from_bytes([id; 8]),
            parent_span_id: if parent == 0 {
                SpanId::INVALID
            } else {
                SpanId::from_bytes([parent; 8])
            },
            name: name.to_owned(),
            kind: SpanKind::Server,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_micros(micros),
            outcome: SpanOutcome::Unset,
            rpc_status: rpc_status.map(str::to_owned),
            attributes: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn an_admitted_trace_is_kept_whole_under_its_latency_bucket() {
        let ring = TraceRing::new();
        let now = Instant::now();
        assert!(ring.admit(trace(1), "S/Unary", now));
        assert!(ring.admit(trace(1), "S/Unary", now), "already pending");
        assert!(ring.is_pending(trace(1)));
        let generation = ring.generation();
        ring.span_ended(trace(1), span(2, 1, "INSERT readings", 300, None), false);
        ring.span_ended(trace(1), span(1, 0, "S/Unary", 2_500, Some("OK")), true);
        assert!(!ring.is_pending(trace(1)));
        assert_ne!(ring.generation(), generation);

        let snapshot = ring.snapshot();
        assert_eq!(snapshot.rows.len(), 1);
        let row = &snapshot.rows[0];
        assert_eq!(row.name, "S/Unary");
        assert_eq!(
            row.buckets[bucket_of(Duration::from_micros(2_500))].len(),
            1
        );
        assert_eq!(
            LATENCY_BUCKET_LABELS[bucket_of(Duration::from_micros(2_500))],
            "<10ms"
        );
        let id = row.buckets[3][0].id;
        let kept = ring.get(id).unwrap();
        assert_eq!(kept.trace_id, Some(trace(1)));
        assert_eq!(kept.spans.len(), 2);
        assert!(!kept.error && !kept.root_only);
        assert_eq!(kept.status.as_deref(), Some("OK"));
        assert!(snapshot.errors.is_empty());
    }

    #[test]
    fn admission_is_one_per_name_per_interval() {
        let ring = TraceRing::new();
        let now = Instant::now();
        assert!(ring.admit(trace(1), "S/A", now));
        assert!(!ring.admit(trace(2), "S/A", now), "too soon for S/A");
        assert!(ring.admit(trace(3), "S/B", now), "another name");
        assert!(ring.admit(trace(4), "S/A", now + ADMIT_INTERVAL));
        // Spans of a trace that was not admitted are not kept.
        ring.span_ended(trace(2), span(1, 0, "S/A", 10, Some("OK")), true);
        assert_eq!(ring.snapshot().stats.kept, 0);
    }

    #[test]
    fn a_new_trace_is_refused_without_the_lock_while_every_name_is_quiet() {
        let ring = TraceRing::new();
        let now = Instant::now();
        assert!(ring.admit_new(trace(1), "S/A", now));
        assert!(!ring.admit_new(trace(2), "S/A", now), "too soon for S/A");
        assert!(
            !ring.admit_new(trace(3), "S/B", now),
            "a new name waits while every known one is quiet"
        );
        assert!(ring.admit(trace(4), "S/B", now), "admit itself looks");
        let later = now + ADMIT_INTERVAL;
        assert!(ring.admit_new(trace(5), "S/A", later));
        assert!(!ring.admit_new(trace(6), "S/A", later));
    }

    #[test]
    fn a_failed_span_makes_the_trace_an_error_with_that_status() {
        let ring = TraceRing::new();
        assert!(ring.admit(trace(1), "cycle", Instant::now()));
        ring.span_ended(
            trace(1),
            span(3, 2, "S/Unary", 100, Some("INVALID_ARGUMENT")),
            false,
        );
        ring.span_ended(trace(1), span(1, 0, "cycle", 200, None), true);
        let snapshot = ring.snapshot();
        assert_eq!(snapshot.errors.len(), 1);
        assert_eq!(
            snapshot.errors[0].status.as_deref(),
            Some("INVALID_ARGUMENT")
        );
        assert_eq!(snapshot.rows[0].errors, 1);
        assert!(snapshot.rows[0].buckets.iter().all(Vec::is_empty));
    }

    #[test]
    fn failed_roots_and_unrecorded_calls_are_kept_alone() {
        let ring = TraceRing::new();
        ring.keep_root_only(trace(5), span(1, 0, "S/Unary", 100, Some("OK")));
        assert!(ring.snapshot().errors.is_empty(), "only failures");
        ring.keep_root_only(trace(5), span(1, 0, "S/Unary", 100, Some("INTERNAL")));
        ring.keep_unrecorded_call(
            TraceId::INVALID,
            "S/Chat",
            "UNAUTHENTICATED",
            SystemTime::now(),
            Duration::from_millis(1),
            Some("127.0.0.1:4000".parse().unwrap()),
            (0, 0),
        );
        let errors = ring.snapshot().errors;
        let seen: Vec<_> = errors
            .iter()
            .map(|e| (e.name.as_str(), e.status.as_deref(), e.trace_id))
            .collect();
        assert_eq!(
            seen,
            [
                ("S/Chat", Some("UNAUTHENTICATED"), None),
                ("S/Unary", Some("INTERNAL"), Some(trace(5)))
            ],
            "newest first"
        );
        assert!(ring.get(errors[0].id).unwrap().root_only);
    }

    #[test]
    fn samples_and_errors_are_bounded_in_count() {
        let ring = TraceRing::new();
        let mut now = Instant::now();
        for n in 0..10u8 {
            assert!(ring.admit(trace(n), "S/A", now));
            ring.span_ended(trace(n), span(1, 0, "S/A", 50, Some("OK")), true);
            now += ADMIT_INTERVAL;
        }
        for _ in 0..(MAX_ERRORS + 10) {
            ring.keep_root_only(trace(99), span(1, 0, "S/A", 50, Some("INTERNAL")));
        }
        let snapshot = ring.snapshot();
        let row = &snapshot.rows[0];
        assert_eq!(
            row.buckets[bucket_of(Duration::from_micros(50))].len(),
            SAMPLES_PER_BUCKET
        );
        assert_eq!(snapshot.errors.len(), MAX_ERRORS);
        assert_eq!(snapshot.stats.kept, 10 + MAX_ERRORS as u64 + 10);
    }

    #[test]
    fn pending_traces_are_bounded_per_name_spans_and_bytes() {
        let ring = TraceRing::new();
        let start = Instant::now();
        let mut now = start;
        for n in 0..MAX_PENDING_PER_NAME as u8 {
            assert!(ring.admit(trace(n), "S/Chat", now));
            now += ADMIT_INTERVAL;
        }
        assert!(
            !ring.admit(trace(200), "S/Chat", now),
            "the name's places are taken by young streams"
        );
        assert!(
            ring.admit(trace(201), "S/Other", now),
            "other names are not"
        );
        // Once the oldest has waited long enough, a new one replaces it.
        let later = start + PENDING_REPLACEABLE_AFTER + Duration::from_secs(1);
        assert!(ring.admit(trace(202), "S/Chat", later));
        assert!(!ring.is_pending(trace(0)));

        // Spans per trace.
        for i in 0..(MAX_SPANS_PER_TRACE + 5) {
            ring.span_ended(
                trace(1),
                span((i % 250) as u8 + 2, 1, "child", 1, None),
                false,
            );
        }
        ring.span_ended(trace(1), span(1, 0, "S/Chat", 1, Some("OK")), true);
        let kept = ring.snapshot().rows[0].buckets[0][0].clone();
        let kept = ring.get(kept.id).unwrap();
        assert_eq!(kept.spans.len(), MAX_SPANS_PER_TRACE + 1);
        assert_eq!(kept.dropped_spans, 5);

        // Strings are cut, and pending bytes are bounded.
        let mut huge = span(9, 1, &"n".repeat(10_000), 1, None);
        huge.attributes = (0..100)
            .map(|i| (format!("k{i}"), "v".repeat(10_000)))
            .collect();
        for n in 2..12 {
            for _ in 0..MAX_SPANS_PER_TRACE {
                ring.span_ended(trace(n), huge.clone(), false);
            }
        }
        let stats = ring.snapshot().stats;
        assert!(stats.pending_bytes <= MAX_PENDING_BYTES, "{stats:?}");
        assert!(
            stats.pending_bytes > MAX_PENDING_BYTES / 2,
            "the spans were big: {stats:?}"
        );
        assert!(stats.dropped_spans > 5, "the byte bound dropped some");
    }

    #[test]
    fn kept_bytes_are_bounded() {
        let ring = TraceRing::new();
        let mut big = span(1, 0, "S/A", 1, Some("INTERNAL"));
        big.attributes = (0..MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".repeat(MAX_VALUE_CHARS)))
            .collect();
        for _ in 0..10_000 {
            ring.keep_root_only(trace(1), big.clone());
        }
        let stats = ring.snapshot().stats;
        assert!(stats.kept_bytes <= MAX_KEPT_BYTES);
        assert!(stats.kept_bytes > 0);
    }

    #[test]
    fn names_are_bounded() {
        let ring = TraceRing::new();
        let now = Instant::now();
        for n in 0..MAX_NAMES {
            assert!(ring.admit(TraceId::from(n as u128 + 1), &format!("name{n}"), now));
        }
        assert!(!ring.admit(TraceId::from(999u128), "one too many", now));
        let long = "x".repeat(MAX_NAME_CHARS * 2);
        let ring = TraceRing::new();
        assert!(ring.admit(trace(1), &long, now));
        assert!(
            !ring.admit(trace(2), &long, now),
            "the truncated name is found"
        );
    }
}
