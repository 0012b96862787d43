//! [`plan`] against a model: ops applied one by one with the core's `newer_wins` on decoded
//! stamps, the shadow digest of every key before and after each op.

use super::*;
use crate::codec;
use crate::log::{self, Change};
use proptest::prelude::*;
use sync_engine_core::merkle::Digest;
use sync_engine_core::{newer_wins, ObjectId, SyncItem};

const IDS: [&str; 3] = ["a.b", "c", "a.b.c"];

/// A stored or incoming value: an item (shadowed or not), or foreign bytes.
#[derive(Debug, Clone)]
enum Val {
    Item(SyncItem, bool),
    Foreign(Vec<u8>),
}

impl Val {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Val::Item(item, shadow) => codec::encode(item, *shadow).unwrap(),
            Val::Foreign(b) => b.clone(),
        }
    }
    fn digest(&self) -> Option<Digest> {
        match self {
            Val::Item(item, true) if !item.is_tombstone() => Some(item.leaf_digest()),
            _ => None,
        }
    }
}

fn item(id: usize) -> impl Strategy<Value = SyncItem> {
    // Few versions and contents, so that equal versions (content-hash tie-breaks) and equal
    // stamps are common; versions around 2^32 and u64::MAX too.
    let version = prop_oneof![0u64..4, Just(1 << 32), Just((1 << 32) - 1), Just(u64::MAX)];
    (version, 0u8..3, any::<bool>()).prop_map(move |(v, c, tomb)| {
        let oid = ObjectId::new(IDS[id]).unwrap();
        if tomb {
            SyncItem::tombstone(oid, v)
        } else {
            SyncItem::new(oid, v, vec![c; 3])
        }
    })
}

fn stored(id: usize) -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        3 => Just(None),
        6 => (item(id), any::<bool>()).prop_map(|(i, s)| Some(Val::Item(i, s))),
        1 => prop_oneof![Just(vec![7u8; 90]), Just(b"short".to_vec())].prop_map(|b| Some(Val::Foreign(b))),
    ]
}

/// (id index, kind: 0 set, 1 set with TTL, 2 remove, item).
fn op() -> impl Strategy<Value = (usize, u8, SyncItem)> {
    (0..IDS.len()).prop_flat_map(|i| (Just(i), 0u8..3, item(i)))
}

proptest! {
    #[test]
    fn plan_matches_ops_applied_one_by_one(
        start in (stored(0), stored(1), stored(2)),
        ops in proptest::collection::vec(op(), 1..8),
    ) {
        let keys = Keys::new("p:").unwrap();
        let start = [start.0, start.1, start.2];
        let ids: Vec<ObjectId> = IDS.iter().map(|s| ObjectId::new(s).unwrap()).collect();
        let batch: Vec<Op<'_>> = ops
            .iter()
            .map(|(i, k, item)| {
                let shadow = *k == 0;
                match k {
                    2 => Op { id: &ids[*i], value: Vec::new(), kind: Kind::Remove },
                    _ => Op {
                        id: &ids[*i],
                        value: codec::encode(item, shadow).unwrap(),
                        kind: if shadow { Kind::Set } else { Kind::SetTtl(500) },
                    },
                }
            })
            .collect();
        let stored_bytes: Vec<Option<Vec<u8>>> =
            ops.iter().map(|(i, _, _)| start[*i].as_ref().map(Val::bytes)).collect();

        // The model.
        let mut state = start.clone();
        let mut changed = [false; 3];
        let mut outcome = PutOutcome::default();
        let mut changes = Vec::new();
        let mut foreign = None;
        for (i, k, it) in &ops {
            let before = state[*i].clone();
            let after = if *k == 2 {
                None
            } else {
                match &before {
                    Some(Val::Foreign(_)) => {
                        foreign = Some(*i);
                        break;
                    }
                    Some(Val::Item(old, _)) if !newer_wins(&it.stamp(), Some(&old.stamp())) => {
                        outcome.stale += 1;
                        continue;
                    }
                    _ => {
                        outcome.applied += 1;
                        Some(Val::Item(it.clone(), *k == 0))
                    }
                }
            };
            if before.is_none() && after.is_none() {
                continue;
            }
            let (od, nd) = (before.as_ref().and_then(Val::digest), after.as_ref().and_then(Val::digest));
            if od.is_some() || nd.is_some() {
                changes.push((IDS[*i], od, nd));
            }
            state[*i] = after;
            changed[*i] = true;
        }

        match plan(&keys, &batch, &stored_bytes) {
            Err(Foreign { key }) => {
                let i = foreign.expect("plan refused a batch the model accepts");
                prop_assert_eq!(key, keys.data(&ids[i]));
            }
            Ok(p) => {
                prop_assert!(foreign.is_none(), "plan accepted a foreign value");
                prop_assert_eq!(p.outcome, outcome);
                let mut got = Vec::new();
                prop_assert_eq!(log::parse_blob(&keys.data_prefix(), &p.log, &mut got), Ok(p.changes));
                let want: Vec<Change<'_>> = changes
                    .iter()
                    .map(|(id, old, new)| Change { id, old: *old, new: *new })
                    .collect();
                prop_assert_eq!(got, want);
                for (i, id) in ids.iter().enumerate() {
                    let key = keys.data(id);
                    let set = p.set.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_vec());
                    let ttl = p.set_ttl.iter().find(|(k, _, _)| *k == key).map(|(_, v, _)| v.to_vec());
                    let del = p.del.contains(&key);
                    if !changed[i] {
                        prop_assert!(set.is_none() && ttl.is_none() && !del, "{} untouched", id);
                        continue;
                    }
                    match &state[i] {
                        None => prop_assert!(del && set.is_none() && ttl.is_none()),
                        Some(v @ Val::Item(_, true)) => prop_assert_eq!(set, Some(v.bytes())),
                        Some(v) => prop_assert_eq!(ttl, Some(v.bytes())),
                    }
                }
                prop_assert_eq!(p.is_empty(), !changed.iter().any(|c| *c));
            }
        }
    }
}

#[test]
fn replies_yield_the_pending_count_or_name_what_failed() {
    assert_eq!(pending_of(&[Value::Okay, Value::Int(3), Value::Int(12)]), Ok(12));
    assert_eq!(pending_of(&[Value::Nil]), Ok(0));
    assert_eq!(pending_of(&[Value::BulkString(b"7".to_vec())]), Ok(7));
    assert!(pending_of(&[Value::BulkString(b"x".to_vec())]).is_err());
}
