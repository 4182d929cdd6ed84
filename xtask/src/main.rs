//! `cargo xtask test`: the README's test command. On a fresh Debian machine
//! with only the Rust toolchain it installs what the tests use (see
//! `packages.rs`), makes the Python venv under `target/`, and then runs
//! `cargo fmt --check`, clippy with `-D warnings` and the whole test suite,
//! stopping at the first that fails. `.ci/run` calls exactly this, so CI
//! checks what a newcomer runs.
//!
//! Arguments after `test` go to `cargo test` (`cargo xtask test follow::`).

mod packages;
mod venv;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

const USAGE: &str = "usage: cargo xtask test [ARGS for cargo test]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn test(test_args: Vec<String>) -> Result<(), String> {
    let root = workspace_root();
    let target = target_dir(&root);
    packages::ensure_installed()?;
    let python = venv::ensure(&root, &target)?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo = || {
        let mut command = Command::new(&cargo);
        command
            .current_dir(&root)
            .env("SENSORHUB_TEST_PYTHON", &python);
        command
    };
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .args(["test", "--workspace", "--locked"])
        .args(test_args))
}

/// Runs `command` with inherited output; an error naming it unless it succeeds.
pub fn run(command: &mut Command) -> Result<(), String> {
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("xtask: {shown}");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// The checkout this run is for. `cargo run` (the `cargo xtask` alias) sets
/// `CARGO_MANIFEST_DIR` for the binary it starts, so a binary built in
/// another checkout (a `target/` copied from it, whose build cargo kept)
/// still works on this one; the path compiled in is the fallback.
fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask/ lies in the workspace root")
        .to_owned()
}

/// `CARGO_TARGET_DIR` when set (relative to the root, as cargo reads it),
/// else `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
