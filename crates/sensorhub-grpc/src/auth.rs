//! Token authentication for the SensorService.
//!
//! Clients send the token in the `authorization` metadata, either bare (as
//! the original Python clients did: `authorization: sensor_token_abc`) or as
//! `Bearer <token>`. The check runs as a tonic interceptor, so a call without
//! a valid token is refused with `UNAUTHENTICATED` before any of its messages
//! is decoded, on all five methods. Health and reflection are not wrapped.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! against every accepted digest, so neither timing nor a memory dump of the
//! set reveals them. Invariant: no token (accepted or presented) is ever
//! formatted into a log line, a status message or a span.

use std::{fmt, path::Path, sync::Arc};

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

/// The metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// The set of accepted tokens.
#[derive(Clone)]
pub struct TokenSet {
    digests: Arc<Vec<[u8; 32]>>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet({} tokens, redacted)", self.digests.len())
    }
}

/// Why a token set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no tokens given: pass --token TOKEN or --tokens-file FILE, or --no-auth to accept every caller"
    )]
    Empty,
    #[error("a token must be printable ASCII without spaces (it travels as gRPC metadata)")]
    Unprintable,
    #[error("cannot read the tokens file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl TokenSet {
    /// Builds the set; refuses an empty set and tokens that cannot travel as metadata.
    pub fn new<I, S>(tokens: I) -> Result<Self, TokenError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut digests = Vec::new();
        for token in tokens {
            let token = token.as_ref();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenError::Unprintable);
            }
            digests.push(sha256(token.as_bytes()));
        }
        if digests.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(TokenSet {
            digests: Arc::new(digests),
        })
    }

    /// Reads tokens from a file: one per line; blank lines and `#` comments are skipped.
    pub fn read_file(path: &Path) -> Result<Vec<String>, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }

    /// Whether `presented` is one of the tokens, in time independent of which one.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let presented = sha256(presented);
        let mut matched = subtle::Choice::from(0);
        for accepted in self.digests.iter() {
            matched |= accepted.ct_eq(&presented);
        }
        matched.into()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The interceptor that refuses calls without an accepted token. With no
/// token set (the operator passed `--no-auth`) it lets every call through.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    tokens: Option<TokenSet>,
}

impl TokenCheck {
    pub fn new(tokens: Option<TokenSet>) -> Self {
        Self { tokens }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(request);
        };
        let Some(value) = request.metadata().get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "Invalid token: no `authorization` metadata; send `authorization: <token>` or `authorization: Bearer <token>`",
            ));
        };
        let value = value.as_bytes();
        let token = value.strip_prefix(b"Bearer ").unwrap_or(value);
        if tokens.accepts(token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "Invalid token: the `authorization` metadata does not carry a token this server accepts",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_bearer_tokens_are_accepted_others_refused() {
        let mut check =
            TokenCheck::new(Some(TokenSet::new(["sensor_token_abc", "second"]).unwrap()));
        let with = |value: Option<&str>| {
            let mut request = Request::new(());
            if let Some(v) = value {
                request
                    .metadata_mut()
                    .insert(AUTHORIZATION, v.parse().unwrap());
            }
            request
        };
        assert!(check.call(with(Some("sensor_token_abc"))).is_ok());
        assert!(check.call(with(Some("Bearer second"))).is_ok());
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("sensor_token_ab"),
            Some("Basic c2Vuc29y"),
            Some("bearer second"),
        ] {
            let status = check.call(with(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!status.message().contains("sensor_token_abc"));
        }
    }

    #[test]
    fn empty_sets_and_unprintable_tokens_are_refused_and_debug_redacts() {
        assert!(matches!(
            TokenSet::new(Vec::<String>::new()),
            Err(TokenError::Empty)
        ));
        assert!(matches!(
            TokenSet::new(["has space"]),
            Err(TokenError::Unprintable)
        ));
        let set = TokenSet::new(["s3cret"]).unwrap();
        assert!(TokenCheck::new(None).call(Request::new(())).is_ok());
        assert!(!format!("{set:?}").contains("s3cret"));
    }
}
