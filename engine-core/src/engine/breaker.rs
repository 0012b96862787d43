//! A circuit breaker per backend: closed → open after N consecutive failures → half-open after a
//! pause (one probe allowed) → closed on success, open again on failure.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Breaker state as reported by health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the pause ends.
    Open,
    /// One probe call is allowed to test the backend.
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open (metric value).
    pub fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    opened_at: Option<Instant>,
    /// When the current half-open probe was granted (None: no probe out).
    probing: Option<Instant>,
}

/// The breaker. Timing runs on `tokio::time` (paused clocks apply).
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    pause: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker opening after `threshold` consecutive failures for `pause`.
    pub fn new(name: &'static str, threshold: u32, pause: Duration) -> Breaker {
        Breaker {
            name,
            threshold: threshold.max(1),
            pause,
            inner: Mutex::new(Inner { failures: 0, opened_at: None, probing: None }),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let i = self.inner.lock();
        match i.opened_at {
            None => BreakerState::Closed,
            Some(t) if Instant::now() >= t + self.pause => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    /// May a call go through now? In half-open, only one caller at a time gets `true` — until
    /// that probe reports back, or for one pause at most: a probe whose outcome never comes
    /// (its caller dropped, or made no call after all) cannot keep the breaker from closing.
    pub fn allow(&self) -> bool {
        let mut i = self.inner.lock();
        let now = Instant::now();
        match i.opened_at {
            None => true,
            Some(t) if now >= t + self.pause && i.probing.is_none_or(|p| now >= p + self.pause) => {
                i.probing = Some(now);
                true
            }
            Some(_) => false,
        }
    }

    /// The call succeeded: close.
    pub fn success(&self) {
        let mut i = self.inner.lock();
        if i.opened_at.is_some() {
            tracing::info!(backend = self.name, "circuit breaker closed");
        }
        *i = Inner { failures: 0, opened_at: None, probing: None };
        metrics::gauge!("sync_engine_breaker_state", "backend" => self.name).set(0.0);
    }

    /// The call failed: count it; open at the threshold (or re-open after a failed probe).
    pub fn failure(&self) {
        let mut i = self.inner.lock();
        i.failures = i.failures.saturating_add(1);
        i.probing = None;
        if i.failures >= self.threshold || i.opened_at.is_some() {
            if i.opened_at.is_none() {
                tracing::warn!(
                    backend = self.name,
                    failures = i.failures,
                    "circuit breaker opened"
                );
            }
            i.opened_at = Some(Instant::now());
            metrics::gauge!("sync_engine_breaker_state", "backend" => self.name).set(2.0);
        }
    }

    /// Open immediately (backend known down, e.g. a degraded start).
    pub fn trip(&self) {
        let mut i = self.inner.lock();
        i.failures = self.threshold;
        i.opened_at = Some(Instant::now());
        i.probing = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let b = Breaker::new("x", 2, Duration::from_secs(1));
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "one probe");
        assert!(!b.allow(), "only one probe at a time");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.allow(), "a probe that never reported back is replaced after a pause");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "failed probe re-opens");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }
}
