//! [`RedisBus`]: the invalidation bus on Redis pub/sub, one channel per store prefix
//! (`<prefix>{<prefix>}i:changes`, in the store's hash slot).
//!
//! Each subscription owns a dedicated pub/sub connection, driven by a background task that
//! reconnects with backoff and reports every possible gap as `Disconnected` (connection lost,
//! no `PONG` within the response timeout, an undecodable message, the subscriber's buffer
//! full) and `Connected` once it is subscribed again.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSub;
use sync_engine_core::store::{
    BusEvent, Invalidation, InvalidationBus, Subscription, SUBSCRIPTION_BUFFER,
};
use sync_engine_core::Result;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::bus_codec;
use crate::error;
use crate::store::RedisStore;

/// A liveness `PING` on the subscribed connection this often.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Backoff between reconnect attempts: from the first to the last value, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// The invalidation bus of one [`RedisStore`] (same server, same prefix). Cheap to clone.
#[derive(Clone, Debug)]
pub struct RedisBus {
    store: RedisStore,
    channel: String,
}

impl RedisStore {
    /// The invalidation bus on this store's server and prefix.
    pub fn invalidation_bus(&self) -> RedisBus {
        RedisBus { store: self.clone(), channel: format!("{}i:changes", self.inner.keys.base()) }
    }
}

impl RedisBus {
    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

#[async_trait]
impl InvalidationBus for RedisBus {
    fn backend(&self) -> &str {
        error::BACKEND
    }

    async fn publish(&self, msg: &Invalidation) -> Result<()> {
        let bytes = bus_codec::encode(msg);
        let (channel, bytes) = (&self.channel, &bytes);
        let span = tracing::debug_span!("redis.publish", changes = msg.changes.len());
        self.store
            .run("publish", |mut c| async move {
                redis::cmd("PUBLISH").arg(channel).arg(bytes).query_async::<i64>(&mut c).await
            })
            .instrument(span)
            .await
            .map(|_| ())
    }

    async fn subscribe(&self) -> Result<Subscription> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        tokio::spawn(drive(self.clone(), tx));
        Ok(rx)
    }
}

/// The subscriber's side of the channel: events in order, gaps reported when it falls behind.
struct Out {
    tx: mpsc::Sender<BusEvent>,
    /// A message was dropped because the buffer was full; report the gap before anything else.
    lagged: bool,
}

impl Out {
    /// Deliver, or record a gap; false once the subscriber is gone.
    fn deliver(&mut self, ev: BusEvent) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if self.lagged {
            if self.tx.capacity() < 3 {
                return true; // still full: this message is lost too
            }
            // Capacity checked and we are the only sender: these cannot fail for space.
            let _ = self.tx.try_send(BusEvent::Disconnected);
            let _ = self.tx.try_send(BusEvent::Connected);
            self.lagged = false;
        }
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("invalidation subscriber is behind; reporting a gap");
                self.lagged = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Deliver a connection-state event, waiting for room (it must not be lost).
    async fn state(&mut self, ev: BusEvent) -> bool {
        self.lagged = false;
        self.tx.send(ev).await.is_ok()
    }
}

async fn connect(bus: &RedisBus) -> std::result::Result<PubSub, redis::RedisError> {
    let opts = &bus.store.inner.opts;
    let bound = opts.connect_timeout + opts.response_timeout;
    let attempt = async {
        let mut ps = bus.store.inner.client.get_async_pubsub().await?;
        ps.subscribe(&bus.channel).await?;
        Ok(ps)
    };
    match tokio::time::timeout(bound, attempt).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "pub/sub connect timed out",
        ))),
    }
}

/// The subscription task: connect, forward, detect loss, reconnect — until the subscriber
/// drops its receiver.
async fn drive(bus: RedisBus, tx: mpsc::Sender<BusEvent>) {
    let mut out = Out { tx, lagged: false };
    let mut backoff = BACKOFF.0;
    let mut reported_down = false;
    let response_timeout = bus.store.inner.opts.response_timeout;
    loop {
        let ps = match connect(&bus).await {
            Ok(ps) => ps,
            Err(e) => {
                tracing::debug!(error = %e, channel = %bus.channel, "invalidation subscribe failed; retrying");
                if !reported_down {
                    if !out.state(BusEvent::Disconnected).await {
                        return;
                    }
                    reported_down = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
        };
        backoff = BACKOFF.0;
        if !out.state(BusEvent::Connected).await {
            return;
        }
        tracing::info!(channel = %bus.channel, "invalidation channel subscribed");
        let (mut sink, mut stream) = ps.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let lost = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    None => break "connection closed",
                    Some(m) => {
                        let ev = match bus_codec::decode(m.get_payload_bytes()) {
                            Ok(inv) => BusEvent::Message(inv),
                            Err(e) => {
                                // We cannot know which ids it named: a gap.
                                tracing::warn!(error = %e, "undecodable invalidation message; reporting a gap");
                                if !out.state(BusEvent::Disconnected).await
                                    || !out.state(BusEvent::Connected).await
                                {
                                    return;
                                }
                                continue;
                            }
                        };
                        if !out.deliver(ev) {
                            return;
                        }
                    }
                },
                _ = ping.tick() => {
                    if out.tx.is_closed() {
                        return;
                    }
                    match tokio::time::timeout(response_timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => break "ping failed",
                        Err(_) => break "no pong within the response timeout",
                    }
                }
            }
        };
        tracing::warn!(channel = %bus.channel, reason = lost, "invalidation channel lost; reconnecting");
        if !out.state(BusEvent::Disconnected).await {
            return;
        }
        reported_down = true;
    }
}
