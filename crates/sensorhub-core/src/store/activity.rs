//! What a store has done lately, for a live view: running totals of its
//! group commits, and the alerts its commits raised, newest kept.
//!
//! Why in the store and not in the service: every engine records its commits
//! through [`StoreMetrics`](super::metrics::StoreMetrics), which sees each
//! group commit and the alerts it raised once, whichever call wrote them
//! (unary, stream, chat), so one place feeds both engines. The cost is three
//! relaxed additions per group commit, and a lock only for a commit that
//! raised an alert; nothing per reading.
//!
//! Bounds: the last [`KEPT_ALERTS`] alerts; older ones are forgotten. A
//! reader asks for what came after the last number it saw.
//!
//! With several PostgreSQL replicas on one database, each replica's feed
//! holds the alerts its own commits raised (the statistics, read from the
//! database, hold everyone's).

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::Alert;

/// Alerts kept.
pub const KEPT_ALERTS: usize = 256;

/// One alert as the feed holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlert {
    /// Numbered from 1 in the order raised.
    pub number: u64,
    /// When the store committed it (the reading's own time is in `alert`).
    pub raised: SystemTime,
    pub alert: Alert,
}

/// Running totals since the store opened; take the difference of two looks
/// for a rate, a mean group size or a mean commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitTotals {
    pub commits: u64,
    pub readings: u64,
    /// Time spent in group commits (the durable write), microseconds.
    pub micros: u64,
}

/// A store's recent activity. Shared (`Arc`) by the engine and its readers.
#[derive(Debug, Default)]
pub struct StoreActivity {
    commits: AtomicU64,
    readings: AtomicU64,
    micros: AtomicU64,
    alerts: Mutex<AlertRing>,
}

#[derive(Debug, Default)]
struct AlertRing {
    last: u64,
    kept: VecDeque<RaisedAlert>,
}

impl StoreActivity {
    /// One group commit of `readings` that took `elapsed` and raised `alerts`.
    pub fn committed<'a>(
        &self,
        elapsed: Duration,
        readings: usize,
        alerts: impl Iterator<Item = &'a Alert>,
    ) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.readings.fetch_add(readings as u64, Ordering::Relaxed);
        self.micros.fetch_add(
            elapsed.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        let mut alerts = alerts.peekable();
        if alerts.peek().is_none() {
            return;
        }
        let raised = SystemTime::now();
        let mut ring = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        for alert in alerts {
            ring.last += 1;
            let number = ring.last;
            if ring.kept.len() == KEPT_ALERTS {
                ring.kept.pop_front();
            }
            ring.kept.push_back(RaisedAlert {
                number,
                raised,
                alert: alert.clone(),
            });
        }
    }

    pub fn totals(&self) -> CommitTotals {
        CommitTotals {
            commits: self.commits.load(Ordering::Relaxed),
            readings: self.readings.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
        }
    }

    /// The kept alerts numbered after `after`, oldest first.
    pub fn alerts_after(&self, after: u64) -> Vec<RaisedAlert> {
        let ring = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        ring.kept
            .iter()
            .filter(|a| a.number > after)
            .cloned()
            .collect()
    }

    /// The number of the last alert raised (0: none yet).
    pub fn last_alert(&self) -> u64 {
        self.alerts.lock().unwrap_or_else(|e| e.into_inner()).last
    }
}

/// An engine's queue and lag at one moment (what only the engine knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreBacklog {
    /// Writes (calls, not readings) queued for the writer, and the queue's size.
    pub queued_writes: usize,
    pub queue_capacity: usize,
    /// Readings acknowledged that queries do not see yet (the embedded
    /// engine's indexer lag; 0 for an engine whose commit is its index).
    pub index_lag: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AlertRule;

    fn alert(sensor: &str) -> Alert {
        Alert {
            sensor_id: sensor.into(),
            rule: AlertRule::AboveMax,
            temperature: 50.0,
            timestamp: 1,
            rolling_mean: 20.0,
            threshold: 45.0,
        }
    }

    #[test]
    fn commits_are_totalled_and_alerts_numbered() {
        let activity = StoreActivity::default();
        activity.committed(Duration::from_micros(300), 4, [].iter());
        assert_eq!(activity.last_alert(), 0);
        let raised = [alert("a"), alert("b")];
        activity.committed(Duration::from_micros(200), 2, raised.iter());
        activity.committed(Duration::from_micros(100), 1, [alert("c")].iter());
        assert_eq!(
            activity.totals(),
            CommitTotals {
                commits: 3,
                readings: 7,
                micros: 600
            }
        );
        let all: Vec<_> = activity
            .alerts_after(0)
            .into_iter()
            .map(|a| (a.number, a.alert.sensor_id))
            .collect();
        assert_eq!(all, [(1, "a".into()), (2, "b".into()), (3, "c".into())]);
        assert_eq!(activity.alerts_after(2).len(), 1);
        assert!(activity.alerts_after(3).is_empty());
    }

    #[test]
    fn the_alerts_kept_are_bounded() {
        let activity = StoreActivity::default();
        for _ in 0..(KEPT_ALERTS + 10) {
            activity.committed(Duration::ZERO, 1, [alert("a")].iter());
        }
        let kept = activity.alerts_after(0);
        assert_eq!(kept.len(), KEPT_ALERTS);
        assert_eq!(kept[0].number, 11);
        assert_eq!(activity.last_alert(), (KEPT_ALERTS + 10) as u64);
    }
}
