//! Property test: three engines (each with its own L1, filter and WAL) over one L2, one L3 and
//! one invalidation bus (in-memory fakes) run random interleavings of writes and deletes of
//! overlapping ids, reads that fill their L1s, flushes, and bus cuts and reconnects.
//!
//! At every settle point (all engines flushed, messages delivered) and at the end, every
//! instance reads the newest acknowledged value of every id (by the newer-wins order: version,
//! then content hash); at the end L3 holds exactly those stamps, L2 agrees, and the L2 and L3
//! Merkle roots are equal.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{id, Rig};
use proptest::prelude::*;
use sync_engine_core::memory::MemoryBus;
use sync_engine_core::store::{CacheExt, MerkleExt};
use sync_engine_core::{newer_wins, SubmitOptions, SyncEngine, SyncItem};

const ENGINES: usize = 3;
const KEYS: u8 = 4;

#[derive(Debug, Clone)]
enum Op {
    Submit { e: usize, key: u8, durable: bool, version: Option<u64> },
    Delete { e: usize, key: u8 },
    Get { e: usize, key: u8 },
    Flush { e: usize },
    Cut { e: usize },
    Heal { e: usize },
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    let e = 0..ENGINES;
    prop_oneof![
        8 => (e.clone(), 0..KEYS, any::<bool>(), prop::option::weighted(0.2, 1u64..6))
            .prop_map(|(e, key, durable, version)| Op::Submit { e, key, durable, version }),
        3 => (e.clone(), 0..KEYS).prop_map(|(e, key)| Op::Delete { e, key }),
        8 => (e.clone(), 0..KEYS).prop_map(|(e, key)| Op::Get { e, key }),
        2 => e.clone().prop_map(|e| Op::Flush { e }),
        1 => e.clone().prop_map(|e| Op::Cut { e }),
        1 => e.clone().prop_map(|e| Op::Heal { e }),
        2 => Just(Op::Settle),
    ]
}

fn key(k: u8) -> String {
    format!("t.k{k}")
}

/// What a reader sees: the stamp and content of a live item (`None` for absent or deleted).
fn seen(item: Option<SyncItem>) -> Option<(sync_engine_core::Stamp, Vec<u8>)> {
    item.filter(|i| !i.is_tombstone()).map(|i| (i.stamp(), i.content().to_vec()))
}

struct World {
    rig: Rig,
    engines: Vec<SyncEngine>,
    bus: MemoryBus,
    /// The newest acknowledged item (write or tombstone) per key.
    newest: HashMap<u8, SyncItem>,
}

impl World {
    fn acked(&mut self, k: u8, item: SyncItem) {
        let cur = self.newest.get(&k).map(SyncItem::stamp);
        if newer_wins(&item.stamp(), cur.as_ref()) {
            self.newest.insert(k, item);
        }
    }

    async fn settle(&self) {
        for e in &self.engines {
            e.flush().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    /// Every instance reads the newest acknowledged value of every key.
    async fn check_reads(&self, when: &str) -> Result<(), TestCaseError> {
        for (k, newest) in &self.newest {
            let want = seen(Some(newest.clone()));
            for (i, e) in self.engines.iter().enumerate() {
                let got = seen(e.get(&key(*k)).await.unwrap());
                prop_assert_eq!(&got, &want, "{}: engine {} key {}", when, i, key(*k));
            }
        }
        Ok(())
    }
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rig = Rig::new();
    let bus = MemoryBus::new();
    let mut engines = Vec::new();
    for _ in 0..ENGINES {
        let e = rig.start_instance(Rig::config(), &bus).await;
        engines.push(e);
    }
    let mut w = World { rig, engines, bus, newest: HashMap::new() };
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Submit { e, key: k, durable, version } => {
                let content = format!("op{n}-e{e}");
                let opts = SubmitOptions { durable, version, ..SubmitOptions::default() };
                let v = w.engines[e].submit_with(&key(k), content.clone(), opts).await.unwrap();
                w.acked(k, SyncItem::new(id(&key(k)), v, content));
            }
            Op::Delete { e, key: k } => {
                let v = w.engines[e].delete(&key(k)).await.unwrap();
                w.acked(k, SyncItem::tombstone(id(&key(k)), v));
            }
            Op::Get { e, key: k } => {
                // Fills L1 with whatever is current; checked only at settle points.
                let _ = w.engines[e].get(&key(k)).await.unwrap();
            }
            Op::Flush { e } => w.engines[e].flush().await.unwrap(),
            Op::Cut { e } => w.bus.disconnect(e),
            Op::Heal { e } => w.bus.reconnect(e),
            Op::Settle => {
                w.settle().await;
                w.check_reads("settle").await?;
            }
        }
        tokio::task::yield_now().await;
    }
    for e in 0..ENGINES {
        w.bus.reconnect(e);
    }
    w.settle().await;
    w.check_reads("end").await?;
    for (k, newest) in &w.newest {
        let stored = w.rig.l3.inner().raw(&id(&key(*k)));
        prop_assert_eq!(stored.map(|i| i.stamp()), Some(newest.stamp()), "L3 key {}", key(*k));
        let cached = w.rig.l2.inner().get(&id(&key(*k))).await.unwrap();
        prop_assert_eq!(seen(cached), seen(Some(newest.clone())), "L2 key {}", key(*k));
    }
    let l2 = w.rig.l2.inner().root_hash().await.unwrap();
    let l3 = w.rig.l3.inner().root_hash().await.unwrap();
    prop_assert_eq!(l2, l3, "L2 and L3 Merkle roots");
    for e in &w.engines {
        e.shutdown().await.unwrap();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn three_writers_converge_on_every_tier(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(ops))?;
    }
}
