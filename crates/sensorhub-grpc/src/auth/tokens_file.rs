//! The tokens file: one credential per line, each with the identity it
//! stands for.
//!
//! ```text
//! # comment
//! TOKEN                                   # every sensor, as before scopes
//! TOKEN name=LABEL write=P[,P…] read=P[,P…]
//! sha256:<64 hex digits> name=… write=…     # the token's SHA-256, not the token
//! cert:<name> name=… write=… read=…         # a client certificate (mutual TLS)
//! ```
//!
//! A line without `write=` and `read=` may write and read every sensor, so
//! files written before scopes keep their meaning. A line with either one
//! may do only what it names: `read=kitchen-*` alone writes nothing.
//!
//! A line that cannot be understood refuses the whole file, naming the line
//! and what is wrong with it, never the token: the server does not start
//! with it, and a reload keeps the set it had. So a typo never widens, nor
//! silently narrows, what a credential may do.
//!
//! Invariant: no error message contains any part of a line other than a
//! known key's name; a field in the wrong place might be a secret.

use std::sync::Arc;

use super::identity::Identity;
use super::scope::{Pattern, Scope};

/// What a line presents to be recognised by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token's SHA-256 digest; `plain`: the file held the token itself.
    Token { digest: [u8; 32], plain: bool },
    /// A client certificate's name (its DNS SAN, or its CN without one).
    Certificate(Box<str>),
}

impl Credential {
    /// Whether both name one credential (a token and its `sha256:` line do).
    pub fn same_as(&self, other: &Credential) -> bool {
        match (self, other) {
            (Credential::Token { digest: a, .. }, Credential::Token { digest: b, .. }) => a == b,
            (Credential::Certificate(a), Credential::Certificate(b)) => a == b,
            _ => false,
        }
    }
}

/// One line: a credential and its identity.
#[derive(Debug, Clone)]
pub struct Entry {
    pub credential: Credential,
    pub identity: Identity,
    /// 1-based; 0 for a token given with `--token`.
    pub line: usize,
}

/// A line the server cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

/// The longest `name=` label (it goes on spans and in status messages).
pub const MAX_LABEL_BYTES: usize = 64;

/// The longest certificate name: a DNS name's limit.
pub const MAX_CERTIFICATE_NAME_BYTES: usize = 253;

/// Reads every line of a tokens file; refuses the whole text at the first
/// line it cannot use, and at a credential that appears twice.
pub fn parse(text: &str) -> Result<Vec<Entry>, LineError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let entry = parse_line(trimmed, line).map_err(|problem| LineError { line, problem })?;
        if let Some(earlier) = entries
            .iter()
            .find(|e| e.credential.same_as(&entry.credential))
        {
            let what = match entry.credential {
                Credential::Token { .. } => "the same token as",
                Credential::Certificate(_) => "the same certificate name as",
            };
            return Err(LineError {
                line,
                problem: format!(
                    "{what} line {} (a token and its sha256: line count as the same); keep one line per credential",
                    earlier.line
                ),
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// The SHA-256 of a token, as a `sha256:` line holds it.
pub fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

/// Whether `token` can travel as `authorization` metadata.
pub fn is_sendable_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_line(line_text: &str, line: usize) -> Result<Entry, String> {
    let mut fields = line_text.split_ascii_whitespace();
    let first = fields.next().unwrap_or_default();
    let credential = if let Some(hex) = first.strip_prefix("sha256:") {
        Credential::Token {
            digest: parse_hex_digest(hex).ok_or_else(|| {
                "`sha256:` must be followed by exactly 64 hex digits, the SHA-256 of the token (`sensorhub token new` prints such lines)".to_owned()
            })?,
            plain: false,
        }
    } else if let Some(name) = first.strip_prefix("cert:") {
        if name.is_empty() || name.len() > MAX_CERTIFICATE_NAME_BYTES {
            return Err(format!(
                "`cert:` must be followed by the certificate's name (its DNS SAN, or its CN), 1 to {MAX_CERTIFICATE_NAME_BYTES} characters"
            ));
        }
        Credential::Certificate(name.into())
    } else if is_sendable_token(first) {
        Credential::Token {
            digest: digest(first.as_bytes()),
            plain: true,
        }
    } else {
        return Err(
            "the token must be printable ASCII without spaces (it travels as gRPC metadata)"
                .to_owned(),
        );
    };

    let mut name: Option<&str> = None;
    let mut write: Option<Scope> = None;
    let mut read: Option<Scope> = None;
    for (position, field) in fields.enumerate() {
        let position = position + 2;
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "field {position} is not KEY=VALUE; after the credential a line takes only name=LABEL, write=PATTERNS and read=PATTERNS"
            ));
        };
        let slot_taken = match key {
            "name" => name.is_some(),
            "write" => write.is_some(),
            "read" => read.is_some(),
            _ => {
                return Err(format!(
                    "field {position} has an unknown key; the keys are name, write and read"
                ));
            }
        };
        if slot_taken {
            return Err(format!("{key}= is given twice"));
        }
        match key {
            "name" => name = Some(parse_label(value)?),
            "write" => write = Some(parse_scope(key, value)?),
            _ => read = Some(parse_scope(key, value)?),
        }
    }
    let (write, read) = match (write, read) {
        (None, None) => (Scope::All, Scope::All),
        (write, read) => (
            write.unwrap_or_else(Scope::none),
            read.unwrap_or_else(Scope::none),
        ),
    };
    let label: Arc<str> = match name {
        Some(name) => name.into(),
        None => format!("tokens file line {line}").into(),
    };
    Ok(Entry {
        credential,
        identity: Identity { label, write, read },
        line,
    })
}

fn parse_label(value: &str) -> Result<&str, String> {
    if value.is_empty()
        || value.len() > MAX_LABEL_BYTES
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "name= must be 1 to {MAX_LABEL_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(value)
}

fn parse_scope(key: &str, value: &str) -> Result<Scope, String> {
    let mut patterns = Vec::new();
    for piece in value.split(',') {
        let pattern = Pattern::new(piece).ok_or_else(|| {
            format!(
                "{key}= has an empty pattern; give sensor ids or globs such as kitchen-*, separated by single commas"
            )
        })?;
        patterns.push(pattern);
    }
    Ok(Scope::of(patterns))
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A digest as a `sha256:` line writes it.
pub fn hex(digest: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KITCHEN: &str = "kitchen-token";

    fn only(text: &str) -> Entry {
        let mut entries = parse(text).unwrap();
        assert_eq!(entries.len(), 1);
        entries.pop().unwrap()
    }

    #[test]
    fn a_bare_token_may_do_everything_and_scopes_limit_a_line() {
        let bare = only("sensor_token_abc");
        assert_eq!(
            bare.credential,
            Credential::Token {
                digest: digest(b"sensor_token_abc"),
                plain: true
            }
        );
        assert!(bare.identity.write.is_all() && bare.identity.read.is_all());
        assert_eq!(&*bare.identity.label, "tokens file line 1");

        let named = only("# fleet\n\nt1 name=garage");
        assert!(named.identity.write.is_all(), "a name alone is no scope");
        assert_eq!((&*named.identity.label, named.line), ("garage", 3));

        let scoped = only(&format!("{KITCHEN} name=kitchen write=kitchen-*,hall"));
        assert_eq!(scoped.identity.write.to_string(), "kitchen-*,hall");
        assert_eq!(scoped.identity.read.to_string(), "(nothing)");

        let reader = only("t2 read=kitchen-*");
        assert!(!reader.identity.write.permits("kitchen-1"));
        assert!(reader.identity.read.permits("kitchen-1"));
    }

    #[test]
    fn hashed_and_certificate_lines_name_their_credential() {
        let hashed = only(&format!("sha256:{} write=kitchen-*", hex(&digest(b"kt"))));
        assert_eq!(
            hashed.credential,
            Credential::Token {
                digest: digest(b"kt"),
                plain: false
            }
        );
        let upper = only(&format!("sha256:{}", hex(&digest(b"kt")).to_uppercase()));
        assert_eq!(upper.credential, hashed.credential);
        let cert = only("cert:garage-1 write=garage-1");
        assert_eq!(cert.credential, Credential::Certificate("garage-1".into()));
    }

    #[test]
    fn a_malformed_line_is_refused_with_its_number_and_never_its_token() {
        let secret = "s3cret-token-value";
        let good = hex(&digest(b"x"));
        for (text, line, words) in [
            (format!("ok\n{secret} writ=kitchen-*"), 2, "unknown key"),
            (format!("{secret} write="), 1, "empty pattern"),
            (format!("{secret} write=a,,b"), 1, "empty pattern"),
            (format!("{secret} read=a,"), 1, "empty pattern"),
            (format!("{secret} name="), 1, "name="),
            (format!("{secret} write=a write=b"), 1, "given twice"),
            (format!("{secret} {secret}"), 1, "not KEY=VALUE"),
            (format!("{secret}=x {secret}=y"), 1, "unknown key"),
            ("sha256:abc".to_owned(), 1, "64 hex digits"),
            (format!("sha256:{}zz", &good[..62]), 1, "64 hex digits"),
            ("cert: write=x".to_owned(), 1, "certificate's name"),
            (format!("{secret}é"), 1, "printable ASCII"),
            (
                format!("# c\n{secret}\nsha256:{}", hex(&digest(secret.as_bytes()))),
                3,
                "same token as line 2",
            ),
            (
                "cert:a\ncert:a read=x".to_owned(),
                2,
                "same certificate name as line 1",
            ),
        ] {
            let error = parse(&text).expect_err(&text);
            assert_eq!(error.line, line, "{text}: {error}");
            assert!(error.problem.contains(words), "{text}: {error}");
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let d = digest(b"abc");
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_hex_digest(&hex(&d)), Some(d));
    }
}
