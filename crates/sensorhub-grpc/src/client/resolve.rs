//! Where a `--server`'s host name becomes addresses: the one point where
//! the client looks names up.
//!
//! Why a trait: the replica set looks its names up again while it runs
//! (`client/replicas.rs`: every `--dns-refresh`, and at once when a name's
//! addresses fail), so that calls follow a name whose address set changes
//! (a headless Kubernetes service as pods come and go, a DNS record moved to
//! a new host). The product asks the system resolver ([`SystemResolver`]:
//! `/etc/hosts`, A and AAAA records); a test hands in its own, whose answer
//! it changes. A literal address never comes here.

use std::{
    fmt, io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures_util::future::BoxFuture;

use super::ConnectError;

/// Looks a host name up: every address it has now, with `port`.
pub trait Resolve: fmt::Debug + Send + Sync + 'static {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (`getaddrinfo` through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// The resolver clients use unless told otherwise.
pub fn system() -> Arc<dyn Resolve> {
    Arc::new(SystemResolver)
}

/// One `--server` URL, taken apart.
#[derive(Debug, Clone)]
pub struct Server {
    /// As the user wrote it.
    pub url: String,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// Without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// The address, when the host is one (then it is never looked up).
    literal: Option<IpAddr>,
}

impl Server {
    pub fn parse(url: &str) -> Result<Server, ConnectError> {
        let bad = || ConnectError::Url(url.to_owned());
        let uri = http::Uri::try_from(url).map_err(|_| bad())?;
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            Some("http") => "http",
            _ => return Err(bad()),
        };
        let host = uri.host().ok_or_else(bad)?.trim_matches(['[', ']']);
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Server {
            url: url.to_owned(),
            scheme,
            host: host.to_owned(),
            port,
            literal: host.parse().ok(),
        })
    }

    /// Whether the host is a name (looked up, and looked up again).
    pub fn is_name(&self) -> bool {
        self.literal.is_none()
    }

    /// Its addresses now: the literal one, or what `resolver` answers for the name.
    pub async fn addresses(&self, resolver: &dyn Resolve) -> io::Result<Vec<SocketAddr>> {
        match self.literal {
            Some(ip) => Ok(vec![SocketAddr::new(ip, self.port)]),
            None => resolver.lookup(&self.host, self.port).await,
        }
    }

    /// Why looking its name up failed, for the user.
    pub fn lookup_error(&self, error: &io::Error) -> ConnectError {
        ConnectError::Connect {
            server: self.url.clone(),
            reason: format!("cannot resolve `{}`: {error}", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_looked_up_and_an_address_is_not() {
        let name = Server::parse("https://replicas.example:8443").unwrap();
        assert!(name.is_name());
        assert_eq!(
            (name.scheme, name.host.as_str(), name.port),
            ("https", "replicas.example", 8443)
        );
        let v6 = Server::parse("http://[::1]").unwrap();
        assert!(!v6.is_name());
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
        assert!(matches!(
            Server::parse("ftp://host:1"),
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(Server::parse("host:1"), Err(ConnectError::Url(_))));
    }

    #[tokio::test]
    async fn a_literal_address_never_reaches_the_resolver() {
        #[derive(Debug)]
        struct Refuses;
        impl Resolve for Refuses {
            fn lookup(
                &self,
                host: &str,
                _: u16,
            ) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
                panic!("looked up {host}")
            }
        }
        let server = Server::parse("http://127.0.0.2:7000").unwrap();
        let addresses = server.addresses(&Refuses).await.unwrap();
        assert_eq!(addresses, ["127.0.0.2:7000".parse::<SocketAddr>().unwrap()]);
    }
}
