//! What an identity may touch: a set of sensor-id patterns, compiled once
//! when the tokens file is read, matched once per reading written and once
//! per read request.
//!
//! A pattern is a sensor id in which `*` stands for any run of characters
//! (none included): `kitchen-*`, `*-outdoor`, `floor-*-east`, `*`. Nothing
//! else is special, so an id is matched by itself. A pattern is compiled to
//! its literal pieces (the part before the first `*`, the part after the
//! last, the pieces between), and matching is a prefix test, a suffix test
//! and an in-order search for the middle pieces: no allocation, no regex,
//! a few byte comparisons for the usual `prefix-*`. Leftmost-first search
//! is exact for globs whose only wildcard is `*`: taking each middle piece
//! at its first occurrence leaves the most room for the pieces after it.

use std::fmt;

/// One compiled pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    shape: Shape,
}

#[derive(Clone, PartialEq, Eq)]
enum Shape {
    /// No `*`: this id only.
    Exact,
    /// `*`: every id.
    Any,
    /// `prefix*middle*…*suffix`.
    Glob {
        prefix: Box<str>,
        middle: Box<[Box<str>]>,
        suffix: Box<str>,
    },
}

impl Pattern {
    /// Compiles `text`; `None` for an empty pattern.
    pub fn new(text: &str) -> Option<Pattern> {
        if text.is_empty() {
            return None;
        }
        let shape = if !text.contains('*') {
            Shape::Exact
        } else if text.bytes().all(|b| b == b'*') {
            Shape::Any
        } else {
            let mut pieces: Vec<&str> = text.split('*').collect();
            // `split` on a text with a `*` yields at least two pieces.
            let suffix = pieces.pop().unwrap_or_default();
            let prefix = pieces.remove(0);
            Shape::Glob {
                prefix: prefix.into(),
                middle: pieces
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(Box::from)
                    .collect(),
                suffix: suffix.into(),
            }
        };
        Some(Pattern {
            text: text.into(),
            shape,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        match &self.shape {
            Shape::Exact => *self.text == *id,
            Shape::Any => true,
            Shape::Glob {
                prefix,
                middle,
                suffix,
            } => {
                if id.len() < prefix.len() + suffix.len()
                    || !id.starts_with(&**prefix)
                    || !id.ends_with(&**suffix)
                {
                    return false;
                }
                let mut rest = &id[prefix.len()..id.len() - suffix.len()];
                for piece in middle.iter() {
                    match rest.find(&**piece) {
                        Some(at) => rest = &rest[at + piece.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }

    /// The literal text every matching id starts with (the whole id for an
    /// exact pattern, `""` for one that starts with `*`).
    pub fn literal_prefix(&self) -> &str {
        match &self.shape {
            Shape::Exact => &self.text,
            Shape::Any => "",
            Shape::Glob { prefix, .. } => prefix,
        }
    }

    /// Whether no id other than [`literal_prefix`](Self::literal_prefix) itself matches.
    pub fn is_exact(&self) -> bool {
        matches!(self.shape, Shape::Exact)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// What one identity may write, or read: every sensor, some, or none.
#[derive(Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every sensor (a token line without scopes, `--token`, `--no-auth`).
    All,
    /// The sensors matching any of these (none, when empty).
    Only(Box<[Pattern]>),
}

impl Scope {
    /// Nothing at all (the scope a line that names only the other one leaves out).
    pub fn none() -> Scope {
        Scope::Only(Box::new([]))
    }

    /// The scope of these patterns; `*` among them makes it [`Scope::All`].
    pub fn of(patterns: Vec<Pattern>) -> Scope {
        if patterns.iter().any(|p| matches!(p.shape, Shape::Any)) {
            Scope::All
        } else {
            Scope::Only(patterns.into())
        }
    }

    /// Whether `id` is in the scope.
    #[inline]
    pub fn permits(&self, id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(patterns) => patterns.iter().any(|p| p.matches(id)),
        }
    }

    /// Whether this is every sensor.
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// The patterns, none for [`Scope::All`].
    pub fn patterns(&self) -> &[Pattern] {
        match self {
            Scope::All => &[],
            Scope::Only(patterns) => patterns,
        }
    }
}

/// As the tokens file writes it: `*`, `kitchen-*,hall`, or `(nothing)`.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Only(patterns) if patterns.is_empty() => f.write_str("(nothing)"),
            Scope::Only(patterns) => {
                for (i, p) in patterns.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(p.as_str())?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    #[test]
    fn patterns_match_as_globs_of_star_only() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "kitchen-1",
                &["kitchen-1"],
                &["kitchen-10", "kitchen-", "Kitchen-1"],
            ),
            (
                "kitchen-*",
                &["kitchen-", "kitchen-1", "kitchen-*x"],
                &["kitchen", "garage-1", "xkitchen-1"],
            ),
            (
                "*-outdoor",
                &["-outdoor", "roof-outdoor"],
                &["roof-outdoors", "outdoor"],
            ),
            (
                "floor-*-east",
                &["floor--east", "floor-2-east", "floor-2-east-east"],
                &["floor-east", "floor-2-west"],
            ),
            (
                "a*b*c",
                &["abc", "aXbYc", "abbc", "acbc"],
                &["ab", "acb", "bac"],
            ),
            ("a*ab", &["aab", "aXab"], &["ab", "a"]),
            ("*ab*ab*", &["abab", "XabYabZ"], &["aba", "ab"]),
            ("*", &["", "anything at all"], &[]),
            ("**", &["x"], &[]),
            ("é-*", &["é-1"], &["e-1"]),
        ];
        for (pattern, yes, no) in cases {
            let compiled = p(pattern);
            for id in *yes {
                assert!(compiled.matches(id), "{pattern} should match {id}");
            }
            for id in *no {
                assert!(!compiled.matches(id), "{pattern} should not match {id}");
            }
        }
        assert!(Pattern::new("").is_none());
    }

    #[test]
    fn scopes_permit_any_of_their_patterns_and_star_is_all() {
        let scope = Scope::of(vec![p("kitchen-*"), p("hall")]);
        assert!(scope.permits("kitchen-1") && scope.permits("hall"));
        assert!(!scope.permits("hall-2") && !scope.permits("garage-1"));
        assert_eq!(scope.to_string(), "kitchen-*,hall");
        assert!(Scope::of(vec![p("x"), p("*")]).is_all());
        assert!(!Scope::none().permits("kitchen-1"));
        assert_eq!(Scope::none().to_string(), "(nothing)");
        assert_eq!(p("kitchen-*").literal_prefix(), "kitchen-");
        assert_eq!(p("*-x").literal_prefix(), "");
        assert!(p("hall").is_exact() && !p("hall*").is_exact());
    }
}
