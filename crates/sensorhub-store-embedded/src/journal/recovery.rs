//! Reading the commit log back at startup: what it holds beyond the tables,
//! and what a crash left half-written.
//!
//! Why the rules are this strict: a frame recovery cuts off is a write
//! nobody will ever see again, so only a write that can never have been
//! acknowledged may be cut off, and damage anywhere else stops the start.
//! A crash leaves at most one such write: the last frame of the newest
//! file, whose `fdatasync` never returned. It was written into space the
//! file had been grown by, which reads as zeros where the disk never wrote
//! it. So a frame that fails is that interrupted write only if
//! 1. nothing but zeros follows it: its header checks out and only zeros
//!    follow where it says the frame ends, or the data ends inside the
//!    header itself (a header cut short); and
//! 2. part of it was never written: it runs past the end of the file, or a
//!    disk sector's share of it (512-byte sectors, a share of at least 16
//!    bytes) reads as zeros, which no frame written whole contains
//!    (`format.rs`). A frame that fails its checksum without such a hole
//!    was written whole and damaged since.
//!
//! Version 1 headers have no checksum of their own, so for them rule 1
//! cannot trust `len`; a version 1 frame whose payload decodes whole and
//! checks out over its own length is a frame with a damaged `len`, not a
//! torn write.
//!
//! Anything else is refused with the file and the byte offset, and nothing
//! is changed: the one change recovery makes, cutting off the interrupted
//! write, happens only after every file has been checked.
//!
//! Memory: recovery reads each file through one fixed window
//! (`segment_reader.rs`) and replays in batches of at most
//! [`REPLAY_BATCH`] readings, so recovering a 64 MiB file, or tables far
//! behind the journal, costs a bounded amount of memory. That takes two
//! passes: the first checks every file and replays nothing, so a store
//! refused for damage is left exactly as it was, tables included; the
//! second reads again only the frames the tables lack.

use std::{
    fs::OpenOptions,
    io,
    path::{Path, PathBuf},
};

use super::{
    Segment, StoreError,
    format::{Frame, Head, HeadFault, KeyEntry, Version, v1_whole_frame_len},
    list_segments,
    segment_reader::SegmentReader,
};
use sensorhub_core::Reading;

/// Disk sectors are at least this large and are written whole or not at all.
const SECTOR: u64 = 512;
/// A share of a sector this long that reads as zeros was never written.
const HOLE: u64 = 16;
/// Readings handed to the store at once when replaying.
pub(crate) const REPLAY_BATCH: usize = 16_384;

/// What recovery found in the log beyond what SQLite already holds.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The sequence number of the first reading replayed.
    pub(crate) first_seq: u64,
    /// Readings replayed, numbered on from `first_seq` without a gap.
    pub(crate) replayed: u64,
    /// Bytes of an interrupted last write that were cut off.
    pub(crate) torn_bytes: u64,
}

/// The interrupted last write, to be cut off once everything checked out.
struct Torn {
    path: PathBuf,
    at: u64,
    bytes: u64,
    reason: &'static str,
}

/// One file after the first pass: where its checked frames end, and the
/// sequence number the frame after them would start at.
struct CheckedFile<'a> {
    segment: &'a Segment,
    frames_end: u64,
    next_seq: u64,
}

fn corrupt(path: &Path, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads every file of the log in `dir` and hands the readings after
/// `indexed` (the last sequence number SQLite holds durably) to `replay`,
/// in order, at most [`REPLAY_BATCH`] at a time. Cuts off an interrupted
/// write at the end; refuses anything else that is damaged, before
/// anything is replayed or changed.
pub(crate) fn recover(
    dir: &Path,
    indexed: u64,
    mut replay: impl FnMut(&[Reading], &[KeyEntry]) -> Result<(), StoreError>,
) -> Result<Recovered, StoreError> {
    let segments = list_segments(dir).map_err(|e| StoreError::Open {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut files = Vec::with_capacity(segments.len());
    let mut torn = None;
    let mut next: Option<u64> = None;
    for (i, segment) in segments.iter().enumerate() {
        let path = &segment.path;
        if let Some(next) = next
            && segment.first_seq != next
        {
            return Err(corrupt(
                path,
                format!(
                    "the file is named for sequence {}, but the file before it ends at {}",
                    segment.first_seq,
                    next - 1
                ),
            ));
        }
        let newest = i + 1 == segments.len();
        let checked =
            check_file(segment, newest, &mut torn).map_err(|e| corrupt(path, e.to_string()))??;
        next = Some(checked.next_seq);
        files.push(checked);
    }
    // The journal must take over where the tables end. If it begins later,
    // and reaches beyond them (its frames do, or an empty file's name says
    // its numbering does), readings in between are in neither.
    if let (Some(oldest), Some(next)) = (segments.first(), next)
        && next > indexed + 1
        && oldest.first_seq > indexed + 1
    {
        return Err(corrupt(
            dir,
            format!(
                "the tables end at sequence {indexed}, but the journal begins at {}: readings {} to {} are in neither (was readings.db-wal damaged or deleted, or readings.db replaced by an older copy?)",
                oldest.first_seq,
                indexed + 1,
                oldest.first_seq - 1
            ),
        ));
    }
    let mut recovered = Recovered::default();
    if let Some(torn) = torn {
        tracing::warn!(
            journal = %torn.path.display(),
            offset = torn.at,
            bytes = torn.bytes,
            reason = torn.reason,
            "cutting off a write the last stop interrupted (it was never acknowledged)"
        );
        truncate(&torn.path, torn.at).map_err(|e| corrupt(&torn.path, e.to_string()))?;
        recovered.torn_bytes = torn.bytes;
    }
    let mut batch = Batch {
        readings: Vec::with_capacity(REPLAY_BATCH),
        keys: Vec::new(),
    };
    for file in files.iter().filter(|f| f.next_seq > indexed + 1) {
        let path = &file.segment.path;
        replay_file(file, indexed, &mut batch, &mut recovered, &mut replay)
            .map_err(|e| corrupt(path, format!("read again for replay: {e}")))??;
    }
    if !batch.readings.is_empty() {
        replay(&batch.readings, &batch.keys)?;
    }
    Ok(recovered)
}

/// Readings on their way to the store, and the key states of the frames
/// whose last reading is among them: a frame's key states go with its last
/// reading, so that the tables never hold a keyed write's readings without
/// its key's state.
struct Batch {
    readings: Vec<Reading>,
    keys: Vec<KeyEntry>,
}

impl Batch {
    fn hand_over(
        &mut self,
        replay: &mut impl FnMut(&[Reading], &[KeyEntry]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let result = replay(&self.readings, &self.keys);
        self.readings.clear();
        self.keys.clear();
        result
    }
}

/// The first pass over one file: checks every frame and reads nothing
/// into memory. The newest file's interrupted last write goes to `torn`.
fn check_file<'a>(
    segment: &'a Segment,
    newest: bool,
    torn: &mut Option<Torn>,
) -> io::Result<Result<CheckedFile<'a>, StoreError>> {
    let (version, path) = (segment.version, &segment.path);
    let mut file = SegmentReader::open(path)?;
    let len = file.len();
    let mut at = 0;
    let mut expected = segment.first_seq;
    while at < len && !file.is_zero(at, len)? {
        let head = match checked_frame(version, &mut file, at)? {
            Ok(head) => head,
            Err(fault) if newest && fault.may_be_torn(version, &mut file, at)? => {
                *torn = Some(Torn {
                    path: path.clone(),
                    at,
                    bytes: fault.frame_bytes(version, at, len),
                    reason: fault.reason(),
                });
                break;
            }
            Err(fault) => {
                let why = fault.explain(version, &mut file, at)?;
                return Ok(Err(corrupt(path, format!("frame at byte {at}: {why}"))));
            }
        };
        let frame = match Frame::read(version, &mut file, at, head, None)? {
            Ok(frame) => frame,
            Err(why) => return Ok(Err(corrupt(path, format!("frame at byte {at}: {why}")))),
        };
        if frame.first_seq != expected {
            return Ok(Err(corrupt(
                path,
                format!(
                    "frame at byte {at} starts at sequence {}, expected {expected}",
                    frame.first_seq
                ),
            )));
        }
        if let Err(why) = frame.for_each_reading(&mut file, |_, _, _, _| {})? {
            return Ok(Err(corrupt(path, format!("frame at byte {at}: {why}"))));
        }
        expected = frame.first_seq + u64::from(frame.count);
        at = frame.end;
    }
    Ok(Ok(CheckedFile {
        segment,
        frames_end: at,
        next_seq: expected,
    }))
}

/// The second pass over one checked file: the readings after `indexed`,
/// into `batch`, which goes to `replay` whenever it is full.
fn replay_file(
    checked: &CheckedFile<'_>,
    indexed: u64,
    batch: &mut Batch,
    recovered: &mut Recovered,
    replay: &mut impl FnMut(&[Reading], &[KeyEntry]) -> Result<(), StoreError>,
) -> io::Result<Result<(), StoreError>> {
    let version = checked.segment.version;
    let mut file = SegmentReader::open(&checked.segment.path)?;
    let mut keys = Vec::new();
    let mut at = 0;
    while at < checked.frames_end {
        let header = file.bytes(at, version.header_len())?;
        let head = version
            .head(header)
            .map_err(|f| io::Error::other(f.reason()))?;
        keys.clear();
        let frame = Frame::read(version, &mut file, at, head, Some(&mut keys))?
            .map_err(io::Error::other)?;
        at = frame.end;
        let last = frame.first_seq + u64::from(frame.count) - 1;
        if last <= indexed {
            continue;
        }
        if file.crc(frame.end - head.frame_len + head.body_at as u64, frame.end)? != head.body_crc {
            return Err(io::Error::other("a frame changed since it was checked"));
        }
        let mut failed = None;
        frame
            .for_each_reading(&mut file, |seq, id, timestamp, temperature| {
                if seq <= indexed || failed.is_some() {
                    return;
                }
                if recovered.replayed == 0 {
                    recovered.first_seq = seq;
                }
                recovered.replayed += 1;
                batch.readings.push(Reading {
                    sensor_id: id.to_owned(),
                    temperature,
                    timestamp,
                });
                // Not at the frame's last reading: its key states go with it.
                if batch.readings.len() == REPLAY_BATCH && seq < last {
                    failed = batch.hand_over(replay).err();
                }
            })?
            .map_err(io::Error::other)?;
        if let Some(e) = failed {
            return Ok(Err(e));
        }
        batch.keys.append(&mut keys);
        if batch.readings.len() >= REPLAY_BATCH
            && let Err(e) = batch.hand_over(replay)
        {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Why the frame at a given offset does not check out.
#[derive(Debug)]
enum Fault {
    Head(HeadFault),
    /// The header holds, but the file ends before the frame does.
    CutShort {
        end: u64,
    },
    /// The header holds, the body fails its checksum.
    Body {
        end: u64,
    },
}

/// The header of the frame at `at`, once it and the body check out.
fn checked_frame(
    version: Version,
    file: &mut SegmentReader,
    at: u64,
) -> io::Result<Result<Head, Fault>> {
    let header = file.bytes(at, version.header_len())?;
    let head = match version.head(header) {
        Ok(head) => head,
        Err(fault) => return Ok(Err(Fault::Head(fault))),
    };
    let end = at.saturating_add(head.frame_len);
    if end > file.len() {
        return Ok(Err(Fault::CutShort { end }));
    }
    if file.crc(at + head.body_at as u64, end)? != head.body_crc {
        return Ok(Err(Fault::Body { end }));
    }
    Ok(Ok(head))
}

impl Fault {
    /// Whether this can be the write a crash interrupted, by the rules in
    /// the module docs. The frame is at `at` of the newest file.
    fn may_be_torn(&self, version: Version, file: &mut SegmentReader, at: u64) -> io::Result<bool> {
        let len = file.len();
        Ok(match (version, self) {
            (_, Fault::Head(HeadFault::CutShort)) | (Version::V2, Fault::CutShort { .. }) => true,
            (Version::V2, Fault::Head(HeadFault::Checksum)) => {
                file.is_zero(at + version.header_len() as u64, len)?
            }
            (_, Fault::Head(_)) => false,
            (Version::V2, Fault::Body { end }) => {
                file.is_zero(*end, len)? && has_hole(file, at, *end)?
            }
            (Version::V1, Fault::CutShort { end } | Fault::Body { end }) => {
                // `len` is unchecked: where it says the frame ends proves nothing.
                let torn = *end > len || file.is_zero(*end, len)? && has_hole(file, at, *end)?;
                torn && v1_whole_frame_len(file, at)?.is_none()
            }
        })
    }

    /// Bytes of the file (`len` long) that the frame at `at` takes.
    fn frame_bytes(&self, version: Version, at: u64, len: u64) -> u64 {
        match self {
            Fault::Head(_) => (len - at).min(version.header_len() as u64),
            Fault::CutShort { end } | Fault::Body { end } => (*end).min(len) - at,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Fault::Head(fault) => fault.reason(),
            Fault::CutShort { .. } => "the frame is cut short",
            Fault::Body { .. } => "the frame fails its checksum",
        }
    }

    /// Why this is damage, for the operator.
    fn explain(&self, version: Version, file: &mut SegmentReader, at: u64) -> io::Result<String> {
        let reason = self.reason();
        if version == Version::V1
            && let Some(whole) = v1_whole_frame_len(file, at)?
        {
            let claimed = match self {
                Fault::CutShort { end } | Fault::Body { end } => end - at,
                Fault::Head(_) => 0,
            };
            return Ok(format!(
                "{reason}: its length field says {claimed} bytes, but its readings end after {whole} and check out there, so the length field is damaged"
            ));
        }
        Ok(match self {
            Fault::Head(HeadFault::Checksum) => {
                format!("{reason}, and data follows it: it was written whole and damaged since")
            }
            Fault::Body { .. } => format!(
                "{reason}, and no part of it reads as never written: it was written whole and damaged since"
            ),
            _ => reason.to_owned(),
        })
    }
}

/// Whether some disk sector's share of the frame from `at` to `end`, at
/// least [`HOLE`] bytes of it, reads as zeros: a sector the crash never wrote.
fn has_hole(file: &mut SegmentReader, at: u64, end: u64) -> io::Result<bool> {
    let mut start = at;
    while start < end {
        let sector_end = (start / SECTOR + 1) * SECTOR;
        let share_end = sector_end.min(end);
        if share_end - start >= HOLE && file.is_zero(start, share_end)? {
            return Ok(true);
        }
        start = sector_end;
    }
    Ok(false)
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::{Journal, testing::*};
    use super::*;
    use crate::journal::format::V2_HEADER;

    /// The header fields of a version 2 frame: (name, offset, bytes).
    const V2_FIELDS: [(&str, usize, usize); 5] = [
        ("len", 0, 4),
        ("first_seq", 4, 8),
        ("count", 12, 4),
        ("body crc", 16, 4),
        ("header crc", 20, 4),
    ];

    fn recover(dir: &Path, indexed: u64) -> Result<Got, StoreError> {
        recover_all(dir, indexed)
    }

    fn is_zero(bytes: &[u8]) -> bool {
        bytes.iter().all(|b| *b == 0)
    }

    /// Asserts that recovery refuses `path`'s damage at frame `at`, naming
    /// both, and leaves every byte as it was.
    fn assert_refused(dir: &Path, path: &Path, at: usize, what: &str) {
        let before = fs::read(path).unwrap();
        let err = recover(dir, 0).map(|r| r.readings.len()).unwrap_err();
        match &err {
            StoreError::Corrupt {
                path: named,
                reason,
            } => {
                assert_eq!(named, path, "{what}: {err}");
                assert!(reason.contains(&format!("byte {at}")), "{what}: {err}");
            }
            _ => panic!("{what}: {err}"),
        }
        assert_eq!(
            fs::read(path).unwrap(),
            before,
            "{what}: the file was changed"
        );
    }

    /// Groups large enough that frames span several 512-byte sectors.
    fn big_groups() -> Vec<Vec<Reading>> {
        (0..5)
            .map(|g| {
                (0..40)
                    .map(|i| reading("sensor-with-a-longer-name", g * 40 + i))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn recovers_what_was_appended_after_the_indexed_point() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        drop(write(dir.path(), 11, &groups));
        let all: Vec<Reading> = groups.concat();

        let everything = recover(dir.path(), 10).unwrap();
        assert_eq!(everything.first_seq, 11);
        assert_eq!(everything.readings, all);
        assert_eq!(everything.torn_bytes, 0);

        let after = recover(dir.path(), 13).unwrap();
        assert_eq!(after.first_seq, 14);
        assert_eq!(after.readings, all[3..]);

        let none = recover(dir.path(), 16).unwrap();
        assert!(none.readings.is_empty());
    }

    /// Replay comes in batches of at most REPLAY_BATCH readings, in order
    /// and across files; and only once every file has checked out: damage
    /// in the newest file's last frame stops recovery before one reading
    /// is handed over.
    #[test]
    fn replay_comes_in_bounded_batches_only_after_every_file_checked_out() {
        let dir = tempfile::tempdir().unwrap();
        let groups: Vec<Vec<Reading>> = (0..12)
            .map(|g| (0..5_000).map(|i| reading("r", g * 5_000 + i)).collect())
            .collect();
        let mut journal = write(dir.path(), 1, &groups[..6]);
        journal.rotate(30_001);
        for (g, group) in groups[6..].iter().enumerate() {
            let seq = 30_001 + g as u64 * 5_000;
            journal.append(seq, group.len(), group.iter(), &[]).unwrap();
        }
        drop(journal);
        let all = groups.concat();
        for indexed in [0, 2_500, 30_000, 41_234] {
            let mut batches = Vec::new();
            let recovered = Journal::recover(dir.path(), indexed, |batch, _| {
                batches.push(batch.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(recovered.first_seq, indexed + 1);
            assert!(
                batches
                    .iter()
                    .all(|b| !b.is_empty() && b.len() <= REPLAY_BATCH)
            );
            assert!(batches.len() > 1);
            assert_eq!(batches.concat(), all[indexed as usize..], "after {indexed}");
        }

        let segments = list_segments(dir.path()).unwrap();
        shrink_unused(&segments[1].path);
        let bytes = fs::read(&segments[1].path).unwrap();
        let (starts, _) = frame_starts(&bytes);
        rewrite(&segments[1].path, |b| {
            b[*starts.last().unwrap() + 2] ^= 0x01
        });
        let mut handed = 0;
        let err = Journal::recover(dir.path(), 0, |batch, _| {
            handed += batch.len();
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(handed, 0);
    }

    /// The issue 13 damage: every bit of every header field of the first, a
    /// middle and the last frame, in the newest file and in a closed one,
    /// flipped one at a time. Each is refused, naming the file and the
    /// frame's offset, and changes nothing: none is a write a crash cut off.
    #[test]
    fn every_flipped_header_bit_is_refused_in_every_file_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let groups = big_groups();
        let mut journal = write(dir.path(), 1, &groups);
        journal.rotate(201);
        let mut seq = 201;
        for group in &groups {
            journal.append(seq, group.len(), group.iter(), &[]).unwrap();
            seq += group.len() as u64;
        }
        drop(journal);
        let segments = list_segments(dir.path()).unwrap();
        assert_eq!(segments.len(), 2);
        shrink_unused(&segments[1].path);
        let mut cases = 0;
        for (file, segment) in ["sealed", "newest"].into_iter().zip(&segments) {
            let original = fs::read(&segment.path).unwrap();
            let (starts, _) = frame_starts(&original);
            assert_eq!(starts.len(), 5);
            for (which, at) in [
                ("first", starts[0]),
                ("middle", starts[2]),
                ("last", starts[4]),
            ] {
                for (field, offset, len) in V2_FIELDS {
                    for bit in 0..len * 8 {
                        let what = format!("{file} file, {which} frame, {field} bit {bit}");
                        let byte = at + offset + bit / 8;
                        let mut damaged = original.clone();
                        damaged[byte] ^= 1 << (bit % 8);
                        fs::write(&segment.path, &damaged).unwrap();
                        assert_refused(dir.path(), &segment.path, at, &what);
                        cases += 1;
                    }
                }
            }
            fs::write(&segment.path, &original).unwrap();
        }
        assert_eq!(cases, 2 * 3 * V2_HEADER * 8);
        assert_eq!(recover(dir.path(), 0).unwrap().readings.len(), 400);
    }

    /// A bit flipped in the readings of the last frame is damage too: the
    /// frame has no hole a crash could have left.
    #[test]
    fn a_flipped_bit_in_the_last_frames_readings_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1, &big_groups()));
        let path = only_file(dir.path());
        shrink_unused(&path);
        let original = fs::read(&path).unwrap();
        let (starts, end) = frame_starts(&original);
        let last = *starts.last().unwrap();
        for byte in (last + V2_HEADER..end).step_by(7) {
            let mut damaged = original.clone();
            damaged[byte] ^= 0x20;
            fs::write(&path, &damaged).unwrap();
            assert_refused(dir.path(), &path, last, &format!("byte {byte}"));
        }
    }

    /// A crash inside the last write: the file ends anywhere inside the
    /// last frame (a file not grown ahead, or a size the crash lost). Only
    /// that frame is lost, and appending resumes after what is left.
    #[test]
    fn a_last_write_cut_short_anywhere_is_cut_off_and_appending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let groups = groups();
        let whole = write(dir.path(), 1, &groups).current_len;
        let path = only_file(dir.path());
        let original = fs::read(&path).unwrap();
        let last_frame = (V2_HEADER + 4 + 3 * (2 + 1 + 16)) as u64;
        for cut in 1..last_frame {
            fs::write(&path, &original[..(whole - cut) as usize]).unwrap();
            let recovered = recover(dir.path(), 0).unwrap();
            assert_eq!(recovered.readings, groups[..2].concat(), "cut {cut}");
            assert_eq!(recovered.torn_bytes, last_frame - cut);
            assert_eq!(fs::metadata(&path).unwrap().len(), whole - last_frame);
        }
        let mut journal = write(dir.path(), 1, &groups[..2]);
        journal.append(4, 1, [reading("d", 9)].iter(), &[]).unwrap();
        drop(journal);
        assert_eq!(
            recover(dir.path(), 3).unwrap().readings,
            vec![reading("d", 9)]
        );
    }

    /// A crash inside the last write of a file grown ahead: the disk wrote
    /// some of the frame's sectors and not others, and those read as zeros.
    /// Each such write is cut off, losing that frame only, or refused
    /// unchanged where the zeros prove nothing (a share of a sector under
    /// 16 bytes, or a lost header with data after it); never anything more.
    #[test]
    fn a_last_write_with_sectors_never_written_is_cut_off_or_refused_never_more() {
        let dir = tempfile::tempdir().unwrap();
        let groups = big_groups();
        let before_last: Vec<Reading> = groups[..4].concat();
        drop(write(dir.path(), 1, &groups));
        let path = only_file(dir.path());
        shrink_unused(&path);
        let original = fs::read(&path).unwrap();
        let (starts, end) = frame_starts(&original);
        let at = *starts.last().unwrap();
        assert!(
            end - at > 3 * SECTOR as usize,
            "the last frame spans sectors"
        );
        let sectors: Vec<(usize, usize)> = (at / 512..end.div_ceil(512))
            .map(|s| ((s * 512).max(at), ((s + 1) * 512).min(end)))
            .collect();
        let (mut cut, mut refused) = (0, 0);
        for (i, &(from, to)) in sectors.iter().enumerate() {
            // One sector never written, and every sector from it on.
            for (pattern, zeroed) in [("sector", from..to), ("suffix", from..end)] {
                if pattern == "suffix" && i == 0 {
                    continue; // all of it zero: unused space, below
                }
                let mut damaged = original.clone();
                damaged[zeroed.clone()].fill(0);
                fs::write(&path, &damaged).unwrap();
                let what = format!("{pattern} {zeroed:?}");
                let header_lost = from == at;
                let provable =
                    to - from >= HOLE as usize || pattern == "suffix" && from < at + V2_HEADER;
                match recover(dir.path(), 0) {
                    Ok(recovered) => {
                        assert!(
                            !header_lost || pattern == "suffix",
                            "{what}: data after a lost header"
                        );
                        assert!(provable, "{what}: cut off without proof");
                        assert_eq!(recovered.readings, before_last, "{what}");
                        assert_eq!(fs::metadata(&path).unwrap().len(), at as u64, "{what}");
                        cut += 1;
                    }
                    Err(StoreError::Corrupt { reason, .. }) => {
                        assert!(header_lost || !provable, "{what}: refused: {reason}");
                        assert_eq!(fs::read(&path).unwrap(), damaged, "{what}");
                        refused += 1;
                    }
                    Err(e) => panic!("{what}: {e}"),
                }
            }
        }
        assert!(cut >= sectors.len(), "{cut} cut off, {refused} refused");
        // Nothing of it written: unused space.
        let mut damaged = original.clone();
        damaged[at..].fill(0);
        fs::write(&path, &damaged).unwrap();
        let recovered = recover(dir.path(), 0).unwrap();
        assert_eq!((recovered.readings, recovered.torn_bytes), (before_last, 0));
    }

    /// Inside the header itself: the disk wrote its first sector's share
    /// and nothing after it.
    #[test]
    fn a_last_header_cut_short_by_a_sector_boundary_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let groups = big_groups();
        drop(write(dir.path(), 1, &groups));
        let path = only_file(dir.path());
        let original = fs::read(&path).unwrap();
        let (starts, _) = frame_starts(&original);
        let at = *starts.last().unwrap();
        for written in 1..V2_HEADER {
            let mut damaged = original.clone();
            damaged[at + written..].fill(0);
            fs::write(&path, &damaged).unwrap();
            let recovered = recover(dir.path(), 0).unwrap();
            assert_eq!(recovered.readings, groups[..4].concat(), "{written}");
            assert_eq!(recovered.torn_bytes, V2_HEADER as u64);
            fs::write(&path, &original).unwrap();
        }
    }

    #[test]
    fn garbage_in_the_unused_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let end = write(dir.path(), 1, &groups()).current_len;
        let path = only_file(dir.path());
        rewrite(&path, |bytes| bytes[end as usize + 100] = 7);
        let err = recover(dir.path(), 0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_damaged_frame_with_frames_after_it_is_refused_even_in_the_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1, &groups()));
        let path = only_file(dir.path());
        let bytes = rewrite(&path, |bytes| bytes[V2_HEADER + 4 + 3] ^= 0x10);
        let err = recover(dir.path(), 0).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_gap_between_the_tables_and_the_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 20, &groups()));
        let err = recover(dir.path(), 10).unwrap_err();
        assert!(
            err.to_string().contains("readings 11 to 19 are in neither"),
            "{err}"
        );
    }

    /// The tables lost readings (a damaged WAL) that the journal no longer
    /// holds: its numbering, even an empty file's name, says they existed.
    #[test]
    fn a_journal_that_begins_after_the_tables_end_is_refused_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::start(dir.path(), 31).unwrap());
        let err = recover(dir.path(), 20).unwrap_err();
        assert!(
            err.to_string().contains("readings 21 to 30 are in neither"),
            "{err}"
        );
        // Tables that end where the journal begins, or beyond: nothing is missing.
        assert!(recover(dir.path(), 30).unwrap().readings.is_empty());
        assert!(recover(dir.path(), 40).unwrap().readings.is_empty());
    }

    #[test]
    fn a_file_that_does_not_continue_the_one_before_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1, &groups()));
        // The first file ends at 6; an (empty) file named for 9 follows.
        fs::write(dir.path().join(Version::V2.file_name(9)), b"").unwrap();
        let err = recover(dir.path(), 0).unwrap_err();
        assert!(err.to_string().contains("ends at 6"), "{err}");
    }

    /// Version 1, as the fixture an earlier build wrote holds it: its
    /// headers have no checksum, yet a flipped bit in `len`, the payload
    /// checksum, `first_seq` or `count` of any frame (the newest file's
    /// last frame included) is refused, not taken for a torn write.
    #[test]
    fn every_flipped_bit_of_a_version_1_frame_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/store-v1-crashed/journal/00000000000000000001.journal");
        let path = dir.path().join("00000000000000000001.journal");
        let original = fs::read(fixture).unwrap();
        let mut starts = Vec::new();
        let mut at = 0;
        while !is_zero(&original[at..]) {
            starts.push(at);
            at += Version::V1.head(&original[at..]).unwrap().frame_len as usize;
        }
        assert_eq!(starts.len(), 6);
        fs::write(&path, &original).unwrap();
        assert_eq!(recover(dir.path(), 0).unwrap().readings.len(), 21);
        let fields = [
            ("len", 0, 4),
            ("crc", 4, 4),
            ("first_seq", 8, 8),
            ("count", 16, 4),
        ];
        for (which, at) in [
            ("first", starts[0]),
            ("middle", starts[3]),
            ("last", starts[5]),
        ] {
            for (field, offset, len) in fields {
                for bit in 0..len * 8 {
                    let mut damaged = original.clone();
                    damaged[at + offset + bit / 8] ^= 1 << (bit % 8);
                    fs::write(&path, &damaged).unwrap();
                    assert_refused(
                        dir.path(),
                        &path,
                        at,
                        &format!("{which} frame, {field} bit {bit}"),
                    );
                }
            }
        }
        // A write cut short in the last frame still loses that frame only.
        let last = starts[5];
        for cut in [last + 3, last + 8, last + 30, at - 1] {
            fs::write(&path, &original[..cut]).unwrap();
            assert_eq!(
                recover(dir.path(), 0).unwrap().readings.len(),
                19,
                "cut at {cut}"
            );
        }
    }
}
