//! Errors of the state store.

use std::path::PathBuf;
use thiserror::Error;

/// Whether `state` names a PostgreSQL database (`postgres://…` or
/// `postgresql://…`) rather than a state file.
pub fn is_database(state: &std::path::Path) -> bool {
    state
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// How a message names the state at `path`: a file, or a PostgreSQL
/// database (its location, never with a password: the stores give it so).
fn state(path: &std::path::Path) -> String {
    if is_database(path) {
        format!("state database {}", path.display())
    } else {
        format!("state file {}", path.display())
    }
}

/// Everything that can go wrong with a state file.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The file could not be opened as a database.
    #[error("cannot open {}: {message}", state(path))]
    Open {
        /// The state file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Another process holds the file (DuckDB allows one writer).
    #[error("cannot open {}: {message}", state(path))]
    InUse {
        /// The state file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is a database but not a treeshift state file.
    #[error("{} is not a treeshift migration's ({detail})", state(path))]
    NotAStateFile {
        /// The state file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The file was written by a different schema version.
    #[error(
        "{} has schema version {found}; this treeshift reads version {expected}{hint}",
        state(path)
    )]
    SchemaVersion {
        /// The state file.
        path: PathBuf,
        /// The version in the file.
        found: String,
        /// The version this build reads.
        expected: u32,
        /// A hint on what to do.
        hint: &'static str,
    },
    /// The file belongs to another source/destination pair or settings.
    #[error(
        "{} belongs to another migration ({what}: it has '{recorded}', this run asks for '{requested}'); use another --state",
        state(path)
    )]
    OtherMigration {
        /// The state file.
        path: PathBuf,
        /// Which setting differs.
        what: &'static str,
        /// What the file holds.
        recorded: String,
        /// What the caller asked for.
        requested: String,
    },
    /// The file does not exist (commands that only read).
    #[error("{} does not exist", state(.0))]
    Missing(PathBuf),
    /// A database operation failed. The database's error is part of the
    /// message and deliberately not a `source`: printing the error chain
    /// would repeat it.
    #[error("state store: {context}: {cause}")]
    Db {
        /// What the store was doing.
        context: String,
        /// The database's error.
        cause: DbError,
    },
    /// Approval or copy before discovery finished.
    #[error("discovery has not finished (run discover again to finish it)")]
    NotDiscovered,
    /// Copy or verify without an approved plan.
    #[error(
        "no approved plan: review it (review --state FILE), then approve it (approve --state FILE)"
    )]
    NotApproved,
    /// The plan changed since it was approved (discovery ran again).
    #[error(
        "the plan changed since it was approved (approved {approved}, now {current}): review it and approve again"
    )]
    PlanChanged {
        /// The approved plan's hash.
        approved: String,
        /// The current plan's hash.
        current: String,
    },
    /// A new approval after the copy of another plan started.
    #[error(
        "the copy of the plan approved with policy '{policy}' has started; finish it (copy) before approving another plan"
    )]
    CopyStarted {
        /// The policy of the plan being copied.
        policy: String,
    },
    /// A retry sweep found items that would replace or move destination
    /// data: only a person may approve those.
    #[error(
        "the retried folders hold {items} items that would replace or move destination data: review them (review --state FILE) and approve the plan (approve --state FILE)"
    )]
    ExtensionTouchesDestination {
        /// How many such items.
        items: u64,
    },
    /// A folder's lease expired and another worker leased it: what this
    /// worker found in it is not recorded (the other's listing is).
    #[error(
        "the lease on {side} folder {folder} expired and another worker took it over; this worker's listing of it was not recorded"
    )]
    LeaseLost {
        /// `src` or `dst`.
        side: String,
        /// The folder's path.
        folder: String,
    },
    /// The store thread stopped after an earlier error.
    #[error("state store stopped: {0}")]
    Stopped(String),
    /// The store thread could not be started.
    #[error("state store thread: {0}")]
    Thread(String),
}

/// A database's error, in terms that name no database: callers of the
/// store match on its kind, not on one engine's error type.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct DbError {
    /// What kind of failure it is.
    pub kind: DbErrorKind,
    /// The database's own message.
    pub message: String,
}

/// What kind of failure a [`DbError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// The database ran out of its memory limit. The store runs the
    /// operation again with a higher limit, unless the user set one.
    OutOfMemory,
    /// The database could not be reached: the connection was refused or
    /// lost (a server restarting, a network gone). The operation may be
    /// run again once it is back.
    Unavailable,
    /// Anything else: the message says what.
    Other,
}

impl StoreError {
    /// Whether the database ran out of its memory limit.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, StoreError::Db { cause, .. } if cause.kind == DbErrorKind::OutOfMemory)
    }

    /// Whether the database could not be reached.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Db { cause, .. } if cause.kind == DbErrorKind::Unavailable)
    }
}
