//! Golden values: the hash and the snapshot format must not change across builds, machines or
//! Rust releases, or every stored snapshot would silently become invalid.
//!
//! * `key_hash_is_pinned` and `a_version_1_snapshot_still_imports_and_answers` must never fail:
//!   a failure means old snapshots no longer work (bump `HASH_VERSION` / `FORMAT_VERSION` and
//!   keep reading, or cleanly reject, the old format instead).
//! * `snapshot_bytes_are_pinned` also pins where inserts place fingerprints (bucket choice, path
//!   search). A deliberate change of placement policy may update its digest: old snapshots stay
//!   valid because lookups depend only on the hash and the layout.

use sync_engine_cuckoo::{key_hash, CuckooFilter, Removal, KEY_HASH_SEED, MAGIC};
use xxhash_rust::xxh3::xxh3_64;

#[test]
fn key_hash_is_pinned() {
    assert_eq!(KEY_HASH_SEED, 0x7379_6e63_636b_6f6f);
    assert_eq!(key_hash(b""), GOLDEN_EMPTY);
    assert_eq!(key_hash(b"t0.u0.i0"), GOLDEN_DEEP);
    assert_eq!(key_hash(b"items.123456"), GOLDEN_FLAT);
}

#[test]
fn snapshot_bytes_are_pinned() {
    // Inserts, growth past the first level and removals: exercises index, fingerprint,
    // alternate bucket, placement, path search and layout.
    let f = golden_filter();
    let bytes = f.export();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(f.level_count(), GOLDEN_LEVELS);
    assert_eq!(bytes.len(), GOLDEN_SNAPSHOT_LEN);
    assert_eq!(xxh3_64(&bytes), GOLDEN_SNAPSHOT_DIGEST, "snapshot bytes changed");
}

fn golden_id(n: u32) -> String {
    format!("t{}.u{}.i{n}", n % 100, n / 100)
}

/// 200 inserts into a filter sized for 64 (three levels), then every 7th id removed.
fn golden_filter() -> CuckooFilter {
    let f = CuckooFilter::with_capacity(64);
    for n in 0..200u32 {
        f.insert(golden_id(n).as_bytes()).unwrap();
    }
    for n in (0..200u32).step_by(7) {
        assert_eq!(f.remove(golden_id(n).as_bytes()), Removal::Removed);
    }
    f
}

/// Cross-checked against the reference C implementation (python-xxhash `xxh3_64_intdigest`).
const GOLDEN_EMPTY: u64 = 9_986_420_261_317_379_451;
const GOLDEN_DEEP: u64 = 15_794_557_203_041_462_440;
const GOLDEN_FLAT: u64 = 10_312_172_567_621_649_841;
const GOLDEN_LEVELS: usize = 3;
/// 40 header + 3 × 16 level table + (14 + 27 + 52) words × 8 + 8 checksum.
const GOLDEN_SNAPSHOT_LEN: usize = 840;
const GOLDEN_SNAPSHOT_DIGEST: u64 = 14_789_285_382_695_683_680;

/// A snapshot written by format version 1 (the hex of `golden_filter().export()` when this test
/// was written). Every later build must import it and answer for its ids: this is the promise
/// that a snapshot stays valid across upgrades. Never regenerate it; a new format version adds a
/// new constant and keeps this one readable or rejects it with `UnsupportedVersion`.
const V1_SNAPSHOT_HEX: &str = concat!(
    "53454355434b4f4f01000c04010000006f6f6b63636e79730300000000000000ab000000000000001100000000000000",
    "380000000000000022000000000000007100000000000000440000000000000002000000000000000a0100d8c57b5bf2",
    "665c0d0086481bcf0200004082dc370beb6b608205008a18bc77df2d2b75c14beb7f00404c00e01a43000037fa40a4f2",
    "777a82071f0a7ea723bac50e00f32319f36b6aa3e30ba09d2d00108f00007077aa0d4fd8bc661385549236c706000000",
    "0000000000000000b897490090d3e33a6e00c055b0f977c3a05f0b0000c64359da8d0d00a0443e4d0f5d062800405154",
    "26f60090691e31b4ce56a7914e33f48ee7ec610400f039d655882207007b35d2095183054d9136fec4035492036150ba",
    "1dfd8768352ab31e20444eca030000b066a084337831ee2f66342b0b001e08000020f1760d001b5a365a415103c08d1b",
    "2b44cd1e040070f12f0000d91a0c2b157a5eec57aeb1c9a2f344fb824200c0f246275ee7f7d526d03a68911ebd0c0000",
    "00000109000090e8a382f21c35af1e05001e938000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000d5090000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000da070000",
    "00000000000000000000000000000000be327553978983b8",
);

#[test]
fn a_version_1_snapshot_still_imports_and_answers() {
    let hex = V1_SNAPSHOT_HEX.as_bytes();
    let bytes: Vec<u8> = hex
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect();
    let f = CuckooFilter::import(&bytes).unwrap();
    assert_eq!(f.level_count(), 3);
    assert_eq!(f.len(), 200 - 29);
    for n in (0..200u32).filter(|n| n % 7 != 0) {
        assert!(f.contains(golden_id(n).as_bytes()), "id {n} lost by the v1 snapshot");
    }
    // The removed ids are absent unless they collide (false positives are allowed, rare).
    let stale = (0..200u32).step_by(7).filter(|&n| f.contains(golden_id(n).as_bytes())).count();
    assert!(stale <= 1, "{stale} removed ids still reported");
    for n in (1..200u32).filter(|n| n % 7 != 0) {
        assert_ne!(f.remove(golden_id(n).as_bytes()), Removal::NotFound);
    }
}
