//! The programs from Debian packages that tests run: each is required, never
//! skipped. A missing one fails the test with the command that installs it
//! (`cargo xtask test`, whose package list is `xtask/src/packages.rs`).
//! `SENSORHUB_TEST_<TOOL>` points at another copy.

use std::path::PathBuf;

fn tool(default: &str, env_var: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "no {}: run `cargo xtask test`, which installs the Debian package {package} \
         (or set {env_var})",
        path.display()
    );
    path
}

pub fn promtool() -> PathBuf {
    tool("/usr/bin/promtool", "SENSORHUB_TEST_PROMTOOL", "prometheus")
}

pub fn prometheus() -> PathBuf {
    tool(
        "/usr/bin/prometheus",
        "SENSORHUB_TEST_PROMETHEUS",
        "prometheus",
    )
}

pub fn amtool() -> PathBuf {
    tool(
        "/usr/bin/amtool",
        "SENSORHUB_TEST_AMTOOL",
        "prometheus-alertmanager",
    )
}

pub fn alertmanager() -> PathBuf {
    tool(
        "/usr/bin/prometheus-alertmanager",
        "SENSORHUB_TEST_ALERTMANAGER",
        "prometheus-alertmanager",
    )
}

pub fn python3() -> PathBuf {
    tool("/usr/bin/python3", "SENSORHUB_TEST_PYTHON3", "python3")
}
