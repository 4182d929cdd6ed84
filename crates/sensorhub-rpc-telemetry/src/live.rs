//! What the live web view shows of the calls, recorded in process: the calls
//! in flight, per-method rates and latencies over the last minute and hour
//! (zPages `/rpcz` style), and recent finished traces (`/tracez` style).
//!
//! Why here, in the API-only layers crate: the server layer is where a call
//! starts, is counted and ends, so the in-flight registry and the rpcz
//! aggregator are fed from the same measurements the A66 metrics take, with
//! no second pass over anything. The trace ring holds the data types and the
//! bounded store; what fills it with finished spans is an SDK span processor
//! in `sensorhub-telemetry` (it sees the spans the exporters see, internal
//! ones too), and the layer itself for calls whose span is not recorded.
//!
//! Invariant: nothing here knows sensors or the page; every recorder is
//! bounded in count and in bytes (the bounds are on each type), and a
//! recorder never blocks a call for longer than one short critical section.

pub(crate) mod in_flight;
mod rpcz;
mod thread_shard;
pub mod traces;

use std::sync::Arc;

pub use in_flight::{InFlight, InFlightCall, InFlightSnapshot};
pub use rpcz::{Rpcz, RpczRow, RpczSnapshot, RpczWindow};
pub use traces::{
    LATENCY_BUCKET_LABELS, MAX_ATTRIBUTES, SpanOutcome, SpanRecord, TraceRecord, TraceRing,
    TraceRingStats, TraceSummary, TracezRow, TracezSnapshot,
};

/// The recorders a server feeds, shared with whatever reads them.
#[derive(Debug, Clone)]
pub struct LiveRecorders {
    pub calls: Arc<InFlight>,
    pub rpcz: Arc<Rpcz>,
    pub traces: TraceRing,
}

impl LiveRecorders {
    /// Recorders for a server registering `methods` (full paths without
    /// the leading slash); any other path is recorded as `other`.
    pub fn new<M: AsRef<str>>(methods: impl IntoIterator<Item = M>, traces: TraceRing) -> Self {
        Self {
            calls: Arc::new(InFlight::default()),
            rpcz: Arc::new(Rpcz::new(methods)),
            traces,
        }
    }
}
