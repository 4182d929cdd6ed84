//! The `--database-url`: parsed once at start into the driver's
//! configuration, with the TLS settings sensorhub understands.
//!
//! Why not hand the URL to tokio-postgres as it is: its `sslmode` knows
//! `disable`, `prefer` and `require` only, and `prefer` silently falls back
//! to plain text. sensorhub takes `disable`, `require` and `verify-full`
//! (libpq's meanings) and `sslrootcert=FILE`, and passes the rest on.
//!
//! Invariant: the password never leaves this module in words. `DatabaseUrl`
//! prints as `postgres://USER@HOST:PORT/DB` (its `Debug` too), and no error
//! made here quotes the URL; tokio-postgres' own `Config` prints the
//! password in its `Debug`, so it is never formatted.

use std::{fmt, path::PathBuf, str::FromStr};

use tokio_postgres::config::{Host, SslMode as DriverSslMode};

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text (a database on the same host or a trusted network).
    Disable,
    /// TLS, without checking whom the certificate names or who signed it:
    /// protects against eavesdropping, not against an impostor (libpq's `require`).
    Require,
    /// TLS, the certificate signed by `sslrootcert` (else the system's
    /// roots) and naming the URL's host.
    VerifyFull,
}

/// A parsed database URL. Cheap to clone.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
    pub(crate) ssl_mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
}

/// Why a database URL was refused; never quotes the URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the database URL is not valid: {0}")]
pub struct UrlError(String);

impl FromStr for DatabaseUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            return Err(UrlError(format!(
                "it must start with postgres:// (got {}); the form is postgres://USER[:PASSWORD]@HOST:PORT/DB",
                match scheme {
                    Some(s) if s.len() <= 20 => format!("{s}://"),
                    _ => "no scheme".to_owned(),
                }
            )));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = SslMode::VerifyFull;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sslmode" => {
                    ssl_mode = match value {
                        "disable" => SslMode::Disable,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(UrlError(format!(
                                "sslmode={} is not one sensorhub takes; use sslmode=disable, require or verify-full",
                                short(other)
                            )));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value)?)),
                _ => rest.push(pair),
            }
        }
        let passed = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&passed)
            // The driver's parse errors name the option, never its value.
            .map_err(|e| UrlError(e.to_string()))?;
        if config.get_user().is_none_or(str::is_empty) {
            return Err(UrlError(
                "it names no user; the form is postgres://USER[:PASSWORD]@HOST:PORT/DB".into(),
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(UrlError(
                "it names no host; the form is postgres://USER[:PASSWORD]@HOST:PORT/DB".into(),
            ));
        }
        if ssl_mode == SslMode::Disable && root_cert.is_some() {
            return Err(UrlError(
                "sslrootcert is given with sslmode=disable; drop one of them".into(),
            ));
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Require | SslMode::VerifyFull => DriverSslMode::Require,
        });
        config.application_name("sensorhub");
        Ok(DatabaseUrl {
            config,
            ssl_mode,
            root_cert,
        })
    }
}

impl DatabaseUrl {
    /// The driver's configuration (holds the password: never format it).
    pub(crate) fn driver_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The database's name (the user's when the URL names none, as in libpq).
    pub fn database(&self) -> &str {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("")
    }

    /// The user the URL names.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("")
    }

    /// The first host and its port (`server.address`, `server.port`).
    pub fn host_and_port(&self) -> (String, u16) {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        (host, port)
    }

    /// `HOST:PORT` of the first host, for messages and telemetry.
    pub fn server(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => format!("{host}:{port}"),
            Some(Host::Unix(path)) => format!("{}:{port}", path.display()),
            None => format!("localhost:{port}"),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}/{}",
            self.user(),
            self.server(),
            self.database()
        )
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("url", &format_args!("{self}"))
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

fn short(value: &str) -> String {
    value.chars().take(20).collect()
}

fn percent_decode(value: &str) -> Result<String, UrlError> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|path| path.into_owned())
        .map_err(|_| UrlError("sslrootcert is not UTF-8 once percent-decoded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let url: DatabaseUrl = "postgres://app:s3cr3t-pw@db.example:6543/readings?sslmode=disable"
            .parse()
            .unwrap();
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("s3cr3t-pw"), "{shown}");
            assert!(
                shown.contains("postgres://app@db.example:6543/readings"),
                "{shown}"
            );
        }
        assert_eq!(url.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn tls_settings_are_taken_and_the_default_verifies() {
        let url: DatabaseUrl = "postgresql://app@h/db".parse().unwrap();
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        let url: DatabaseUrl = "postgres://app@h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem"
            .parse()
            .unwrap();
        assert_eq!(url.ssl_mode, SslMode::Require);
        assert_eq!(url.root_cert, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn bad_urls_say_what_to_fix_without_quoting_them() {
        for (url, says) in [
            ("mysql://app:pw-1@h/db", "must start with postgres://"),
            ("app:pw-1@h/db", "must start with postgres://"),
            (
                "postgres://app:pw-1@h/db?sslmode=prefer",
                "sslmode=prefer is not one",
            ),
            ("postgres://:pw-1@h/db", "names no user"),
        ] {
            let err = url.parse::<DatabaseUrl>().unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("pw-1"), "{url}: {err}");
        }
    }
}
