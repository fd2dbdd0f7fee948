//! Errors that stop the engine (as opposed to failed items, which are
//! recorded in the store and reported).

use thiserror::Error;
use treeshift_backend::BackendError;
use treeshift_core::Kind;
use treeshift_state::StoreError;

/// Why a run stopped.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source root does not exist.
    #[error("source root {0} does not exist")]
    SrcRootMissing(String),
    /// A root is not a folder.
    #[error("{side} root {location} is a {kind}, not a folder")]
    RootNotFolder {
        /// `source` or `destination`.
        side: &'static str,
        /// The location.
        location: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A root could not be examined.
    #[error("cannot examine the {side} root")]
    Root {
        /// `source` or `destination`.
        side: &'static str,
        /// The backend's error.
        source: BackendError,
    },
    /// Copy or verify needs an approval that matches the current plan.
    #[error("approval required")]
    ApprovalRequired(#[source] StoreError),
    /// The destination cannot take writes at all (full, read-only): the
    /// run stops; items not finished stay pending for the next run.
    #[error("the destination cannot take more writes")]
    Destination(#[source] BackendError),
    /// The destination's backend cannot be written to.
    #[error("the destination {0} cannot be written to by this backend")]
    NotWritable(String),
    /// The run was asked to stop, and stopped: what was in flight is
    /// recorded, the rest is left for the next run.
    #[error("stopped on request: run the command again to go on from where it stopped")]
    Cancelled,
    /// A worker thread panicked (a bug; the state file stays consistent).
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Sorts the store's approval errors from its other errors.
    pub fn approval(e: StoreError) -> Self {
        match e {
            StoreError::NotApproved
            | StoreError::PlanChanged { .. }
            | StoreError::ExtensionTouchesDestination { .. }
            | StoreError::NotDiscovered => EngineError::ApprovalRequired(e),
            other => EngineError::Store(other),
        }
    }

    pub(crate) fn not_folder(side: &'static str, location: String, kind: Kind) -> Self {
        EngineError::RootNotFolder {
            side,
            location,
            kind: kind.as_str(),
        }
    }
}
