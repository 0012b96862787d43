//! The one error type of sync-engine: a kind, a status that tells the caller what to do, the
//! operation and backend it happened in, and the source.

use std::borrow::Cow;
use std::fmt;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Transient: retrying may succeed (a timeout, a dropped connection, backpressure).
    Temporary,
    /// Was temporary and is still failing after retries: divert writes to the WAL.
    Persistent,
    /// Bad input or a broken contract: never retried, returned to the caller.
    Permanent,
}

/// What went wrong.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller's input was rejected (id, payload size, state tag, prefix). Nothing changed.
    InvalidInput,
    /// The configuration is invalid (the message names the field).
    Config,
    /// The backend cannot be reached or refused the connection.
    Unavailable,
    /// The backend did not answer in time.
    Timeout,
    /// Too much is pending: the engine or the WAL refuses more until it catches up.
    Backpressure,
    /// Stored bytes failed a format or checksum check.
    Corrupt,
    /// The backend answered something that breaks its contract.
    Contract,
    /// A capability that is not compiled in or not supported by the backend.
    Unsupported,
    /// The engine is shutting down and accepts no new writes.
    ShuttingDown,
    /// A local I/O failure (file system).
    Io,
}

impl ErrorKind {
    /// The status an error of this kind has unless told otherwise.
    pub fn default_status(self) -> Status {
        match self {
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Backpressure => {
                Status::Temporary
            }
            ErrorKind::InvalidInput
            | ErrorKind::Config
            | ErrorKind::Corrupt
            | ErrorKind::Contract
            | ErrorKind::Unsupported
            | ErrorKind::ShuttingDown
            | ErrorKind::Io => Status::Permanent,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Backpressure => "backpressure",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Contract => "contract violation",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ShuttingDown => "shutting down",
            ErrorKind::Io => "i/o error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with its kind, status, operation, backend and source.
///
/// Messages never contain passwords: backends build them from redacted URLs.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    status: Status,
    operation: Cow<'static, str>,
    backend: Cow<'static, str>,
    message: String,
    source: Option<Source>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with the kind's default status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            status: kind.default_status(),
            operation: Cow::Borrowed(""),
            backend: Cow::Borrowed(""),
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Name the operation (`put_batch`, `get`, `append`, ...).
    pub fn with_operation(mut self, op: impl Into<Cow<'static, str>>) -> Error {
        self.operation = op.into();
        self
    }

    /// Name the backend (`redis`, `postgres`, `wal-sqlite`, `memory`, ...).
    pub fn with_backend(mut self, backend: impl Into<Cow<'static, str>>) -> Error {
        self.backend = backend.into();
        self
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Override the status.
    pub fn with_status(mut self, status: Status) -> Error {
        self.status = status;
        self
    }

    /// Mark a temporary error as still failing after retries.
    pub fn persistent(self) -> Error {
        if self.status == Status::Temporary {
            self.with_status(Status::Persistent)
        } else {
            self
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }
    /// The operation, if named.
    pub fn operation(&self) -> &str {
        &self.operation
    }
    /// The backend, if named.
    pub fn backend(&self) -> &str {
        &self.backend
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// True when retrying (or diverting to the WAL) may help: Temporary or Persistent.
    pub fn is_retryable(&self) -> bool {
        self.status != Status::Permanent
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.operation.is_empty(), self.backend.is_empty()) {
            (false, false) => write!(f, "{} on {}: ", self.operation, self.backend)?,
            (false, true) => write!(f, "{}: ", self.operation)?,
            (true, false) => write!(f, "{}: ", self.backend)?,
            (true, true) => {}
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::id::IdError> for Error {
    fn from(e: crate::id::IdError) -> Error {
        Error::invalid(e.to_string())
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Error {
        Error::new(ErrorKind::Config, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_backend_and_kind() {
        let e = Error::unavailable("connection refused")
            .with_operation("put_batch")
            .with_backend("postgres");
        assert_eq!(e.to_string(), "put_batch on postgres: unavailable: connection refused");
        assert_eq!(e.status(), Status::Temporary);
        assert_eq!(e.persistent().status(), Status::Persistent);
        let bad = Error::invalid("x").persistent();
        assert_eq!(bad.status(), Status::Permanent, "permanent stays permanent");
        assert!(!bad.is_retryable());
    }
}
