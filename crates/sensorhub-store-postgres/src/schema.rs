//! The tables, created and upgraded by the server itself at start.
//!
//! Why under an advisory lock in one transaction: replicas start at once,
//! and two of them creating the same tables would fail one start; the lock
//! makes the second wait and then find the schema there. One transaction
//! means a start refused half-way (no permission, say) writes nothing.
//!
//! Every key starts with the sensor id, so the readings and the statistics
//! could be distributed by sensor id (Citus) as they are; the clock row and
//! the idempotency keys are the small shared tables (ARCHITECTURE.md).
//!
//! Invariant: `sensorhub_schema` holds the versions applied; a database
//! whose newest version is above [`VERSION`] was made by a newer sensorhub
//! and is refused with nothing changed.

use tokio_postgres::{Client, error::SqlState};

/// The schema version this build writes.
pub(crate) const VERSION: i32 = 1;

/// The advisory lock key every sensorhub takes around schema changes
/// ("sensorhb" in ASCII).
const MIGRATION_LOCK: i64 = 0x7365_6e73_6f72_6862;

/// Version 1. `COLLATE "C"`: ids sort by their bytes, as the embedded
/// engine and the stats pages' cursor expect.
const V1: &str = r#"
CREATE TABLE sensorhub_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE store_clock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq bigint NOT NULL
);
INSERT INTO store_clock (id, last_seq) VALUES (true, 0);
CREATE TABLE readings (
    sensor_id text COLLATE "C" NOT NULL,
    ts bigint NOT NULL,
    seq bigint NOT NULL,
    temperature double precision NOT NULL,
    PRIMARY KEY (sensor_id, ts, seq)
);
CREATE INDEX readings_by_seq ON readings (sensor_id, seq);
CREATE TABLE sensor_stats (
    sensor_id text COLLATE "C" PRIMARY KEY,
    count bigint NOT NULL,
    sum double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    last double precision NOT NULL,
    last_ts bigint NOT NULL,
    rolling_mean double precision NOT NULL,
    alerts bigint NOT NULL
);
CREATE TABLE idempotency_keys (
    key text COLLATE "C" PRIMARY KEY,
    first_seq bigint NOT NULL UNIQUE,
    through bigint NOT NULL,
    fingerprint bigint NOT NULL,
    first_used bigint NOT NULL
);
INSERT INTO sensorhub_schema (version) VALUES (1);
"#;

/// Why the schema could not be made ready.
#[derive(Debug)]
pub(crate) enum SchemaError {
    /// Made by a newer sensorhub.
    Newer(i32),
    /// The user may not create the tables.
    NoPermission(String),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            SchemaError::NoPermission(why)
        } else {
            SchemaError::Db(e)
        }
    }
}

/// Creates or upgrades the schema; returns the version found before (0: none).
pub(crate) async fn prepare(client: &mut Client) -> Result<i32, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('sensorhub_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    let found = if exists {
        tx.query_one(
            "SELECT coalesce(max(version), 0) FROM sensorhub_schema",
            &[],
        )
        .await?
        .get::<_, i32>(0)
    } else {
        0
    };
    if found > VERSION {
        return Err(SchemaError::Newer(found));
    }
    if found < 1 {
        tx.batch_execute(V1).await?;
    }
    tx.commit().await?;
    Ok(found)
}
