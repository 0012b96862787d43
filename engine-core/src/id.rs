//! Validated object ids: dotted paths such as `tenant.users.42`.
//!
//! An [`ObjectId`] is proof that its string passed validation, so no other layer checks it again.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default maximum length of an id, in bytes.
pub const DEFAULT_MAX_ID_LEN: usize = 255;
/// Largest maximum length any configuration may choose (bounds SQL key columns).
pub const HARD_MAX_ID_LEN: usize = 1024;

/// The rule an id broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// The id is the empty string.
    Empty,
    /// The id is longer than the maximum.
    TooLong {
        /// Length of the id in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A segment between dots is empty (leading, trailing or doubled dot).
    EmptySegment,
    /// A whitespace character.
    Whitespace,
    /// A control character (including NUL).
    Control,
}

/// Why a string is not a valid [`ObjectId`]: the rule broken and the byte offset where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object id {shown}: {} at byte {position}", describe(.rule))]
pub struct IdError {
    /// The rule broken.
    pub rule: IdRule,
    /// Byte offset of the offending character or segment (0 for empty / too long).
    pub position: usize,
    /// The id as shown in messages: escaped and cut to 64 characters.
    pub shown: String,
}

fn describe(rule: &IdRule) -> String {
    match rule {
        IdRule::Empty => "the id is empty".into(),
        IdRule::TooLong { len, max } => format!("the id is {len} bytes, over the maximum of {max}"),
        IdRule::EmptySegment => "empty segment (leading, trailing or doubled '.')".into(),
        IdRule::Whitespace => "whitespace is not allowed".into(),
        IdRule::Control => "control characters are not allowed".into(),
    }
}

fn shown(s: &str) -> String {
    let escaped: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        format!("\"{escaped}…\"")
    } else {
        format!("\"{escaped}\"")
    }
}

/// A validated object id: non-empty, at most the maximum length in bytes, dot-separated
/// non-empty segments, no whitespace and no control characters. Cheap to clone.
/// Ordered by bytes, which is the order every keyset scan uses.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(Arc<str>);

impl ObjectId {
    /// Validate `s` against the default maximum length ([`DEFAULT_MAX_ID_LEN`]).
    pub fn new(s: &str) -> Result<ObjectId, IdError> {
        Self::with_max_len(s, DEFAULT_MAX_ID_LEN)
    }

    /// Validate `s` against a maximum length in bytes.
    pub fn with_max_len(s: &str, max_len: usize) -> Result<ObjectId, IdError> {
        validate(s, max_len)?;
        Ok(ObjectId(Arc::from(s)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// True when the id starts with `prefix` (byte-wise, case-sensitive; no wildcards).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.0.as_bytes().starts_with(prefix.as_bytes())
    }
}

/// Check `s` against the id rules; the error names the first rule broken and where.
pub fn validate(s: &str, max_len: usize) -> Result<(), IdError> {
    let err = |rule, position| Err(IdError { rule, position, shown: shown(s) });
    if s.is_empty() {
        return err(IdRule::Empty, 0);
    }
    if s.len() > max_len {
        return err(IdRule::TooLong { len: s.len(), max: max_len }, 0);
    }
    let mut segment_start = 0;
    for (i, c) in s.char_indices() {
        if c.is_control() {
            return err(IdRule::Control, i);
        }
        if c.is_whitespace() {
            return err(IdRule::Whitespace, i);
        }
        if c == '.' {
            if i == segment_start {
                return err(IdRule::EmptySegment, i);
            }
            segment_start = i + 1;
        }
    }
    if segment_start == s.len() {
        return err(IdRule::EmptySegment, s.len());
    }
    Ok(())
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({:?})", &*self.0)
    }
}

impl AsRef<str> for ObjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ObjectId {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        ObjectId::new(s)
    }
}

impl std::str::FromStr for ObjectId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        ObjectId::new(s)
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    /// Deserialized ids are validated against [`HARD_MAX_ID_LEN`]: stored data never yields an
    /// id that could not have been written.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectId::with_max_len(&s, HARD_MAX_ID_LEN).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_dotted_paths() {
        for s in ["a", "tenant.users.42", "user_1", "a%b", "ns.x:y{z}*", "ünï.cödé"] {
            assert!(ObjectId::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn errors_name_rule_and_position() {
        let e = ObjectId::new("ab.cd e").unwrap_err();
        assert_eq!((e.rule, e.position), (IdRule::Whitespace, 5));
        assert!(e.to_string().contains("whitespace"), "{e}");
        let e = ObjectId::new("a..b").unwrap_err();
        assert_eq!((e.rule, e.position), (IdRule::EmptySegment, 2));
        let e = ObjectId::new("a.b.").unwrap_err();
        assert_eq!((e.rule, e.position), (IdRule::EmptySegment, 4));
        let e = ObjectId::new(".a").unwrap_err();
        assert_eq!((e.rule, e.position), (IdRule::EmptySegment, 0));
        let e = ObjectId::new("a\0b").unwrap_err();
        assert_eq!((e.rule, e.position), (IdRule::Control, 1));
        assert!(e.to_string().contains("\\0"), "NUL shown escaped: {e}");
        assert_eq!(ObjectId::new("").unwrap_err().rule, IdRule::Empty);
        let long = "x".repeat(256);
        let e = ObjectId::new(&long).unwrap_err();
        assert_eq!(e.rule, IdRule::TooLong { len: 256, max: 255 });
        assert!(ObjectId::new(&long[..255]).is_ok());
        assert!(ObjectId::with_max_len(&long, 300).is_ok());
    }

    #[test]
    fn deserialize_validates() {
        let ok: Result<ObjectId, _> = serde_json::from_str("\"a.b\"");
        assert!(ok.is_ok());
        let bad: Result<ObjectId, _> = serde_json::from_str("\"a..b\"");
        assert!(bad.is_err());
    }

    fn reference_valid(s: &str, max: usize) -> bool {
        !s.is_empty()
            && s.len() <= max
            && s.split('.').all(|seg| !seg.is_empty())
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    }

    proptest! {
        #[test]
        fn validation_matches_the_rules(s in "\\PC{0,12}|[a-z._ \\t\\x00]{0,12}", max in 1usize..16) {
            let ours = ObjectId::with_max_len(&s, max);
            prop_assert_eq!(ours.is_ok(), reference_valid(&s, max));
            if let Err(e) = ours {
                prop_assert!(e.position <= s.len());
                prop_assert!(s.is_char_boundary(e.position));
            }
        }

        #[test]
        fn valid_ids_round_trip(segs in proptest::collection::vec("[a-zA-Z0-9_%:{}*-]{1,8}", 1..6)) {
            let s = segs.join(".");
            let id = ObjectId::new(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(id.segments().count(), segs.len());
        }
    }
}
