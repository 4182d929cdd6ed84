//! An OTLP receiver (gRPC and HTTP/protobuf) that accepts and counts
//! everything, for benchmarks that need a real export target:
//! `cargo run --release -p sensorhub-telemetry --features test-util --example otlp_sink`.
//! Prints its two endpoints, then the request counts every 10 s.

use std::time::Duration;

use sensorhub_telemetry::otlp_receiver::OtlpReceiver;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    println!("grpc {}", receiver.grpc_endpoint());
    println!("http {}", receiver.http_endpoint());
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let counts = receiver.requests();
        // Per 10 s window; clearing keeps memory flat over long runs.
        receiver.clear();
        eprintln!("{counts:?}");
    }
}
