//! Two engine instances (as two replicas of a service would run them) sharing one Redis and
//! one SQL database, each with its own L1 cache and its own local WAL.
//!
//! ```sh
//! SYNC_ENGINE_REDIS_URL=redis://127.0.0.1:6379/ \
//! SYNC_ENGINE_SQL_URL=mysql://root@127.0.0.1:3306/test \
//! cargo run -p example-two-instances
//! ```
//!
//! What this shows, and the two settings it needs today:
//! - `filter_enabled = false`: each instance's cuckoo filter learns only the ids that instance
//!   wrote or scanned, so with a trusted filter B would answer "absent" for an id A just
//!   created. Without the filter B looks the id up in Redis/SQL.
//! - `l1_ttl_ms`: B's L1 keeps serving the value B last read until the entry is older than
//!   the TTL; that TTL is the staleness bound between instances.

use std::time::Duration;

use sync_engine::{Config, SecretUrl};

/// The bound on how long one instance may serve a value another instance has replaced.
const L1_TTL: Duration = Duration::from_millis(200);

/// What the run observed.
#[derive(Debug)]
struct Outcome {
    b_reads_a_new_id: Option<Vec<u8>>,
    b_after_ttl: Option<Vec<u8>>,
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
    config.filter_enabled = false;
    config.l1_ttl_ms = L1_TTL.as_millis() as u64;
    Ok(config)
}

fn text(item: Option<sync_engine::SyncItem>) -> Option<Vec<u8>> {
    item.map(|i| i.content().to_vec())
}

async fn run(redis: &str, sql: &str, prefix: &str) -> sync_engine::Result<Outcome> {
    let a = sync_engine::connect(config(redis, sql, &format!("{prefix}:"), "a")?).await?.engine;
    let b = sync_engine::connect(config(redis, sql, &format!("{prefix}:"), "b")?).await?.engine;
    let id = format!("{prefix}.profile.1");

    // A creates an id; once it is flushed, B finds it in Redis.
    a.submit(&id, "v1 from A").await?;
    a.flush().await?;
    let b_reads_a_new_id = text(b.get(&id).await?); // now in B's L1

    // A replaces it; B's L1 may serve v1 for at most L1_TTL, then re-reads.
    a.submit(&id, "v2 from A").await?;
    a.flush().await?;
    tokio::time::sleep(L1_TTL + Duration::from_millis(50)).await;
    let b_after_ttl = text(b.get(&id).await?);

    // Both write the same id: newer wins in every tier.
    // Versions come from each instance's hybrid logical clock (milliseconds + counter), so
    // "later" is only defined beyond the clocks' resolution: wait a few ms between the two.
    a.submit(&id, "v3 from A").await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.submit(&id, "v4 from B").await?;
    a.flush().await?;
    b.flush().await?;
    tokio::time::sleep(L1_TTL + Duration::from_millis(50)).await;
    let converged_value = text(a.get(&id).await?);
    let converged_b = text(b.get(&id).await?);
    if converged_value != converged_b {
        return Err(sync_engine::Error::new(
            sync_engine::ErrorKind::Contract,
            format!("instances disagree: {converged_value:?} vs {converged_b:?}"),
        ));
    }

    // B deletes; A stops serving it within the TTL.
    let other = format!("{prefix}.profile.2");
    a.submit(&other, "to be deleted").await?;
    a.flush().await?;
    b.delete(&other).await?;
    b.flush().await?;
    tokio::time::sleep(L1_TTL + Duration::from_millis(50)).await;
    let a_reads_b_delete = a.get(&other).await?.is_none();

    println!(
        "B read A's new id: {:?}; B after the TTL: {:?}; converged: {:?}; A sees B's delete: {}",
        b_reads_a_new_id.as_deref().map(String::from_utf8_lossy),
        b_after_ttl.as_deref().map(String::from_utf8_lossy),
        converged_value.as_deref().map(String::from_utf8_lossy),
        a_reads_b_delete
    );
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(Outcome { b_reads_a_new_id, b_after_ttl, a_reads_b_delete, converged_value })
}

#[tokio::main]
async fn main() {
    let redis = std::env::var("SYNC_ENGINE_REDIS_URL").unwrap_or("redis://127.0.0.1:6379/".into());
    let sql =
        std::env::var("SYNC_ENGINE_SQL_URL").unwrap_or("mysql://root@127.0.0.1:3306/test".into());
    match run(&redis, &sql, "twoinst").await {
        Ok(out) if out.b_reads_a_new_id.is_some() && out.b_after_ttl.is_some() => {
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
        assert_eq!(out.b_after_ttl.as_deref(), Some(&b"v2 from A"[..]));
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
