//! Storage backends. The engine reaches storage only through [`Backend`];
//! backends know nothing of the engine or the state store.
//!
//! - [`local`]: a local tree through `std::fs` (native and fast).
//! - [`sim`]: a deterministic simulated tree from a seed, with a mutated
//!   variant for destinations, per-operation latency and seeded faults.
//! - [`Counted`]: a layer over any backend that counts its calls.

mod counted;
mod error;
pub mod local;
pub mod sim;

pub use counted::{CallCounts, Counted};
pub use error::{BackendError, ErrorKind};

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use treeshift_core::{Entry, FileId, Keep, Kind, Meta, RelPath, Xattr};

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

    /// What is at `path` now (not following a symlink), `None` if nothing.
    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError>;

    /// Opens a file for reading, with its metadata as of the open.
    fn open_read(&self, path: &RelPath) -> Result<SourceFile, BackendError>;

    /// The target of a symlink, as raw bytes.
    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError>;

    /// The identity of the folder at `path` now (never through a symlink),
    /// `None` where nothing is there or the storage has no identities: a
    /// copy tells by it that a folder was put in the place of the one
    /// discovery saw.
    fn identity(&self, _path: &RelPath) -> Result<Option<FileId>, BackendError> {
        Ok(None)
    }

    /// Tells the backend what the migration keeps, so listings and opened
    /// files carry what will be compared and copied (reading extended
    /// attributes costs calls; they are read only when kept).
    fn keep(&self, _keep: &Keep) {}

    /// The extended attributes of `path` that the migration keeps (none
    /// where the storage has none).
    fn xattrs(&self, _path: &RelPath) -> Result<Vec<Xattr>, BackendError> {
        Ok(Vec::new())
    }

    /// Flushes everything written so far to stable storage. Called once per
    /// batch of copied items, before the batch is recorded as copied.
    fn sync(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// The write side, if this backend can be a destination.
    fn writer(&self) -> Option<&dyn Writable> {
        None
    }
}

/// A destination a copy can write to.
///
/// Contract: an item appears at its final name only complete. Data is
/// staged first ([`Writable::write_temp`]): as an anonymous file in the
/// target's folder where the storage has them (Linux `O_TMPFILE`: a crash
/// leaves nothing behind), else under a temporary name there. Then
/// [`Writable::commit`] links or renames it into place. Nothing here
/// deletes anything but temporaries, except [`Writable::remove`], which the
/// engine calls only when an approved plan says to replace an item.
pub trait Writable: Send + Sync {
    /// Creates the folder `path` (its parent exists); an existing folder is
    /// fine. The root is created with its missing ancestors.
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError>;

    /// Stages `source`'s data in the folder of `temp`, with the metadata
    /// in `apply`, named `temp` unless `anonymous` is allowed and the
    /// storage can. Returns the staged item and the bytes written.
    fn write_temp(
        &self,
        temp: &RelPath,
        source: &mut SourceFile,
        anonymous: bool,
        apply: &Apply,
    ) -> Result<(Staged, u64), BackendError>;

    /// Stages a symlink to `target` at `temp`, with the metadata in `apply`
    /// (a symlink has no mode of its own).
    fn symlink_temp(
        &self,
        temp: &RelPath,
        target: &[u8],
        apply: &Apply,
    ) -> Result<Staged, BackendError>;

    /// Moves a staged item to `path`. With `replace` false it never
    /// replaces an existing item: it discards the staged one and returns
    /// `Ok(false)`. On an error the staged item is discarded too.
    fn commit(&self, staged: Staged, path: &RelPath, replace: bool) -> Result<bool, BackendError>;

    /// Discards a staged item.
    fn discard(&self, staged: Staged) -> Result<(), BackendError>;

    /// Removes a temporary a stopped run may have left; one that is not
    /// there is fine.
    fn remove_temp(&self, temp: &RelPath) -> Result<(), BackendError>;

    /// Moves `path` to `to` (a sibling), never replacing an existing `to`.
    fn move_aside(&self, path: &RelPath, to: &RelPath) -> Result<(), BackendError>;

    /// Removes `path`, a folder with everything in it.
    fn remove(&self, path: &RelPath) -> Result<(), BackendError>;

    /// Makes `path` another name of the file at `existing` (a hard link),
    /// never replacing an item at `path` unless `replace`, in which case
    /// the link is made at `temp` (a sibling of `path`) and renamed over
    /// it. `Ok(false)`: something is at `path` and `replace` is false.
    /// Storage that cannot hold hard links says so with
    /// [`ErrorKind::Unsupported`].
    fn hard_link(
        &self,
        existing: &RelPath,
        path: &RelPath,
        temp: &RelPath,
        replace: bool,
    ) -> Result<bool, BackendError> {
        let _ = (existing, temp, replace);
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "hard_link",
            path.to_string(),
            "this storage cannot hold hard links",
        ))
    }

    /// Sets the metadata in `apply` on what is at `path`, in place: a
    /// folder after its contents were written, or an item whose data is
    /// already in step.
    fn set_metadata(&self, path: &RelPath, apply: &Apply) -> Result<(), BackendError>;
}

/// Metadata a write puts on an item besides its data; `None` leaves a
/// field as the storage makes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Apply {
    /// Modification time, in nanoseconds.
    pub mtime_ns: Option<i64>,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: Option<u32>,
    /// User and group ids.
    pub owner: Option<(u32, u32)>,
    /// The kept extended attributes the item must have, exactly: others
    /// of the kept kinds are removed (an ACL inherited from the folder,
    /// say).
    pub xattrs: Option<Vec<Xattr>>,
}

/// Data written but not yet in place: only the backend that staged it can
/// put it in place ([`Writable::commit`]) or discard it.
#[derive(Debug)]
pub struct Staged(pub(crate) local::Staged);

/// An open source file.
pub struct SourceFile {
    /// The data.
    pub reader: Reader,
    /// Size when opened.
    pub size: u64,
    /// Modification time when opened, in nanoseconds.
    pub mtime_ns: Option<i64>,
    /// Mode and owners as of the open, where the storage has them.
    pub meta: Meta,
    /// The kept extended attributes, read from the open file.
    pub xattrs: Vec<Xattr>,
    /// The storage says the file has holes: a copy by data ranges keeps
    /// them.
    pub holes: bool,
}

/// Where a source file's data comes from. A local file stays a [`File`] so
/// a local destination can use the kernel's copy (`copy_file_range`, which
/// reflinks where the file system can).
pub enum Reader {
    /// A local file.
    File(File),
    /// Any other byte stream.
    Stream(Box<dyn Read + Send>),
}

impl SourceFile {
    /// Size and mtime now, to detect a file that changed while it was read;
    /// `None` where the storage cannot tell cheaply (streams are snapshots).
    pub fn restat(&self) -> Option<(u64, Option<i64>)> {
        match &self.reader {
            Reader::File(f) => f
                .metadata()
                .ok()
                .map(|m| (m.len(), Some(local::mtime_ns(&m)))),
            Reader::Stream(_) => None,
        }
    }
}

/// Opens a backend from a location as the CLI takes it: a local path,
/// `file:///path`, `local:/path` (what [`Backend::describe`] gives), or
/// `sim:key=value,...`.
pub fn open(location: &str) -> Result<Arc<dyn Backend>, BackendError> {
    if let Some(params) = location.strip_prefix("sim:") {
        return Ok(Arc::new(sim::SimBackend::from_params(params)?));
    }
    if let Some(path) = location.strip_prefix("file://") {
        return open(path);
    }
    // As `describe` writes it (and state files record it).
    if let Some(path) = location.strip_prefix("local:") {
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
