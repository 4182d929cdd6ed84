//! redb 4.x: copy-on-write B-tree, one file.

use super::{Result, Store, TopBySeq, CACHE_BYTES};
use crate::model::*;
use redb::{Builder, Database, Durability, ReadableDatabase, TableDefinition};
use std::ops::Bound;
use std::path::Path;

const HIST: TableDefinition<&[u8; HIST_KEY_LEN], &[u8; 8]> = TableDefinition::new("hist");
const TAIL: TableDefinition<&[u8; TAIL_KEY_LEN], &[u8; 16]> = TableDefinition::new("tail");

pub struct RedbStore {
    db: Database,
    with_tail: bool,
}

impl RedbStore {
    pub fn open(dir: &Path, with_tail: bool) -> Result<Self> {
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("readings.redb"))?;
        // Create the tables up front so that readers never see "table does not exist".
        let txn = db.begin_write()?;
        txn.open_table(HIST)?;
        if with_tail {
            txn.open_table(TAIL)?;
        }
        txn.commit()?;
        Ok(RedbStore { db, with_tail })
    }
}

impl Store for RedbStore {
    fn commit(&mut self, batch: &[Reading]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        // Immediate is the 4.x default; set explicitly so the intent is visible.
        txn.set_durability(Durability::Immediate)?;
        {
            let mut hist = txn.open_table(HIST)?;
            for r in batch {
                hist.insert(&hist_key(r.sensor, r.ts, r.seq), &temp_value(r.temp))?;
            }
        }
        if self.with_tail {
            let mut tail = txn.open_table(TAIL)?;
            for r in batch {
                tail.insert(&tail_key(r.sensor, r.seq), &tail_value(r.ts, r.temp))?;
            }
        }
        txn.commit()?;
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
        let rtx = self.db.begin_read()?;
        let table = rtx.open_table(HIST)?;
        let lo_key = match after {
            Some((ts, seq)) => hist_key(sensor, ts, seq),
            None => hist_key(sensor, since, 0),
        };
        let hi_key = hist_key(sensor, until, u64::MAX);
        let lo = if after.is_some() { Bound::Excluded(&lo_key) } else { Bound::Included(&lo_key) };
        let range = table.range::<&[u8; HIST_KEY_LEN]>((lo, Bound::Included(&hi_key)))?;
        for item in range.take(limit) {
            let (k, v) = item?;
            let (s, ts, seq) = decode_hist_key(k.value());
            out.push(Reading { sensor: s, ts, seq, temp: decode_temp(v.value()) });
        }
        Ok(())
    }

    fn tail_page(
        &mut self,
        sensor: u32,
        after_seq: u64,
        limit: usize,
        out: &mut Vec<Reading>,
    ) -> Result<()> {
        let rtx = self.db.begin_read()?;
        if self.with_tail {
            let table = rtx.open_table(TAIL)?;
            let lo = tail_key(sensor, after_seq);
            let hi = tail_key(sensor, u64::MAX);
            let range =
                table.range::<&[u8; TAIL_KEY_LEN]>((Bound::Excluded(&lo), Bound::Included(&hi)))?;
            for item in range.take(limit) {
                let (k, v) = item?;
                let (s, seq) = decode_tail_key(k.value());
                let (ts, temp) = decode_tail_value(v.value());
                out.push(Reading { sensor: s, ts, seq, temp });
            }
        } else {
            let table = rtx.open_table(HIST)?;
            let lo = hist_key(sensor, i64::MIN, 0);
            let hi = hist_key(sensor, i64::MAX, u64::MAX);
            let mut top = TopBySeq::new(after_seq, limit);
            for item in table.range::<&[u8; HIST_KEY_LEN]>(&lo..=&hi)? {
                let (k, v) = item?;
                let (_, ts, seq) = decode_hist_key(k.value());
                top.offer(ts, seq, decode_temp(v.value()));
            }
            top.finish(sensor, out);
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        Ok(())
    }

    fn compact(&mut self) -> Result<bool> {
        // Database::compact() needs &mut Database and no live transactions.
        while self.db.compact()? {}
        Ok(true)
    }

    fn notes(&mut self) -> Vec<String> {
        vec![format!(
            "redb: Durability::Immediate, 1-phase commit (default), quick_repair off (default), cache {} MiB, tail table: {}",
            CACHE_BYTES >> 20,
            self.with_tail
        )]
    }
}
