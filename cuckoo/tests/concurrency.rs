//! Readers racing a writer that forces cuckoo moves: a present key is never reported absent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use sync_engine_cuckoo::{CuckooFilter, Removal};

fn id(n: u32) -> Vec<u8> {
    format!("t{}.u{}.i{}", n % 100, (n / 100) % 1000, n).into_bytes()
}

#[test]
fn readers_never_miss_a_present_key_while_a_writer_moves_fingerprints() {
    // 2,000 buckets; 7,000 stable keys fill it to ~88 %, and the churn pushes it to ~97 %, where
    // most inserts need multi-step cuckoo paths that move the stable keys' fingerprints.
    let filter = Arc::new(CuckooFilter::with_capacity(7_600));
    let stable = 7_000u32;
    filter.insert_many((0..stable).map(id)).unwrap();
    let levels_before = filter.level_count();
    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (filter, done, checks) = (filter.clone(), done.clone(), checks.clone());
            let keys: Vec<Vec<u8>> = (0..stable).map(id).collect();
            thread::spawn(move || {
                let mut misses = Vec::new();
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for (i, k) in keys.iter().enumerate().skip(r) {
                        if !filter.contains(k) {
                            misses.push(i);
                        }
                        n += 1;
                    }
                }
                checks.fetch_add(n, Ordering::Relaxed);
                misses
            })
        })
        .collect();

    // Churn: insert a window of extra keys, then remove the oldest ones, many times over.
    let writer = {
        let filter = filter.clone();
        thread::spawn(move || {
            let window = 360u32;
            for round in 0..40u32 {
                let base = 1_000_000 + round * window;
                filter.insert_many((base..base + window).map(id)).unwrap();
                if round > 0 {
                    let old = base - window;
                    for k in old..old + window {
                        assert_ne!(filter.remove(&id(k)), Removal::NotFound);
                    }
                }
            }
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Relaxed);
    for r in readers {
        let misses = r.join().unwrap();
        assert!(
            misses.is_empty(),
            "false negatives under concurrent moves: {:?}",
            &misses[..misses.len().min(10)]
        );
    }
    assert!(checks.load(Ordering::Relaxed) > u64::from(stable), "the readers ran");
    assert_eq!(filter.level_count(), levels_before, "churn stayed within the first level");
    for k in 0..stable {
        assert!(filter.contains(&id(k)));
    }
}

#[test]
fn concurrent_writers_lose_nothing() {
    let filter = Arc::new(CuckooFilter::with_capacity(10_000));
    let writers: Vec<_> = (0..4u32)
        .map(|t| {
            let filter = filter.clone();
            thread::spawn(move || {
                for k in (t * 10_000)..(t * 10_000 + 10_000) {
                    filter.insert(&id(k)).unwrap();
                }
                // Remove every other one of this thread's ids again.
                for k in ((t * 10_000)..(t * 10_000 + 10_000)).step_by(2) {
                    assert_ne!(filter.remove(&id(k)), Removal::NotFound);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // 40,000 inserted into a filter sized for 10,000: the chain grew under concurrent writers.
    assert!(filter.level_count() > 1);
    assert!(filter.len() >= 20_000 && filter.len() <= 20_000 + filter.ambiguous_removals());
    for k in (0..40_000u32).filter(|k| k % 2 == 1) {
        assert!(filter.contains(&id(k)), "lost {k}");
    }
}
