//! The filter the engine holds: a chain of cuckoo levels with lock-free lookups, one writer at a
//! time, growth instead of dropping entries, and the trust state.

use std::fmt;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use crate::error::InsertError;
use crate::hash::{key_hash, FP_VALUES};
use crate::level::{writer_add, writer_sub, Level, Scratch, MAX_BUCKETS, SLOTS_PER_BUCKET};
use crate::trust::Trust;

/// Fill that [`CuckooFilter::with_capacity`] sizes for: `n` expected items get
/// `ceil(n / (4 × 0.95))` buckets. Four-slot buckets with the bounded path search reliably take
/// about 95–97 % before a level saturates.
pub const DESIGN_LOAD: f64 = 0.95;

/// Longest chain of levels. Each new level has twice the buckets of the previous one, so this
/// is never the binding limit in practice; reaching it makes inserts fail with
/// [`InsertError::Full`].
pub const MAX_LEVELS: usize = 32;

/// A miss that overlapped a cuckoo move is retried this many times before the lookup answers
/// "maybe present" (a move takes well under a microsecond; this only bounds pathological waits).
const MAX_MISS_RETRIES: u32 = 256;

/// A level marked saturated becomes eligible for inserts again once removals bring it below
/// this fill.
const REOPEN_LOAD: f64 = 0.90;

/// Outcome of [`CuckooFilter::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// One copy of the key's fingerprint was removed.
    Removed,
    /// No level holds the key's fingerprint: the key was not inserted (or was removed more times
    /// than inserted). Nothing changed.
    NotFound,
    /// The fingerprint matches in more than one level, so the copy belonging to this key cannot
    /// be told apart from another key's; nothing was removed (removing the wrong copy would
    /// create a false negative). The key stays a false positive until the next rebuild.
    Ambiguous,
}

/// State of the single writer, behind the writer mutex.
#[derive(Debug, Default)]
struct Writer {
    /// Per level: an insert failed there and it has not been reopened by removals since.
    saturated: Vec<bool>,
    scratch: Scratch,
}

/// A deletable cuckoo filter over byte-string keys.
///
/// * No false negatives: a key inserted (and not removed more times than inserted, see
///   [`remove`](Self::remove)) is always reported by [`contains`](Self::contains), including
///   while other keys are being inserted or moved, after growth, and after export / import.
/// * Reads are lock-free (a few atomic loads); inserts, removals, export and clear serialize on
///   one writer mutex. Share it as `Arc<CuckooFilter>`.
/// * Inserting past capacity adds a level twice as large (lookups check every level); nothing is
///   ever dropped. Only after [`MAX_LEVELS`] levels does an insert return an error.
pub struct CuckooFilter {
    levels: Box<[OnceLock<Level>]>,
    /// Number of levels readers may look at; levels are published in order, never removed.
    published: AtomicUsize,
    /// Move sequence (seqlock): odd while fingerprints are being moved between buckets.
    moves: AtomicU64,
    len: AtomicU64,
    ambiguous: AtomicU64,
    writer: Mutex<Writer>,
    trust: Trust,
}

impl CuckooFilter {
    /// An empty, `Untrusted` filter sized so that `expected_items` fill it to [`DESIGN_LOAD`].
    /// More items are accepted (a new level is added); sizing right keeps lookups to one level.
    /// Allocates 12 bits per slot up front: about 1.6 MB per million expected ids (the caller
    /// bounds `expected_items`; an impossible allocation aborts like any `Vec`).
    pub fn with_capacity(expected_items: usize) -> CuckooFilter {
        let wanted = (expected_items as f64 / (SLOTS_PER_BUCKET as f64 * DESIGN_LOAD)).ceil();
        let buckets = (wanted as u64).clamp(1, MAX_BUCKETS);
        let level = Level::new(buckets);
        CuckooFilter::from_levels(level.into_iter().collect())
    }

    /// A filter over levels restored from a snapshot (or one fresh level), `Untrusted`.
    pub(crate) fn from_levels(levels: Vec<Level>) -> CuckooFilter {
        let count = levels.len();
        let len = levels.iter().map(Level::count).sum();
        let slots: Vec<OnceLock<Level>> = (0..MAX_LEVELS).map(|_| OnceLock::new()).collect();
        for (slot, level) in slots.iter().zip(levels) {
            let _ = slot.set(level);
        }
        CuckooFilter {
            levels: slots.into_boxed_slice(),
            published: AtomicUsize::new(count.min(MAX_LEVELS)),
            moves: AtomicU64::new(0),
            len: AtomicU64::new(len),
            ambiguous: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                saturated: vec![false; count],
                scratch: Scratch::default(),
            }),
            trust: Trust::new(),
        }
    }

    /// The published levels, oldest first.
    pub(crate) fn levels(&self) -> impl DoubleEndedIterator<Item = &Level> + '_ {
        let n = self.published.load(Ordering::Acquire);
        self.levels.iter().take(n).filter_map(OnceLock::get)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // The writer state is only a cache of hints and buffers; after a panic elsewhere it is
        // still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` with writers excluded (export takes a consistent copy this way).
    pub(crate) fn with_writer_excluded<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.writer();
        f()
    }

    /// May `key` be present? `false` is definite (no false negatives); `true` is wrong with
    /// probability about [`expected_fpr`](Self::expected_fpr). Lock-free and bounded: a miss
    /// that overlapped a cuckoo move is retried, and answered `true` if moves keep overlapping.
    #[inline]
    pub fn contains(&self, key: &[u8]) -> bool {
        self.contains_hash(key_hash(key))
    }

    #[inline]
    fn contains_hash(&self, hash: u64) -> bool {
        for _ in 0..MAX_MISS_RETRIES {
            let seq = self.moves.load(Ordering::Acquire);
            // Newest (largest) level first: it holds most keys.
            if self.levels().rev().any(|level| level.contains(hash)) {
                return true;
            }
            fence(Ordering::Acquire);
            if seq & 1 == 0 && self.moves.load(Ordering::Relaxed) == seq {
                return false;
            }
            std::hint::spin_loop();
        }
        // Moves kept overlapping this miss (a writer preempted mid-move, say): "maybe present"
        // is always a safe answer, and it bounds the reader's wait.
        true
    }

    /// True only when the filter is `Trusted` and does not contain `key`: the one case in which
    /// the engine may answer "absent" without asking a backend.
    #[inline]
    pub fn definitely_absent(&self, key: &[u8]) -> bool {
        self.trust.is_trusted() && !self.contains(key)
    }

    /// Add one copy of `key`'s fingerprint. Not idempotent, on purpose: see the removal rule on
    /// [`remove`](Self::remove). Fails only when the chain is at [`MAX_LEVELS`] and every level
    /// is saturated; then nothing changed.
    pub fn insert(&self, key: &[u8]) -> Result<(), InsertError> {
        let mut w = self.writer();
        self.insert_locked(&mut w, key_hash(key))
    }

    /// [`insert`](Self::insert) for many keys under one writer lock (the flush path). On error,
    /// the keys before the failing one are inserted and the rest are not.
    pub fn insert_many<I>(&self, keys: I) -> Result<usize, InsertError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut w = self.writer();
        let mut n = 0;
        for key in keys {
            self.insert_locked(&mut w, key_hash(key.as_ref()))?;
            n += 1;
        }
        Ok(n)
    }

    fn insert_locked(&self, w: &mut Writer, hash: u64) -> Result<(), InsertError> {
        let n = self.published.load(Ordering::Relaxed);
        for i in 0..n {
            let Some(level) = self.levels.get(i).and_then(OnceLock::get) else {
                continue;
            };
            if w.saturated.get(i).copied().unwrap_or(false) {
                continue;
            }
            if level.insert(hash, &self.moves, &mut w.scratch) {
                writer_add(&self.len, 1);
                return Ok(());
            }
            if let Some(flag) = w.saturated.get_mut(i) {
                *flag = true;
            }
        }
        let level = self.grow(w, n)?;
        if level.insert(hash, &self.moves, &mut w.scratch) {
            writer_add(&self.len, 1);
            Ok(())
        } else {
            Err(self.full())
        }
    }

    /// Publish level `n`, twice as large as level `n - 1`.
    fn grow(&self, w: &mut Writer, n: usize) -> Result<&Level, InsertError> {
        let last = n.checked_sub(1).and_then(|i| self.levels.get(i)).and_then(OnceLock::get);
        let buckets = last.map_or(1, |l| l.buckets().saturating_mul(2).min(MAX_BUCKETS));
        let slot = self.levels.get(n).ok_or_else(|| self.full())?;
        let level = Level::new(buckets).ok_or_else(|| self.full())?;
        let _ = slot.set(level);
        let level = slot.get().ok_or_else(|| self.full())?;
        w.saturated.resize(n + 1, false);
        self.published.store(n + 1, Ordering::Release);
        Ok(level)
    }

    fn full(&self) -> InsertError {
        InsertError::Full { levels: self.level_count(), len: self.len() }
    }

    /// Remove one copy of `key`'s fingerprint.
    ///
    /// **The removal rule**: call `remove(key)` only to undo an earlier `insert(key)` that has
    /// not been undone yet (the engine: remove an id once when its delete commits, if it inserted
    /// it once when it became present). Removing a key that was never inserted can delete
    /// another key's fingerprint and so create a false negative. Within that rule removal never
    /// creates a false negative: all copies of one fingerprint in one bucket pair are
    /// interchangeable, and a fingerprint matching in several levels is left alone
    /// ([`Removal::Ambiguous`]).
    pub fn remove(&self, key: &[u8]) -> Removal {
        let hash = key_hash(key);
        let mut w = self.writer();
        let mut holder = None;
        let mut matches = 0;
        for (i, level) in self.levels().enumerate() {
            if level.holds(hash) {
                matches += 1;
                holder = Some((i, level));
            }
        }
        match (matches, holder) {
            (1, Some((i, level))) if level.remove(hash) => {
                writer_sub(&self.len, 1);
                if (level.count() as f64) < REOPEN_LOAD * level.slots() as f64 {
                    if let Some(flag) = w.saturated.get_mut(i) {
                        *flag = false;
                    }
                }
                Removal::Removed
            }
            (0, _) => Removal::NotFound,
            _ => {
                writer_add(&self.ambiguous, 1);
                Removal::Ambiguous
            }
        }
    }

    /// Empty the filter, first making it `Untrusted` (readers may briefly miss keys while it is
    /// being cleared, so "absent" must not be believed). Levels stay allocated. Inserts racing
    /// with `clear` may be wiped: a warm-up begun after `clear` must cover them.
    pub fn clear(&self) {
        self.trust.invalidate();
        let mut w = self.writer();
        for level in self.levels() {
            level.clear();
        }
        w.saturated.iter_mut().for_each(|f| *f = false);
        self.len.store(0, Ordering::Relaxed);
        self.ambiguous.store(0, Ordering::Relaxed);
    }

    /// The trust state consulted by [`definitely_absent`](Self::definitely_absent).
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Fingerprints stored (inserts minus successful removals).
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no fingerprint is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fingerprint slots over all levels (the hard ceiling before another level is added; a
    /// level saturates at about 95–97 % of its slots).
    pub fn capacity(&self) -> u64 {
        self.levels().map(Level::slots).sum()
    }

    /// `len / capacity`.
    pub fn load_factor(&self) -> f64 {
        self.len() as f64 / self.capacity().max(1) as f64
    }

    /// Levels in the chain (1 until the filter first outgrows its capacity). More than one level
    /// raises the false-positive rate (the sum over levels) and the lookup cost; rebuild with a
    /// larger capacity when it grows.
    pub fn level_count(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Bytes of fingerprint storage (the packed bucket words of every level).
    pub fn memory_bytes(&self) -> usize {
        self.levels().map(Level::memory_bytes).sum()
    }

    /// Memory bits per stored fingerprint (infinite when empty).
    pub fn bits_per_item(&self) -> f64 {
        self.memory_bytes() as f64 * 8.0 / self.len() as f64
    }

    /// Expected false-positive rate at the current fill: per level with fill `a`, a lookup of an
    /// absent key compares its fingerprint with 8 slots, each occupied with probability `a` by a
    /// uniform fingerprint in 1..=4095, so `p = 1 - (1 - a / 4095)^8 ≈ 8a / 4095`; levels combine
    /// as `1 - Π (1 - p)`.
    pub fn expected_fpr(&self) -> f64 {
        let miss: f64 = self
            .levels()
            .map(|l| {
                let a = l.count() as f64 / l.slots() as f64;
                (1.0 - a / FP_VALUES as f64).powi(2 * SLOTS_PER_BUCKET as i32)
            })
            .product();
        1.0 - miss
    }

    /// Removals that returned [`Removal::Ambiguous`] since creation or [`clear`](Self::clear):
    /// stale fingerprints that only a rebuild removes.
    pub fn ambiguous_removals(&self) -> u64 {
        self.ambiguous.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for CuckooFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CuckooFilter")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("levels", &self.level_count())
            .field("trust", &self.trust.state())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_during_an_endless_move_answers_maybe_present_instead_of_hanging() {
        let f = CuckooFilter::with_capacity(100);
        f.insert(b"present").unwrap();
        let absent = (0u32..).map(|n| format!("absent.{n}")).find(|k| !f.contains(k.as_bytes()));
        let absent = absent.unwrap();
        // A writer stuck mid-move (odd sequence): misses cannot be validated.
        f.moves.store(1, Ordering::Relaxed);
        assert!(f.contains(absent.as_bytes()), "unvalidated miss must answer maybe-present");
        assert!(f.contains(b"present"));
        f.moves.store(2, Ordering::Relaxed);
        assert!(!f.contains(absent.as_bytes()));
    }
}
