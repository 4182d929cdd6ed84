//! The codec every generated client and server uses: prost, with per-call
//! buffers sized for sensorhub's messages.
//!
//! tonic allocates an encode and a decode buffer for every call and stream,
//! 8 KiB each by default. sensorhub's messages are tens of bytes, and a server
//! holds thousands of chat streams: those buffers were 60 of the 145 MiB that
//! 10,000 chats held, and the largest allocation of each unary call. The buffers
//! start at [`BUFFER_SIZE`] and still grow for a larger message or a batch of
//! streamed ones; the yield threshold (how much a server stream gathers before
//! one write) is tonic's default.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The initial size of a call's encode and decode buffers, in bytes.
pub const BUFFER_SIZE: usize = 1024;

/// How much a server stream gathers before one write: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers; the generated code names it
/// (`codec_path` in `build.rs`).
#[derive(Debug)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}
