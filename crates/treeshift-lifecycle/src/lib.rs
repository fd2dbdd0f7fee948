//! One migration's lifecycle, for the CLI and the server alike: open a
//! migration (or prepare a discovery, which makes or resumes its state
//! file), then discover, approve, copy, verify, retry and start delta
//! passes, each operation returning a typed, serializable result and
//! honouring a [`Cancel`] token (a cancelled run resumes exactly as a
//! killed one does). Each side's backend is opened once per
//! [`Migration`], with the secrets its state file sealed
//! ([`credentials`]); the connections can be listed and changed
//! ([`connections`]).
//!
//! Nothing here prints or touches a terminal: progress goes to the
//! engine's progress traits, keys come through [`Keys`].

pub mod connections;
pub mod credentials;
mod error;
mod migration;
mod report;
pub mod state;

pub use credentials::{Keys, SecretSource};
pub use error::{ErrorClass, LifecycleError, Result};
pub use migration::{DiscoveryRequest, Limits, Migration};
pub use report::{
    ApprovalReport, Calls, CopyCost, DiscoveryReport, RetriedCopy, RetriedDiscovery, SideCalls,
    StatusReport, Timing,
};
pub use state::{OpenState, StateHandle};
pub use treeshift_engine::Cancel;
