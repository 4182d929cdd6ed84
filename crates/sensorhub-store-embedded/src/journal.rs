//! The commit log: what makes a write durable before it is acknowledged.
//!
//! Why a log in front of SQLite: a group commit of readings from many
//! sensors touches one leaf page per sensor in each b-tree, and SQLite's WAL
//! writes every touched page whole at each commit (about 0.8 pages, 3 KiB,
//! per reading under unary load; BENCHMARKS.md, "The store"). The log writes
//! each reading once, about 30 bytes, appended in sequence with one
//! `fdatasync` per group commit. The indexer then folds the readings into
//! SQLite in much larger transactions, off the acknowledgement's path.
//!
//! Files `<first seq, 20 digits>.v2.journal` in `<data>/journal/`, each a
//! run of frames, one per group commit; the frame format, and version 1
//! that earlier builds wrote, are in `journal/format.rs`. Sequence numbers
//! run on without a gap from frame to frame and from file to file.
//!
//! The open file is grown ahead of its frames ([`GROW_BYTES`] at a time, a
//! sparse extension), so most appends do not change the file's size and
//! their `fdatasync` has no inode size to commit: on ext4 this took about a
//! third off the CPU time of each sync and of its latency (BENCHMARKS.md,
//! "Growing the journal ahead"). The rest of the file reads as zeros, and no
//! frame is all zeros, so recovery reads a run of zeros to the end of a file
//! as unused space. In a closed file that would hide nothing: the next file
//! must start at the sequence number where this one's frames end.
//!
//! Invariant: the log knows readings and sequence numbers only; how far the
//! database file holds them is told to it ([`Journal::trim`]), and a file
//! goes only once the database file (not merely its WAL) holds all of it. Recovery
//! (`journal/recovery.rs`) cuts off only a write that was never
//! acknowledged, the interrupted last frame of the newest file; damage
//! anywhere else refuses the start and changes nothing.

mod format;
mod recovery;
mod segment_reader;

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use self::format::Version;
pub(super) use self::{format::KeyEntry, recovery::Recovered};
use sensorhub_core::Reading;
use sensorhub_core::StoreError;

/// A file is closed and a new one started past this size (by default);
/// closed files are deleted once everything in them is in the database file.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// How far the open file is grown at a time, ahead of its frames.
const GROW_BYTES: u64 = 4 << 20;

/// The open log, appended to by the store's writer thread only.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    current: File,
    current_first: u64,
    /// Where the frames end: the next frame is written here.
    current_len: u64,
    /// The file's size: grown ahead of `current_len`, zeros beyond it.
    current_size: u64,
    /// Closed files, oldest first: (first seq, path).
    sealed: VecDeque<(u64, PathBuf)>,
    /// A file is closed once its frames reach this size.
    segment_bytes: u64,
    encoded: Vec<u8>,
    /// Set by a failed write or fsync: after one, what the file holds is
    /// unknown, so nothing more is appended until a restart recovers it.
    broken: Option<String>,
}

/// One file of the log, as its name describes it.
#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    version: Version,
    path: PathBuf,
}

impl Journal {
    /// Reads every file of the log in `dir` and hands the readings after
    /// `indexed` (the last sequence number SQLite holds durably) to
    /// `replay`, in order and in bounded batches. Cuts off an interrupted
    /// write at the end; refuses anything else that is damaged, before
    /// anything is replayed.
    pub(super) fn recover(
        dir: &Path,
        indexed: u64,
        replay: impl FnMut(&[Reading], &[KeyEntry]) -> Result<(), StoreError>,
    ) -> Result<Recovered, StoreError> {
        recovery::recover(dir, indexed, replay)
    }

    /// [`Journal::start_with`] files of the usual size.
    #[cfg(test)]
    pub(super) fn start(dir: &Path, next_seq: u64) -> std::io::Result<Journal> {
        Journal::start_with(dir, next_seq, SEGMENT_BYTES)
    }

    /// Starts an empty log whose first frame will hold `next_seq`, deleting
    /// every file there: only once the database file holds everything those
    /// files held (checkpointed, not only in its WAL). A file is closed once
    /// its frames reach `segment_bytes`.
    pub(super) fn start_with(
        dir: &Path,
        next_seq: u64,
        segment_bytes: u64,
    ) -> std::io::Result<Journal> {
        fs::create_dir_all(dir)?;
        for segment in list_segments(dir)? {
            fs::remove_file(segment.path)?;
        }
        let (current, path) = create_segment(dir, next_seq)?;
        tracing::debug!(journal = %path.display(), "journal started");
        Ok(Journal {
            dir: dir.to_path_buf(),
            current,
            current_first: next_seq,
            current_len: 0,
            current_size: 0,
            sealed: VecDeque::new(),
            segment_bytes: segment_bytes.max(1),
            encoded: Vec::new(),
            broken: None,
        })
    }

    /// Appends one group commit (`readings`, numbered from `first_seq`, and
    /// the states its keyed writes left their keys in) and returns once it
    /// is on disk. A group of no readings writes nothing (its keyed writes
    /// stored nothing, so changed no key).
    pub(super) fn append<'a>(
        &mut self,
        first_seq: u64,
        count: usize,
        readings: impl Iterator<Item = &'a Reading>,
        keys: &[KeyEntry],
    ) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if count == 0 {
            return Ok(());
        }
        format::encode(&mut self.encoded, first_seq, count, readings, keys);
        let end = self.current_len + self.encoded.len() as u64;
        let written = self
            .grow_to(end)
            .and_then(|()| self.current.write_all_at(&self.encoded, self.current_len))
            .and_then(|()| self.current.sync_data());
        if let Err(e) = written {
            let why = format!(
                "the journal in {} could not be written ({e}); restart sensorhub once the disk is writable again, it recovers what was acknowledged",
                self.dir.display()
            );
            tracing::error!(error = %e, "{why}");
            self.broken = Some(why.clone());
            return Err(why);
        }
        self.current_len += self.encoded.len() as u64;
        if self.current_len >= self.segment_bytes {
            self.rotate(first_seq + count as u64);
        }
        Ok(())
    }

    /// Grows the open file in steps of [`GROW_BYTES`] until `end` fits.
    fn grow_to(&mut self, end: u64) -> std::io::Result<()> {
        if end > self.current_size {
            let size = end.next_multiple_of(GROW_BYTES);
            self.current.set_len(size)?;
            self.current_size = size;
        }
        Ok(())
    }

    /// Deletes closed files whose readings are all at or below
    /// `checkpointed`: in the database file itself. Readings SQLite holds
    /// only in its WAL are not safe yet: SQLite ignores every WAL frame after
    /// one that fails its checksum, so a damaged WAL would lose them without
    /// a word, and the journal is what replays them then.
    pub(super) fn trim(&mut self, checkpointed: u64) {
        while let Some((_, path)) = self.sealed.front() {
            if self
                .oldest_sealed_last()
                .is_some_and(|last| last > checkpointed)
            {
                break;
            }
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(journal = %path.display(), error = %e, "could not delete an indexed journal file; will retry");
                break;
            }
            self.sealed.pop_front();
        }
    }

    /// The last sequence number of the oldest closed file: the database
    /// file must hold this much before that file can go.
    pub(super) fn oldest_sealed_last(&self) -> Option<u64> {
        self.sealed.front()?;
        let next = self
            .sealed
            .get(1)
            .map_or(self.current_first, |(first, _)| *first);
        Some(next - 1)
    }

    fn rotate(&mut self, next_seq: u64) {
        match create_segment(&self.dir, next_seq) {
            Ok((file, path)) => {
                let old = std::mem::replace(&mut self.current, file);
                // Tidiness only: recovery reads the zeros as unused space.
                if let Err(e) = old.set_len(self.current_len) {
                    tracing::debug!(error = %e, "could not cut a closed journal file to its frames");
                }
                drop(old);
                self.sealed.push_back((
                    self.current_first,
                    segment_path(&self.dir, self.current_first),
                ));
                self.current_first = next_seq;
                self.current_len = 0;
                self.current_size = 0;
                tracing::debug!(journal = %path.display(), "journal file started");
            }
            // The current file grows on; the next append tries again.
            Err(e) => tracing::warn!(error = %e, "could not start a new journal file"),
        }
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(Version::CURRENT.file_name(first_seq))
}

/// The log's files, oldest first, by the sequence number in their names.
fn list_segments(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let parsed = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(Version::parse_file_name);
        if let Some((first_seq, version)) = parsed {
            segments.push(Segment {
                first_seq,
                version,
                path,
            });
        }
    }
    segments.sort_by_key(|s| (s.first_seq, s.version));
    Ok(segments)
}

/// Creates a log file and makes its name durable (fsync of the directory).
fn create_segment(dir: &Path, first_seq: u64) -> std::io::Result<(File, PathBuf)> {
    let path = segment_path(dir, first_seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok((file, path))
}

#[cfg(test)]
mod testing {
    //! What the journal's tests share: readings, and logs written to order.

    use super::*;

    pub(super) fn reading(sensor: &str, i: i64) -> Reading {
        Reading {
            sensor_id: sensor.to_owned(),
            temperature: 20.0 + i as f64 / 8.0,
            timestamp: 1_700_000_000 + i,
        }
    }

    /// A log in `dir` holding `groups` as frames, numbered from `next_seq`.
    pub(super) fn write(dir: &Path, next_seq: u64, groups: &[Vec<Reading>]) -> Journal {
        let mut journal = Journal::start(dir, next_seq).unwrap();
        let mut seq = next_seq;
        for group in groups {
            journal.append(seq, group.len(), group.iter(), &[]).unwrap();
            seq += group.len() as u64;
        }
        journal
    }

    /// Changes the file's bytes in place (damage, a crash's leftovers);
    /// returns what it now holds.
    pub(super) fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = fs::read(path).unwrap();
        edit(&mut bytes);
        fs::write(path, &bytes).unwrap();
        bytes
    }

    /// What recovery handed over, all of it.
    #[derive(Debug)]
    pub(super) struct Got {
        pub(super) first_seq: u64,
        pub(super) readings: Vec<Reading>,
        pub(super) torn_bytes: u64,
    }

    pub(super) fn recover_all(dir: &Path, indexed: u64) -> Result<Got, StoreError> {
        let mut readings = Vec::new();
        let recovered = Journal::recover(dir, indexed, |batch, _| {
            readings.extend_from_slice(batch);
            Ok(())
        })?;
        assert_eq!(recovered.replayed, readings.len() as u64);
        Ok(Got {
            first_seq: recovered.first_seq,
            readings,
            torn_bytes: recovered.torn_bytes,
        })
    }

    pub(super) fn groups() -> Vec<Vec<Reading>> {
        vec![
            vec![reading("a", 1), reading("b", 2)],
            vec![reading("ü-sensor", 3)],
            vec![reading("a", 4), reading("a", 5), reading("c", 6)],
        ]
    }

    /// Where each frame of a version 2 file starts, and where the last ends.
    pub(super) fn frame_starts(bytes: &[u8]) -> (Vec<usize>, usize) {
        let mut starts = Vec::new();
        let mut at = 0;
        while at < bytes.len() && bytes[at..].iter().any(|b| *b != 0) {
            starts.push(at);
            at += Version::V2.head(&bytes[at..]).unwrap().frame_len as usize;
        }
        (starts, at)
    }

    /// Cuts the space a file was grown by down to 4 KiB: the same zeros to
    /// recovery, and damage tests need not copy 4 MiB of them each time.
    pub(super) fn shrink_unused(path: &Path) {
        let bytes = fs::read(path).unwrap();
        let (_, end) = frame_starts(&bytes);
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(end as u64 + 4096).unwrap();
    }

    pub(super) fn only_file(dir: &Path) -> PathBuf {
        let segments = list_segments(dir).unwrap();
        assert_eq!(segments.len(), 1);
        segments[0].path.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn the_file_is_grown_ahead_and_its_unused_space_is_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        let end = write(dir.path(), 1, &groups).current_len;
        let path = only_file(dir.path());
        assert!(
            path.to_str()
                .unwrap()
                .ends_with("00000000000000000001.v2.journal")
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), GROW_BYTES);
        assert!(end < GROW_BYTES);
        let recovered = recover_all(dir.path(), 0).unwrap();
        assert_eq!(recovered.readings, groups.concat());
        assert_eq!(recovered.torn_bytes, 0);
        // Nothing was cut off.
        assert_eq!(fs::metadata(&path).unwrap().len(), GROW_BYTES);

        // A frame that does not fit grows the file by another step.
        let mut journal = write(dir.path(), 1, &groups);
        let big: Vec<Reading> = (0..GROW_BYTES / 16)
            .map(|i| reading("a", i as i64))
            .collect();
        journal.append(7, big.len(), big.iter(), &[]).unwrap();
        let end = journal.current_len;
        assert!(end > GROW_BYTES);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            end.next_multiple_of(GROW_BYTES)
        );
        let recovered = recover_all(dir.path(), 0).unwrap();
        assert_eq!(recovered.readings.len(), 6 + big.len());
    }

    #[test]
    fn a_group_of_no_readings_writes_no_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = write(dir.path(), 1, &groups());
        let end = journal.current_len;
        journal.append(7, 0, [].iter(), &[]).unwrap();
        assert_eq!(journal.current_len, end);
    }

    #[test]
    fn files_are_deleted_once_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = write(dir.path(), 1, &groups());
        let first_end = journal.current_len;
        journal.rotate(7);
        journal
            .append(7, 2, [reading("a", 7), reading("b", 8)].iter(), &[])
            .unwrap();
        journal.rotate(9);
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 3);
        // A closed file is cut to its frames; if a crash kept the unused
        // space, recovery still reads across it.
        assert_eq!(fs::metadata(&segments[0].path).unwrap().len(), first_end);
        fs::OpenOptions::new()
            .write(true)
            .open(&segments[1].path)
            .unwrap()
            .set_len(GROW_BYTES)
            .unwrap();
        assert_eq!(recover_all(dir.path(), 0).unwrap().readings.len(), 8);
        journal.trim(5);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 3);
        journal.trim(6);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
        journal.trim(100);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        // What is left still recovers, continuing across files.
        journal.append(9, 1, [reading("c", 9)].iter(), &[]).unwrap();
        let recovered = recover_all(dir.path(), 8).unwrap();
        assert_eq!(recovered.first_seq, 9);
        assert_eq!(recovered.readings, vec![reading("c", 9)]);
    }
}
