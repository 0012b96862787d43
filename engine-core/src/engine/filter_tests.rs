use proptest::prelude::*;
use sync_engine_cuckoo::CuckooFilter;

use super::{FilterPair, FilterSnapshotError};

fn trusted(capacity: usize, ids: &[String]) -> FilterPair {
    let f = FilterPair::with_capacity(capacity);
    for id in ids {
        f.insert(id.as_bytes()).unwrap();
    }
    let ticket = f.trust().begin_warming();
    f.trust().finish_warming(ticket).unwrap();
    f
}

proptest! {
    /// No inserted id is ever answered "absent", whatever the ids and however full the filter.
    #[test]
    fn inserted_ids_are_never_absent(ids in prop::collection::vec("[a-z0-9.:{}*]{1,40}", 1..400),
                                     capacity in 1usize..500) {
        let f = trusted(capacity, &ids);
        for id in &ids {
            prop_assert!(!f.definitely_absent(id.as_bytes()), "{id} answered absent");
        }
        let back = FilterPair::import(&f.export()).unwrap();
        for id in &ids {
            prop_assert!(back.contains(id.as_bytes()), "{id} lost by the snapshot");
        }
    }
}

/// At working fill the pair's false positives are the product of two independent filters': the
/// main filter alone lets hundreds of 200,000 absent ids through, the pair almost none.
#[test]
fn the_pair_cuts_false_positives_to_about_the_square() {
    let ids: Vec<String> =
        (0..50_000).map(|i| format!("t{}.u{}.i{i}", i % 100, i % 1000)).collect();
    let f = trusted(ids.len(), &ids);
    let main = CuckooFilter::with_capacity(ids.len());
    for id in &ids {
        main.insert(id.as_bytes()).unwrap();
    }
    let probes: Vec<String> = (0..200_000).map(|i| format!("absent.{i}")).collect();
    let single = probes.iter().filter(|p| main.contains(p.as_bytes())).count();
    let pair = probes.iter().filter(|p| !f.definitely_absent(p.as_bytes())).count();
    assert!(single >= 50, "the main filter alone should show its ~0.2% rate, saw {single}");
    assert!(pair <= 2, "pair false positives {pair} (single filter: {single})");
}

#[test]
fn snapshots_of_another_shape_are_refused() {
    let f = trusted(100, &["a".to_owned(), "b".to_owned()]);
    let single = CuckooFilter::with_capacity(100).export();
    assert!(matches!(FilterPair::import(&single), Err(FilterSnapshotError::Header)));
    let bytes = f.export();
    for cut in [0, 7, 8, 15, 16, bytes.len() / 2, bytes.len() - 1] {
        assert!(FilterPair::import(&bytes[..cut]).is_err(), "a blob cut at {cut} was accepted");
    }
    let mut garbled = bytes.clone();
    garbled[8] ^= 0xff;
    assert!(FilterPair::import(&garbled).is_err());
    assert!(FilterPair::import(&bytes).is_ok());
}
