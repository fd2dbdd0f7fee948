//! DuckDB's errors as the store reports them ([`StoreError`] names no
//! database).

use treeshift_state::{DbError, DbErrorKind, StoreError};

/// DuckDB's error in the store's neutral terms.
fn db_error(e: &duckdb::Error) -> DbError {
    DbError {
        kind: if is_out_of_memory(e) {
            DbErrorKind::OutOfMemory
        } else {
            DbErrorKind::Other
        },
        message: e.to_string(),
    }
}

/// Whether DuckDB ran out of its memory limit.
pub(crate) fn is_out_of_memory(e: &duckdb::Error) -> bool {
    e.to_string().contains("Out of Memory")
}

/// Adds what the store was doing to a database error.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, duckdb::Error> {
    fn context(self, what: impl Into<String>) -> Result<T, StoreError> {
        self.map_err(|source| {
            let mut context = what.into();
            if is_out_of_memory(&source) {
                context.push_str(
                    " (the state store ran out of its memory limit: set TREESHIFT_DB_MEMORY to more, e.g. 1GB, and run the command again)",
                );
            }
            StoreError::Db {
                context,
                cause: db_error(&source),
            }
        })
    }
}
