//! Running real Python grpcio programs from tests: the interpreter
//! (`$SENSORHUB_TEST_PYTHON`, else `python3`), a check that the modules a
//! test needs import (a missing one fails the test loudly, it never skips),
//! and children that are killed rather than left hanging.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use tokio::process::Command;

pub const REQUIREMENTS_HINT: &str =
    "run `cargo xtask test`, which makes a venv from tests/python/requirements.txt";

pub fn python() -> String {
    std::env::var("SENSORHUB_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` to completion; `None` if it had to be killed at `timeout`.
pub async fn run(mut cmd: Command, timeout: Duration) -> Option<Output> {
    let program = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}\n{REQUIREMENTS_HINT} (or set SENSORHUB_TEST_PYTHON)")
        });
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .ok()
        .map(|output| output.expect("wait for child"))
}

/// Panics, saying how to install them, unless `modules` import.
pub async fn require_modules(modules: &[&str]) {
    let python = python();
    let mut probe = Command::new(&python);
    probe.args(["-c", &format!("import {}", modules.join(", "))]);
    let probe = run(probe, Duration::from_secs(30)).await;
    assert!(
        probe.as_ref().is_some_and(|p| p.status.success()),
        "Python modules {modules:?} are not importable with `{python}` (set SENSORHUB_TEST_PYTHON to choose the interpreter).\n\
         {REQUIREMENTS_HINT}\n--- stderr ---\n{}",
        probe.map(|p| text(&p.stderr)).unwrap_or_default()
    );
}

/// A command running `script` (a path inside the repository) with the test interpreter.
pub fn script(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_path(script))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}
