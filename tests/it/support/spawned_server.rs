//! `sensorhub serve` as a child process, for tests of what only a whole
//! process shows: its exported telemetry, `/metrics`, its signals, its
//! shutdown, its log.
//!
//! Every server listens on port 0 and reports the ports it got through
//! `--ready-file`, so no test guesses a free port. A server that exits
//! before it is ready fails the test at once, with its log. The log (stderr)
//! goes to a file, readable while the server runs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use sensorhub_grpc::{ClientConfig, SensorClient};

pub const BIN: &str = env!("CARGO_BIN_EXE_sensorhub");

/// How long a server may take to bind its listeners.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A `sensorhub` command without the inherited settings that would change
/// what it exports (`OTEL_*`, `RUST_LOG`).
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    clean_env(&mut command);
    command
}

/// `sensorhub <args>` run to completion.
pub fn sensorhub(args: &[&str]) -> Output {
    command().args(args).output().expect("run sensorhub")
}

/// Removes inherited settings that would change what a child process exports.
pub fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

/// A plaintext client of `url` that sends `token`.
pub async fn client(url: &str, token: &str) -> SensorClient {
    let mut config = ClientConfig::new(url);
    config.token = Some(token.to_owned());
    sensorhub_grpc::connect(&config).await.expect("connect")
}

/// A `sensorhub serve` command being put together; [`Serve::start`] runs it.
pub struct Serve {
    command: Command,
    dir: tempfile::TempDir,
}

impl Serve {
    /// `sensorhub serve` with gRPC and HTTP on port 0 of 127.0.0.1. The rest
    /// (TLS or `--insecure`, tokens, data) is the caller's.
    pub fn new() -> Serve {
        let mut serve = Serve::without_listen_flags();
        serve
            .command
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
        serve
    }

    /// `sensorhub serve` with the ready file only: the caller says where it
    /// listens (flags or `SENSORHUB_LISTEN`/`SENSORHUB_HTTP`, port 0).
    pub fn without_listen_flags() -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = command();
        command
            .arg("serve")
            .arg("--ready-file")
            .arg(dir.path().join("ready"));
        Serve { command, dir }
    }

    /// Plaintext with one token and a durable store in `data`, as most
    /// process tests run it.
    pub fn insecure(data: &Path, token: &str) -> Serve {
        let mut serve = Serve::new();
        serve
            .command
            .args(["--insecure", "--shutdown-grace", "2s"])
            .arg("--data")
            .arg(data)
            .env("SENSORHUB_TOKENS", token);
        serve
    }

    /// Plaintext with one token, the readings in the PostgreSQL database at
    /// `url` (given through `SENSORHUB_DATABASE_URL`, as a password should be).
    pub fn insecure_on_database(url: &str, token: &str) -> Serve {
        let mut serve = Serve::new();
        serve
            .command
            .args(["--insecure", "--shutdown-grace", "2s"])
            .env("SENSORHUB_DATABASE_URL", url)
            .env("SENSORHUB_TOKENS", token);
        serve
    }

    /// The command, to add flags and environment.
    pub fn command(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Starts the server and waits until both listeners are bound; fails the
    /// test with the log if it exits first.
    pub fn start(self) -> SpawnedServer {
        match self.start_or_exit() {
            Ok(server) => server,
            Err(exited) => panic!(
                "sensorhub serve exited before it was ready ({}):\n{}",
                exited.status, exited.log
            ),
        }
    }

    /// Starts the server: `Ok` once it is ready, `Err` if it exits first
    /// (for tests of servers that must refuse to start).
    pub fn start_or_exit(mut self) -> Result<SpawnedServer, Exited> {
        let log = self.dir.path().join("serve.log");
        let child = self
            .command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the server log"))
            .spawn()
            .expect("spawn sensorhub serve");
        let mut server = SpawnedServer {
            child: Some(child),
            grpc: 0,
            http: 0,
            log,
            _dir: self.dir,
        };
        let ready = server._dir.path().join("ready");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = server.child_mut().try_wait().expect("poll the server") {
                server.child = None;
                return Err(Exited {
                    status,
                    log: server.log(),
                });
            }
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let (grpc, http) = parse_ready_file(&text);
                server.grpc = grpc.port();
                server.http = http
                    .unwrap_or_else(|| panic!("the server reported no HTTP listener: {text}"))
                    .port();
                return Ok(server);
            }
            assert!(
                Instant::now() < deadline,
                "sensorhub serve was not ready within {START_LIMIT:?}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `serve`, which must refuse to start: checks that it printed one
/// `error:` line containing `says` and never `password`; returns the line.
pub fn refused_at_start(serve: Serve, says: &str, password: &str) -> String {
    let exited = match serve.start_or_exit() {
        Ok(_) => panic!("the server started; it should have refused: {says}"),
        Err(exited) => exited,
    };
    assert!(!exited.status.success());
    let error: Vec<&str> = exited
        .log
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(error.len(), 1, "one error line:\n{}", exited.log);
    assert!(error[0].contains(says), "{says:?} in:\n{}", exited.log);
    assert!(
        !exited.log.contains(password),
        "the password reached the log:\n{}",
        exited.log
    );
    error[0].to_owned()
}

/// A server that exited before it was ready.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
}

/// The `grpc=` and `http=` lines `--ready-file` writes.
fn parse_ready_file(text: &str) -> (SocketAddr, Option<SocketAddr>) {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(|addr| {
                addr.parse()
                    .unwrap_or_else(|e| panic!("ready file: {key}={addr}: {e}"))
            })
    };
    (
        field("grpc").unwrap_or_else(|| panic!("ready file without grpc=: {text}")),
        field("http"),
    )
}

/// A running `sensorhub serve`: its gRPC and HTTP ports, its log.
pub struct SpawnedServer {
    /// `None` once it has exited or [`SpawnedServer::terminate`] took it.
    child: Option<Child>,
    pub grpc: u16,
    pub http: u16,
    log: PathBuf,
    /// Holds the log and the ready file.
    _dir: tempfile::TempDir,
}

impl SpawnedServer {
    /// `sensorhub serve --insecure` with `token` and a store in `data`, `env`
    /// added to a clean telemetry environment.
    pub fn start(data: &Path, token: &str, env: &[(&str, String)]) -> SpawnedServer {
        let mut serve = Serve::insecure(data, token);
        serve.command().envs(env.iter().map(|(k, v)| (k, v)));
        serve.start()
    }

    /// A replica: `sensorhub serve --insecure` with `token`, the readings in
    /// the PostgreSQL database at `url`.
    pub fn start_on_database(url: &str, token: &str, env: &[(&str, String)]) -> SpawnedServer {
        let mut serve = Serve::insecure_on_database(url, token);
        serve.command().envs(env.iter().map(|(k, v)| (k, v)));
        serve.start()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`HUP`, `TERM`, `KILL`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `count` lines containing `needle`; the log.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.lines().filter(|l| l.contains(needle)).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {count} log lines with {needle:?} within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's resident memory now, in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        self.proc_status_kib("VmRSS:") * 1024
    }

    /// The most resident memory the server has had so far, in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.proc_status_kib("VmHWM:") * 1024
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("a {field} line"))
    }

    /// The server's open file descriptors now (Linux `/proc`).
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// The CPU time the server has used so far, user and system, in clock
    /// ticks (Linux `/proc/PID/stat`, usually 100 a second).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("a command name")
            .1
            .split_whitespace()
            .collect();
        let field = |i: usize| fields[i].parse::<u64>().expect("a tick count");
        // utime and stime, fields 14 and 15 of the whole line.
        field(11) + field(12)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Unary calls (`SendSingleReading`) the server has started, from its
    /// own `/metrics`: the calls a balancing client sent it.
    pub fn unary_calls_started(&self) -> f64 {
        let (status, page) = super::http::get(self.http, "/metrics");
        assert_eq!(status, 200, "{page}");
        page.lines()
            .filter(|l| {
                l.starts_with("grpc_server_call_started_total{")
                    && l.contains("SensorService/SendSingleReading")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then waits (at most `limit`) for the exit: its status and
    /// log (as `stderr`), and how long it took.
    pub fn terminate(mut self, limit: Duration) -> (Output, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {limit:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = started.elapsed();
        let output = Output {
            status,
            stdout: Vec::new(),
            stderr: self.log().into_bytes(),
        };
        (output, elapsed)
    }
}

/// A test that fails half-way must not leave a server running.
impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
