//! Two engine instances (as two replicas of a service would run them) sharing one Redis and
//! one SQL database, each with its own L1 cache, cuckoo filter and local WAL.
//!
//! ```sh
//! SYNC_ENGINE_REDIS_URL=redis://127.0.0.1:6379/ \
//! SYNC_ENGINE_SQL_URL=mysql://root@127.0.0.1:3306/test \
//! cargo run -p example-two-instances
//! ```
//!
//! They stay coherent through the invalidation bus (`redis_invalidation`, on by default):
//! every flushed batch is announced on Redis pub/sub, so B's filter learns the ids A creates
//! and B's L1 drops what A replaces or deletes, about one flush interval later. `l1_ttl_ms`
//! adds a hard bound for the case where a message is lost without the connection dropping.

use std::time::Duration;

use sync_engine::{Config, SecretUrl};

/// How long this example waits for an instance to see another's write before calling it a
/// failure (the bus delivers in about one flush interval, 50 ms by default).
const PATIENCE: Duration = Duration::from_secs(2);

/// A hard bound on L1 staleness if a bus message were lost without a disconnect.
const L1_TTL: Duration = Duration::from_secs(5);

/// What the run observed.
#[derive(Debug)]
struct Outcome {
    b_reads_a_new_id: Option<Vec<u8>>,
    b_after_update: Option<Vec<u8>>,
    update_seen_after: Duration,
    a_reads_b_delete: bool,
    converged_value: Option<Vec<u8>>,
}

fn config(redis: &str, sql: &str, redis_prefix: &str, name: &str) -> sync_engine::Result<Config> {
    let mut config = Config::load(None)?;
    config.redis_url = Some(SecretUrl::new(redis));
    config.sql_url = SecretUrl::new(sql);
    config.redis_prefix = redis_prefix.to_owned(); // shared L2
    config.wal_path = std::env::temp_dir().join(format!(
        "{}{name}-{}-wal.db",
        redis_prefix.replace(':', "-"),
        std::process::id()
    ));
    config.redis_invalidation = true;
    config.l1_ttl_ms = L1_TTL.as_millis() as u64;
    Ok(config)
}

/// Poll `read` until `done` holds (or [`PATIENCE`] runs out); the last value and how long it took.
async fn eventually<F, Fut>(
    read: F,
    done: impl Fn(&Option<Vec<u8>>) -> bool,
) -> sync_engine::Result<(Option<Vec<u8>>, Duration)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = sync_engine::Result<Option<sync_engine::SyncItem>>>,
{
    let started = std::time::Instant::now();
    loop {
        let value = read().await?.map(|i| i.content().to_vec());
        if done(&value) || started.elapsed() > PATIENCE {
            return Ok((value, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run(redis: &str, sql: &str, prefix: &str) -> sync_engine::Result<Outcome> {
    let a = sync_engine::connect(config(redis, sql, &format!("{prefix}:"), "a")?).await?.engine;
    let b = sync_engine::connect(config(redis, sql, &format!("{prefix}:"), "b")?).await?.engine;
    let id = format!("{prefix}.profile.1");

    // A creates an id; B's filter hears of it on the bus (without the bus, B's trusted filter
    // would keep answering "absent" for an id only A has written).
    a.submit(&id, "v1 from A").await?;
    let b_reads_a_new_id = eventually(|| b.get(&id), |v| v.is_some()).await?.0;

    // A replaces it while B holds v1 in its L1: B drops it when A's batch is announced.
    a.submit(&id, "v2 from A").await?;
    let (b_after_update, update_seen_after) =
        eventually(|| b.get(&id), |v| v.as_deref() == Some(&b"v2 from A"[..])).await?;

    // Both write the same id: newer wins in every tier and on both instances.
    // Versions come from each instance's hybrid logical clock (milliseconds + counter), so
    // "later" is only defined beyond the clocks' resolution: wait a few ms between the two.
    a.submit(&id, "v3 from A").await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.submit(&id, "v4 from B").await?;
    let want = |v: &Option<Vec<u8>>| v.as_deref() == Some(&b"v4 from B"[..]);
    let converged_value = eventually(|| a.get(&id), want).await?.0;
    eventually(|| b.get(&id), want).await?;

    // B deletes; A stops serving it.
    let other = format!("{prefix}.profile.2");
    a.submit(&other, "to be deleted").await?;
    eventually(|| b.get(&other), |v| v.is_some()).await?;
    b.delete(&other).await?;
    let a_reads_b_delete = eventually(|| a.get(&other), |v| v.is_none()).await?.0.is_none();

    println!(
        "B read A's new id: {:?}; B saw A's update after {update_seen_after:?}: {:?}; \
         converged: {:?}; A sees B's delete: {}",
        b_reads_a_new_id.as_deref().map(String::from_utf8_lossy),
        b_after_update.as_deref().map(String::from_utf8_lossy),
        converged_value.as_deref().map(String::from_utf8_lossy),
        a_reads_b_delete
    );
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(Outcome {
        b_reads_a_new_id,
        b_after_update,
        update_seen_after,
        a_reads_b_delete,
        converged_value,
    })
}

#[tokio::main]
async fn main() {
    let redis = std::env::var("SYNC_ENGINE_REDIS_URL").unwrap_or("redis://127.0.0.1:6379/".into());
    let sql =
        std::env::var("SYNC_ENGINE_SQL_URL").unwrap_or("mysql://root@127.0.0.1:3306/test".into());
    match run(&redis, &sql, "twoinst").await {
        Ok(out)
            if out.b_reads_a_new_id.is_some()
                && out.b_after_update.is_some()
                && out.update_seen_after < PATIENCE =>
        {
            if !out.a_reads_b_delete || out.converged_value.is_none() {
                eprintln!("unexpected outcome: {out:?}");
                std::process::exit(2);
            }
        }
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

    async fn check(sql_var: &str, tag: &str) {
        let (Some(redis), Some(sql)) = (url("SYNC_ENGINE_TEST_REDIS_URL"), url(sql_var)) else {
            return;
        };
        let prefix = format!("ex2{tag}{}", std::process::id());
        let out = run(&redis, &sql, &prefix).await.unwrap();
        assert_eq!(out.b_reads_a_new_id.as_deref(), Some(&b"v1 from A"[..]));
        assert_eq!(out.b_after_update.as_deref(), Some(&b"v2 from A"[..]));
        assert!(out.update_seen_after < PATIENCE, "{:?}", out.update_seen_after);
        assert_eq!(out.converged_value.as_deref(), Some(&b"v4 from B"[..]), "the later write wins");
        assert!(out.a_reads_b_delete);
    }

    #[tokio::test]
    async fn two_instances_over_redis_and_mariadb() {
        check("SYNC_ENGINE_TEST_MYSQL_URL", "m").await;
    }

    #[tokio::test]
    async fn two_instances_over_redis_and_postgres() {
        check("SYNC_ENGINE_TEST_POSTGRES_URL", "p").await;
    }
}
