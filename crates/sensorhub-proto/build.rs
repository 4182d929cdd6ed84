//! Compiles `proto/sensor.proto` without a system `protoc`: protox parses it
//! into a descriptor set, which feeds both code generation and (written to
//! OUT_DIR) the reflection service.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto_file = proto_dir.join("sensor.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let descriptors = protox::compile([&proto_file], [&proto_dir])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("sensor_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Connections are the transport crate's business, not the contract's.
        .build_transport(false)
        // prost with buffers sized for small messages (src/codec.rs).
        .codec_path("crate::codec::CompactCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
