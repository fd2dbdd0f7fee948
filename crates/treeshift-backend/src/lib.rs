//! Storage backends. The engine reaches storage only through [`Backend`];
//! backends know nothing of the engine or the state store.
//!
//! - [`local`]: a local tree through `std::fs` (native and fast).
//! - [`sim`]: a deterministic simulated tree from a seed, with a mutated
//!   variant for destinations, per-operation latency and seeded faults.
//! - [`remote`]: remote storage through OpenDAL (S3, Azure Blob, GCS,
//!   WebDAV).
//! - [`sftp`]: a tree on an SFTP server, through the system `ssh` client.
//! - [`Counted`]: a layer over any backend that counts its calls.

mod budget;
mod counted;
mod error;
pub mod local;
mod options;
pub mod remote;
mod retry;
pub mod sftp;
pub mod sim;
mod traffic;

pub use budget::{Budget, Taken};
pub use counted::{CallCounts, Counted};
pub use error::{BackendError, ErrorKind};
pub use retry::RetryPolicy;
pub use traffic::RequestCounts;

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use treeshift_core::{Entry, FileId, Keep, Kind, Meta, RelPath, Secrets, Xattr};

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

    /// What this storage keeps and can do: what it cannot do is said here,
    /// not found out item by item.
    fn capabilities(&self) -> Capabilities;

    /// The kind of the root, or `None` if the root does not exist.
    fn root_kind(&self) -> Result<Option<Kind>, BackendError>;

    /// Streams the direct children of `folder` (no recursion).
    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError>;

    /// Streams the children of `folder` that come after the position
    /// `after` in the listing's order, where the storage can start a
    /// listing there ([`Capabilities::resumable_listing`]): a listing cut
    /// short goes on from where it stood.
    fn list_children_after(
        &self,
        folder: &RelPath,
        after: &[u8],
    ) -> Result<Children<'_>, BackendError> {
        let _ = after;
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "list",
            folder.to_string(),
            "this storage cannot resume a listing",
        ))
    }

    /// The position a listing stands at once it gave `entry`: what
    /// [`Backend::list_children_after`] goes on from.
    fn listing_position(&self, entry: &Entry) -> Vec<u8> {
        entry.name.clone()
    }

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

    /// The requests sent so far, where the storage is reached by them
    /// (remote storage): retries and throttling included.
    fn requests(&self) -> Option<RequestCounts> {
        None
    }
}

/// A destination a copy can write to.
///
/// Contract: an item appears at its final name only complete. How a write
/// gets there is the backend's own business (a local tree stages an
/// anonymous `O_TMPFILE` file, or a file under `temp`, in the target's
/// folder and links or renames it into place; an object store's upload is
/// atomic by itself). Nothing here deletes anything but a backend's own
/// temporaries, except [`Writable::remove`], which the engine calls only
/// when an approved plan says to replace an item.
pub trait Writable: Send + Sync {
    /// Creates the folder `path` (its parent exists); an existing folder is
    /// fine. The root is created with its missing ancestors.
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError>;

    /// Writes `source`'s data, with the metadata in `apply`, to `path`.
    /// `check` is asked once the data is written and before the item is put
    /// in place; `Some(why)` (the source changed while it was read) stops
    /// the write, and nothing is put in place. With `replace` false an item
    /// already at `path` is never replaced ([`Written::Occupied`]). `temp`
    /// is a name beside `path` a backend may stage under; one a stopped run
    /// left is removed with [`Writable::remove_temp`].
    fn write(
        &self,
        path: &RelPath,
        temp: &RelPath,
        source: &mut SourceFile,
        replace: bool,
        apply: &Apply,
        check: Check<'_>,
    ) -> Result<Written, BackendError>;

    /// Makes `path` a symlink to `target` with the metadata in `apply` (a
    /// symlink has no mode of its own), replacing only if `replace`.
    fn symlink(
        &self,
        path: &RelPath,
        temp: &RelPath,
        target: &[u8],
        replace: bool,
        apply: &Apply,
    ) -> Result<Written, BackendError>;

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

/// What a storage keeps and can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// How a written file's mtime is kept.
    pub mtime: MtimeKeeping,
    /// Modes and owners (POSIX permissions).
    pub permissions: bool,
    /// Symlinks, as symlinks.
    pub symlinks: bool,
    /// Several names of one file.
    pub hard_links: bool,
    /// Listings and stats tell which names are one file (an inode), so a
    /// hard link made here can be seen to be one.
    pub file_ids: bool,
    /// Extended attributes and ACLs.
    pub xattrs: bool,
    /// How an empty folder is held.
    pub folders: FolderKeeping,
    /// A write can refuse, atomically, to replace an item already there.
    /// Where this is false a write that is not to replace still refuses
    /// to replace what is there when it looks, but a writer of the same
    /// name at that instant can be replaced.
    pub create_new: bool,
    /// Items can be renamed (moved aside, into quarantine).
    pub rename: bool,
    /// The most bytes in one name, if limited.
    pub max_name_bytes: Option<usize>,
    /// The most bytes in a whole path (or key), if limited.
    pub max_path_bytes: Option<usize>,
    /// Names must be UTF-8.
    pub utf8_names: bool,
    /// Names that differ only in letter case are one name.
    pub case_insensitive: bool,
    /// Listings give files' MD5 ([`treeshift_core::Entry::md5`]: an S3
    /// ETag of a single-part upload, Azure's and GCS's `Content-MD5`), so
    /// content can be compared without reading it.
    pub listing_hash: bool,
    /// A listing gives each entry all a stat gives (kind, size, mtime,
    /// mode, owners) for one request per many entries, so reading a
    /// folder's items back costs fewer requests by listing it: SFTP's
    /// READDIR. Not where a listing costs a stat per entry anyway (a local
    /// file system) or lacks what a stat gives (an object store's mtime
    /// in user metadata).
    pub listing_stats: bool,
    /// Listings give each file's own mtime where the storage keeps it
    /// apart from its time of the write (an object store's user
    /// metadata, read by a stat per file: `compare=meta-mtime`).
    pub listing_own_mtimes: bool,
    /// Listings come in a fixed order and can start after a position
    /// ([`Backend::list_children_after`]), as an object store's can.
    pub resumable_listing: bool,
    /// Characters no name sent there may hold, with the reason.
    pub refused_chars: Option<(&'static [u8], &'static str)>,
}

/// How a storage keeps a file's modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtimeKeeping {
    /// Set on the item itself, as a local file system does.
    Native,
    /// Kept in user metadata next to the item (read back by a stat, not by
    /// a listing), as an object store can.
    UserMetadata,
    /// Not at all: the storage's own time of the write stands.
    None,
}

/// How a storage holds an empty folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKeeping {
    /// Real folders.
    Real,
    /// A zero-byte `name/` marker object stands for it.
    Markers,
    /// Not at all: a folder is there while something lies under it (an
    /// object store's prefix), so making one makes nothing.
    Prefixes,
}

impl Capabilities {
    /// A POSIX file system: everything.
    pub fn posix() -> Capabilities {
        Capabilities {
            mtime: MtimeKeeping::Native,
            permissions: true,
            symlinks: true,
            hard_links: true,
            file_ids: true,
            xattrs: true,
            folders: FolderKeeping::Real,
            create_new: true,
            rename: true,
            max_name_bytes: Some(255),
            max_path_bytes: None,
            utf8_names: false,
            case_insensitive: false,
            listing_hash: false,
            listing_stats: false,
            listing_own_mtimes: false,
            resumable_listing: false,
            refused_chars: None,
        }
    }

    /// Why this storage cannot hold the item `name` in `folder` (relative
    /// to its root), if it cannot: a name that is not UTF-8 where names
    /// must be, a name or a path longer than it takes. Asked for every
    /// child a discovery lists, so it builds no path.
    pub fn cannot_hold(&self, folder: &RelPath, name: &[u8]) -> Option<String> {
        if self.utf8_names && std::str::from_utf8(name).is_err() {
            return Some("not UTF-8, and the destination holds UTF-8 names only".into());
        }
        if let Some(max) = self.max_name_bytes.filter(|&max| name.len() > max) {
            return Some(format!(
                "a name of {} bytes, and the destination holds at most {max}",
                name.len()
            ));
        }
        if let Some((chars, why)) = self.refused_chars
            && let Some(c) = name.iter().find(|c| chars.contains(c))
        {
            return Some(format!("'{}' in the name: {why}", char::from(*c)));
        }
        let len = match folder.as_bytes().len() {
            0 => name.len(),
            n => n + 1 + name.len(),
        };
        if let Some(max) = self.max_path_bytes.filter(|&max| len > max) {
            return Some(format!(
                "a path of {len} bytes, and the destination holds at most {max} under its root"
            ));
        }
        None
    }
}

/// Asked by [`Writable::write`] once the data is written, before the item
/// is put in place, with the source and the bytes written: `Some(why)` if
/// the source changed while it was read.
pub type Check<'a> = &'a (dyn Fn(&SourceFile, u64) -> Option<String> + Sync);

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// In place and complete: the bytes written, and the etag the storage
    /// gave the item, where it gives one.
    Done {
        /// Bytes of data written.
        bytes: u64,
        /// The storage's tag for this version of the item.
        etag: Option<String>,
    },
    /// Something is at the path and the write was not to replace it:
    /// nothing was put there.
    Occupied,
    /// The source changed while it was read (the check's reason): nothing
    /// was put in place.
    Changed(String),
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

/// An open source file.
pub struct SourceFile {
    /// The data.
    pub reader: Reader,
    /// Size when opened.
    pub size: u64,
    /// Modification time when opened, in nanoseconds, as listings give it
    /// (what tells a changed file).
    pub mtime_ns: Option<i64>,
    /// The file's own mtime, where the storage keeps it apart from
    /// `mtime_ns`: an object's `mtime` metadata, while its listed time is
    /// that of its upload. The destination is given this one.
    pub own_mtime_ns: Option<i64>,
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

/// Either kind of reader, read alike where the kind does not matter.
impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::File(f) => f.read(buf),
            Reader::Stream(r) => r.read(buf),
        }
    }
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

/// `location` with the password of a `scheme://user:password@host` cut
/// out, for an error that refuses it: the refusal must not print it.
pub(crate) fn without_password(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_string();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let tail = &rest[authority.len()..];
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => location.to_string(),
    }
}

/// Reads until `buf` is full or the source ends; the bytes read.
pub(crate) fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How a backend is opened, besides its location.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Requests a second, at most, to remote storage.
    pub tps: Option<u32>,
    /// The connection's secrets, by the names [`secret_names`] gives (the
    /// backend reads no environment variable of its own).
    pub secrets: Secrets,
}

/// The names of the secrets a location's storage takes: those of the
/// environment variables its own tools read (`AWS_SECRET_ACCESS_KEY`,
/// ...), and `SSH_PRIVATE_KEY` for the key file an `sftp://` location
/// names. None for local and simulated trees.
pub fn secret_names(location: &str) -> Result<&'static [&'static str], BackendError> {
    if location.starts_with("sftp://") {
        return Ok(&[sftp::PRIVATE_KEY]);
    }
    if is_remote(location) {
        return Ok(remote::RemoteLocation::parse(location)?
            .service
            .secret_names());
    }
    Ok(&[])
}

/// A location's secrets, each looked up by name with `lookup` (the
/// environment, or a secret file); a file a secret names (a service
/// account's key, an SFTP private key) is read, and its content kept.
pub fn gather_secrets(
    location: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Secrets, BackendError> {
    if location.starts_with("sftp://") {
        return sftp::SftpLocation::parse(location)?.gather_secrets();
    }
    if is_remote(location) {
        return remote::RemoteLocation::parse(location)?.gather_secrets(lookup);
    }
    Ok(Secrets::new())
}

fn is_remote(location: &str) -> bool {
    ["s3://", "azblob://", "gcs://", "webdav://", "webdavs://"]
        .iter()
        .any(|scheme| location.starts_with(scheme))
}

/// Opens a backend from a location as the CLI takes it: a local path,
/// `file:///path`, `local:/path` (what [`Backend::describe`] gives),
/// `sim:key=value,...`, or remote storage (`s3://bucket/prefix`).
pub fn open(location: &str, options: &OpenOptions) -> Result<Arc<dyn Backend>, BackendError> {
    if is_remote(location) {
        return Ok(Arc::new(remote::RemoteBackend::open(
            location,
            options.tps,
            options.secrets.clone(),
        )?));
    }
    if location.starts_with("sftp://") {
        return Ok(Arc::new(sftp::SftpBackend::open(
            location,
            options.tps,
            &options.secrets,
        )?));
    }
    if options.tps.is_some() {
        return Err(BackendError::new(
            ErrorKind::Other,
            "open",
            location,
            "a requests-per-second limit applies to remote storage only",
        ));
    }
    if let Some(params) = location.strip_prefix("sim:") {
        return Ok(Arc::new(sim::SimBackend::from_params(params)?));
    }
    if let Some(path) = location.strip_prefix("file://") {
        return open(path, options);
    }
    // As `describe` writes it (and state files record it).
    if let Some(path) = location.strip_prefix("local:") {
        return open(path, options);
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(BackendError::new(
            ErrorKind::Unsupported,
            "open",
            location,
            format!(
                "the '{scheme}' backend is not available in this build (supported: local paths, file://, sim:, s3://, azblob://, gcs://, webdav://, webdavs://, sftp://)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_says_which_names_it_cannot_hold() {
        let root = RelPath::root();
        let folder = RelPath::from_bytes(b"abcd".to_vec());
        let posix = Capabilities::posix();
        assert_eq!(posix.cannot_hold(&folder, b"caf\xe9"), None);
        let long = [b'n'; 256];
        assert!(
            posix
                .cannot_hold(&root, &long)
                .unwrap()
                .contains("256 bytes")
        );
        let store = Capabilities {
            utf8_names: true,
            max_name_bytes: None,
            max_path_bytes: Some(10),
            ..posix
        };
        assert!(
            store
                .cannot_hold(&root, b"caf\xe9")
                .unwrap()
                .contains("UTF-8")
        );
        assert_eq!(store.cannot_hold(&folder, b"efghi"), None);
        assert_eq!(store.cannot_hold(&root, b"abcdefghij"), None);
        assert!(
            store
                .cannot_hold(&folder, b"efghij")
                .unwrap()
                .contains("11 bytes")
        );
        let redacted = without_password("sftp://al:s3cret@h:22/p?key=k");
        assert_eq!(redacted, "sftp://al:***@h:22/p?key=k");
        assert_eq!(without_password("s3://b/p"), "s3://b/p");
        let picky = Capabilities {
            refused_chars: Some((b";?", "not here")),
            ..Capabilities::posix()
        };
        assert_eq!(
            picky.cannot_hold(&root, b"a;b").as_deref(),
            Some("';' in the name: not here")
        );
        assert_eq!(picky.cannot_hold(&root, b"a b#%&"), None);
    }
}
