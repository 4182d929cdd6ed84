//! The on-disk format: how connections are opened, the pragmas that make
//! commits durable, and the tables.
//!
//! Tables:
//! - `readings(sensor, ts, seq, temperature, late)`, clustered on
//!   `(sensor, ts, seq)` (`WITHOUT ROWID`) so one sensor's history in time
//!   order is a sequential range scan. The live tail (a sensor's readings
//!   after a sequence number, in commit order) is served from the same key:
//!   a reading is *late* when its sensor already has one with a later
//!   timestamp (the writer decides, `writer.rs`), and the readings of a
//!   sensor that are not late are in commit order along the key too. Only
//!   the late ones (rare: a clock set back, two senders of one sensor) are
//!   in the partial index `readings_late(sensor, seq) WHERE late = 1`, so a
//!   reading in time order costs one b-tree insert, not two (schema 3 kept
//!   a `(sensor, seq)` index of every reading).
//! - `tail_marks(sensor, seq, ts)`: one reading in every [`MARK_EVERY`] of a
//!   sensor that are not late, where a tail after a sequence number can start
//!   along the key: the last mark at or before it (`reader.rs`).
//! - `sensors(id, name, …statistics)`: the integer id that keys readings, and
//!   the running statistics, updated in the same transaction as the readings.
//! - `meta(key, value)`: `last_seq`, so sequence numbers never repeat, even
//!   after retention has deleted the newest readings' predecessors.
//! - `idempotency_keys(row, key, through, fingerprint, first_used)`: what
//!   each remembered key has stored (`crate::idempotency::KeyState`). Keyed
//!   by `row`, the sequence number of the key's first reading, not by the
//!   key: new keys then append at the b-tree's end and expired ones go from
//!   its start, instead of touching a random page each; the store reads
//!   them all into memory when it opens.

use std::{
    fs::File,
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};

use crate::StoreLocation;
use sensorhub_core::StoreError;

/// The version of the store's format this build writes (`PRAGMA
/// user_version`): the tables and the journal beside them. 2: journal
/// format 2 (`journal/format.rs`), whose files a build of version 1 would
/// not see, so it must refuse the store rather than start without them.
/// 3: the `idempotency_keys` table, and journal frames with key entries.
/// 4: `readings.late`, `readings_late` and `tail_marks` instead of the index
/// `readings_by_arrival` ([`upgrade_to_4`]).
const SCHEMA_VERSION: i64 = 4;
/// A tail mark every this many readings of a sensor that are not late: a
/// tail page reads at most about this many rows before its first (`reader.rs`).
pub(super) const MARK_EVERY: u32 = 256;
const DB_FILE: &str = "readings.db";
const LOCK_FILE: &str = "sensorhub.lock";
const JOURNAL_DIR: &str = "journal";
/// A reader connection's page cache, in KiB when negative (SQLite's convention).
const READER_CACHE_KIB: i64 = -512;
/// The longest the startup check of an existing file may take. `quick_check`
/// reads every page once (about 0.6 s for 5 M readings, 220 MB, when cached);
/// a store too large to finish within this is checked only partly, with a warning.
const OPEN_CHECK_BUDGET: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    last REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    rolling_mean REAL NOT NULL,
    alerts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    sensor INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    temperature REAL NOT NULL,
    late INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (sensor, ts, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_late ON readings (sensor, seq) WHERE late = 1;
CREATE TABLE IF NOT EXISTS tail_marks (
    sensor INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (sensor, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    row INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    through INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL,
    first_used INTEGER NOT NULL
);
";

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// From a store of schema 1, 2 or 3: every reading already stored counts as
/// late (the column's default), so the live tail finds all of them through
/// `readings_late` (which [`SCHEMA`] then builds, once, as schema 3 had
/// `readings_by_arrival`), and the readings stored from now on are sorted
/// into late or not as they come. Runs inside the opening transaction.
fn upgrade_to_4(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "ALTER TABLE readings ADD COLUMN late INTEGER NOT NULL DEFAULT 1;
         DROP INDEX IF EXISTS readings_by_arrival;",
    )
}

/// Where connections go, and the lock that keeps a second process out.
#[derive(Debug)]
pub(super) struct Target {
    uri: String,
    /// For messages: the database file, or `memory`.
    pub(super) display: PathBuf,
    durable: bool,
    /// The commit log's directory; `None` in memory.
    pub(super) journal: Option<PathBuf>,
    /// Held for the life of the store: a second store on the same
    /// directory would hand out the same sequence numbers. Shared with the
    /// writer and indexer threads ([`Target::lock`]): it is released when
    /// the last of them, and of the readers, is done with the files.
    lock: Option<Arc<File>>,
}

impl Target {
    pub(super) fn new(location: &StoreLocation) -> Result<Target, StoreError> {
        match location {
            StoreLocation::Directory(dir) => {
                let open_err = |reason: String| StoreError::Open {
                    path: dir.clone(),
                    reason,
                };
                std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
                let lock =
                    File::create(dir.join(LOCK_FILE)).map_err(|e| open_err(e.to_string()))?;
                match lock.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(StoreError::Locked(dir.clone()));
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e.to_string())),
                }
                let path = dir.join(DB_FILE);
                // SQLite would take an empty file for a new database and
                // start empty; but once opened, the file always holds at
                // least its header page, so an empty one was truncated.
                if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: "the file is empty (0 bytes), so it was truncated; if this directory never held readings, delete the file".into(),
                    });
                }
                Ok(Target {
                    uri: path.to_string_lossy().into_owned(),
                    display: path,
                    durable: true,
                    journal: Some(dir.join(JOURNAL_DIR)),
                    lock: Some(Arc::new(lock)),
                })
            }
            StoreLocation::Memory => {
                // A name unique in this process: two in-memory stores (tests)
                // must not share one database.
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Target {
                    uri: format!("file:/sensorhub-{}-{n}?vfs=memdb", std::process::id()),
                    display: PathBuf::from("memory"),
                    durable: false,
                    journal: None,
                    lock: None,
                })
            }
        }
    }

    /// The directory lock, for a thread that touches the store's files
    /// to hold until it ends (`None` in memory).
    pub(super) fn lock(&self) -> Option<Arc<File>> {
        self.lock.clone()
    }

    /// Opens the writer's connection, creating or checking the schema.
    pub(super) fn open_writer(&self) -> Result<Connection, StoreError> {
        let mut conn =
            self.open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        if self.durable {
            // Before anything writes to the file.
            self.check_intact(&conn)?;
        }
        let pragmas = if self.durable {
            // WAL + synchronous=FULL: every commit fsyncs the WAL, so a
            // committed transaction survives a crash or power loss.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
        } else {
            "PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;"
        };
        conn.execute_batch(pragmas).map_err(|e| self.classify(e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.classify(e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Open {
                path: self.display.clone(),
                reason: format!(
                    "it was written by a newer sensorhub (schema {version}, this build knows {SCHEMA_VERSION})"
                ),
            });
        }
        // One transaction: a start cut short leaves the store as it was.
        let tx = conn.transaction().map_err(|e| self.classify(e))?;
        if version < 4 && has_table(&tx, "readings").map_err(|e| self.classify(e))? {
            upgrade_to_4(&tx).map_err(|e| self.classify(e))?;
            tracing::info!(store = %self.display.display(), from = version, "store upgraded to schema 4");
        }
        tx.execute_batch(SCHEMA).map_err(|e| self.classify(e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| self.classify(e))?;
        tx.commit().map_err(|e| self.classify(e))?;
        Ok(conn)
    }

    /// Opens a read-only connection for queries.
    pub(super) fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = self
            .open(OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| match e {
                StoreError::Open { .. } if super::reader::out_of_descriptors() => {
                    StoreError::OutOfDescriptors
                }
                other => other,
            })?;
        conn.pragma_update(None, "query_only", true)
            .map_err(super::reader::read_failure)?;
        // Queries are range scans that rarely revisit a page, so a small
        // page cache per pooled connection (up to 16 of them) loses little
        // and keeps the pool's memory flat: 512 KiB each, not SQLite's 2 MiB.
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)
            .map_err(super::reader::read_failure)?;
        Ok(conn)
    }

    fn open(&self, flags: OpenFlags) -> Result<Connection, StoreError> {
        let flags = flags | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.uri, flags).map_err(|e| self.classify(e))?;
        // The memdb VFS has no WAL: readers and the writer take turns.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.classify(e))?;
        Ok(conn)
    }

    /// Refuses a damaged file at startup rather than failing later on the
    /// page that is damaged. `quick_check` verifies every page and b-tree
    /// (not index contents: that is `integrity_check`, about 4 times slower),
    /// stopped after [`OPEN_CHECK_BUDGET`] so a huge store still starts.
    fn check_intact(&self, conn: &Connection) -> Result<(), StoreError> {
        let interrupt = conn.get_interrupt_handle();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(OPEN_CHECK_BUDGET)
            {
                interrupt.interrupt();
            }
        });
        let found = conn.prepare("PRAGMA quick_check(5)").and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        });
        drop(done);
        let _ = watchdog.join();
        match found {
            Ok(found) if found == ["ok"] => Ok(()),
            Ok(found) => Err(StoreError::Corrupt {
                path: self.display.clone(),
                reason: format!("PRAGMA quick_check: {}", found.join("; ")),
            }),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                tracing::warn!(
                    store = %self.display.display(),
                    budget = ?OPEN_CHECK_BUDGET,
                    "the store is too large to check completely at startup; run `PRAGMA integrity_check` on a copy to check it all"
                );
                Ok(())
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Tells a damaged file apart from other failures, so the operator gets
    /// the right advice.
    pub(super) fn classify(&self, e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match e.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt {
                path: self.display.clone(),
                reason: e.to_string(),
            },
            _ => StoreError::Open {
                path: self.display.clone(),
                reason: e.to_string(),
            },
        }
    }
}
