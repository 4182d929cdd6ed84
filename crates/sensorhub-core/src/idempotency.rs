//! Idempotency keys: a write retried after an unknown outcome is stored once.
//!
//! Why: a client whose deadline expires, or whose connection drops, cannot
//! tell whether its readings were stored (the server may have made them
//! durable a moment after the client gave up). Retrying would store them
//! twice. With a key, the retry stores only what the first attempt did not.
//!
//! The semantics, in domain terms (any store keeps them: the embedded one
//! here, replicas later):
//! - A key names one sequence of readings, the *keyed sequence*. A write
//!   with a key presents a *part* of it: readings `offset..offset + n`,
//!   with the [`Fingerprint`] of readings `0..offset` (`before`) and of
//!   `0..offset + n` (`after`). A unary call is the part `0..1`; a client
//!   stream presents its chunks as consecutive parts.
//! - Per key the store keeps [`KeyState`]: how long a prefix of the
//!   sequence is durable (`through`), and that prefix's fingerprint. It is
//!   made durable in the same commit as the readings it counts.
//! - A part is stored from `through` on: its readings before `through`
//!   were stored by an earlier attempt and are skipped ([`decide`]). So a
//!   retry of a call whose first attempt stored `k` readings stores only
//!   those from index `k` on, and both answer with the full count.
//! - Where a part reaches `through` from below, its fingerprint there must
//!   be the stored one; if not, the key was used for other readings, and
//!   the part is refused ([`Decision::Conflict`]) without storing anything.
//! - Keys are remembered for [`KeyLimits::window`] after their first use,
//!   and at most [`KeyLimits::max_keys`] at once (the oldest go first). A
//!   retry after that is a new write.
//!
//! Invariant: a write without a key costs nothing here.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    hash::Hasher,
    time::Duration,
};

use crate::Reading;

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// A key as a client sent it, checked: 1 to [`MAX_KEY_BYTES`] bytes of
/// ASCII letters, digits and `-_.:/+=`, which covers UUIDs, ULIDs and
/// base64 (URL-safe or not).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a key was refused, in words a client author can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KeyError(format!(
                "must be 1 to {MAX_KEY_BYTES} bytes long, got {}",
                key.len()
            )));
        }
        if let Some(bad) = key.bytes().position(|b| !allowed(b)) {
            return Err(KeyError(format!(
                "byte {bad} is not allowed: use ASCII letters, digits and -_.:/+= (a UUID, for example)"
            )));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b)
}

/// A running fingerprint of readings in order (64-bit FNV-1a over each
/// reading's fields, little-endian): the same for the same readings
/// however they are split into parts, and stable across versions, since
/// it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of no readings.
    pub const EMPTY: Fingerprint = Fingerprint(0xcbf2_9ce4_8422_2325);

    /// The fingerprint of the readings so far and then `readings`.
    pub fn then<'a>(self, readings: impl IntoIterator<Item = &'a Reading>) -> Fingerprint {
        let mut hasher = fnv::FnvHasher::with_key(self.0);
        for r in readings {
            hasher.write(&(r.sensor_id.len() as u16).to_le_bytes());
            hasher.write(r.sensor_id.as_bytes());
            hasher.write(&r.timestamp.to_le_bytes());
            hasher.write(&r.temperature.to_bits().to_le_bytes());
        }
        Fingerprint(hasher.finish())
    }
}

/// One keyed write: readings `offset..offset + n` of the key's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedPart {
    pub key: IdempotencyKey,
    pub offset: u64,
    /// The fingerprint of readings `0..offset`.
    pub before: Fingerprint,
    /// The fingerprint of readings `0..offset + n` (the caller keeps a
    /// running fingerprint anyway, for its next part's `before`).
    pub after: Fingerprint,
}

impl KeyedPart {
    /// The part `offset..offset + readings.len()` of `key`'s sequence, whose
    /// earlier readings have the fingerprint `before`.
    pub fn new(
        key: IdempotencyKey,
        offset: u64,
        before: Fingerprint,
        readings: &[Reading],
    ) -> Self {
        Self {
            key,
            offset,
            before,
            after: before.then(readings),
        }
    }
}

/// What a store keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    /// Readings `0..through` of the key's sequence are durable.
    pub through: u64,
    /// The fingerprint of those readings.
    pub fingerprint: Fingerprint,
    /// The sequence number of the first reading ever stored under the key
    /// (a stable name for its state, and the order keys expire in).
    pub first_seq: u64,
    /// When the key was first used, Unix seconds.
    pub first_used: i64,
}

/// What to do with a part, given what the store holds for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Skip the part's first `skip` readings (an earlier attempt stored
    /// them) and store the rest.
    Store { skip: usize },
    /// The key holds other readings than this part says; store nothing.
    Conflict(String),
}

/// Decides a part (`readings`, presented as `part`) against the key's state.
pub fn decide(state: Option<&KeyState>, part: &KeyedPart, readings: &[Reading]) -> Decision {
    let Some(state) = state else {
        // A new key, or one forgotten since this attempt's earlier parts:
        // those were stored in order before this one, so all of it is new.
        return Decision::Store { skip: 0 };
    };
    let (offset, n) = (part.offset, readings.len() as u64);
    if state.through < offset {
        // The key's state was forgotten and started again by another
        // attempt; this attempt's own earlier parts came first.
        return Decision::Store { skip: 0 };
    }
    let skip = (state.through - offset).min(n) as usize;
    // Where this part reaches the end of what the key holds, the readings
    // up to there must be the same.
    if state.through <= offset + n {
        let at = match skip {
            0 => part.before,
            _ if skip == readings.len() => part.after,
            _ => part.before.then(&readings[..skip]),
        };
        if at != state.fingerprint {
            return Decision::Conflict(format!(
                "this key already stored {} readings, and they differ from this call's; a key names one set of readings, use a new key for new readings",
                state.through
            ));
        }
    }
    Decision::Store { skip }
}

/// What `part` (of `readings`) makes of its key's state, if it stores
/// any reading: the first of them gets sequence number `first_seq`, at
/// `now` (Unix seconds). `None` if it stores none (all were stored).
pub fn next_state(
    state: Option<&KeyState>,
    part: &KeyedPart,
    readings: &[Reading],
    skip: usize,
    first_seq: u64,
    now: i64,
) -> Option<KeyState> {
    if skip == readings.len() {
        return None;
    }
    Some(KeyState {
        through: part.offset + readings.len() as u64,
        fingerprint: part.after,
        first_seq: state.map_or(first_seq, |s| s.first_seq),
        first_used: state.map_or(now, |s| s.first_used),
    })
}

/// How many keys are remembered, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    pub max_keys: usize,
    pub window: Duration,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            max_keys: 100_000,
            window: Duration::from_secs(24 * 3600),
        }
    }
}

/// The keys a store remembers, bounded by [`KeyLimits`]: a map by key and
/// the keys in the order of their first use, which is the order they go.
#[derive(Debug, Default, Clone)]
pub struct KeyRegistry {
    limits: KeyLimits,
    by_key: HashMap<String, KeyState>,
    /// (first_seq, key), oldest first.
    order: VecDeque<(u64, String)>,
}

impl KeyRegistry {
    pub fn new(limits: KeyLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&KeyState> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Records `state` for `key`: a new key, or one whose state moved on.
    pub fn insert(&mut self, key: &str, state: KeyState) {
        if self.by_key.insert(key.to_owned(), state).is_none() {
            self.order.push_back((state.first_seq, key.to_owned()));
        }
    }

    /// Forgets keys past the limits at `now` (Unix seconds), oldest first;
    /// returns their `first_seq`s (how their stored states are named).
    pub fn expire(&mut self, now: i64) -> Vec<u64> {
        let oldest_kept = now.saturating_sub(self.limits.window.as_secs() as i64);
        let mut gone = Vec::new();
        while let Some((first_seq, key)) = self.order.front() {
            let too_many = self.order.len() > self.limits.max_keys;
            let too_old = self
                .by_key
                .get(key)
                .is_none_or(|s| s.first_used < oldest_kept);
            if !too_many && !too_old {
                break;
            }
            gone.push(*first_seq);
            self.by_key.remove(key);
            self.order.pop_front();
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: i64) -> Reading {
        Reading {
            sensor_id: "s".into(),
            temperature: 20.0 + i as f64,
            timestamp: 1_700_000_000 + i,
        }
    }

    /// The part of `readings` (the whole sequence) from `offset`, `n` long.
    fn part(readings: &[Reading], offset: usize, n: usize) -> (KeyedPart, &[Reading]) {
        let before = Fingerprint::EMPTY.then(&readings[..offset]);
        let this = &readings[offset..offset + n];
        let key = IdempotencyKey::parse("k").unwrap();
        (KeyedPart::new(key, offset as u64, before, this), this)
    }

    fn state(readings: &[Reading]) -> KeyState {
        KeyState {
            through: readings.len() as u64,
            fingerprint: Fingerprint::EMPTY.then(readings),
            first_seq: 1,
            first_used: 1_700_000_000,
        }
    }

    #[test]
    fn keys_are_checked() {
        for good in [
            "a",
            "0f8e1c52-3d6b-4a59-9c0e-6f1d2b7a8c90",
            "01J9Z3K4ZQ",
            "ab+/=",
            &"k".repeat(128),
        ] {
            assert!(IdempotencyKey::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "ü", "tab\t", "nul\0", &"k".repeat(129)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_fingerprint_does_not_depend_on_how_readings_are_split() {
        let readings: Vec<Reading> = (0..10).map(reading).collect();
        let whole = Fingerprint::EMPTY.then(&readings);
        let split = Fingerprint::EMPTY.then(&readings[..3]).then(&readings[3..]);
        assert_eq!(whole, split);
        assert_ne!(whole, Fingerprint::EMPTY.then(&readings[1..]));
        // Stable: stored state is compared with it after an upgrade.
        assert_eq!(
            Fingerprint::EMPTY.then(&readings[..1]),
            Fingerprint(0x9187_cf74_b913_223e)
        );
    }

    #[test]
    fn a_retry_stores_only_what_the_first_attempt_did_not() {
        let readings: Vec<Reading> = (0..10).map(reading).collect();
        let decide_part = |state: Option<&KeyState>, offset, n| {
            let (part, this) = part(&readings, offset, n);
            decide(state, &part, this)
        };
        // Nothing known: everything is stored.
        assert_eq!(decide_part(None, 0, 10), Decision::Store { skip: 0 });
        // The first attempt stored 4: a retry from 0 skips them.
        let four = state(&readings[..4]);
        assert_eq!(decide_part(Some(&four), 0, 10), Decision::Store { skip: 4 });
        // Its parts: the first (0..3) is all stored, the second (3..6) partly.
        assert_eq!(decide_part(Some(&four), 0, 3), Decision::Store { skip: 3 });
        assert_eq!(decide_part(Some(&four), 3, 3), Decision::Store { skip: 1 });
        assert_eq!(decide_part(Some(&four), 0, 4), Decision::Store { skip: 4 });
        // A part after what is stored: all new.
        assert_eq!(decide_part(Some(&four), 4, 6), Decision::Store { skip: 0 });
        // Everything stored: a retry stores nothing.
        let all = state(&readings);
        assert_eq!(decide_part(Some(&all), 0, 10), Decision::Store { skip: 10 });
        // What a part that stores leaves: through its end, its fingerprint.
        let (p, this) = part(&readings, 3, 3);
        let next = next_state(Some(&four), &p, this, 1, 99, 5).unwrap();
        assert_eq!(
            (next.through, next.fingerprint),
            (6, Fingerprint::EMPTY.then(&readings[..6]))
        );
        assert_eq!(
            (next.first_seq, next.first_used),
            (four.first_seq, four.first_used)
        );
        assert_eq!(next_state(Some(&four), &p, this, 3, 99, 5), None);
    }

    #[test]
    fn a_key_used_for_other_readings_is_a_conflict() {
        let readings: Vec<Reading> = (0..10).map(reading).collect();
        let other: Vec<Reading> = (100..110).map(reading).collect();
        let four = state(&readings[..4]);
        for (offset, n) in [(0, 10), (0, 4), (2, 4), (4, 2)] {
            let (p, this) = part(&other, offset, n);
            let decision = decide(Some(&four), &p, this);
            if offset + n < 4 {
                continue;
            }
            assert!(
                matches!(decision, Decision::Conflict(_)),
                "{offset}+{n}: {decision:?}"
            );
        }
    }

    #[test]
    fn keys_expire_by_age_and_by_count_oldest_first() {
        let mut keys = KeyRegistry::new(KeyLimits {
            max_keys: 3,
            window: Duration::from_secs(100),
        });
        for i in 0..5u64 {
            let mut s = state(&[reading(i as i64)]);
            s.first_seq = i + 1;
            s.first_used = 1_000 + i as i64 * 10;
            keys.insert(&format!("k{i}"), s);
        }
        // Two too many: the two oldest go.
        assert_eq!(keys.expire(1_040), vec![1, 2]);
        assert_eq!(keys.len(), 3);
        assert!(keys.get("k1").is_none() && keys.get("k2").is_some());
        // An update of a known key keeps its place.
        let mut s = *keys.get("k2").unwrap();
        s.through = 7;
        keys.insert("k2", s);
        assert_eq!(keys.get("k2").unwrap().through, 7);
        // 100 s after k2's first use (1020), it goes; k3 (1030) stays.
        assert_eq!(keys.expire(1_121), vec![3]);
        assert!(keys.get("k3").is_some());
    }
}
