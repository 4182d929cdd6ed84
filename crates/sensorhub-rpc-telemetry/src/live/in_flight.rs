//! The calls in progress: what no span exporter can show, since a span is
//! exported only once it ends. A chat or follow stream open for an hour is
//! listed, with its message counts growing, while it runs.
//!
//! The server layer registers each call as it starts and the registration
//! removes itself when the call ends (trailers, error, or drop). Message
//! counts are the body wrappers' own frame tallies, shared, not copied: the
//! registry adds no counting of its own.
//!
//! Bounds: at most [`MAX_TRACKED`] calls are held (about 150 bytes each);
//! beyond that a call runs untracked and is counted. A snapshot copies at
//! most the number of calls it is asked for.
//!
//! A call registers in its thread's shard (`thread_shard.rs`; the next one
//! when that is full), so concurrent calls on different workers share no
//! lock and no counter.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{Value, trace::TraceId};

use super::thread_shard;
use crate::frames::Tally;

/// Most calls held at once.
pub const MAX_TRACKED: usize = 16_384;
/// Independent locks, so concurrent calls rarely wait for each other.
const SHARDS: usize = 8;
/// Calls one shard holds.
const PER_SHARD: usize = MAX_TRACKED / SHARDS;

/// The registry of calls in progress.
#[derive(Debug)]
pub struct InFlight {
    shards: [Mutex<Shard>; SHARDS],
    untracked: AtomicU64,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            untracked: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    slots: Vec<Option<Arc<CallState>>>,
    free: Vec<u32>,
    /// Calls held.
    held: usize,
}

/// One call as the layer sees it while it runs.
#[derive(Debug)]
pub(crate) struct CallState {
    method: Value,
    peer: Option<SocketAddr>,
    /// The layer's own start of the call (no clock is read for the registry).
    started_at: Instant,
    trace_id: TraceId,
    pub(crate) received: Arc<Tally>,
    pub(crate) sent: Tally,
}

/// A call's place in the registry; dropping it removes the call.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<InFlight>,
    shard: usize,
    slot: u32,
    pub(crate) state: Arc<CallState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut shard = self.registry.shards[self.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.slots[self.slot as usize] = None;
        shard.free.push(self.slot);
        shard.held -= 1;
    }
}

/// One call in progress, as a snapshot shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlightCall {
    /// The A66 method (`SensorService/SensorChat`, or `other`).
    pub method: String,
    pub peer: Option<SocketAddr>,
    pub started: SystemTime,
    pub age: Duration,
    /// Request messages received so far.
    pub received: u64,
    /// Response messages sent so far.
    pub sent: u64,
    /// `None` when the call has no valid trace id (tracing off and no caller's `traceparent`).
    pub trace_id: Option<TraceId>,
}

/// The calls in progress: the oldest ones first, and how many there are.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InFlightSnapshot {
    /// Calls in progress that the registry holds.
    pub total: usize,
    /// Calls that ran untracked because [`MAX_TRACKED`] were held (since start).
    pub untracked: u64,
    /// The oldest calls, at most as many as asked for.
    pub calls: Vec<InFlightCall>,
}

impl InFlight {
    /// Registers a call that starts now; `None` (and counted) when the
    /// registry is full.
    pub(crate) fn register(
        self: &Arc<Self>,
        method: Value,
        peer: Option<SocketAddr>,
        started_at: Instant,
        trace_id: TraceId,
        received: Arc<Tally>,
    ) -> Option<Registration> {
        let state = Arc::new(CallState {
            method,
            peer,
            started_at,
            trace_id,
            received,
            sent: Tally::default(),
        });
        let first = thread_shard::index(SHARDS);
        let mut found = None;
        for step in 0..SHARDS {
            let index = (first + step) % SHARDS;
            let shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
            if shard.held < PER_SHARD {
                found = Some((index, shard));
                break;
            }
        }
        let Some((shard_index, mut shard)) = found else {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        shard.held += 1;
        let slot = match shard.free.pop() {
            Some(slot) => {
                shard.slots[slot as usize] = Some(state.clone());
                slot
            }
            None => {
                shard.slots.push(Some(state.clone()));
                (shard.slots.len() - 1) as u32
            }
        };
        drop(shard);
        Some(Registration {
            registry: self.clone(),
            shard: shard_index,
            slot,
            state,
        })
    }

    /// How many calls are in progress (tracked).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()).held)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `limit` oldest calls in progress, oldest first.
    pub fn snapshot(&self, limit: usize) -> InFlightSnapshot {
        let mut states: Vec<Arc<CallState>> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            states.extend(shard.slots.iter().flatten().cloned());
        }
        let total = states.len();
        states.sort_by_key(|s| s.started_at);
        states.truncate(limit);
        let now = Instant::now();
        let wall = SystemTime::now();
        let calls = states
            .iter()
            .map(|s| InFlightCall {
                method: s.method.as_str().into_owned(),
                peer: s.peer,
                started: wall - now.saturating_duration_since(s.started_at),
                age: now.saturating_duration_since(s.started_at),
                received: s.received.get().0,
                sent: s.sent.get().0,
                trace_id: (s.trace_id != TraceId::INVALID).then_some(s.trace_id),
            })
            .collect();
        InFlightSnapshot {
            total,
            untracked: self.untracked.load(Ordering::Relaxed),
            calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(registry: &Arc<InFlight>, method: &'static str) -> Option<Registration> {
        registry.register(
            Value::from(method),
            None,
            Instant::now(),
            TraceId::from_bytes([7; 16]),
            Arc::new(Tally::default()),
        )
    }

    #[test]
    fn a_call_is_listed_while_registered_and_gone_when_dropped() {
        let registry = Arc::new(InFlight::default());
        let first = register(&registry, "S/First").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = register(&registry, "S/Second").unwrap();
        first.state.received.add((3, 30));
        second.state.sent.add((2, 20));

        let snapshot = registry.snapshot(10);
        assert_eq!(snapshot.total, 2);
        let methods: Vec<_> = snapshot.calls.iter().map(|c| c.method.as_str()).collect();
        assert_eq!(methods, ["S/First", "S/Second"], "oldest first");
        assert_eq!((snapshot.calls[0].received, snapshot.calls[0].sent), (3, 0));
        assert_eq!((snapshot.calls[1].received, snapshot.calls[1].sent), (0, 2));
        assert!(snapshot.calls[0].age >= Duration::from_millis(5));
        assert_eq!(
            snapshot.calls[0].trace_id,
            Some(TraceId::from_bytes([7; 16]))
        );
        assert_eq!(registry.snapshot(1).calls.len(), 1, "the limit holds");

        drop(first);
        let snapshot = registry.snapshot(10);
        assert_eq!(snapshot.total, 1);
        assert_eq!(snapshot.calls[0].method, "S/Second");
        drop(second);
        assert!(registry.is_empty());
        assert!(registry.snapshot(10).calls.is_empty());
    }

    #[test]
    fn slots_are_reused_and_the_registry_is_bounded() {
        let registry = Arc::new(InFlight::default());
        for _ in 0..1000 {
            drop(register(&registry, "S/M"));
        }
        let held: usize = registry
            .shards
            .iter()
            .map(|s| s.lock().unwrap().slots.len())
            .sum();
        assert!(held <= SHARDS, "{held} slots for one call at a time");

        let all: Vec<_> = (0..MAX_TRACKED)
            .map(|_| register(&registry, "S/M").unwrap())
            .collect();
        assert!(register(&registry, "S/M").is_none(), "full");
        let snapshot = registry.snapshot(5);
        assert_eq!((snapshot.total, snapshot.untracked), (MAX_TRACKED, 1));
        drop(all);
        assert!(registry.is_empty());
        assert!(register(&registry, "S/M").is_some());
    }
}
