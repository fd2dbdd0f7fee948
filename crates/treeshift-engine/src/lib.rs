//! The treeshift engine. It reaches storage only through
//! [`treeshift_backend::Backend`] and state only through
//! [`treeshift_store::StoreHandle`]; it never sees SQL.
//!
//! [`discover`] walks both trees breadth-first in rounds: each side has a
//! runner that pulls its round's pending folders from the store in keyset
//! batches and leases them to a pool of workers; each worker lists one
//! folder (no recursion), filters the children and streams them to the
//! store. A [`coordinator::Gate`] keeps the destination behind the source;
//! the source never waits for the destination.

pub mod coordinator;
mod discover;
mod error;
mod progress;
mod worker;

pub use discover::{DiscoverOptions, discover};
pub use error::EngineError;
pub use progress::{DiscoveryProgress, NoProgress};
