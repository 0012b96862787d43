//! No password in any log line, span or error: every event sqlx and this crate emit (TRACE and
//! up) is captured while stores connect with passwords, fail to connect, and work.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use sync_engine_core::conformance::server_url;
use sync_engine_core::store::{ArchiveExt, ArchiveStore, MerkleExt};
use sync_engine_core::{ErrorKind, ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::SqlStore;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `url` with the password `hunter2` put in its user info.
fn with_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, host) = rest.split_once('@').unwrap();
    let user = auth.split(':').next().unwrap();
    format!("{scheme}://{user}:hunter2@{host}")
}

async fn exercise(store: &SqlStore) {
    let id = ObjectId::new("logs.a.b").unwrap();
    store.put_batch(&[SyncItem::new(id.clone(), 1, "x")]).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    assert_ne!(store.root_hash().await.unwrap(), sync_engine_core::merkle::Digest::ZERO);
    store.drop_tables().await.unwrap();
}

#[tokio::test]
async fn passwords_never_reach_logs_or_errors() {
    let buf = Buf::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut errors = Vec::new();
    for dead in ["postgres://u:hunter2@127.0.0.1:1/x", "mysql://u:hunter2@127.0.0.1:1/x"] {
        if let Err(e) = SqlStore::connect(&SecretUrl::new(dead), common::options("logs", 256)).await
        {
            errors.push(format!("{e} {e:?}"));
        }
    }
    if let Some(url) = server_url("SYNC_ENGINE_TEST_POSTGRES_URL") {
        // Trust authentication accepts any password: the store connects and works.
        let store =
            SqlStore::connect(&SecretUrl::new(with_password(&url)), common::options("logs", 256))
                .await
                .unwrap();
        exercise(&store).await;
    }
    if let Some(url) = server_url("SYNC_ENGINE_TEST_MYSQL_URL") {
        // A wrong password: a Config error naming the redacted URL.
        match SqlStore::connect(&SecretUrl::new(with_password(&url)), common::options("logs", 256))
            .await
        {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config, "{e}");
                errors.push(format!("{e} {e:?}"));
            }
            Ok(store) => exercise(&store).await,
        }
    }
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("connect"), "the capture works: {}", &logs[..logs.len().min(500)]);
    for text in errors.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }
}
