//! Property test: random sequences of append / remove_through / reopen behave exactly like a
//! model (a VecDeque with the same bounds), across reopen of the file.

#[path = "support/util.rs"]
mod util;

use std::collections::VecDeque;

use proptest::prelude::*;
use sync_engine_core::store::Wal;
use sync_engine_core::{ErrorKind, ObjectId, SyncItem};
use sync_engine_wal::{encode_record, SqliteWal, WalOptions};

const MAX_ITEMS: u64 = 12;

#[derive(Debug, Clone)]
enum Op {
    /// Append this many items (0..=5), some of them tombstones.
    Append(u8, bool),
    /// Remove through the k-th pending entry (or beyond every one).
    Remove(u8),
    Reopen,
    /// Drop the handle without closing it, then open the file again.
    DropReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..=5, any::<bool>()).prop_map(|(n, t)| Op::Append(n, t)),
        2 => (0u8..16).prop_map(Op::Remove),
        1 => Just(Op::Reopen),
        1 => Just(Op::DropReopen),
    ]
}

struct Model {
    entries: VecDeque<(u64, SyncItem)>,
    next_seq: u64,
}

fn make(n: u8, tomb: bool, counter: &mut u64) -> Vec<SyncItem> {
    (0..n)
        .map(|i| {
            *counter += 1;
            let id = ObjectId::new(&format!("m.k{}", *counter % 7)).unwrap();
            if tomb && i % 2 == 1 {
                SyncItem::tombstone(id, *counter)
            } else {
                SyncItem::new(id, *counter, vec![*counter as u8; (*counter % 50) as usize])
                    .with_state("s")
            }
        })
        .collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let opts = WalOptions::default().with_bounds(MAX_ITEMS, u64::MAX);
        let mut wal = SqliteWal::open(&path, opts.clone()).await.unwrap();
        let mut model = Model { entries: VecDeque::new(), next_seq: 1 };
        let mut counter = 0;
        for op in ops {
            match op {
                Op::Append(n, tomb) => {
                    let items = make(n, tomb, &mut counter);
                    let fits = model.entries.len() as u64 + items.len() as u64 <= MAX_ITEMS;
                    match wal.append(&items).await {
                        Ok(last) => {
                            prop_assert!(
                                fits || items.is_empty(),
                                "append beyond the bound accepted"
                            );
                            for it in items {
                                model.entries.push_back((model.next_seq, it));
                                model.next_seq += 1;
                            }
                            prop_assert_eq!(last, model.next_seq - 1);
                        }
                        Err(e) => {
                            prop_assert!(!fits, "append within the bound refused: {}", e);
                            prop_assert_eq!(e.kind(), ErrorKind::Backpressure);
                        }
                    }
                }
                Op::Remove(k) => {
                    let through = model.entries.get(k as usize).map_or(model.next_seq + 3, |e| e.0);
                    let before = model.entries.len();
                    model.entries.retain(|e| e.0 > through);
                    let removed = wal.remove_through(through).await.unwrap();
                    prop_assert_eq!(removed, (before - model.entries.len()) as u64);
                }
                Op::Reopen => {
                    wal.close().await.unwrap();
                    wal = SqliteWal::open(&path, opts.clone()).await.unwrap();
                }
                Op::DropReopen => {
                    drop(wal);
                    wal = SqliteWal::open(&path, opts.clone()).await.unwrap();
                }
            }
            let got = wal.peek(1000).await.unwrap();
            prop_assert_eq!(got.len(), model.entries.len());
            for (g, (seq, it)) in got.iter().zip(&model.entries) {
                prop_assert_eq!(g.seq, *seq);
                prop_assert_eq!(&g.item, it);
            }
            let stats = wal.stats().await.unwrap();
            let bytes: u64 = model
                .entries
                .iter()
                .map(|(s, it)| encode_record(*s, it).unwrap().len() as u64)
                .sum();
            prop_assert_eq!((stats.items, stats.bytes), (model.entries.len() as u64, bytes));
        }
        prop_assert_eq!(wal.damaged_count(), 0);
        wal.close().await.unwrap();
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_wal_behaves_like_a_bounded_queue(ops in prop::collection::vec(op(), 1..30)) {
        run(ops)?;
    }
}
