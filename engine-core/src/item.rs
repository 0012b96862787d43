//! [`SyncItem`], content hashes, and the one "newer wins" order every tier applies.

use std::cmp::Ordering;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::id::ObjectId;

/// SHA-256 of an item's content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash `content`.
    pub fn of(content: &[u8]) -> ContentHash {
        ContentHash(Sha256::digest(content).into())
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..16])
    }
}

/// Milliseconds since the Unix epoch, from the system clock (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The part of an item that decides which of two writes wins: `(version, content hash,
/// tombstone)`, compared in that order. It is a total order, so every tier reaches the same
/// answer whatever the order writes arrive in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// The write's version (caller-chosen or hybrid-logical-clock).
    pub version: u64,
    /// SHA-256 of the content: the deterministic tie-break between equal versions.
    pub content_hash: ContentHash,
    /// Tombstones win over a write with equal version and hash (possible only for empty content).
    pub tombstone: bool,
}

/// True when `incoming` must replace `stored`: "newer wins", defined once for every tier.
/// A replay of the stored write (equal stamp) is not newer, so replaying is harmless.
pub fn newer_wins(incoming: &Stamp, stored: Option<&Stamp>) -> bool {
    match stored {
        None => true,
        Some(s) => incoming.cmp(s) == Ordering::Greater,
    }
}

/// One versioned object: a write or a tombstone (a delete that must reach every tier).
///
/// The content hash is computed once, when the item is made, and travels with it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncItem {
    id: ObjectId,
    version: u64,
    updated_at: u64,
    content: Bytes,
    content_hash: ContentHash,
    state: Option<String>,
    tombstone: bool,
}

impl SyncItem {
    /// A write of `content` at `version`, stamped with the current time.
    pub fn new(id: ObjectId, version: u64, content: impl Into<Bytes>) -> SyncItem {
        let content = content.into();
        SyncItem {
            content_hash: ContentHash::of(&content),
            id,
            version,
            updated_at: now_ms(),
            content,
            state: None,
            tombstone: false,
        }
    }

    /// A tombstone: the delete of `id` at `version`. It hides the item and blocks any older
    /// write from resurrecting it.
    pub fn tombstone(id: ObjectId, version: u64) -> SyncItem {
        SyncItem {
            content_hash: ContentHash::of(&[]),
            id,
            version,
            updated_at: now_ms(),
            content: Bytes::new(),
            state: None,
            tombstone: true,
        }
    }

    /// Rebuild an item read back from storage, trusting the stored content hash (stores
    /// write the hash computed by [`SyncItem::new`]; recomputing it on every read would cost
    /// a full pass over large payloads).
    pub fn from_stored(
        id: ObjectId,
        stamp: Stamp,
        updated_at: u64,
        content: Bytes,
        state: Option<String>,
    ) -> SyncItem {
        SyncItem {
            id,
            version: stamp.version,
            updated_at,
            content,
            content_hash: stamp.content_hash,
            state,
            tombstone: stamp.tombstone,
        }
    }

    /// Set the optional state tag (its length is checked by [`crate::Limits`]).
    pub fn with_state(mut self, state: impl Into<String>) -> SyncItem {
        self.state = Some(state.into());
        self
    }

    /// Override the `updated_at` timestamp (unix ms).
    pub fn with_updated_at(mut self, updated_at: u64) -> SyncItem {
        self.updated_at = updated_at;
        self
    }

    /// The id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }
    /// The version.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// When the write was made, unix ms.
    pub fn updated_at(&self) -> u64 {
        self.updated_at
    }
    /// The content (empty for a tombstone).
    pub fn content(&self) -> &Bytes {
        &self.content
    }
    /// SHA-256 of the content.
    pub fn content_hash(&self) -> &ContentHash {
        &self.content_hash
    }
    /// The optional state tag.
    pub fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }
    /// True for a delete.
    pub fn is_tombstone(&self) -> bool {
        self.tombstone
    }
    /// The fields that decide "newer wins".
    pub fn stamp(&self) -> Stamp {
        Stamp { version: self.version, content_hash: self.content_hash, tombstone: self.tombstone }
    }
    /// True when this item must replace `stored` ([`newer_wins`]).
    pub fn supersedes(&self, stored: Option<&SyncItem>) -> bool {
        newer_wins(&self.stamp(), stored.map(SyncItem::stamp).as_ref())
    }
    /// The Merkle leaf digest of this item.
    pub fn leaf_digest(&self) -> sync_engine_merkle::Digest {
        sync_engine_merkle::leaf_digest(
            self.id.as_str(),
            self.version,
            self.tombstone,
            &self.content_hash.0,
        )
    }
    /// Approximate bytes the item occupies in memory (for byte-bounded caches and batches).
    pub fn weight(&self) -> usize {
        self.content.len()
            + self.id.as_str().len()
            + self.state.as_ref().map_or(0, String::len)
            + 96
    }
}

impl fmt::Debug for SyncItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncItem")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("tombstone", &self.tombstone)
            .field("len", &self.content.len())
            .field("hash", &self.content_hash)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp() -> impl Strategy<Value = Stamp> {
        (0u64..4, prop::array::uniform32(0u8..3), any::<bool>()).prop_map(|(v, h, t)| Stamp {
            version: v,
            content_hash: ContentHash(h),
            tombstone: t,
        })
    }

    proptest! {
        #[test]
        fn newer_wins_is_a_strict_total_order(a in stamp(), b in stamp(), c in stamp()) {
            // Antisymmetric: never both replace each other; exactly one wins unless equal.
            let ab = newer_wins(&a, Some(&b));
            let ba = newer_wins(&b, Some(&a));
            prop_assert!(!(ab && ba));
            prop_assert_eq!(ab || ba, a != b);
            // Transitive.
            if newer_wins(&a, Some(&b)) && newer_wins(&b, Some(&c)) {
                prop_assert!(newer_wins(&a, Some(&c)));
            }
            // Deterministic and replay-safe.
            prop_assert_eq!(ab, newer_wins(&a, Some(&b)));
            prop_assert!(!newer_wins(&a, Some(&a)));
            prop_assert!(newer_wins(&a, None));
        }

        #[test]
        fn final_state_is_independent_of_arrival_order(stamps in proptest::collection::vec(stamp(), 1..8)) {
            let apply = |order: &[Stamp]| {
                let mut stored: Option<Stamp> = None;
                for s in order {
                    if newer_wins(s, stored.as_ref()) {
                        stored = Some(*s);
                    }
                }
                stored
            };
            let mut rev = stamps.clone();
            rev.reverse();
            prop_assert_eq!(apply(&stamps), apply(&rev));
            prop_assert_eq!(apply(&stamps), stamps.iter().max().copied());
        }
    }

    #[test]
    fn higher_version_wins_and_ties_break_by_hash() {
        let id = ObjectId::new("a.b").unwrap();
        let v1 = SyncItem::new(id.clone(), 1, "x");
        let v2 = SyncItem::new(id.clone(), 2, "a");
        assert!(v2.supersedes(Some(&v1)));
        assert!(!v1.supersedes(Some(&v2)));
        let t2 = SyncItem::tombstone(id.clone(), 2);
        let a = SyncItem::new(id.clone(), 2, "");
        assert!(t2.supersedes(Some(&a)), "tombstone beats equal empty write");
        assert_eq!(a.content_hash(), t2.content_hash());
    }
}
