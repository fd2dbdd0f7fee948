//! Why a lifecycle operation did not happen, sorted the way a caller
//! answers: the user's input to fix, an approval to give, or a failure.

use treeshift_backend::BackendError;
use treeshift_engine::EngineError;
use treeshift_store::StoreError;
use treeshift_vault::VaultError;

/// A lifecycle operation's error. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Input that is wrong on its face (a bad location, a secret file
    /// naming what the service does not take, a key missing).
    #[error("{0}")]
    Input(String),
    /// A key that does not open the state file, or a damaged sealed record.
    #[error(transparent)]
    Key(#[from] VaultError),
    /// A location could not be opened.
    #[error("{role}: {source}")]
    Open {
        /// `source` or `destination`.
        role: &'static str,
        /// Why.
        source: BackendError,
    },
    /// The engine stopped (approval missing, a root missing, a full
    /// destination, a cancellation, ...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The state file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file the user named could not be read.
    #[error("{0}")]
    Io(String),
}

/// How a caller should take an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The user's input: fix it and run again (the CLI's exit code 2).
    Input,
    /// An approval that matches the plan is needed (exit code 3).
    Approval,
    /// Anything else (exit code 1).
    Failure,
}

impl LifecycleError {
    /// How to take it.
    pub fn class(&self) -> ErrorClass {
        use treeshift_backend::ErrorKind;
        match self {
            LifecycleError::Input(_) | LifecycleError::Key(_) => ErrorClass::Input,
            LifecycleError::Open { source, .. }
                if matches!(
                    source.kind,
                    ErrorKind::Other | ErrorKind::Unsupported | ErrorKind::InvalidName
                ) =>
            {
                ErrorClass::Input
            }
            LifecycleError::Engine(EngineError::ApprovalRequired(_)) => ErrorClass::Approval,
            _ => ErrorClass::Failure,
        }
    }
}

/// An input error.
pub(crate) fn input(why: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::Input(why.to_string())
}

/// The result of a lifecycle operation.
pub type Result<T, E = LifecycleError> = std::result::Result<T, E>;
