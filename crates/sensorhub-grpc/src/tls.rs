//! Loading TLS material from PEM files into tonic's rustls configuration.
//!
//! rustls speaks TLS 1.2 and 1.3 only; there is nothing older to disable.
//! Errors name the file and what was expected of it.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The server side: its certificate chain and key, and optionally the CA
/// that client certificates must chain to (mutual TLS).
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The client side: the CA to trust, and optionally a client certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to check the server certificate against, if not the URL's host.
    pub domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} from {path}: {reason}")]
pub struct TlsFileError {
    what: &'static str,
    path: PathBuf,
    reason: String,
}

fn read_pem(path: &Path, what: &'static str, marker: &str) -> Result<Vec<u8>, TlsFileError> {
    let err = |reason: String| TlsFileError {
        what,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(err(format!(
            "no `{marker}` block found; expected a PEM file"
        )));
    }
    Ok(bytes)
}

impl ServerTlsFiles {
    pub fn load(&self) -> Result<ServerTlsConfig, TlsFileError> {
        let cert = read_pem(
            &self.cert,
            "the server certificate",
            "-----BEGIN CERTIFICATE-----",
        )?;
        let key = read_pem(&self.key, "the server private key", "PRIVATE KEY-----")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            let ca = read_pem(
                ca,
                "the client CA certificate",
                "-----BEGIN CERTIFICATE-----",
            )?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(config)
    }
}

impl ClientTlsFiles {
    pub fn load(&self) -> Result<ClientTlsConfig, TlsFileError> {
        let mut config = ClientTlsConfig::new();
        match &self.ca {
            Some(ca) => {
                let ca = read_pem(ca, "the CA certificate", "-----BEGIN CERTIFICATE-----")?;
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            None => config = config.with_enabled_roots(),
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let cert = read_pem(
                cert,
                "the client certificate",
                "-----BEGIN CERTIFICATE-----",
            )?;
            let key = read_pem(key, "the client private key", "PRIVATE KEY-----")?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}
