//! Conformance of [`InvalidationBus`] implementations (on a healthy, reachable bus).

use std::time::Duration;

use super::{backend, ensure, fail, id, Check};
use crate::store::{BusEvent, Change, InstanceId, Invalidation, InvalidationBus, Subscription};
use crate::SyncItem;

/// How long an expected event may take.
const WAIT: Duration = Duration::from_secs(5);

fn message(ns: &str, n: u64) -> Invalidation {
    let live = SyncItem::new(id(ns, &format!("i{n}")), n, format!("c{n}"));
    let gone = SyncItem::tombstone(id(ns, "gone"), n);
    Invalidation {
        origin: InstanceId(u128::from(n) << 64 | 0xfeed),
        changes: vec![
            Change { id: live.id().clone(), stamp: live.stamp() },
            Change { id: gone.id().clone(), stamp: gone.stamp() },
        ],
    }
}

async fn next(
    sub: &mut Subscription,
    promise: &'static str,
) -> Result<BusEvent, super::ConformanceFailure> {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(fail(promise, "the subscription ended")),
        Err(_) => Err(fail(promise, format!("no event within {WAIT:?}"))),
    }
}

/// Every promise below, in turn.
pub async fn bus_all(bus: &dyn InvalidationBus, ns: &str) -> Check {
    bus_delivers_in_order_to_every_subscriber(bus, ns).await?;
    bus_survives_a_dropped_subscription(bus, ns).await?;
    Ok(())
}

/// A subscription starts with `Connected` (on a healthy bus); every message published after it
/// reaches every subscription, unchanged (origin, ids, stamps), in publish order.
pub async fn bus_delivers_in_order_to_every_subscriber(
    bus: &dyn InvalidationBus,
    ns: &str,
) -> Check {
    const P: &str = "no silent gap: delivery in order to every subscriber";
    let mut subs = vec![
        bus.subscribe().await.map_err(backend(P))?,
        bus.subscribe().await.map_err(backend(P))?,
    ];
    for s in &mut subs {
        let first = next(s, P).await?;
        ensure!(first == BusEvent::Connected, P, "first event {first:?}, not Connected");
    }
    let sent: Vec<Invalidation> = (1..=5).map(|n| message(ns, n)).collect();
    for m in &sent {
        bus.publish(m).await.map_err(backend(P))?;
    }
    for (i, s) in subs.iter_mut().enumerate() {
        for m in &sent {
            let got = next(s, P).await?;
            ensure!(
                got == BusEvent::Message(m.clone()),
                P,
                "subscriber {i}: got {got:?}, want {m:?}"
            );
        }
    }
    Ok(())
}

/// Dropping a subscription ends it without disturbing publishers or other subscriptions.
pub async fn bus_survives_a_dropped_subscription(bus: &dyn InvalidationBus, ns: &str) -> Check {
    const P: &str = "dropping a subscription is harmless";
    let dropped = bus.subscribe().await.map_err(backend(P))?;
    let mut kept = bus.subscribe().await.map_err(backend(P))?;
    let first = next(&mut kept, P).await?;
    ensure!(first == BusEvent::Connected, P, "first event {first:?}, not Connected");
    drop(dropped);
    let m = message(ns, 42);
    bus.publish(&m).await.map_err(backend(P))?;
    let got = next(&mut kept, P).await?;
    ensure!(got == BusEvent::Message(m), P, "got {got:?}");
    Ok(())
}
