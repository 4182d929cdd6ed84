//! The storage engines under test, behind one small trait.

pub mod fjall_store;
pub mod redb_store;
pub mod sqlite;

use crate::model::Reading;
use std::collections::BinaryHeap;
use std::path::Path;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Cache budget handed to every engine (page cache / block cache).
pub const CACHE_BYTES: usize = 256 << 20;

pub trait Store: Send {
    /// Writes all readings in ONE transaction and makes it durable (unless the
    /// engine was configured as not durable, e.g. SQLite synchronous=NORMAL).
    fn commit(&mut self, batch: &[Reading]) -> Result<()>;

    /// Access path (a): readings of `sensor` with since <= ts <= until, ordered by
    /// (ts, seq), strictly after `after` (keyset pagination), at most `limit`.
    fn history_page(
        &mut self,
        sensor: u32,
        since: i64,
        until: i64,
        after: Option<(i64, u64)>,
        limit: usize,
        out: &mut Vec<Reading>,
    ) -> Result<()>;

    /// Access path (b): readings of `sensor` with seq > after_seq in seq order, at most `limit`.
    fn tail_page(
        &mut self,
        sensor: u32,
        after_seq: u64,
        limit: usize,
        out: &mut Vec<Reading>,
    ) -> Result<()>;

    /// Brings the store to a quiescent state before the disk size is measured
    /// (SQLite: WAL checkpoint; fjall: wait for background flush/compaction).
    fn settle(&mut self) -> Result<()>;

    /// Bytes currently held in the engine's write-ahead log / journal (part of the
    /// disk size; reported separately because it shrinks once memtables are flushed).
    fn log_bytes(&mut self) -> u64 {
        0
    }

    /// Engine-specific offline compaction; returns false if the engine has none.
    fn compact(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Free-form notes (query plans, verified pragmas, ...), reported once.
    fn notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Engine configurations that the benchmark knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    SqliteS1,
    SqliteS1b,
    SqliteS2,
    SqliteS3,
    /// S2 with synchronous=NORMAL (not durable on power loss); W1 + W2 only.
    SqliteS2Normal,
    Redb,
    Redb1,
    Fjall,
    Fjall1,
}

impl Config {
    pub const ALL: [Config; 9] = [
        Config::SqliteS1,
        Config::SqliteS1b,
        Config::SqliteS2,
        Config::SqliteS3,
        Config::SqliteS2Normal,
        Config::Redb,
        Config::Redb1,
        Config::Fjall,
        Config::Fjall1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::SqliteS1 => "sqlite-s1",
            Config::SqliteS1b => "sqlite-s1b",
            Config::SqliteS2 => "sqlite-s2",
            Config::SqliteS3 => "sqlite-s3",
            Config::SqliteS2Normal => "sqlite-s2-normal",
            Config::Redb => "redb",
            Config::Redb1 => "redb-1t",
            Config::Fjall => "fjall",
            Config::Fjall1 => "fjall-1ks",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Config::SqliteS1 => "SQLite WAL sync=FULL; rowid=seq + covering index (sensor, ts, temperature)",
            Config::SqliteS1b => "SQLite WAL sync=FULL; rowid=seq + covering index (sensor, ts, seq, temperature) [extra, not in brief]",
            Config::SqliteS2 => "SQLite WAL sync=FULL; WITHOUT ROWID PK(sensor, ts, seq) + index (sensor, seq)",
            Config::SqliteS3 => "SQLite WAL sync=FULL; WITHOUT ROWID PK(sensor, ts, seq) only",
            Config::SqliteS2Normal => "SQLite WAL sync=NORMAL (NOT durable on power loss); schema S2",
            Config::Redb => "redb Durability::Immediate; tables hist(sensor|ts|seq) + tail(sensor|seq)",
            Config::Redb1 => "redb Durability::Immediate; table hist(sensor|ts|seq) only",
            Config::Fjall => "fjall batch + PersistMode::SyncData; keyspaces hist + tail",
            Config::Fjall1 => "fjall batch + PersistMode::SyncData; keyspace hist only",
        }
    }

    pub fn from_name(s: &str) -> Option<Config> {
        Config::ALL.iter().copied().find(|c| c.name() == s)
    }

    /// Whether the read workloads (W3, W4) are run for this configuration.
    pub fn runs_reads(self) -> bool {
        !matches!(self, Config::SqliteS2Normal)
    }

    pub fn open(self, dir: &Path) -> Result<Box<dyn Store>> {
        use sqlite::{Schema, Sqlite};
        Ok(match self {
            Config::SqliteS1 => Box::new(Sqlite::open(dir, Schema::S1, true)?),
            Config::SqliteS1b => Box::new(Sqlite::open(dir, Schema::S1b, true)?),
            Config::SqliteS2 => Box::new(Sqlite::open(dir, Schema::S2, true)?),
            Config::SqliteS3 => Box::new(Sqlite::open(dir, Schema::S3, true)?),
            Config::SqliteS2Normal => Box::new(Sqlite::open(dir, Schema::S2, false)?),
            Config::Redb => Box::new(redb_store::RedbStore::open(dir, true)?),
            Config::Redb1 => Box::new(redb_store::RedbStore::open(dir, false)?),
            Config::Fjall => Box::new(fjall_store::FjallStore::open(dir, true)?),
            Config::Fjall1 => Box::new(fjall_store::FjallStore::open(dir, false)?),
        })
    }
}

/// Tail query without a (sensor, seq) index: scan the sensor's whole history and
/// keep the `limit` smallest seqs above `after_seq` in a bounded max-heap.
pub struct TopBySeq {
    heap: BinaryHeap<(u64, i64, u64)>, // (seq, ts, temp bits)
    limit: usize,
    after: u64,
}

impl TopBySeq {
    pub fn new(after: u64, limit: usize) -> Self {
        TopBySeq { heap: BinaryHeap::with_capacity(limit + 1), limit, after }
    }
    #[inline]
    pub fn offer(&mut self, ts: i64, seq: u64, temp: f64) {
        if seq <= self.after || self.limit == 0 {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push((seq, ts, temp.to_bits()));
        } else if seq < self.heap.peek().unwrap().0 {
            self.heap.pop();
            self.heap.push((seq, ts, temp.to_bits()));
        }
    }
    pub fn finish(self, sensor: u32, out: &mut Vec<Reading>) {
        let mut v = self.heap.into_vec();
        v.sort_unstable();
        out.extend(v.into_iter().map(|(seq, ts, t)| Reading { sensor, ts, seq, temp: f64::from_bits(t) }));
    }
}
