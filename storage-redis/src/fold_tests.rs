//! The fold against a model: random batches of leaf changes folded into an in-memory stand-in
//! for Redis must give, for every stored node, the value and entries a from-scratch tree gives.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use sync_engine_core::merkle::{join, leaf_digest, Children, Digest, Entry, MemTree, NodeKey};

use crate::fold::{Fold, Step};
use crate::keys::{nibbles_hex, Keys};
use crate::log::{self, Change};
use crate::node::{self, Slot};

/// Run one fold of `changes` against `db`.
fn fold(keys: &Keys, cap: usize, db: &mut HashMap<String, Vec<u8>>, changes: &[Change<'_>]) {
    let mut f = Fold::new(keys, cap, changes);
    let mut supplied = Vec::new();
    loop {
        match f.step(std::mem::take(&mut supplied)).unwrap() {
            Step::Read(ks) => supplied = ks.iter().map(|k| db.get(k).cloned()).collect(),
            Step::Done { sets, dels } => {
                for k in dels {
                    assert!(db.remove(&k).is_some(), "deleted a node that was not stored: {k}");
                }
                db.extend(sets);
                return;
            }
        }
    }
}

/// Through the log encoding, as `put.lua` writes it, then netted.
fn via_log(keys: &Keys, cap: usize, db: &mut HashMap<String, Vec<u8>>, changes: &[Change<'_>]) {
    let blob = log::encode(&keys.data_prefix(), changes);
    let mut parsed = Vec::new();
    log::parse_blob(&keys.data_prefix(), &blob, &mut parsed).unwrap();
    fold(keys, cap, db, &log::net(parsed));
}

/// Check every stored node against the oracle: values, split shape, entries, bounds.
fn check(keys: &Keys, cap: usize, db: &HashMap<String, Vec<u8>>, live: &BTreeMap<String, Digest>) {
    let oracle = MemTree::from_items(live.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
    let mut flat = MemTree::with_cap(usize::MAX);
    for (k, v) in live {
        flat.upsert(k, *v).unwrap();
    }
    let base_n = format!("{}n:", keys.base());
    for (k, raw) in db {
        let rest = k.strip_prefix(&base_n).unwrap();
        let (hex, path) = rest.split_once(':').unwrap();
        let bucket: Vec<u8> = hex.chars().map(|c| c.to_digit(16).unwrap() as u8).collect();
        let key = NodeKey { path: path.to_owned(), bucket };
        let n = node::decode(raw).unwrap();
        assert_eq!(Some(n.value), oracle.node(&key), "value of {key:?}");
        assert!(n.value.count > 0, "empty node kept: {key:?}");
        if n.split {
            assert!(n.slots.is_empty());
        } else {
            assert!(
                n.slots.len() <= cap || key.bucket.len() >= 16,
                "{key:?} holds {} > {cap}",
                n.slots.len()
            );
            let Children::Entries(want) = flat.children(&key) else { unreachable!() };
            let mut w: Vec<(String, bool)> = want
                .iter()
                .map(|e| (e.segment().to_owned(), matches!(e, Entry::Path { .. })))
                .collect();
            let mut got: Vec<(String, bool)> =
                n.slots.iter().map(|s| (s.segment().to_owned(), s.is_path())).collect();
            w.sort();
            got.sort();
            assert_eq!(got, w, "entries of {key:?}");
            for s in &n.slots {
                if let Slot::Leaf(seg, d) = s {
                    assert_eq!(live.get(&join(path, seg)), Some(d));
                }
            }
        }
        if !key.bucket.is_empty() {
            let parent =
                keys.node(path, &nibbles_hex(&key.bucket[..key.bucket.len() - 1]).unwrap());
            assert!(node::decode(&db[&parent]).unwrap().split, "{key:?} under an unsplit parent");
        }
    }
    for id in live.keys() {
        let mut p = id.as_str();
        while let Some(i) = p.rfind('.') {
            p = &p[..i];
            assert!(db.contains_key(&keys.node(p, "")), "path {p} has no node");
        }
    }
}

const IDS: [&str; 12] =
    ["a", "b", "a.x", "a.y", "a.x.z", "c.d.e", "c.d.f", "c.g", "h", "a.x.w", "c.d", "q.r.s.t"];

fn id_of(i: usize) -> String {
    IDS.get(i).map(|s| (*s).to_owned()).unwrap_or_else(|| format!("w.{i}"))
}

fn batches() -> impl Strategy<Value = Vec<Vec<(usize, Option<u8>)>>> {
    let op = (0..IDS.len() + 40, proptest::option::of(0u8..4));
    proptest::collection::vec(proptest::collection::vec(op, 1..25), 1..6)
}

proptest! {
    #[test]
    fn folds_match_a_tree_built_from_scratch(cap in 1usize..5, batches in batches()) {
        let keys = Keys::new("t:").unwrap();
        let mut db = HashMap::new();
        let mut live: BTreeMap<String, Digest> = BTreeMap::new();
        for batch in batches {
            let ids: Vec<String> = batch.iter().map(|(i, _)| id_of(*i)).collect();
            let mut changes = Vec::new();
            for (id, (_, v)) in ids.iter().zip(&batch) {
                let old = live.get(id).copied();
                let new = v.map(|v| leaf_digest(id, u64::from(v), false, &[v; 32]));
                match new {
                    Some(d) => { live.insert(id.clone(), d); }
                    None => { live.remove(id); }
                }
                changes.push(Change { id, old, new });
            }
            via_log(&keys, cap, &mut db, &changes);
            check(&keys, cap, &db, &live);
        }
    }
}

#[test]
fn a_wide_node_splits_and_empties_without_garbage() {
    let keys = Keys::new("t:").unwrap();
    let mut db = HashMap::new();
    let mut live = BTreeMap::new();
    let ids: Vec<String> = (0..3000).map(|n| format!("items.{n}")).collect();
    let adds: Vec<Change> = ids
        .iter()
        .map(|id| {
            let d = leaf_digest(id, 1, false, &[0; 32]);
            live.insert(id.clone(), d);
            Change { id, old: None, new: Some(d) }
        })
        .collect();
    for chunk in adds.chunks(700) {
        via_log(&keys, 16, &mut db, chunk);
    }
    check(&keys, 16, &db, &live);
    assert!(db.len() > 3000 / 16, "not split: {} nodes", db.len());
    let removes: Vec<Change> =
        adds.iter().map(|c| Change { id: c.id, old: c.new, new: None }).collect();
    via_log(&keys, 16, &mut db, &removes);
    assert!(db.is_empty(), "{} nodes left", db.len());
}

#[test]
fn a_wrong_answer_count_is_refused() {
    let keys = Keys::new("t:").unwrap();
    let changes = [Change { id: "a.b", old: None, new: Some(Digest([1; 32])) }];
    let mut f = Fold::new(&keys, 4, &changes);
    let Step::Read(asked) = f.step(Vec::new()).unwrap() else { panic!("reads first") };
    assert_eq!(asked.len(), 2, "root and a");
    assert!(f.step(vec![None]).is_err());
}
