//! The treeshift engine. It reaches storage only through
//! [`treeshift_backend::Backend`] and state only through
//! [`treeshift_state::StateStore`]; it never sees SQL.
//!
//! [`discover`] walks both trees breadth-first in rounds: each side has a
//! runner that pulls its round's pending folders from the store in keyset
//! batches and leases them to a pool of workers; each worker lists one
//! folder (no recursion), filters the children and streams them to the
//! store. A [`coordinator::Gate`] keeps the destination behind the source;
//! the source never waits for the destination.
//!
//! [`copy`] carries out the approved plan (folders round by round, then
//! files by a pool with bounded bytes in flight, atomic and durable in
//! batches); [`verify`] re-reads what was copied.

mod cancel;
pub mod coordinator;
mod copy;
mod discover;
mod error;
mod pool;
mod progress;
mod verify;
mod worker;

pub use cancel::Cancel;
pub use copy::{CopyOptions, CopyProgress, copy};
pub use discover::{DiscoverOptions, discover};
pub use error::EngineError;
pub use progress::{DiscoveryProgress, NoProgress};
pub use verify::{VerifyOptions, VerifyProgress, verify};
