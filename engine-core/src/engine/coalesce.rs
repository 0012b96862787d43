//! Backend reads in flight: concurrent misses of one id share one read, and every read is
//! checked against the writes that committed while it was on its way.
//!
//! A read that fetched an id from L2 or L3 just before a newer write of that id committed
//! answers with the older value. Answering it is fine for the readers who started before the
//! commit; caching it is not (L1 may have evicted the newer entry, and the older one would then
//! be served long after the newer write was acknowledged), and neither is handing it to a reader
//! who joined the shared read after the commit. So, while any read is in flight, the engine
//! records the stamps committed meanwhile (its own L3 writes, a WAL drain, other instances'
//! invalidations); a read caches its answer only if no newer stamp was recorded for the id, and
//! a reader whose answer is older than a recorded stamp reads L3 again. The record holds only
//! what some read in flight may need: it is pruned as the oldest read finishes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::l1::L1;
use crate::{newer_wins, ErrorKind, ObjectId, Stamp, SyncItem};

/// The answer of one shared read.
pub(crate) type Answer = Result<Option<SyncItem>, (ErrorKind, String)>;

/// One shared read: its answer, and the sequence number at which it started.
pub(crate) struct Cell {
    pub answer: OnceCell<Answer>,
    seq: u64,
}

#[derive(Default)]
struct State {
    /// The next sequence number (reads take one when they start, commits when recorded).
    seq: u64,
    /// Shared single-id reads by id.
    inflight: HashMap<ObjectId, Arc<Cell>>,
    /// Reads in flight by start sequence number, with their count.
    active: BTreeMap<u64, usize>,
    /// Ids being read by batch reads (`get_many`), with their count.
    batch: HashMap<ObjectId, usize>,
    /// The newest stamp committed per id since the oldest read in flight started, with the
    /// sequence number of that commit.
    commits: HashMap<ObjectId, (Stamp, u64)>,
    /// `commits` in commit order, for pruning.
    order: VecDeque<(u64, ObjectId)>,
}

impl State {
    fn release(&mut self, seq: u64) {
        if let Some(n) = self.active.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                self.active.remove(&seq);
            }
        }
        // Commits older than every read still in flight can matter to no one.
        let oldest = self.active.keys().next().copied().unwrap_or(u64::MAX);
        while self.order.front().is_some_and(|(s, _)| *s < oldest) {
            if let Some((s, id)) = self.order.pop_front() {
                if self.commits.get(&id).is_some_and(|(_, at)| *at == s) {
                    self.commits.remove(&id);
                }
            }
        }
    }

    fn newer_than(&self, id: &ObjectId, item: Option<&SyncItem>) -> bool {
        self.commits
            .get(id)
            .is_some_and(|(stamp, _)| newer_wins(stamp, item.map(SyncItem::stamp).as_ref()))
    }
}

/// Reads in flight, and the commits they must not undercut.
#[derive(Default)]
pub(crate) struct Coalescer {
    state: Mutex<State>,
}

/// One reader's hold on a shared read; releases it when dropped.
pub(crate) struct Ticket<'a> {
    c: &'a Coalescer,
    seq: u64,
    id: ObjectId,
    pub cell: Arc<Cell>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut s = self.c.state.lock();
        // Leave the shared read in place while it is still reading for someone else (the map
        // and this ticket are the last two holders when no one else is).
        let done = self.cell.answer.initialized() || Arc::strong_count(&self.cell) <= 2;
        if done && s.inflight.get(&self.id).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
            s.inflight.remove(&self.id);
        }
        s.release(self.seq);
    }
}

/// A batch read's hold on its ids; releases them when dropped.
pub(crate) struct BatchTicket<'a> {
    c: &'a Coalescer,
    seq: u64,
    ids: &'a [ObjectId],
}

impl Drop for BatchTicket<'_> {
    fn drop(&mut self) {
        let mut s = self.c.state.lock();
        for id in self.ids {
            if let Some(n) = s.batch.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    s.batch.remove(id);
                }
            }
        }
        s.release(self.seq);
    }
}

impl Coalescer {
    /// Join the shared read of `id`, or start one. A joiner counts as started when the shared
    /// read did: the answer it gets is checked against every commit since then.
    pub(crate) fn join(&self, id: &ObjectId) -> Ticket<'_> {
        let mut s = self.state.lock();
        let cell = match s.inflight.get(id) {
            Some(cell) => cell.clone(),
            None => {
                s.seq += 1;
                let cell = Arc::new(Cell { answer: OnceCell::new(), seq: s.seq });
                s.inflight.insert(id.clone(), cell.clone());
                cell
            }
        };
        *s.active.entry(cell.seq).or_default() += 1;
        Ticket { c: self, seq: cell.seq, id: id.clone(), cell }
    }

    /// Register a batch read of `ids` (not shared).
    pub(crate) fn batch<'a>(&'a self, ids: &'a [ObjectId]) -> BatchTicket<'a> {
        let mut s = self.state.lock();
        s.seq += 1;
        let seq = s.seq;
        *s.active.entry(seq).or_default() += 1;
        for id in ids {
            *s.batch.entry(id.clone()).or_default() += 1;
        }
        BatchTicket { c: self, seq, ids }
    }

    /// True while a backend read of `id` is in flight.
    pub(crate) fn in_flight(&self, id: &ObjectId) -> bool {
        let s = self.state.lock();
        s.inflight.contains_key(id) || s.batch.contains_key(id)
    }

    /// These stamps are now in L3 (or in another instance's tiers): reads in flight must not
    /// cache anything older, and L1 must not keep an older entry that such a read could have
    /// put there. A shared read of one of these ids that has already answered is detached, so
    /// that a reader arriving now starts a fresh read.
    pub(crate) fn committed<'a>(
        &self,
        l1: &L1,
        stamps: impl IntoIterator<Item = (&'a ObjectId, Stamp)>,
    ) {
        let mut s = self.state.lock();
        if s.active.is_empty() {
            return;
        }
        for (id, stamp) in stamps {
            if s.commits.get(id).is_some_and(|(cur, _)| !newer_wins(&stamp, Some(cur))) {
                continue;
            }
            s.seq += 1;
            let seq = s.seq;
            s.commits.insert(id.clone(), (stamp, seq));
            s.order.push_back((seq, id.clone()));
            if s.inflight.get(id).is_some_and(|c| c.answer.initialized()) {
                s.inflight.remove(id);
            }
            l1.drop_older(id, stamp);
        }
    }

    /// Cache `item` in L1 unless a newer stamp committed while the read was in flight (checked
    /// and cached under one lock, so a commit cannot slip in between).
    pub(crate) fn fill(&self, l1: &L1, item: &SyncItem) {
        let s = self.state.lock();
        if !s.newer_than(item.id(), Some(item)) {
            l1.put(item);
        }
    }

    /// The newest stamp recorded for `id` since the oldest read in flight started.
    pub(crate) fn newest_commit(&self, id: &ObjectId) -> Option<Stamp> {
        self.state.lock().commits.get(id).map(|(stamp, _)| *stamp)
    }

    /// True if a stamp newer than `answer` committed for `id` since the oldest read in flight
    /// started: the answer may be older than a write acknowledged before its reader asked.
    pub(crate) fn superseded(&self, id: &ObjectId, answer: Option<&SyncItem>) -> bool {
        self.state.lock().newer_than(id, answer)
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
