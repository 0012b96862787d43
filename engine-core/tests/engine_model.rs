//! Model-based property test: random sequences of submit, delete, get, flush, crash-and-restart
//! and backend outages, checked against a reference model of acknowledged writes.
//!
//! The model: every get agrees with what was acknowledged. After a crash (the engine dropped
//! without shutdown, the fakes' durable state kept), a write-behind write that was not yet
//! durable may read as its new value or as any value it superseded since the last durable one;
//! a durable write only as itself. After recovery the L2 and L3 Merkle roots are equal.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Rig;
use proptest::prelude::*;
use sync_engine_core::store::MerkleExt;
use sync_engine_core::{SubmitOptions, SyncEngine};

#[derive(Debug, Clone)]
enum Op {
    Submit { key: u8, durable: bool },
    Delete { key: u8, durable: bool },
    Get { key: u8 },
    Flush,
    Crash,
    L3(bool),
    L2(bool),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, any::<bool>()).prop_map(|(key, durable)| Op::Submit { key, durable }),
        2 => (0u8..6, any::<bool>()).prop_map(|(key, durable)| Op::Delete { key, durable }),
        6 => (0u8..6).prop_map(|key| Op::Get { key }),
        1 => Just(Op::Flush),
        1 => Just(Op::Crash),
        1 => any::<bool>().prop_map(Op::L3),
        1 => any::<bool>().prop_map(Op::L2),
        1 => Just(Op::Tick),
    ]
}

/// A value as read: the version, or None for absent/deleted.
type Val = Option<u64>;

#[derive(Debug)]
struct KeyModel {
    /// Values any read may return now.
    acceptable: Vec<Val>,
    /// Values that may be durable (one after a durable ack; several after a crash).
    base: Vec<Val>,
    /// Write-behind values acknowledged by the running engine since the last durable point.
    pending: Vec<Val>,
}

impl Default for KeyModel {
    /// A key never written: absent, durably.
    fn default() -> KeyModel {
        KeyModel { acceptable: vec![None], base: vec![None], pending: Vec::new() }
    }
}

impl KeyModel {
    fn acked(&mut self, v: Val, durable: bool) {
        if durable {
            self.base = vec![v];
            self.pending.clear();
        } else {
            self.pending.push(v);
        }
        self.acceptable = vec![v];
    }
    fn flushed(&mut self) {
        if let Some(last) = self.pending.last().copied() {
            self.base = vec![last];
            self.pending.clear();
        }
    }
    fn crashed(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.base.extend(pending);
        self.acceptable = self.base.clone();
    }
}

async fn start(rig: &Rig) -> SyncEngine {
    let mut cfg = Rig::config();
    cfg.allow_degraded_start = true;
    rig.start_with(cfg).await.expect("start (degraded allowed)")
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rig = Rig::new();
    let mut engine = start(&rig).await;
    let mut model: HashMap<u8, KeyModel> = HashMap::new();
    for op in ops {
        match op {
            Op::Submit { key, durable } => {
                let opts = SubmitOptions { durable, ..Default::default() };
                if let Ok(v) =
                    engine.submit_with(&format!("m.k{key}"), format!("v{key}"), opts).await
                {
                    model.entry(key).or_default().acked(Some(v), durable);
                }
            }
            Op::Delete { key, durable } => {
                let opts = SubmitOptions { durable, ..Default::default() };
                if engine.delete_with(&format!("m.k{key}"), opts).await.is_ok() {
                    model.entry(key).or_default().acked(None, durable);
                }
            }
            Op::Get { key } => {
                if let Ok(got) = engine.get(&format!("m.k{key}")).await {
                    let v = got.map(|i| i.version());
                    let m = model.entry(key).or_default();
                    prop_assert!(
                        m.acceptable.contains(&v),
                        "key {key}: read {v:?}, acceptable {:?}",
                        m.acceptable
                    );
                }
            }
            Op::Flush => {
                if engine.flush().await.is_ok() {
                    model.values_mut().for_each(KeyModel::flushed);
                }
            }
            Op::Crash => {
                drop(engine);
                tokio::task::yield_now().await;
                model.values_mut().for_each(KeyModel::crashed);
                engine = start(&rig).await;
            }
            Op::L3(up) => rig.l3.plan().set_down(!up),
            Op::L2(up) => rig.l2.plan().set_down(!up),
            Op::Tick => {
                let _ = engine.tick().await;
            }
        }
    }
    // Recovery: everything up, flush, let maintenance drain, resync and repair.
    rig.l3.plan().set_down(false);
    rig.l2.plan().set_down(false);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let _ = engine.flush().await;
        let _ = engine.tick().await;
    }
    model.values_mut().for_each(KeyModel::flushed);
    for (key, m) in &model {
        let got = engine
            .get(&format!("m.k{key}"))
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let v = got.map(|i| i.version());
        prop_assert!(
            m.acceptable.contains(&v),
            "after recovery key {key}: read {v:?}, acceptable {:?}",
            m.acceptable
        );
    }
    let (l2, l3) = (rig.l2.inner().root_hash().await, rig.l3.inner().root_hash().await);
    prop_assert_eq!(l2.ok(), l3.ok(), "L2 and L3 roots differ after recovery");
    prop_assert_eq!(engine.health().wal_depth, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(run_case(ops))?;
    }
}
