//! Diagnostic: where one `put_batch` spends its time, by phase, on a preloaded store.
//!
//! `cargo run --release -p sync-engine-sql --all-features --example put_phases -- <url> <deep|flat>
//! [preload] [batches]` preloads `preload` items (default 200,000) of 512 bytes, then writes
//! `batches` (default 20) batches of 1000 new items with the `sync_engine_sql::timing` target
//! enabled, so every batch logs its phases (lock, decide, items, log, commit) and every fold its
//! own, then folds what is left and checks the tree. `FOLD_CHANGES=n` overrides
//! `SqlOptions::fold_changes`. The store's
//! tables are dropped at the end. Not a benchmark: `cargo xtask bench sql` gives the figures.

use std::time::Instant;

use sync_engine_core::store::ArchiveStore;
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::{SqlOptions, SqlStore};

fn batch(deep: bool, b: usize) -> Vec<SyncItem> {
    (0..1000)
        .map(|j| {
            let n = b * 1000 + j;
            let h = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let id = if deep {
                format!("t{}.u{}.i{n}", h % 100, (h >> 20) % 1000)
            } else {
                format!("items.{n}")
            };
            let payload: Vec<u8> = (0..512).map(|k| (h >> (k % 56)) as u8).collect();
            SyncItem::new(ObjectId::new(&id).expect("valid id"), 1, payload)
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).ok_or("usage: put_phases <url> <deep|flat> [preload] [batches]")?;
    let deep = args.get(2).map(String::as_str) != Some("flat");
    let preload: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let batches: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let fold_changes = std::env::var("FOLD_CHANGES").ok().and_then(|v| v.parse().ok());
    let options = SqlOptions {
        table_prefix: "phases_".into(),
        fold_changes: fold_changes.unwrap_or(SqlOptions::default().fold_changes),
        ..SqlOptions::default()
    };
    let store = SqlStore::connect(&SecretUrl::new(url.as_str()), options).await?;
    let started = Instant::now();
    for b in 0..preload / 1000 {
        store.put_batch(&batch(deep, b)).await?;
    }
    eprintln!("preloaded {preload} in {:?}", started.elapsed());
    tracing_subscriber::fmt()
        .with_env_filter("sync_engine_sql::timing=debug")
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();
    for b in 0..batches {
        store.put_batch(&batch(deep, preload / 1000 + b)).await?;
    }
    let written = started.elapsed();
    store.fold().await?;
    let spent = started.elapsed();
    eprintln!(
        "{batches} batches written in {written:?}, folded by {spent:?}: {:.0} items/s",
        (batches * 1000) as f64 / spent.as_secs_f64()
    );
    let check = store.verify_merkle().await?;
    eprintln!("tree check: {} problems", check.problems.len());
    store.drop_tables().await?;
    Ok(())
}
