//! A sensor's readings over the chart's range, from the store's history
//! pages, in at most [`MAX_POINTS`] points whatever the range holds.
//!
//! A range with at most one page of readings ([`FIRST_PAGE`]) is read whole
//! and averaged into time buckets if it has more than [`MAX_POINTS`]. A denser
//! range is not read whole: it is cut into [`MAX_POINTS`] time buckets and
//! each bucket's point is the mean of its first [`PER_BUCKET`] readings (one
//! short index range scan each), so 24 hours of a fast sensor cost a bounded
//! number of small reads instead of millions of rows.

use std::time::Duration;

use sensorhub_core::{HistoryCursor, HistoryQuery, Store, StoreError, StoredReading};

use super::payload::Series;

pub const MAX_POINTS: usize = 300;
pub const FIRST_PAGE: usize = 4096;
pub const PER_BUCKET: usize = 16;

/// The ranges the page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Minutes15,
    Hour,
    Day,
}

impl Range {
    pub fn parse(text: &str) -> Option<Range> {
        match text {
            "15m" => Some(Range::Minutes15),
            "1h" => Some(Range::Hour),
            "24h" => Some(Range::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Range::Minutes15 => "15m",
            Range::Hour => "1h",
            Range::Day => "24h",
        }
    }

    pub fn length(self) -> Duration {
        Duration::from_secs(match self {
            Range::Minutes15 => 15 * 60,
            Range::Hour => 3600,
            Range::Day => 24 * 3600,
        })
    }
}

/// `sensor`'s readings over `range` up to `now` (Unix seconds).
pub async fn read(
    store: &dyn Store,
    sensor: &str,
    range: Range,
    now: i64,
) -> Result<Series, StoreError> {
    let seq = store.caught_up_seq().await?;
    let since = now - range.length().as_secs() as i64;
    let query = HistoryQuery {
        sensor_id: sensor.to_owned(),
        since: Some(since),
        until: None,
        up_to_seq: Some(seq),
    };
    let page = store
        .history_page(&query, HistoryCursor::default(), FIRST_PAGE)
        .await?;
    let (points, downsampled) = if page.len() < FIRST_PAGE {
        let readings: Vec<(i64, f64)> = page
            .iter()
            .map(|r| (r.reading.timestamp, r.reading.temperature))
            .collect();
        bucket_means(&readings, since, now)
    } else {
        (sampled(store, &query, since, now).await?, true)
    };
    Ok(Series {
        sensor: sensor.to_owned(),
        range: range.name(),
        seq,
        points,
        downsampled,
    })
}

/// The readings themselves when they fit, else the mean of each of
/// [`MAX_POINTS`] equal time buckets between `since` and `until`.
pub fn bucket_means(readings: &[(i64, f64)], since: i64, until: i64) -> (Vec<(i64, f64)>, bool) {
    if readings.len() <= MAX_POINTS {
        return (readings.to_vec(), false);
    }
    let width = bucket_width(since, until);
    let mut buckets: Vec<(f64, u32)> = vec![(0.0, 0); MAX_POINTS];
    for &(ts, temperature) in readings {
        let i = (((ts - since).max(0) / width) as usize).min(MAX_POINTS - 1);
        buckets[i].0 += temperature;
        buckets[i].1 += 1;
    }
    let points = buckets
        .iter()
        .enumerate()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(i, (sum, n))| (since + i as i64 * width + width / 2, sum / f64::from(*n)))
        .collect();
    (points, true)
}

fn bucket_width(since: i64, until: i64) -> i64 {
    ((until - since).max(1) + MAX_POINTS as i64 - 1) / MAX_POINTS as i64
}

/// One short page per time bucket: its first readings' mean.
async fn sampled(
    store: &dyn Store,
    query: &HistoryQuery,
    since: i64,
    until: i64,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let width = bucket_width(since, until);
    let mut points = Vec::with_capacity(MAX_POINTS);
    for i in 0..MAX_POINTS as i64 {
        let bucket = HistoryQuery {
            since: Some(since + i * width),
            until: Some(since + (i + 1) * width),
            ..query.clone()
        };
        let page: Vec<StoredReading> = store
            .history_page(&bucket, HistoryCursor::default(), PER_BUCKET)
            .await?;
        if page.is_empty() {
            continue;
        }
        let mean = page.iter().map(|r| r.reading.temperature).sum::<f64>() / page.len() as f64;
        let ts = page.iter().map(|r| r.reading.timestamp).sum::<i64>() / page.len() as i64;
        points.push((ts, mean));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_readings_are_kept_as_they_are() {
        let readings = vec![(100, 20.0), (160, 21.0)];
        assert_eq!(bucket_means(&readings, 0, 900), (readings, false));
    }

    #[test]
    fn many_readings_become_bucket_means() {
        // 900 s, one reading a second: 300 buckets of 3 s.
        let readings: Vec<(i64, f64)> = (0..900).map(|s| (s, s as f64)).collect();
        let (points, downsampled) = bucket_means(&readings, 0, 900);
        assert!(downsampled);
        assert_eq!(points.len(), MAX_POINTS);
        assert_eq!(points[0], (1, 1.0));
        assert_eq!(points[299], (898, 898.0));
    }

    #[test]
    fn ranges_parse() {
        for range in [Range::Minutes15, Range::Hour, Range::Day] {
            assert_eq!(Range::parse(range.name()), Some(range));
        }
        assert_eq!(Range::parse("7d"), None);
    }
}
