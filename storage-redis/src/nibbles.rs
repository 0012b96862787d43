//! Bucket arithmetic for the fold: a segment's first 16 hash nibbles packed in a `u64`, node
//! ids built from them, and a cheap hasher for those ids.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sync_engine_core::merkle::segment_hash;

/// A node: (path index, bucket depth, bucket nibbles packed from the top, rest zero).
pub(crate) type NodeId = (u32, u8, u64);

/// A hasher for [`NodeId`]s (indices and hash nibbles, nothing an attacker chooses freely).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// The first 16 nibbles of a segment's hash.
pub(crate) fn hash_prefix(seg: &str) -> u64 {
    let h = segment_hash(seg);
    u64::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3], h.0[4], h.0[5], h.0[6], h.0[7]])
}

pub(crate) fn mask(depth: u8) -> u64 {
    if depth == 0 {
        0
    } else {
        u64::MAX << (64 - 4 * u32::from(depth.min(16)))
    }
}

pub(crate) fn nibble(hp: u64, i: u8) -> u8 {
    ((hp >> (60 - 4 * u32::from(i))) & 0xf) as u8
}

/// Lower-case hex of the first `depth` nibbles.
#[cfg(test)]
pub(crate) fn hex(nibbles: u64, depth: u8) -> String {
    (0..depth).map(|i| char::from(b"0123456789abcdef"[usize::from(nibble(nibbles, i))])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_masks_and_hex_agree_with_the_key_layout() {
        let hp = 0xab0c_0000_0000_000f_u64;
        assert_eq!(
            (nibble(hp, 0), nibble(hp, 1), nibble(hp, 3), nibble(hp, 15)),
            (0xa, 0xb, 0xc, 0xf)
        );
        assert_eq!(hp & mask(2), 0xab00_0000_0000_0000);
        assert_eq!(mask(0), 0);
        assert_eq!(mask(16), u64::MAX);
        assert_eq!(hex(hp, 4), "ab0c");
        let seg = "items";
        let want = crate::keys::hash_prefix_hex(seg);
        assert_eq!(hex(hash_prefix(seg), 16).as_bytes(), &want[..]);
    }
}
