//! The Debian packages the tests use, and installing the missing ones.
//!
//! This list is the one place to extend when a test needs another system
//! program. A package is checked with `dpkg-query`, installed with `apt-get`
//! as root or through `sudo -n`; without either, the run stops with one line
//! that names what to install, because a test that quietly skipped its
//! component would pass without testing it.

use std::process::{Command, Stdio};

/// A Debian package and what needs it.
pub struct Package {
    pub name: &'static str,
    pub used_for: &'static str,
}

pub const PACKAGES: &[Package] = &[
    Package {
        name: "make",
        used_for: "building jemalloc, the binary's default allocator",
    },
    Package {
        name: "python3-venv",
        used_for: "the venv of the grpcio client in tests/it/python_interop.rs",
    },
    Package {
        name: "prometheus",
        used_for: "promtool and a real Prometheus (tests/it/telemetry_prometheus.rs, tests/it/deploy_*.rs)",
    },
    Package {
        name: "prometheus-alertmanager",
        used_for: "amtool and Alertmanager (tests/it/deploy_rules.rs, tests/it/deploy_scripts.rs)",
    },
    Package {
        name: "postgresql-15",
        used_for: "a real PostgreSQL server for the store tests",
    },
    Package {
        name: "chromium",
        used_for: "a real browser for the web UI tests",
    },
    Package {
        name: "chromium-driver",
        used_for: "WebDriver for that browser",
    },
    Package {
        name: "nginx",
        used_for: "a real reverse proxy in front of the server",
    },
];

/// Installs what [`PACKAGES`] lists and this machine lacks, or says in one
/// line what to install.
pub fn ensure_installed() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|package| !installed(package.name))
        .map(|package| package.name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.join(" ");
    let Some(sudo) = privilege() else {
        return Err(format!(
            "missing Debian packages: {names} (as root: apt-get install {names}), then run `cargo xtask test` again"
        ));
    };
    for package in PACKAGES.iter().filter(|p| missing.contains(&p.name)) {
        eprintln!("xtask: installing {}: {}", package.name, package.used_for);
    }
    apt_get(sudo, &["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    apt_get(sudo, &install)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"ii"))
}

/// `Some(false)` as root, `Some(true)` when `sudo` works without a
/// password, `None` when packages cannot be installed from here.
fn privilege() -> Option<bool> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Some(false);
    }
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    sudo.is_ok_and(|s| s.success()).then_some(true)
}

fn apt_get(sudo: bool, args: &[&str]) -> Result<(), String> {
    let mut command = if sudo {
        let mut command = Command::new("sudo");
        command.arg("apt-get");
        command
    } else {
        Command::new("apt-get")
    };
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    crate::run(&mut command)
}
