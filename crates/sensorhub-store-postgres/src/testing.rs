//! A real PostgreSQL for tests (feature `test-util`): one server per test
//! binary, started from Debian's binaries on first use, one fresh database
//! per test.
//!
//! Why one server and many databases: initdb takes seconds, a database
//! takes milliseconds, and databases are isolated as tests need.
//!
//! Why a watcher shell: a test binary's statics are never dropped, so the
//! server is started by `sh`, which waits on a pipe from this process; when
//! the process ends (however it ends), the pipe closes and the shell stops
//! the server (immediate shutdown: its files go next) and removes its
//! directory. Nothing outlives the test run.
//!
//! The server runs with `fsync=off`: no test crashes the machine, and on a
//! shared machine the flushes only slow the suite. Commits still wait for
//! PostgreSQL (`synchronous_commit` stays on), which is what a replica's
//! acknowledgement waits for.
//!
//! The server listens on 127.0.0.1 on a port it is given: PostgreSQL
//! cannot pick one itself. A port already taken makes it exit at once
//! ("could not bind"), and then another is tried; none is probed and
//! released first.
//!
//! Invariant: no test skips for want of PostgreSQL; it fails naming the
//! command that installs it (`cargo xtask test`).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The superuser's password in the test cluster (host connections use
/// scram-sha-256, so a wrong one is refused as in production).
pub const PASSWORD: &str = "sensorhub-test-pw-7f3a";

/// The shared test server.
#[derive(Debug)]
pub struct TestPostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    next: AtomicU64,
    /// `-c name=value` settings beyond the common ones (TLS).
    extra: String,
    /// The watcher's stdin: the server lives as long as this process.
    _watcher: Mutex<Child>,
}

impl TestPostgres {
    /// A server of the caller's own, for a test that stops and starts it
    /// (the shared one serves every other test). Ends with the test process.
    pub fn start_own() -> TestPostgres {
        start(None).unwrap_or_else(|why| panic!("{why}"))
    }

    /// A server of the caller's own that also speaks TLS (`ssl=on`) with
    /// this certificate and key (PEM); plain connections are still taken,
    /// so `sslmode=disable` works too. Ends with the test process.
    pub fn start_own_with_tls(cert_pem: &str, key_pem: &str) -> TestPostgres {
        start(Some((cert_pem, key_pem))).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Stops the server (fast shutdown), as an operator or a crash would
    /// take it away; [`TestPostgres::restart`] brings it back on the same port.
    pub fn stop(&self) {
        let status = as_server_user(&self.bin.join("pg_ctl"), is_root())
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }

    /// Starts the stopped server again, on the same port and data. The
    /// watcher stops this one too when the test process ends (it reads the
    /// server's pid file).
    pub fn restart(&self) {
        let options = format!(
            "-k {} -p {} {COMMON_SETTINGS}{}",
            self.dir.display(),
            self.port,
            self.extra
        );
        let status = as_server_user(&self.bin.join("pg_ctl"), is_root())
            .args(["start", "-w", "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("restarted.log"))
            .arg("-o")
            .arg(options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static TestPostgres {
        static SERVER: OnceLock<TestPostgres> = OnceLock::new();
        SERVER.get_or_init(|| start(None).unwrap_or_else(|why| panic!("{why}")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory the server's files and socket are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for the superuser on `database`.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Runs `sql` with psql as the superuser on `database`.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// A new, empty database; returns its name.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        name
    }

    /// A URL of a new, empty database.
    pub fn fresh_url(&self) -> String {
        self.url_for(&self.fresh_database())
    }
}

/// What every test server runs with (see the module's docs for `fsync`).
const COMMON_SETTINGS: &str = "-c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=32MB -c fsync=off -c full_page_writes=off";

/// The newest PostgreSQL server binaries Debian installed.
fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SENSORHUB_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL's server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb): run `cargo xtask test`, which installs the postgresql package".to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program args…`, as the postgres user when we are root (initdb refuses root).
fn as_server_user(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Starts a server; with `tls`, its certificate and key (PEM) are written
/// beside the data (the key mode 0600, as PostgreSQL demands) and `ssl=on`.
fn start(tls: Option<(&str, &str)>) -> Result<TestPostgres, String> {
    let bin = binaries()?;
    let root = is_root();
    // Not a 0700 directory of root's: the postgres user must reach it.
    let dir = std::env::temp_dir().join(format!(
        "sensorhub-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
    let mut extra = String::new();
    if let Some((cert, key)) = tls {
        use std::os::unix::fs::PermissionsExt;
        let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_file, cert).map_err(|e| e.to_string())?;
        std::fs::write(&key_file, key).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        extra = format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert_file.display(),
            key_file.display()
        );
    }
    if root {
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.success() {
            return Err(format!("chown postgres {} failed", dir.display()));
        }
    }
    let data = dir.join("data");
    let init = as_server_user(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let mut seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + (seed >> 33) as u16 % 40_000;
        if let Some(watcher) = try_start(&bin, &dir, &data, port, root, &extra)? {
            return Ok(TestPostgres {
                port,
                dir,
                bin,
                next: AtomicU64::new(0),
                extra,
                _watcher: Mutex::new(watcher),
            });
        }
    }
    Err("PostgreSQL could not bind any of 20 ports tried".into())
}

/// Starts the server on `port` under a watcher; `None` if the port was taken.
fn try_start(
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    root: bool,
    extra: &str,
) -> Result<Option<Child>, String> {
    let log = dir.join("server.log");
    let runner = if root { "runuser -u postgres -- " } else { "" };
    // $1 postgres, $2 data, $3 dir, $4 port, $5 log. The server stops
    // when stdin closes, i.e. when the test process is gone.
    let script = format!(
        r#"{runner}"$1" -D "$2" -k "$3" -p "$4" {COMMON_SETTINGS}{extra} >"$5" 2>&1 &
server=$!
cat >/dev/null
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null) && kill -QUIT "$pid" 2>/dev/null
wait "$server"
rm -rf "$3""#
    );
    let mut watcher = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(bin.join("postgres"))
        .arg(data)
        .arg(dir)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the PostgreSQL watcher: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&log) {
            let _ = f.read_to_string(&mut text);
        }
        if text.contains("database system is ready to accept connections") {
            return Ok(Some(watcher));
        }
        if text.contains("could not bind") || text.contains("Address already in use") {
            // The server has exited; end the watcher without its clean-up,
            // which would remove the data directory another port reuses.
            let _ = watcher.kill();
            let _ = watcher.wait();
            let _ = std::fs::remove_file(&log);
            return Ok(None);
        }
        if text.contains("FATAL") || Instant::now() > deadline {
            return Err(format!("PostgreSQL did not start: {text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
