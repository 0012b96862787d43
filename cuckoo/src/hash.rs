//! The stable hash: one 64-bit xxh3 value per key, split into a primary bucket index and a
//! fingerprint, plus the fingerprint mix that gives the alternate bucket.
//!
//! Everything here is a pure function of its inputs and of the constants below, never of the
//! process, the machine or the Rust release (no `DefaultHasher`, no `RandomState`): a snapshot
//! written by one build stays valid in every later build that keeps [`HASH_VERSION`]. The golden
//! tests pin the values; changing any of them is a snapshot format change.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Identifies the hash scheme (xxh3-64 with [`KEY_HASH_SEED`], the index and fingerprint
/// derivation and the alternate-bucket mix of this module). Stored in every snapshot.
pub const HASH_VERSION: u32 = 1;

/// Fixed xxh3 seed for keys (ASCII "syncckoo"). Never change it: snapshots depend on it.
pub const KEY_HASH_SEED: u64 = 0x7379_6e63_636b_6f6f;

/// Fingerprint width in bits.
pub const FP_BITS: u32 = 12;

/// Number of distinct non-zero fingerprints (0 marks an empty slot).
pub const FP_VALUES: u64 = (1 << FP_BITS) - 1;

/// Multiplier of the fingerprint mix (2^64 / golden ratio, odd).
const ALT_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The stable 64-bit hash of a key: xxh3-64 with [`KEY_HASH_SEED`].
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, KEY_HASH_SEED)
}

/// The fingerprint of a key hash: uniform in `1..=4095`, taken from the low 32 bits so that it is
/// independent of the bucket index (taken from the high 32 bits).
#[inline]
pub(crate) fn fingerprint(hash: u64) -> u64 {
    (((hash & 0xFFFF_FFFF) * FP_VALUES) >> 32) + 1
}

/// The primary bucket of a key hash among `buckets` (< 2^32): Lemire's multiply-shift range
/// reduction of the high 32 bits, so any bucket count works, not only powers of two.
#[inline]
pub(crate) fn primary_index(hash: u64, buckets: u64) -> u64 {
    ((hash >> 32) * buckets) >> 32
}

/// The per-fingerprint offset `t(fp)` in `0..buckets`. The two buckets of a key are `i1` and
/// `i2 = (t(fp) - i1) mod buckets`; the map `i -> (t(fp) - i) mod buckets` is its own inverse, so
/// either bucket and the fingerprint give the other (partial-key cuckoo hashing without the
/// power-of-two restriction of the XOR form).
#[inline]
pub(crate) fn fingerprint_offset(fp: u64, buckets: u64) -> u64 {
    ((fp.wrapping_mul(ALT_MIX) >> 32) * buckets) >> 32
}

/// The other bucket of a fingerprint stored in `bucket` (see [`fingerprint_offset`]).
#[inline]
pub(crate) fn alternate_index(bucket: u64, fp: u64, buckets: u64) -> u64 {
    let t = fingerprint_offset(fp, buckets);
    // t, bucket < buckets, so t + buckets - bucket < 2 * buckets: one conditional subtraction.
    let r = t + buckets - bucket;
    if r >= buckets {
        r - buckets
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_never_zero_and_covers_the_range() {
        assert_eq!(fingerprint(0), 1);
        assert_eq!(fingerprint(u64::MAX), FP_VALUES);
        for h in [1u64, 0xFFFF_FFFF, 0x1234_5678_9ABC_DEF0, 1 << 63] {
            let fp = fingerprint(h);
            assert!((1..=FP_VALUES).contains(&fp), "fp {fp} for {h:#x}");
        }
    }

    #[test]
    fn primary_index_stays_in_range() {
        for m in [1u64, 2, 3, 1000, 263_158, u64::from(u32::MAX)] {
            assert!(primary_index(u64::MAX, m) < m);
            assert_eq!(primary_index(0, m), 0);
        }
    }

    #[test]
    fn alternate_index_is_an_involution() {
        for m in [1u64, 2, 7, 1024, 263_158] {
            for fp in 1..=FP_VALUES {
                for b in [0, m / 3, m - 1] {
                    let a = alternate_index(b, fp, m);
                    assert!(a < m);
                    assert_eq!(alternate_index(a, fp, m), b, "m {m} fp {fp} b {b}");
                }
            }
        }
    }
}
