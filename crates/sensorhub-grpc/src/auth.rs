//! Authentication for the SensorService: who a call is.
//!
//! Clients send the token in the `authorization` metadata, either bare (as
//! the original Python clients did: `authorization: sensor_token_abc`) or as
//! `Bearer <token>`. The check runs as a tonic interceptor, so a call without
//! a valid token is refused with `UNAUTHENTICATED` before any of its messages
//! is decoded, on all five methods. Health and reflection are not wrapped.
//!
//! With mutual TLS, a call without a token is the identity of its client
//! certificate's name (`auth/certificate_name.rs`), if a `cert:NAME` line
//! names it; otherwise it is `UNAUTHENTICATED` as without a certificate. A
//! call that carries a token is judged by the token alone.
//!
//! Each accepted credential stands for an [`Identity`] (`auth/identity.rs`):
//! a label and what it may write and read (`auth/scope.rs`), as the tokens
//! file says (`auth/tokens_file.rs`). The check finds the identity once per
//! call and puts it in the request's extensions; the service asks it per
//! reading and per read request.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! against every accepted digest, so neither timing nor a memory dump of the
//! set reveals them; which entry matched is selected without a branch on
//! the comparison. Invariant: no token (accepted or presented) is ever
//! formatted into a log line, a status message or a span.
//!
//! Failed authentications are counted (`sensorhub.auth.failures`, by
//! reason), and [`MAX_FAILED_AUTHENTICATIONS`] in a row on one connection
//! close it (GOAWAY, `connection.rs`); its calls from then on are refused
//! without looking at their token. A guesser pays a TCP and TLS handshake
//! for every few guesses, however many streams it opens at once.

pub mod certificate_name;
pub mod identity;
pub mod scope;
pub mod tokens_file;

use std::{
    fmt,
    num::NonZeroU32,
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use opentelemetry::{KeyValue, global, metrics::Counter, trace::TraceContextExt};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tonic::{
    Request, Status,
    service::Interceptor,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::connection::ConnectionState;
pub use identity::{Denied, Identity, Rule};
pub use scope::{Pattern, Scope};
use tokens_file::{Credential, Entry, LineError};

/// The metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// The span attribute naming the call's identity (its label; semconv `enduser.id`).
pub const ENDUSER_ID: &str = "enduser.id";

/// Failed authentications in a row after which a connection is closed.
pub const MAX_FAILED_AUTHENTICATIONS: u32 = 5;

/// The accepted credentials and the identity each stands for.
#[derive(Clone)]
pub struct TokenSet {
    tokens: Arc<[TokenEntry]>,
    certificates: Arc<[CertificateEntry]>,
    /// Lines of a tokens file that held a token itself, not its digest.
    plain_in_file: usize,
}

/// A `cert:` line: the certificate's name, its rate-limit key and its identity.
struct CertificateEntry {
    name: Box<str>,
    key: [u8; 32],
    identity: Arc<Identity>,
}

struct TokenEntry {
    digest: [u8; 32],
    identity: Arc<Identity>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenSet({} tokens, {} certificate names, redacted)",
            self.tokens.len(),
            self.certificates.len()
        )
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
    #[error("the tokens file {path}, {source}")]
    Line { path: String, source: LineError },
    #[error("{second} is the same token as {first}; give each token once")]
    Duplicate { first: String, second: String },
}

impl TokenSet {
    /// Builds a set of tokens that may each write and read every sensor
    /// (`--token`); refuses an empty set and tokens that cannot travel as
    /// metadata.
    pub fn new<I, S>(tokens: I) -> Result<Self, TokenError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries = Self::flag_entries(tokens)?;
        Self::from_entries(entries)
    }

    /// The entries `--token` values stand for: every sensor, labelled
    /// `--token 1`, `--token 2`, … (line 0: not from the file).
    pub fn flag_entries<I, S>(tokens: I) -> Result<Vec<Entry>, TokenError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                let token = token.as_ref();
                if !tokens_file::is_sendable_token(token) {
                    return Err(TokenError::Unprintable);
                }
                Ok(Entry {
                    credential: Credential::Token {
                        digest: tokens_file::digest(token.as_bytes()),
                        plain: false,
                    },
                    identity: Identity::unrestricted(format!("--token {}", i + 1)),
                    line: 0,
                })
            })
            .collect()
    }

    /// The set of these entries (`--token`s first, then the file's lines);
    /// refuses an empty set and a token given twice.
    pub fn from_entries(entries: Vec<Entry>) -> Result<Self, TokenError> {
        if entries.is_empty() {
            return Err(TokenError::Empty);
        }
        let mut tokens: Vec<TokenEntry> = Vec::new();
        // Where each token came from, for a duplicate's error.
        let mut origins: Vec<String> = Vec::new();
        let mut certificates = Vec::new();
        let mut plain_in_file = 0;
        let mut flags = 0;
        for entry in entries {
            let origin = if entry.line == 0 {
                flags += 1;
                format!("--token {flags}")
            } else {
                format!("line {} of the tokens file", entry.line)
            };
            let identity = Arc::new(entry.identity);
            match entry.credential {
                Credential::Token { digest, plain } => {
                    if let Some(at) = tokens.iter().position(|t| t.digest == digest) {
                        return Err(TokenError::Duplicate {
                            first: origins.swap_remove(at),
                            second: origin,
                        });
                    }
                    if plain && entry.line > 0 {
                        plain_in_file += 1;
                    }
                    origins.push(origin);
                    tokens.push(TokenEntry { digest, identity });
                }
                Credential::Certificate(name) => {
                    // A key no token's digest can be: the digest of `cert:NAME`.
                    let key = tokens_file::digest(format!("cert:{name}").as_bytes());
                    certificates.push(CertificateEntry {
                        name,
                        key,
                        identity,
                    });
                }
            }
        }
        Ok(TokenSet {
            tokens: tokens.into(),
            certificates: certificates.into(),
            plain_in_file,
        })
    }

    /// A set from the text of a tokens file.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let entries = tokens_file::parse(text).map_err(|source| TokenError::Line {
            path: "(text)".to_owned(),
            source,
        })?;
        Self::from_entries(entries)
    }

    /// Reads a tokens file (`auth/tokens_file.rs` has its format); refuses
    /// it whole at a line it cannot use, naming the line.
    pub fn read_file(path: &Path) -> Result<Vec<Entry>, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
            path: path.display().to_string(),
            source,
        })?;
        tokens_file::parse(&text).map_err(|source| TokenError::Line {
            path: path.display().to_string(),
            source,
        })
    }

    /// Whether `presented` is one of the tokens, in time independent of which one.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.accepted(presented).is_some()
    }

    /// The identity `presented` stands for, if it is one of the tokens (in
    /// time independent of which one).
    pub fn identity_of(&self, presented: &[u8]) -> Option<Arc<Identity>> {
        self.accepted(presented)
            .map(|(_, identity)| identity.clone())
    }

    /// The digest of `presented` (the key its rate limit is kept under)
    /// and its identity, if it is one of the tokens. Every digest is
    /// compared, and the match selected without a branch, so the time does
    /// not depend on which token it was or how much of one matched.
    fn accepted(&self, presented: &[u8]) -> Option<([u8; 32], &Arc<Identity>)> {
        let presented = tokens_file::digest(presented);
        self.by_digest(&presented)
            .map(|identity| (presented, identity))
    }

    /// The identity of the token whose digest is `digest`, comparing every
    /// digest (constant time, as [`Self::accepted`]).
    fn by_digest(&self, presented: &[u8; 32]) -> Option<&Arc<Identity>> {
        let mut matched = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, accepted) in self.tokens.iter().enumerate() {
            let equal = accepted.digest.ct_eq(presented);
            index.conditional_assign(&(i as u32), equal);
            matched |= equal;
        }
        bool::from(matched).then(|| &self.tokens[index as usize].identity)
    }

    /// The rate-limit key and identity a client certificate's name stands
    /// for (a `cert:` line).
    pub fn certificate(&self, name: &str) -> Option<([u8; 32], &Arc<Identity>)> {
        self.certificates
            .iter()
            .find(|c| *c.name == *name)
            .map(|c| (c.key, &c.identity))
    }

    /// How many tokens the set holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// How many `cert:` lines it holds.
    pub fn certificate_names(&self) -> usize {
        self.certificates.len()
    }

    /// Always false: a set is never empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.certificates.is_empty()
    }

    /// How many lines of the tokens file held a token itself rather than
    /// its `sha256:` digest (the server warns once at start).
    pub fn plain_in_file(&self) -> usize {
        self.plain_in_file
    }
}

/// What a live-view session keeps of the token it logged in with: its
/// SHA-256 digest, never the token, never sent anywhere. `Debug` is redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(redacted)")
    }
}

/// The interceptor that refuses calls without an accepted token, and calls
/// beyond a token's rate. With no token set (the operator passed
/// `--no-auth`) it lets every call through.
///
/// The set can be replaced while the server runs ([`TokenCheck::replace`],
/// on SIGHUP); a call is checked against the set current when it starts.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    tokens: Option<Arc<RwLock<TokenSet>>>,
    /// The identity of every call under `--no-auth`.
    anonymous: Arc<Identity>,
    limiter: Option<Arc<TokenRateLimiter>>,
    failures: Counter<u64>,
}

/// Why a call was not authenticated (`sensorhub.auth.failure.reason`).
const FAILURE_REASON: &str = "sensorhub.auth.failure.reason";
const FAILED_MISSING: &str = "missing";
const FAILED_INVALID: &str = "invalid";
const FAILED_CONNECTION_CLOSING: &str = "connection_closing";

type TokenRateLimiter = governor::RateLimiter<
    [u8; 32],
    governor::state::keyed::HashMapStateStore<[u8; 32]>,
    governor::clock::DefaultClock,
>;

/// Calls per second allowed to each token, with a burst of as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls_per_second: NonZeroU32,
}

impl TokenCheck {
    /// `rate`: each token's limit; `None`, no limit. It applies only to
    /// authenticated calls: with `tokens` `None` there is no key to keep a
    /// rate under.
    pub fn new(tokens: Option<TokenSet>, rate: Option<RateLimit>) -> Self {
        let limiter = rate.filter(|_| tokens.is_some()).map(|rate| {
            Arc::new(governor::RateLimiter::hashmap(governor::Quota::per_second(
                rate.calls_per_second,
            )))
        });
        let failures = global::meter("sensorhub-grpc")
            .u64_counter("sensorhub.auth.failures")
            .with_unit("{call}")
            .with_description(
                "Calls refused UNAUTHENTICATED: no token, a token not accepted, or on a connection closing after too many failures",
            )
            .build();
        if tokens.is_some() {
            for reason in [FAILED_MISSING, FAILED_INVALID, FAILED_CONNECTION_CLOSING] {
                failures.add(0, &[KeyValue::new(FAILURE_REASON, reason)]);
            }
        }
        Self {
            tokens: tokens.map(|t| Arc::new(RwLock::new(t))),
            anonymous: Arc::new(Identity::unrestricted("no-auth")),
            limiter,
            failures,
        }
    }

    /// Counts a failure, and on the caller's connection (when it has one).
    /// `Err`: the connection had reached its limit first; answer with
    /// [`Self::closing`] instead of saying why the token was refused.
    fn failed(
        &self,
        reason: &'static str,
        connection: Option<&Arc<ConnectionState>>,
    ) -> Result<(), Status> {
        if connection.is_some_and(|c| !c.authentication_failed(MAX_FAILED_AUTHENTICATIONS)) {
            return Err(self.closing());
        }
        self.failures
            .add(1, &[KeyValue::new(FAILURE_REASON, reason)]);
        Ok(())
    }

    /// The refusal of every call on a connection that has had
    /// [`MAX_FAILED_AUTHENTICATIONS`] failures in a row: its token is not
    /// checked (or its check's result not told).
    fn closing(&self) -> Status {
        self.failures.add(
            1,
            &[KeyValue::new(FAILURE_REASON, FAILED_CONNECTION_CLOSING)],
        );
        Status::unauthenticated(format!(
            "Invalid token: {MAX_FAILED_AUTHENTICATIONS} failed authentications in a row on this connection, which is being closed; reconnect and send a token this server accepts"
        ))
    }

    /// Whether callers are checked at all (false under `--no-auth`).
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// The identity of `presented` if it is a token of the current set, in
    /// time independent of which one; always `None` without a set.
    pub fn identity_of(&self, presented: &[u8]) -> Option<Arc<Identity>> {
        self.tokens.as_ref().and_then(|tokens| {
            tokens
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .identity_of(presented)
        })
    }

    /// A login to the live view: the digest of `presented` (what its
    /// session keeps instead of the token) and its identity, if it is a
    /// token of the current set. Always `None` without a set.
    pub fn login(&self, presented: &[u8]) -> Option<(TokenDigest, Arc<Identity>)> {
        let tokens = self.tokens.as_ref()?;
        tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .accepted(presented)
            .map(|(digest, identity)| (TokenDigest(digest), identity.clone()))
    }

    /// The current identity of the token a session logged in with: `None`
    /// once the token has left the set (a SIGHUP removed it); a changed
    /// scope applies at once.
    pub fn identity_of_login(&self, digest: &TokenDigest) -> Option<Arc<Identity>> {
        let tokens = self.tokens.as_ref()?;
        tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_digest(&digest.0)
            .cloned()
    }

    /// The identity of every caller under `--no-auth`.
    pub fn anonymous(&self) -> Arc<Identity> {
        self.anonymous.clone()
    }

    /// Replaces the accepted tokens for every call from now on. `false`:
    /// this check runs without tokens (`--no-auth`), nothing was replaced.
    pub fn replace(&self, tokens: TokenSet) -> bool {
        match &self.tokens {
            Some(current) => {
                *current.write().unwrap_or_else(|e| e.into_inner()) = tokens;
                true
            }
            None => false,
        }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            request.extensions_mut().insert(self.anonymous.clone());
            return Ok(request);
        };
        let connection = request.extensions().get::<Arc<ConnectionState>>();
        if connection.is_some_and(|c| c.locked_out(MAX_FAILED_AUTHENTICATIONS)) {
            return Err(self.closing());
        }
        let accepted = match request.metadata().get(AUTHORIZATION) {
            Some(value) => {
                let value = value.as_bytes();
                let token = value.strip_prefix(b"Bearer ").unwrap_or(value);
                let accepted = tokens
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .accepted(token)
                    .map(|(key, identity)| (key, identity.clone()));
                let Some(accepted) = accepted else {
                    self.failed(FAILED_INVALID, connection)?;
                    return Err(Status::unauthenticated(
                        "Invalid token: the `authorization` metadata does not carry a token this server accepts",
                    ));
                };
                accepted
            }
            None => {
                let name = peer_certificate_name(&request, connection);
                let mapped = name.and_then(|name| {
                    tokens
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .certificate(name)
                        .map(|(key, identity)| (key, identity.clone()))
                });
                match (mapped, name) {
                    (Some(accepted), _) => accepted,
                    (None, Some(name)) => {
                        let status = Status::unauthenticated(format!(
                            "Invalid token: no `authorization` metadata, and the client certificate {name:?} is named on no `cert:` line of the server's tokens file; send `authorization: <token>`, or have the operator map the certificate"
                        ));
                        self.failed(FAILED_MISSING, connection)?;
                        return Err(status);
                    }
                    (None, None) => {
                        self.failed(FAILED_MISSING, connection)?;
                        return Err(Status::unauthenticated(
                            "Invalid token: no `authorization` metadata; send `authorization: <token>` or `authorization: Bearer <token>`",
                        ));
                    }
                }
            }
        };
        let (key, identity) = accepted;
        if connection.is_some_and(|c| !c.authenticated(MAX_FAILED_AUTHENTICATIONS)) {
            return Err(self.closing());
        }
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check_key(&key)
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
            return Err(rate_limited(wait));
        }
        // The call's span (the telemetry layer's, current here) names who
        // called: the label, never the credential.
        opentelemetry::Context::map_current(|cx| {
            cx.span()
                .set_attribute(KeyValue::new(ENDUSER_ID, identity.label.clone()))
        });
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

/// The name of the client certificate the call's connection presented
/// (mutual TLS), read once per connection and kept in its state.
fn peer_certificate_name<'r>(
    request: &'r Request<()>,
    connection: Option<&'r Arc<ConnectionState>>,
) -> Option<&'r str> {
    let read = || {
        let info = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()?;
        let certificates = info.peer_certs()?;
        certificate_name::of(certificates.first()?)
    };
    match connection {
        Some(connection) => connection.certificate_name(read),
        // Only a server assembled without the connection layer (unit tests).
        None => None,
    }
}

/// `RESOURCE_EXHAUSTED`, with the wait in `grpc-retry-pushback-ms` (the
/// gRPC retry spec's server pushback) and in words.
fn rate_limited(wait: Duration) -> Status {
    let millis = wait.as_millis().max(1);
    let mut status = Status::resource_exhausted(format!(
        "rate limit: this token has used its calls for now; retry in {millis} ms, or send fewer calls (a client stream carries many readings in one call)"
    ));
    if let Ok(value) = millis.to_string().parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_bearer_tokens_are_accepted_others_refused() {
        let mut check = TokenCheck::new(
            Some(TokenSet::new(["sensor_token_abc", "second"]).unwrap()),
            None,
        );
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

    fn with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(AUTHORIZATION, token.parse().unwrap());
        request
    }

    #[test]
    fn each_token_has_its_own_rate_and_the_refusal_says_when_to_retry() {
        let rate = RateLimit {
            calls_per_second: NonZeroU32::new(3).unwrap(),
        };
        let mut check = TokenCheck::new(Some(TokenSet::new(["a1", "b2"]).unwrap()), Some(rate));
        for _ in 0..3 {
            assert!(check.call(with_token("a1")).is_ok());
        }
        let refused = check.call(with_token("a1")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("retry in"), "{refused:?}");
        let pushback: u64 = refused
            .metadata()
            .get("grpc-retry-pushback-ms")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=400).contains(&pushback), "{pushback}");
        // Another token is not held back by the first one's calls.
        assert!(check.call(with_token("b2")).is_ok());
        // A wrong token is refused as unauthenticated, not counted.
        let wrong = check.call(with_token("zz")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    }

    fn identity_of(request: &Request<()>) -> Arc<Identity> {
        request
            .extensions()
            .get::<Arc<Identity>>()
            .cloned()
            .expect("an identity")
    }

    #[test]
    fn the_identity_of_the_matching_line_goes_with_the_call() {
        let hashed = tokens_file::hex(&tokens_file::digest(b"c3"));
        let set = TokenSet::parse(&format!(
            "a1 name=kitchen write=kitchen-*\nb2\nsha256:{hashed} read=hall"
        ))
        .unwrap();
        assert_eq!(set.plain_in_file(), 2);
        let mut check = TokenCheck::new(Some(set), None);
        let kitchen = identity_of(&check.call(with_token("a1")).unwrap());
        assert_eq!(&*kitchen.label, "kitchen");
        assert!(kitchen.write.permits("kitchen-2") && !kitchen.write.permits("hall"));
        let bare = identity_of(&check.call(with_token("Bearer b2")).unwrap());
        assert_eq!(&*bare.label, "tokens file line 2");
        assert!(bare.write.is_all() && bare.read.is_all());
        let hall = identity_of(&check.call(with_token("c3")).unwrap());
        assert!(hall.read.permits("hall") && !hall.write.permits("hall"));
        // The digest itself is no token.
        assert!(check.call(with_token(&hashed)).is_err());
        let anonymous = identity_of(&TokenCheck::new(None, None).call(Request::new(())).unwrap());
        assert!(anonymous.write.is_all() && anonymous.read.is_all());
    }

    #[test]
    fn a_token_given_twice_is_refused_naming_both_places() {
        let mut entries = TokenSet::flag_entries(["t1", "t2"]).unwrap();
        entries.extend(tokens_file::parse("x\nt2 write=a").unwrap());
        let error = TokenSet::from_entries(entries).unwrap_err().to_string();
        assert_eq!(
            error,
            "line 2 of the tokens file is the same token as --token 2; give each token once"
        );
    }

    #[test]
    fn a_replaced_set_applies_to_the_next_call() {
        let mut check = TokenCheck::new(Some(TokenSet::new(["old"]).unwrap()), None);
        assert!(check.call(with_token("old")).is_ok());
        assert!(check.replace(TokenSet::new(["new"]).unwrap()));
        assert_eq!(
            check.call(with_token("old")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(check.call(with_token("new")).is_ok());
        assert!(!TokenCheck::new(None, None).replace(TokenSet::new(["x"]).unwrap()));
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
        assert!(TokenCheck::new(None, None).call(Request::new(())).is_ok());
        assert!(!format!("{set:?}").contains("s3cret"));
    }
}
