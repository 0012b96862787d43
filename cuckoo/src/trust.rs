//! The trust state the engine consults before answering "absent" from the filter.
//!
//! `Untrusted → Warming → Trusted`, and back to `Untrusted` from anywhere. "Absent" may be
//! answered only while `Trusted`. A warm-up (rebuild scan, or restoring a snapshot and checking
//! its Merkle root) holds a [`WarmingTicket`]; finishing it succeeds only if nothing invalidated
//! the filter or began another warm-up since the ticket was issued, so a message missed during a
//! long rebuild can never be followed by a stale "trusted".

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::TrustError;

/// Whether the filter's "absent" answers may be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustState {
    /// The filter may miss ids (fresh, cleared, or a message may have been missed): every lookup
    /// must go to the backends.
    Untrusted,
    /// A rebuild or restore is in progress; still not to be believed.
    Warming,
    /// The filter holds every present id: "absent" is authoritative.
    Trusted,
}

impl TrustState {
    fn from_bits(bits: u64) -> TrustState {
        match bits & STATE_MASK {
            WARMING => TrustState::Warming,
            TRUSTED => TrustState::Trusted,
            _ => TrustState::Untrusted,
        }
    }
}

impl fmt::Display for TrustState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrustState::Untrusted => "untrusted",
            TrustState::Warming => "warming",
            TrustState::Trusted => "trusted",
        })
    }
}

const UNTRUSTED: u64 = 0;
const WARMING: u64 = 1;
const TRUSTED: u64 = 2;
const STATE_MASK: u64 = 3;
const EPOCH_ONE: u64 = 4;

/// Proof that a warm-up began at a given epoch; hand it back to [`Trust::finish_warming`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a warm-up only makes the filter trusted when its ticket is finished"]
pub struct WarmingTicket {
    word: u64,
}

/// Trust state in one atomic word: the state in the low two bits, an epoch above them that every
/// `begin_warming` and `invalidate` advances.
#[derive(Debug)]
pub struct Trust {
    word: AtomicU64,
}

impl Default for Trust {
    fn default() -> Self {
        Trust::new()
    }
}

impl Trust {
    /// A new state: `Untrusted`.
    pub fn new() -> Trust {
        Trust { word: AtomicU64::new(UNTRUSTED) }
    }

    /// The current state.
    pub fn state(&self) -> TrustState {
        TrustState::from_bits(self.word.load(Ordering::Acquire))
    }

    /// True only in `Trusted`: the one state in which "absent" may be answered.
    #[inline]
    pub fn is_trusted(&self) -> bool {
        self.word.load(Ordering::Acquire) & STATE_MASK == TRUSTED
    }

    /// Enter `Warming` (from any state) and return the ticket that may later make it `Trusted`.
    /// Any earlier ticket is superseded.
    pub fn begin_warming(&self) -> WarmingTicket {
        let next = |w: u64| (w & !STATE_MASK).wrapping_add(EPOCH_ONE) | WARMING;
        let prev = self
            .word
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| Some(next(w)))
            .unwrap_or_else(|w| w);
        WarmingTicket { word: next(prev) }
    }

    /// `Warming → Trusted`, only if no `invalidate` or `begin_warming` happened since `ticket`
    /// was issued. Call it after every id present at the warm-up's start has been inserted (and,
    /// for a snapshot, after its Merkle root matched the archive's).
    pub fn finish_warming(&self, ticket: WarmingTicket) -> Result<(), TrustError> {
        let trusted = (ticket.word & !STATE_MASK) | TRUSTED;
        self.word
            .compare_exchange(ticket.word, trusted, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(|now| TrustError::Superseded { now: TrustState::from_bits(now) })
    }

    /// Back to `Untrusted` (from any state), superseding any warm-up in progress. Call it when an
    /// invalidation message may have been missed, or before emptying or replacing the contents.
    pub fn invalidate(&self) {
        let _ = self.word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            Some((w & !STATE_MASK).wrapping_add(EPOCH_ONE) | UNTRUSTED)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_untrusted_and_warms_to_trusted() {
        let t = Trust::new();
        assert_eq!(t.state(), TrustState::Untrusted);
        assert!(!t.is_trusted());
        let ticket = t.begin_warming();
        assert_eq!(t.state(), TrustState::Warming);
        assert!(!t.is_trusted());
        t.finish_warming(ticket).unwrap();
        assert_eq!(t.state(), TrustState::Trusted);
        assert!(t.is_trusted());
        t.invalidate();
        assert_eq!(t.state(), TrustState::Untrusted);
    }

    #[test]
    fn invalidation_during_warm_up_blocks_trust() {
        let t = Trust::new();
        let ticket = t.begin_warming();
        t.invalidate();
        assert_eq!(
            t.finish_warming(ticket),
            Err(TrustError::Superseded { now: TrustState::Untrusted })
        );
        assert!(!t.is_trusted());
    }

    #[test]
    fn an_older_warm_up_cannot_finish_after_a_newer_one_began() {
        let t = Trust::new();
        let old = t.begin_warming();
        t.invalidate();
        let new = t.begin_warming();
        // Same state (Warming) as when `old` was issued, but a different epoch.
        assert_eq!(t.finish_warming(old), Err(TrustError::Superseded { now: TrustState::Warming }));
        t.finish_warming(new).unwrap();
        assert!(t.is_trusted());
    }
}
