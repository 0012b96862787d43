//! `sync-engine demo`: the engine's main job end to end on whatever backends are configured
//! (embedded SQLite and the WAL under ./sync-engine-data by default; Redis with --redis).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use sync_engine::store::MerkleExt;
use sync_engine::{Config, Error, ErrorKind, ObjectId};

use crate::output::{print_pairs, row};

fn bar(n: u64, json: bool, msg: &'static str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n);
    let style =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb.set_message(msg);
    pb
}

fn payload(i: u64, size: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i);
    (0..size).map(|_| rng.random::<u8>()).collect()
}

fn ids(n: u64) -> impl Iterator<Item = (u64, String)> {
    (0..n).map(|i| (i, format!("demo.t{}.u{}.i{i}", i % 10, (i / 10) % 100)))
}

/// Ingest, read back, verify, report.
pub async fn run(cfg: Config, items: u64, size: usize, json: bool) -> sync_engine::Result<()> {
    if items == 0 {
        return Err(Error::invalid("demo needs --items of at least 1"));
    }
    let sql = cfg.sql_url.to_string();
    let redis = cfg.redis_url.as_ref().map(|u| u.to_string());
    let node = sync_engine::connect(cfg).await?;
    let engine = &node.engine;

    // 1. Ingest (write-behind), then flush: durable in L3 (and L2 when configured).
    let pb = bar(items, json, "ingest");
    let started = Instant::now();
    for (i, id) in ids(items) {
        engine.submit(&id, payload(i, size)).await?;
        pb.inc(1);
    }
    engine.flush().await?;
    let ingest = started.elapsed();
    pb.finish_and_clear();

    // 2. Read back through the engine (L1 hits) and check every byte.
    let pb = bar(items, json, "read L1");
    let started = Instant::now();
    for (i, id) in ids(items) {
        let got = engine.get(&id).await?;
        if got.as_ref().map(|g| g.content().as_ref()) != Some(payload(i, size).as_slice()) {
            return Err(Error::new(
                ErrorKind::Contract,
                format!("read back of `{id}` does not match what was written"),
            ));
        }
        pb.inc(1);
    }
    let read_l1 = started.elapsed();
    pb.finish_and_clear();

    // 3. Read back from each backend tier directly, in batches.
    let all: Vec<ObjectId> = ids(items).filter_map(|(_, id)| ObjectId::new(&id).ok()).collect();
    let started = Instant::now();
    let mut in_l3 = 0u64;
    for chunk in all.chunks(1000) {
        in_l3 +=
            node.backends.l3.get_many(chunk).await?.iter().filter(|x| x.is_some()).count() as u64;
    }
    let read_l3 = started.elapsed();
    let (mut in_l2, mut read_l2) = (None, None);
    if let Some(l2) = &node.backends.l2 {
        let started = Instant::now();
        let mut n = 0u64;
        for chunk in all.chunks(1000) {
            n += l2.get_many(chunk).await?.iter().filter(|x| x.is_some()).count() as u64;
        }
        in_l2 = Some(n);
        read_l2 = Some(started.elapsed());
    }

    // 4. Merkle roots, and a verify of L2 against L3 when there is an L2.
    let l3_root = node.backends.l3.root_hash().await?;
    let l3_demo = node.backends.l3.subtree_hash("demo").await?;
    let l2_root = match &node.backends.l2 {
        Some(l2) => Some(l2.root_hash().await?),
        None => None,
    };
    let verify = match &node.backends.l2 {
        Some(_) => Some(engine.verify("demo").await?),
        None => None,
    };
    engine.shutdown().await?;

    let per_s = |n: u64, d: std::time::Duration| (n as f64 / d.as_secs_f64().max(1e-9)).round();
    let mut rows = vec![
        row("l3", sql),
        row("l2", redis.unwrap_or_else(|| "none (give --redis URL)".into())),
        row("items", items),
        row("payload_bytes", size as u64),
        row("ingest_s", ingest.as_secs_f64()),
        row("ingest_items_per_s", per_s(items, ingest)),
        row("read_l1_items_per_s", per_s(items, read_l1)),
        row("l3_count", in_l3),
        row("read_l3_items_per_s", per_s(items, read_l3)),
        row("l3_root", l3_root.to_hex()),
        row("l3_demo_subtree", l3_demo.to_hex()),
        row("verified", "every item read back byte for byte"),
    ];
    if let (Some(n), Some(d), Some(root)) = (in_l2, read_l2, l2_root) {
        rows.push(row("l2_count", n));
        rows.push(row("read_l2_items_per_s", per_s(items, d)));
        rows.push(row("l2_root", root.to_hex()));
    }
    if let Some(v) = &verify {
        rows.push(row("l2_matches_l3", v.in_sync || v.differing == 0));
    }
    print_pairs(json, "sync-engine demo", &rows);
    if in_l3 != items {
        return Err(Error::new(
            ErrorKind::Contract,
            format!("L3 holds {in_l3} of {items} demo items"),
        ));
    }
    Ok(())
}
