//! The write side of a local tree. Each item is staged in the folder it
//! goes to (an anonymous `O_TMPFILE` file, or a temporary name) and put in
//! place through the same folder descriptor, so the folder cannot be
//! swapped between the two steps. Metadata is set through the new file's
//! descriptor (`fchmod`, `futimens`) or with `AT_SYMLINK_NOFOLLOW`.

use super::LocalBackend;
use super::beneath::{Folder, component};
use crate::{BackendError, ErrorKind, Reader, SourceFile, Writable};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags, Timespec, Timestamps, UTIME_OMIT};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use treeshift_core::RelPath;

/// Data written into a folder of the tree but not yet in place.
#[derive(Debug)]
pub(crate) struct Staged {
    /// The folder it was written into, and goes into.
    folder: Folder,
    item: StagedItem,
    /// Its temporary path, for messages.
    temp: RelPath,
}

#[derive(Debug)]
enum StagedItem {
    /// An open file with no name yet (freed if the process dies).
    Anonymous(File),
    /// A file or symlink under this temporary name in the folder.
    Named(Vec<u8>),
}

impl Staged {
    /// Returns true if and only if the data has no name yet.
    #[cfg(test)]
    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(self.item, StagedItem::Anonymous(_))
    }
}

impl Writable for LocalBackend {
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError> {
        if path.is_root() {
            // The root's own path is the user's to choose, symlinks and all.
            std::fs::create_dir_all(self.root()).map_err(|e| self.err("create_folder", path, e))?;
            return self
                .root
                .fd()
                .map(drop)
                .map_err(|e| self.err("create_folder", path, e));
        }
        let (folder, name) = self
            .root
            .parent(path.as_bytes())
            .map_err(|e| self.err("create_folder", path, e))?;
        match rustix::fs::mkdirat(&folder, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST)
                if rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| st.st_mode & 0o170000 == 0o040000) =>
            {
                Ok(())
            }
            Err(e) => Err(self.err("create_folder", path, e)),
        }
    }

    fn write_temp(
        &self,
        temp: &RelPath,
        source: &mut SourceFile,
        anonymous: bool,
    ) -> Result<(crate::Staged, u64), BackendError> {
        let (folder, name) = self
            .root
            .parent(temp.as_bytes())
            .map_err(|e| self.err("write", temp, e))?;
        let (mut out, item) = match anonymous.then(|| self.open_anonymous(&folder)).flatten() {
            Some(file) => (file, None),
            None => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::TRUNC
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&folder, name, flags, Mode::from_raw_mode(0o600))
                    .map_err(|e| self.err("write", temp, e))?;
                (File::from(fd), Some(name.to_vec()))
            }
        };
        match fill(&mut out, source) {
            Ok(written) => {
                let item = match item {
                    None => StagedItem::Anonymous(out),
                    Some(name) => StagedItem::Named(name),
                };
                let staged = Staged {
                    folder,
                    item,
                    temp: temp.clone(),
                };
                Ok((crate::Staged(staged), written))
            }
            Err((operation, e)) => {
                if item.is_some() {
                    let _ = rustix::fs::unlinkat(&folder, name, AtFlags::empty());
                }
                Err(self.err(operation, temp, e))
            }
        }
    }

    fn symlink_temp(
        &self,
        temp: &RelPath,
        target: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<crate::Staged, BackendError> {
        let (folder, name) = self
            .root
            .parent(temp.as_bytes())
            .map_err(|e| self.err("symlink", temp, e))?;
        let _ = rustix::fs::unlinkat(&folder, name, AtFlags::empty());
        rustix::fs::symlinkat(target, &folder, name).map_err(|e| self.err("symlink", temp, e))?;
        if let Some(ns) = mtime_ns {
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: timespec(ns),
            };
            if let Err(e) = rustix::fs::utimensat(&folder, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            {
                let _ = rustix::fs::unlinkat(&folder, name, AtFlags::empty());
                return Err(self.err("set_mtime", temp, e));
            }
        }
        Ok(crate::Staged(Staged {
            folder,
            item: StagedItem::Named(name.to_vec()),
            temp: temp.clone(),
        }))
    }

    fn commit(
        &self,
        staged: crate::Staged,
        path: &RelPath,
        replace: bool,
    ) -> Result<bool, BackendError> {
        let Staged { folder, item, temp } = staged.0;
        let name = match component(path.name()) {
            Ok(name) if path.parent() == temp.parent() => name,
            _ => {
                discard(&folder, item);
                return Err(BackendError::new(
                    ErrorKind::InvalidName,
                    "commit",
                    path.to_string(),
                    format!("not a name beside its staged data {temp}"),
                ));
            }
        };
        match item {
            StagedItem::Anonymous(file) => {
                // Named through /proc: linkat never replaces, and needs no
                // privilege (unlike AT_EMPTY_PATH).
                let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                match rustix::fs::linkat(CWD, &proc_path, &folder, name, AtFlags::SYMLINK_FOLLOW) {
                    Ok(()) => Ok(true),
                    Err(Errno::EXIST) if !replace => Ok(false),
                    Err(e) => Err(self.err("link", path, e)),
                }
            }
            StagedItem::Named(temp_name) => {
                let placed = if replace {
                    rustix::fs::renameat(&folder, &temp_name, &folder, name).map(|()| true)
                } else {
                    rename_noreplace(&folder, &temp_name, name)
                };
                if !matches!(placed, Ok(true)) {
                    let _ = rustix::fs::unlinkat(&folder, &temp_name, AtFlags::empty());
                }
                placed.map_err(|e| self.err("rename", path, e))
            }
        }
    }

    fn discard(&self, staged: crate::Staged) -> Result<(), BackendError> {
        let Staged { folder, item, temp } = staged.0;
        match item {
            StagedItem::Anonymous(_) => Ok(()),
            StagedItem::Named(name) => match rustix::fs::unlinkat(&folder, &name, AtFlags::empty())
            {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(self.err("remove_temp", &temp, e)),
            },
        }
    }

    fn remove_temp(&self, temp: &RelPath) -> Result<(), BackendError> {
        let removed = self
            .root
            .parent(temp.as_bytes())
            .and_then(|(folder, name)| rustix::fs::unlinkat(&folder, name, AtFlags::empty()));
        match removed {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.err("remove_temp", temp, e)),
        }
    }

    fn move_aside(&self, path: &RelPath, to: &RelPath) -> Result<(), BackendError> {
        let moved = self.root.parent(path.as_bytes()).and_then(|(from, name)| {
            let (into, new_name) = self.root.parent(to.as_bytes())?;
            rustix::fs::renameat_with(&from, name, &into, new_name, RenameFlags::NOREPLACE)
        });
        match moved {
            // A rename across file systems, not a way out of the root.
            Err(Errno::XDEV) => Err(BackendError::new(
                ErrorKind::Unsupported,
                "move_aside",
                path.to_string(),
                format!("{to} is on another file system"),
            )),
            other => other.map_err(|e| self.err("move_aside", path, e)),
        }
    }

    fn remove(&self, path: &RelPath) -> Result<(), BackendError> {
        if path.is_root() {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "remove",
                path.to_string(),
                "the root is never removed",
            ));
        }
        let (folder, name) = self
            .root
            .parent(path.as_bytes())
            .map_err(|e| self.err("remove", path, e))?;
        let removed = match rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & 0o170000 == 0o040000 => {
                // std's remove_dir_all opens each level with O_NOFOLLOW and
                // unlinks relative to it; it gets the folder through our
                // descriptor, so the way to it is the one resolved above.
                let mut via = PathBuf::from(format!("/proc/self/fd/{}", folder_raw_fd(&folder)));
                via.push(OsStr::from_bytes(name));
                std::fs::remove_dir_all(&via)
            }
            Ok(_) => rustix::fs::unlinkat(&folder, name, AtFlags::empty()).map_err(Into::into),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        };
        removed.map_err(|e| self.err("remove", path, e))
    }

    fn set_mtime(&self, path: &RelPath, mtime_ns: i64) -> Result<(), BackendError> {
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: timespec(mtime_ns),
        };
        let set = if path.is_root() {
            self.root
                .open(b"", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .and_then(|fd| rustix::fs::futimens(&fd, &times))
        } else {
            self.root
                .parent(path.as_bytes())
                .and_then(|(folder, name)| {
                    rustix::fs::utimensat(&folder, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                })
        };
        set.map_err(|e| self.err("set_mtime", path, e))
    }
}

impl LocalBackend {
    /// An anonymous file in `folder`, if the file system has them
    /// (`O_TMPFILE`; remembered when it does not).
    fn open_anonymous(&self, folder: &Folder) -> Option<File> {
        if self.no_tmpfile.load(Ordering::Relaxed) {
            return None;
        }
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        match rustix::fs::openat(folder, c".", flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Some(File::from(fd)),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                self.no_tmpfile.store(true, Ordering::Relaxed);
                None
            }
            // Anything else (no permission) shows again, with its path, on
            // the named route.
            Err(_) => None,
        }
    }
}

fn folder_raw_fd(folder: &Folder) -> i32 {
    use std::os::fd::AsFd;
    folder.as_fd().as_raw_fd()
}

/// Drops staged data that will not be committed.
fn discard(folder: &Folder, item: StagedItem) {
    if let StagedItem::Named(name) = item {
        let _ = rustix::fs::unlinkat(folder, &name, AtFlags::empty());
    }
}

/// Copies the data, then the permission bits and the mtime, through the
/// new file's descriptor. The error carries the failing operation.
fn fill(out: &mut File, source: &mut SourceFile) -> Result<u64, (&'static str, io::Error)> {
    // File to file, std's `io::copy` uses copy_file_range (or sendfile).
    let written = match &mut source.reader {
        Reader::File(f) => io::copy(f, out),
        Reader::Stream(r) => io::copy(r, out),
    }
    .map_err(|e| ("write", e))?;
    if let Some(mode) = source.mode {
        out.set_permissions(Permissions::from_mode(mode & 0o7777))
            .map_err(|e| ("chmod", e))?;
    }
    if let Some(ns) = source.mtime_ns {
        out.set_modified(system_time(ns))
            .map_err(|e| ("set_mtime", e))?;
    }
    Ok(written)
}

/// Renames `from` to `to` in `folder` without replacing: `Ok(false)` if
/// `to` exists.
fn rename_noreplace(folder: &Folder, from: &[u8], to: &[u8]) -> Result<bool, Errno> {
    match rustix::fs::renameat_with(folder, from, folder, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        // File systems without RENAME_NOREPLACE: a hard link never
        // replaces either (a symlink is linked as itself).
        Err(Errno::INVAL | Errno::NOSYS) => {
            match rustix::fs::linkat(folder, from, folder, to, AtFlags::empty()) {
                Ok(()) => rustix::fs::unlinkat(folder, from, AtFlags::empty()).map(|()| true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

pub(super) fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}
