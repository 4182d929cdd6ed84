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
//! Format: files `<first seq, 20 digits>.journal` in `<data>/journal/`, each
//! a run of frames, one per group commit:
//!
//! ```text
//! frame   = len: u32 | crc32(payload): u32 | payload (len bytes)
//! payload = first_seq: u64 | count: u32 | count × reading
//! reading = sensor_id length: u16 | sensor_id (UTF-8) | timestamp: i64 | temperature: f64
//! ```
//!
//! All integers little-endian. Sequence numbers run on without a gap from
//! frame to frame and from file to file.
//!
//! The open file is grown ahead of its frames ([`GROW_BYTES`] at a time, a
//! sparse extension), so most appends do not change the file's size and
//! their `fdatasync` has no inode size to commit: on ext4 this took about a
//! third off the CPU time of each sync and of its latency (BENCHMARKS.md,
//! "Growing the journal ahead"). The rest of the file reads as zeros, and
//! zeros are never a frame (a frame is at least 20 bytes long), so recovery
//! reads a run of zeros to the end of a file as unused space. In a closed
//! file that would hide nothing: the next file must start at the sequence
//! number where this one's frames end.
//!
//! Invariant: the log knows readings and sequence numbers only; what the
//! indexer has made durable is told to it ([`Journal::trim`]). A frame that
//! is cut short or fails its checksum at the very end of the newest file
//! (only unused space after it) is a write the crash interrupted, never
//! acknowledged: recovery cuts it off.
//! Anywhere else it is damage, and the store refuses to start.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use super::StoreError;
use crate::Reading;

/// A file is closed and a new one started past this size; closed files are
/// deleted once everything in them is durable in SQLite.
const SEGMENT_BYTES: u64 = 64 << 20;
/// How far the open file is grown at a time, ahead of its frames.
const GROW_BYTES: u64 = 4 << 20;
const FRAME_HEADER: usize = 8;
const PAYLOAD_HEADER: usize = 12;
const SUFFIX: &str = "journal";

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
    encoded: Vec<u8>,
    /// Set by a failed write or fsync: after one, what the file holds is
    /// unknown, so nothing more is appended until a restart recovers it.
    broken: Option<String>,
}

/// What recovery found in the log beyond what SQLite already holds.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The sequence number of `readings[0]`; the rest follow without a gap.
    pub(super) first_seq: u64,
    pub(super) readings: Vec<Reading>,
    /// Bytes of an interrupted last write that were cut off.
    pub(super) torn_bytes: u64,
}

impl Journal {
    /// Reads every file of the log in `dir` and returns the readings after
    /// `indexed` (the last sequence number SQLite holds durably). Cuts off an
    /// interrupted write at the end; refuses anything else that is damaged.
    pub(super) fn recover(dir: &Path, indexed: u64) -> Result<Recovered, StoreError> {
        let corrupt = |path: &Path, reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let segments = list_segments(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut recovered = Recovered::default();
        let mut next: Option<u64> = None;
        for (i, (first, path)) in segments.iter().enumerate() {
            let newest = i + 1 == segments.len();
            let bytes = fs::read(path).map_err(|e| corrupt(path, e.to_string()))?;
            let mut at = 0usize;
            while at < bytes.len() {
                if is_unused(&bytes[at..]) {
                    break;
                }
                let frame = match Frame::parse(&bytes[at..]) {
                    Ok(frame) => frame,
                    Err(bad) if newest && bad.may_be_torn(&bytes[at..]) => {
                        // The frame's bytes, not the unused space after it.
                        let torn = bad
                            .end
                            .map_or(bytes.len() - at, |end| end.min(bytes.len() - at))
                            as u64;
                        tracing::warn!(
                            journal = %path.display(),
                            offset = at,
                            bytes = torn,
                            reason = bad.reason,
                            "cutting off a write the last stop interrupted (it was never acknowledged)"
                        );
                        truncate(path, at as u64).map_err(|e| corrupt(path, e.to_string()))?;
                        recovered.torn_bytes = torn;
                        break;
                    }
                    Err(bad) => {
                        return Err(corrupt(path, format!("frame at byte {at}: {}", bad.reason)));
                    }
                };
                // The first frame of a file starts where its name says;
                // every frame starts where the one before it ended.
                let expected = next.unwrap_or(*first);
                if frame.first_seq != expected || (at == 0 && frame.first_seq != *first) {
                    return Err(corrupt(
                        path,
                        format!(
                            "frame at byte {at} starts at sequence {}, expected {expected}",
                            frame.first_seq
                        ),
                    ));
                }
                next = Some(frame.first_seq + frame.count as u64);
                frame
                    .decode_after(indexed, &mut recovered)
                    .map_err(|why| corrupt(path, format!("frame at byte {at}: {why}")))?;
                at += frame.len;
            }
        }
        if !recovered.readings.is_empty() && recovered.first_seq != indexed + 1 {
            return Err(corrupt(
                dir,
                format!(
                    "the store's tables end at sequence {indexed} but the journal resumes at {}; readings in between are missing",
                    recovered.first_seq
                ),
            ));
        }
        Ok(recovered)
    }

    /// Starts an empty log whose first frame will hold `next_seq`, deleting
    /// every file there. Only once SQLite holds everything those files held.
    pub(super) fn start(dir: &Path, next_seq: u64) -> std::io::Result<Journal> {
        fs::create_dir_all(dir)?;
        for (_, path) in list_segments(dir)? {
            fs::remove_file(path)?;
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
            encoded: Vec::new(),
            broken: None,
        })
    }

    /// Appends one group commit (`readings`, numbered from `first_seq`) and
    /// returns once it is on disk.
    pub(super) fn append<'a>(
        &mut self,
        first_seq: u64,
        count: usize,
        readings: impl Iterator<Item = &'a Reading>,
    ) -> Result<(), String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        encode(&mut self.encoded, first_seq, count, readings);
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
        if self.current_len >= SEGMENT_BYTES {
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

    /// Deletes closed files whose readings are all at or below `indexed`
    /// (durable in SQLite).
    pub(super) fn trim(&mut self, indexed: u64) {
        while let Some((_, path)) = self.sealed.front() {
            let last = self
                .sealed
                .get(1)
                .map_or(self.current_first, |(first, _)| *first)
                - 1;
            if last > indexed {
                break;
            }
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(journal = %path.display(), error = %e, "could not delete an indexed journal file; will retry");
                break;
            }
            self.sealed.pop_front();
        }
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

/// One frame, checked but not yet decoded.
struct Frame<'a> {
    /// Bytes of the whole frame.
    len: usize,
    first_seq: u64,
    count: u32,
    readings: &'a [u8],
}

/// Why bytes are not a frame.
struct BadFrame {
    reason: &'static str,
    /// Where the frame would end by its header, if the header is there.
    end: Option<usize>,
}

impl BadFrame {
    /// Whether `rest` (the bad frame and everything after it, to the end of
    /// the newest file) can be the one write a crash interrupted: the frame
    /// runs to the end of the file, or nothing but zeros (space the file was
    /// grown by) follows where it ends. A bad frame with more data after it
    /// was written whole and damaged later.
    fn may_be_torn(&self, rest: &[u8]) -> bool {
        self.end
            .is_none_or(|end| rest.get(end..).is_none_or(is_unused))
    }
}

impl<'a> Frame<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, BadFrame> {
        let bad = |reason, end| Err(BadFrame { reason, end });
        if bytes.len() < FRAME_HEADER {
            return bad("the frame header is cut short", None);
        }
        let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let end = FRAME_HEADER.saturating_add(len);
        let Some(payload) = bytes.get(FRAME_HEADER..end) else {
            return bad("the frame is cut short", Some(end));
        };
        if len < PAYLOAD_HEADER {
            return bad("the frame is too short to hold its header", Some(end));
        }
        if crc32fast::hash(payload) != crc {
            return bad("the frame fails its checksum", Some(end));
        }
        Ok(Frame {
            len: end,
            first_seq: u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes")),
            count: u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")),
            readings: &payload[PAYLOAD_HEADER..],
        })
    }

    /// Adds the readings numbered above `indexed` to `out`.
    fn decode_after(&self, indexed: u64, out: &mut Recovered) -> Result<(), String> {
        let mut rest = self.readings;
        for i in 0..self.count as u64 {
            let (reading, tail) = decode_reading(rest)
                .ok_or_else(|| format!("reading {i} of {} cannot be decoded", self.count))?;
            rest = tail;
            let seq = self.first_seq + i;
            if seq > indexed {
                if out.readings.is_empty() {
                    out.first_seq = seq;
                }
                out.readings.push(reading);
            }
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after its last reading", rest.len()));
        }
        Ok(())
    }
}

fn encode<'a>(
    out: &mut Vec<u8>,
    first_seq: u64,
    count: usize,
    readings: impl Iterator<Item = &'a Reading>,
) {
    out.clear();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for reading in readings {
        let id = reading.sensor_id.as_bytes();
        // Validation caps sensor ids far below 64 KiB.
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&reading.timestamp.to_le_bytes());
        out.extend_from_slice(&reading.temperature.to_le_bytes());
    }
    let payload_len = (out.len() - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&out[FRAME_HEADER..]);
    out[0..4].copy_from_slice(&payload_len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_reading(bytes: &[u8]) -> Option<(Reading, &[u8])> {
    let (id_len, rest) = bytes.split_first_chunk::<2>()?;
    let (id, rest) = rest.split_at_checked(u16::from_le_bytes(*id_len) as usize)?;
    let (ts, rest) = rest.split_first_chunk::<8>()?;
    let (temperature, rest) = rest.split_first_chunk::<8>()?;
    Some((
        Reading {
            sensor_id: std::str::from_utf8(id).ok()?.to_owned(),
            timestamp: i64::from_le_bytes(*ts),
            temperature: f64::from_le_bytes(*temperature),
        },
        rest,
    ))
}

/// Whether `rest` of a file is space it was grown by and no frame reached.
fn is_unused(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SUFFIX}"))
}

/// The log's files, oldest first, by the sequence number in their names.
fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == SUFFIX)
            && let Some(first) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
        {
            segments.push((first, path));
        }
    }
    segments.sort();
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

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sensor: &str, i: i64) -> Reading {
        Reading {
            sensor_id: sensor.to_owned(),
            temperature: 20.0 + i as f64 / 8.0,
            timestamp: 1_700_000_000 + i,
        }
    }

    fn write(dir: &Path, next_seq: u64, groups: &[Vec<Reading>]) -> Journal {
        let mut journal = Journal::start(dir, next_seq).unwrap();
        let mut seq = next_seq;
        for group in groups {
            journal.append(seq, group.len(), group.iter()).unwrap();
            seq += group.len() as u64;
        }
        journal
    }

    /// Changes the file's bytes in place (damage, a crash's leftovers);
    /// returns what it now holds.
    fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = fs::read(path).unwrap();
        edit(&mut bytes);
        fs::write(path, &bytes).unwrap();
        bytes
    }

    /// Where the frames end (the file itself is longer: grown ahead).
    fn frames_end(journal: Journal) -> u64 {
        journal.current_len
    }

    fn groups() -> Vec<Vec<Reading>> {
        vec![
            vec![reading("a", 1), reading("b", 2)],
            vec![reading("ü-sensor", 3)],
            vec![reading("a", 4), reading("a", 5), reading("c", 6)],
        ]
    }

    fn only_file(dir: &Path) -> PathBuf {
        let segments = list_segments(dir).unwrap();
        assert_eq!(segments.len(), 1);
        segments[0].1.clone()
    }

    #[test]
    fn recovers_what_was_appended_after_the_indexed_point() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        drop(write(dir.path(), 11, &groups));
        let all: Vec<Reading> = groups.concat();

        let everything = Journal::recover(dir.path(), 10).unwrap();
        assert_eq!(everything.first_seq, 11);
        assert_eq!(everything.readings, all);
        assert_eq!(everything.torn_bytes, 0);

        let after = Journal::recover(dir.path(), 13).unwrap();
        assert_eq!(after.first_seq, 14);
        assert_eq!(after.readings, all[3..]);

        let none = Journal::recover(dir.path(), 16).unwrap();
        assert!(none.readings.is_empty());
    }

    #[test]
    fn an_interrupted_last_write_is_cut_off_and_appending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        let whole = frames_end(write(dir.path(), 1, &groups));
        let path = only_file(dir.path());
        // Every cut inside the last frame loses that frame only: whether
        // the file ends there, or the space it was grown by follows.
        let last_frame = 8 + 12 + 3 * (2 + 1 + 16);
        for cut in 1..last_frame {
            drop(write(dir.path(), 1, &groups));
            truncate(&path, whole - cut).unwrap();
            let recovered = Journal::recover(dir.path(), 0).unwrap();
            assert_eq!(recovered.readings, groups[..2].concat(), "cut {cut}");
            assert_eq!(recovered.torn_bytes, last_frame - cut);
            assert_eq!(fs::metadata(&path).unwrap().len(), whole - last_frame);

            drop(write(dir.path(), 1, &groups));
            rewrite(&path, |bytes| bytes[(whole - cut) as usize..].fill(0));
            let recovered = Journal::recover(dir.path(), 0).unwrap();
            assert_eq!(recovered.readings, groups[..2].concat(), "zeroed {cut}");
        }
        // With the header whole, exactly the frame's bytes are cut off.
        drop(write(dir.path(), 1, &groups));
        rewrite(&path, |bytes| {
            bytes[(whole - 1) as usize] = 0;
            bytes[(whole - 1) as usize - 1] ^= 0x01;
        });
        let recovered = Journal::recover(dir.path(), 0).unwrap();
        assert_eq!(recovered.torn_bytes, last_frame);
        assert_eq!(fs::metadata(&path).unwrap().len(), whole - last_frame);
    }

    #[test]
    fn the_file_is_grown_ahead_and_its_unused_space_is_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        let end = frames_end(write(dir.path(), 1, &groups));
        let path = only_file(dir.path());
        assert_eq!(fs::metadata(&path).unwrap().len(), GROW_BYTES);
        assert!(end < GROW_BYTES);
        let recovered = Journal::recover(dir.path(), 0).unwrap();
        assert_eq!(recovered.readings, groups.concat());
        assert_eq!(recovered.torn_bytes, 0);
        // Nothing was cut off.
        assert_eq!(fs::metadata(&path).unwrap().len(), GROW_BYTES);

        // A frame that does not fit grows the file by another step.
        let mut journal = write(dir.path(), 1, &groups);
        let big: Vec<Reading> = (0..GROW_BYTES / 16)
            .map(|i| reading("a", i as i64))
            .collect();
        journal.append(7, big.len(), big.iter()).unwrap();
        let end = frames_end(journal);
        assert!(end > GROW_BYTES);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            end.next_multiple_of(GROW_BYTES)
        );
        let recovered = Journal::recover(dir.path(), 0).unwrap();
        assert_eq!(recovered.readings.len(), 6 + big.len());
    }

    #[test]
    fn garbage_in_the_unused_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let end = frames_end(write(dir.path(), 1, &groups()));
        let path = only_file(dir.path());
        rewrite(&path, |bytes| bytes[end as usize + 100] = 7);
        let err = Journal::recover(dir.path(), 0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_flipped_bit_at_the_end_is_cut_off_but_in_an_older_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        let end = frames_end(write(dir.path(), 1, &groups));
        let path = only_file(dir.path());
        rewrite(&path, |bytes| bytes[end as usize - 3] ^= 0x10);
        let recovered = Journal::recover(dir.path(), 0).unwrap();
        assert_eq!(recovered.readings, groups[..2].concat());

        // The same damage in a file that is not the newest is refused.
        drop(write(dir.path(), 1, &groups));
        let bytes = rewrite(&path, |bytes| {
            bytes[FRAME_HEADER + PAYLOAD_HEADER + 3] ^= 0x10
        });
        fs::write(segment_path(dir.path(), 7), b"").unwrap();
        let err = Journal::recover(dir.path(), 0).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("checksum")),
            "{err}"
        );
        // Refusing changed nothing.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_damaged_frame_with_frames_after_it_is_refused_even_in_the_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1, &groups()));
        let path = only_file(dir.path());
        let bytes = rewrite(&path, |bytes| {
            bytes[FRAME_HEADER + PAYLOAD_HEADER + 3] ^= 0x10
        });
        let err = Journal::recover(dir.path(), 0).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), bytes);

        // The same damage followed by unused space is refused too.
        let end = frames_end(write(dir.path(), 1, &groups()));
        rewrite(&path, |bytes| {
            bytes[FRAME_HEADER + PAYLOAD_HEADER + 3] ^= 0x10;
            bytes.truncate(end as usize);
            bytes.resize(end as usize + 4096, 0);
        });
        let err = Journal::recover(dir.path(), 0).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_gap_between_the_tables_and_the_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 20, &groups()));
        let err = Journal::recover(dir.path(), 10).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn files_are_deleted_once_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = write(dir.path(), 1, &groups());
        let first_end = journal.current_len;
        journal.rotate(7);
        journal
            .append(7, 2, [reading("a", 7), reading("b", 8)].iter())
            .unwrap();
        journal.rotate(9);
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 3);
        // A closed file is cut to its frames; if a crash kept the unused
        // space, recovery still reads across it.
        assert_eq!(fs::metadata(&segments[0].1).unwrap().len(), first_end);
        fs::OpenOptions::new()
            .write(true)
            .open(&segments[1].1)
            .unwrap()
            .set_len(GROW_BYTES)
            .unwrap();
        assert_eq!(Journal::recover(dir.path(), 0).unwrap().readings.len(), 8);
        journal.trim(5);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 3);
        journal.trim(6);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
        journal.trim(100);
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        // What is left still recovers, continuing across files.
        journal.append(9, 1, [reading("c", 9)].iter()).unwrap();
        let recovered = Journal::recover(dir.path(), 8).unwrap();
        assert_eq!(recovered.first_seq, 9);
        assert_eq!(recovered.readings, vec![reading("c", 9)]);
    }
}
