//! Why a connection failed, in words a user can act on.
//!
//! tonic reports a refused server certificate as `transport error`, with
//! rustls's enum names deep in the error's source chain (`invalid peer
//! certificate: Other(OtherError(CaUsedAsEndEntity))`), and printing the
//! chain repeats each part. This finds the cause in the chain and says, once,
//! what is wrong and what to do: `sensorhub certs`, `--ca` with the CA that
//! issued the server's certificate, a name the certificate holds.

use std::{error::Error as StdError, path::Path};

use rustls::{AlertDescription, CertificateError};

/// What the client was doing: the name it checks the certificate against
/// (the URL's host or `--tls-server-name`) and the CA it trusts (`None`:
/// the system's roots).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub name: &'a str,
    pub ca: Option<&'a Path>,
}

/// One or two sentences on why the connection failed.
pub(crate) fn explain(error: &(dyn StdError + 'static), attempt: Attempt<'_>) -> String {
    if let Some(tls) = find::<rustls::Error>(error) {
        return explain_tls(tls, attempt);
    }
    if let Some(io) = find::<std::io::Error>(error)
        && io.kind() == std::io::ErrorKind::ConnectionRefused
    {
        return format!(
            "nothing accepts connections there ({io}); is the server running, and on this port?"
        );
    }
    chain_text(error)
}

fn explain_tls(error: &rustls::Error, attempt: Attempt<'_>) -> String {
    let name = attempt.name;
    match error {
        rustls::Error::InvalidCertificate(cert) => explain_certificate(cert, attempt),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (mutual TLS): pass --client-cert and \
             --client-key (client.pem and client.key from `sensorhub certs`)"
                .into()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::DecryptError
            | AlertDescription::CertificateUnknown),
        ) => format!(
            "the server refused this client's certificate (TLS alert {alert:?}): use one \
             issued by the CA the server trusts (its --client-ca)"
        ),
        rustls::Error::InvalidMessage(_) => format!(
            "the server at `{name}` did not answer in TLS; for a plaintext server (`sensorhub \
             serve --insecure`), use http://HOST:PORT"
        ),
        other => format!("the TLS handshake failed: {other}"),
    }
}

fn explain_certificate(error: &CertificateError, attempt: Attempt<'_>) -> String {
    let name = attempt.name;
    let issued_by = match attempt.ca {
        Some(ca) => format!("the CA in {}", ca.display()),
        None => "the system's root CAs (no --ca given)".to_owned(),
    };
    match error {
        CertificateError::Other(other) if is_ca_used_as_end_entity(other) => {
            "the server's certificate is a CA certificate (self-signed with CA:TRUE, as the \
             original `make generate_certs` made it) used as the server's own; a client accepts \
             only a server certificate issued by a CA. Make both with `sensorhub certs --out \
             certs`, serve certs/server.pem and certs/server.key, and give clients --ca \
             certs/ca.pem"
                .into()
        }
        CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => {
            no_subject_alt_name(name)
        }
        CertificateError::NotValidForName => no_subject_alt_name(name),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the server's certificate is not valid for `{name}`: its subjectAltNames are {}. \
             Dial one of those names, pass --tls-server-name with one, or make a certificate \
             for it with `sensorhub certs --name {name}`",
            presented
                .iter()
                .map(|p| presented_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CertificateError::UnknownIssuer => format!(
            "the server's certificate was not issued by {issued_by}. Pass --ca with the CA \
             certificate that issued it (the ca.pem that `sensorhub certs` wrote beside the \
             server's certificate)"
        ),
        // Found an issuer of that name among the trusted, but its key did
        // not sign this certificate: another CA of the same name, such as
        // that of another `sensorhub certs` run.
        CertificateError::BadSignature => format!(
            "the server's certificate was not issued by {issued_by}, but by another CA of the \
             same name (another `sensorhub certs` run, say). Pass --ca with the CA certificate \
             that issued it (the ca.pem written beside the server's certificate)"
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "the server's certificate has expired{}. Issue a new one (`sensorhub certs`) and \
             send the server SIGHUP to load it",
            match error {
                CertificateError::ExpiredContext { time, not_after } => format!(
                    " ({} ago)",
                    span(time.as_secs().saturating_sub(not_after.as_secs()))
                ),
                _ => String::new(),
            }
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "the server's certificate is not valid yet{}: check this machine's clock and the \
             server's",
            match error {
                CertificateError::NotValidYetContext { time, not_before } => format!(
                    " (valid {} from now)",
                    span(not_before.as_secs().saturating_sub(time.as_secs()))
                ),
                _ => String::new(),
            }
        ),
        other => format!(
            "the server's certificate was refused ({other:?}). Make a CA and a server \
             certificate with `sensorhub certs`, and give clients --ca with that CA"
        ),
    }
}

fn no_subject_alt_name(name: &str) -> String {
    format!(
        "the server's certificate has no subjectAltName, so it is valid for no name, `{name}` \
         included (its common name is not checked). Make one that names the server: \
         `sensorhub certs --name {name}`, and give clients --ca with its ca.pem"
    )
}

/// A name as rustls presents it (`DnsName("localhost")`, `IpAddress(::1)`),
/// as a user writes it.
fn presented_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// webpki's `CaUsedAsEndEntity`, which rustls passes on as an "other" error.
fn is_ca_used_as_end_entity(other: &rustls::OtherError) -> bool {
    other
        .0
        .downcast_ref::<webpki::Error>()
        .is_some_and(|e| matches!(e, webpki::Error::CaUsedAsEndEntity))
}

/// A duration in the largest whole unit that fits: days, hours or minutes.
fn span(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{} days", s / 86_400),
        s if s >= 3_600 => format!("{} hours", s / 3_600),
        s => format!("{} minutes", s / 60),
    }
}

/// The first error of type `T` in `error`'s source chain.
fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    chain(error).find_map(|e| e.downcast_ref::<T>())
}

/// `error` and its sources. An `io::Error`'s `source()` skips the error it
/// wraps (where hyper keeps rustls's), so that one is visited too.
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
        Some(current)
    })
}

/// The chain's messages joined once each: tonic's outer `transport error`
/// says nothing, and a message its cause repeats is left out.
fn chain_text(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(error) {
        let text = e.to_string();
        if text == "transport error" || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        match parts.last_mut() {
            // The cause's message repeats its wrapper's: keep the fuller one.
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}
