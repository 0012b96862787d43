//! Property tests of the filter's promises: no false negative for any sequence of inserts,
//! rule-abiding removals, exports and imports; growth instead of dropping; FPR near theory.

use std::collections::HashMap;

use proptest::prelude::*;
use sync_engine_cuckoo::{CuckooFilter, InsertError, Removal};

fn id(n: u32) -> Vec<u8> {
    format!("t{}.u{}.i{}", n % 100, (n / 100) % 1000, n).into_bytes()
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32),
    Remove(u32),
    Roundtrip,
    InsertMany(Vec<u32>),
}

fn op(universe: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..universe).prop_map(Op::Insert),
        3 => (0..universe).prop_map(Op::Remove),
        1 => Just(Op::Roundtrip),
        1 => prop::collection::vec(0..universe, 0..40).prop_map(Op::InsertMany),
    ]
}

/// Every key the model holds at least once must be reported present.
fn assert_no_false_negative(f: &CuckooFilter, model: &HashMap<u32, u32>) {
    for (&k, &c) in model {
        if c > 0 {
            assert!(f.contains(&id(k)), "false negative for {k} (inserted {c} times net)");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The engine's rule: remove only what it inserted. Tiny initial capacities force cuckoo
    /// moves, saturation and a chain of levels.
    #[test]
    fn no_false_negative_under_any_sequence(
        capacity in 1usize..64,
        universe in 8u32..400,
        ops in prop::collection::vec(op(400), 1..400),
    ) {
        let mut f = CuckooFilter::with_capacity(capacity);
        let mut model: HashMap<u32, u32> = HashMap::new();
        let mut stored: u64 = 0;
        for op in ops {
            match op {
                Op::Insert(k) => {
                    let k = k % universe;
                    f.insert(&id(k)).unwrap();
                    *model.entry(k).or_default() += 1;
                    stored += 1;
                }
                Op::InsertMany(ks) => {
                    let ks: Vec<u32> = ks.into_iter().map(|k| k % universe).collect();
                    let n = f.insert_many(ks.iter().map(|&k| id(k))).unwrap();
                    prop_assert_eq!(n, ks.len());
                    for k in ks {
                        *model.entry(k).or_default() += 1;
                    }
                    stored += n as u64;
                }
                Op::Remove(k) => {
                    let k = k % universe;
                    let count = model.entry(k).or_default();
                    if *count == 0 {
                        continue; // the rule: never remove what was not inserted
                    }
                    *count -= 1;
                    match f.remove(&id(k)) {
                        Removal::Removed => stored -= 1,
                        Removal::Ambiguous => {}
                        Removal::NotFound => prop_assert!(false, "inserted key {} not found", k),
                    }
                }
                Op::Roundtrip => {
                    let bytes = f.export();
                    let g = CuckooFilter::import(&bytes).unwrap();
                    prop_assert_eq!(g.export(), bytes, "export(import(x)) == x");
                    prop_assert_eq!(g.len(), f.len());
                    f = g;
                }
            }
            prop_assert_eq!(f.len(), stored);
            assert_no_false_negative(&f, &model);
        }
        prop_assert!(f.load_factor() <= 1.0);
    }

    /// Two keys with equal fingerprints in one bucket pair: removing one leaves the other.
    #[test]
    fn removing_a_colliding_key_keeps_the_other(seed in 0u32..1_000_000) {
        // One bucket of 4 slots: every key shares the bucket pair, so equal fingerprints
        // collide. Find two ids with the same fingerprint (birthday bound: a few hundred ids).
        let fp = |k: &[u8]| ((sync_engine_cuckoo::key_hash(k) & 0xFFFF_FFFF) * 4095) >> 32;
        let mut seen = HashMap::new();
        let (a, b) = (seed..).find_map(|n| {
            let key = id(n);
            seen.insert(fp(&key), n).map(|m| (id(m), key))
        }).unwrap();
        let f = CuckooFilter::with_capacity(1);
        f.insert(&a).unwrap();
        f.insert(&b).unwrap();
        prop_assert_eq!(f.level_count(), 1);
        prop_assert_eq!(f.remove(&a), Removal::Removed);
        prop_assert!(f.contains(&b), "removing a colliding key removed the other");
        prop_assert_eq!(f.remove(&b), Removal::Removed);
        prop_assert!(f.is_empty());
    }
}

/// A key whose fingerprint matches in an older level as well as its own is not removed: the
/// older level's copy may belong to another present key.
#[test]
fn ambiguous_removal_across_levels_keeps_the_other_key() {
    let fp = |k: &[u8]| ((sync_engine_cuckoo::key_hash(k) & 0xFFFF_FFFF) * 4095) >> 32;
    let mut seen = HashMap::new();
    let (b, a) = (0u32..)
        .find_map(|n| {
            let key = id(n);
            seen.insert(fp(&key), n).map(|m| (id(m), key))
        })
        .unwrap();
    // Level 0 has one bucket (4 slots): B and three fillers saturate it, so A lands in level 1.
    let f = CuckooFilter::with_capacity(1);
    f.insert(&b).unwrap();
    for n in 0..3 {
        f.insert(format!("filler.{n}").as_bytes()).unwrap();
    }
    assert_eq!(f.level_count(), 1);
    f.insert(&a).unwrap();
    assert_eq!(f.level_count(), 2, "A must have gone to a new level");
    assert_eq!(f.remove(&a), Removal::Ambiguous);
    assert!(f.contains(&b), "B must survive A's removal");
    assert_eq!(f.ambiguous_removals(), 1);
    assert_eq!(f.len(), 5, "nothing was removed");
}

#[test]
fn inserting_far_past_capacity_grows_and_drops_nothing() {
    let f = CuckooFilter::with_capacity(10);
    let n = 50_000u32;
    f.insert_many((0..n).map(id)).unwrap();
    assert_eq!(f.len(), u64::from(n));
    assert!(f.level_count() > 1, "the chain must have grown");
    for k in 0..n {
        assert!(f.contains(&id(k)), "dropped {k}");
    }
    assert!(f.load_factor() > 0.4, "growth doubles, so fill stays reasonable: {}", f.load_factor());
}

#[test]
fn removing_what_was_never_inserted_is_reported() {
    let f = CuckooFilter::with_capacity(1000);
    f.insert(b"present").unwrap();
    assert_eq!(f.remove(b"never-inserted"), Removal::NotFound);
    assert_eq!(f.len(), 1);
}

#[test]
fn duplicate_inserts_need_as_many_removals() {
    let f = CuckooFilter::with_capacity(1000);
    f.insert(b"a.b.c").unwrap();
    f.insert(b"a.b.c").unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f.remove(b"a.b.c"), Removal::Removed);
    assert!(f.contains(b"a.b.c"), "one re-write insert still stands");
    assert_eq!(f.remove(b"a.b.c"), Removal::Removed);
    assert_eq!(f.remove(b"a.b.c"), Removal::NotFound);
}

/// Measured false-positive rate of `probes` absent ids against the filter's own theory.
fn measured_fpr(f: &CuckooFilter, first_absent: u32, probes: u32) -> f64 {
    let hits = (first_absent..first_absent + probes).filter(|&n| f.contains(&id(n))).count();
    hits as f64 / f64::from(probes)
}

#[test]
fn false_positive_rate_is_within_one_and_a_half_of_theory() {
    let n = 100_000u32;
    let f = CuckooFilter::with_capacity(n as usize);
    f.insert_many((0..n).map(id)).unwrap();
    assert_eq!(f.level_count(), 1);
    let theory = f.expected_fpr();
    assert!(theory < 0.002, "theory {theory} at fill {}", f.load_factor());
    let measured = measured_fpr(&f, n, 1_000_000);
    let ratio = measured / theory;
    assert!((1.0 / 1.5..=1.5).contains(&ratio), "measured {measured}, theory {theory}");
    assert!(f.bits_per_item() <= 14.0, "{} bits per item", f.bits_per_item());
}

#[test]
fn chained_false_positive_rate_follows_the_sum_over_levels() {
    let n = 60_000u32;
    let f = CuckooFilter::with_capacity(5_000);
    f.insert_many((0..n).map(id)).unwrap();
    assert!(f.level_count() >= 3);
    let theory = f.expected_fpr();
    let measured = measured_fpr(&f, n, 400_000);
    let ratio = measured / theory;
    assert!((1.0 / 1.5..=1.5).contains(&ratio), "measured {measured}, theory {theory}");
}

#[test]
fn clear_empties_and_untrusts() {
    let f = CuckooFilter::with_capacity(100);
    f.insert(b"x").unwrap();
    let t = f.trust().begin_warming();
    f.trust().finish_warming(t).unwrap();
    f.clear();
    assert!(f.is_empty());
    assert!(!f.contains(b"x"));
    assert!(!f.trust().is_trusted());
    f.insert(b"x").unwrap();
    assert!(f.contains(b"x"));
}

#[test]
fn definitely_absent_only_when_trusted() {
    let f = CuckooFilter::with_capacity(1000);
    f.insert(b"present").unwrap();
    let absent = (0u32..).map(id).find(|k| !f.contains(k)).unwrap();
    assert!(!f.definitely_absent(&absent), "untrusted: never absent");
    let ticket = f.trust().begin_warming();
    assert!(!f.definitely_absent(&absent), "warming: never absent");
    f.trust().finish_warming(ticket).unwrap();
    assert!(f.definitely_absent(&absent));
    assert!(!f.definitely_absent(b"present"));
    f.trust().invalidate();
    assert!(!f.definitely_absent(&absent));
    // An imported filter starts untrusted whatever the exporter's state was.
    let g = CuckooFilter::import(&f.export()).unwrap();
    assert!(!g.definitely_absent(&absent));
}

#[test]
fn insert_error_names_the_limit() {
    let e = InsertError::Full { levels: 32, len: 7 };
    assert!(e.to_string().contains("32 levels"));
}
