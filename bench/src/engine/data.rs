//! The data of the suite: ids of both shapes and 512-byte random payloads, regenerable from the
//! item number alone (so no phase has to keep a million ids in memory to find them again).

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Items per batch: write-behind batches, raw INSERT statements, pipelines, resync batches.
pub const BATCH: usize = 1000;
/// Payload size of every item.
pub const PAYLOAD: usize = 512;
/// Item numbers from here on are never written: absent ids.
const ABSENT_BASE: u64 = 1 << 40;

/// The two id shapes of BENCH.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `t{0..99}.u{0..999}.i{n}`, the tenant and user picked by a hash of `n`.
    Deep,
    /// `items.{n}`: every id a sibling of every other.
    Flat,
}

/// splitmix64: a fixed, well-mixed hash of the item number.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Shape {
    /// The name used in figure names.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Deep => "deep",
            Shape::Flat => "flat",
        }
    }

    /// The id of item `n`.
    pub fn id(self, n: u64) -> String {
        match self {
            Shape::Deep => {
                let h = mix(n);
                format!("t{}.u{}.i{n}", h % 100, (h / 100) % 1000)
            }
            Shape::Flat => format!("items.{n}"),
        }
    }

    /// The `k`-th id of this shape that the suite never writes.
    pub fn absent_id(self, k: u64) -> String {
        self.id(ABSENT_BASE + k)
    }
}

/// Items `start .. start + len` of one shape: ids and fresh random payloads (every payload its
/// own allocation, so that memory figures are not flattered by shared buffers). The same
/// `(seed, start)` gives the same payloads.
pub fn items(shape: Shape, seed: u64, start: u64, len: usize) -> Vec<(String, Bytes)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ mix(start));
    (0..len as u64)
        .map(|k| {
            let mut payload = vec![0u8; PAYLOAD];
            rng.fill(&mut payload[..]);
            (shape.id(start + k), Bytes::from(payload))
        })
        .collect()
}

/// `count` item numbers spread evenly over `0..n` (every `n / count`-th, from an offset).
pub fn spread(n: u64, count: u64, offset: u64) -> Vec<u64> {
    let count = count.min(n).max(1);
    let step = (n / count).max(1);
    (0..count).map(|k| (offset % step) + k * step).filter(|&x| x < n).collect()
}

/// A seeded shuffle.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_regenerable() {
        for shape in [Shape::Deep, Shape::Flat] {
            let a = items(shape, 1, 5000, 10);
            let b = items(shape, 1, 5000, 10);
            assert_eq!(a, b);
            for (id, p) in &a {
                assert!(sync_engine_core::ObjectId::new(id).is_ok(), "{id}");
                assert_eq!(p.len(), PAYLOAD);
            }
            assert_ne!(shape.absent_id(3), shape.id(3));
        }
        assert!(Shape::Deep.id(7).starts_with('t'));
        assert_eq!(Shape::Flat.id(7), "items.7");
    }

    #[test]
    fn spread_is_even_and_in_range() {
        let s = spread(1000, 10, 3);
        assert_eq!(s, vec![3, 103, 203, 303, 403, 503, 603, 703, 803, 903]);
        assert_eq!(spread(5, 10, 0).len(), 5);
    }
}
