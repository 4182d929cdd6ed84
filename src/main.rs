//! `sensorhub`: one binary for the server, the simulated sensors, queries,
//! certificates and the all-in-one demo. See `sensorhub --help`.
//!
//! Invariant: this crate is glue. It parses arguments and wires the
//! transport and domain crates together; no RPC or storage logic lives here.

mod cli;
mod logging;
mod simulator;
mod time_arg;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format, cli.command.default_log_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
