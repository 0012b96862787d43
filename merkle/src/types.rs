//! The vocabulary shared by every Merkle store: digests, node values, node keys, children.
//!
//! A node's value is the wrapping 256-bit sum of the leaf digests of the live items beneath it,
//! plus their count. Because the sum is commutative and associative, a node's value is a pure
//! function of the *set* of live leaves under it: independent of insertion order, batch
//! boundaries, history, and of how a store chooses to group children into hash buckets.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// Length in bytes of every digest and node hash.
pub const DIGEST_LEN: usize = 32;

/// A SHA-256 output: a leaf digest or a node hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// The all-zero digest; the hash of an empty node.
    pub const ZERO: Digest = Digest([0; DIGEST_LEN]);

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Domain tag of leaf digests.
const LEAF_TAG: &[u8] = b"sync-engine/merkle/leaf/v1";
/// Domain tag of node hashes.
const NODE_TAG: &[u8] = b"sync-engine/merkle/node/v1";

/// The digest of one item: `H(leaf tag, len(id), id, version, tombstone, content hash)`,
/// length-prefixed so that no two distinct inputs share an encoding.
pub fn leaf_digest(id: &str, version: u64, tombstone: bool, content_hash: &[u8; 32]) -> Digest {
    let mut h = Sha256::new();
    h.update((LEAF_TAG.len() as u32).to_be_bytes());
    h.update(LEAF_TAG);
    h.update((id.len() as u32).to_be_bytes());
    h.update(id.as_bytes());
    h.update(version.to_be_bytes());
    h.update([u8::from(tombstone)]);
    h.update(content_hash);
    Digest(h.finalize().into())
}

/// A 256-bit accumulator: the sum, modulo 2^256, of leaf digests read as little-endian integers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Acc(pub [u64; 4]);

impl Acc {
    /// The empty sum.
    pub const ZERO: Acc = Acc([0; 4]);

    /// The accumulator holding one digest.
    pub fn from_digest(d: &Digest) -> Acc {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d.0[i * 8..i * 8 + 8]);
            *limb = u64::from_le_bytes(b);
        }
        Acc(limbs)
    }

    /// `self + other` modulo 2^256.
    #[allow(clippy::should_implement_trait)] // public name kept; wrapping, unlike `Add`'s usual
    pub fn add(self, other: Acc) -> Acc {
        let mut out = [0u64; 4];
        let mut carry = 0u64;
        for (i, o) in out.iter_mut().enumerate() {
            let (s1, c1) = self.0[i].overflowing_add(other.0[i]);
            let (s2, c2) = s1.overflowing_add(carry);
            *o = s2;
            carry = u64::from(c1) + u64::from(c2);
        }
        Acc(out)
    }

    /// `self - other` modulo 2^256.
    #[allow(clippy::should_implement_trait)] // public name kept; wrapping, unlike `Sub`'s usual
    pub fn sub(self, other: Acc) -> Acc {
        let mut out = [0u64; 4];
        let mut borrow = 0u64;
        for (i, o) in out.iter_mut().enumerate() {
            let (d1, b1) = self.0[i].overflowing_sub(other.0[i]);
            let (d2, b2) = d1.overflowing_sub(borrow);
            *o = d2;
            borrow = u64::from(b1) + u64::from(b2);
        }
        Acc(out)
    }

    /// Little-endian bytes (the storage form).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// Inverse of [`Acc::to_bytes`].
    pub fn from_bytes(b: &[u8; 32]) -> Acc {
        Acc::from_digest(&Digest(*b))
    }
}

/// What a store keeps per node: the sum of the leaf digests beneath it and their count.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct NodeValue {
    /// Wrapping sum of the leaf digests of every live item beneath the node.
    pub acc: Acc,
    /// Number of live items beneath the node.
    pub count: u64,
}

impl NodeValue {
    /// The value of an empty node.
    pub const EMPTY: NodeValue = NodeValue { acc: Acc::ZERO, count: 0 };

    /// The value of a node holding exactly one leaf.
    pub fn leaf(d: &Digest) -> NodeValue {
        NodeValue { acc: Acc::from_digest(d), count: 1 }
    }

    /// True when no leaf is beneath the node.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.acc == Acc::ZERO
    }

    /// Combine two disjoint sets of leaves.
    pub fn plus(self, other: NodeValue) -> NodeValue {
        NodeValue { acc: self.acc.add(other.acc), count: self.count.wrapping_add(other.count) }
    }

    /// Remove a subset of leaves.
    pub fn minus(self, other: NodeValue) -> NodeValue {
        NodeValue { acc: self.acc.sub(other.acc), count: self.count.wrapping_sub(other.count) }
    }

    /// The hash two trees compare: `H(node tag, acc, count)`, or [`Digest::ZERO`] when empty.
    /// It does not depend on the node's position, so a prefix subtree's hash equals the root
    /// hash of a tree built from that prefix's items alone.
    pub fn hash(&self) -> Digest {
        if self.is_empty() {
            return Digest::ZERO;
        }
        let mut h = Sha256::new();
        h.update((NODE_TAG.len() as u32).to_be_bytes());
        h.update(NODE_TAG);
        h.update(self.acc.to_bytes());
        h.update(self.count.to_be_bytes());
        Digest(h.finalize().into())
    }
}
