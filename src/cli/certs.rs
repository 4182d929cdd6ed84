//! `sensorhub certs`: a CA plus server and client certificates, and
//! (`--client NAME`) more client certificates from that CA, each named for
//! a `cert:NAME` line of the server's tokens file.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use sensorhub_pki::{self as pki, BundleFiles};

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, server.pem, server.key, client.pem, client.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// Also keep the CA's key as ca.key (mode 0600), to issue client
    /// certificates later with --client. Whoever holds it can sign server and
    /// client certificates the CA's users trust: keep it off the server.
    #[arg(long, conflicts_with = "clients")]
    pub keep_ca_key: bool,
    /// Extra DNS name or IP address for the server certificate (repeatable).
    /// Always included: localhost, 127.0.0.1, ::1, grpc-server.
    #[arg(long = "name", conflicts_with = "clients")]
    pub names: Vec<String>,
    /// Issue a client certificate named NAME (its DNS SAN and CN) from the CA
    /// already in --out, as NAME.pem and NAME.key (repeatable). Nothing else
    /// is written. The server maps it with a `cert:NAME` line.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    if !args.clients.is_empty() {
        return issue_clients(&args);
    }
    let bundle = pki::generate(&args.names).context("generating certificates")?;
    let files = bundle
        .write_to(&args.out)
        .with_context(|| format!("writing certificates to {}", args.out.display()))?;
    let ca_key = if args.keep_ca_key {
        let path = bundle
            .write_ca_key(&args.out)
            .with_context(|| format!("writing the CA's key to {}", args.out.display()))?;
        format!(
            " + {} (keep it off the server and the sensors)",
            path.display()
        )
    } else {
        String::new()
    };
    println!(
        "wrote {}{ca_key} (CA), {} + {} (server), {} + {} (client); keys are mode 0600",
        files.ca_cert.display(),
        files.server_cert.display(),
        files.server_key.display(),
        files.client_cert.display(),
        files.client_key.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn issue_clients(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let files = BundleFiles::in_dir(&args.out);
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| {
            format!(
                "--client needs the CA and its key in --out: cannot read {} (make them with `sensorhub certs --out {} --keep-ca-key`; a CA made without it has no key to sign with)",
                path.display(),
                args.out.display()
            )
        })
    };
    let (ca_cert, ca_key) = (read(&files.ca_cert)?, read(&files.ca_key)?);
    for name in &args.clients {
        let (cert, key) = pki::issue_client(&ca_cert, &ca_key, name).map_err(|e| {
            anyhow::anyhow!(
                "cannot issue a client certificate for `{name}`: {e} (a name is a DNS name: letters, digits, `-` and `.`)"
            )
        })?;
        let (cert_path, key_path) = pki::write_client(&args.out, name, &cert, &key)
            .with_context(|| format!("writing {name}'s certificate to {}", args.out.display()))?;
        println!(
            "wrote {} + {} (client `{name}`; the key is mode 0600); map it with the tokens-file line `cert:{name} write=…`",
            cert_path.display(),
            key_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
