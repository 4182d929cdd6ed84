//! A client call's attempts, as a retry layer beneath the client layer
//! reports them: each attempt is an A66 attempt of its own
//! (`grpc.client.attempt.*`), and at the call's end gRFC A96's retry
//! metrics, when switched on, say how many transparent retries the call
//! took and how long it spent between attempts.
//!
//! Why a handle in the request's extensions: the retry loop sits below this
//! layer, in the transport's crate, and only it knows when an attempt ends
//! and the next one starts; only this layer has the instruments and sees
//! the call end (its trailers). The handle joins the two without either
//! crate knowing the other's types. A call sent by no retry layer is one
//! attempt, as before.
//!
//! An attempt runs from the moment it is handed to the transport to its
//! answer or error; the time between attempts (the retry layer waiting until
//! the transport is ready for the next one) is A96's retry delay. As A96
//! says, a call that had no transparent retry records no
//! `transparent_retries` (0 is not reported), and no `retry_delay` either:
//! it had no time between attempts. (gRPC's C core records `retry_delay`
//! only beside retries of a retry policy; with none here, that would leave
//! it never recorded.)
//!
//! Invariant: every attempt is recorded once, by [`CallAttempts::retrying`]
//! when it failed and the call goes on, or else when the call ends.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use opentelemetry::{
    KeyValue, Value,
    metrics::{Histogram, Meter},
};

use crate::{
    body::status_of_error,
    client::ClientShared,
    conventions::{a66, a96, status_name},
    frames::Tally,
};

/// Which of gRFC A96's retry metrics a client layer records. All are off by
/// default: A96's metrics are experimental, and gRFC A79 keeps those off
/// until they are switched on by name. A96's `grpc.client.call.retries` and
/// `.hedges` have no switch here: the layer beneath retries only
/// transparently and never hedges, so they would never have a value (A96
/// reports no 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryMetrics {
    /// `grpc.client.call.transparent_retries`.
    pub transparent_retries: bool,
    /// `grpc.client.call.retry_delay`.
    pub retry_delay: bool,
}

/// A96's instruments that are switched on.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryInstruments {
    transparent_retries: Option<Histogram<u64>>,
    retry_delay: Option<Histogram<f64>>,
}

impl RetryInstruments {
    pub(crate) fn new(meter: &Meter, enabled: RetryMetrics) -> Self {
        Self {
            transparent_retries: enabled.transparent_retries.then(|| {
                meter
                    .u64_histogram(a96::CLIENT_CALL_TRANSPARENT_RETRIES)
                    .with_unit("{transparent_retry}")
                    .with_description("Number of transparent retries during the client call")
                    .with_boundaries(a96::TRANSPARENT_RETRY_BUCKETS.to_vec())
                    .build()
            }),
            retry_delay: enabled.retry_delay.then(|| {
                meter
                    .f64_histogram(a96::CLIENT_CALL_RETRY_DELAY)
                    .with_unit("s")
                    .with_description(
                        "Total time of delay while there is no active attempt during the client call",
                    )
                    .with_boundaries(a66::LATENCY_BUCKETS.to_vec())
                    .build()
            }),
        }
    }
}

/// The handle on one call's attempts that the client layer puts in the
/// request's extensions, for a retry layer beneath it to report through.
#[derive(Debug, Clone)]
pub struct CallAttempts(Arc<Attempts>);

#[derive(Debug)]
struct Attempts {
    shared: Arc<ClientShared>,
    method: Value,
    /// The request body's tally, shared by the attempts (only one reads it).
    sent: Arc<Tally>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the attempt under way was handed to the transport; `None`
    /// between attempts.
    attempt_start: Option<Instant>,
    /// When the last failed attempt ended.
    failed_at: Instant,
    transparent_retries: u64,
    /// Time between attempts so far.
    delay: Duration,
    /// Request bytes recorded with earlier attempts.
    sent_before: u64,
}

impl CallAttempts {
    /// The attempts of a call whose first attempt starts at `start`.
    pub(crate) fn new(
        shared: Arc<ClientShared>,
        method: Value,
        sent: Arc<Tally>,
        start: Instant,
    ) -> Self {
        Self(Arc::new(Attempts {
            shared,
            method,
            sent,
            state: Mutex::new(State {
                attempt_start: Some(start),
                failed_at: start,
                transparent_retries: 0,
                delay: Duration::ZERO,
                sent_before: 0,
            }),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The attempt under way failed with `error`, without an answer, and the
    /// call will be sent again: the attempt is recorded now, with the status
    /// the error stands for (`UNAVAILABLE` for a transport's error).
    pub fn retrying(&self, error: &(dyn std::error::Error + 'static)) {
        let now = Instant::now();
        let mut state = self.state();
        let Some(start) = state.attempt_start.take() else {
            return;
        };
        state.failed_at = now;
        let sent = self.sent_since(&mut state);
        drop(state);
        self.record_attempt(now - start, status_name(status_of_error(error)), (sent, 0));
    }

    /// The next attempt is handed to the transport now: a transparent retry
    /// (gRFC A6: the earlier attempts never sent the request).
    pub fn transparent_retry(&self) {
        let now = Instant::now();
        let mut state = self.state();
        if state.attempt_start.is_some() {
            return;
        }
        let waited = now - state.failed_at;
        state.attempt_start = Some(now);
        state.delay += waited;
        state.transparent_retries += 1;
        drop(state);
        let attempts = &self.0;
        attempts.shared.started.add(
            1,
            &[
                KeyValue::new(a66::METHOD, attempts.method.clone()),
                KeyValue::new(a66::TARGET, attempts.shared.target.clone()),
            ],
        );
    }

    /// The call ended with `status` after `received` response bytes: its
    /// last attempt, if one was under way, and A96's metrics.
    pub(crate) fn finish(&self, now: Instant, status: &'static str, received: u64) {
        let mut state = self.state();
        let last = state.attempt_start.take().map(|start| {
            let sent = self.sent_since(&mut state);
            (now - start, sent)
        });
        // Ended between attempts (the transport never took the next one).
        if last.is_none() {
            let waited = now - state.failed_at;
            state.delay += waited;
        }
        let (retries, delay) = (state.transparent_retries, state.delay);
        drop(state);
        if let Some((duration, sent)) = last {
            self.record_attempt(duration, status, (sent, received));
        }
        if retries == 0 {
            return;
        }
        let attempts = &self.0;
        let retry = &attempts.shared.retry;
        let attributes = [
            KeyValue::new(a66::METHOD, attempts.method.clone()),
            KeyValue::new(a66::TARGET, attempts.shared.target.clone()),
        ];
        if let Some(histogram) = &retry.transparent_retries {
            histogram.record(retries, &attributes);
        }
        if let Some(histogram) = &retry.retry_delay {
            histogram.record(delay.as_secs_f64(), &attributes);
        }
    }

    /// Request bytes read since the last recorded attempt.
    fn sent_since(&self, state: &mut State) -> u64 {
        let (_, total) = self.0.sent.get();
        let sent = total.saturating_sub(state.sent_before);
        state.sent_before = total;
        sent
    }

    fn record_attempt(
        &self,
        duration: Duration,
        status: &'static str,
        (sent, received): (u64, u64),
    ) {
        let attempts = &self.0;
        let shared = &attempts.shared;
        let attributes = [
            KeyValue::new(a66::METHOD, attempts.method.clone()),
            KeyValue::new(a66::TARGET, shared.target.clone()),
            KeyValue::new(a66::STATUS, status),
        ];
        shared
            .attempt_duration
            .record(duration.as_secs_f64(), &attributes);
        shared.sent.record(sent, &attributes);
        shared.rcvd.record(received, &attributes);
    }
}
