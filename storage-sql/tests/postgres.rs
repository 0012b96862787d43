//! The PostgreSQL store, against the server `SYNC_ENGINE_TEST_POSTGRES_URL` names (set by
//! `cargo xtask test`); skipped loudly when unset. Every test uses its own tables.
#![cfg(feature = "postgres")]

mod common;

use common::*;

crate::server_suite!("SYNC_ENGINE_TEST_POSTGRES_URL", "pg");

#[tokio::test]
async fn a_dead_server_is_reported_quickly() {
    dead_server("postgres://postgres:hunter2@127.0.0.1:1/test").await;
    dead_server("postgresql://postgres:hunter2@127.0.0.1:1/test").await;
}
