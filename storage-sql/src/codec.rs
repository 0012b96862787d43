//! How values are laid out in SQL columns, shared by every driver.
//!
//! - `u64` values (versions, timestamps, segment hashes) live in signed `BIGINT` columns on
//!   SQLite and PostgreSQL, stored *sign-flipped* (`x ^ 2^63` read as `i64`): the map is a
//!   bijection that preserves order, so `ORDER BY`, range predicates and the newer-wins tuple
//!   comparison work in SQL for the whole `u64` range. MySQL uses `BIGINT UNSIGNED` directly.
//! - Digests and accumulators are 32-byte binary strings ([`Acc::to_bytes`], little-endian).
//! - A bucket is the text of its nibbles in lower-case hex (`"3af"`), so its byte order is its
//!   nibble order; the path node itself has no bucket row.
//! - Every entry (leaf item or child path node) carries `seghash`: the first 64 bits of
//!   `segment_hash(last segment)`, big-endian, so the entries of bucket `b` are one range.

use sync_engine_core::merkle::{segment_hash, Acc, Digest, NodeValue};

use crate::error::{Failure, Fallible};

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
const FLIP: u64 = 1 << 63;

/// Order-preserving `u64` → `i64` (for signed BIGINT columns).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn to_ord(x: u64) -> i64 {
    (x ^ FLIP) as i64
}

/// Inverse of [`to_ord`].
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn from_ord(x: i64) -> u64 {
    (x as u64) ^ FLIP
}

/// Deepest bucket level this store materializes: `seghash` keeps 16 nibbles.
pub(crate) const MAX_STORED_DEPTH: usize = 16;

/// The first 64 bits of `segment_hash(segment)`, big-endian.
pub(crate) fn seg_hash(segment: &str) -> u64 {
    let h = segment_hash(segment);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.0[..8]);
    u64::from_be_bytes(b)
}

/// Nibble `i` (< 16) of a 64-bit segment hash prefix.
pub(crate) fn nibble_at(hash: u64, i: usize) -> u8 {
    ((hash >> (60 - 4 * i)) & 0x0f) as u8
}

/// The first `depth` (≤ 16) nibbles of `hash`.
pub(crate) fn nibbles_of(hash: u64, depth: usize) -> Vec<u8> {
    (0..depth.min(MAX_STORED_DEPTH)).map(|i| nibble_at(hash, i)).collect()
}

/// The inclusive `seghash` range of the entries in bucket `nibbles` (only its first 16
/// nibbles narrow the range; deeper ones are filtered by the caller).
pub(crate) fn bucket_range(nibbles: &[u8]) -> (u64, u64) {
    let k = nibbles.len().min(MAX_STORED_DEPTH);
    if k == 0 {
        return (0, u64::MAX);
    }
    let mut lo = 0u64;
    for (i, &n) in nibbles.iter().take(k).enumerate() {
        lo |= u64::from(n & 0x0f) << (60 - 4 * i);
    }
    let span = if k == MAX_STORED_DEPTH { 0 } else { u64::MAX >> (4 * k) };
    (lo, lo | span)
}

/// The bucket column text of `nibbles` (`[3, 10, 15]` → `"3af"`).
pub(crate) fn bucket_text(nibbles: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    nibbles.iter().map(|&n| char::from(HEX[usize::from(n & 0x0f)])).collect()
}

/// Inverse of [`bucket_text`]; refuses anything but lower-case hex digits.
pub(crate) fn parse_bucket(text: &str) -> Fallible<Vec<u8>> {
    text.bytes()
        .map(|b| match b {
            b'0'..=b'9' => Ok(b - b'0'),
            b'a'..=b'f' => Ok(b - b'a' + 10),
            _ => Err(Failure::Corrupt(format!("stored bucket {text:?} is not lower-case hex"))),
        })
        .collect()
}

/// A 32-byte digest from a stored column.
pub(crate) fn digest_from(bytes: &[u8], what: &str) -> Fallible<Digest> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| {
        Failure::Corrupt(format!("stored {what} is {} bytes, expected 32", bytes.len()))
    })?;
    Ok(Digest(arr))
}

/// A node value from its stored accumulator and count.
pub(crate) fn value_from(acc: &[u8], count: i64, what: &str) -> Fallible<NodeValue> {
    let d = digest_from(acc, what)?;
    let count = u64::try_from(count)
        .map_err(|_| Failure::Corrupt(format!("stored count of {what} is negative: {count}")))?;
    Ok(NodeValue { acc: Acc::from_bytes(&d.0), count })
}

/// `(parent path, last segment)` of a validated id (`"a.b.c"` → `("a.b", "c")`, `"a"` →
/// `("", "a")`).
pub(crate) fn split_last(id: &str) -> (&str, &str) {
    match id.rfind('.') {
        Some(i) => (&id[..i], &id[i + 1..]),
        None => ("", id),
    }
}

/// The segment of entry `full` (an id or a path) under `parent`.
pub(crate) fn segment_under<'a>(parent: &str, full: &'a str) -> Fallible<&'a str> {
    let rest = if parent.is_empty() {
        Some(full)
    } else {
        full.strip_prefix(parent).and_then(|r| r.strip_prefix('.'))
    };
    match rest {
        Some(seg) if !seg.is_empty() && !seg.contains('.') => Ok(seg),
        _ => {
            Err(Failure::Corrupt(format!("stored entry {full:?} is not directly under {parent:?}")))
        }
    }
}

/// The smallest string greater than every string starting with `prefix`, in byte order; None
/// when no such string exists (empty prefix, or a prefix of only U+10FFFF).
///
/// UTF-8 byte order is code-point order, so incrementing the last character that can be
/// incremented (and dropping what follows) gives the successor as a valid string, which every
/// column type (TEXT in a UTF-8 database included) can hold.
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The id range of a keyset page: a lower bound (inclusive or exclusive) and an optional
/// exclusive upper bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    /// Lower bound.
    pub lower: String,
    /// True when the lower bound itself is excluded (`id > lower`).
    pub lower_exclusive: bool,
    /// Exclusive upper bound (`id < upper`), None for unbounded.
    pub upper: Option<String>,
}

impl KeyRange {
    /// The ids starting with `prefix` and strictly after `after` (if given).
    pub(crate) fn new(prefix: &str, after: Option<&str>) -> KeyRange {
        let upper = prefix_successor(prefix);
        match after {
            Some(a) if a >= prefix => {
                KeyRange { lower: a.to_owned(), lower_exclusive: true, upper }
            }
            _ => KeyRange { lower: prefix.to_owned(), lower_exclusive: false, upper },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sync_engine_core::merkle::nibble;

    proptest! {
        #[test]
        fn ord_encoding_preserves_order(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(a.cmp(&b), to_ord(a).cmp(&to_ord(b)));
            prop_assert_eq!(from_ord(to_ord(a)), a);
        }

        #[test]
        fn bucket_range_holds_exactly_its_hashes(seg in "[a-z0-9]{1,8}", depth in 0usize..=16, other in any::<u64>()) {
            let h = seg_hash(&seg);
            let nib = nibbles_of(h, depth);
            let (lo, hi) = bucket_range(&nib);
            prop_assert!(lo <= h && h <= hi);
            let inside = (0..depth).all(|i| nibble_at(other, i) == nib[i]);
            prop_assert_eq!(inside, lo <= other && other <= hi);
            // seg_hash nibbles are segment_hash nibbles.
            let full = segment_hash(&seg);
            for (i, n) in nib.iter().enumerate() {
                prop_assert_eq!(*n, nibble(&full, i));
            }
            prop_assert_eq!(parse_bucket(&bucket_text(&nib)).unwrap(), nib);
        }

        #[test]
        fn successor_bounds_exactly_the_prefixed_strings(prefix in "\\PC{0,4}", s in "\\PC{0,6}") {
            match prefix_successor(&prefix) {
                Some(succ) => {
                    let inside = s.as_str() >= prefix.as_str() && s.as_str() < succ.as_str();
                    prop_assert_eq!(inside, s.starts_with(prefix.as_str()));
                }
                None => prop_assert!(prefix.chars().all(|c| c == char::MAX)),
            }
        }
    }

    #[test]
    fn successor_edge_cases() {
        assert_eq!(prefix_successor("user_1").as_deref(), Some("user_2"));
        assert_eq!(prefix_successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }

    #[test]
    fn segments_and_ranges() {
        assert_eq!(split_last("a.b.c"), ("a.b", "c"));
        assert_eq!(split_last("a"), ("", "a"));
        assert_eq!(segment_under("a.b", "a.b.c").unwrap(), "c");
        assert_eq!(segment_under("", "a").unwrap(), "a");
        assert!(segment_under("a", "ab.c").is_err());
        assert!(segment_under("a", "a.b.c").is_err());
        let r = KeyRange::new("p.", Some("p.k5"));
        assert!(r.lower_exclusive && r.lower == "p.k5");
        let r = KeyRange::new("p.", Some("a"));
        assert!(!r.lower_exclusive && r.lower == "p.");
        assert_eq!(bucket_range(&[0xf; 16]), (u64::MAX, u64::MAX));
        assert_eq!(bucket_range(&[1]), (0x1000_0000_0000_0000, 0x1fff_ffff_ffff_ffff));
        assert!(parse_bucket("3G").is_err());
    }
}
