//! Storage backends. The engine reaches storage only through [`Backend`];
//! backends know nothing of the engine or the state store.
//!
//! - [`local`]: a local tree through `std::fs` (native and fast).
//! - [`sim`]: a deterministic simulated tree from a seed, with a mutated
//!   variant for destinations, per-operation latency and seeded faults.

mod error;
pub mod local;
pub mod sim;

pub use error::{BackendError, ErrorKind};

use std::sync::Arc;
use treeshift_core::{Entry, Kind, RelPath};

/// The children of one folder, streamed: a folder with millions of children
/// never sits in memory.
pub type Children<'a> = Box<dyn Iterator<Item = Result<Entry, BackendError>> + Send + 'a>;

/// One storage tree rooted somewhere.
///
/// Contract:
/// - Names are raw bytes exactly as the storage holds them; none contains `/`.
/// - Symlinks are reported as [`Kind::Symlink`] and never followed.
/// - A child that vanishes between listing and stat is left out, not an error.
/// - Errors carry an [`ErrorKind`]; only temporary ones are worth retrying.
pub trait Backend: Send + Sync {
    /// A short human description such as `local:/data` or `sim:seed=1`.
    fn describe(&self) -> String;

    /// The kind of the root, or `None` if the root does not exist.
    fn root_kind(&self) -> Result<Option<Kind>, BackendError>;

    /// Streams the direct children of `folder` (no recursion).
    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError>;
}

/// Opens a backend from a location as the CLI takes it: a local path,
/// `file:///path`, or `sim:key=value,...`.
pub fn open(location: &str) -> Result<Arc<dyn Backend>, BackendError> {
    if let Some(params) = location.strip_prefix("sim:") {
        return Ok(Arc::new(sim::SimBackend::from_params(params)?));
    }
    if let Some(path) = location.strip_prefix("file://") {
        return open(path);
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(BackendError::new(
            ErrorKind::Unsupported,
            "open",
            location,
            format!(
                "the '{scheme}' backend is not available in this build (supported: local paths, file://, sim:)"
            ),
        ));
    }
    if location.is_empty() {
        return Err(BackendError::new(
            ErrorKind::InvalidName,
            "open",
            location,
            "an empty location",
        ));
    }
    // Absolute (without resolving symlinks), so `./dst` and `dst` name the
    // same migration when a state file is resumed from elsewhere.
    let path =
        std::path::absolute(location).map_err(|e| BackendError::from_io("open", location, &e))?;
    Ok(Arc::new(local::LocalBackend::new(path)))
}
