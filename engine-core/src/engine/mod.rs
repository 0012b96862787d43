//! The coordinator: [`SyncEngine`] wires an archive (L3), an optional cache (L2), a local log
//! (WAL) and an in-process L1 through the startup sequence, the write-behind path, tiered reads,
//! maintenance and shutdown of DESIGN.md.
//!
//! Modules by responsibility: `lifecycle` (startup, shutdown), `write` and `batcher`
//! (submit, flush), `read` (get), `heal` (self-healing reads), `repair` (verify, repair),
//! `maintenance` (run, tick, drain, snapshots, reload, health); small parts: `l1`, `overlay`,
//! `filter`, `breaker`, `hlc`, `backpressure`.

mod backpressure;
mod batcher;
mod breaker;
mod coalesce;
mod filter;
mod heal;
mod hlc;
mod invalidate;
mod l1;
mod l2_stale;
mod lifecycle;
mod maintenance;
mod overlay;
mod read;
mod repair;
mod write;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::store::{
    ArchiveStore, CacheStore, InstanceId, InvalidationBus, MerkleStore, SnapshotStore, Wal,
};
use crate::{Config, ObjectId, Stamp, SyncItem};

pub use backpressure::Level as BackpressureLevel;
pub use breaker::BreakerState;
pub use maintenance::{BackendHealth, Health, TickReport};
pub use repair::RepairReport;
pub use write::{Route, SubmitOptions};

/// L3: an archive with its Merkle tree.
pub trait L3Store: ArchiveStore + MerkleStore {}
impl<T: ArchiveStore + MerkleStore + ?Sized> L3Store for T {}

/// L2: a cache with its Merkle shadow.
pub trait L2Store: CacheStore + MerkleStore {}
impl<T: CacheStore + MerkleStore + ?Sized> L2Store for T {}

/// The local log: WAL plus filter snapshots.
pub trait LocalLog: Wal + SnapshotStore {}
impl<T: Wal + SnapshotStore + ?Sized> LocalLog for T {}

/// Where the engine is in its life, published on a `watch` channel ([`SyncEngine::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    /// Built, not started.
    Created,
    /// Opening the WAL and reaching L3.
    Connecting,
    /// Draining pending WAL entries into L3.
    DrainingWal,
    /// Comparing L2 with L3 and repairing stale branches.
    SyncingL2,
    /// Rebuilding the cuckoo filter by a keyset scan of L3.
    WarmingUp,
    /// Started; serving.
    Ready,
    /// Serving, with `run()` driving maintenance.
    Running,
    /// Started without L3 (`allow_degraded_start`): writes go to the WAL, reads to L1/L2.
    Degraded,
    /// Refusing new writes, flushing, draining, snapshotting.
    ShuttingDown,
    /// Stopped; every write acknowledged before shutdown is in L3 or the WAL.
    Stopped,
}

/// Builds a [`SyncEngine`] from backends. The engine holds them as trait objects
/// (`Arc<dyn L3Store>` ...): one vtable call per backend I/O, negligible beside the I/O itself,
/// and a non-generic engine type for users to store and pass around.
pub struct Builder {
    config: Config,
    l3: Option<Arc<dyn L3Store>>,
    l2: Option<Arc<dyn L2Store>>,
    wal: Option<Arc<dyn LocalLog>>,
    bus: Option<Arc<dyn InvalidationBus>>,
    reload: Option<watch::Receiver<Config>>,
}

impl Builder {
    /// The archive (L3). Required.
    pub fn archive(mut self, l3: impl L3Store + 'static) -> Builder {
        self.l3 = Some(Arc::new(l3));
        self
    }

    /// The archive as a shared trait object.
    pub fn archive_arc(mut self, l3: Arc<dyn L3Store>) -> Builder {
        self.l3 = Some(l3);
        self
    }

    /// The cache (L2). Optional.
    pub fn cache(mut self, l2: impl L2Store + 'static) -> Builder {
        self.l2 = Some(Arc::new(l2));
        self
    }

    /// The cache as a shared trait object.
    pub fn cache_arc(mut self, l2: Arc<dyn L2Store>) -> Builder {
        self.l2 = Some(l2);
        self
    }

    /// The local log (WAL + snapshots). Required.
    pub fn wal(mut self, wal: impl LocalLog + 'static) -> Builder {
        self.wal = Some(Arc::new(wal));
        self
    }

    /// The local log as a shared trait object.
    pub fn wal_arc(mut self, wal: Arc<dyn LocalLog>) -> Builder {
        self.wal = Some(wal);
        self
    }

    /// The invalidation bus shared with the other instances over the same L2/L3. Optional:
    /// without it, run one instance (or set `filter_enabled = false` and rely on `l1_ttl_ms`).
    pub fn bus(mut self, bus: impl InvalidationBus + 'static) -> Builder {
        self.bus = Some(Arc::new(bus));
        self
    }

    /// The invalidation bus as a shared trait object.
    pub fn bus_arc(mut self, bus: Arc<dyn InvalidationBus>) -> Builder {
        self.bus = Some(bus);
        self
    }

    /// Hot reload: the engine applies the hot options of each config sent on this channel.
    pub fn reload(mut self, rx: watch::Receiver<Config>) -> Builder {
        self.reload = Some(rx);
        self
    }

    /// Run the startup sequence and return the started engine.
    pub async fn start(self) -> crate::Result<SyncEngine> {
        lifecycle::start(self).await
    }
}

/// Shared state of one engine; background tasks hold it too.
pub(crate) struct Inner {
    pub(crate) config: RwLock<Config>,
    pub(crate) limits: crate::Limits,
    pub(crate) l3: Arc<dyn L3Store>,
    pub(crate) l2: Option<Arc<dyn L2Store>>,
    pub(crate) wal: Arc<dyn LocalLog>,
    /// This instance's identity on the bus.
    pub(crate) instance: InstanceId,
    pub(crate) bus: Option<Arc<dyn InvalidationBus>>,
    /// L1 may be served: no bus is configured, or the bus is connected.
    pub(crate) bus_live: AtomicBool,
    /// Serialises bus state changes with the start of filter warm-ups.
    pub(crate) bus_lock: Mutex<()>,
    /// A filter rebuild after a reconnect failed and must be retried.
    pub(crate) filter_rebuild: AtomicBool,
    /// The bus listener runs (the filter object must no longer be replaced).
    pub(crate) listening: AtomicBool,
    pub(crate) l1: l1::L1,
    pub(crate) overlay: overlay::Overlay,
    pub(crate) filter: filter::Filter,
    pub(crate) pending: batcher::Pending,
    pub(crate) flush_tx: mpsc::UnboundedSender<batcher::Job>,
    pub(crate) backlog: batcher::Backlog,
    pub(crate) hlc: hlc::Hlc,
    pub(crate) l3_breaker: breaker::Breaker,
    pub(crate) l2_breaker: breaker::Breaker,
    pub(crate) state_tx: watch::Sender<EngineState>,
    pub(crate) closing: AtomicBool,
    /// L3 not yet verified since a degraded start or outage: drain, root check, warm-up pending.
    pub(crate) l3_needs_resync: AtomicBool,
    /// L2 may have missed writes: compare and repair at the next maintenance round.
    pub(crate) l2_needs_repair: AtomicBool,
    /// Ids whose newest write L2 missed: reads skip L2 for them until it has it.
    pub(crate) l2_stale: l2_stale::StaleL2,
    /// Reads whose L2 values were refused as damaged, waiting for a self-heal (`heal`).
    pub(crate) l2_heal: Mutex<heal::Queue>,
    pub(crate) wal_depth: AtomicU64,
    pub(crate) reads: coalesce::Coalescer,
    pub(crate) last_repair: Mutex<Option<RepairReport>>,
    pub(crate) maint: maintenance::MaintState,
}

/// Each item's id and stamp.
pub(crate) fn stamps(items: &[SyncItem]) -> impl Iterator<Item = (&ObjectId, Stamp)> + '_ {
    items.iter().map(|i| (i.id(), i.stamp()))
}

impl Inner {
    /// Give L1 the part of the memory budget the unflushed writes leave.
    fn rebalance_l1(&self) {
        let (_, unflushed) = self.overlay.size();
        self.l1.share_with_unflushed(unflushed);
    }

    /// Hold `item` in the overlay until L3 has it (L1 yields the bytes it pins).
    pub(crate) fn hold_unflushed(&self, item: &SyncItem) {
        self.overlay.put(item);
        self.rebalance_l1();
    }

    /// These stamps are in L3 (or were refused by it): the overlay lets them go and L1 gets
    /// the bytes back.
    pub(crate) fn release_unflushed<'a>(
        &self,
        settled: impl IntoIterator<Item = (&'a ObjectId, Stamp)>,
    ) {
        self.overlay.settle(settled);
        self.rebalance_l1();
    }

    /// Another instance wrote `stamp` for `id`: an older unflushed write of it is dropped from
    /// the overlay (L1 gets the bytes back).
    pub(crate) fn supersede_unflushed(&self, id: &ObjectId, stamp: Stamp) {
        self.overlay.supersede(id, stamp);
        self.rebalance_l1();
    }

    pub(crate) fn set_state(&self, s: EngineState) {
        self.state_tx.send_replace(s);
        tracing::info!(state = ?s, "engine state");
    }

    pub(crate) fn state(&self) -> EngineState {
        *self.state_tx.borrow()
    }

    pub(crate) fn cfg(&self) -> parking_lot::RwLockReadGuard<'_, Config> {
        self.config.read()
    }

    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Aborts the background tasks when the last engine handle is dropped (a drop without
/// `shutdown()` is a crash as far as unflushed write-behind data is concerned).
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in self.0.lock().drain(..) {
            t.abort();
        }
    }
}

/// The engine: one `submit / get / delete` API over L1, L2, L3 and the WAL.
/// Cheap to clone; clones share one engine.
#[derive(Clone)]
pub struct SyncEngine {
    pub(crate) inner: Arc<Inner>,
    tasks: Arc<Tasks>,
}

impl SyncEngine {
    /// A builder over `config`.
    pub fn builder(config: Config) -> Builder {
        Builder { config, l3: None, l2: None, wal: None, bus: None, reload: None }
    }

    /// The current state.
    pub fn state(&self) -> EngineState {
        self.inner.state()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<EngineState> {
        self.inner.state_tx.subscribe()
    }

    /// This instance's identity on the invalidation bus (random per start).
    pub fn instance_id(&self) -> InstanceId {
        self.inner.instance
    }

    /// The configuration in force (hot options included).
    pub fn config(&self) -> Config {
        self.inner.cfg().clone()
    }
}
