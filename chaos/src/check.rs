//! The harness's own engine restart: start an engine over the backends a child used (exactly
//! as an application would, with `sync_engine::connect`), read every id of the ledger through
//! the engine and directly from L3, compare the L2 and L3 Merkle roots, shut down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sync_engine::store::MerkleExt;
use sync_engine::{Config, ObjectId, RepairReport, SyncItem};

/// What a restarted engine saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// Start time (`connect`), seconds.
    pub startup_s: f64,
    /// Engine state after start.
    pub state: String,
    /// Id → what `SyncEngine::get_many` returned.
    pub engine: HashMap<String, Option<SyncItem>>,
    /// Id → what L3's `get_many` returned.
    pub l3: HashMap<String, Option<SyncItem>>,
    /// Id → what L2's `get_many` returned (empty without L2).
    pub l2: HashMap<String, Option<SyncItem>>,
    /// L2 root == L3 root right after start (None without L2).
    pub roots_agree: Option<bool>,
    /// The repair report the start left (L2 compared with L3).
    pub startup_repair: Option<RepairReport>,
    /// Entries still in the WAL after start (should be 0: start drains it).
    pub wal_depth: u64,
    /// Ids where the engine's answer differs from L3's.
    pub engine_vs_l3: Vec<String>,
}

fn valid_ids(ids: &[String]) -> Result<Vec<ObjectId>, String> {
    ids.iter().map(|s| ObjectId::new(s).map_err(|e| format!("ledger id: {e}"))).collect()
}

/// True when two reads returned the same thing: both absent, or the same stamp and content.
pub fn same(a: &Option<SyncItem>, b: &Option<SyncItem>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.stamp() == b.stamp() && a.content() == b.content(),
        _ => false,
    }
}

/// Start an engine with `config`, read `ids` through it and through its backends, and shut it
/// down. The start itself is timed: it opens the WAL, drains it, compares and repairs L2.
pub async fn restart_and_read(config: Config, ids: &[String]) -> Result<Observed, String> {
    let oids = valid_ids(ids)?;
    let t0 = Instant::now();
    let node = sync_engine::connect(config).await.map_err(|e| format!("restart failed: {e}"))?;
    let mut obs = Observed {
        startup_s: t0.elapsed().as_secs_f64(),
        state: format!("{:?}", node.engine.state()),
        ..Observed::default()
    };
    let health = node.engine.health();
    obs.startup_repair = health.last_repair.clone();
    obs.wal_depth = health.wal_depth;
    let b = &node.backends;
    if let Some(l2) = &b.l2 {
        let (r2, r3) = (l2.root_hash().await, b.l3.root_hash().await);
        obs.roots_agree = Some(
            r2.map_err(|e| format!("L2 root: {e}"))? == r3.map_err(|e| format!("L3 root: {e}"))?,
        );
    }
    for chunk in oids.chunks(500) {
        let via_engine =
            node.engine.get_many(chunk).await.map_err(|e| format!("engine read: {e}"))?;
        let via_l3 = b.l3.get_many(chunk).await.map_err(|e| format!("L3 read: {e}"))?;
        for ((id, e), l) in chunk.iter().zip(via_engine).zip(via_l3) {
            if !same(&e, &l) {
                obs.engine_vs_l3.push(id.to_string());
            }
            obs.engine.insert(id.to_string(), e);
            obs.l3.insert(id.to_string(), l);
        }
        if let Some(l2) = &b.l2 {
            let via_l2 = l2.get_many(chunk).await.map_err(|e| format!("L2 read: {e}"))?;
            for (id, item) in chunk.iter().zip(via_l2) {
                obs.l2.insert(id.to_string(), item);
            }
        }
    }
    node.engine.shutdown().await.map_err(|e| format!("shutdown after the check: {e}"))?;
    drop(node);
    // Let the WAL's threads release the file lock before the next process opens it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(obs)
}
