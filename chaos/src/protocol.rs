//! The line protocol between `chaos-node` (stdout, one line per event, flushed at once) and the
//! harness. Every line is `<word> key=value ...`; a `msg=` field, when present, is last and
//! runs to the end of the line. Ids never contain whitespace (the engine refuses it), so
//! `id=<id>` is unambiguous.
//!
//! | line | meaning |
//! |---|---|
//! | `ready ms=<startup ms> state=<state>` | `connect` returned; the engine serves |
//! | `fatal kind=<error kind> msg=<error>` | start failed (the process then exits with 3) |
//! | `try w=<w> n=<n> id=<id> op=<put\|del>` | printed before an operation is submitted |
//! | `ack w=<w> n=<n> v=<version>` | the durable operation returned Ok: it is acknowledged |
//! | `fail w=<w> n=<n> kind=<kind> msg=<error>` | the operation returned an error (not acknowledged) |
//! | `health t=<ms> state= wal= l3= l2= unflushed= acks= fails= reads= readfail= readerr=` | periodic |
//! | `repair t=<ms> trigger=<auto\|manual> in_sync= differing= repaired= removed= skipped= ms=` | a repair report appeared |
//! | `readerr id=<id> msg=<why>` | a read returned something an acknowledged write rules out |
//! | `stopped wal=<depth>` | graceful stop finished (`shutdown()` returned) |

use std::collections::HashMap;

use crate::workload::Kind;

/// A parsed line of `chaos-node` output.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// The engine started.
    Ready {
        /// Startup time in milliseconds.
        ms: f64,
        /// Engine state after start.
        state: String,
    },
    /// The engine failed to start.
    Fatal {
        /// Error kind (`Debug` of `ErrorKind`).
        kind: String,
        /// Error message.
        msg: String,
    },
    /// An operation is about to be submitted.
    Try {
        /// Worker.
        w: u32,
        /// Sequence number.
        n: u64,
        /// The id.
        id: String,
        /// Put or delete.
        op: Kind,
    },
    /// An operation was acknowledged at `v`.
    Ack {
        /// Worker.
        w: u32,
        /// Sequence number.
        n: u64,
        /// The version the engine gave it.
        v: u64,
    },
    /// An operation returned an error.
    Fail {
        /// Worker.
        w: u32,
        /// Sequence number.
        n: u64,
        /// Error kind.
        kind: String,
        /// Message.
        msg: String,
    },
    /// Periodic health.
    Health(Fields),
    /// A new repair report.
    Repair(Fields),
    /// A wrong read.
    ReadErr {
        /// The id read.
        id: String,
        /// Why it is wrong.
        msg: String,
    },
    /// Graceful stop finished.
    Stopped(Fields),
    /// Anything else (kept for diagnostics).
    Other(String),
}

/// The `key=value` fields of a line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub HashMap<String, String>);

impl Fields {
    /// A field as text.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A numeric field (0 when absent or unparsable).
    pub fn num(&self, key: &str) -> f64 {
        self.str(key).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    /// An integer field (0 when absent or unparsable).
    pub fn int(&self, key: &str) -> u64 {
        self.str(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

fn fields(rest: &str) -> Fields {
    let mut map = HashMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        if let Some(msg) = rest.strip_prefix("msg=") {
            map.insert("msg".to_owned(), msg.to_owned());
            break;
        }
        let (token, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if let Some((k, v)) = token.split_once('=') {
            map.insert(k.to_owned(), v.to_owned());
        }
        rest = tail.trim_start();
    }
    Fields(map)
}

/// Parse one output line. Unknown or malformed lines become [`Line::Other`].
pub fn parse(line: &str) -> Line {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let f = fields(rest);
    let other = || Line::Other(line.to_owned());
    let s = |k: &str| f.str(k).map(str::to_owned);
    let u = |k: &str| f.str(k).and_then(|v| v.parse::<u64>().ok());
    let w = || f.str("w").and_then(|v| v.parse::<u32>().ok());
    match word {
        "ready" => Line::Ready { ms: f.num("ms"), state: s("state").unwrap_or_default() },
        "fatal" => {
            Line::Fatal { kind: s("kind").unwrap_or_default(), msg: s("msg").unwrap_or_default() }
        }
        "try" => match (w(), u("n"), s("id"), f.str("op").and_then(Kind::parse)) {
            (Some(w), Some(n), Some(id), Some(op)) => Line::Try { w, n, id, op },
            _ => other(),
        },
        "ack" => match (w(), u("n"), u("v")) {
            (Some(w), Some(n), Some(v)) => Line::Ack { w, n, v },
            _ => other(),
        },
        "fail" => match (w(), u("n")) {
            (Some(w), Some(n)) => Line::Fail {
                w,
                n,
                kind: s("kind").unwrap_or_default(),
                msg: s("msg").unwrap_or_default(),
            },
            _ => other(),
        },
        "health" => Line::Health(f),
        "repair" => Line::Repair(f),
        "readerr" => {
            Line::ReadErr { id: s("id").unwrap_or_default(), msg: s("msg").unwrap_or_default() }
        }
        "stopped" => Line::Stopped(f),
        _ => other(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        assert_eq!(
            parse("try w=2 n=15 id=c.a.t1.i3 op=del"),
            Line::Try { w: 2, n: 15, id: "c.a.t1.i3".into(), op: Kind::Del }
        );
        assert_eq!(parse("ack w=2 n=15 v=123456"), Line::Ack { w: 2, n: 15, v: 123456 });
        match parse("fail w=1 n=2 kind=Unavailable msg=L3 down: a = b") {
            Line::Fail { kind, msg, .. } => {
                assert_eq!(kind, "Unavailable");
                assert_eq!(msg, "L3 down: a = b");
            }
            other => panic!("{other:?}"),
        }
        match parse("health t=100 wal=7 l3=Open") {
            Line::Health(f) => {
                assert_eq!(f.int("wal"), 7);
                assert_eq!(f.str("l3"), Some("Open"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("ack w=x n=1 v=2"), Line::Other(_)));
    }
}
