//! The byte layout of one stored item: a fixed binary header followed by the state tag and the
//! payload, all in ONE Redis string, so that the write script reads the stored stamp and leaf
//! digest with the same `MGET` that a reader uses to fetch the item.
//!
//! ```text
//! offset  len  field
//!      0    1  format byte (FORMAT = 1)
//!      1    1  flags: bit 0 tombstone, bit 1 "in the Merkle shadow" (written without TTL, live)
//!      2    8  version, big-endian (so the script compares it as two u32)
//!     10   32  content hash (SHA-256 of the payload)
//!     42    8  updated_at (unix ms), big-endian
//!     50   32  leaf digest (what the shadow holds for this item; the script cannot hash)
//!     82    2  state tag length, big-endian
//!     84    n  state tag (UTF-8), then the payload to the end
//! ```
//!
//! The Lua scripts read these offsets (1-based there: version at 3, hash at 11, digest at 51).

use bytes::Bytes;
use sync_engine_core::{ContentHash, ObjectId, Stamp, SyncItem};

/// Format byte leading every stored value.
pub(crate) const FORMAT: u8 = 1;
/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 84;
/// Flag bit: the item is a tombstone.
pub(crate) const FLAG_TOMBSTONE: u8 = 1;
/// Flag bit: the item counts in the Merkle shadow (written without TTL and not a tombstone).
pub(crate) const FLAG_SHADOW: u8 = 2;

/// Why stored bytes are not an item this crate wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Shorter than the fixed header.
    #[error("stored value is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// Unknown format byte (another program's value, or a newer format).
    #[error("stored value has format byte {0}, expected {FORMAT}")]
    Format(u8),
    /// The state tag runs past the end of the value.
    #[error("stored state tag of {0} bytes runs past the end of the value")]
    StateLength(usize),
    /// The state tag is not UTF-8.
    #[error("stored state tag is not UTF-8")]
    StateNotUtf8,
    /// The bytes were changed outside this store (bit rot, a manual `SET`): the payload no
    /// longer hashes to the stored content hash, or the header no longer matches its leaf
    /// digest.
    #[error("stored value fails its integrity check: {0}")]
    Integrity(&'static str),
}

/// Why an item cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The state tag is longer than the 16-bit length field.
    #[error("state tag of {0} bytes is longer than the 65535 bytes the format can carry")]
    StateTooLong(usize),
    /// The whole value would exceed Redis' 512 MiB string limit.
    #[error("item of {0} bytes exceeds Redis' 512 MiB value limit")]
    TooLarge(usize),
}

/// Redis refuses strings above 512 MiB.
const REDIS_MAX_VALUE: usize = 512 * 1024 * 1024;

/// Encode `item` for storage; `in_shadow` marks an item written without TTL (tombstones never
/// count in the shadow, whatever `in_shadow` says).
pub(crate) fn encode(item: &SyncItem, in_shadow: bool) -> Result<Vec<u8>, EncodeError> {
    let state = item.state().unwrap_or("").as_bytes();
    let state_len =
        u16::try_from(state.len()).map_err(|_| EncodeError::StateTooLong(state.len()))?;
    let total = HEADER_LEN + state.len() + item.content().len();
    if total > REDIS_MAX_VALUE {
        return Err(EncodeError::TooLarge(total));
    }
    let mut flags = 0u8;
    if item.is_tombstone() {
        flags |= FLAG_TOMBSTONE;
    } else if in_shadow {
        flags |= FLAG_SHADOW;
    }
    let mut out = Vec::with_capacity(total);
    out.push(FORMAT);
    out.push(flags);
    out.extend_from_slice(&item.version().to_be_bytes());
    out.extend_from_slice(&item.content_hash().0);
    out.extend_from_slice(&item.updated_at().to_be_bytes());
    out.extend_from_slice(&item.leaf_digest().0);
    out.extend_from_slice(&state_len.to_be_bytes());
    out.extend_from_slice(state);
    out.extend_from_slice(item.content());
    Ok(out)
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// A decoded value: the item, whether it is a tombstone, whether it counts in the shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) item: SyncItem,
    pub(crate) in_shadow: bool,
}

/// Decode a stored value for `id` (zero-copy: the payload is a slice of `bytes`).
pub(crate) fn decode(id: ObjectId, bytes: Bytes) -> Result<Decoded, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT {
        return Err(DecodeError::Format(bytes[0]));
    }
    let flags = bytes[1];
    let stamp = Stamp {
        version: u64::from_be_bytes(array(&bytes, 2)),
        content_hash: ContentHash(array(&bytes, 10)),
        tombstone: flags & FLAG_TOMBSTONE != 0,
    };
    let updated_at = u64::from_be_bytes(array(&bytes, 42));
    let state_len = usize::from(u16::from_be_bytes(array(&bytes, 82)));
    let payload_at = HEADER_LEN + state_len;
    if payload_at > bytes.len() {
        return Err(DecodeError::StateLength(state_len));
    }
    let state = if state_len == 0 {
        None
    } else {
        let s = std::str::from_utf8(&bytes[HEADER_LEN..payload_at])
            .map_err(|_| DecodeError::StateNotUtf8)?;
        Some(s.to_owned())
    };
    let content = bytes.slice(payload_at..);
    if ContentHash::of(&content) != stamp.content_hash {
        return Err(DecodeError::Integrity("the payload does not match its content hash"));
    }
    let item = SyncItem::from_stored(id, stamp, updated_at, content, state);
    if item.leaf_digest().0 != array::<32>(&bytes, 50) {
        return Err(DecodeError::Integrity("the header does not match its leaf digest"));
    }
    Ok(Decoded { item, in_shadow: flags & FLAG_SHADOW != 0 && !stamp.tombstone })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> ObjectId {
        ObjectId::new(s).unwrap()
    }

    proptest! {
        #[test]
        fn round_trips_every_field(
            version in any::<u64>(),
            updated in any::<u64>(),
            content in proptest::collection::vec(any::<u8>(), 0..300),
            state in proptest::option::of("[a-zé:{}*]{0,20}"),
            tombstone in any::<bool>(),
            shadow in any::<bool>(),
        ) {
            let mut item = if tombstone {
                SyncItem::tombstone(id("a.b"), version)
            } else {
                SyncItem::new(id("a.b"), version, content)
            };
            item = item.with_updated_at(updated);
            if let Some(s) = state.clone().filter(|s| !s.is_empty()) {
                item = item.with_state(s);
            }
            let bytes = encode(&item, shadow).unwrap();
            let back = decode(id("a.b"), Bytes::from(bytes.clone())).unwrap();
            prop_assert_eq!(&back.item, &item);
            prop_assert_eq!(back.in_shadow, shadow && !tombstone);
            // The offsets the Lua scripts read.
            prop_assert_eq!(&bytes[2..10], &version.to_be_bytes()[..]);
            prop_assert_eq!(&bytes[50..82], &item.leaf_digest().0[..]);
        }

        #[test]
        fn damaged_values_are_refused_not_misread(cut in 0usize..HEADER_LEN, fmt in 2u8..=255) {
            let item = SyncItem::new(id("a"), 1, "payload").with_state("s");
            let bytes = encode(&item, true).unwrap();
            prop_assert_eq!(decode(id("a"), Bytes::copy_from_slice(&bytes[..cut])), Err(DecodeError::Truncated(cut)));
            let mut wrong = bytes.clone();
            wrong[0] = fmt;
            prop_assert_eq!(decode(id("a"), Bytes::from(wrong)), Err(DecodeError::Format(fmt)));
        }
    }

    proptest! {
        /// A value changed outside the store (one bit anywhere in the payload, the version,
        /// the content hash or the leaf digest) is refused, never decoded as another item.
        #[test]
        fn bytes_changed_outside_the_store_are_refused(
            content in proptest::collection::vec(any::<u8>(), 1..200),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let item = SyncItem::new(id("a.b"), 7, content);
            let bytes = encode(&item, true).unwrap();
            // Version (2..10), content hash (10..42), leaf digest (50..82), payload (84..).
            let spots: Vec<usize> = (2..42).chain(50..82).chain(HEADER_LEN..bytes.len()).collect();
            let mut bad = bytes.clone();
            bad[spots[at.index(spots.len())]] ^= 1 << bit;
            prop_assert!(matches!(
                decode(id("a.b"), Bytes::from(bad)),
                Err(DecodeError::Integrity(_))
            ));
        }
    }

    #[test]
    fn state_length_past_the_end_is_refused() {
        let item = SyncItem::new(id("a"), 1, "");
        let mut bytes = encode(&item, true).unwrap();
        bytes[82..84].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(decode(id("a"), Bytes::from(bytes)), Err(DecodeError::StateLength(10)));
    }

    #[test]
    fn tombstones_never_count_in_the_shadow() {
        let bytes = encode(&SyncItem::tombstone(id("a"), 3), true).unwrap();
        assert_eq!(bytes[1], FLAG_TOMBSTONE);
    }

    #[test]
    fn oversized_state_is_refused() {
        let item = SyncItem::new(id("a"), 1, "").with_state("x".repeat(70_000));
        assert_eq!(encode(&item, true), Err(EncodeError::StateTooLong(70_000)));
    }
}
