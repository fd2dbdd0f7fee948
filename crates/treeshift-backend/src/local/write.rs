//! The write side of a local tree. Each item is staged in the folder it
//! goes to (an anonymous `O_TMPFILE` file, or a temporary name) and put in
//! place through the same folder descriptor, so the folder cannot be
//! swapped between the two steps. Metadata is set through the new file's
//! descriptor (`fchmod`, `futimens`) or with `AT_SYMLINK_NOFOLLOW`.

use super::LocalBackend;
use super::beneath::{Folder, component};
use super::sparse;
use super::xattr;
use crate::{Apply, BackendError, Check, ErrorKind, Reader, SourceFile, Writable, Written};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{
    AtFlags, CWD, Gid, Mode, OFlags, RenameFlags, Timespec, Timestamps, UTIME_OMIT, Uid,
};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use treeshift_core::RelPath;

/// Data written into a folder of the tree but not yet in place.
#[derive(Debug)]
pub(super) struct Staged {
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

    fn write(
        &self,
        path: &RelPath,
        temp: &RelPath,
        source: &mut SourceFile,
        replace: bool,
        apply: &Apply,
        check: Check<'_>,
    ) -> Result<Written, BackendError> {
        // An anonymous file cannot replace: a replacement is staged under
        // `temp` and renamed over.
        let (staged, bytes) = self.stage_file(temp, source, !replace, apply)?;
        if let Some(why) = check(source, bytes) {
            self.discard(staged)?;
            return Ok(Written::Changed(why));
        }
        Ok(if self.commit(staged, path, replace)? {
            Written::Done { bytes, etag: None }
        } else {
            Written::Occupied
        })
    }

    fn symlink(
        &self,
        path: &RelPath,
        temp: &RelPath,
        target: &[u8],
        replace: bool,
        apply: &Apply,
    ) -> Result<Written, BackendError> {
        let staged = self.stage_symlink(temp, target, apply)?;
        Ok(if self.commit(staged, path, replace)? {
            Written::Done {
                bytes: 0,
                etag: None,
            }
        } else {
            Written::Occupied
        })
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

    fn hard_link(
        &self,
        existing: &RelPath,
        path: &RelPath,
        temp: &RelPath,
        replace: bool,
    ) -> Result<bool, BackendError> {
        let (from, from_name) = self
            .root
            .parent(existing.as_bytes())
            .map_err(|e| self.err("hard_link", existing, e))?;
        let (into, name) = self
            .root
            .parent(path.as_bytes())
            .map_err(|e| self.err("hard_link", path, e))?;
        if !replace {
            return match rustix::fs::linkat(&from, from_name, &into, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(self.err("hard_link", path, e)),
            };
        }
        let temp_name = component(temp.name())
            .ok()
            .filter(|_| temp.parent() == path.parent())
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::InvalidName,
                    "hard_link",
                    temp.to_string(),
                    format!("not a name beside {path}"),
                )
            })?;
        let _ = rustix::fs::unlinkat(&into, temp_name, AtFlags::empty());
        let linked = rustix::fs::linkat(&from, from_name, &into, temp_name, AtFlags::empty())
            .and_then(|()| rustix::fs::renameat(&into, temp_name, &into, name));
        // Renaming a name over another name of the same file does nothing,
        // and leaves the temporary: it goes either way.
        let _ = rustix::fs::unlinkat(&into, temp_name, AtFlags::empty());
        linked
            .map(|()| true)
            .map_err(|e| self.err("hard_link", path, e))
    }

    fn set_metadata(&self, path: &RelPath, apply: &Apply) -> Result<(), BackendError> {
        let which = self.kept_xattrs();
        if path.is_root() {
            let fd = self
                .root
                .open(b"", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .map_err(|e| self.err("set_metadata", path, e))?;
            return apply_to(fd.as_fd(), apply, which).map_err(|(op, e)| self.err(op, path, e));
        }
        let (folder, name) = self
            .root
            .parent(path.as_bytes())
            .map_err(|e| self.err("set_metadata", path, e))?;
        let st = rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.err("set_metadata", path, e))?;
        match st.st_mode & 0o170000 {
            0o120000 => apply_to_symlink(&folder, name, apply),
            0o100000 | 0o040000 => {
                // The item's own descriptor (O_NOFOLLOW: a symlink swapped in
                // since the stat fails here).
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                rustix::fs::openat(&folder, name, flags, Mode::empty())
                    .map_err(|e| ("set_metadata", e))
                    .and_then(|fd| apply_to(fd.as_fd(), apply, which))
            }
            _ => Err(("set_metadata", Errno::OPNOTSUPP)),
        }
        .map_err(|(op, e)| self.err(op, path, e))
    }
}

impl LocalBackend {
    pub(super) fn stage_file(
        &self,
        temp: &RelPath,
        source: &mut SourceFile,
        anonymous: bool,
        apply: &Apply,
    ) -> Result<(Staged, u64), BackendError> {
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
        let filled = fill(&mut out, source, &self.no_copy_range).and_then(|written| {
            apply_to(out.as_fd(), apply, self.kept_xattrs())
                .map(|()| written)
                .map_err(|(op, e)| (op, e.into()))
        });
        match filled {
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
                Ok((staged, written))
            }
            Err((operation, e)) => {
                if item.is_some() {
                    let _ = rustix::fs::unlinkat(&folder, name, AtFlags::empty());
                }
                Err(self.err(operation, temp, e))
            }
        }
    }

    fn stage_symlink(
        &self,
        temp: &RelPath,
        target: &[u8],
        apply: &Apply,
    ) -> Result<Staged, BackendError> {
        let (folder, name) = self
            .root
            .parent(temp.as_bytes())
            .map_err(|e| self.err("symlink", temp, e))?;
        let _ = rustix::fs::unlinkat(&folder, name, AtFlags::empty());
        rustix::fs::symlinkat(target, &folder, name).map_err(|e| self.err("symlink", temp, e))?;
        if let Err((operation, e)) = apply_to_symlink(&folder, name, apply) {
            let _ = rustix::fs::unlinkat(&folder, name, AtFlags::empty());
            return Err(self.err(operation, temp, e));
        }
        Ok(Staged {
            folder,
            item: StagedItem::Named(name.to_vec()),
            temp: temp.clone(),
        })
    }

    fn commit(&self, staged: Staged, path: &RelPath, replace: bool) -> Result<bool, BackendError> {
        let Staged { folder, item, temp } = staged;
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

    fn discard(&self, staged: Staged) -> Result<(), BackendError> {
        let Staged { folder, item, temp } = staged;
        match item {
            StagedItem::Anonymous(_) => Ok(()),
            StagedItem::Named(name) => match rustix::fs::unlinkat(&folder, &name, AtFlags::empty())
            {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(self.err("remove_temp", &temp, e)),
            },
        }
    }

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

/// Copies the data; a file with holes keeps them. The error carries the
/// failing operation.
fn fill(
    out: &mut File,
    source: &mut SourceFile,
    no_copy_range: &AtomicBool,
) -> Result<u64, (&'static str, io::Error)> {
    let write = |e| ("write", e);
    match &mut source.reader {
        Reader::File(f) if source.holes => {
            if let Some(len) = sparse::copy_ranges(f, out, source.size).map_err(write)? {
                return Ok(len);
            }
            io::copy(f, out).map_err(write)
        }
        // File to file in the kernel (it reflinks where the file system
        // can), without std's probing of both files first.
        Reader::File(f) if !no_copy_range.load(Ordering::Relaxed) => {
            match sparse::copy_whole(f, out).map_err(write)? {
                Some(n) => Ok(n),
                None => {
                    no_copy_range.store(true, Ordering::Relaxed);
                    io::copy(f, out).map_err(write)
                }
            }
        }
        Reader::File(f) => io::copy(f, out).map_err(write),
        Reader::Stream(r) => io::copy(r, out).map_err(write),
    }
}

/// Sets `apply` on an open file or folder, in the order that leaves each
/// part as asked: the owner first (changing it clears setuid and setgid),
/// then the extended attributes (an ACL sets the group bits from its
/// mask), then the mode, last the mtime (every other change touches it).
fn apply_to(
    fd: BorrowedFd<'_>,
    apply: &Apply,
    which: Option<xattr::Which>,
) -> Result<(), (&'static str, Errno)> {
    if let Some((uid, gid)) = apply.owner {
        rustix::fs::fchown(fd, owner(uid), group(gid)).map_err(|e| ("chown", e))?;
    }
    if let (Some(attrs), Some(which)) = (&apply.xattrs, which) {
        xattr::replace(xattr::On::Fd(fd), attrs, which).map_err(|e| ("set_xattrs", e))?;
    }
    if let Some(mode) = apply.mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777)).map_err(|e| ("chmod", e))?;
    }
    if let Some(ns) = apply.mtime_ns {
        rustix::fs::futimens(fd, &mtime_only(ns)).map_err(|e| ("set_mtime", e))?;
    }
    Ok(())
}

/// Sets the owner and mtime of the symlink `name` in `folder` (a symlink
/// has no mode of its own, and no attributes of the kept kinds).
fn apply_to_symlink(
    folder: &Folder,
    name: &[u8],
    apply: &Apply,
) -> Result<(), (&'static str, Errno)> {
    if let Some((uid, gid)) = apply.owner {
        rustix::fs::chownat(
            folder,
            name,
            owner(uid),
            group(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ("chown", e))?;
    }
    if let Some(ns) = apply.mtime_ns {
        rustix::fs::utimensat(folder, name, &mtime_only(ns), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ("set_mtime", e))?;
    }
    Ok(())
}

/// `-1` means "leave as is" to chown; no item is owned by it.
fn owner(uid: u32) -> Option<Uid> {
    (uid != u32::MAX).then(|| Uid::from_raw(uid))
}

fn group(gid: u32) -> Option<Gid> {
    (gid != u32::MAX).then(|| Gid::from_raw(gid))
}

fn mtime_only(ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: timespec(ns),
    }
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

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}
