//! A small certificate authority for sensorhub deployments (`sensorhub certs`).
//!
//! The original system used one self-signed `CN=grpc-server` certificate with
//! no subject alternative names; rustls (rightly) rejects that. This makes a
//! real CA and leaf certificates signed by it: a server certificate whose
//! SANs cover `localhost`, `127.0.0.1`, `::1`, `grpc-server` and any extra
//! names, and a client certificate for mutual TLS.
//!
//! The CA's key is dropped unless asked for ([`Bundle::write_ca_key`],
//! `sensorhub certs --keep-ca-key`): whoever holds it can sign a server
//! certificate the clients trust, or any client identity. Kept (`ca.key`,
//! mode 0600), it issues more client certificates later ([`issue_client`],
//! `sensorhub certs --client NAME`), each named by its DNS SAN and CN: the
//! name a `cert:NAME` line of the server's tokens file maps to an identity.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SigningKey,
};
use time::{Duration, OffsetDateTime};

/// Names every server certificate carries.
pub const DEFAULT_SERVER_NAMES: [&str; 4] = ["localhost", "127.0.0.1", "::1", "grpc-server"];

/// PEM text of a generated CA and its two leaves.
#[derive(Clone)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bundle(keys redacted)")
    }
}

/// The file names [`Bundle::write_to`] uses.
#[derive(Debug, Clone)]
pub struct BundleFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl BundleFiles {
    pub fn in_dir(dir: &Path) -> Self {
        BundleFiles {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// Makes a CA (valid 10 years) and server and client certificates (valid
/// 1 year) signed by it. `extra_names` are added to the server's SANs.
pub fn generate(extra_names: &[String]) -> Result<Bundle, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sensorhub CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "sensorhub");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(3650);
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        sign_leaf(&ca, names, cn, usage, now)
    };

    let mut server_names: Vec<String> =
        DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    for name in extra_names {
        if !server_names.contains(name) {
            server_names.push(name.clone());
        }
    }
    let (server_cert, server_key) = leaf(
        server_names,
        "grpc-server",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        vec!["sensorhub-client".into()],
        "sensorhub-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Bundle {
        ca_cert: ca.pem(),
        ca_key: ca_key_pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

/// A leaf certificate signed by `ca`, valid for a year from an hour ago.
fn sign_leaf<S: SigningKey>(
    ca: &Issuer<'_, S>,
    names: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    now: OffsetDateTime,
) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A client certificate and key for `name` (its DNS SAN and its CN), signed
/// by the CA whose certificate and key are given (PEM). `name` must be a DNS
/// name (letters, digits, `-` and `.`), as a SAN requires.
pub fn issue_client(
    ca_cert: &str,
    ca_key: &str,
    name: &str,
) -> Result<(String, String), rcgen::Error> {
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(rcgen::Error::InvalidAsn1String(
            rcgen::InvalidAsn1String::Ia5String(name.to_owned()),
        ));
    }
    let key = KeyPair::from_pem(ca_key)?;
    let ca = Issuer::from_ca_cert_pem(ca_cert, key)?;
    sign_leaf(
        &ca,
        vec![name.to_owned()],
        name,
        ExtendedKeyUsagePurpose::ClientAuth,
        OffsetDateTime::now_utc(),
    )
}

/// A server certificate and key for exactly `names` (its SANs; the first is
/// also its CN), signed by the CA whose certificate and key are given (PEM):
/// for a server whose names [`generate`]'s defaults do not fit, such as a
/// database server a replica verifies with `sslmode=verify-full`.
pub fn issue_server(
    ca_cert: &str,
    ca_key: &str,
    names: &[&str],
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::from_pem(ca_key)?;
    let ca = Issuer::from_ca_cert_pem(ca_cert, key)?;
    sign_leaf(
        &ca,
        names.iter().map(|n| n.to_string()).collect(),
        names.first().copied().unwrap_or("server"),
        ExtendedKeyUsagePurpose::ServerAuth,
        OffsetDateTime::now_utc(),
    )
}

/// Writes a client certificate and key as `NAME.pem` and `NAME.key` in `dir`
/// (the key mode 0600); returns the two paths.
pub fn write_client(
    dir: &Path,
    name: &str,
    cert: &str,
    key: &str,
) -> std::io::Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    write_file(&cert_path, cert, false)?;
    write_file(&key_path, key, true)?;
    Ok((cert_path, key_path))
}

impl Bundle {
    /// Writes the CA certificate and the two leaves with their keys into
    /// `dir` (created if missing), not the CA's key. Private keys are
    /// created with mode 0600 so no other user can read them.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<BundleFiles> {
        fs::create_dir_all(dir)?;
        let files = BundleFiles::in_dir(dir);
        write_file(&files.ca_cert, &self.ca_cert, false)?;
        write_file(&files.server_cert, &self.server_cert, false)?;
        write_file(&files.server_key, &self.server_key, true)?;
        write_file(&files.client_cert, &self.client_cert, false)?;
        write_file(&files.client_key, &self.client_key, true)?;
        Ok(files)
    }
}

impl Bundle {
    /// Writes the CA's key as `ca.key` (mode 0600) into `dir`, for issuing
    /// client certificates later; returns its path.
    pub fn write_ca_key(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = BundleFiles::in_dir(dir).ca_key;
        write_file(&path, &self.ca_key, true)?;
        Ok(path)
    }
}

fn write_file(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(if secret { 0o600 } else { 0o644 });
        let mut file = options.open(path)?;
        // An existing file keeps its old mode on open: set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(if secret {
            0o600
        } else {
            0o644
        }))?;
        file.write_all(contents.as_bytes())
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        options.open(path)?.write_all(contents.as_bytes())
    }
}
