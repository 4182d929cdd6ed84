//! A real Prometheus for tests: the Debian `prometheus` binary started on
//! port 0 with a given configuration and its own TSDB directory, killed (and
//! waited for) when dropped. [`listening_port`] reads the port it got from
//! its log, as for Alertmanager, which logs the same way.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::http;

/// The port a Prometheus-project program (Prometheus, Alertmanager) got for
/// `--web.listen-address=127.0.0.1:0`, from its log line
/// `msg="Listening on" address=127.0.0.1:PORT`. Fails at once, with the
/// log, if the program exits first.
pub fn listening_port(child: &mut Child, log: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text
            .lines()
            .filter(|line| line.contains(r#"msg="Listening on""#))
            .find_map(|line| {
                line.split("address=")
                    .nth(1)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            });
        if let Some(port) = port {
            return port;
        }
        if let Some(exit) = child.try_wait().expect("poll the child") {
            panic!(
                "{} exited ({exit}) before it listened:\n{text}",
                log.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no \"Listening on\" in {} within 30 s:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
        Self::start_with(binary, config, dir, &[])
    }

    /// [`PrometheusProcess::start`] with more flags
    /// (`--enable-feature=exemplar-storage`).
    pub fn start_with(
        binary: &Path,
        config: &Path,
        dir: &Path,
        flags: &[&str],
    ) -> PrometheusProcess {
        let log = dir.join("prometheus.log");
        let mut child = Command::new(binary)
            .args(flags)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create the Prometheus log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let web = listening_port(&mut child, &log);
        PrometheusProcess { child, web, log }
    }

    /// `Some` once the process has exited (it should not, during a test).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the Prometheus process")
    }

    /// A GET to its web port: status and body; `None` while it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http::try_get(self.web, path)
    }

    /// Whether it answers `/-/ready` with 200.
    pub fn ready(&self) -> bool {
        self.get("/-/ready")
            .is_some_and(|(status, _)| status == 200)
    }

    /// An instant query: the `data.result` array, or the error Prometheus gave.
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", http::query_value(promql));
        let (status, body) = self.get(&path).ok_or("no answer")?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        json["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no data.result in {body}"))
    }

    /// The exemplars of `promql` between `start` and `end` (Unix seconds):
    /// `/api/v1/query_exemplars`'s `data` array, or the error it gave.
    pub fn query_exemplars(
        &self,
        promql: &str,
        start: f64,
        end: f64,
    ) -> Result<Vec<serde_json::Value>, String> {
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={start}&end={end}",
            http::query_value(promql)
        );
        let (status, body) = self.get(&path).ok_or("no answer")?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        json["data"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no data in {body}"))
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
