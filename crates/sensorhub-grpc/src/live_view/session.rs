//! Sessions of the live view, and the rate limit on logging in.
//!
//! A login exchanges a token of the server's set for a session: 128 random
//! bits from the operating system's generator, sent as an `HttpOnly`,
//! `SameSite=Strict` cookie and mapped here to the digest of the token that
//! opened it. Each request looks the digest up in the current set, so the
//! session acts as the token's identity (issue 20's `read=` scope decides
//! which sensors it sees) as the set says now, SIGHUP included. The token itself is never stored, put in a cookie or a URL,
//! or sent back. A session ends after [`IDLE`] without a request, after
//! [`LIFETIME`] in any case, at logout, or as soon as its token leaves the
//! set (a SIGHUP that removed it). At most [`MAX_SESSIONS`] are held; a new
//! one then replaces the one seen least recently.
//!
//! Login attempts are limited per peer address (governor, keyed): a burst
//! of [`LOGIN_BURST`], then one per [`LOGIN_PERIOD`]. Every attempt counts,
//! so a guesser cannot learn anything while limited; a person logs in once.
//! Behind a reverse proxy every login shares the proxy's address, which only
//! makes the limit stricter.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use governor::{Quota, RateLimiter, clock::Clock as _};
use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::{Identity, TokenCheck, TokenDigest};

pub const COOKIE: &str = "sensorhub_session";
pub const IDLE: Duration = Duration::from_secs(3600);
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);
pub const MAX_SESSIONS: usize = 1024;
pub const LOGIN_BURST: u32 = 5;
pub const LOGIN_PERIOD: Duration = Duration::from_secs(12);
/// Peers the login limiter remembers before it forgets idle ones.
const MAX_LIMITED_PEERS: usize = 10_000;

/// A session id: what the cookie carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 16]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(redacted)")
    }
}

impl SessionId {
    fn random(rng: &SystemRandom) -> Option<Self> {
        let mut id = [0; 16];
        rng.fill(&mut id).ok()?;
        Some(SessionId(id))
    }

    /// The cookie value: 32 hex digits.
    pub fn to_cookie_value(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses a cookie value; anything but 32 hex digits is no session.
    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&value[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(SessionId(id))
    }

    /// The session id in a `Cookie` header, if any.
    pub fn from_cookie_header(header: &str) -> Option<Self> {
        header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .and_then(|(_, value)| Self::parse(value.trim()))
    }
}

#[derive(Debug)]
struct Session {
    /// `None` with `--no-auth` (every visitor is let in).
    who: Option<TokenDigest>,
    opened: Instant,
    seen: Instant,
}

/// The sessions this server has opened.
#[derive(Debug)]
pub struct Sessions {
    tokens: TokenCheck,
    rng: SystemRandom,
    open: Mutex<HashMap<SessionId, Session>>,
}

impl Sessions {
    pub fn new(tokens: TokenCheck) -> Self {
        Self {
            tokens,
            rng: SystemRandom::new(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a login is needed at all (false with `--no-auth`).
    pub fn login_required(&self) -> bool {
        self.tokens.has_tokens()
    }

    /// Opens a session for `presented` if the server accepts it as a token.
    pub fn login(&self, presented: &[u8], now: Instant) -> Option<SessionId> {
        let (who, _) = self.tokens.login(presented)?;
        self.open_session(Some(who), now)
    }

    /// Opens a session for a visitor of a server that needs no token.
    pub fn open_without_token(&self, now: Instant) -> Option<SessionId> {
        if self.login_required() {
            return None;
        }
        self.open_session(None, now)
    }

    fn open_session(&self, who: Option<TokenDigest>, now: Instant) -> Option<SessionId> {
        let id = SessionId::random(&self.rng)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| alive(s, now));
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.seen).map(|(id, _)| *id)
        {
            open.remove(&oldest);
        }
        open.insert(
            id,
            Session {
                who,
                opened: now,
                seen: now,
            },
        );
        Some(id)
    }

    /// The identity of `id` if it is a live session whose token the set
    /// still holds; marks it seen. A dead session is forgotten.
    pub fn check(&self, id: SessionId, now: Instant) -> Option<Arc<Identity>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let session = open.get_mut(&id)?;
        let identity = match &session.who {
            Some(who) => self.tokens.identity_of_login(who),
            None => (!self.tokens.has_tokens()).then(|| self.tokens.anonymous()),
        };
        match identity {
            Some(identity) if alive(session, now) => {
                session.seen = now;
                Some(identity)
            }
            _ => {
                open.remove(&id);
                None
            }
        }
    }

    pub fn logout(&self, id: SessionId) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.saturating_duration_since(session.opened) < LIFETIME
        && now.saturating_duration_since(session.seen) < IDLE
}

type PeerLimiter = RateLimiter<
    IpAddr,
    governor::state::keyed::HashMapStateStore<IpAddr>,
    governor::clock::DefaultClock,
>;

/// The limit on failed logins, per peer address.
#[derive(Debug)]
pub struct LoginLimiter {
    limiter: PeerLimiter,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        let quota = Quota::with_period(LOGIN_PERIOD)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(LOGIN_BURST).expect("non-zero"));
        Self {
            limiter: RateLimiter::hashmap(quota),
        }
    }
}

impl LoginLimiter {
    /// Takes one login attempt for `peer`, or says how long it must wait.
    /// Every attempt counts, right or wrong: checking the token first would
    /// tell a limited peer whether its guess was right.
    pub fn attempt(&self, peer: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&peer)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets peers whose limit has fully recovered, when many are held.
    pub fn prune(&self) {
        if self.limiter.len() > MAX_LIMITED_PEERS {
            self.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenSet;

    fn sessions() -> (Sessions, TokenCheck) {
        let check = TokenCheck::new(Some(TokenSet::new(["right", "other"]).unwrap()), None);
        (Sessions::new(check.clone()), check)
    }

    #[test]
    fn a_token_of_the_set_opens_a_session_and_a_wrong_one_does_not() {
        let (sessions, _) = sessions();
        let now = Instant::now();
        assert!(sessions.login(b"wrong", now).is_none());
        let id = sessions.login(b"right", now).unwrap();
        assert!(sessions.check(id, now).is_some());
        let cookie = id.to_cookie_value();
        assert_eq!(cookie.len(), 32);
        assert!(!cookie.contains("right"));
        assert_eq!(SessionId::parse(&cookie), Some(id));
        assert_eq!(
            SessionId::from_cookie_header(&format!("a=b; {COOKIE}={cookie}; c=d")),
            Some(id)
        );
        assert_ne!(
            sessions.login(b"right", now),
            Some(id),
            "each login its own id"
        );
        sessions.logout(id);
        assert!(sessions.check(id, now).is_none());
    }

    #[test]
    fn sessions_expire_idle_or_old_or_with_their_token() {
        let (sessions, check) = sessions();
        let start = Instant::now();
        let idle = sessions.login(b"right", start).unwrap();
        assert!(
            sessions.check(idle, start + IDLE).is_none(),
            "idle too long"
        );

        let busy = sessions.login(b"right", start).unwrap();
        let mut now = start;
        while now < start + LIFETIME - IDLE {
            now += IDLE / 2;
            assert!(sessions.check(busy, now).is_some());
        }
        assert!(
            sessions.check(busy, start + LIFETIME).is_none(),
            "too old, however busy"
        );

        let revoked = sessions.login(b"other", start).unwrap();
        let kept = sessions.login(b"right", start).unwrap();
        check.replace(TokenSet::new(["right"]).unwrap());
        assert!(
            sessions.check(revoked, start).is_none(),
            "its token was removed"
        );
        assert!(sessions.check(kept, start).is_some());
    }

    #[test]
    fn sessions_are_bounded() {
        let (sessions, _) = sessions();
        let start = Instant::now();
        let first = sessions.login(b"right", start).unwrap();
        for i in 1..=MAX_SESSIONS as u32 {
            sessions
                .login(b"right", start + Duration::from_millis(i.into()))
                .unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions
                .check(first, start + Duration::from_secs(2))
                .is_none(),
            "replaced"
        );
    }

    #[test]
    fn login_attempts_are_limited_per_peer() {
        let limiter = LoginLimiter::default();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..LOGIN_BURST {
            assert!(limiter.attempt(peer).is_ok());
        }
        let wait = limiter.attempt(peer).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= LOGIN_PERIOD, "{wait:?}");
        assert!(
            limiter.attempt("192.0.2.2".parse().unwrap()).is_ok(),
            "per peer"
        );
    }

    #[test]
    fn malformed_cookies_are_no_session() {
        for value in ["", "zz", &"g".repeat(32), &"a".repeat(31), &"a".repeat(33)] {
            assert_eq!(SessionId::parse(value), None, "{value}");
        }
    }

    #[test]
    fn without_tokens_every_visitor_gets_a_session_and_no_token_opens_one() {
        let sessions = Sessions::new(TokenCheck::new(None, None));
        let now = Instant::now();
        assert!(!sessions.login_required());
        assert!(sessions.login(b"anything", now).is_none());
        let id = sessions.open_without_token(now).unwrap();
        assert!(sessions.check(id, now).is_some());
        let (with_tokens, _) = self::sessions();
        assert!(with_tokens.open_without_token(now).is_none());
    }
}
