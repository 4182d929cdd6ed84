//! When the writer waits a moment before committing a small group.
//!
//! Group commit alone shares an fsync among the writes that queued while
//! the previous one ran. Under thousands of concurrent unary calls that is
//! often a single write: the previous fsync answered everyone at once, so
//! they all come back within a few hundred microseconds of each other, and
//! the first to arrive finds the queue empty. Committing it alone costs a
//! whole fsync for one reading, and its neighbours then wait for that fsync
//! before theirs starts. Waiting a little for them is cheaper for everyone
//! (PostgreSQL's `commit_delay` is the same idea).
//!
//! The writer waits only when waiting is likely to pay: the group is small
//! and writes have lately been arriving fast enough that another one is
//! expected within the delay. A lone caller on an idle store never waits:
//! the arrival rate decays with time, not with the number of groups, so a
//! pause resets it.
//!
//! Invariant: this knows arrival times and counts, nothing of journals or
//! readings' contents; it never sleeps itself (the writer does).

use std::time::{Duration, Instant};

/// How long the writer waits for more writes before committing a small group.
/// Well under an fsync on the machines measured (about 1 ms), so a wait
/// that gathers nobody costs a quarter of one.
pub(crate) const COMMIT_DELAY: Duration = Duration::from_micros(250);

/// A group with this many readings commits at once: its fsync is already
/// shared well enough.
pub(crate) const ENOUGH_READINGS: usize = 64;

/// The arrival rate is averaged over about this long: long enough to span
/// many groups under load, short enough that a pause forgets it.
const HORIZON: Duration = Duration::from_millis(10);

/// The writer's estimate of how fast writes arrive.
#[derive(Debug, Default)]
pub(crate) struct CommitPacing {
    /// Writes per second, decayed with time.
    rate: f64,
    /// When the last group was taken.
    last: Option<Instant>,
    /// Writes taken after the last group's wait: they arrived after it was taken.
    late_writes: usize,
}

impl CommitPacing {
    /// A group of `writes` writes holding `readings` readings was just taken
    /// from the queue: how long to wait for more before committing, if at all.
    pub(crate) fn on_group(
        &mut self,
        now: Instant,
        writes: usize,
        readings: usize,
    ) -> Option<Duration> {
        let arrived = (writes + std::mem::take(&mut self.late_writes)) as f64;
        match self.last {
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                // An exponential moving average weighted by time: the share
                // of the new interval in the horizon. `weight / elapsed` is
                // bounded by `1 / HORIZON`, so a burst in a tiny interval
                // counts as its writes spread over the horizon.
                let weight = 1.0 - (-elapsed / HORIZON.as_secs_f64()).exp();
                if elapsed > 0.0 {
                    self.rate += weight * (arrived / elapsed - self.rate);
                } else {
                    self.rate += arrived / HORIZON.as_secs_f64();
                }
            }
            None => self.rate = 0.0,
        }
        self.last = Some(now);
        let expected = self.rate * COMMIT_DELAY.as_secs_f64();
        (readings < ENOUGH_READINGS && expected >= 1.0).then_some(COMMIT_DELAY)
    }

    /// After a wait, the group took `writes` more: count them as arrivals
    /// before the next group.
    pub(crate) fn topped_up(&mut self, writes: usize) {
        self.late_writes += writes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups of `writes` every `every`, `n` times; the last decision.
    fn steady(
        pacing: &mut CommitPacing,
        start: Instant,
        every: Duration,
        writes: usize,
        n: u32,
    ) -> (Instant, Option<Duration>) {
        let mut now = start;
        let mut decision = None;
        for _ in 0..n {
            now += every;
            decision = pacing.on_group(now, writes, writes);
        }
        (now, decision)
    }

    #[test]
    fn the_first_group_never_waits() {
        let mut pacing = CommitPacing::default();
        assert_eq!(pacing.on_group(Instant::now(), 1, 1), None);
    }

    #[test]
    fn under_fast_arrivals_a_small_group_waits_and_a_large_one_does_not() {
        let mut pacing = CommitPacing::default();
        // One write every 100 µs: 10,000/s, 2.5 expected within the delay.
        let (now, decision) = steady(
            &mut pacing,
            Instant::now(),
            Duration::from_micros(100),
            1,
            200,
        );
        assert_eq!(decision, Some(COMMIT_DELAY));
        let next = now + Duration::from_micros(100);
        assert_eq!(pacing.on_group(next, 1, ENOUGH_READINGS), None);
    }

    #[test]
    fn slow_arrivals_never_wait() {
        let mut pacing = CommitPacing::default();
        // One write every 2 ms: 500/s, an eighth of a write within the delay.
        let (_, decision) = steady(&mut pacing, Instant::now(), Duration::from_millis(2), 1, 50);
        assert_eq!(decision, None);
    }

    #[test]
    fn a_pause_forgets_the_rate() {
        let mut pacing = CommitPacing::default();
        let (now, decision) = steady(
            &mut pacing,
            Instant::now(),
            Duration::from_micros(50),
            1,
            400,
        );
        assert_eq!(decision, Some(COMMIT_DELAY));
        // A lone write after a second of silence commits at once.
        assert_eq!(pacing.on_group(now + Duration::from_secs(1), 1, 1), None);
    }

    #[test]
    fn writes_gathered_by_a_wait_count_as_arrivals() {
        let start = Instant::now();
        let every = Duration::from_micros(400);
        // Groups of 1 every 400 µs are 2,500/s: 0.6 expected, no wait...
        let mut alone = CommitPacing::default();
        let (_, decision) = steady(&mut alone, start, every, 1, 100);
        assert_eq!(decision, None);
        // ...but with two more gathered after each, 7,500/s: wait.
        let mut gathered = CommitPacing::default();
        let mut now = start;
        let mut decision = None;
        for _ in 0..100 {
            now += every;
            decision = gathered.on_group(now, 1, 1);
            gathered.topped_up(2);
        }
        assert_eq!(decision, Some(COMMIT_DELAY));
    }
}
