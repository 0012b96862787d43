//! SQLite write-ahead log for sync-engine: absorbs writes while L3 is down.
//!
//! Responsibility: appends durable on return (fsync'd), group commit, ordered drain that removes
//! entries only after the archive committed them, filter snapshots in the same file, and
//! recovery of the valid prefix of a damaged file.
