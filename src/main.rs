//! `sensorhub`: one binary for the server, the simulated sensors, queries,
//! certificates and the all-in-one demo. See `sensorhub --help`.
//!
//! Invariant: this crate is glue. It parses arguments and wires the
//! transport, domain and telemetry crates together; no RPC, storage or
//! exporter logic lives here.

mod cli;
mod simulator;
mod time_arg;

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use sensorhub_telemetry::pipeline::Telemetry;

/// jemalloc rather than glibc's malloc: less CPU per call and less growth under a
/// long mixed load, measured in BENCHMARKS.md ("Codec buffers and the
/// allocator").
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long shutdown waits for the last telemetry to be exported.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        // Inside the runtime: the OTLP/gRPC exporter needs one.
        let telemetry = match Telemetry::init(cli.pipeline_options()) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("error: telemetry: {e}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = cli.command.run(&telemetry).await;
        telemetry.shutdown(TELEMETRY_FLUSH).await;
        match outcome {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    });
    // A telemetry flush abandoned after its timeout (a black-holed collector)
    // may still occupy a blocking thread: do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}
