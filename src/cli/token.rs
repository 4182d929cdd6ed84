//! `sensorhub token new`: a new random token, and the tokens-file line that
//! accepts it (its `sha256:` digest, with the scopes asked for).
//!
//! The token is printed once and kept nowhere: the server needs only the
//! line. stdout holds exactly two lines, `token: TOKEN` and the line, so a
//! script takes each with `head`/`tail`; appending the whole output to the
//! tokens file by mistake makes the file refused at the next start or
//! SIGHUP (the first line is not a valid line), never a token that may do
//! more than was asked.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use rand::TryRngCore;
use sensorhub_grpc::auth::tokens_file;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token once, and the line for --tokens-file that accepts it.
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The label the server logs for calls with this token (name=).
    #[arg(long)]
    pub name: Option<String>,
    /// Sensor ids or globs (kitchen-*) the token may write (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub write: Vec<String>,
    /// Sensor ids or globs the token may read (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub read: Vec<String>,
}

/// Random bytes in a token: 256 bits, far beyond guessing or inverting its digest.
const TOKEN_BYTES: usize = 32;

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokenCommand::New(args) => new(args),
    }
}

fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let values = args.name.iter().chain(&args.write).chain(&args.read);
    if values.clone().any(|v| v.chars().any(char::is_whitespace)) {
        anyhow::bail!(
            "--name, --write and --read values must not contain spaces (the tokens file separates fields with them)"
        );
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .context("reading the operating system's random numbers")?;
    let token = tokens_file::hex(&bytes);
    let mut line = format!(
        "sha256:{}",
        tokens_file::hex(&tokens_file::digest(token.as_bytes()))
    );
    if let Some(name) = &args.name {
        line.push_str(&format!(" name={name}"));
    }
    for (key, patterns) in [("write", &args.write), ("read", &args.read)] {
        if !patterns.is_empty() {
            line.push_str(&format!(" {key}={}", patterns.join(",")));
        }
    }
    // The server's own parser judges the line, so what is printed is accepted.
    tokens_file::parse(&line).map_err(|e| anyhow::anyhow!("{}", e.problem))?;
    if args.write.is_empty() && args.read.is_empty() {
        eprintln!(
            "note: no --write or --read: this token may write and read every sensor; name the sensors it needs (--write 'kitchen-*')"
        );
    }
    println!("token: {token}");
    println!("{line}");
    eprintln!(
        "The token above is shown this once: give it to its client (--token or SENSORHUB_TOKEN). Append the last line to the --tokens-file and send the server SIGHUP."
    );
    Ok(ExitCode::SUCCESS)
}
