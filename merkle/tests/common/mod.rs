//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use proptest::prelude::*;
use sync_engine_merkle::{leaf_digest, Digest};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Run a future to completion on this thread.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// The digest an item `id` at `version` has.
pub fn digest(id: &str, version: u64) -> Digest {
    leaf_digest(id, version, false, &[7; 32])
}

/// Ids that are often prefixes of one another (`a`, `a.b`, `a.b.a`), dotless ones, and many
/// siblings under `w` (so that small bucket capacities split several levels deep), and long
/// segments.
pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "ab", "x"]), 1..=4)
            .prop_map(|s| s.join(".")),
        2 => (0u32..300).prop_map(|n| format!("w.{n}")),
        1 => (0u32..40, 0u32..5).prop_map(|(n, m)| format!("t{m}.u{n}")),
        // Segments longer than the tree keeps inline.
        1 => (0u32..30).prop_map(|n| format!("a.{}{n}", "long-segment-".repeat(2))),
    ]
}

/// A set of items: id -> version.
pub fn items(max: usize) -> impl Strategy<Value = BTreeMap<String, u64>> {
    prop::collection::btree_map(id(), 0u64..4, 0..max)
}

/// Items as (id, digest).
pub fn digests(items: &BTreeMap<String, u64>) -> BTreeMap<String, Digest> {
    items.iter().map(|(id, v)| (id.clone(), digest(id, *v))).collect()
}
