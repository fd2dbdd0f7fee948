//! The write side of an SFTP tree: every item is made under its temporary
//! name, given its metadata, and renamed into place (see `mod.rs`).

use super::protocol::{self, Attrs};
use super::session::{Fail, Session, expect_ok};
use super::{SftpBackend, entry, files};
use crate::{Apply, Backend, BackendError, Check, ErrorKind, SourceFile, Writable, Written};
use files::WriteFail;
use treeshift_core::{Kind, RelPath};

impl Writable for SftpBackend {
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError> {
        let session = self.session("create_folder", path)?;
        let full = self.full(path);
        // The root is made with its missing ancestors.
        let mut ancestors: Vec<&[u8]> = vec![&full];
        if path.is_root() {
            ancestors = (1..full.len())
                .filter(|&i| full[i] == b'/')
                .map(|i| &full[..i])
                .chain([&full[..]])
                .collect();
        }
        for folder in ancestors {
            let mkdir = session.status(protocol::MKDIR, |r| {
                r.bytes(folder).attrs(&Attrs::default())
            });
            if let Err(fail) = mkdir {
                // v3 has no "exists" status: look.
                let is_folder = session
                    .attrs(protocol::STAT, |r| r.bytes(folder))
                    .is_ok_and(|a| a.mode.map(|m| m & 0o170000) == Some(0o040000));
                if !is_folder {
                    return Err(self.error("create_folder", path, fail));
                }
            }
        }
        Ok(())
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
        let session = self.session("write", path)?;
        let steps = self.attr_steps(apply, false, path)?;
        let temp_full = self.full(temp);
        let handle = session
            .handle(protocol::OPEN, |r| {
                r.bytes(&temp_full)
                    .u32(protocol::OPEN_WRITE | protocol::OPEN_CREATE | protocol::OPEN_TRUNCATE)
                    .attrs(&Attrs::default())
            })
            .map_err(|fail| self.write_error(&session, path, source.size, fail))?;
        let outcome = self
            .fill_and_close(&session, &handle, path, source, &steps)
            .and_then(|bytes| {
                if let Some(why) = check(source, bytes) {
                    return Ok(Written::Changed(why));
                }
                match self.put_in_place(&session, temp, path, replace) {
                    Ok(true) => Ok(Written::Done { bytes, etag: None }),
                    Ok(false) => Ok(Written::Occupied),
                    Err(fail) => Err(self.error("write", path, fail)),
                }
            });
        if !matches!(outcome, Ok(Written::Done { .. })) {
            let _ = session.status(protocol::REMOVE, |r| r.bytes(&temp_full));
        }
        outcome
    }

    fn symlink(
        &self,
        path: &RelPath,
        temp: &RelPath,
        target: &[u8],
        replace: bool,
        apply: &Apply,
    ) -> Result<Written, BackendError> {
        let session = self.session("symlink", path)?;
        let temp_full = self.full(temp);
        // OpenSSH takes the target first, against the draft's order, and
        // other servers followed it.
        session
            .status(protocol::SYMLINK, |r| r.bytes(target).bytes(&temp_full))
            .map_err(|fail| self.error("symlink", path, fail))?;
        let outcome = self
            .set_attrs(&session, AttrTarget::Symlink(&temp_full), apply, path)
            .and_then(
                |()| match self.put_in_place(&session, temp, path, replace) {
                    Ok(true) => Ok(Written::Done {
                        bytes: 0,
                        etag: None,
                    }),
                    Ok(false) => Ok(Written::Occupied),
                    Err(fail) => Err(self.error("symlink", path, fail)),
                },
            );
        if !matches!(outcome, Ok(Written::Done { .. })) {
            let _ = session.status(protocol::REMOVE, |r| r.bytes(&temp_full));
        }
        outcome
    }

    fn remove_temp(&self, temp: &RelPath) -> Result<(), BackendError> {
        let session = self.session("remove_temp", temp)?;
        let full = self.full(temp);
        match session.status(protocol::REMOVE, |r| r.bytes(&full)) {
            Ok(())
            | Err(Fail::Status {
                code: protocol::NO_SUCH_FILE,
                ..
            }) => Ok(()),
            Err(fail) => Err(self.error("remove_temp", temp, fail)),
        }
    }

    fn move_aside(&self, path: &RelPath, to: &RelPath) -> Result<(), BackendError> {
        let session = self.session("move_aside", path)?;
        match self.put_in_place(&session, path, to, false) {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackendError::new(
                ErrorKind::Other,
                "move_aside",
                path.to_string(),
                format!("{to} is already there"),
            )),
            Err(fail) => Err(self.error("move_aside", path, fail)),
        }
    }

    fn remove(&self, path: &RelPath) -> Result<(), BackendError> {
        let session = self.session("remove", path)?;
        let fail = |fail| self.error("remove", path, fail);
        // Depth first, one folder's names in memory at a time per level.
        let mut stack = vec![(path.clone(), false)];
        while let Some((item, emptied)) = stack.pop() {
            let full = self.full(&item);
            if emptied {
                session
                    .status(protocol::RMDIR, |r| r.bytes(&full))
                    .map_err(fail)?;
                continue;
            }
            let Some(attrs) = self.lstat(&session, &item).map_err(fail)? else {
                continue;
            };
            if entry(Vec::new(), &attrs).kind != Kind::Folder {
                session
                    .status(protocol::REMOVE, |r| r.bytes(&full))
                    .map_err(fail)?;
                continue;
            }
            stack.push((item.clone(), true));
            for child in self.list_children(&item)? {
                stack.push((item.join(&child?.name), false));
            }
        }
        Ok(())
    }

    fn hard_link(
        &self,
        existing: &RelPath,
        path: &RelPath,
        temp: &RelPath,
        replace: bool,
    ) -> Result<bool, BackendError> {
        let session = self.session("hard_link", path)?;
        if !session.extensions.hardlink {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "hard_link",
                path.to_string(),
                "this SFTP server cannot make hard links (no hardlink@openssh.com)",
            ));
        }
        let fail = |fail| self.error("hard_link", path, fail);
        let existing_full = self.full(existing);
        let at = if replace { temp } else { path };
        let at_full = self.full(at);
        let linked = session.extended("hardlink@openssh.com", |r| {
            r.bytes(&existing_full).bytes(&at_full)
        });
        if let Err(e) = linked {
            if !replace && self.lstat(&session, path).map_err(fail)?.is_some() {
                return Ok(false);
            }
            return Err(fail(e));
        }
        if replace {
            self.put_in_place(&session, temp, path, true)
                .map_err(fail)?;
        }
        Ok(true)
    }

    fn set_metadata(&self, path: &RelPath, apply: &Apply) -> Result<(), BackendError> {
        let session = self.session("set_metadata", path)?;
        let full = self.full(path);
        let attrs = self
            .lstat(&session, path)
            .map_err(|fail| self.error("set_metadata", path, fail))?;
        let target = match attrs.map(|a| entry(Vec::new(), &a).kind) {
            Some(Kind::Symlink) => AttrTarget::Symlink(&full),
            _ => AttrTarget::Path(&full),
        };
        self.set_attrs(&session, target, apply, path)
    }
}

impl SftpBackend {
    /// Sends the data of `source` through the open `handle`, then the flush
    /// to the server's disk, the metadata and the close, one after another
    /// without waiting (the server answers them in order: a file costs two
    /// round trips besides its open and rename, not one per step); then
    /// waits for every answer. The bytes written.
    fn fill_and_close(
        &self,
        session: &Session,
        handle: &[u8],
        path: &RelPath,
        source: &mut SourceFile,
        steps: &[Attrs],
    ) -> Result<u64, BackendError> {
        let refused = |fail| self.write_error(session, path, source.size, fail);
        let (bytes, mut pending) = match files::write_from(session, handle, &mut source.reader) {
            Ok(sent) => sent,
            Err(e) => {
                session.close_later(handle);
                return Err(match e {
                    WriteFail::Source(e) => BackendError::from_io("read", path.to_string(), &e),
                    WriteFail::Remote(fail) => refused(fail),
                });
            }
        };
        let sent = (|| {
            if session.extensions.fsync {
                let fsync = b"fsync@openssh.com";
                pending
                    .push_back(session.send(protocol::EXTENDED, |r| r.bytes(fsync).bytes(handle))?);
            }
            for attrs in steps {
                pending
                    .push_back(session.send(protocol::FSETSTAT, |r| r.bytes(handle).attrs(attrs))?);
            }
            pending.push_back(session.send(protocol::CLOSE, |r| r.bytes(handle))?);
            Ok(())
        })();
        // Every answer is taken; the first failure is the one reported.
        let mut first = sent.err();
        for reply in pending {
            if let Err(fail) = reply.wait().and_then(expect_ok) {
                first.get_or_insert(fail);
            }
        }
        match first {
            None => Ok(bytes),
            Some(fail) => Err(refused(fail)),
        }
    }

    /// Renames `from` to `to`: replacing what is there with `posix-rename`
    /// when `replace` (or removing it first, where the server lacks that),
    /// else with SFTP's own rename, which fails if `to` exists. `Ok(false)`:
    /// `to` exists and `replace` is false.
    fn put_in_place(
        &self,
        session: &Session,
        from: &RelPath,
        to: &RelPath,
        replace: bool,
    ) -> Result<bool, Fail> {
        let (from_full, to_full) = (self.full(from), self.full(to));
        if replace && session.extensions.posix_rename {
            session.extended("posix-rename@openssh.com", |r| {
                r.bytes(&from_full).bytes(&to_full)
            })?;
            return Ok(true);
        }
        if replace {
            match session.status(protocol::REMOVE, |r| r.bytes(&to_full)) {
                Ok(())
                | Err(Fail::Status {
                    code: protocol::NO_SUCH_FILE,
                    ..
                }) => {}
                Err(fail) => return Err(fail),
            }
        }
        match session.status(protocol::RENAME, |r| r.bytes(&from_full).bytes(&to_full)) {
            Ok(()) => Ok(true),
            // v3 has no "exists" status: look.
            Err(_) if !replace && self.lstat(session, to)?.is_some() => Ok(false),
            Err(fail) => Err(fail),
        }
    }

    /// Sets the owner, mode and mtime `apply` asks for on `target`: at a
    /// path, or on a symlink itself (where the server can; otherwise a
    /// symlink keeps what it was made with).
    fn set_attrs(
        &self,
        session: &Session,
        target: AttrTarget<'_>,
        apply: &Apply,
        path: &RelPath,
    ) -> Result<(), BackendError> {
        let steps = self.attr_steps(apply, matches!(target, AttrTarget::Symlink(_)), path)?;
        for attrs in steps {
            let done = match target {
                AttrTarget::Path(full) => {
                    session.status(protocol::SETSTAT, |r| r.bytes(full).attrs(&attrs))
                }
                AttrTarget::Symlink(full) if session.extensions.lsetstat => session
                    .extended("lsetstat@openssh.com", |r| r.bytes(full).attrs(&attrs))
                    .map(drop),
                AttrTarget::Symlink(_) => Ok(()),
            };
            done.map_err(|fail| self.error("set_metadata", path, fail))?;
        }
        Ok(())
    }

    /// The requests that set what `apply` asks for (a symlink has no mode
    /// of its own): one, unless setuid or setgid must survive the change
    /// of owner; then the owner goes first, alone (servers apply the parts
    /// of one request in their own order, OpenSSH the owner last).
    fn attr_steps(
        &self,
        apply: &Apply,
        symlink: bool,
        path: &RelPath,
    ) -> Result<Vec<Attrs>, BackendError> {
        let times = apply
            .mtime_ns
            .map(|ns| mtime_secs(ns).ok_or_else(|| self.out_of_range(path, ns)))
            .transpose()?;
        let all = Attrs {
            owner: apply.owner,
            mode: apply.mode.filter(|_| !symlink),
            times: times.map(|t| (t, t)),
            ..Attrs::default()
        };
        Ok(match all.mode {
            Some(mode) if mode & 0o6000 != 0 && all.owner.is_some() => vec![
                Attrs {
                    owner: all.owner,
                    ..Attrs::default()
                },
                Attrs { owner: None, ..all },
            ],
            _ if all == Attrs::default() => Vec::new(),
            _ => vec![all],
        })
    }

    fn out_of_range(&self, path: &RelPath, ns: i64) -> BackendError {
        BackendError::new(
            ErrorKind::Unsupported,
            "set_metadata",
            path.to_string(),
            format!(
                "the mtime {}s is outside what SFTP holds (1970 to 2106)",
                ns.div_euclid(1_000_000_000)
            ),
        )
    }

    /// Tells a full disk from another failure of a write: version 3 says
    /// "failure" for both, so the server's free space is asked. By then
    /// other writes that failed alike may have freed their temporaries, so
    /// a disk nearly full counts as full: less free than the file being
    /// written, or than `NEARLY_FULL`.
    fn write_error(
        &self,
        session: &Session,
        path: &RelPath,
        size: u64,
        fail: Fail,
    ) -> BackendError {
        let mut error = self.error("write", path, fail);
        if error.kind == ErrorKind::Other && session.extensions.statvfs {
            let root = self.full(&RelPath::root());
            let available = session
                .extended("statvfs@openssh.com", |r| r.bytes(&root))
                .ok()
                .and_then(|body| protocol::parse_statvfs_available(&body).ok());
            if available.is_some_and(|a| a < size.max(NEARLY_FULL)) {
                error.kind = ErrorKind::NoSpace;
                error.message.push_str(": the server's disk is full");
            }
        }
        error
    }
}

/// Free bytes under which a server's disk counts as full, where a write
/// was refused.
const NEARLY_FULL: u64 = 64 << 20;

/// Where metadata is set by path.
#[derive(Clone, Copy)]
enum AttrTarget<'a> {
    Path(&'a [u8]),
    Symlink(&'a [u8]),
}

/// An mtime in whole seconds as v3 holds it, if it can.
fn mtime_secs(ns: i64) -> Option<u32> {
    u32::try_from(ns.div_euclid(1_000_000_000)).ok()
}
