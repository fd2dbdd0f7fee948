//! A local tree.
//!
//! Every path is resolved beneath the root's descriptor without following a
//! symlink anywhere ([`beneath`]), and every operation ends in a `*at` call
//! on the folder it found (or on the file's own descriptor), so nothing is
//! ever read or written outside the root, whatever is swapped during a run.
//!
//! Listing reads a folder with `getdents` and stats each child relative to
//! the open folder (`fstatat` with no symlink following), which is what
//! `find -printf` does. Symlinks are reported, never followed.

mod beneath;
mod sparse;
mod write;
mod xattr;

use crate::{
    Backend, BackendError, Capabilities, Children, ErrorKind, Reader, SourceFile, Writable,
};
use beneath::Root;
use rustix::fs::{AtFlags, Dir, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use treeshift_core::{Entry, FileId, Keep, Kind, Meta, RelPath, Xattr};

/// A tree on a local file system.
#[derive(Debug)]
pub struct LocalBackend {
    root: Root,
    /// Set once the file system refused an anonymous file.
    no_tmpfile: AtomicBool,
    /// Which extended attributes the migration keeps: bit 1 the `user.`,
    /// `trusted.` and `security.` ones, bit 2 the ACLs.
    xattrs: AtomicU8,
    /// Set once the kernel refused to copy between the two file systems
    /// (`copy_file_range` across devices): data then goes through a buffer.
    no_copy_range: AtomicBool,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend::with_root(Root::new(root.into()))
    }

    fn with_root(root: Root) -> Self {
        LocalBackend {
            root,
            no_tmpfile: AtomicBool::new(false),
            xattrs: AtomicU8::new(0),
            no_copy_range: AtomicBool::new(false),
        }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The absolute location of a relative path, for messages and tests;
    /// the backend itself never resolves it.
    pub fn full_path(&self, rel: &RelPath) -> PathBuf {
        if rel.is_root() {
            self.root().to_path_buf()
        } else {
            self.root().join(OsStr::from_bytes(rel.as_bytes()))
        }
    }

    /// An error of `operation` on `path`, classified. A symlink or a file on
    /// the way, or a way out of the root, is [`ErrorKind::PathChanged`].
    fn err(
        &self,
        operation: &'static str,
        path: &RelPath,
        e: impl Into<io::Error>,
    ) -> BackendError {
        let e = e.into();
        let changed = match Errno::from_io_error(&e) {
            Some(Errno::LOOP) => "a symlink is in the way (symlinks are never followed)",
            Some(Errno::NOTDIR) => "a folder on the way is not a folder any more",
            Some(Errno::XDEV) => "the path leads out of the root",
            // Only `beneath::component` says this of a path: a name that is
            // empty, `.`, or holds `/` or NUL.
            Some(Errno::INVAL) => {
                return BackendError::new(
                    ErrorKind::InvalidName,
                    operation,
                    path.to_string(),
                    "not a path of plain names (an empty name, '.', or a NUL byte)",
                );
            }
            _ => return BackendError::from_io(operation, path.to_string(), &e),
        };
        BackendError::new(ErrorKind::PathChanged, operation, path.to_string(), changed)
    }

    /// Which extended attributes are kept, `None` if none are.
    fn kept_xattrs(&self) -> Option<xattr::Which> {
        let bits = self.xattrs.load(Ordering::Relaxed);
        (bits != 0).then_some((bits & 1 != 0, bits & 2 != 0))
    }

    /// `lstat` of `path`, `None` if nothing is there.
    fn lstat(&self, path: &RelPath, operation: &'static str) -> Result<Option<Stat>, BackendError> {
        let found = if path.is_root() {
            self.root.fd().and_then(|fd| rustix::fs::fstat(&*fd))
        } else {
            self.root
                .parent(path.as_bytes())
                .and_then(|(folder, name)| {
                    rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW)
                })
        };
        match found {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err(operation, path, e)),
        }
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        format!("local:{}", self.root().display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::posix()
    }

    fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
        match std::fs::symlink_metadata(self.root()) {
            Ok(meta) => Ok(Some(kind_of(meta.mode()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::from_io(
                "stat",
                self.root().display().to_string(),
                &e,
            )),
        }
    }

    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
        let fd = self
            .root
            .open(
                folder.as_bytes(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .map_err(|e| self.err("list", folder, e))?;
        let dir = Dir::new(fd).map_err(|e| self.err("list", folder, e))?;
        Ok(Box::new(Listing {
            backend: self,
            dir,
            folder: folder.clone(),
            xattrs: self.kept_xattrs(),
        }))
    }

    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        Ok(self
            .lstat(path, "stat")?
            .map(|st| entry_from_stat(path.name().to_vec(), &st)))
    }

    fn open_read(&self, path: &RelPath) -> Result<SourceFile, BackendError> {
        // O_NOFOLLOW (added by `open`): a file replaced by a symlink is not
        // followed; O_NONBLOCK: one replaced by a fifo does not hang the run.
        let fd = self
            .root
            .open(
                path.as_bytes(),
                OFlags::RDONLY | OFlags::NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| self.err("open", path, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| self.err("stat", path, e))?;
        let xattrs = match self.kept_xattrs() {
            Some(which) => xattr::read(xattr::On::Fd(file.as_fd()), which)
                .map_err(|e| self.err("read_xattrs", path, e))?,
            None => Vec::new(),
        };
        if !meta.is_file() {
            return Err(BackendError::new(
                ErrorKind::Other,
                "open",
                path.to_string(),
                "not a regular file",
            ));
        }
        Ok(SourceFile {
            size: meta.len(),
            mtime_ns: Some(mtime_ns(&meta)),
            own_mtime_ns: None,
            meta: Meta {
                mode: Some(meta.permissions().mode() & 0o7777),
                uid: Some(meta.uid()),
                gid: Some(meta.gid()),
                xattrs: Some(treeshift_core::xattr_digest(&xattrs)),
            },
            xattrs,
            holes: sparse::has_holes(&meta),
            reader: Reader::File(file),
        })
    }

    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
        let (folder, name) = self
            .root
            .parent(path.as_bytes())
            .map_err(|e| self.err("read_link", path, e))?;
        rustix::fs::readlinkat(&folder, name, Vec::new())
            .map(|target| target.into_bytes())
            .map_err(|e| self.err("read_link", path, e))
    }

    fn identity(&self, path: &RelPath) -> Result<Option<FileId>, BackendError> {
        let opened = self
            .root
            .open(
                path.as_bytes(),
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .and_then(|fd| rustix::fs::fstat(&fd));
        match opened {
            Ok(st) => Ok(Some(FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    fn keep(&self, keep: &Keep) {
        let bits = u8::from(keep.xattrs) | (u8::from(keep.acls) << 1);
        self.xattrs.store(bits, Ordering::Relaxed);
    }

    fn xattrs(&self, path: &RelPath) -> Result<Vec<Xattr>, BackendError> {
        let Some(which) = self.kept_xattrs() else {
            return Ok(Vec::new());
        };
        // A descriptor of the item itself (never through a symlink).
        let fd = self
            .root
            .open(
                path.as_bytes(),
                OFlags::RDONLY | OFlags::NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| self.err("read_xattrs", path, e))?;
        xattr::read(xattr::On::Fd(fd.as_fd()), which).map_err(|e| self.err("read_xattrs", path, e))
    }

    fn sync(&self) -> Result<(), BackendError> {
        let root = RelPath::root();
        // syncfs needs a descriptor opened for reading, not O_PATH.
        let fd = self
            .root
            .open(b"", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| self.err("sync", &root, e))?;
        rustix::fs::syncfs(&fd).map_err(|e| self.err("sync", &root, e))
    }

    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }
}

/// A folder being listed: entries come from `getdents` in small buffers and
/// are stat'ed relative to the open folder, so a huge folder streams.
struct Listing<'a> {
    backend: &'a LocalBackend,
    dir: Dir,
    folder: RelPath,
    /// Which extended attributes to read, if any.
    xattrs: Option<xattr::Which>,
}

impl Iterator for Listing<'_> {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = match self.dir.read()? {
                Ok(item) => item,
                Err(e) => return Some(Err(self.backend.err("list", &self.folder, e))),
            };
            let name = item.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let fd = match self.dir.fd() {
                Ok(fd) => fd,
                Err(e) => return Some(Err(self.backend.err("list", &self.folder, e))),
            };
            match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let mut entry = entry_from_stat(name.to_bytes().to_vec(), &st);
                    if let Some(which) = self.xattrs {
                        entry.meta.xattrs = digest_below(fd, &entry, which);
                    }
                    return Some(Ok(entry));
                }
                // Vanished between the listing and its stat: left out.
                Err(Errno::NOENT) => continue,
                Err(e) => return Some(Err(self.backend.err("list", &self.folder, e))),
            }
        }
    }
}

/// The digest of the kept extended attributes of a listed file or folder,
/// read through the listed folder's descriptor (`/proc/self/fd/N/name`
/// with calls that do not follow the name); `None` for other kinds, or
/// when they cannot be read (an open of the item reports why).
fn digest_below(
    dir: rustix::fd::BorrowedFd<'_>,
    entry: &Entry,
    which: xattr::Which,
) -> Option<u64> {
    if !matches!(entry.kind, Kind::File | Kind::Folder) {
        return None;
    }
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(OsStr::from_bytes(&entry.name));
    xattr::read(xattr::On::Path(&path), which)
        .ok()
        .map(|attrs| treeshift_core::xattr_digest(&attrs))
}

/// A file's mtime in nanoseconds.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

fn stat_mtime_ns(st: &Stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// Builds an [`Entry`] from `lstat` data.
fn entry_from_stat(name: Vec<u8>, st: &Stat) -> Entry {
    let kind = kind_of(st.st_mode);
    Entry {
        name,
        kind,
        size: if kind == Kind::Folder {
            0
        } else {
            st.st_size as u64
        },
        mtime_ns: Some(stat_mtime_ns(st)),
        meta: Meta {
            // A symlink's own mode means nothing on Linux.
            mode: (kind != Kind::Symlink).then_some(st.st_mode & 0o7777),
            uid: Some(st.st_uid),
            gid: Some(st.st_gid),
            xattrs: None,
        },
        // A folder's identity tells it from one put in its place; a file's
        // is kept only where it has other names.
        file_id: (kind == Kind::Folder || (kind == Kind::File && st.st_nlink > 1)).then_some(
            FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
        ),
        etag: None,
        md5: None,
    }
}

fn kind_of(mode: u32) -> Kind {
    match mode & 0o170000 {
        0o040000 => Kind::Folder,
        0o100000 => Kind::File,
        0o120000 => Kind::Symlink,
        // fifo, socket, block or char device (or something newer)
        _ => Kind::Special,
    }
}

#[cfg(test)]
mod tests;
