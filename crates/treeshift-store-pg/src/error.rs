//! PostgreSQL's errors in the store's neutral terms.

use treeshift_state::{DbError, DbErrorKind, StoreError};

/// What the store was doing, added to a database error.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, postgres::Error> {
    fn context(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|e| db_error(what, &e))
    }
}

/// What went wrong, in full: the server's own words where it sent some
/// (the `Display` of a server error is only "db error"), else the error
/// with its cause ("error connecting to server: Connection refused").
pub(crate) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

pub(crate) fn db_error(what: &str, e: &postgres::Error) -> StoreError {
    let message = message(e);
    StoreError::Db {
        context: what.to_string(),
        cause: DbError {
            kind: if unavailable(e) {
                DbErrorKind::Unavailable
            } else {
                DbErrorKind::Other
            },
            message,
        },
    }
}

/// Whether `e` says the server could not be reached: the connection
/// closed or failed, or the server is shutting down or starting
/// (SQLSTATE classes 08 and 57P).
pub(crate) fn unavailable(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}
