//! One error type for every backend: a kind that says what the caller can
//! do about it, the operation, the path, and the underlying message.

use std::fmt;
use std::io;
use thiserror::Error;

/// What went wrong, as far as a caller deciding to retry or report cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The path does not exist (or vanished).
    NotFound,
    /// The storage refused access.
    PermissionDenied,
    /// Throttled by the storage; retry later.
    RateLimited,
    /// A passing fault (timeout, connection reset, EINTR/EAGAIN); retry.
    Temporary,
    /// The name cannot exist on this storage (too long, illegal bytes).
    InvalidName,
    /// The storage cannot do this at all.
    Unsupported,
    /// The storage is full.
    NoSpace,
    /// The storage is read-only.
    ReadOnly,
    /// The way to the path is no longer what it was: a folder on it became
    /// a symlink (never followed) or a file, or the path would lead out of
    /// the root. Nothing was read or written through it.
    PathChanged,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Stable lower-case name, as recorded in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Temporary => "temporary",
            ErrorKind::InvalidName => "invalid_name",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::PathChanged => "path_changed",
            ErrorKind::Other => "other",
        }
    }

    /// Returns true if and only if the same call may succeed if retried.
    pub fn is_temporary(self) -> bool {
        matches!(self, ErrorKind::RateLimited | ErrorKind::Temporary)
    }

    /// Returns true if and only if the storage as a whole cannot take
    /// writes (full or read-only): no point trying other items.
    pub fn stops_writes(self) -> bool {
        matches!(self, ErrorKind::NoSpace | ErrorKind::ReadOnly)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed backend operation.
#[derive(Clone, Debug, Error)]
#[error("{operation} {path}: {message} ({kind})")]
pub struct BackendError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The operation, e.g. `list` or `stat`.
    pub operation: &'static str,
    /// The path, escaped for display.
    pub path: String,
    /// The underlying message.
    pub message: String,
}

impl BackendError {
    /// Builds an error.
    pub fn new(
        kind: ErrorKind,
        operation: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        BackendError {
            kind,
            operation,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error, classifying it by its OS error.
    pub fn from_io(operation: &'static str, path: impl Into<String>, err: &io::Error) -> Self {
        BackendError::new(classify_io(err), operation, path, err.to_string())
    }
}

fn classify_io(err: &io::Error) -> ErrorKind {
    match err.raw_os_error() {
        Some(code) if code == libc_codes::ENAMETOOLONG || code == libc_codes::EILSEQ => {
            return ErrorKind::InvalidName;
        }
        Some(code) if code == libc_codes::ENOSPC || code == libc_codes::EDQUOT => {
            return ErrorKind::NoSpace;
        }
        Some(libc_codes::EROFS) => return ErrorKind::ReadOnly,
        Some(code)
            if code == libc_codes::EAGAIN
                || code == libc_codes::EINTR
                || code == libc_codes::ETIMEDOUT
                || code == libc_codes::EBUSY =>
        {
            return ErrorKind::Temporary;
        }
        _ => {}
    }
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::TimedOut
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => ErrorKind::Temporary,
        io::ErrorKind::InvalidFilename => ErrorKind::InvalidName,
        io::ErrorKind::Unsupported => ErrorKind::Unsupported,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::NoSpace,
        _ => ErrorKind::Other,
    }
}

/// Linux errno values this module classifies (kept here to avoid a libc
/// dependency for a handful of constants).
mod libc_codes {
    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const EBUSY: i32 = 16;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ENAMETOOLONG: i32 = 36;
    pub const EILSEQ: i32 = 84;
    pub const ETIMEDOUT: i32 = 110;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let e = io::Error::from_raw_os_error(13);
        assert_eq!(
            BackendError::from_io("list", "a", &e).kind,
            ErrorKind::PermissionDenied
        );
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(
            BackendError::from_io("list", "a", &e).kind,
            ErrorKind::NotFound
        );
        let e = io::Error::from_raw_os_error(36);
        assert_eq!(
            BackendError::from_io("list", "a", &e).kind,
            ErrorKind::InvalidName
        );
        assert!(ErrorKind::RateLimited.is_temporary());
        assert!(!ErrorKind::PermissionDenied.is_temporary());
    }
}
