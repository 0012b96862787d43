//! Errors of the filter: inserting past the last level, bad snapshots, superseded warm-ups.

use crate::trust::TrustState;

/// An insert that could not be stored. Nothing was changed: the key is not in the filter, and
/// the engine must treat the filter as untrusted (or rebuild it larger) rather than answer
/// "absent" for this key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// Every level of the chain is saturated and the chain already has its maximum length.
    #[error("cuckoo filter is full: {levels} levels holding {len} fingerprints; rebuild it with a larger capacity")]
    Full {
        /// Levels in the chain.
        levels: usize,
        /// Fingerprints stored.
        len: u64,
    },
}

/// A snapshot that was not imported. No filter is returned, so none can give false negatives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the header (or the sizes it declares) require.
    #[error("cuckoo snapshot truncated: {needed} bytes needed, {found} present")]
    Truncated {
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        found: u64,
    },
    /// More bytes than the header declares.
    #[error("cuckoo snapshot has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Bytes beyond the checksum.
        extra: u64,
    },
    /// The bytes do not start with the snapshot magic.
    #[error("not a cuckoo filter snapshot (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error(
        "cuckoo snapshot format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedVersion {
        /// Version in the snapshot.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The stored checksum does not match the bytes.
    #[error("cuckoo snapshot checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// Checksum in the snapshot.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// A filter parameter differs from this build's (fingerprint width, bucket size, hash).
    #[error("cuckoo snapshot parameter `{field}` is {found}, this build uses {expected}")]
    ParameterMismatch {
        /// Which parameter.
        field: &'static str,
        /// Value in the snapshot.
        found: u64,
        /// Value of this build.
        expected: u64,
    },
    /// The header describes an impossible filter.
    #[error("cuckoo snapshot is malformed: {0}")]
    Malformed(String),
}

/// A warm-up that may not make the filter trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The filter was invalidated, or another warm-up began, after this ticket was issued.
    #[error(
        "warm-up superseded: the filter was invalidated or re-warmed since it began (now {now})"
    )]
    Superseded {
        /// State at the time of the attempt.
        now: TrustState,
    },
}
