//! Redis (L2) + PostgreSQL (L3), the usual production shape.
//!
//! ```sh
//! SYNC_ENGINE_REDIS_URL=redis://127.0.0.1:6379/ \
//! SYNC_ENGINE_SQL_URL=postgres://postgres@127.0.0.1:5432/test \
//! cargo run -p example-redis-postgres
//! ```
//!
//! Writes items, reads one back through the tiers, then proves with the Merkle trees that
//! Redis holds exactly what PostgreSQL holds under the example's prefix, breaks one Redis
//! entry behind the engine's back and lets `repair` fix exactly that one.

use sync_engine::core::store::CacheExt;
use sync_engine::{Config, SecretUrl, SyncItem};

/// What the run observed.
#[derive(Debug)]
struct Outcome {
    in_sync_after_flush: bool,
    differing_after_tamper: usize,
    repaired: usize,
    in_sync_after_repair: bool,
}

/// Redis and PostgreSQL URLs from the environment (or the local defaults).
fn config(redis: &str, postgres: &str, redis_prefix: &str) -> sync_engine::Result<Config> {
    let mut config = Config::load(None)?;
    config.redis_url = Some(SecretUrl::new(redis));
    config.sql_url = SecretUrl::new(postgres);
    config.redis_prefix = redis_prefix.to_owned();
    // The WAL is local to each process.
    config.wal_path =
        std::env::temp_dir().join(format!("{}wal.db", redis_prefix.replace(':', "-")));
    Ok(config)
}

async fn run(config: Config, prefix: &str) -> sync_engine::Result<Outcome> {
    let node = sync_engine::connect(config).await?;
    let engine = node.engine.clone();
    for i in 0..200 {
        engine.submit(&format!("{prefix}.orders.{i}"), format!("order {i}")).await?;
    }
    engine.flush().await?; // in Redis and PostgreSQL, Merkle trees included
    let in_sync_after_flush = engine.verify(prefix).await?.in_sync;

    // Someone overwrites one Redis entry with an old value behind the engine's back.
    let l2 = node.backends.l2.clone().ok_or_else(|| {
        sync_engine::Error::new(sync_engine::ErrorKind::Unavailable, "Redis did not connect")
    })?;
    let id = sync_engine::ObjectId::new(&format!("{prefix}.orders.5"))?;
    let stale = SyncItem::new(id.clone(), u64::MAX - 1, "tampered");
    l2.put(stale, None).await?;
    let found = engine.verify(prefix).await?;
    let fixed = engine.repair(prefix).await?;
    let after = engine.verify(prefix).await?;
    println!(
        "in sync after flush: {in_sync_after_flush}; tampered ids found: {} {:?}; repaired: {}; \
         in sync after repair: {}",
        found.differing, found.sample, fixed.repaired, after.in_sync
    );
    engine.shutdown().await?;
    Ok(Outcome {
        in_sync_after_flush,
        differing_after_tamper: found.differing,
        repaired: fixed.repaired,
        in_sync_after_repair: after.in_sync,
    })
}

#[tokio::main]
async fn main() {
    let redis = std::env::var("SYNC_ENGINE_REDIS_URL").unwrap_or("redis://127.0.0.1:6379/".into());
    let sql = std::env::var("SYNC_ENGINE_SQL_URL")
        .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    let result = match config(&redis, &sql, "example:") {
        Ok(c) => run(c, "example").await,
        Err(e) => Err(e),
    };
    match result {
        Ok(out)
            if out.in_sync_after_flush
                && out.differing_after_tamper == 1
                && out.repaired == 1
                && out.in_sync_after_repair => {}
        Ok(out) => {
            eprintln!("unexpected outcome: {out:?}");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(var: &str) -> Option<String> {
        let v = std::env::var(var).ok();
        if v.is_none() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and {var} is unset");
            eprintln!("SKIPPED: {var} is unset (run under `cargo xtask test`)");
        }
        v
    }

    #[tokio::test]
    async fn tampered_redis_entry_is_found_and_repaired_exactly() {
        let (Some(redis), Some(pg)) =
            (url("SYNC_ENGINE_TEST_REDIS_URL"), url("SYNC_ENGINE_TEST_POSTGRES_URL"))
        else {
            return;
        };
        let run_id = format!("exrp{}", std::process::id());
        let out = run(config(&redis, &pg, &format!("{run_id}:")).unwrap(), &run_id).await.unwrap();
        assert!(out.in_sync_after_flush);
        assert_eq!(out.differing_after_tamper, 1);
        assert_eq!(out.repaired, 1);
        assert!(out.in_sync_after_repair);
    }
}
