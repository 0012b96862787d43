//! The invalidation bus on Redis: delivery to every subscriber of the prefix (and no other),
//! and gap reports when the connection is killed or the server restarted.

mod common;

use std::time::Duration;

use common::{options, store_with, OwnRedis};
use sync_engine_core::conformance::{bus_all, unique_ns};
use sync_engine_core::store::{
    BusEvent, Change, InstanceId, Invalidation, InvalidationBus, Subscription,
};
use sync_engine_core::{ObjectId, SyncItem};

fn message(n: u64) -> Invalidation {
    let item = SyncItem::new(ObjectId::new(&format!("bus.{n}")).unwrap(), n, "x");
    Invalidation {
        origin: InstanceId(7),
        changes: vec![
            Change { id: item.id().clone(), stamp: item.stamp() },
            Change {
                id: ObjectId::new("bus.gone").unwrap(),
                stamp: SyncItem::tombstone(ObjectId::new("bus.gone").unwrap(), n).stamp(),
            },
        ],
    }
}

async fn next(sub: &mut Subscription) -> BusEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("an event within 10 s")
        .expect("subscription open")
}

#[tokio::test]
async fn every_subscriber_of_the_prefix_gets_each_message_and_no_other_prefix_does() {
    let Some(url) = common::shared() else { return };
    let a = store_with(&url, options("bus")).await;
    let other = store_with(&url, options("bus-other")).await;
    let (bus_a, bus_b) = (a.invalidation_bus(), a.invalidation_bus());
    let mut s1 = bus_a.subscribe().await.unwrap();
    let mut s2 = bus_b.subscribe().await.unwrap();
    let mut s3 = other.invalidation_bus().subscribe().await.unwrap();
    for s in [&mut s1, &mut s2, &mut s3] {
        assert_eq!(next(s).await, BusEvent::Connected);
    }
    for n in 1..=3 {
        bus_a.publish(&message(n)).await.unwrap();
    }
    for s in [&mut s1, &mut s2] {
        for n in 1..=3 {
            assert_eq!(next(s).await, BusEvent::Message(message(n)), "in publish order");
        }
    }
    let nothing = tokio::time::timeout(Duration::from_millis(200), s3.recv()).await;
    assert!(nothing.is_err(), "another prefix hears nothing: {nothing:?}");
    // Idle past several liveness pings: no spurious gap.
    let quiet = tokio::time::timeout(Duration::from_millis(2500), s1.recv()).await;
    assert!(quiet.is_err(), "an idle, healthy subscription reports nothing: {quiet:?}");
}

#[tokio::test]
async fn a_killed_connection_or_a_restart_is_reported_as_a_gap_then_resumes() {
    let Some(mut server) = OwnRedis::start() else { return };
    let store = store_with(&server.url(), options("bus-gap")).await;
    let bus = store.invalidation_bus();
    let mut sub = bus.subscribe().await.unwrap();
    assert_eq!(next(&mut sub).await, BusEvent::Connected);

    // CLIENT KILL of the subscriber's connection (a private server: nobody else is on it).
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.admin())
        .unwrap();
    assert_eq!(killed, 1);
    assert_eq!(next(&mut sub).await, BusEvent::Disconnected);
    assert_eq!(next(&mut sub).await, BusEvent::Connected);
    bus.publish(&message(1)).await.unwrap();
    assert_eq!(next(&mut sub).await, BusEvent::Message(message(1)));

    // A restart (everything lost, the connection too).
    server.restart();
    assert_eq!(next(&mut sub).await, BusEvent::Disconnected);
    assert_eq!(next(&mut sub).await, BusEvent::Connected);
    bus.publish(&message(2)).await.unwrap();
    assert_eq!(next(&mut sub).await, BusEvent::Message(message(2)));
}

#[tokio::test]
async fn a_foreign_payload_on_the_channel_is_a_gap_not_a_wrong_message() {
    let Some(url) = common::shared() else { return };
    let store = store_with(&url, options("bus-junk")).await;
    let bus = store.invalidation_bus();
    let mut sub = bus.subscribe().await.unwrap();
    assert_eq!(next(&mut sub).await, BusEvent::Connected);
    let mut con = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let _: i64 =
        redis::cmd("PUBLISH").arg(bus.channel()).arg(b"junk".as_slice()).query(&mut con).unwrap();
    assert_eq!(next(&mut sub).await, BusEvent::Disconnected);
    assert_eq!(next(&mut sub).await, BusEvent::Connected);
}

#[tokio::test]
async fn bus_conformance_suite_passes() {
    let Some(url) = common::shared() else { return };
    let store = store_with(&url, options("bus-conf")).await;
    bus_all(&store.invalidation_bus(), &unique_ns("b")).await.unwrap();
}
