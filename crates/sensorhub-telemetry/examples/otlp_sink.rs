//! An OTLP receiver (gRPC and HTTP/protobuf) that decodes, answers and
//! counts every export request and keeps nothing, for benchmarks that need a
//! real export target: a Collector runs on its own machine, and a receiver
//! that kept what it received (the tests') would take the shared cores from
//! the server it measures.
//! `cargo run --release -p sensorhub-telemetry --features test-util --example otlp_sink`.
//! Prints its two endpoints, then the request and item counts every 10 s.

use std::time::Duration;

use sensorhub_telemetry::otlp_receiver::OtlpReceiver;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let receiver = OtlpReceiver::start_counting().await?;
    println!("grpc {}", receiver.grpc_endpoint());
    println!("http {}", receiver.http_endpoint());
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (requests, items) = (receiver.requests(), receiver.items());
        // Per 10 s window.
        receiver.clear();
        eprintln!("{requests:?} {items:?}");
    }
}
