//! SQLite (rusqlite, bundled) in WAL mode.

use super::{Result, Store, CACHE_BYTES};
use crate::model::Reading;
use rusqlite::{params, Connection};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// rowid table (rowid = seq) + covering index (sensor, ts, temperature)
    S1,
    /// S1 with the index extended to (sensor, ts, seq, temperature) -- not in the brief;
    /// added because S1's index cannot deliver (ts, seq) order (see query plans).
    S1b,
    /// WITHOUT ROWID PRIMARY KEY(sensor, ts, seq) + index (sensor, seq)
    S2,
    /// WITHOUT ROWID PRIMARY KEY(sensor, ts, seq) only
    S3,
}

impl Schema {
    fn ddl(self) -> &'static str {
        match self {
            Schema::S1 => {
                "CREATE TABLE IF NOT EXISTS reading(
                    seq INTEGER PRIMARY KEY,
                    sensor INTEGER NOT NULL,
                    ts INTEGER NOT NULL,
                    temperature REAL NOT NULL);
                 CREATE INDEX IF NOT EXISTS reading_sensor_ts ON reading(sensor, ts, temperature);"
            }
            Schema::S1b => {
                "CREATE TABLE IF NOT EXISTS reading(
                    seq INTEGER PRIMARY KEY,
                    sensor INTEGER NOT NULL,
                    ts INTEGER NOT NULL,
                    temperature REAL NOT NULL);
                 CREATE INDEX IF NOT EXISTS reading_sensor_ts_seq ON reading(sensor, ts, seq, temperature);"
            }
            Schema::S2 => {
                "CREATE TABLE IF NOT EXISTS reading(
                    sensor INTEGER NOT NULL,
                    ts INTEGER NOT NULL,
                    seq INTEGER NOT NULL,
                    temperature REAL NOT NULL,
                    PRIMARY KEY(sensor, ts, seq)) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS reading_sensor_seq ON reading(sensor, seq);"
            }
            Schema::S3 => {
                "CREATE TABLE IF NOT EXISTS reading(
                    sensor INTEGER NOT NULL,
                    ts INTEGER NOT NULL,
                    seq INTEGER NOT NULL,
                    temperature REAL NOT NULL,
                    PRIMARY KEY(sensor, ts, seq)) WITHOUT ROWID;"
            }
        }
    }
}

const INSERT: &str = "INSERT INTO reading(sensor, ts, seq, temperature) VALUES (?1, ?2, ?3, ?4)";
const HIST_FIRST: &str = "SELECT ts, seq, temperature FROM reading
    WHERE sensor = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY ts, seq LIMIT ?4";
const HIST_NEXT: &str = "SELECT ts, seq, temperature FROM reading
    WHERE sensor = ?1 AND (ts, seq) > (?2, ?3) AND ts <= ?4 ORDER BY ts, seq LIMIT ?5";
const TAIL: &str = "SELECT ts, seq, temperature FROM reading
    WHERE sensor = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
/// S1/S1b: seq is the rowid; the unary `+` stops the planner from picking the
/// (sensor, ts, ...) index + sort, so it walks the rowid range seq > ?2 instead.
const TAIL_ROWID: &str = "SELECT ts, seq, temperature FROM reading
    WHERE +sensor = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

pub struct Sqlite {
    conn: Connection,
    schema: Schema,
    durable: bool,
}

impl Sqlite {
    pub fn open(dir: &Path, schema: Schema, durable: bool) -> Result<Self> {
        let conn = Connection::open(dir.join("readings.db"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            return Err(format!("journal_mode=WAL refused: {mode}").into());
        }
        conn.execute_batch(if durable {
            "PRAGMA synchronous=FULL"
        } else {
            "PRAGMA synchronous=NORMAL"
        })?;
        conn.execute_batch(&format!("PRAGMA cache_size=-{}", CACHE_BYTES / 1024))?;
        conn.execute_batch(schema.ddl())?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Sqlite { conn, schema, durable })
    }

    fn tail_sql(&self) -> &'static str {
        match self.schema {
            Schema::S1 | Schema::S1b => TAIL_ROWID,
            Schema::S2 | Schema::S3 => TAIL,
        }
    }

    fn plan(&self, sql: &str, n: usize) -> String {
        let q = format!("EXPLAIN QUERY PLAN {sql}");
        let mut st = match self.conn.prepare(&q) {
            Ok(s) => s,
            Err(e) => return format!("error: {e}"),
        };
        let args: Vec<i64> = vec![1; n];
        let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(3));
        match rows {
            Ok(it) => it.filter_map(|r| r.ok()).collect::<Vec<_>>().join(" / "),
            Err(e) => format!("error: {e}"),
        }
    }

    fn read_rows(
        stmt: &mut rusqlite::CachedStatement<'_>,
        params: &[&dyn rusqlite::ToSql],
        sensor: u32,
        out: &mut Vec<Reading>,
    ) -> Result<()> {
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            out.push(Reading {
                sensor,
                ts: row.get(0)?,
                seq: row.get::<_, i64>(1)? as u64,
                temp: row.get(2)?,
            });
        }
        Ok(())
    }
}

impl Store for Sqlite {
    fn commit(&mut self, batch: &[Reading]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(INSERT)?;
            for r in batch {
                st.execute(params![r.sensor, r.ts, r.seq as i64, r.temp])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn history_page(
        &mut self,
        sensor: u32,
        since: i64,
        until: i64,
        after: Option<(i64, u64)>,
        limit: usize,
        out: &mut Vec<Reading>,
    ) -> Result<()> {
        let limit = limit as i64;
        match after {
            None => {
                let mut st = self.conn.prepare_cached(HIST_FIRST)?;
                Self::read_rows(&mut st, params![sensor, since, until, limit], sensor, out)
            }
            Some((ts, seq)) => {
                let mut st = self.conn.prepare_cached(HIST_NEXT)?;
                Self::read_rows(&mut st, params![sensor, ts, seq as i64, until, limit], sensor, out)
            }
        }
    }

    fn tail_page(
        &mut self,
        sensor: u32,
        after_seq: u64,
        limit: usize,
        out: &mut Vec<Reading>,
    ) -> Result<()> {
        let mut st = self.conn.prepare_cached(self.tail_sql())?;
        Self::read_rows(&mut st, params![sensor, after_seq as i64, limit as i64], sensor, out)
    }

    fn settle(&mut self) -> Result<()> {
        // Copy the WAL into the main db file and truncate the WAL to zero bytes.
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn notes(&mut self) -> Vec<String> {
        let sync: i64 = self.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap_or(-1);
        let jm: String = self.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap_or_default();
        let ver: String = self.conn.query_row("SELECT sqlite_version()", [], |r| r.get(0)).unwrap_or_default();
        vec![
            format!(
                "sqlite {ver}, schema {:?}, journal_mode={jm}, synchronous={sync} (2=FULL, 1=NORMAL), durable={}",
                self.schema, self.durable
            ),
            format!("plan history first page: {}", self.plan(HIST_FIRST, 4)),
            format!("plan history next page:  {}", self.plan(HIST_NEXT, 5)),
            format!("plan tail page:          {}", self.plan(self.tail_sql(), 3)),
        ]
    }
}
