//! The bytes of the commit log: file names and frames, in the two versions
//! this build reads. It writes version 2 only.
//!
//! ```text
//! version 2, files <first seq, 20 digits>.v2.journal:
//!   frame   = header (24 bytes) | body (len bytes)
//!   header  = len: u32 | first_seq: u64 | count: u32 | crc32(body): u32 | crc32(header bytes 0..20): u32
//!   body    = keyed: u32 | keyed × key entry | count × reading
//!   key entry = key length: u8 | key (ASCII) | first_seq: u64 | through: u64
//!               | fingerprint: u64 | first_used: i64
//!
//! version 1, files <first seq, 20 digits>.journal (read only):
//!   frame   = len: u32 | crc32(payload): u32 | payload (len bytes)
//!   payload = first_seq: u64 | count: u32 | count × reading
//!
//! reading = sensor_id length: u16 | sensor_id (UTF-8) | timestamp: i64 | temperature: f64
//! ```
//!
//! All integers little-endian. Why version 2: in version 1 the checksum
//! covers the payload but not `len`, so a flipped bit in `len` made a whole
//! frame look like a write cut short, and recovery cut off every
//! acknowledged frame after it. A version 2 header carries its own checksum
//! over `len`, the sequence numbers and the count (and the body's checksum),
//! so recovery trusts where a frame ends only once its header checks out.
//! A key entry is the state of an idempotency key after the frame's writes
//! (`crate::idempotency::KeyState`), so that replay restores what the
//! frame's keyed writes did, and a retry after a crash still stores its
//! readings once. Entries come before the readings, so a frame ends with a
//! reading (see the invariant below).
//!
//! Invariant: no frame written whole holds 16 zero bytes in a row. The
//! header's first 16 bytes hold a non-zero `len` and `first_seq`; every
//! reading holds a positive timestamp and a sensor id without NUL, its
//! length below 256. Recovery relies on this to tell a sector a crash never
//! wrote (zeros) from damage to a frame that was written whole.

use std::io;

use super::segment_reader::SegmentReader;
use sensorhub_core::{
    Reading,
    idempotency::{Fingerprint, IdempotencyKey, KeyState},
};

/// Bytes of a version 2 frame header.
pub(super) const V2_HEADER: usize = 24;
/// Bytes of a version 1 frame header (`len`, `crc`), before its payload.
pub(super) const V1_HEADER: usize = 8;
/// Bytes of a version 1 payload's own header (`first_seq`, `count`).
const V1_PAYLOAD_HEADER: usize = 12;
/// Bytes of the body before its readings (`keyed`).
const V2_BODY_HEADER: usize = 4;
/// The smallest encoded reading: a one-byte id.
const MIN_READING: usize = 2 + 1 + 8 + 8;
/// No frame is larger: a group commit holds at most a few MiB. A header
/// that checks out but claims more is refused rather than believed.
pub(super) const MAX_BODY: usize = 1 << 30;

/// Which layout a file's frames have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Version {
    V1,
    V2,
}

impl Version {
    /// This build writes only this one.
    pub(super) const CURRENT: Version = Version::V2;

    fn suffix(self) -> &'static str {
        match self {
            Version::V1 => ".journal",
            Version::V2 => ".v2.journal",
        }
    }

    /// The file name of a log file whose first frame holds `first_seq`.
    pub(super) fn file_name(self, first_seq: u64) -> String {
        format!("{first_seq:020}{}", self.suffix())
    }

    /// The version and first sequence number a file name says, if it is a
    /// log file's name.
    pub(super) fn parse_file_name(name: &str) -> Option<(u64, Version)> {
        // The longer suffix first: ".v2.journal" also ends in ".journal".
        [Version::V2, Version::V1].into_iter().find_map(|version| {
            let digits = name.strip_suffix(version.suffix())?;
            let ok = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| digits.parse().ok().map(|seq| (seq, version)))?
        })
    }
}

/// What a header says about its frame, once it checks out (version 2) or
/// as far as it can be read (version 1, whose header has no checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// Bytes of the whole frame, header included.
    pub(super) frame_len: u64,
    /// The body: offset from the frame's start, and its checksum.
    pub(super) body_at: usize,
    pub(super) body_crc: u32,
}

/// Why the bytes at a frame's start are not a header to trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadFault {
    /// The file ends inside the header.
    CutShort,
    /// Version 2: the header fails its own checksum.
    Checksum,
    /// Version 2: the header checks out but describes no frame this build
    /// writes (an empty or oversized body, more readings than bytes).
    Impossible(&'static str),
}

impl HeadFault {
    pub(super) fn reason(self) -> &'static str {
        match self {
            HeadFault::CutShort => "the frame header is cut short",
            HeadFault::Checksum => "the frame header fails its checksum",
            HeadFault::Impossible(why) => why,
        }
    }
}

impl Version {
    /// Bytes the header takes (version 1: `len` and `crc`).
    pub(super) fn header_len(self) -> usize {
        match self {
            Version::V1 => V1_HEADER,
            Version::V2 => V2_HEADER,
        }
    }

    /// Reads the header at the start of `bytes` (the rest of the file).
    pub(super) fn head(self, bytes: &[u8]) -> Result<Head, HeadFault> {
        let Some(header) = bytes.get(..self.header_len()) else {
            return Err(HeadFault::CutShort);
        };
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
        match self {
            Version::V1 => Ok(Head {
                frame_len: V1_HEADER as u64 + u64::from(u32_at(0)),
                body_at: V1_HEADER,
                body_crc: u32_at(4),
            }),
            Version::V2 => {
                if crc32fast::hash(&header[..20]) != u32_at(20) {
                    return Err(HeadFault::Checksum);
                }
                let len = u32_at(0) as usize;
                let count = u32_at(12) as usize;
                if count == 0 {
                    return Err(HeadFault::Impossible(
                        "the frame header checks out but counts no readings",
                    ));
                }
                if len > MAX_BODY || len < V2_BODY_HEADER + count.saturating_mul(MIN_READING) {
                    return Err(HeadFault::Impossible(
                        "the frame header checks out but its length cannot hold its readings",
                    ));
                }
                Ok(Head {
                    frame_len: (V2_HEADER + len) as u64,
                    body_at: V2_HEADER,
                    body_crc: u32_at(16),
                })
            }
        }
    }
}

/// The state of one idempotency key after a frame's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub(crate) key: String,
    pub(crate) state: KeyState,
}

/// Bytes of a key entry after its key.
const KEY_ENTRY_FIXED: usize = 32;

/// What a frame's checked bytes say besides its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) first_seq: u64,
    pub(super) count: u32,
    /// File offsets: where its readings start, and where the frame ends.
    pub(super) readings_at: u64,
    pub(super) end: u64,
}

impl Frame {
    /// The frame at `at` of `file`, whose header said `head` and whose body
    /// checksum holds: its sequence numbers and where its readings are. Its
    /// key entries are checked, and go to `entries` if given.
    pub(super) fn read(
        version: Version,
        file: &mut SegmentReader,
        at: u64,
        head: Head,
        entries: Option<&mut Vec<KeyEntry>>,
    ) -> io::Result<Result<Frame, String>> {
        let end = at + head.frame_len;
        let body = at + head.body_at as u64;
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        Ok(match version {
            Version::V1 => {
                let fixed = file.bytes(body, V1_PAYLOAD_HEADER)?;
                if body + V1_PAYLOAD_HEADER as u64 > end || fixed.len() < V1_PAYLOAD_HEADER {
                    return Ok(Err("the frame is too short to hold its header".into()));
                }
                Ok(Frame {
                    first_seq: u64::from_le_bytes(fixed[0..8].try_into().expect("8")),
                    count: u32_at(fixed, 8),
                    readings_at: body + V1_PAYLOAD_HEADER as u64,
                    end,
                })
            }
            Version::V2 => {
                let header = file.bytes(at, V2_HEADER + V2_BODY_HEADER)?;
                let first_seq = u64::from_le_bytes(header[4..12].try_into().expect("8"));
                let count = u32_at(header, 12);
                let keyed = u32_at(header, V2_HEADER);
                match read_key_entries(file, body + V2_BODY_HEADER as u64, end, keyed, entries)? {
                    Ok(readings_at) => Ok(Frame {
                        first_seq,
                        count,
                        readings_at,
                        end,
                    }),
                    Err(i) => Err(format!("key entry {i} of {keyed} cannot be decoded")),
                }
            }
        })
    }

    /// Decodes the frame's readings, handing each to `each` with its
    /// sequence number; fails unless they fill the frame exactly.
    pub(super) fn for_each_reading(
        &self,
        file: &mut SegmentReader,
        mut each: impl FnMut(u64, &str, i64, f64),
    ) -> io::Result<Result<(), String>> {
        let mut i = 0;
        let decoded = read_readings(file, self.readings_at, self.end, self.count, |id, ts, t| {
            each(self.first_seq + i, id, ts, t);
            i += 1;
        })?;
        Ok(match decoded {
            Ok(end) if end == self.end => Ok(()),
            Ok(end) => Err(format!("{} bytes after its last reading", self.end - end)),
            Err(i) => Err(format!("reading {i} of {} cannot be decoded", self.count)),
        })
    }
}

/// Reads `keyed` key entries from `from` on, none past `limit`, into
/// `entries` if given. Returns where they end, or the index of the first
/// that cannot be decoded.
fn read_key_entries(
    file: &mut SegmentReader,
    from: u64,
    limit: u64,
    keyed: u32,
    mut entries: Option<&mut Vec<KeyEntry>>,
) -> io::Result<Result<u64, u32>> {
    let mut at = from;
    for i in 0..keyed {
        let key_len = match file.bytes(at, 1)? {
            [len] => *len as usize,
            _ => return Ok(Err(i)),
        };
        let end = at + (1 + key_len + KEY_ENTRY_FIXED) as u64;
        if end > limit {
            return Ok(Err(i));
        }
        let bytes = file.bytes(at + 1, key_len + KEY_ENTRY_FIXED)?;
        let (key, fixed) = bytes.split_at(key_len);
        let Some(key) = std::str::from_utf8(key)
            .ok()
            .filter(|k| IdempotencyKey::parse(k).is_ok())
        else {
            return Ok(Err(i));
        };
        let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().expect("8"));
        if let Some(entries) = entries.as_deref_mut() {
            entries.push(KeyEntry {
                key: key.to_owned(),
                state: KeyState {
                    first_seq: u64_at(0),
                    through: u64_at(8),
                    fingerprint: Fingerprint(u64_at(16)),
                    first_used: u64_at(24) as i64,
                },
            });
        }
        at = end;
    }
    Ok(Ok(at))
}

/// Writes one version 2 frame of `count` readings numbered from `first_seq`
/// and the key states `entries` into `out` (cleared first).
pub(super) fn encode<'a>(
    out: &mut Vec<u8>,
    first_seq: u64,
    count: usize,
    readings: impl Iterator<Item = &'a Reading>,
    entries: &[KeyEntry],
) {
    out.clear();
    out.extend_from_slice(&[0; V2_HEADER]);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        // Keys are checked: at most 128 ASCII bytes.
        out.push(entry.key.len() as u8);
        out.extend_from_slice(entry.key.as_bytes());
        out.extend_from_slice(&entry.state.first_seq.to_le_bytes());
        out.extend_from_slice(&entry.state.through.to_le_bytes());
        out.extend_from_slice(&entry.state.fingerprint.0.to_le_bytes());
        out.extend_from_slice(&entry.state.first_used.to_le_bytes());
    }
    for reading in readings {
        let id = reading.sensor_id.as_bytes();
        // Validation caps sensor ids far below 64 KiB.
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&reading.timestamp.to_le_bytes());
        out.extend_from_slice(&reading.temperature.to_le_bytes());
    }
    let body_len = (out.len() - V2_HEADER) as u32;
    let body_crc = crc32fast::hash(&out[V2_HEADER..]);
    out[0..4].copy_from_slice(&body_len.to_le_bytes());
    out[4..12].copy_from_slice(&first_seq.to_le_bytes());
    out[12..16].copy_from_slice(&(count as u32).to_le_bytes());
    out[16..20].copy_from_slice(&body_crc.to_le_bytes());
    let head_crc = crc32fast::hash(&out[..20]);
    out[20..24].copy_from_slice(&head_crc.to_le_bytes());
}

/// Decodes `count` readings from `from` on, none past `limit`, handing
/// each to `each` without allocating. Returns where they end, or the index
/// of the first that cannot be decoded.
fn read_readings(
    file: &mut SegmentReader,
    from: u64,
    limit: u64,
    count: u32,
    mut each: impl FnMut(&str, i64, f64),
) -> io::Result<Result<u64, u32>> {
    let mut at = from;
    for i in 0..count {
        let id_len = match file.bytes(at, 2)? {
            [a, b] => u16::from_le_bytes([*a, *b]) as usize,
            _ => return Ok(Err(i)),
        };
        let end = at + (2 + id_len + 16) as u64;
        if end > limit {
            return Ok(Err(i));
        }
        let bytes = file.bytes(at + 2, id_len + 16)?;
        let (id, numbers) = bytes.split_at(id_len);
        let Ok(id) = std::str::from_utf8(id) else {
            return Ok(Err(i));
        };
        let ts = i64::from_le_bytes(numbers[0..8].try_into().expect("8"));
        let temperature = f64::from_le_bytes(numbers[8..16].try_into().expect("8"));
        each(id, ts, temperature);
        at = end;
    }
    Ok(Ok(at))
}

/// Version 1 only: the length the frame at `at` really has if its payload
/// is whole and only its `len` was damaged. Decodes the readings its
/// payload header counts and checks the payload checksum over exactly them.
pub(super) fn v1_whole_frame_len(file: &mut SegmentReader, at: u64) -> io::Result<Option<u64>> {
    let header = file.bytes(at, V1_HEADER + V1_PAYLOAD_HEADER)?;
    if header.len() < V1_HEADER + V1_PAYLOAD_HEADER {
        return Ok(None);
    }
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
    let count = u32::from_le_bytes(header[16..20].try_into().expect("4"));
    let readings_at = at + (V1_HEADER + V1_PAYLOAD_HEADER) as u64;
    let Ok(end) = read_readings(file, readings_at, file.len(), count, |_, _, _| {})? else {
        return Ok(None);
    };
    let payload = at + V1_HEADER as u64;
    Ok((file.crc(payload, end)? == crc).then_some(end - at))
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

    #[test]
    fn a_version_2_frame_decodes_to_what_was_encoded() {
        let readings = vec![reading("a", 1), reading("ü", 2), reading("a", 0)];
        let mut out = Vec::new();
        let keys = vec![KeyEntry {
            key: "0f8e1c52-3d6b-4a59".into(),
            state: KeyState {
                first_seq: 40,
                through: 3,
                fingerprint: Fingerprint(0xdead_beef),
                first_used: 1_700_000_000,
            },
        }];
        encode(&mut out, 41, readings.len(), readings.iter(), &keys);
        let head = Version::V2.head(&out).unwrap();
        assert_eq!(head.frame_len, out.len() as u64);
        assert_eq!(crc32fast::hash(&out[head.body_at..]), head.body_crc);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Behind another frame's worth of bytes: offsets are the file's.
        std::fs::write(&path, [vec![7; 5], out.clone()].concat()).unwrap();
        let mut file = SegmentReader::open(&path).unwrap();
        let mut entries = Vec::new();
        let frame = Frame::read(Version::V2, &mut file, 5, head, Some(&mut entries))
            .unwrap()
            .unwrap();
        assert_eq!(entries, keys);
        assert_eq!(
            (frame.first_seq, frame.count, frame.end),
            (41, 3, 5 + out.len() as u64)
        );
        let mut got = Vec::new();
        frame
            .for_each_reading(&mut file, |seq, id, timestamp, temperature| {
                got.push((
                    seq,
                    Reading {
                        sensor_id: id.into(),
                        temperature,
                        timestamp,
                    },
                ))
            })
            .unwrap()
            .unwrap();
        assert_eq!(got, (41..).zip(readings).collect::<Vec<_>>());
    }

    /// CRC-32 detects every single-bit error, so every flipped header bit
    /// is caught by the header's own checksum.
    #[test]
    fn every_flipped_header_bit_fails_the_header_checksum() {
        let mut out = Vec::new();
        encode(&mut out, 7, 1, [reading("a", 1)].iter(), &[]);
        for bit in 0..V2_HEADER * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                Version::V2.head(&damaged),
                Err(HeadFault::Checksum),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn file_names_carry_the_version() {
        assert_eq!(Version::V2.file_name(12), "00000000000000000012.v2.journal");
        assert_eq!(
            Version::parse_file_name("00000000000000000012.v2.journal"),
            Some((12, Version::V2))
        );
        assert_eq!(
            Version::parse_file_name("00000000000000000012.journal"),
            Some((12, Version::V1))
        );
        for other in [
            "12.journal",
            "00000000000000000012.v3.journal",
            "x.journal",
            "readings.db",
        ] {
            assert_eq!(Version::parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn no_frame_holds_16_zero_bytes_in_a_row() {
        // The extremes validation allows: temperature 0.0, a one-byte id,
        // sequence numbers and counts with zero bytes, the longest id.
        let long = "x".repeat(sensorhub_core::validation::MAX_SENSOR_ID_BYTES);
        let readings = [
            Reading {
                sensor_id: "a".into(),
                temperature: 0.0,
                timestamp: 1,
            },
            Reading {
                sensor_id: long,
                temperature: 0.0,
                timestamp: 1 << 56,
            },
            Reading {
                sensor_id: "b".into(),
                temperature: -0.0,
                timestamp: 256,
            },
        ];
        // And key entries with small numbers in them.
        let entries = [KeyEntry {
            key: "k".into(),
            state: KeyState {
                first_seq: 1,
                through: 256,
                fingerprint: Fingerprint(1),
                first_used: 1,
            },
        }];
        let mut out = Vec::new();
        for first_seq in [1, 256, 1 << 32] {
            encode(
                &mut out,
                first_seq,
                readings.len(),
                readings.iter(),
                &entries,
            );
            assert!(
                !out.windows(16).any(|w| w.iter().all(|b| *b == 0)),
                "{first_seq}"
            );
        }
    }
}
