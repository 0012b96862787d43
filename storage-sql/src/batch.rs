//! Deciding a batch: one candidate per id (the newest stamp in the batch), the winners against
//! what is stored, the rows to upsert and the Merkle [`ChangeSet`] they cause. Pure logic.

use std::collections::{BTreeMap, HashMap};

use sync_engine_core::id::HARD_MAX_ID_LEN;
use sync_engine_core::merkle::{ChangeSet, Digest};
use sync_engine_core::store::PutOutcome;
use sync_engine_core::{newer_wins, Stamp, SyncItem};

use crate::codec::{seg_hash, split_last};
use crate::driver::{ItemRow, StoredStamp};
use crate::error::{Failure, Fallible};

/// A batch reduced to one candidate per id, sorted by id (the order rows are written in, which
/// keeps lock order stable across writers).
#[derive(Debug)]
pub(crate) struct Candidates<'a> {
    /// The newest item of each id, sorted by id.
    items: Vec<&'a SyncItem>,
    /// The whole batch, in order (for the applied / stale counts).
    all: &'a [SyncItem],
}

impl<'a> Candidates<'a> {
    /// The newest item of each id; refuses ids longer than the id column holds.
    pub(crate) fn new(items: &'a [SyncItem]) -> Fallible<Candidates<'a>> {
        let mut best: BTreeMap<&str, &SyncItem> = BTreeMap::new();
        for item in items {
            let id = item.id().as_str();
            if id.len() > HARD_MAX_ID_LEN {
                return Err(Failure::Invalid(format!(
                    "id `{}…` is {} bytes, over the {HARD_MAX_ID_LEN}-byte id column",
                    id.chars().take(32).collect::<String>(),
                    id.len()
                )));
            }
            match best.get(id) {
                Some(b) if !newer_wins(&item.stamp(), Some(&b.stamp())) => {}
                _ => {
                    best.insert(id, item);
                }
            }
        }
        Ok(Candidates { items: best.into_values().collect(), all: items })
    }

    /// The candidate ids, sorted.
    pub(crate) fn ids(&self) -> Vec<&'a str> {
        self.items.iter().map(|i| i.id().as_str()).collect()
    }

    /// Decide against the stored stamps: the rows to write, the Merkle change set, the outcome.
    ///
    /// Counts follow the batch order, as if its items were applied one by one: an item is
    /// applied when newer than what the store (or an earlier item of the batch) holds, else
    /// stale. The rows written are the final state: the newest item of each id, when newer than
    /// the stored one.
    pub(crate) fn decide(&self, stored: Vec<StoredStamp>) -> Fallible<Decision<'a>> {
        let stored: HashMap<String, StoredStamp> =
            stored.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut current: HashMap<&str, Stamp> =
            stored.iter().map(|(id, s)| (id.as_str(), s.stamp)).collect();
        let mut applied = 0;
        for item in self.all {
            let stamp = item.stamp();
            if newer_wins(&stamp, current.get(item.id().as_str())) {
                applied += 1;
                current.insert(item.id().as_str(), stamp);
            }
        }
        let mut rows = Vec::new();
        let mut changes = ChangeSet::new();
        for item in &self.items {
            let id = item.id().as_str();
            let old = stored.get(id);
            if !newer_wins(&item.stamp(), old.map(|o| &o.stamp)) {
                continue;
            }
            let leaf: Option<Digest> = (!item.is_tombstone()).then(|| item.leaf_digest());
            let old_leaf = old.and_then(|o| o.leaf);
            changes.push(id, old_leaf, leaf).map_err(|e| {
                Failure::Invalid(format!("id `{id}` cannot be placed in the tree: {e}"))
            })?;
            let (parent, segment) = split_last(id);
            rows.push(ItemRow {
                id,
                parent,
                seghash: seg_hash(segment),
                stamp: item.stamp(),
                updated_at: item.updated_at(),
                content: item.content().as_ref(),
                state: item.state(),
                leaf,
                existed: old.is_some(),
                was_chunked: old.is_some_and(|o| o.chunked),
                was_tombstone: old.is_some_and(|o| o.stamp.tombstone),
            });
        }
        let outcome = PutOutcome { applied, stale: self.all.len() - applied };
        Ok(Decision { rows, changes, outcome })
    }
}

/// What one attempt of `put_batch` writes.
#[derive(Debug)]
pub(crate) struct Decision<'a> {
    /// Rows to upsert, sorted by id.
    pub rows: Vec<ItemRow<'a>>,
    /// The leaf changes they cause.
    pub changes: ChangeSet,
    /// Applied and stale counts.
    pub outcome: PutOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine_core::ObjectId;

    fn item(id: &str, v: u64, c: &str) -> SyncItem {
        SyncItem::new(ObjectId::new(id).unwrap(), v, c.to_owned())
    }

    #[test]
    fn newest_in_batch_wins_and_stale_ones_are_counted() {
        let batch = vec![item("a.x", 9, "nine"), item("a.x", 4, "four"), item("a.y", 1, "y")];
        let c = Candidates::new(&batch).unwrap();
        assert_eq!(c.ids(), vec!["a.x", "a.y"]);
        let stored = vec![StoredStamp {
            id: "a.y".into(),
            stamp: Stamp { version: 2, ..batch[2].stamp() },
            leaf: None,
            chunked: false,
        }];
        let d = c.decide(stored).unwrap();
        // a.x: 9 applied, then 4 stale; a.y: 1 is older than the stored 2.
        assert_eq!(d.outcome, PutOutcome { applied: 1, stale: 2 });
        let order = vec![item("a.x", 4, "four"), item("a.x", 9, "nine")];
        let d = Candidates::new(&order).unwrap().decide(vec![]).unwrap();
        assert_eq!(d.outcome, PutOutcome { applied: 2, stale: 0 }, "counted in batch order");
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows[0].stamp.version, 9);
        assert_eq!((d.rows[0].parent, d.rows[0].existed), ("a", false));
        assert_eq!(d.changes.len(), 1);
    }

    #[test]
    fn tombstone_over_live_removes_the_leaf() {
        let live = item("a.x", 1, "v");
        let dead = SyncItem::tombstone(live.id().clone(), 2);
        let batch = vec![dead];
        let c = Candidates::new(&batch).unwrap();
        let stored = vec![StoredStamp {
            id: "a.x".into(),
            stamp: live.stamp(),
            leaf: Some(live.leaf_digest()),
            chunked: true,
        }];
        let d = c.decide(stored).unwrap();
        assert_eq!(d.rows[0].leaf, None);
        assert!(d.rows[0].existed && d.rows[0].was_chunked);
        let change = d.changes.iter().next().unwrap();
        assert_eq!((change.old, change.new), (Some(live.leaf_digest()), None));
    }

    #[test]
    fn overlong_ids_are_refused_by_name() {
        let id = ObjectId::with_max_len(&"x".repeat(1025), 2000).unwrap();
        let batch = vec![SyncItem::new(id, 1, "v")];
        let e = Candidates::new(&batch).unwrap_err();
        assert!(matches!(e, Failure::Invalid(m) if m.contains("1025")));
    }
}
