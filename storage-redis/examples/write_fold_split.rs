//! Diagnostic (not a benchmark suite figure): how a `put_batch` run splits between the write
//! and the fold of the Merkle shadow, against raw pipelined `SET`s of the same payloads.
//!
//! ```text
//! URL=redis://127.0.0.1:6391/ N=50000 [FLAT=1] [SCRIPT=1] \
//!     cargo run --release -p sync-engine-redis --example write_fold_split
//! ```
//!
//! Background folds are off (`fold_threshold: 0`): every 1000-item batch is written, timed,
//! then one `fold()` is timed. `SCRIPT=1` writes through `put.lua` only. Keys live under
//! `se-split-<pid>-<rep>:` and are deleted afterwards. Use a private server: the figures
//! include whatever else the server does.

use std::time::{Duration, Instant};

use sync_engine_core::store::{CacheEntry, CacheStore};
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_redis::{RedisOptions, RedisStore};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let deep = std::env::var("FLAT").is_err();
    let optimistic = std::env::var("SCRIPT").is_err();
    let payloads: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 512]).collect();
    let ids = (0..n)
        .map(|i| {
            let s = if deep {
                format!("t{}.u{}.i{i}", i % 100, (i / 100) % 1000)
            } else {
                format!("items.{i}")
            };
            ObjectId::new(&s)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batches: Vec<Vec<CacheEntry>> = ids
        .chunks(1000)
        .map(|c| {
            c.iter()
                .enumerate()
                .map(|(i, id)| {
                    CacheEntry::new(SyncItem::new(id.clone(), 1, payloads[i % 64].clone()))
                })
                .collect()
        })
        .collect();
    let mut raw = redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    for rep in 0..3 {
        let prefix = format!("se-split-{}-{rep}:", std::process::id());
        let t = Instant::now();
        for (b, chunk) in batches.iter().enumerate() {
            let mut pipe = redis::pipe();
            for (i, e) in chunk.iter().enumerate() {
                let key = format!("{prefix}raw:{}", b * 1000 + i);
                pipe.cmd("SET").arg(key).arg(e.item.content().as_ref()).ignore();
            }
            let () = pipe.query_async(&mut raw).await?;
        }
        let raw_t = t.elapsed();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|i| format!("{prefix}raw:{i}")).collect();
            let _: u64 = redis::cmd("UNLINK").arg(keys).query_async(&mut raw).await?;
        }
        let opts = RedisOptions {
            fold_threshold: 0,
            optimistic_writes: optimistic,
            ..RedisOptions::default().with_prefix(&prefix)
        };
        let store = RedisStore::connect(&SecretUrl::new(url.as_str()), opts).await?;
        let t = Instant::now();
        for b in &batches {
            store.put_batch(b).await?;
        }
        let write = t.elapsed();
        store.fold().await?;
        let fold = t.elapsed() - write;
        store.clear_namespace().await?;
        println!(
            "raw {:.2} us/item | write {:.2} fold {:.2} total {:.2} | ratio {:.3} (write only {:.3})",
            us(raw_t),
            us(write),
            us(fold),
            us(write + fold),
            us(raw_t) / us(write + fold),
            us(raw_t) / us(write)
        );
    }
    Ok(())
}
