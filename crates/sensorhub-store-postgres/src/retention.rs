//! Retention: readings older than the period are deleted, every hour and
//! once at start, and idempotency keys past their window are forgotten.
//!
//! Why by sensor and not `WHERE ts < cutoff`: the readings' primary key is
//! `(sensor_id, ts, seq)` and there is no index on `ts` alone, so a delete
//! by time only reads the whole table (a sequential scan of every reading
//! kept, each hour). Naming the sensors makes each one a range scan of the
//! primary key over its expired prefix: the work is the rows deleted plus
//! one index descent per sensor. The sensors come from `sensor_stats` (one
//! row for every sensor that has readings), a page at a time. An index on
//! `ts` would do the same for the delete, but every reading written would
//! pay one more index insert on the hot path, for a job that runs hourly.
//!
//! Invariant: the delete is planned as an index scan of `readings_pkey`
//! with `sensor_id` in its index condition, never a scan of the table, while
//! it deletes a small part of the table (the test below holds it to that).

use std::time::Duration;

use deadpool_postgres::Pool;
use sensorhub_core::{StoreError, StoreSettings};

use crate::{failure, writer};

/// The sensors, a page at a time, in id order.
const SENSORS_AFTER: &str =
    "SELECT sensor_id FROM sensor_stats WHERE sensor_id > $1 ORDER BY sensor_id LIMIT $2";
/// One page of sensors' expired readings, through the primary key.
pub(crate) const DELETE_EXPIRED: &str =
    "DELETE FROM readings WHERE sensor_id = ANY($1::text[]) AND ts < $2";
/// Sensors per delete: large enough that few statements run, small enough
/// that one transaction holds few row locks at a time.
const SENSORS_PER_DELETE: i64 = 1_000;

/// Deletes readings older than `keep`, and keys past their window.
pub(crate) async fn apply(
    pool: &Pool,
    keep: Duration,
    settings: &StoreSettings,
) -> Result<(), StoreError> {
    let cutoff = writer::unix_now().saturating_sub(keep.as_secs() as i64);
    let mut client = pool.get().await.map_err(failure::pool)?;
    let mut deleted = 0;
    let mut after = String::new();
    loop {
        let sensors: Vec<String> = client
            .query(SENSORS_AFTER, &[&after, &SENSORS_PER_DELETE])
            .await
            .map_err(failure::write)?
            .into_iter()
            .map(|row| row.get(0))
            .collect();
        let Some(last) = sensors.last().cloned() else {
            break;
        };
        deleted += client
            .execute(DELETE_EXPIRED, &[&sensors, &cutoff])
            .await
            .map_err(failure::write)?;
        if (sensors.len() as i64) < SENSORS_PER_DELETE {
            break;
        }
        after = last;
    }
    let tx = client.transaction().await.map_err(failure::write)?;
    writer::forget_keys(&tx, settings)
        .await
        .map_err(failure::write)?;
    tx.commit().await.map_err(failure::write)?;
    if deleted > 0 {
        tracing::info!(deleted, cutoff, "retention deleted old readings");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DELETE_EXPIRED;
    use crate::testing::TestPostgres;

    /// The plan of `statement` on a table of 200 sensors with 1,000 readings
    /// each, of which the oldest 2 % of each sensor expire at the cutoff the
    /// tests give.
    fn plan_of(statement: &str, arguments: &str) -> String {
        let pg = TestPostgres::shared();
        let db = pg.fresh_database();
        pg.psql(
            &db,
            "CREATE TABLE readings (sensor_id text COLLATE \"C\" NOT NULL, ts bigint NOT NULL, \
             seq bigint NOT NULL, temperature double precision NOT NULL, \
             PRIMARY KEY (sensor_id, ts, seq)); \
             CREATE INDEX readings_by_seq ON readings (sensor_id, seq); \
             INSERT INTO readings SELECT 's' || (n % 200), 1000000 + n / 200, n, 20.0 \
             FROM generate_series(0, 199999) AS n; ANALYZE readings",
        )
        .expect("a filled table");
        let plan = pg
            .psql(
                &db,
                &format!("PREPARE expire AS {statement}; EXPLAIN EXECUTE expire({arguments})"),
            )
            .expect("explain");
        eprintln!("{statement}\n{plan}");
        plan
    }

    #[test]
    fn the_expiry_delete_is_a_primary_key_range_scan_per_sensor() {
        let sensors = (0..200)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let plan = plan_of(DELETE_EXPIRED, &format!("'{{{sensors}}}'::text[], 1000020"));
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(plan.contains("readings_pkey"), "{plan}");
        assert!(plan.contains("Index Cond: ((sensor_id = ANY"), "{plan}");
        // The delete by time alone, on the same table, reads all of it: the
        // table is large enough for the difference to show.
        let by_time = plan_of("DELETE FROM readings WHERE ts < $1", "1000020");
        assert!(by_time.contains("Seq Scan on readings"), "{by_time}");
    }
}
