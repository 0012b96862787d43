//! Mapping of redis-crate errors onto the engine's [`Error`]: what the caller should do.
//!
//! | redis error | kind | status |
//! |---|---|---|
//! | I/O timeout, or our own deadline | Timeout | Temporary |
//! | I/O (refused, reset, dropped), LOADING, BUSY, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, MOVED/ASK, OOM, auth | Unavailable | Temporary |
//! | `CORRUPT` (raised by our scripts before writing anything) | Corrupt | Permanent |
//! | anything else (WRONGTYPE on our keys, unexpected replies) | Contract | Permanent |

use redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};
use sync_engine_core::{Error, ErrorKind};

/// Backend name in errors, logs and metrics.
pub(crate) const BACKEND: &str = "redis";

/// Map a redis error raised during `operation`.
pub(crate) fn map(e: RedisError, operation: &'static str) -> Error {
    let kind = classify(&e);
    let message = match kind {
        ErrorKind::Timeout => "no reply within the response timeout".to_owned(),
        ErrorKind::Unavailable => "Redis is unreachable or not accepting commands".to_owned(),
        ErrorKind::Corrupt => {
            e.detail().unwrap_or("stored data is not in this store's format").to_owned()
        }
        _ => "unexpected reply from Redis".to_owned(),
    };
    Error::new(kind, message).with_operation(operation).with_backend(BACKEND).with_source(e)
}

fn classify(e: &RedisError) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    if e.code() == Some("CORRUPT") {
        return ErrorKind::Corrupt;
    }
    if matches!(e.code(), Some("OOM" | "BUSY" | "LOADING" | "NOAUTH" | "WRONGPASS")) {
        return ErrorKind::Unavailable;
    }
    match e.kind() {
        RedisKind::Io
        | RedisKind::AuthenticationFailed
        | RedisKind::ClusterConnectionNotFound
        | RedisKind::Parse => ErrorKind::Unavailable,
        RedisKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => ErrorKind::Unavailable,
        _ => ErrorKind::Contract,
    }
}

/// Our own deadline ran out (connection plus reply) before the driver gave up.
pub(crate) fn deadline(operation: &'static str, after: std::time::Duration) -> Error {
    Error::new(ErrorKind::Timeout, format!("no answer within {} ms", after.as_millis()))
        .with_operation(operation)
        .with_backend(BACKEND)
}

/// A reply that does not have the shape this crate's scripts return.
pub(crate) fn contract(operation: &'static str, what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Contract, what).with_operation(operation).with_backend(BACKEND)
}

/// True when one immediate retry may succeed: the connection dropped (the connection manager
/// reconnects behind it). Timeouts are not retried, so every call stays bounded.
pub(crate) fn retry_once(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_unrecoverable_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_what_the_caller_should_do() {
        let io: RedisError = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "x").into();
        let e = map(io, "get");
        assert_eq!(
            (e.kind(), e.status()),
            (ErrorKind::Unavailable, sync_engine_core::Status::Temporary)
        );
        assert_eq!(e.operation(), "get");
        assert_eq!(e.backend(), "redis");
        let t: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "x").into();
        assert_eq!(map(t, "get").kind(), ErrorKind::Timeout);
        let wrong: RedisError = (redis::ErrorKind::UnexpectedReturnType, "bad").into();
        assert_eq!(map(wrong, "get").status(), sync_engine_core::Status::Permanent);
    }
}
