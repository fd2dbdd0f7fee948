//! Extended attributes (and with them POSIX ACLs, which Linux keeps as the
//! `system.posix_acl_*` attributes), read and written through a descriptor,
//! or through a path below one that does not follow its last component.

use rustix::fd::BorrowedFd;
use rustix::fs::XattrFlags;
use rustix::io::Errno;
use std::path::Path;
use treeshift_core::{Xattr, keeps_xattr};

/// Where attributes are read or written.
#[derive(Clone, Copy)]
pub(super) enum On<'a> {
    /// An open file or folder.
    Fd(BorrowedFd<'a>),
    /// A path whose last component is not followed (`l*` calls).
    Path(&'a Path),
}

/// Which attributes are kept: `(xattrs, acls)`.
pub(super) type Which = (bool, bool);

/// Calls `call` with a buffer, once more with one as large as `query`
/// says when the first was too small.
fn grow(
    mut call: impl FnMut(&mut [u8]) -> Result<usize, Errno>,
    query: impl FnOnce() -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 1024];
    let n = match call(&mut buf) {
        Err(Errno::RANGE) => {
            buf.resize(query()?.max(2048), 0);
            call(&mut buf)?
        }
        other => other?,
    };
    buf.truncate(n);
    Ok(buf)
}

fn names(on: On<'_>) -> Result<Vec<u8>, Errno> {
    match on {
        On::Fd(fd) => grow(
            |b| rustix::fs::flistxattr(fd, b),
            || rustix::fs::flistxattr(fd, &mut [0u8; 0][..]),
        ),
        On::Path(p) => grow(
            |b| rustix::fs::llistxattr(p, b),
            || rustix::fs::llistxattr(p, &mut [0u8; 0][..]),
        ),
    }
}

fn value(on: On<'_>, name: &[u8]) -> Result<Vec<u8>, Errno> {
    match on {
        On::Fd(fd) => grow(
            |b| rustix::fs::fgetxattr(fd, name, b),
            || rustix::fs::fgetxattr_query(fd, name),
        ),
        On::Path(p) => grow(
            |b| rustix::fs::lgetxattr(p, name, b),
            || rustix::fs::lgetxattr_query(p, name),
        ),
    }
}

/// The kept attributes of `on`, in the order the file system lists them.
/// A file system without attributes has none.
pub(super) fn read(on: On<'_>, (xattrs, acls): Which) -> Result<Vec<Xattr>, Errno> {
    let list = match names(on) {
        Ok(list) => list,
        Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !keeps_xattr(xattrs, acls, name) {
            continue;
        }
        match value(on, name) {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed between the listing and the read.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Makes the kept attributes of `on` exactly `attrs`: removes kept ones
/// that `attrs` lacks (such as an ACL inherited from the folder), then sets
/// every one of `attrs`.
pub(super) fn replace(on: On<'_>, attrs: &[Xattr], which: Which) -> Result<(), Errno> {
    for (name, _) in read(on, which)? {
        if !attrs.iter().any(|(n, _)| *n == name) {
            match on {
                On::Fd(fd) => rustix::fs::fremovexattr(fd, name.as_slice()),
                On::Path(p) => rustix::fs::lremovexattr(p, name.as_slice()),
            }
            .or_else(|e| if e == Errno::NODATA { Ok(()) } else { Err(e) })?;
        }
    }
    for (name, value) in attrs {
        match on {
            On::Fd(fd) => rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()),
            On::Path(p) => rustix::fs::lsetxattr(p, name.as_slice(), value, XattrFlags::empty()),
        }?;
    }
    Ok(())
}
