//! The key layout. Every key of one store starts with `base = prefix "{" prefix "}"`: the
//! configured prefix (so `SCAN MATCH prefix*` finds them) followed by a hash tag holding the
//! prefix again, so that every key of one store lands in ONE Redis Cluster slot and the
//! multi-key scripts stay legal there. After `base` comes a one-letter namespace and `:`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `base d:<id>` | string | one item ([`crate::codec`]) — ids only, nothing else lives under `d:` |
//! | `base n:<hex>:<path>` | string | a Merkle node: path node (`<hex>` empty) or bucket ([`crate::node`]) |
//! | `base m:log` | list | the change log: one blob of shadow-digest changes per written batch |
//! | `base m:pending` | string | number of logged changes not yet folded into the nodes |
//! | `base m:lock` | string | the fold lock (token, with an expiry) |
//!
//! `<hex>` is the bucket's nibbles in lower-case hex (`[0-9a-f]*`, no `:`), so `n:<hex>:` ends
//! at the first `:` after `n:` and the path is the rest, whatever characters it contains. User
//! ids (which may hold `:`, `{`, `}` or `*`) only ever follow `d:`, so no id can name a node or
//! metadata key, and the hash tag is closed before any id starts (Redis uses the FIRST `{...}`).

use sync_engine_core::ObjectId;

/// Longest accepted prefix, in bytes (keys repeat it twice).
pub const MAX_PREFIX_LEN: usize = 128;

/// Why a key prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The prefix is empty.
    #[error("redis_prefix must not be empty")]
    Empty,
    /// Longer than [`MAX_PREFIX_LEN`].
    #[error("redis_prefix is {0} bytes, longer than {MAX_PREFIX_LEN}")]
    TooLong(usize),
    /// Whitespace, control characters or braces (`{`, `}` would break the hash tag).
    #[error(
        "redis_prefix must not contain whitespace, control characters, '{{' or '}}': found {0:?}"
    )]
    BadChar(char),
}

/// The keys of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    base: String,
}

impl Keys {
    /// The key layout under `prefix`.
    pub(crate) fn new(prefix: &str) -> Result<Keys, PrefixError> {
        if prefix.is_empty() {
            return Err(PrefixError::Empty);
        }
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(PrefixError::TooLong(prefix.len()));
        }
        if let Some(c) =
            prefix.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '{' || *c == '}')
        {
            return Err(PrefixError::BadChar(c));
        }
        Ok(Keys { base: format!("{prefix}{{{prefix}}}") })
    }

    /// The common start of every key of this store (prefix and hash tag).
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The key of an item.
    pub(crate) fn data(&self, id: &ObjectId) -> String {
        let mut k = String::with_capacity(self.base.len() + 2 + id.as_str().len());
        k.push_str(&self.base);
        k.push_str("d:");
        k.push_str(id.as_str());
        k
    }

    /// The record key of a node: a path node (`bucket_hex` empty) or one of its buckets.
    pub(crate) fn node(&self, path: &str, bucket_hex: &str) -> String {
        let mut k = String::with_capacity(self.base.len() + 3 + bucket_hex.len() + path.len());
        k.push_str(&self.base);
        k.push_str("n:");
        k.push_str(bucket_hex);
        k.push(':');
        k.push_str(path);
        k
    }

    /// [`Keys::node`] of the bucket whose first `depth` nibbles are the top of `nibbles` (the
    /// fold names tens of thousands of nodes per round: no intermediate string).
    pub(crate) fn node_at(&self, path: &str, nibbles: u64, depth: u8) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let depth = usize::from(depth.min(16));
        let mut hex = [0u8; 16];
        for (i, c) in hex.iter_mut().take(depth).enumerate() {
            *c = HEX[((nibbles >> (60 - 4 * i)) & 0xf) as usize];
        }
        self.node(path, std::str::from_utf8(&hex[..depth]).unwrap_or_default())
    }

    /// The change log.
    pub(crate) fn log(&self) -> String {
        format!("{}m:log", self.base)
    }

    /// The count of changes not yet folded.
    pub(crate) fn pending(&self) -> String {
        format!("{}m:pending", self.base)
    }

    /// The write epoch: incremented by every write (script or transaction) that changes a data
    /// key, so that an optimistic write WATCHing it commits only on the data it read.
    pub(crate) fn epoch(&self) -> String {
        format!("{}w:epoch", self.base)
    }

    /// The fold lock.
    pub(crate) fn lock(&self) -> String {
        format!("{}m:lock", self.base)
    }

    /// The prefix of every data key (`base d:`).
    pub(crate) fn data_prefix(&self) -> String {
        format!("{}d:", self.base)
    }

    /// A `SCAN MATCH` pattern matching exactly the keys of this store.
    pub(crate) fn scan_pattern(&self) -> String {
        let mut p = String::with_capacity(self.base.len() * 2 + 1);
        glob_escape(&self.base, &mut p);
        p.push('*');
        p
    }

    /// A `SCAN MATCH` pattern matching exactly the data keys of the ids under the dotted path
    /// `path` (`""`: every id; `"a.b"`: ids starting with `a.b.`).
    pub(crate) fn data_scan_pattern(&self, path: &str) -> String {
        let mut p = String::with_capacity(self.base.len() * 2 + path.len() * 2 + 4);
        glob_escape(&self.base, &mut p);
        p.push_str("d:");
        if !path.is_empty() {
            glob_escape(path, &mut p);
            p.push('.');
        }
        p.push('*');
        p
    }
}

/// Append `s` to `out` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The first 16 nibbles of `segment_hash(segment)` as lower-case hex: an entry's bucket path
/// (bucket keys hold prefixes of it).
#[cfg(test)]
pub(crate) fn hash_prefix_hex(segment: &str) -> [u8; 16] {
    use sync_engine_core::merkle::segment_hash;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = segment_hash(segment);
    let mut out = [0u8; 16];
    for (i, b) in h.0.iter().take(8).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

/// Nibbles (each `0..16`) as lower-case hex; None if one is not a nibble.
pub(crate) fn nibbles_hex(nibbles: &[u8]) -> Option<String> {
    nibbles.iter().map(|&n| char::from_digit(u32::from(n), 16)).collect::<Option<String>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sync_engine_core::merkle::{nibble, segment_hash};

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(Keys::new(""), Err(PrefixError::Empty));
        assert_eq!(Keys::new("a{b"), Err(PrefixError::BadChar('{')));
        assert_eq!(Keys::new("a b"), Err(PrefixError::BadChar(' ')));
        assert!(matches!(Keys::new(&"x".repeat(200)), Err(PrefixError::TooLong(200))));
        assert_eq!(Keys::new("sync:").unwrap().base(), "sync:{sync:}");
    }

    #[test]
    fn scan_pattern_escapes_glob_characters() {
        let k = Keys::new("a*b?[c]\\:").unwrap();
        assert_eq!(k.scan_pattern(), "a\\*b\\?\\[c\\]\\\\:{a\\*b\\?\\[c\\]\\\\:}*");
    }

    #[test]
    fn data_scan_pattern_escapes_the_path_and_ends_at_a_dot() {
        let k = Keys::new("p*:").unwrap();
        assert_eq!(k.data_scan_pattern(""), "p\\*:{p\\*:}d:*");
        assert_eq!(k.data_scan_pattern("a?.[b]"), "p\\*:{p\\*:}d:a\\?.\\[b\\].*");
    }

    #[test]
    fn hash_prefix_matches_segment_hash_nibbles() {
        for seg in ["a", "items", "x:y{z}*", "ünï"] {
            let hex = hash_prefix_hex(seg);
            let h = segment_hash(seg);
            for (i, c) in hex.iter().enumerate() {
                assert_eq!(char::from(*c).to_digit(16), Some(u32::from(nibble(&h, i))));
            }
        }
        assert_eq!(nibbles_hex(&[0, 10, 15]).as_deref(), Some("0af"));
        assert_eq!(nibbles_hex(&[16]), None);
    }

    proptest! {
        /// The fold's key builder names exactly the node `node` names.
        #[test]
        fn node_at_equals_node_with_hex(path in "[a-z0-9:{}.]{0,12}", nibbles in any::<u64>(), depth in 0u8..=16) {
            let k = Keys::new("p:").unwrap();
            let hex: String = (0..u32::from(depth))
                .map(|i| char::from(b"0123456789abcdef"[((nibbles >> (60 - 4 * i)) & 0xf) as usize]))
                .collect();
            prop_assert_eq!(k.node_at(&path, nibbles, depth), k.node(&path, &hex));
        }
    }

    proptest! {
        /// No id, whatever it contains, yields a key outside the `d:` namespace, and two
        /// stores with different prefixes never share a key.
        #[test]
        fn ids_never_collide_with_internal_keys(
            segs in proptest::collection::vec("[a-z0-9:{}*?n-]{1,6}", 1..4),
            p1 in "[a-z:*]{1,6}", p2 in "[a-z:*]{1,6}",
        ) {
            let id = ObjectId::new(&segs.join(".")).unwrap();
            let (k1, k2) = (Keys::new(&p1).unwrap(), Keys::new(&p2).unwrap());
            let data = k1.data(&id);
            let rest = data.strip_prefix(k1.base()).unwrap();
            prop_assert!(rest.starts_with("d:"));
            prop_assert_eq!(&rest[2..], id.as_str());
            // The hash tag is the first `{...}`: the prefix, never part of the id.
            let open = data.find('{').unwrap();
            let close = open + data[open..].find('}').unwrap();
            prop_assert_eq!(&data[open + 1..close], p1.as_str());
            if p1 != p2 {
                prop_assert!(!data.starts_with(k2.base()));
                prop_assert!(!k2.node(id.as_str(), "").starts_with(k1.base()));
            }
        }
    }
}
