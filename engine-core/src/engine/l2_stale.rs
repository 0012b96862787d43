//! Ids whose newest committed write L2 may lack, so that reads skip L2 for them.
//!
//! When a batch's L2 write fails (Redis down, a timeout, the breaker open), L3 still takes
//! it, and L2 keeps whatever it held for those ids — possibly an older version, or gets one
//! later (a promotion that was already on its way). Until the repair, a read answered by L2
//! could then be older than an acknowledged write. So the engine marks such ids with the stamp
//! L2 missed; a read of a marked id goes to L3, whose answer, promoted, clears the mark once L2
//! accepted it (L2's newer-wins then keeps anything older out for good). A repair that ran in
//! full clears the marks made before it started. Past `MAX_MARKS` ids (a long outage) the
//! engine stops counting and skips L2 for every id until such a repair.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::store::CacheEntry;
use crate::{newer_wins, ObjectId, Stamp};

/// Marked ids kept at most; beyond it every id is suspect until a full repair.
pub(crate) const MAX_MARKS: usize = 65_536;

/// What L2 missed for one id.
struct Mark {
    /// The newest stamp L2 missed.
    stamp: Stamp,
    /// The repair generation when it was (last) marked.
    generation: u64,
    /// When it was (last) marked, in marking order.
    seq: u64,
}

/// Taken before an L2 write is sent: the write can clear only marks made before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteToken(u64);

#[derive(Default)]
struct State {
    /// Marked ids.
    marks: HashMap<ObjectId, Mark>,
    /// Marking order.
    seq: u64,
    /// The current repair generation (advanced when a full repair starts).
    generation: u64,
    /// Every id is suspect, since this generation.
    all_since: Option<u64>,
}

/// The marks (`Inner::l2_stale`).
#[derive(Default)]
pub(crate) struct StaleL2 {
    state: Mutex<State>,
    /// Fast path: false when nothing is marked.
    any: AtomicBool,
}

impl State {
    /// Whether any read may need to skip L2.
    fn any(&self) -> bool {
        !self.marks.is_empty() || self.all_since.is_some()
    }
}

impl StaleL2 {
    /// L2 did not take these stamps.
    pub(crate) fn mark<'a>(&self, missed: impl IntoIterator<Item = (&'a ObjectId, Stamp)>) {
        let mut s = self.state.lock();
        let generation = s.generation;
        s.seq += 1;
        let seq = s.seq;
        for (id, stamp) in missed {
            if s.all_since.is_some() {
                break;
            }
            let full = s.marks.len() >= MAX_MARKS;
            match s.marks.get_mut(id) {
                Some(m) => {
                    if newer_wins(&stamp, Some(&m.stamp)) {
                        m.stamp = stamp;
                    }
                    m.generation = generation;
                    m.seq = seq;
                }
                None if full => {
                    tracing::warn!(
                        marks = MAX_MARKS,
                        "too many ids missing from L2: reads skip L2 until it is repaired"
                    );
                    s.marks.clear();
                    s.all_since = Some(generation);
                }
                None => {
                    s.marks.insert(id.clone(), Mark { stamp, generation, seq });
                }
            }
        }
        self.any.store(s.any(), Ordering::Release);
    }

    /// True if L2 may hold an older version of `id` than L3.
    pub(crate) fn suspect(&self, id: &ObjectId) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let s = self.state.lock();
        s.all_since.is_some() || s.marks.contains_key(id)
    }

    /// Take before sending an L2 write, for [`written`](Self::written).
    pub(crate) fn token(&self) -> WriteToken {
        WriteToken(self.state.lock().seq)
    }

    /// L2 accepted these stamps (or kept newer ones) in a write sent after `token` was taken:
    /// marks at or below them are cleared — unless made after the token (something may have
    /// removed the write from L2 since, e.g. a repair of the same id).
    pub(crate) fn written<'a>(
        &self,
        token: WriteToken,
        stamps: impl IntoIterator<Item = (&'a ObjectId, Stamp)>,
    ) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.state.lock();
        for (id, stamp) in stamps {
            let covered = s
                .marks
                .get(id)
                .is_some_and(|m| m.seq <= token.0 && !newer_wins(&m.stamp, Some(&stamp)));
            if covered {
                s.marks.remove(id);
            }
        }
        self.any.store(s.any(), Ordering::Release);
    }

    /// [`written`](Self::written) for the items of an L2 write that succeeded.
    pub(crate) fn written_entries(&self, token: WriteToken, entries: &[CacheEntry]) {
        self.written(token, entries.iter().map(|e| (e.item.id(), e.item.stamp())));
    }

    /// A full repair of L2 starts; returns its generation for [`repaired`](Self::repaired).
    pub(crate) fn begin_repair(&self) -> u64 {
        let mut s = self.state.lock();
        s.generation += 1;
        s.generation
    }

    /// The full repair of generation `generation` completed: L2 matched L3 for every id as
    /// of some moment after it started, so marks made before it are cleared.
    pub(crate) fn repaired(&self, generation: u64) {
        let mut s = self.state.lock();
        s.marks.retain(|_, m| m.generation >= generation);
        if s.all_since.is_some_and(|g| g < generation) {
            s.all_since = None;
        }
        self.any.store(s.any(), Ordering::Release);
    }

    /// Ids marked, and whether every id is suspect.
    pub(crate) fn size(&self) -> (usize, bool) {
        let s = self.state.lock();
        (s.marks.len(), s.all_since.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncItem;

    fn stamp(id: &ObjectId, v: u64) -> Stamp {
        SyncItem::new(id.clone(), v, format!("v{v}")).stamp()
    }

    #[test]
    fn a_mark_is_cleared_only_by_l2_taking_that_stamp_or_a_newer_one() {
        let s = StaleL2::default();
        let a = ObjectId::new("a").unwrap();
        assert!(!s.suspect(&a));
        s.mark([(&a, stamp(&a, 5))]);
        assert!(s.suspect(&a));
        s.written(s.token(), [(&a, stamp(&a, 4))]);
        assert!(s.suspect(&a), "an older promotion does not clear it");
        s.written(s.token(), [(&a, stamp(&a, 5))]);
        assert!(!s.suspect(&a));
        assert_eq!(s.size(), (0, false));
    }

    #[test]
    fn a_write_does_not_clear_a_mark_made_while_it_was_on_its_way() {
        let s = StaleL2::default();
        let a = ObjectId::new("a").unwrap();
        let sent = s.token();
        s.mark([(&a, stamp(&a, 5))]); // e.g. a repair removed the id after the write landed
        s.written(sent, [(&a, stamp(&a, 5))]);
        assert!(s.suspect(&a));
        s.written(s.token(), [(&a, stamp(&a, 5))]);
        assert!(!s.suspect(&a));
    }

    #[test]
    fn a_full_repair_clears_the_marks_made_before_it_started() {
        let s = StaleL2::default();
        let (a, b) = (ObjectId::new("a").unwrap(), ObjectId::new("b").unwrap());
        s.mark([(&a, stamp(&a, 1))]);
        let g = s.begin_repair();
        s.mark([(&b, stamp(&b, 1))]);
        s.repaired(g);
        assert!(!s.suspect(&a), "marked before the repair started");
        assert!(s.suspect(&b), "marked during the repair: it may have missed it");
        s.repaired(s.begin_repair());
        assert!(!s.suspect(&b));
    }

    #[test]
    fn too_many_marks_make_every_id_suspect_until_a_repair() {
        let s = StaleL2::default();
        let ids: Vec<ObjectId> =
            (0..=MAX_MARKS).map(|i| ObjectId::new(&format!("k{i}")).unwrap()).collect();
        s.mark(ids.iter().map(|id| (id, stamp(id, 1))));
        let other = ObjectId::new("never-written").unwrap();
        assert!(s.suspect(&other));
        assert_eq!(s.size(), (0, true));
        s.written(s.token(), ids.iter().map(|id| (id, stamp(id, 1))));
        assert!(s.suspect(&other), "only a repair lifts it");
        s.repaired(s.begin_repair());
        assert!(!s.suspect(&other));
    }
}
