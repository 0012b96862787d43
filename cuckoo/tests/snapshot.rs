//! Export / import: round trips keep every key; corrupt, truncated, foreign or mismatched bytes
//! are refused with an error naming the problem.

use proptest::prelude::*;
use sync_engine_cuckoo::{CuckooFilter, SnapshotError, CHECKSUM_SEED, FORMAT_VERSION};
use xxhash_rust::xxh3::xxh3_64_with_seed;

fn id(n: u32) -> Vec<u8> {
    format!("t{}.u{}.i{}", n % 100, (n / 100) % 1000, n).into_bytes()
}

fn filter(capacity: usize, keys: u32) -> CuckooFilter {
    let f = CuckooFilter::with_capacity(capacity);
    f.insert_many((0..keys).map(id)).unwrap();
    f
}

/// Replace the trailing checksum so that only the semantic checks can catch an edit.
fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - 8;
    let sum = xxh3_64_with_seed(&bytes[..n], CHECKSUM_SEED);
    bytes[n..].copy_from_slice(&sum.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_bit_flip_is_refused(keys in 0u32..300, capacity in 1usize..200, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = filter(capacity, keys).export();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(CuckooFilter::import(&bytes).is_err(), "flip at byte {} bit {} accepted", i, bit);
    }

    #[test]
    fn any_truncation_is_refused(keys in 0u32..300, capacity in 1usize..200, cut in any::<prop::sample::Index>()) {
        let bytes = filter(capacity, keys).export();
        let len = cut.index(bytes.len());
        prop_assert!(CuckooFilter::import(&bytes[..len]).is_err(), "truncation to {} accepted", len);
    }

    #[test]
    fn trailing_bytes_are_refused(keys in 0u32..100, extra in prop::collection::vec(any::<u8>(), 1..16)) {
        let mut bytes = filter(64, keys).export();
        bytes.extend_from_slice(&extra);
        prop_assert!(CuckooFilter::import(&bytes).is_err());
    }

    /// Behind a valid checksum (a writer bug rather than corruption), a level whose declared
    /// fingerprint count disagrees with its slots is still refused.
    #[test]
    fn resealed_count_edits_are_refused(keys in 1u32..300, delta in 1u64..1000, up in any::<bool>()) {
        let f = filter(300, keys);
        let mut bytes = f.export();
        for range in [32..40, 48..56] { // total, then level 0's count
            let v = u64::from_le_bytes(bytes[range.clone()].try_into().unwrap());
            let v = if up { v + delta } else { v.saturating_sub(delta) };
            bytes[range].copy_from_slice(&v.to_le_bytes());
        }
        reseal(&mut bytes);
        let err = CuckooFilter::import(&bytes).unwrap_err();
        prop_assert!(matches!(err, SnapshotError::Malformed(_)), "{:?}", err);
    }

    #[test]
    fn round_trip_keeps_every_key_and_the_bytes(keys in 0u32..2_000, capacity in 1usize..3_000) {
        let f = filter(capacity, keys);
        let bytes = f.export();
        let g = CuckooFilter::import(&bytes).unwrap();
        for k in 0..keys {
            prop_assert!(g.contains(&id(k)));
        }
        prop_assert_eq!(g.len(), f.len());
        prop_assert_eq!(g.capacity(), f.capacity());
        prop_assert_eq!(g.level_count(), f.level_count());
        prop_assert_eq!(g.export(), bytes);
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let good = filter(100, 50).export();

    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(CuckooFilter::import(&bad).unwrap_err(), SnapshotError::BadMagic);

    let mut future = good.clone();
    future[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    reseal(&mut future);
    assert_eq!(
        CuckooFilter::import(&future).unwrap_err(),
        SnapshotError::UnsupportedVersion { found: FORMAT_VERSION + 1, supported: FORMAT_VERSION }
    );

    let mut other_fp = good.clone();
    other_fp[10] = 16;
    reseal(&mut other_fp);
    assert_eq!(
        CuckooFilter::import(&other_fp).unwrap_err(),
        SnapshotError::ParameterMismatch { field: "fingerprint_bits", found: 16, expected: 12 }
    );

    let mut other_seed = good.clone();
    other_seed[16] ^= 1;
    reseal(&mut other_seed);
    assert!(matches!(
        CuckooFilter::import(&other_seed).unwrap_err(),
        SnapshotError::ParameterMismatch { field: "key_hash_seed", .. }
    ));

    let mut flipped = good.clone();
    flipped[45] ^= 4;
    assert!(matches!(
        CuckooFilter::import(&flipped).unwrap_err(),
        SnapshotError::ChecksumMismatch { .. }
    ));

    let mut more_levels = good.clone();
    more_levels[24] = 2; // declares a second level that is not there
    reseal(&mut more_levels);
    let err = CuckooFilter::import(&more_levels).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Malformed(_) | SnapshotError::Truncated { .. }),
        "{err:?}"
    );

    let mut zero_levels = good.clone();
    zero_levels[24] = 0;
    reseal(&mut zero_levels);
    let err = CuckooFilter::import(&zero_levels).unwrap_err();
    assert!(err.to_string().contains("0 levels"), "{err}");

    let mut wrong_total = good.clone();
    wrong_total[32] ^= 1;
    reseal(&mut wrong_total);
    let err = CuckooFilter::import(&wrong_total).unwrap_err();
    assert!(err.to_string().contains("fingerprints"), "{err}");

    assert!(matches!(CuckooFilter::import(&[]).unwrap_err(), SnapshotError::Truncated { .. }));
    assert!(CuckooFilter::import(&good).is_ok());
}
