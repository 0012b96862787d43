//! The MySQL / MariaDB store, against the server `SYNC_ENGINE_TEST_MYSQL_URL` names (set by
//! `cargo xtask test`); skipped loudly when unset. Every test uses its own tables.
#![cfg(feature = "mysql")]

mod common;

use common::*;
use sync_engine_core::conformance::{server_url, unique_ns};
use sync_engine_core::SecretUrl;

const VAR: &str = "SYNC_ENGINE_TEST_MYSQL_URL";

macro_rules! with_store {
    ($tag:expr, $threshold:expr, |$s:ident| $body:expr) => {{
        let Some($s) = server_store(VAR, $tag, $threshold).await else { return };
        $body;
        $s.drop_tables().await.unwrap();
    }};
}

#[tokio::test]
async fn conformance_suite() {
    with_store!("my_conf", 256, |s| conformance(&s).await);
    with_store!("my_conf2", 2, |s| conformance(&s).await);
}

#[tokio::test]
async fn payloads_and_ids_round_trip() {
    with_store!("my_rt", 256, |s| round_trips(&s).await);
}

#[tokio::test]
async fn wide_nodes_split_and_stay_bounded() {
    with_store!("my_wide", 16, |s| wide_node(&s, 16, 2000).await);
}

#[tokio::test]
async fn four_concurrent_writers_lose_no_merkle_update() {
    let Some(url) = server_url(VAR) else { return };
    let url = SecretUrl::new(url);
    let opts = options("my_conc", 4);
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(reopen(&url, &opts).await);
    }
    let cleanup = reopen(&url, &opts).await;
    concurrent_writers(stores).await;
    cleanup.drop_tables().await.unwrap();
}

#[tokio::test]
async fn merkle_tree_equals_the_reference() {
    for seed in 0..6u64 {
        let threshold = [2, 3, 8][seed as usize % 3];
        with_store!("my_prop", threshold, |s| {
            let ns = unique_ns("prop");
            let universe = id_universe(&ns, 30);
            let ops = random_batches(seed, &universe, 8, 30);
            check_against_reference(&s, &ns, &universe, &ops).await
        });
    }
}

#[tokio::test]
async fn purge_removes_only_old_tombstones() {
    with_store!("my_purge", 256, |s| purge(&s).await);
}

#[tokio::test]
async fn a_dead_server_is_reported_quickly() {
    dead_server("mysql://root:hunter2@127.0.0.1:1/test").await;
    dead_server("mariadb://root:hunter2@127.0.0.1:1/test").await;
}
