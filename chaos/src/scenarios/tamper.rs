//! Scenario 4: change the values or versions of 1% of the Redis keys behind the engine's back;
//! `verify` must find exactly those ids, `repair` must fix exactly those and touch nothing else.
//!
//! Two kinds of tampering, reported separately:
//! - `tamper.redis`: another client rewrites the items through the Redis store's own write
//!   path (a second `RedisStore` on the same prefix: an older or rogue writer), so L2's Merkle
//!   shadow describes what L2 holds;
//! - `tamper.redis_raw`: the stored bytes are changed with plain `SET` (bit rot, a manual edit):
//!   the shadow still describes the old values, so the Merkle-only `verify` cannot see them;
//!   `verify_deep` (which audits every L2 entry against its own integrity data and the shadow)
//!   must find exactly those, `repair_deep` fix exactly those and rewrite nothing else.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sync_engine::store::{ArchiveStore, CacheEntry, CacheStore, MerkleStore};
use sync_engine::{ObjectId, SecretUrl, SyncEngine, SyncItem};
use sync_engine_core::engine::L2Store;
use sync_engine_core::merkle::{diff, Children, ChildrenSource, NodeKey, NodeValue};
use sync_engine_redis::{RedisOptions, RedisStore};

use crate::check::same;
use crate::harness::{r3, Env, Harness};
use crate::servers::{PrivateRedis, PrivateSql};
use crate::summary::ScenarioResult;
use crate::workload::{content, id_for, OpKey};

/// A Merkle store seen as the diff's children source.
struct Src<T: ?Sized>(Arc<T>);

impl<T: MerkleStore + ?Sized + 'static> ChildrenSource for Src<T> {
    type Error = sync_engine::Error;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, Self::Error>> + Send {
        let (s, k) = (self.0.clone(), key.clone());
        async move { s.node(&k).await }
    }

    fn children(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Children, Self::Error>> + Send {
        let (s, k) = (self.0.clone(), key.clone());
        async move { s.children(&k).await }
    }
}

/// The Redis key of an item (storage-redis README: `<prefix>{<prefix>}d:<id>`).
fn data_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{{{prefix}}}d:{id}")
}

fn raw_values(redis_url: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
    let client = redis::Client::open(redis_url).map_err(|e| format!("redis url: {e}"))?;
    let mut con = client.get_connection().map_err(|e| format!("redis connect: {e}"))?;
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let v: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(chunk).query(&mut con).map_err(|e| format!("MGET: {e}"))?;
        out.extend(v);
    }
    Ok(out)
}

fn oid(s: &str) -> Result<ObjectId, String> {
    ObjectId::new(s).map_err(|e| e.to_string())
}

/// Run both kinds of tampering; returns `tamper.redis` and `tamper.redis_raw`.
pub fn run(
    h: &Harness,
    redis: &PrivateRedis,
    sql: &PrivateSql,
) -> Result<Vec<ScenarioResult>, String> {
    let dir = h.dir("tamper")?;
    let db = h.unique("tamper");
    let sql_url = sql.create_database(&db)?;
    let prefix = format!("{db}:");
    let redis_url = redis.url(0);
    let env = Env::new(&sql_url, Some((&redis_url, &prefix)), &dir.join("wal.db"));
    h.rt.block_on(run_async(h, env, &redis_url, &prefix))
}

async fn run_async(
    h: &Harness,
    env: Env,
    redis_url: &str,
    prefix: &str,
) -> Result<Vec<ScenarioResult>, String> {
    let started = Instant::now();
    let n: u64 = h.pick(2_000, 20_000);
    let seed = h.seed_for("tamper");
    let config = env.config()?;
    let node = sync_engine::connect(config.clone()).await.map_err(|e| format!("connect: {e}"))?;
    let engine = node.engine.clone();
    let (l2, l3) = match &node.backends.l2 {
        Some(l2) => (l2.clone(), node.backends.l3.clone()),
        None => return Err("tamper needs L2".into()),
    };
    let ids: Vec<String> = (0..n).map(|i| id_for("tp", i)).collect();
    for (i, id) in ids.iter().enumerate() {
        let key = OpKey { run: 0, worker: 0, n: i as u64 };
        engine.submit(id, content(id, key)).await.map_err(|e| format!("load: {e}"))?;
    }
    engine.flush().await.map_err(|e| format!("flush: {e}"))?;
    let in_sync_before = engine.verify("").await.map_err(|e| format!("verify: {e}"))?.in_sync;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order = ids.clone();
    order.shuffle(&mut rng);
    let k = (n / 100) as usize;
    let tampered: Vec<String> = order[..k].to_vec();
    let raw_set: Vec<String> = order[k..2 * k].to_vec();

    // 1. Through the store's write path (a second client on the same prefix).
    let rogue = RedisStore::connect(&SecretUrl::new(redis_url), RedisOptions::from_config(&config))
        .await
        .map_err(|e| format!("second redis client: {e}"))?;
    let t_oids: Vec<ObjectId> = tampered.iter().map(|s| oid(s)).collect::<Result<_, _>>()?;
    let originals = l3.get_many(&t_oids).await.map_err(|e| format!("L3 read: {e}"))?;
    let mut entries = Vec::new();
    let (mut values, mut versions) = (0u64, 0u64);
    for (j, (id, item)) in t_oids.iter().zip(&originals).enumerate() {
        let Some(item) = item else { return Err(format!("{id} missing from L3 after the load")) };
        let changed = match j % 4 {
            0 | 2 => {
                values += 1;
                let other = content(id.as_str(), OpKey { run: 99, worker: 0, n: j as u64 });
                SyncItem::new(id.clone(), item.version(), other)
            }
            1 => {
                versions += 1;
                SyncItem::new(id.clone(), item.version() + 1, item.content().clone())
            }
            _ => {
                versions += 1;
                SyncItem::new(id.clone(), item.version().saturating_sub(1), item.content().clone())
            }
        };
        entries.push(CacheEntry::new(changed));
    }
    rogue.remove_many(&t_oids).await.map_err(|e| format!("tamper remove: {e}"))?;
    rogue.put_batch(&entries).await.map_err(|e| format!("tamper put: {e}"))?;

    let verify = engine.verify("").await.map_err(|e| format!("verify: {e}"))?;
    let full =
        diff(&Src(l2.clone()), &Src(l3.clone()), "").await.map_err(|e| format!("diff: {e}"))?;
    let found: BTreeSet<String> = full.differences.iter().map(|d| d.id.clone()).collect();
    let expected: BTreeSet<String> = tampered.iter().cloned().collect();
    let missed = expected.difference(&found).count() as u64;
    let extra = found.difference(&expected).count() as u64;
    let sub = "c.tp.t3";
    let in_sub = expected.iter().filter(|id| id.starts_with(&format!("{sub}."))).count();
    let verify_sub = engine.verify(sub).await.map_err(|e| format!("verify {sub}: {e}"))?;

    let untouched: Vec<String> = ids.iter().filter(|id| !expected.contains(*id)).cloned().collect();
    let untouched_keys: Vec<String> = untouched.iter().map(|id| data_key(prefix, id)).collect();
    let before = raw_values(redis_url, &untouched_keys)?;
    let repair = engine.repair("").await.map_err(|e| format!("repair: {e}"))?;
    let after = raw_values(redis_url, &untouched_keys)?;
    let rewritten = before.iter().zip(&after).filter(|(a, b)| a != b).count() as u64;
    let in_sync_after = engine.verify("").await.map_err(|e| format!("verify: {e}"))?.in_sync;
    let fixed_l2 = l2.get_many(&t_oids).await.map_err(|e| format!("L2 read: {e}"))?;
    let unfixed = fixed_l2.iter().zip(&originals).filter(|(a, b)| !same(a, b)).count() as u64;

    let mut api = ScenarioResult::new("tamper.redis");
    api.trials = 1;
    api.acknowledged = n;
    api.lost = missed + extra + unfixed + rewritten;
    api.set("seed", seed)
        .set("items", n)
        .set("tampered", k as u64)
        .set("tampered_values", values)
        .set("tampered_versions", versions)
        .set("verify_differing", verify.differing as u64)
        .set("found", found.intersection(&expected).count() as u64)
        .set("found_not_tampered", extra)
        .set("missed", missed)
        .set("prefix", sub)
        .set("prefix_tampered", in_sub as u64)
        .set("prefix_found", verify_sub.differing as u64)
        .set("fixed", (repair.repaired + repair.removed) as u64)
        .set("unfixed", unfixed)
        .set("untouched_rewritten", rewritten)
        .set("verify_s", r3(verify.duration.as_secs_f64()))
        .set("repair_s", r3(repair.duration.as_secs_f64()))
        .set("in_sync_before", in_sync_before)
        .set("in_sync_after", in_sync_after);
    let mut failures = Vec::new();
    if !in_sync_before {
        failures.push("L2 and L3 differed before any tampering".to_owned());
    }
    if verify.differing != k || verify_sub.differing != in_sub {
        failures.push(format!(
            "verify found {} (prefix {sub}: {}), {} were tampered ({in_sub})",
            verify.differing, verify_sub.differing, k
        ));
    }
    if repair.repaired + repair.removed != k || !in_sync_after {
        failures.push(format!(
            "repair fixed {} of {k}; in sync after: {in_sync_after}",
            repair.repaired + repair.removed
        ));
    }
    api.set("failures", failures.len() as u64);
    if !failures.is_empty() {
        api.set("failure_detail", failures);
    }
    api.seconds = r3(started.elapsed().as_secs_f64());

    // 2. Raw bytes, behind the store's back.
    let raw =
        raw_tamper(&engine, l2.as_ref(), l3.as_ref(), redis_url, prefix, &ids, &raw_set, seed)
            .await?;
    node.engine.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    // Every handle of the first engine must go before the WAL file can be opened again.
    drop((engine, node, l2, l3));
    // A fresh engine (empty L1) reads the raw-tampered ids: what does a user get?
    let again = sync_engine::connect(config).await.map_err(|e| format!("reconnect: {e}"))?;
    let served_wrong = served_wrong(&again.engine, again.backends.l3.as_ref(), &raw_set).await?;
    again.engine.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let mut raw_res = raw;
    raw_res.set("served_wrong_after_restart", served_wrong);
    if served_wrong > 0 {
        let failures = raw_res.get("failures").and_then(|v| v.as_u64()).unwrap_or(0);
        raw_res.set("failures", failures + 1);
    }
    raw_res.seconds = r3(started.elapsed().as_secs_f64() - api.seconds);
    Ok(vec![api, raw_res])
}

#[allow(clippy::too_many_arguments)]
async fn raw_tamper(
    engine: &SyncEngine,
    l2: &dyn L2Store,
    l3: &dyn ArchiveStore,
    redis_url: &str,
    prefix: &str,
    ids: &[String],
    set: &[String],
    seed: u64,
) -> Result<ScenarioResult, String> {
    let keys: Vec<String> = set.iter().map(|id| data_key(prefix, id)).collect();
    let values = raw_values(redis_url, &keys)?;
    let client = redis::Client::open(redis_url).map_err(|e| format!("redis url: {e}"))?;
    let mut con = client.get_connection().map_err(|e| format!("redis connect: {e}"))?;
    let (mut contents, mut versions) = (0u64, 0u64);
    for (j, (key, value)) in keys.iter().zip(values).enumerate() {
        let Some(mut v) = value else { return Err(format!("{key} missing from Redis")) };
        if j % 2 == 0 {
            // The last payload byte (the stored content hash is left as it was).
            if let Some(b) = v.last_mut() {
                *b ^= 0x01;
            }
            contents += 1;
        } else if v.len() >= 10 {
            // Version, big-endian at bytes 2..10 (storage-redis codec).
            let mut ver = [0u8; 8];
            ver.copy_from_slice(&v[2..10]);
            v[2..10].copy_from_slice(&u64::from_be_bytes(ver).wrapping_add(1).to_be_bytes());
            versions += 1;
        }
        let _: () =
            redis::cmd("SET").arg(key).arg(v).query(&mut con).map_err(|e| format!("SET: {e}"))?;
    }
    // Before any repair: L2 must refuse every changed value (reads then go to L3).
    let oids: Vec<ObjectId> = set.iter().map(|s| oid(s)).collect::<Result<_, _>>()?;
    let in_l3 = l3.get_many(&oids).await.map_err(|e| format!("L3 read: {e}"))?;
    let (mut refused, mut served_wrong) = (0u64, 0u64);
    for (id, truth) in oids.iter().zip(&in_l3) {
        match l2.get_many(std::slice::from_ref(id)).await {
            Err(e) if e.kind() == sync_engine::ErrorKind::Corrupt => refused += 1,
            Err(e) => return Err(format!("L2 read of {id}: {e}")),
            Ok(got) => served_wrong += u64::from(!same(&got[0], truth)),
        }
    }
    let shallow = engine.verify("").await.map_err(|e| format!("verify: {e}"))?;
    let verify = engine.verify_deep("").await.map_err(|e| format!("verify_deep: {e}"))?;
    // The exact ids, from the store's own audit (the report samples 100).
    let audit = l2.audit("", false).await.map_err(|e| format!("audit: {e}"))?;
    let found: BTreeSet<String> = audit.corrupt.iter().map(|id| id.to_string()).collect();
    let expected: BTreeSet<String> = set.iter().cloned().collect();
    let missed = expected.difference(&found).count() as u64;
    let extra = found.difference(&expected).count() as u64;

    let untouched_keys: Vec<String> =
        ids.iter().filter(|id| !expected.contains(*id)).map(|id| data_key(prefix, id)).collect();
    let before = raw_values(redis_url, &untouched_keys)?;
    let repair = engine.repair_deep("").await.map_err(|e| format!("repair_deep: {e}"))?;
    let after_untouched = raw_values(redis_url, &untouched_keys)?;
    let rewritten = before.iter().zip(&after_untouched).filter(|(a, b)| a != b).count() as u64;
    let after_deep = engine.verify_deep("").await.map_err(|e| format!("verify_deep: {e}"))?;

    let after = raw_values(redis_url, &keys)?;
    let mut still_wrong = 0u64;
    for (raw, truth) in after.iter().zip(&in_l3) {
        let ok = match (raw, truth) {
            (Some(raw), Some(t)) => {
                raw.ends_with(t.content()) && raw.get(2..10) == Some(&t.version().to_be_bytes()[..])
            }
            (None, None) => true,
            // Repair must put the L3 value back, not just drop the damaged one.
            (None, Some(_)) | (Some(_), None) => false,
        };
        if !ok {
            still_wrong += 1;
        }
    }
    // A value still refused as corrupt fails the whole batch read: count them all wrong.
    let l2_wrong = match l2.get_many(&oids).await {
        Ok(got) => got.iter().zip(&in_l3).filter(|(a, b)| !same(a, b)).count() as u64,
        Err(_) => oids.len() as u64,
    };
    let k = set.len();
    let fixed = repair.repaired + repair.removed;
    let mut r = ScenarioResult::new("tamper.redis_raw");
    r.trials = 1;
    r.set("seed", seed)
        .set("tampered", k as u64)
        .set("tampered_contents", contents)
        .set("tampered_versions", versions)
        .set("l2_refused_before_repair", refused)
        .set("l2_served_wrong_before_repair", served_wrong)
        .set("merkle_verify_found", shallow.differing as u64)
        .set("found", verify.differing as u64)
        .set("found_corrupt", verify.corrupt as u64)
        .set("audited", verify.audited)
        .set("found_not_tampered", extra)
        .set("missed", missed)
        .set("fixed", fixed as u64)
        .set("untouched_rewritten", rewritten)
        .set("still_wrong_after_repair", still_wrong)
        .set("l2_reads_wrong_after_repair", l2_wrong)
        .set("in_sync_after", after_deep.in_sync)
        .set("verify_deep_s", r3(verify.duration.as_secs_f64()))
        .set("repair_deep_s", r3(repair.duration.as_secs_f64()))
        .set("verify_merkle_s", r3(shallow.duration.as_secs_f64()));
    let mut failures = Vec::new();
    if served_wrong > 0 {
        failures.push(format!("L2 served {served_wrong} changed values before the repair"));
    }
    if verify.differing != k || missed + extra > 0 {
        failures.push(format!(
            "verify_deep found {} ({missed} missed, {extra} not tampered), {k} were tampered",
            verify.differing
        ));
    }
    if fixed != k || rewritten > 0 || still_wrong + l2_wrong > 0 || !after_deep.in_sync {
        failures.push(format!(
            "repair_deep fixed {fixed} of {k}, rewrote {rewritten} untouched keys, {still_wrong} \
             still wrong in Redis, {l2_wrong} read wrong from L2; in sync after: {}",
            after_deep.in_sync
        ));
    }
    r.set("failures", failures.len() as u64);
    if !failures.is_empty() {
        r.set("failure_detail", failures);
    }
    Ok(r)
}

async fn served_wrong(
    engine: &SyncEngine,
    l3: &dyn ArchiveStore,
    set: &[String],
) -> Result<u64, String> {
    let oids: Vec<ObjectId> = set.iter().map(|s| oid(s)).collect::<Result<_, _>>()?;
    let truth = l3.get_many(&oids).await.map_err(|e| format!("L3 read: {e}"))?;
    let mut wrong = 0;
    for (id, t) in oids.iter().zip(truth) {
        let got = engine.get_id(id).await.map_err(|e| format!("get: {e}"))?;
        if !same(&got, &t) {
            wrong += 1;
        }
    }
    Ok(wrong)
}
