//! Backpressure: from the memory held by acknowledged-but-not-in-L3 writes (the overlay) and
//! the WAL depth, a level: accept, throttle, reject.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;
use crate::{Error, ErrorKind};

/// How the engine treats new writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Writes are accepted at once.
    Accept,
    /// Writes are slowed down (each waits briefly) so flushing can catch up.
    Throttle,
    /// Writes are refused with a `Backpressure` error until the backlog shrinks.
    Reject,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Accept => "accept",
            Level::Throttle => "throttle",
            Level::Reject => "reject",
        })
    }
}

/// The level, the most loaded resource, and its fill ratio.
pub fn assess(inner: &Inner) -> (Level, &'static str, f64) {
    let cfg = inner.cfg();
    let (_, overlay_bytes) = inner.overlay.size();
    let memory = overlay_bytes as f64 / cfg.l1_max_bytes.max(1) as f64;
    let wal = inner.wal_depth.load(Ordering::Relaxed) as f64 / cfg.wal_max_items.max(1) as f64;
    let (resource, ratio) = if memory >= wal {
        ("unflushed bytes vs l1_max_bytes", memory)
    } else {
        ("WAL depth vs wal_max_items", wal)
    };
    let level = if ratio >= cfg.backpressure_reject_ratio {
        Level::Reject
    } else if ratio >= cfg.backpressure_throttle_ratio {
        Level::Throttle
    } else {
        Level::Accept
    };
    (level, resource, ratio)
}

/// Apply the current level to one write: return at once, wait, or refuse.
pub async fn admit(inner: &Inner) -> crate::Result<()> {
    let (level, resource, ratio) = assess(inner);
    match level {
        Level::Accept => Ok(()),
        Level::Throttle => {
            metrics::counter!("sync_engine_backpressure_total", "level" => "throttle").increment(1);
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
        Level::Reject => {
            metrics::counter!("sync_engine_backpressure_total", "level" => "reject").increment(1);
            Err(Error::new(
                ErrorKind::Backpressure,
                format!(
                    "level reject: {resource} at {:.0}% — retry after the backlog drains",
                    ratio * 100.0
                ),
            )
            .with_operation("submit"))
        }
    }
}
