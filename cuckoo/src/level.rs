//! One cuckoo table ("level" of the chain): bit-packed buckets of four 12-bit fingerprints,
//! lock-free reads, and the insert / remove steps a single writer performs.
//!
//! Layout: bucket `b` is the 48 bits starting at bit `48 * b` of a little-endian array of
//! `AtomicU64` words (four buckets per three words, plus one zero padding word so that every
//! bucket read is two word loads). Slot `s` of a bucket is bits `12 * s .. 12 * s + 12`; the value
//! 0 marks an empty slot. Memory is therefore exactly 12 bits per slot.
//!
//! Concurrency contract (upheld by [`crate::CuckooFilter`]): at most one writer at a time (the
//! filter's writer mutex), any number of readers. A single-slot write changes only that slot's
//! bits, so a reader never sees another fingerprint torn. Moves of fingerprints between buckets
//! (cuckoo kicks) happen only inside [`Level::insert`], bracketed by the filter's move sequence
//! (a seqlock) so that a reader whose two bucket reads overlapped a move retries its miss.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::hash::{alternate_index, fingerprint, primary_index};

/// Slots per bucket.
pub const SLOTS_PER_BUCKET: u64 = 4;
/// Bits per bucket (4 × 12).
pub(crate) const BUCKET_BITS: u64 = 48;
/// Largest bucket count of one level (the primary index uses 32 hash bits).
pub(crate) const MAX_BUCKETS: u64 = u32::MAX as u64;

/// Lane constants for the SWAR match over four 12-bit lanes.
const LANES_LOW: u64 = 0x0010_0100_1001;
const LANES_HIGH: u64 = 0x8008_0080_0800;
const BUCKET_MASK: u64 = (1 << BUCKET_BITS) - 1;
const SLOT_MASK: u64 = 0xFFF;

/// Bound on the breadth-first search for a cuckoo path (nodes visited). Reaching it means the
/// level is saturated (≈ 95–97 % full) and the insert goes to another level.
const MAX_SEARCH_NODES: usize = 1024;

/// Lane mask with the high bit of every zero lane of `x` set. The lowest flagged lane is always a
/// zero lane, and the mask is non-zero exactly when some lane is zero.
#[inline]
fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(LANES_LOW) & !x & LANES_HIGH
}

/// Number of empty slots of a 48-bit bucket value (exact: no carry crosses a lane).
#[inline]
fn empty_slots(bucket: u64) -> u32 {
    const LOW11: u64 = 0x7FF * LANES_LOW;
    let nonzero = (((bucket & LOW11) + LOW11) | bucket) & LANES_HIGH;
    SLOTS_PER_BUCKET as u32 - nonzero.count_ones()
}

/// True when the 48-bit bucket value holds `fp` in one of its slots.
#[inline]
fn bucket_has(bucket: u64, fp: u64) -> bool {
    zero_lanes(bucket ^ (fp * LANES_LOW)) != 0
}

/// Index of the first slot of `bucket` that holds `fp` (0 finds an empty slot).
#[inline]
fn find_slot(bucket: u64, fp: u64) -> Option<u32> {
    let m = zero_lanes(bucket ^ (fp * LANES_LOW));
    (m != 0).then(|| m.trailing_zeros() / 12)
}

#[inline]
fn slot_of(bucket: u64, slot: u32) -> u64 {
    (bucket >> (12 * slot)) & SLOT_MASK
}

/// A node of the cuckoo path search: `bucket` is reached by moving the fingerprint in slot
/// `slot` of the parent node's bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchNode {
    bucket: u64,
    parent: u32,
    slot: u8,
}

const ROOT: u32 = u32::MAX;

/// Reusable buffers of the single writer.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    nodes: Vec<SearchNode>,
    path: Vec<(u64, u32)>,
}

/// `counter += n` by the single writer: a plain load and store (no locked read-modify-write),
/// which is exact because only the holder of the writer mutex changes these counters.
#[inline]
pub(crate) fn writer_add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// `counter -= n` by the single writer (see [`writer_add`]).
#[inline]
pub(crate) fn writer_sub(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
}

/// Number of `u64` words holding `buckets` buckets (with the padding word).
pub(crate) fn words_for(buckets: u64) -> Option<usize> {
    let bits = buckets.checked_mul(BUCKET_BITS)?;
    usize::try_from(bits.div_ceil(64).checked_add(1)?).ok()
}

/// One cuckoo table. See the module documentation for layout and concurrency.
#[derive(Debug)]
pub(crate) struct Level {
    buckets: u64,
    words: Box<[AtomicU64]>,
    /// Fingerprints stored; written only by the writer.
    count: AtomicU64,
}

impl Level {
    /// An empty level of `buckets` buckets (1 ..= [`MAX_BUCKETS`], checked by the caller).
    pub(crate) fn new(buckets: u64) -> Option<Level> {
        let n = words_for(buckets)?;
        let words = (0..n).map(|_| AtomicU64::new(0)).collect();
        Some(Level { buckets, words, count: AtomicU64::new(0) })
    }

    /// A level from exported words, which the caller has checked: `words.len() ==
    /// words_for(buckets)`, padding bits zero, `count` equal to the number of non-empty slots.
    pub(crate) fn from_words(buckets: u64, words: Vec<u64>, count: u64) -> Level {
        let words = words.into_iter().map(AtomicU64::new).collect();
        Level { buckets, words, count: AtomicU64::new(count) }
    }

    pub(crate) fn buckets(&self) -> u64 {
        self.buckets
    }

    pub(crate) fn slots(&self) -> u64 {
        self.buckets * SLOTS_PER_BUCKET
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// A copy of the words (the caller excludes concurrent writers).
    pub(crate) fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().map(|w| w.load(Ordering::Relaxed))
    }

    /// The 48-bit value of bucket `b` (< `self.buckets`; the word array was sized for it, so the
    /// indexing below cannot go out of bounds for any bucket the hash functions produce).
    #[inline]
    fn bucket(&self, b: u64) -> u64 {
        let bit = b * BUCKET_BITS;
        let w = (bit >> 6) as usize;
        let lo = self.words[w].load(Ordering::Relaxed);
        let hi = self.words[w + 1].load(Ordering::Relaxed);
        let both = (u128::from(hi) << 64) | u128::from(lo);
        (both >> (bit & 63)) as u64 & BUCKET_MASK
    }

    /// Write `value` into slot `slot` of bucket `b`, leaving every other bit unchanged.
    /// Writer only.
    fn set_slot(&self, b: u64, slot: u32, value: u64) {
        let bit = b * BUCKET_BITS + u64::from(slot) * 12;
        let w = (bit >> 6) as usize;
        let off = (bit & 63) as u32;
        let lo = self.words[w].load(Ordering::Relaxed);
        let hi = self.words[w + 1].load(Ordering::Relaxed);
        let both = (u128::from(hi) << 64) | u128::from(lo);
        let new = (both & !(u128::from(SLOT_MASK) << off)) | (u128::from(value) << off);
        let (new_lo, new_hi) = (new as u64, (new >> 64) as u64);
        if new_lo != lo {
            self.words[w].store(new_lo, Ordering::Release);
        }
        if new_hi != hi {
            self.words[w + 1].store(new_hi, Ordering::Release);
        }
    }

    /// The two buckets and the fingerprint of a key hash in this level.
    #[inline]
    fn locate(&self, hash: u64) -> (u64, u64, u64) {
        let fp = fingerprint(hash);
        let i1 = primary_index(hash, self.buckets);
        (i1, alternate_index(i1, fp, self.buckets), fp)
    }

    /// True when either bucket of the key holds its fingerprint. Lock-free; the caller validates
    /// a miss against the move sequence.
    #[inline]
    pub(crate) fn contains(&self, hash: u64) -> bool {
        let (i1, i2, fp) = self.locate(hash);
        let (b1, b2) = (self.bucket(i1), self.bucket(i2));
        bucket_has(b1, fp) | bucket_has(b2, fp)
    }

    /// Store the key's fingerprint; false when no slot could be freed within the search bound
    /// (nothing was changed then). Writer only; `moves` is the filter's move sequence.
    pub(crate) fn insert(&self, hash: u64, moves: &AtomicU64, scratch: &mut Scratch) -> bool {
        let (i1, i2, fp) = self.locate(hash);
        // Read both buckets up front (independent loads overlap) and fill the emptier one:
        // balancing keeps cuckoo paths rare until the level is nearly full.
        let (v1, v2) = (self.bucket(i1), self.bucket(i2));
        let (e1, e2) = (empty_slots(v1), empty_slots(v2));
        let (b, v) = if e2 > e1 { (i2, v2) } else { (i1, v1) };
        if let Some(s) = find_slot(v, 0) {
            self.set_slot(b, s, fp);
            writer_add(&self.count, 1);
            return true;
        }
        if !self.find_path(i1, i2, scratch) {
            return false;
        }
        self.apply_path(fp, moves, scratch);
        writer_add(&self.count, 1);
        true
    }

    /// Breadth-first search from the two full buckets for the shortest chain of moves that ends
    /// in an empty slot. On success `scratch.path` holds the slots to shift, root first, followed
    /// by the empty target slot.
    fn find_path(&self, i1: u64, i2: u64, scratch: &mut Scratch) -> bool {
        let nodes = &mut scratch.nodes;
        nodes.clear();
        nodes.push(SearchNode { bucket: i1, parent: ROOT, slot: 0 });
        if i2 != i1 {
            nodes.push(SearchNode { bucket: i2, parent: ROOT, slot: 0 });
        }
        let mut head = 0;
        while head < nodes.len() {
            let node = nodes[head];
            let value = self.bucket(node.bucket);
            for s in 0..SLOTS_PER_BUCKET as u32 {
                let alt = alternate_index(node.bucket, slot_of(value, s), self.buckets);
                if alt == node.bucket {
                    continue;
                }
                if let Some(empty) = find_slot(self.bucket(alt), 0) {
                    let path = &mut scratch.path;
                    path.clear();
                    path.push((alt, empty));
                    path.push((node.bucket, s));
                    let mut cur = node;
                    while cur.parent != ROOT {
                        let parent = nodes[cur.parent as usize];
                        path.push((parent.bucket, u32::from(cur.slot)));
                        cur = parent;
                    }
                    path.reverse();
                    return true;
                }
                if nodes.len() < MAX_SEARCH_NODES && !on_path(nodes, head, alt) {
                    nodes.push(SearchNode { bucket: alt, parent: head as u32, slot: s as u8 });
                }
            }
            head += 1;
        }
        false
    }

    /// Shift the fingerprints along `scratch.path` from the end, so that each one is copied into
    /// its new slot before its old slot is overwritten, then store `fp` in the root slot. The
    /// move sequence is odd for the duration: readers that miss during it retry.
    fn apply_path(&self, fp: u64, moves: &AtomicU64, scratch: &Scratch) {
        // Odd while moving. `| 1` keeps the parity right even if an earlier writer panicked
        // mid-move and left the sequence odd (its moves copied before overwriting, so nothing
        // was lost; readers merely treated the odd value as "retry").
        let odd = moves.load(Ordering::Relaxed) | 1;
        moves.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let path = &scratch.path;
        for pair in path.windows(2).rev() {
            let ((src_b, src_s), (dst_b, dst_s)) = (pair[0], pair[1]);
            let moved = slot_of(self.bucket(src_b), src_s);
            self.set_slot(dst_b, dst_s, moved);
        }
        if let Some(&(root_b, root_s)) = path.first() {
            self.set_slot(root_b, root_s, fp);
        }
        moves.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// True when the key's fingerprint is in one of its buckets (writer side, no validation
    /// needed: no move can run concurrently).
    pub(crate) fn holds(&self, hash: u64) -> bool {
        self.contains(hash)
    }

    /// Clear one copy of the key's fingerprint; false when neither bucket holds it. Writer only.
    pub(crate) fn remove(&self, hash: u64) -> bool {
        let (i1, i2, fp) = self.locate(hash);
        for b in [i1, i2] {
            if let Some(s) = find_slot(self.bucket(b), fp) {
                self.set_slot(b, s, 0);
                writer_sub(&self.count, 1);
                return true;
            }
        }
        false
    }

    /// Empty every bucket. Writer only.
    pub(crate) fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Release);
        }
        self.count.store(0, Ordering::Relaxed);
    }
}

/// True when `bucket` is the bucket of node `idx` or of one of its ancestors.
fn on_path(nodes: &[SearchNode], mut idx: usize, bucket: u64) -> bool {
    loop {
        let Some(node) = nodes.get(idx) else {
            return false;
        };
        if node.bucket == bucket {
            return true;
        }
        if node.parent == ROOT {
            return false;
        }
        idx = node.parent as usize;
    }
}

/// Count of non-empty slots in exported words of a level of `buckets` buckets, or `None` when a
/// padding bit beyond the last bucket is set.
pub(crate) fn count_slots(buckets: u64, words: &[u64]) -> Option<u64> {
    let used_bits = buckets * BUCKET_BITS;
    let mut count = 0;
    for (i, &w) in words.iter().enumerate() {
        let start = i as u64 * 64;
        let valid = used_bits.saturating_sub(start).min(64);
        if valid < 64 && (w >> valid) != 0 {
            return None;
        }
    }
    for b in 0..buckets {
        let bit = b * BUCKET_BITS;
        let w = (bit >> 6) as usize;
        let lo = words.get(w).copied().unwrap_or(0);
        let hi = words.get(w + 1).copied().unwrap_or(0);
        let v = (((u128::from(hi) << 64) | u128::from(lo)) >> (bit & 63)) as u64 & BUCKET_MASK;
        count += (0..SLOTS_PER_BUCKET as u32).filter(|&s| slot_of(v, s) != 0).count() as u64;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_match_is_exact() {
        let bucket = 1 | (0x801 << 24) | (0xFFF << 36); // slots: 1, empty, 0x801, 0xFFF
        assert!(bucket_has(bucket, 1));
        assert!(bucket_has(bucket, 0x801));
        assert!(bucket_has(bucket, 0xFFF));
        assert!(bucket_has(bucket, 0), "slot 1 is empty");
        assert!(!bucket_has(bucket, 2));
        assert!(!bucket_has(bucket, 0x800));
        assert_eq!(find_slot(bucket, 0), Some(1));
        assert_eq!(find_slot(bucket, 0x801), Some(2));
        assert_eq!(find_slot(bucket, 0xFFF), Some(3));
        assert_eq!(empty_slots(bucket), 1);
        assert_eq!(empty_slots(0), 4);
        assert_eq!(empty_slots(1 << 12), 3, "a zero lane below a non-zero one counts once");
        assert_eq!(empty_slots(0x800 | (0x800 << 36)), 2);
        assert_eq!(empty_slots(0x0FFF_FFFF_FFFF), 0);
    }

    #[test]
    fn slots_straddling_words_round_trip() {
        let level = Level::new(8).unwrap();
        for b in 0..8 {
            for s in 0..4 {
                level.set_slot(b, s, (b * 4 + u64::from(s)) + 1);
            }
        }
        for b in 0..8 {
            let v = level.bucket(b);
            for s in 0..4 {
                assert_eq!(slot_of(v, s), b * 4 + u64::from(s) + 1, "bucket {b} slot {s}");
            }
        }
        let words: Vec<u64> = level.words().collect();
        assert_eq!(count_slots(8, &words), Some(32));
        level.set_slot(5, 2, 0);
        let words: Vec<u64> = level.words().collect();
        assert_eq!(count_slots(8, &words), Some(31));
    }

    #[test]
    fn padding_bits_are_rejected() {
        let mut words = vec![0u64; words_for(1).unwrap()];
        assert_eq!(count_slots(1, &words), Some(0));
        words[0] = 1 << 50; // beyond bucket 0's 48 bits
        assert_eq!(count_slots(1, &words), None);
    }
}
