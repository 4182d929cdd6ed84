//! One journal file read through a buffer of fixed size, so that recovery
//! of a 64 MiB file (or of a frame that claims to be larger than the file)
//! costs [`BUFFER`] bytes, not the file's size.
//!
//! Why not `BufReader`: recovery reads mostly forward, but the checks for a
//! torn write look ahead (is everything after this frame zeros?) and then
//! go back; positioned reads into one window do both without seeking.

use std::{fs::File, io, os::unix::fs::FileExt, path::Path};

/// The window: any one reading (a sensor id of up to 64 KiB) fits.
const BUFFER: usize = 128 << 10;
/// The largest piece [`SegmentReader::bytes`] hands out at once.
pub(super) const MAX_PIECE: usize = BUFFER;

/// A journal file, read at any offset through one fixed window.
pub(super) struct SegmentReader {
    file: File,
    len: u64,
    buf: Box<[u8]>,
    /// The file offset of `buf[0]`, and how many bytes of `buf` hold data.
    buf_at: u64,
    filled: usize,
}

impl SegmentReader {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            buf: vec![0; BUFFER].into_boxed_slice(),
            buf_at: 0,
            filled: 0,
        })
    }

    /// The file's size.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The `n` bytes at `at` (`n` at most [`MAX_PIECE`]), or fewer where
    /// the file ends first.
    pub(super) fn bytes(&mut self, at: u64, n: usize) -> io::Result<&[u8]> {
        debug_assert!(n <= MAX_PIECE);
        let n = n.min(self.len.saturating_sub(at) as usize);
        let cached = at >= self.buf_at && at + n as u64 <= self.buf_at + self.filled as u64;
        if !cached {
            let want = BUFFER.min((self.len - at) as usize);
            self.file.read_exact_at(&mut self.buf[..want], at)?;
            self.buf_at = at;
            self.filled = want;
        }
        let from = (at - self.buf_at) as usize;
        Ok(&self.buf[from..from + n])
    }

    /// Calls `each` with the file's bytes from `from` to `to` (or its end),
    /// piece by piece, in order; stops early when `each` returns `false`.
    /// Returns whether it went all the way.
    pub(super) fn scan(
        &mut self,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, &[u8]) -> bool,
    ) -> io::Result<bool> {
        let to = to.min(self.len);
        let mut at = from;
        while at < to {
            let piece = self.bytes(at, MAX_PIECE.min((to - at) as usize))?;
            let len = piece.len() as u64;
            if !each(at, piece) {
                return Ok(false);
            }
            at += len;
        }
        Ok(true)
    }

    /// Whether the bytes from `from` to `to` (or the file's end) are all zeros.
    pub(super) fn is_zero(&mut self, from: u64, to: u64) -> io::Result<bool> {
        self.scan(from, to, |_, piece| piece.iter().all(|b| *b == 0))
    }

    /// The CRC-32 of the bytes from `from` to `to`.
    pub(super) fn crc(&mut self, from: u64, to: u64) -> io::Result<u32> {
        let mut hasher = crc32fast::Hasher::new();
        self.scan(from, to, |_, piece| {
            hasher.update(piece);
            true
        })?;
        Ok(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_anywhere_in_a_file_larger_than_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * BUFFER + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut reader = SegmentReader::open(&path).unwrap();
        assert_eq!(reader.len(), data.len() as u64);
        for at in [0, 5, BUFFER - 3, 2 * BUFFER + 1, data.len() - 4, data.len()] {
            let got = reader.bytes(at as u64, 9).unwrap().to_vec();
            assert_eq!(got, data[at..(at + 9).min(data.len())], "{at}");
        }
        // Going back after reading ahead.
        assert_eq!(reader.bytes(1, 2).unwrap(), &data[1..3]);
        assert_eq!(
            reader.crc(3, data.len() as u64 - 5).unwrap(),
            crc32fast::hash(&data[3..data.len() - 5])
        );
        assert!(!reader.is_zero(0, data.len() as u64).unwrap());
    }

    #[test]
    fn zeros_are_found_to_the_end_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = vec![0u8; 2 * BUFFER + 100];
        data[10] = 1;
        std::fs::write(&path, &data).unwrap();
        let mut reader = SegmentReader::open(&path).unwrap();
        assert!(reader.is_zero(11, u64::MAX).unwrap());
        assert!(!reader.is_zero(10, u64::MAX).unwrap());
        assert!(reader.is_zero(0, 10).unwrap());
    }
}
