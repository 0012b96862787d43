//! Hybrid logical clock: versions for writes whose caller did not choose one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the counter below the milliseconds.
const COUNTER_BITS: u32 = 16;

/// A hybrid logical clock: `version = unix_ms << 16 | counter`. Every call returns a value
/// greater than every value returned before and every value [`observe`](Hlc::observe)d, so later
/// writes from one engine always win, and writes from different engines order by time.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// The next version.
    pub fn next(&self) -> u64 {
        let wall = crate::now_ms() << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last.saturating_add(1));
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// Move the clock past a version seen elsewhere (a caller-chosen version, a stored item).
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_past_observed() {
        let c = Hlc::default();
        let a = c.next();
        let b = c.next();
        assert!(b > a);
        c.observe(u64::MAX / 2);
        assert!(c.next() > u64::MAX / 2);
        assert!(a >> COUNTER_BITS > 1_600_000_000_000, "milliseconds in the high bits");
    }
}
