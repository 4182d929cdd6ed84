//! Counting gRPC messages and their sizes from the HTTP/2 DATA frames of a
//! body, without decoding anything.
//!
//! A gRPC message on the wire is a 5-byte prefix (compressed flag, 4-byte
//! big-endian length) and the payload; DATA frames may split or join messages
//! anywhere. A66 wants the compressed payload sizes without the prefix, so we
//! follow the prefixes and add up the lengths they announce.
//!
//! [`FrameParser`] is public: the transport's call policy follows the same
//! prefixes to see a unary request's second message.

use std::sync::atomic::{AtomicU64, Ordering};

/// The position in a gRPC message stream: inside a prefix or inside a payload.
#[derive(Debug, Default)]
pub struct FrameParser {
    prefix: [u8; 5],
    prefix_len: usize,
    payload_left: u64,
}

impl FrameParser {
    /// Feeds one DATA chunk; returns (messages started, payload bytes they announce).
    pub fn feed(&mut self, mut chunk: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(chunk.len() as u64);
                self.payload_left -= skip;
                chunk = &chunk[skip as usize..];
                continue;
            }
            let take = (5 - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk = &chunk[take..];
            if self.prefix_len == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as u64;
                messages += 1;
                bytes += len;
                self.payload_left = len;
                self.prefix_len = 0;
            }
        }
        (messages, bytes)
    }
}

/// Messages and bytes seen on one direction of a call. Atomic because the
/// request body is read by the handler while the response body ends the call.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl Tally {
    pub(crate) fn add(&self, (messages, bytes): (u64, u64)) {
        if messages > 0 {
            self.messages.fetch_add(messages, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            out.push(0);
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn counts_messages_whole_and_split_at_every_byte() {
        let wire = framed(&[b"hello", b"", &[7u8; 300]]);
        let mut whole = FrameParser::default();
        assert_eq!(whole.feed(&wire), (3, 305));
        for cut in 0..wire.len() {
            let mut parser = FrameParser::default();
            let (m1, b1) = parser.feed(&wire[..cut]);
            let (m2, b2) = parser.feed(&wire[cut..]);
            assert_eq!((m1 + m2, b1 + b2), (3, 305), "cut at {cut}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let wire = framed(&[b"abc", b"defgh"]);
        let mut parser = FrameParser::default();
        let total = wire
            .iter()
            .map(|b| parser.feed(std::slice::from_ref(b)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        assert_eq!(total, (2, 8));
    }
}
