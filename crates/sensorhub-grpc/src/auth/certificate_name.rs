//! The name a client certificate goes by, for `cert:NAME` lines: its first
//! DNS subject alternative name, or, when it has none, its subject's common
//! name. The TLS handshake has already checked that it chains to the client
//! CA; this only reads it.
//!
//! It is read once per connection (`ConnectionState` keeps it), on the first
//! call that carries no token, so the parse is not paid per call.

use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The name of the certificate `der`, if it has one.
pub fn of(der: &[u8]) -> Option<Box<str>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let dns = san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        });
        if let Some(dns) = dns {
            return Some(dns.into());
        }
    }
    let common_name = cert.subject().iter_common_name().next()?;
    common_name.as_str().ok().map(Box::from)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn der(sans: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_first_dns_san_and_else_the_common_name() {
        assert_eq!(
            super::of(&der(&["garage-1", "other"], Some("cn-name"))).as_deref(),
            Some("garage-1")
        );
        assert_eq!(
            super::of(&der(&["10.0.0.1", "kitchen-1"], None)).as_deref(),
            Some("kitchen-1")
        );
        assert_eq!(
            super::of(&der(&[], Some("hall-sensor"))).as_deref(),
            Some("hall-sensor")
        );
        assert_eq!(super::of(&der(&["10.0.0.1"], None)), None);
        assert_eq!(super::of(b"not a certificate"), None);
    }
}
