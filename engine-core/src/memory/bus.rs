use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use crate::error::{Error, Result};
use crate::store::{BusEvent, Invalidation, InvalidationBus, Subscription, SUBSCRIPTION_BUFFER};

/// Control of one subscription's connection.
enum Ctl {
    Disconnect,
    Reconnect,
}

struct Shared {
    tx: broadcast::Sender<Arc<Invalidation>>,
    down: AtomicBool,
    subs: Mutex<Vec<mpsc::UnboundedSender<Ctl>>>,
}

/// An in-memory [`InvalidationBus`]: a broadcast channel with the same gap reporting as a real
/// one. Clones share the channel. Tests cut connections with [`disconnect`] / [`reconnect`]
/// (one subscription, by subscribe order) or [`set_down`] (the whole bus); messages published
/// while a subscription is cut are lost to it, as they would be on Redis.
///
/// [`disconnect`]: MemoryBus::disconnect
/// [`reconnect`]: MemoryBus::reconnect
/// [`set_down`]: MemoryBus::set_down
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

impl Default for MemoryBus {
    fn default() -> MemoryBus {
        MemoryBus::new()
    }
}

impl MemoryBus {
    /// A bus with nobody subscribed.
    pub fn new() -> MemoryBus {
        let (tx, _) = broadcast::channel(SUBSCRIPTION_BUFFER);
        MemoryBus {
            shared: Arc::new(Shared {
                tx,
                down: AtomicBool::new(false),
                subs: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Number of subscriptions made so far (ended ones included).
    pub fn subscriptions(&self) -> usize {
        self.shared.subs.lock().len()
    }

    fn control(&self, index: usize, ctl: Ctl) {
        if let Some(s) = self.shared.subs.lock().get(index) {
            let _ = s.send(ctl);
        }
    }

    /// Cut subscription `index` (0 = the first made): it gets `Disconnected` and misses every
    /// message until [`reconnect`](Self::reconnect).
    pub fn disconnect(&self, index: usize) {
        self.control(index, Ctl::Disconnect);
    }

    /// Reconnect subscription `index`: it gets `Connected` and receives messages again.
    pub fn reconnect(&self, index: usize) {
        self.control(index, Ctl::Reconnect);
    }

    /// The whole bus down (publish fails, every subscription disconnected) or back up.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        for s in self.shared.subs.lock().iter() {
            let _ = s.send(if down { Ctl::Disconnect } else { Ctl::Reconnect });
        }
    }
}

/// Feeds one subscription: messages while connected, `Disconnected`/`Connected` around cuts and
/// around a lag of the broadcast buffer.
async fn forward(
    mut rx: broadcast::Receiver<Arc<Invalidation>>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    out: mpsc::Sender<BusEvent>,
    mut connected: bool,
) {
    let first = if connected { BusEvent::Connected } else { BusEvent::Disconnected };
    if out.send(first).await.is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            biased;
            c = ctl.recv() => match c {
                None => return,
                Some(Ctl::Disconnect) if connected => {
                    connected = false;
                    BusEvent::Disconnected
                }
                Some(Ctl::Reconnect) if !connected => {
                    // Whatever was published while cut is lost to this subscription.
                    rx = rx.resubscribe();
                    connected = true;
                    BusEvent::Connected
                }
                Some(_) => continue,
            },
            m = rx.recv(), if connected => match m {
                Ok(m) => BusEvent::Message((*m).clone()),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if out.send(BusEvent::Disconnected).await.is_err() {
                        return;
                    }
                    BusEvent::Connected
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if out.send(event).await.is_err() {
            return;
        }
    }
}

#[async_trait]
impl InvalidationBus for MemoryBus {
    fn backend(&self) -> &str {
        "memory"
    }

    async fn publish(&self, msg: &Invalidation) -> Result<()> {
        if self.shared.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("the in-memory bus is down (injected)")
                .with_backend("memory-bus")
                .with_operation("publish"));
        }
        // No receiver is not an error: nobody needed the message.
        let _ = self.shared.tx.send(Arc::new(msg.clone()));
        Ok(())
    }

    async fn subscribe(&self) -> Result<Subscription> {
        let (out_tx, out_rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let rx = self.shared.tx.subscribe();
        self.shared.subs.lock().push(ctl_tx);
        let connected = !self.shared.down.load(Ordering::SeqCst);
        tokio::spawn(forward(rx, ctl_rx, out_tx, connected));
        Ok(out_rx)
    }
}
