//! What the workers count: per RPC kind, calls by outcome, readings, and an
//! HDR histogram of latencies. Each worker keeps its own [`Tally`] (no
//! sharing on the hot path) and they are merged at the end; [`Live`] is the
//! little each worker publishes for the progress bar.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use hdrhistogram::Histogram;

use crate::simulator::Kind;

/// gRPC status codes 0..=16.
pub const CODES: usize = 17;

/// Latencies are recorded in microseconds, 1 µs to 1 h, 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// The counts of one RPC kind.
#[derive(Debug, Default)]
pub struct KindTally {
    pub ok: u64,
    /// Failed calls by status code.
    pub failed: [u64; CODES],
    /// The first failure's message for each code, so that the report can say
    /// why (`UNAUTHENTICATED: Invalid token`), not only how often.
    pub first_message: [Option<Box<str>>; CODES],
    /// Calls still unanswered when the drain time ran out.
    pub unfinished: u64,
    /// Readings sent in calls that succeeded (unary, client stream, chat).
    pub readings_sent: u64,
    /// Readings read back in calls that succeeded (server stream).
    pub readings_received: u64,
    /// Chat alerts received.
    pub alerts: u64,
    /// Latency of successful calls, µs; made on first use.
    latency: Option<Histogram<u64>>,
}

impl KindTally {
    #[inline]
    pub fn ok(&mut self, latency: Duration, sent: u64, received: u64) {
        self.ok += 1;
        self.readings_sent += sent;
        self.readings_received += received;
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency
            .get_or_insert_with(new_histogram)
            .saturating_record(us);
    }

    /// A failed call. Only the first failure of each code copies its
    /// message, so a run that fails every call allocates once per code.
    #[inline]
    pub fn failed(&mut self, code: tonic::Code, message: &str) {
        let code = (code as usize).min(CODES - 1);
        self.failed[code] += 1;
        if self.first_message[code].is_none() {
            self.first_message[code] = Some(message.into());
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    pub fn latency(&self) -> Option<&Histogram<u64>> {
        self.latency.as_ref().filter(|h| !h.is_empty())
    }

    fn merge(&mut self, other: &KindTally) {
        self.ok += other.ok;
        for (mine, theirs) in self.failed.iter_mut().zip(other.failed) {
            *mine += theirs;
        }
        for (mine, theirs) in self.first_message.iter_mut().zip(&other.first_message) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        self.unfinished += other.unfinished;
        self.readings_sent += other.readings_sent;
        self.readings_received += other.readings_received;
        self.alerts += other.alerts;
        if let Some(theirs) = &other.latency {
            match &mut self.latency {
                Some(mine) => mine.add(theirs).expect("same bounds"),
                None => self.latency = Some(theirs.clone()),
            }
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds")
}

/// One worker's counts, or all of them merged.
#[derive(Debug, Default)]
pub struct Tally {
    pub kinds: [KindTally; 4],
    /// Open loop: calls sent more than 1 ms after their time on the schedule.
    pub late_sends: u64,
    /// Open loop: the longest delay between a call's time on the schedule and its send.
    pub max_send_lag: Duration,
    /// When the last counted call finished.
    pub last_done: Option<std::time::Instant>,
}

impl Tally {
    #[inline]
    pub fn kind(&mut self, kind: Kind) -> &mut KindTally {
        &mut self.kinds[kind as usize]
    }

    #[inline]
    pub fn lag(&mut self, lag: Duration) {
        if lag > Duration::from_millis(1) {
            self.late_sends += 1;
        }
        if lag > self.max_send_lag {
            self.max_send_lag = lag;
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds) {
            mine.merge(&theirs);
        }
        self.late_sends += other.late_sends;
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
        self.last_done = self.last_done.max(other.last_done);
    }

    /// All kinds as one.
    pub fn total(&self) -> KindTally {
        let mut total = KindTally::default();
        for kind in &self.kinds {
            total.merge(kind);
        }
        total
    }
}

/// What one worker publishes while it runs, for the progress bar: written
/// by that worker only, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Live {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub readings: AtomicU64,
}

impl Live {
    #[inline]
    pub fn add(&self, ok: bool, readings: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if readings > 0 {
            self.readings.fetch_add(readings, Ordering::Relaxed);
        }
    }
}
