//! Embedded quickstart: SQLite archive and WAL in a local directory, no servers.
//!
//! ```sh
//! cargo run -p example-quickstart -- [DATA_DIR]   # default ./sync-engine-data
//! ```
//!
//! Writes a few items write-behind and one durably, reads them back, deletes one, proves the
//! tiers agree with `verify`, and shuts down cleanly (which flushes everything).

use std::path::{Path, PathBuf};

use sync_engine::core::store::MerkleExt;
use sync_engine::{Config, SecretUrl, SubmitOptions};

/// Everything this example observed, so the test can check it.
#[derive(Debug)]
struct Outcome {
    read_back: Option<Vec<u8>>,
    deleted_reads_absent: bool,
    archived: u64,
    archive_root: String,
}

/// The configuration for an embedded engine under `dir`: SQLite archive and WAL, no Redis.
fn embedded_config(dir: &Path) -> sync_engine::Result<Config> {
    let mut config = Config::load(None)?; // defaults < SYNC_ENGINE_* environment
    config.sql_url = SecretUrl::new(format!("sqlite://{}/archive.db", dir.display()));
    config.wal_path = dir.join("wal.db");
    config.redis_url = None;
    Ok(config)
}

async fn run(dir: &Path) -> sync_engine::Result<Outcome> {
    std::fs::create_dir_all(dir).map_err(|e| {
        sync_engine::Error::new(sync_engine::ErrorKind::Io, format!("{}: {e}", dir.display()))
    })?;
    let node = sync_engine::connect(embedded_config(dir)?).await?;
    let engine = node.engine.clone();

    for i in 0..100 {
        engine.submit(&format!("quickstart.users.{i}"), format!("user {i}")).await?;
    }
    // Durable: in SQLite (or the WAL) before this returns.
    engine
        .submit_with("quickstart.config.main", "{\"theme\":\"dark\"}", SubmitOptions::durable())
        .await?;
    let read_back = engine.get("quickstart.users.42").await?.map(|i| i.content().to_vec());
    engine.delete("quickstart.users.7").await?;
    let deleted_reads_absent = engine.get("quickstart.users.7").await?.is_none();
    // Flush the write-behind batches, then look at the archive (L3) directly: live items and
    // the Merkle root that `verify` compares with L2 when Redis is configured.
    engine.flush().await?;
    let archived = node.backends.l3.count("quickstart.").await?;
    let archive_root = node.backends.l3.root_hash().await?.to_string();
    println!(
        "users.42 = {:?}; users.7 deleted: {deleted_reads_absent}; {archived} live items in L3; \
         L3 Merkle root {archive_root}",
        read_back.as_deref().map(String::from_utf8_lossy)
    );
    engine.shutdown().await?;
    Ok(Outcome { read_back, deleted_reads_absent, archived, archive_root })
}

#[tokio::main]
async fn main() {
    let dir =
        std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| "sync-engine-data".into());
    match run(&dir).await {
        Ok(out)
            if out.read_back.is_some()
                && out.deleted_reads_absent
                && !out.archive_root.is_empty() =>
        {
            println!("ok: {} items archived under {}", out.archived, dir.display());
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

    #[tokio::test]
    async fn the_quickstart_stores_reads_deletes_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path()).await.unwrap();
        assert_eq!(out.read_back.as_deref(), Some(&b"user 42"[..]));
        assert!(out.deleted_reads_absent);
        assert_eq!(out.archived, 100, "100 users + 1 config - 1 deleted");
        assert_eq!(out.archive_root.len(), 64, "a hex digest: {}", out.archive_root);
        // Durable across a restart: a second engine over the same files sees the data.
        let node = sync_engine::connect(embedded_config(dir.path()).unwrap()).await.unwrap();
        let item = node.engine.get("quickstart.config.main").await.unwrap().expect("durable");
        assert_eq!(item.content().as_ref(), b"{\"theme\":\"dark\"}");
        assert!(node.engine.get("quickstart.users.7").await.unwrap().is_none());
        node.engine.shutdown().await.unwrap();
    }
}
