//! Loading TLS material from PEM files: the server's into a rustls
//! configuration (the listener does the handshakes, so certificates can be
//! reloaded), the client's into tonic's.
//!
//! rustls speaks TLS 1.2 and 1.3 only; there is nothing older to disable.
//! Errors name the file and what was expected of it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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
    /// Reads the files into a rustls server configuration: TLS 1.2 and 1.3,
    /// ALPN `h2`, and client certificates required when `client_ca` is set.
    /// Called at startup and again on every reload, so a bad file is an
    /// error that names it, never a panic.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
        let err = |what, path: &Path, reason: String| TlsFileError {
            what,
            path: path.to_owned(),
            reason,
        };
        let cert_pem = read_pem(
            &self.cert,
            "the server certificate",
            "-----BEGIN CERTIFICATE-----",
        )?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("the server certificate", &self.cert, e.to_string()))?;
        let key_pem = read_pem(&self.key, "the server private key", "PRIVATE KEY-----")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| err("the server private key", &self.key, e.to_string()))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| err("the server certificate", &self.cert, e.to_string()))?;
        let with_clients = match &self.client_ca {
            None => versions.with_no_client_auth(),
            Some(ca) => {
                let ca_pem = read_pem(
                    ca,
                    "the client CA certificate",
                    "-----BEGIN CERTIFICATE-----",
                )?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&ca_pem) {
                    let cert =
                        cert.map_err(|e| err("the client CA certificate", ca, e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| err("the client CA certificate", ca, e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| err("the client CA certificate", ca, e.to_string()))?;
                versions.with_client_cert_verifier(verifier)
            }
        };
        let mut config = with_clients.with_single_cert(chain, key).map_err(|e| {
            err(
                "the server certificate and key",
                &self.cert,
                format!("{e} (does the key belong to the certificate?)"),
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
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
