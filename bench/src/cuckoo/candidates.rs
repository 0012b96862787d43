//! The filters under test, behind one trait: ours and the baselines, each built from the same
//! ids and sized for them.

use std::hash::Hasher;

use scalable_cuckoo_filter::{ScalableCuckooFilter, ScalableCuckooFilterBuilder};
use sync_engine_cuckoo::{key_hash, CuckooFilter};
use xorf::{BinaryFuse16, BinaryFuse8, Filter};

use super::Ids;

/// The dynamic baseline's false-positive target. Its first level uses half of it, which gives
/// 12-bit fingerprints: the same width as ours.
const BASELINE_FPP: f64 = 0.004;

/// A filter under test.
pub(super) trait Candidate: Sized {
    /// Build over `ids` sized for `ids.len()`; returns the filter and the number of inserts it
    /// refused or lost.
    fn build(ids: &Ids) -> Result<(Self, u64), String>;
    fn contains(&self, id: &[u8]) -> bool;
    fn bits(&self) -> u64;
}

impl Candidate for CuckooFilter {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let f = CuckooFilter::with_capacity(ids.len());
        for id in ids.iter() {
            f.insert(id).map_err(|e| e.to_string())?;
        }
        Ok((f, 0))
    }
    fn contains(&self, id: &[u8]) -> bool {
        CuckooFilter::contains(self, id)
    }
    fn bits(&self) -> u64 {
        self.memory_bytes() as u64 * 8
    }
}

/// `scalable_cuckoo_filter` as shipped (SipHash-1-3).
pub(super) struct Scalable(ScalableCuckooFilter<[u8]>);

impl Candidate for Scalable {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let mut f = ScalableCuckooFilter::<[u8]>::new(ids.len(), BASELINE_FPP);
        for id in ids.iter() {
            f.insert(id);
        }
        Ok((Scalable(f), 0))
    }
    fn contains(&self, id: &[u8]) -> bool {
        self.0.contains(id)
    }
    fn bits(&self) -> u64 {
        self.0.bits()
    }
}

/// A `Hasher` over our xxh3 key hash, so the dynamic baseline can be measured with the same
/// hash function as ours.
#[derive(Clone, Default)]
struct Xxh3Hasher(u64);

impl Hasher for Xxh3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = key_hash(bytes) ^ self.0.rotate_left(29);
    }
    fn write_usize(&mut self, _len: usize) {
        // `[u8]::hash` writes the length first; the bytes that follow identify the key.
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `scalable_cuckoo_filter` with our hash.
pub(super) struct ScalableXxh3(ScalableCuckooFilter<[u8], Xxh3Hasher>);

impl Candidate for ScalableXxh3 {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let mut f = ScalableCuckooFilterBuilder::new()
            .initial_capacity(ids.len())
            .false_positive_probability(BASELINE_FPP)
            .hasher(Xxh3Hasher::default())
            .finish::<[u8]>();
        for id in ids.iter() {
            f.insert(id);
        }
        Ok((ScalableXxh3(f), 0))
    }
    fn contains(&self, id: &[u8]) -> bool {
        self.0.contains(id)
    }
    fn bits(&self) -> u64 {
        self.0.bits()
    }
}

/// `cuckoofilter` 0.5 (unmaintained since 2020): 8-bit fingerprints; a full insert drops a
/// random other entry, counted as a failure.
pub(super) struct OldCuckoo(cuckoofilter::CuckooFilter<std::collections::hash_map::DefaultHasher>);

impl Candidate for OldCuckoo {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let mut f = cuckoofilter::CuckooFilter::with_capacity(ids.len());
        let mut failed = 0;
        for id in ids.iter() {
            if f.add(id).is_err() {
                failed += 1;
            }
        }
        Ok((OldCuckoo(f), failed))
    }
    fn contains(&self, id: &[u8]) -> bool {
        self.0.contains(id)
    }
    fn bits(&self) -> u64 {
        self.0.memory_usage() as u64 * 8
    }
}

/// `atomic-cuckoo-filter` 0.3: concurrent (`&self` inserts, lock-free reads) like ours, fixed
/// capacity, fingerprints of 4/8/16/32 bits: 16, the smallest meeting the 0.2 % target.
/// Inserts it refuses when full are counted as failures.
pub(super) struct Atomic(atomic_cuckoo_filter::CuckooFilter);

impl Candidate for Atomic {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let f = atomic_cuckoo_filter::CuckooFilter::builder()
            .capacity(ids.len().max(1))
            .fingerprint_size(16)
            .bucket_size(4)
            .build()
            .map_err(|e| e.to_string())?;
        let failed = ids.iter().filter(|id| f.insert(*id).is_err()).count() as u64;
        Ok((Atomic(f), failed))
    }
    fn contains(&self, id: &[u8]) -> bool {
        self.0.contains(id)
    }
    fn bits(&self) -> u64 {
        self.0.capacity() as u64 * 16
    }
}

/// xorf's static binary fuse filters over our 64-bit key hash (built once from all ids).
pub(super) struct Fuse16(BinaryFuse16);
pub(super) struct Fuse8(BinaryFuse8);

impl Candidate for Fuse16 {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let hashes: Vec<u64> = ids.iter().map(key_hash).collect();
        Ok((Fuse16(BinaryFuse16::try_from(&hashes).map_err(str::to_string)?), 0))
    }
    fn contains(&self, id: &[u8]) -> bool {
        self.0.contains(&key_hash(id))
    }
    fn bits(&self) -> u64 {
        self.0.fingerprints.len() as u64 * 16
    }
}

impl Candidate for Fuse8 {
    fn build(ids: &Ids) -> Result<(Self, u64), String> {
        let hashes: Vec<u64> = ids.iter().map(key_hash).collect();
        Ok((Fuse8(BinaryFuse8::try_from(&hashes).map_err(str::to_string)?), 0))
    }
    fn contains(&self, id: &[u8]) -> bool {
        self.0.contains(&key_hash(id))
    }
    fn bits(&self) -> u64 {
        self.0.fingerprints.len() as u64 * 8
    }
}
