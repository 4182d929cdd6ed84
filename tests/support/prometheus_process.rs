//! A real Prometheus for tests: the Debian `prometheus` binary started on a
//! free port with a given configuration and its own TSDB directory, killed
//! (and waited for) when dropped.

#![allow(dead_code)]

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
};

/// A running Prometheus.
pub struct PrometheusProcess {
    child: Child,
    /// The port of its web UI and HTTP API, on 127.0.0.1.
    pub web: u16,
    log: PathBuf,
}

impl PrometheusProcess {
    /// Starts `binary` with `config`; the TSDB and the log go under `dir`.
    pub fn start(binary: &Path, config: &Path, dir: &Path) -> PrometheusProcess {
        let web = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create the Prometheus log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        PrometheusProcess { child, web, log }
    }

    /// `Some` once the process has exited (it should not, during a test).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the Prometheus process")
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
