//! The harness's record of what the engine acknowledged, and the check of what it reads back.
//!
//! Per id the ledger keeps the latest acknowledged operation (its version and kind) and the
//! operations submitted after it that were never acknowledged (in flight at a SIGKILL, or
//! failed): the engine may or may not have kept those, so a read showing one of them is
//! correct. Anything else is a violation:
//!
//! - **lost**: the latest acknowledged operation is a write, and the read finds nothing (and no
//!   later delete was in flight);
//! - **regressed**: the read shows an older version than the latest acknowledged one;
//! - **resurrected**: the latest acknowledged operation is a delete, and the read shows a write
//!   that is not a later, unacknowledged one;
//! - **wrong**: the value is not byte-identical to what the operation it names wrote, or
//!   names an operation never submitted for that id.
//!
//! After a check the ledger [`settle`](Ledger::settle)s on what was read: an in-flight
//! operation seen stored counts as stored from then on, one not seen can no longer appear
//! (the process that held it is gone and startup drained the WAL).

use std::collections::{BTreeMap, HashMap};

use sync_engine::SyncItem;

use crate::workload::{content, parse_content, Kind, OpKey};

/// One operation submitted but not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    key: OpKey,
    kind: Kind,
}

/// What the ledger knows of one id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdState {
    /// Latest acknowledged (or observed after a restart) state: version, operation, kind.
    /// For an observed in-flight delete the version is the previous one (a lower bound).
    acked: Option<(u64, OpKey, Kind)>,
    /// Operations submitted after `acked` without acknowledgement.
    pending: Vec<Attempt>,
}

/// The result of comparing reads with the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Ids compared.
    pub checked: usize,
    /// Ids whose latest acknowledged operation is a write.
    pub live: usize,
    /// Ids whose latest acknowledged operation is a delete.
    pub deleted: usize,
    /// Reads showing an unacknowledged (in-flight) operation: allowed.
    pub unacked_landed: usize,
    /// Acknowledged writes not found.
    pub lost: Vec<String>,
    /// Reads older than the acknowledged version.
    pub regressed: Vec<String>,
    /// Acknowledged deletes undone.
    pub resurrected: Vec<String>,
    /// Values that are not what any submitted operation wrote.
    pub wrong: Vec<String>,
}

impl CheckReport {
    /// Every violation (lost + regressed + resurrected + wrong).
    pub fn violations(&self) -> usize {
        self.lost.len() + self.regressed.len() + self.resurrected.len() + self.wrong.len()
    }

    /// A one-line summary with up to 5 example ids per class.
    pub fn describe(&self) -> String {
        let ex = |v: &Vec<String>| v.iter().take(5).cloned().collect::<Vec<_>>().join(",");
        format!(
            "checked {} (live {}, deleted {}, unacked landed {}); lost {} [{}], regressed {} [{}], resurrected {} [{}], wrong {} [{}]",
            self.checked,
            self.live,
            self.deleted,
            self.unacked_landed,
            self.lost.len(),
            ex(&self.lost),
            self.regressed.len(),
            ex(&self.regressed),
            self.resurrected.len(),
            ex(&self.resurrected),
            self.wrong.len(),
            ex(&self.wrong)
        )
    }
}

/// The acknowledged state of every id an ingest touched.
#[derive(Debug, Default)]
pub struct Ledger {
    ids: BTreeMap<String, IdState>,
    inflight: HashMap<(u32, u32, u64), (String, Kind)>,
    acks: u64,
}

/// What a read of one id showed.
enum Seen<'a> {
    Absent,
    Item(&'a SyncItem, OpKey),
    Foreign,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Acknowledgements recorded so far.
    pub fn acks(&self) -> u64 {
        self.acks
    }

    /// Every id the ledger knows.
    pub fn ids(&self) -> Vec<String> {
        self.ids.keys().cloned().collect()
    }

    /// `try` line: operation `key` on `id` is being submitted.
    pub fn on_try(&mut self, key: OpKey, id: &str, kind: Kind) {
        self.inflight.insert((key.run, key.worker, key.n), (id.to_owned(), kind));
        self.ids.entry(id.to_owned()).or_default().pending.push(Attempt { key, kind });
    }

    /// `ack` line: operation `key` is acknowledged at `version`. Returns false when the ack
    /// names an operation the ledger never saw submitted (a protocol error).
    pub fn on_ack(&mut self, key: OpKey, version: u64) -> bool {
        let Some((id, kind)) = self.inflight.remove(&(key.run, key.worker, key.n)) else {
            return false;
        };
        self.acks += 1;
        let st = self.ids.entry(id).or_default();
        // Earlier unacknowledged operations on this id carry lower versions: they can never
        // win over this one. One worker owns the id, so none is later.
        st.pending.clear();
        st.acked = Some((version, key, kind));
        true
    }

    /// `fail` line: the operation stays possible (the engine may still store it later).
    pub fn on_fail(&mut self, key: OpKey) {
        self.inflight.remove(&(key.run, key.worker, key.n));
    }

    fn seen<'a>(id: &str, item: Option<&'a SyncItem>) -> Seen<'a> {
        match item {
            None => Seen::Absent,
            Some(item) => match parse_content(item.content()) {
                Some((cid, key)) if cid == id && item.content()[..] == content(id, key)[..] => {
                    Seen::Item(item, key)
                }
                _ => Seen::Foreign,
            },
        }
    }

    /// Compare `observed` (id → what a read returned; ids missing from the map are not
    /// checked) with the ledger, without changing it.
    pub fn evaluate(&self, observed: &HashMap<String, Option<SyncItem>>) -> CheckReport {
        let mut r = CheckReport::default();
        for (id, st) in &self.ids {
            let Some(got) = observed.get(id) else {
                continue;
            };
            r.checked += 1;
            match st.acked {
                Some((_, _, Kind::Put)) => r.live += 1,
                Some((_, _, Kind::Del)) => r.deleted += 1,
                None => {}
            }
            let pending =
                |key: OpKey, kind: Kind| st.pending.iter().any(|a| a.key == key && a.kind == kind);
            let pending_del = st.pending.iter().any(|a| a.kind == Kind::Del);
            match (Self::seen(id, got.as_ref()), st.acked) {
                (Seen::Foreign, _) => r.wrong.push(id.clone()),
                (Seen::Absent, Some((_, _, Kind::Put))) if !pending_del => r.lost.push(id.clone()),
                (Seen::Absent, Some((_, _, Kind::Put))) => r.unacked_landed += 1,
                (Seen::Absent, _) => {}
                (Seen::Item(item, key), Some((v, akey, akind))) => {
                    if item.version() < v {
                        r.regressed.push(id.clone());
                    } else if key == akey && akind == Kind::Put {
                        if item.version() != v {
                            r.wrong.push(id.clone());
                        }
                    } else if pending(key, Kind::Put) && item.version() > v {
                        r.unacked_landed += 1;
                    } else if akind == Kind::Del {
                        r.resurrected.push(id.clone());
                    } else {
                        r.wrong.push(id.clone());
                    }
                }
                (Seen::Item(_, key), None) => {
                    if pending(key, Kind::Put) {
                        r.unacked_landed += 1;
                    } else {
                        r.wrong.push(id.clone());
                    }
                }
            }
        }
        r
    }

    /// Adopt what a restarted engine read as the new acknowledged state of each id in
    /// `observed` (call after [`evaluate`](Self::evaluate)); forget in-flight operations.
    pub fn settle(&mut self, observed: &HashMap<String, Option<SyncItem>>) {
        self.inflight.clear();
        for (id, st) in self.ids.iter_mut() {
            let Some(got) = observed.get(id) else {
                continue;
            };
            let floor = st.acked.map(|a| a.0).unwrap_or(0);
            match Self::seen(id, got.as_ref()) {
                Seen::Item(item, key) => st.acked = Some((item.version(), key, Kind::Put)),
                Seen::Absent => {
                    let del = st.pending.iter().rev().find(|a| a.kind == Kind::Del).map(|a| a.key);
                    match (st.acked, del) {
                        (Some((_, _, Kind::Put)), Some(key)) => {
                            st.acked = Some((floor, key, Kind::Del));
                        }
                        (None, Some(key)) => st.acked = Some((0, key, Kind::Del)),
                        _ => {}
                    }
                }
                // A wrong value was already reported; keep the acknowledged state.
                Seen::Foreign => {}
            }
            st.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::ObjectId;

    fn key(run: u32, n: u64) -> OpKey {
        OpKey { run, worker: 0, n }
    }

    fn put(id: &str, k: OpKey, v: u64) -> Option<SyncItem> {
        Some(SyncItem::new(ObjectId::new(id).unwrap(), v, content(id, k)))
    }

    fn obs(entries: Vec<(&str, Option<SyncItem>)>) -> HashMap<String, Option<SyncItem>> {
        entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn classifies_every_outcome() {
        let mut l = Ledger::new();
        // a: acked put v10, then an in-flight put.
        l.on_try(key(0, 0), "a", Kind::Put);
        assert!(l.on_ack(key(0, 0), 10));
        l.on_try(key(0, 1), "a", Kind::Put);
        // b: acked delete.
        l.on_try(key(0, 2), "b", Kind::Put);
        l.on_ack(key(0, 2), 11);
        l.on_try(key(0, 3), "b", Kind::Del);
        l.on_ack(key(0, 3), 12);
        // c: acked put.
        l.on_try(key(0, 4), "c", Kind::Put);
        l.on_ack(key(0, 4), 13);

        let good =
            obs(vec![("a", put("a", key(0, 1), 20)), ("b", None), ("c", put("c", key(0, 4), 13))]);
        let r = l.evaluate(&good);
        assert_eq!(r.violations(), 0, "{}", r.describe());
        assert_eq!(r.unacked_landed, 1);

        let bad =
            obs(vec![("a", None), ("b", put("b", key(0, 2), 11)), ("c", put("c", key(0, 4), 9))]);
        let r = l.evaluate(&bad);
        assert_eq!(r.lost, vec!["a".to_string()]);
        assert_eq!(r.regressed, vec!["b".to_string(), "c".to_string()]);

        let mut tampered = put("c", key(0, 4), 13).unwrap();
        tampered = SyncItem::new(tampered.id().clone(), 13, b"c|r0w0n4|zzzz".to_vec());
        let r = l.evaluate(&obs(vec![("c", Some(tampered))]));
        assert_eq!(r.wrong, vec!["c".to_string()]);

        l.settle(&good);
        assert_eq!(
            l.evaluate(&obs(vec![("a", put("a", key(0, 0), 10))])).regressed,
            vec!["a".to_string()],
            "after settling, the in-flight write that landed is the floor"
        );
    }

    #[test]
    fn in_flight_delete_may_land() {
        let mut l = Ledger::new();
        l.on_try(key(0, 0), "a", Kind::Put);
        l.on_ack(key(0, 0), 10);
        l.on_try(key(1, 0), "a", Kind::Del);
        let r = l.evaluate(&obs(vec![("a", None)]));
        assert_eq!(r.violations(), 0);
        l.settle(&obs(vec![("a", None)]));
        let r = l.evaluate(&obs(vec![("a", put("a", key(0, 0), 10))]));
        assert_eq!(r.resurrected, vec!["a".to_string()]);
    }
}
