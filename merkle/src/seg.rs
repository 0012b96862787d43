//! [`Seg`]: a segment string kept inline when short, so that scanning a flat bucket does not
//! chase one heap pointer per slot (and a typical id costs no separate allocation).

use std::fmt;

/// Longest segment kept inline (the enum stays 24 bytes, like a `String`).
const INLINE: usize = 22;

/// A segment string: inline up to 22 bytes, on the heap beyond.
#[derive(Clone)]
pub(crate) enum Seg {
    Inline(u8, [u8; INLINE]),
    Heap(Box<str>),
}

impl Seg {
    pub(crate) fn new(s: &str) -> Seg {
        match u8::try_from(s.len()) {
            Ok(n) if s.len() <= INLINE => {
                let mut buf = [0u8; INLINE];
                buf[..s.len()].copy_from_slice(s.as_bytes());
                Seg::Inline(n, buf)
            }
            _ => Seg::Heap(s.into()),
        }
    }

    /// The segment's bytes (UTF-8: they came from a `&str`).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Seg::Inline(n, buf) => buf.get(..usize::from(*n)).unwrap_or_default(),
            Seg::Heap(s) => s.as_bytes(),
        }
    }

    /// The segment.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` by `new`, so always valid; the fallback is never taken.
            Seg::Inline(..) => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Seg::Heap(s) => s,
        }
    }

    /// Bytes this segment holds on the heap.
    pub(crate) fn heap_len(&self) -> usize {
        match self {
            Seg::Inline(..) => 0,
            Seg::Heap(s) => s.len(),
        }
    }
}

impl fmt::Debug for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_segments_round_trip() {
        for s in ["", "a", "i123456", "ünïcødé", &"x".repeat(22), &"y".repeat(23), &"é".repeat(40)]
        {
            let seg = Seg::new(s);
            assert_eq!(seg.as_str(), s);
            assert_eq!(seg.as_bytes(), s.as_bytes());
            assert_eq!(seg.heap_len() == 0, s.len() <= INLINE, "{s}");
        }
        assert_eq!(std::mem::size_of::<Seg>(), 24);
    }
}
