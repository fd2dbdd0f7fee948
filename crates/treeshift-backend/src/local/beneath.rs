//! Confinement: every path is resolved beneath the root's descriptor, and no
//! symlink is followed in any component.
//!
//! treeshift often runs as root on trees other people can write to. A
//! folder swapped for a symlink between discovery and copy must not lead a
//! read or a write out of the tree, so no operation ever hands the kernel a
//! full path to resolve. The root is opened once (its own path may go
//! through symlinks: the user chose it) and kept open; every other path is
//! opened relative to it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//! | RESOLVE_NO_MAGICLINKS)`, or, where the kernel has no `openat2`, by a
//! walk from the root's descriptor with `O_NOFOLLOW | O_DIRECTORY` per
//! component. The last step of every operation is a `*at` call on the
//! folder's descriptor that does not follow a symlink either.
//!
//! What this does not defend against: someone who can replace the root
//! folders themselves, and a folder moved out of the tree (by someone
//! allowed to write to its parent) while an operation inside it runs; see
//! docs/SECURITY.md.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The most bytes of a relative path resolved in one step: `openat2` takes
/// at most PATH_MAX (4096 with the terminating zero), so deeper paths are
/// opened in steps, each beneath the last.
const STEP: usize = 3900;

/// The root of a local tree and the way to everything beneath it.
#[derive(Debug)]
pub(super) struct Root {
    path: PathBuf,
    /// The root's descriptor, opened once it exists and then kept: a root
    /// swapped later is not followed.
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Set once the kernel said it has no `openat2`.
    walk: AtomicBool,
}

/// An open folder inside the tree: the root itself, or one below it.
#[derive(Debug)]
pub(super) enum Folder {
    /// The root's own descriptor.
    Root(Arc<OwnedFd>),
    /// A folder opened beneath it.
    Below(OwnedFd),
}

impl AsFd for Folder {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Folder::Root(fd) => fd.as_fd(),
            Folder::Below(fd) => fd.as_fd(),
        }
    }
}

impl Root {
    pub(super) fn new(path: PathBuf) -> Self {
        Root {
            path,
            fd: Mutex::new(None),
            walk: AtomicBool::new(false),
        }
    }

    /// A root that resolves by walking component by component, as on a
    /// kernel without `openat2` (tests run both ways).
    #[cfg(test)]
    pub(super) fn walking(path: PathBuf) -> Self {
        let root = Root::new(path);
        root.walk.store(true, Ordering::Relaxed);
        root
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The root's descriptor (`O_PATH`), opened on first use.
    pub(super) fn fd(&self) -> Result<Arc<OwnedFd>, Errno> {
        let mut slot = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = &*slot {
            return Ok(Arc::clone(fd));
        }
        let fd = Arc::new(rustix::fs::open(
            &self.path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
        *slot = Some(Arc::clone(&fd));
        Ok(fd)
    }

    /// Opens `rel` beneath the root with `flags` (`O_CLOEXEC` and
    /// `O_NOFOLLOW` are added), following no symlink on the way or at the
    /// end. A symlink anywhere is `ELOOP`, a path that would climb out is
    /// `EXDEV`, a file where a folder should be is `ENOTDIR`.
    pub(super) fn open(&self, rel: &[u8], flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        let root = self.fd()?;
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if rel.is_empty() {
            return rustix::fs::openat(&*root, c".", flags, mode);
        }
        // `RESOLVE_BENEATH` allows `a/../b`; no stored path holds one, and
        // none is let through.
        for part in rel.split(|&b| b == b'/') {
            component(part)?;
        }
        let opened = if self.walk.load(Ordering::Relaxed) {
            walk(&root, rel, flags, mode)
        } else {
            match open_beneath(&root, rel, flags, mode) {
                Err(Errno::NOSYS) => {
                    self.walk.store(true, Ordering::Relaxed);
                    walk(&root, rel, flags, mode)
                }
                other => other,
            }
        };
        match opened {
            // `O_DIRECTORY` on a symlink says "not a folder"; say which it
            // is (a symlink is opened as itself with `O_PATH`).
            Err(Errno::NOTDIR) if flags.contains(OFlags::DIRECTORY) => {
                match self.open(rel, OFlags::PATH, Mode::empty()) {
                    Err(Errno::LOOP) => Err(Errno::LOOP),
                    _ => Err(Errno::NOTDIR),
                }
            }
            other => other,
        }
    }

    /// The folder holding `rel` (never the root itself), opened `O_PATH`,
    /// and `rel`'s last name.
    pub(super) fn parent<'p>(&self, rel: &'p [u8]) -> Result<(Folder, &'p [u8]), Errno> {
        match rel.iter().rposition(|&b| b == b'/') {
            None => Ok((Folder::Root(self.fd()?), component(rel)?)),
            Some(cut) => {
                let folder =
                    self.open(&rel[..cut], OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                Ok((Folder::Below(folder), component(&rel[cut + 1..])?))
            }
        }
    }
}

/// `openat2` beneath `root`, in steps for paths longer than one call takes.
fn open_beneath(root: &OwnedFd, rel: &[u8], flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let step_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut anchor: Option<OwnedFd> = None;
    let mut rest = rel;
    while rest.len() > STEP {
        let cut = rest[..STEP]
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or(Errno::NAMETOOLONG)?;
        let base = anchor.as_ref().unwrap_or(root);
        anchor = Some(rustix::fs::openat2(
            base,
            &rest[..cut],
            step_flags,
            Mode::empty(),
            resolve,
        )?);
        rest = &rest[cut + 1..];
    }
    let base = anchor.as_ref().unwrap_or(root);
    let fd = rustix::fs::openat2(base, rest, flags, mode, resolve)?;
    refuse_symlink(fd, flags)
}

/// `O_PATH | O_NOFOLLOW` opens a symlink at the end of a path as itself
/// instead of failing: refuse it, as every other open does.
fn refuse_symlink(fd: OwnedFd, flags: OFlags) -> Result<OwnedFd, Errno> {
    if flags.contains(OFlags::PATH) && rustix::fs::fstat(&fd)?.st_mode & 0o170000 == 0o120000 {
        return Err(Errno::LOOP);
    }
    Ok(fd)
}

/// The same, one component at a time, for kernels without `openat2`.
fn walk(root: &OwnedFd, rel: &[u8], flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let mut parts = rel.split(|&b| b == b'/').peekable();
    let mut here: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let part = component(part)?;
        let base = here.as_ref().unwrap_or(root);
        if parts.peek().is_some() {
            here = Some(rustix::fs::openat(
                base,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
            continue;
        }
        return refuse_symlink(rustix::fs::openat(base, part, flags, mode)?, flags);
    }
    Err(Errno::INVAL)
}

/// A name that can be one path component: not empty, not `.` or `..`, no
/// `/` or NUL. Anything else never reaches the kernel.
pub(super) fn component(name: &[u8]) -> Result<&[u8], Errno> {
    match name {
        b"" | b"." => Err(Errno::INVAL),
        b".." => Err(Errno::XDEV),
        _ if name.contains(&0) || name.contains(&b'/') => Err(Errno::INVAL),
        _ => Ok(name),
    }
}
