//! Per-sensor analysis, kept incrementally: running count/min/max/mean, the
//! last reading, an exponentially weighted rolling mean, and alert rules.
//!
//! Why incremental and applied by the store's writer: alerts depend on the
//! order readings are committed in, and statistics must survive restarts.
//! The writer applies [`SensorStats::observe`] to each reading in commit order
//! and persists the result in the same transaction as the readings, so the
//! statistics can never disagree with what is stored. Nothing here does I/O.

use crate::Reading;

/// Which rule an alert broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertRule {
    /// Temperature above [`AlertRules::max`].
    AboveMax,
    /// Temperature below [`AlertRules::min`].
    BelowMin,
    /// Temperature further than [`AlertRules::max_jump`] from the rolling mean.
    Jump,
}

impl AlertRule {
    /// Every rule, e.g. to show each alert counter from zero.
    pub const ALL: [AlertRule; 3] = [AlertRule::AboveMax, AlertRule::BelowMin, AlertRule::Jump];

    /// The stable name used on the wire and in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::AboveMax => "above_max",
            AlertRule::BelowMin => "below_min",
            AlertRule::Jump => "jump",
        }
    }
}

/// When a reading raises an alert. Tunable by the operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertRules {
    /// Alert above this temperature, °C.
    pub max: f64,
    /// Alert below this temperature, °C.
    pub min: f64,
    /// Alert when a reading is further than this from the rolling mean, °C.
    pub max_jump: f64,
    /// Weight of the newest reading in the rolling mean (0 < alpha <= 1).
    pub ewma_alpha: f64,
    /// Readings a sensor must have sent before jump alerts apply to it.
    pub warmup: u64,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            max: 45.0,
            min: -30.0,
            max_jump: 5.0,
            ewma_alpha: 0.1,
            warmup: 5,
        }
    }
}

/// An alert raised by one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub sensor_id: String,
    pub rule: AlertRule,
    pub temperature: f64,
    pub timestamp: i64,
    /// The sensor's rolling mean before this reading.
    pub rolling_mean: f64,
    /// The bound that was crossed: the threshold, or the allowed jump.
    pub threshold: f64,
}

impl Alert {
    /// A one-line human description, as sent in chat replies and logs.
    pub fn describe(&self) -> String {
        match self.rule {
            AlertRule::AboveMax => format!(
                "ALERT {}: {} °C is above the maximum of {} °C",
                self.sensor_id, self.temperature, self.threshold
            ),
            AlertRule::BelowMin => format!(
                "ALERT {}: {} °C is below the minimum of {} °C",
                self.sensor_id, self.temperature, self.threshold
            ),
            AlertRule::Jump => format!(
                "ALERT {}: {} °C jumped {:.2} °C from the rolling mean {:.2} °C (allowed {} °C)",
                self.sensor_id,
                self.temperature,
                (self.temperature - self.rolling_mean).abs(),
                self.rolling_mean,
                self.threshold
            ),
        }
    }
}

/// Everything known about one sensor, updated one reading at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorStats {
    pub sensor_id: String,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub last_timestamp: i64,
    pub rolling_mean: f64,
    pub alerts: u64,
}

impl SensorStats {
    /// Statistics of a sensor that has sent nothing yet.
    pub fn new(sensor_id: impl Into<String>) -> Self {
        Self {
            sensor_id: sensor_id.into(),
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: 0.0,
            last_timestamp: 0,
            rolling_mean: 0.0,
            alerts: 0,
        }
    }

    /// Mean of every reading ever accepted (0 when there is none).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Applies one (already validated) reading and returns the alert it raises, if any.
    pub fn observe(&mut self, reading: &Reading, rules: &AlertRules) -> Option<Alert> {
        let t = reading.temperature;
        let before = self.rolling_mean;
        let broken = if t > rules.max {
            Some((AlertRule::AboveMax, rules.max))
        } else if t < rules.min {
            Some((AlertRule::BelowMin, rules.min))
        } else if self.count >= rules.warmup && (t - before).abs() > rules.max_jump {
            Some((AlertRule::Jump, rules.max_jump))
        } else {
            None
        };

        self.rolling_mean = if self.count == 0 {
            t
        } else {
            before + rules.ewma_alpha * (t - before)
        };
        self.count += 1;
        self.sum += t;
        self.min = self.min.min(t);
        self.max = self.max.max(t);
        self.last = t;
        self.last_timestamp = reading.timestamp;

        let (rule, threshold) = broken?;
        self.alerts += 1;
        Some(Alert {
            sensor_id: reading.sensor_id.clone(),
            rule,
            temperature: t,
            timestamp: reading.timestamp,
            rolling_mean: before,
            threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: f64) -> Reading {
        Reading {
            sensor_id: "s".into(),
            temperature: t,
            timestamp: 100,
        }
    }

    #[test]
    fn running_statistics() {
        let rules = AlertRules::default();
        let mut s = SensorStats::new("s");
        for t in [20.0, 22.0, 24.0] {
            assert_eq!(s.observe(&r(t), &rules), None);
        }
        assert_eq!((s.count, s.min, s.max, s.last), (3, 20.0, 24.0, 24.0));
        assert!((s.mean() - 22.0).abs() < 1e-12);
        // ewma: 20 -> 20.2 -> 20.58
        assert!((s.rolling_mean - 20.58).abs() < 1e-9, "{}", s.rolling_mean);
    }

    #[test]
    fn bounds_alert_immediately_jump_after_warmup() {
        let rules = AlertRules::default();
        let mut s = SensorStats::new("s");
        assert_eq!(
            s.observe(&r(50.0), &rules).unwrap().rule,
            AlertRule::AboveMax
        );
        assert_eq!(
            s.observe(&r(-31.0), &rules).unwrap().rule,
            AlertRule::BelowMin
        );

        let mut s = SensorStats::new("s");
        // During warm-up, big swings are not jumps.
        assert_eq!(s.observe(&r(20.0), &rules), None);
        assert_eq!(s.observe(&r(30.0), &rules), None);
        for _ in 0..10 {
            s.observe(&r(25.0), &rules);
        }
        let alert = s.observe(&r(35.0), &rules).expect("jump alert");
        assert_eq!(alert.rule, AlertRule::Jump);
        assert!(alert.rolling_mean < 26.0);
        assert_eq!(s.alerts, 1);
        assert!(alert.describe().contains("jumped"));
    }
}
