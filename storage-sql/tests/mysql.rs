//! The MySQL / MariaDB store, against the server `SYNC_ENGINE_TEST_MYSQL_URL` names (set by
//! `cargo xtask test`); skipped loudly when unset. Every test uses its own tables.
#![cfg(feature = "mysql")]

mod common;

use common::*;

crate::server_suite!("SYNC_ENGINE_TEST_MYSQL_URL", "my");

#[tokio::test]
async fn a_dead_server_is_reported_quickly() {
    dead_server("mysql://root:hunter2@127.0.0.1:1/test").await;
    dead_server("mariadb://root:hunter2@127.0.0.1:1/test").await;
}
