//! A real Prometheus for tests: the Debian `prometheus` binary started on a
//! free port with a given configuration and its own TSDB directory, killed
//! (and waited for) when dropped.

use std::{
    fs::File,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
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

    /// One HTTP/1.0 GET (so never a chunked body) to its web port: status
    /// and body; `None` while nothing listens yet.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.web)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(tcp, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// Whether it answers `/-/ready` with 200.
    pub fn ready(&self) -> bool {
        self.get("/-/ready")
            .is_some_and(|(status, _)| status == 200)
    }

    /// An instant query: the `data.result` array, or the error Prometheus gave.
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
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

/// Percent-encodes a query-string value: everything but unreserved characters.
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
