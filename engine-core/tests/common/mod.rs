//! Shared setup of the engine tests: fakes kept outside the engine, so a test can drop the
//! engine (a crash) and start a new one over the same "durable" state.
#![allow(dead_code)]

use sync_engine_core::memory::{Faulty, MemoryArchive, MemoryBus, MemoryCache, MemoryWal};
use sync_engine_core::{Config, SyncEngine};

/// Backends of one test, each behind a fault wrapper.
#[derive(Clone)]
pub struct Rig {
    pub l3: Faulty<MemoryArchive>,
    pub l2: Faulty<MemoryCache>,
    pub wal: Faulty<MemoryWal>,
}

impl Rig {
    pub fn new() -> Rig {
        Rig {
            l3: Faulty::new(MemoryArchive::new(), 3),
            l2: Faulty::new(MemoryCache::new(), 2),
            wal: Faulty::new(MemoryWal::default(), 1),
        }
    }

    /// A config for tests: small batches, quick breakers, no start retries to wait for.
    pub fn config() -> Config {
        Config {
            batch_max_items: 16,
            batch_max_age_ms: 10,
            breaker_failure_threshold: 1,
            breaker_open_ms: 50,
            startup_l3_attempts: 2,
            startup_backoff_ms: 10,
            health_check_interval_ms: 20,
            ..Config::default()
        }
    }

    pub async fn start(&self) -> SyncEngine {
        self.start_with(Self::config()).await.expect("engine starts")
    }

    pub async fn start_with(&self, config: Config) -> sync_engine_core::Result<SyncEngine> {
        SyncEngine::builder(config)
            .archive(self.l3.clone())
            .cache(self.l2.clone())
            .wal(self.wal.clone())
            .start()
            .await
    }

    /// Another instance over the same L2 and L3, with its own WAL (and L1), on `bus`.
    pub async fn start_instance(&self, config: Config, bus: &MemoryBus) -> SyncEngine {
        SyncEngine::builder(config)
            .archive(self.l3.clone())
            .cache(self.l2.clone())
            .wal(MemoryWal::default())
            .bus(bus.clone())
            .start()
            .await
            .expect("engine starts")
    }

    pub async fn start_without_l2(&self, config: Config) -> sync_engine_core::Result<SyncEngine> {
        SyncEngine::builder(config).archive(self.l3.clone()).wal(self.wal.clone()).start().await
    }
}

pub fn id(s: &str) -> sync_engine_core::ObjectId {
    sync_engine_core::ObjectId::new(s).unwrap()
}
