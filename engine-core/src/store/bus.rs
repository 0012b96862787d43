//! The invalidation bus: how several engines over the same L2/L3 tell each other which ids
//! changed, so that no instance keeps serving a stale L1 entry or answers "absent" for an id
//! another instance created.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::id::ObjectId;
use crate::item::Stamp;

/// Changes per message the engine publishes at most (a larger batch is sent as several).
pub const MAX_CHANGES_PER_MESSAGE: usize = 1000;

/// Events buffered per subscription before an implementation must report a gap.
pub const SUBSCRIPTION_BUFFER: usize = 1024;

/// Identity of one engine instance (random per start): lets an instance skip its own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub u128);

impl InstanceId {
    /// A fresh random id.
    pub fn random() -> InstanceId {
        InstanceId(rand::random())
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One changed id and the stamp (version, content hash, tombstone) it now has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The id.
    pub id: ObjectId,
    /// Its new stamp; `stamp.tombstone` marks a delete.
    pub stamp: Stamp,
}

/// One published message: the changes of one flushed batch, from one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The publishing instance.
    pub origin: InstanceId,
    /// The changes (at most [`MAX_CHANGES_PER_MESSAGE`] when published by the engine).
    pub changes: Vec<Change>,
}

/// What a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// Subscribed: every message published from now on is delivered, until the next
    /// `Disconnected`.
    Connected,
    /// Messages published from now on (and possibly some just before) may be missed, until the
    /// next `Connected`. Also sent when a buffer overflowed (followed by `Connected`).
    Disconnected,
    /// A message (including the subscriber's own: the receiver filters by origin).
    Message(Invalidation),
}

/// The receiving end of a subscription; dropping it ends the subscription.
pub type Subscription = mpsc::Receiver<BusEvent>;

/// A publish/subscribe channel of [`Invalidation`]s shared by every engine over one L2/L3.
///
/// Promises:
/// - A subscription starts *disconnected*: nothing is promised before its first
///   [`BusEvent::Connected`].
/// - **No silent gap**: every message published after a subscription's `Connected` event is
///   delivered to it, in publish order per publisher, unless a [`BusEvent::Disconnected`] comes
///   first. Whatever may lose messages — a dropped connection, a server restart, a full buffer —
///   is reported as `Disconnected`, and delivery resumes with a new `Connected`.
/// - Implementations reconnect by themselves; `subscribe` does not fail because the server is
///   unreachable (that is an initial `Disconnected`, or simply no `Connected` yet).
/// - Buffers are bounded ([`SUBSCRIPTION_BUFFER`] events); a subscriber that does not keep up
///   gets a gap report, never unbounded memory growth.
/// - `publish` returns once the server accepted the message (at most once per call; an error
///   means it may not have been delivered). Errors: unreachable → Temporary.
#[async_trait]
pub trait InvalidationBus: Send + Sync {
    /// Short backend name for errors, logs and metrics.
    fn backend(&self) -> &str;

    /// Publish one message to every subscription of the channel.
    async fn publish(&self, msg: &Invalidation) -> Result<()>;

    /// Start a subscription (a background task of the implementation feeds it).
    async fn subscribe(&self) -> Result<Subscription>;
}
