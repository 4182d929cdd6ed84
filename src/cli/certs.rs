//! `sensorhub certs`: a CA plus server and client certificates.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use sensorhub_pki as pki;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, server.pem, server.key, client.pem, client.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// Extra DNS name or IP address for the server certificate (repeatable).
    /// Always included: localhost, 127.0.0.1, ::1, grpc-server.
    #[arg(long = "name")]
    pub names: Vec<String>,
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let bundle = pki::generate(&args.names).context("generating certificates")?;
    let files = bundle
        .write_to(&args.out)
        .with_context(|| format!("writing certificates to {}", args.out.display()))?;
    println!(
        "wrote {} (CA), {} + {} (server), {} + {} (client); keys are mode 0600",
        files.ca_cert.display(),
        files.server_cert.display(),
        files.server_key.display(),
        files.client_cert.display(),
        files.client_key.display()
    );
    Ok(ExitCode::SUCCESS)
}
