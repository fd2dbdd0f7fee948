//! A tree on an SFTP server, reached through the system `ssh` client.
//!
//! treeshift speaks SFTP (version 3, with OpenSSH's extensions) itself,
//! because names must stay raw bytes (see `protocol.rs`) and a file's mtime,
//! mode and owner must be set, which OpenDAL's SFTP service does not do.
//!
//! A file is written to its temporary name, flushed (`fsync@openssh.com`),
//! given its owner, mode and mtime, and then renamed into place: a plain
//! SFTP rename where the plan creates (the protocol refuses to replace, so
//! nothing someone put there meanwhile is lost), `posix-rename` where the
//! plan replaces. A kill leaves at most the temporary, which the resumed
//! copy removes. Version 3 carries whole seconds: sub-second mtimes are
//! lost, as they are to rclone and `sftp -p`; comparison is to the second.

mod files;
mod location;
mod protocol;
mod session;
mod write;

pub(crate) use location::SftpLocation;

use crate::RequestCounts;
use crate::traffic::Pace;
use crate::{
    Backend, BackendError, Capabilities, Children, ErrorKind, Reader, SourceFile, Writable,
};
use files::RemoteRead;
use protocol::{Attrs, NameEntry, Reply};
use session::{Extensions, Fail, Session, Traffic, unexpected};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use treeshift_core::{Entry, Kind, Meta, RelPath, Secret, Secrets};

/// A private key in an anonymous memory file (nothing on disk, gone with
/// the process however it ends), readable by its owner only, as `ssh`
/// demands; and the path `ssh` opens it by. `/dev/fd` would not do: `ssh`
/// closes every descriptor it did not open as it starts.
fn key_in_memory(key: &Secret) -> std::io::Result<(std::fs::File, String)> {
    use rustix::fs::{MemfdFlags, Mode};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::memfd_create("treeshift-ssh-key", MemfdFlags::CLOEXEC)?;
    rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(key.expose().as_bytes())?;
    let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    Ok((file, path))
}

/// A tree under a path on an SFTP server.
pub struct SftpBackend {
    location: SftpLocation,
    /// Sessions, opened when first needed and again after one is lost.
    sessions: Vec<Mutex<Option<Arc<Session>>>>,
    /// What the server offers, once a session has said.
    extensions: OnceLock<Extensions>,
    traffic: Arc<Traffic>,
    /// The private key given as a secret, in memory only; `ssh` reads it
    /// through this process's `/proc` entry for the descriptor.
    _key_in_memory: Option<std::fs::File>,
}

/// Requests waiting on the least busy session at which another is opened.
/// One session carries many requests at once, so more sessions do not
/// shorten waits on a long link; they help where one session's channel
/// window caps a transfer (a file read keeps up to 32 chunks asked for, so
/// a second large file gets a session of its own) or where the server is
/// slow to answer (requests pile up). Each costs a key exchange, which
/// takes the ssh client and server more CPU than a small tree's listing:
/// opening one whenever every session had a request waiting made a
/// no-op discovery of 2,000 files over 4 sessions slower than over one
/// (BENCHMARKS.md).
const OPEN_ANOTHER_AT: usize = 16;

/// The name of the secret that holds a private key's content.
pub(crate) const PRIVATE_KEY: &str = "SSH_PRIVATE_KEY";

impl std::fmt::Debug for SftpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpBackend")
            .field("location", &self.location.to_string())
            .finish()
    }
}

impl SftpBackend {
    /// Parses the location; nothing is connected until first used. At
    /// most `tps` requests a second go to the server, across all sessions.
    /// A private key among `secrets` is used instead of the file `key=`
    /// names (which may be gone).
    pub fn open(
        text: &str,
        tps: Option<u32>,
        secrets: &Secrets,
    ) -> Result<SftpBackend, BackendError> {
        let mut location = SftpLocation::parse(text)?;
        let key_in_memory = match secrets.get(PRIVATE_KEY) {
            Some(key) => {
                let (file, path) = key_in_memory(key)
                    .map_err(|e| BackendError::from_io("open", location.to_string(), &e))?;
                location.target.key = Some(path);
                Some(file)
            }
            None => None,
        };
        let sessions = (0..location.connections)
            .map(|_| Mutex::new(None))
            .collect();
        Ok(SftpBackend {
            location,
            sessions,
            extensions: OnceLock::new(),
            traffic: Arc::new(Traffic {
                pace: Pace::new(tps),
                counts: Default::default(),
            }),
            _key_in_memory: key_in_memory,
        })
    }

    /// A live session: the least busy one, or a new one where even that
    /// one has [`OPEN_ANOTHER_AT`] requests waiting and the location allows
    /// more. A lost session is replaced.
    fn session(
        &self,
        operation: &'static str,
        path: &RelPath,
    ) -> Result<Arc<Session>, BackendError> {
        let mut least: Option<Arc<Session>> = None;
        let mut free = None;
        for (i, slot) in self.sessions.iter().enumerate() {
            // A slot being connected is neither used nor free.
            let Ok(slot) = slot.try_lock() else { continue };
            match slot.as_ref().filter(|s| !s.is_lost()) {
                Some(s) if least.as_ref().is_none_or(|l| s.in_flight() < l.in_flight()) => {
                    least = Some(Arc::clone(s));
                }
                Some(_) => {}
                None => free = free.or(Some(i)),
            }
        }
        match (least, free) {
            (Some(s), _) if s.in_flight() < OPEN_ANOTHER_AT => return Ok(s),
            (Some(s), None) => return Ok(s),
            (None, None) => free = Some(0),
            _ => {}
        }
        let mut slot = self.sessions[free.unwrap()].lock().unwrap();
        if let Some(session) = slot.as_ref().filter(|s| !s.is_lost()) {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(
            Session::connect(&self.location.target, Arc::clone(&self.traffic))
                .map_err(|fail| self.error(operation, path, fail))?,
        );
        *slot = Some(Arc::clone(&session));
        let _ = self.extensions.set(session.extensions);
        Ok(session)
    }

    /// The server's path of `path`.
    fn full(&self, path: &RelPath) -> Vec<u8> {
        let mut full = self.location.root.clone();
        if !path.is_root() {
            if full != b"/" {
                full.push(b'/');
            }
            full.extend_from_slice(path.as_bytes());
        }
        full
    }

    fn error(&self, operation: &'static str, path: &RelPath, fail: Fail) -> BackendError {
        let (kind, message) = match fail {
            Fail::Status { code, message } => (status_kind(code), status_message(code, message)),
            Fail::Lost(said) => (lost_kind(&said), said),
            Fail::Protocol(what) => (ErrorKind::Other, format!("SFTP: {what}")),
        };
        BackendError::new(kind, operation, path.to_string(), message)
    }

    /// `lstat`, `None` where nothing is there.
    fn lstat(&self, session: &Session, path: &RelPath) -> Result<Option<Attrs>, Fail> {
        let full = self.full(path);
        match session.attrs(protocol::LSTAT, |r| r.bytes(&full)) {
            Ok(attrs) => Ok(Some(attrs)),
            Err(Fail::Status {
                code: protocol::NO_SUCH_FILE,
                ..
            }) => Ok(None),
            Err(fail) => Err(fail),
        }
    }
}

fn status_kind(code: u32) -> ErrorKind {
    match code {
        protocol::NO_SUCH_FILE => ErrorKind::NotFound,
        protocol::PERMISSION_DENIED => ErrorKind::PermissionDenied,
        protocol::NO_CONNECTION | protocol::CONNECTION_LOST => ErrorKind::Temporary,
        protocol::OP_UNSUPPORTED => ErrorKind::Unsupported,
        _ => ErrorKind::Other,
    }
}

fn status_message(code: u32, message: String) -> String {
    match message.is_empty() {
        true => format!("SFTP status {code}"),
        false => format!("{message} (SFTP status {code})"),
    }
}

/// How to take a session that ended, by what `ssh` said.
fn lost_kind(said: &str) -> ErrorKind {
    if said.contains("Permission denied") || said.contains("Host key verification failed") {
        ErrorKind::PermissionDenied
    } else if said.contains("Could not resolve") || said.contains("cannot run ssh") {
        ErrorKind::Other
    } else {
        // Refused, reset, timed out, closed: a server may come back.
        ErrorKind::Temporary
    }
}

/// Kind, size, mtime and mode from a server's attributes.
fn entry(name: Vec<u8>, attrs: &Attrs) -> Entry {
    let kind = match attrs.mode.map(|m| m & 0o170000) {
        Some(0o040000) => Kind::Folder,
        Some(0o100000) => Kind::File,
        Some(0o120000) => Kind::Symlink,
        _ => Kind::Special,
    };
    let size = match kind {
        Kind::Folder => 0,
        _ => attrs.size.unwrap_or(0),
    };
    let mut e = Entry::new(
        name,
        kind,
        size,
        attrs.times.map(|(_, m)| i64::from(m) * 1_000_000_000),
    );
    e.meta = Meta {
        mode: attrs.mode.map(|m| m & 0o7777),
        uid: attrs.owner.map(|(u, _)| u),
        gid: attrs.owner.map(|(_, g)| g),
        xattrs: None,
    };
    e
}

/// A folder's children, read a batch at a time.
struct Listing<'a> {
    backend: &'a SftpBackend,
    session: Arc<Session>,
    folder: RelPath,
    handle: Vec<u8>,
    batch: VecDeque<NameEntry>,
    done: bool,
}

impl Iterator for Listing<'_> {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.batch.pop_front() {
                if item.name == b"." || item.name == b".." {
                    continue;
                }
                return Some(Ok(entry(item.name, &item.attrs)));
            }
            if self.done {
                return None;
            }
            match self
                .session
                .call(protocol::READDIR, |r| r.bytes(&self.handle))
            {
                Ok(Reply::Name(entries)) => self.batch = entries.into(),
                Ok(Reply::Status {
                    code: protocol::EOF,
                    ..
                }) => self.done = true,
                Ok(other) => {
                    self.done = true;
                    let fail = unexpected(other);
                    return Some(Err(self.backend.error("list", &self.folder, fail)));
                }
                Err(fail) => {
                    self.done = true;
                    return Some(Err(self.backend.error("list", &self.folder, fail)));
                }
            }
        }
    }
}

impl Drop for Listing<'_> {
    fn drop(&mut self) {
        self.session.close_later(&self.handle);
    }
}

impl Backend for SftpBackend {
    fn describe(&self) -> String {
        self.location.to_string()
    }

    /// A POSIX tree behind a protocol: no extended attributes, mtimes in
    /// whole seconds, hard links made where the server has the extension
    /// but never seen (v3 gives no inode numbers).
    fn capabilities(&self) -> Capabilities {
        let hard_links = match self.extensions.get() {
            Some(offered) => offered.hardlink,
            None => self
                .session("open", &RelPath::root())
                .is_ok_and(|s| s.extensions.hardlink),
        };
        Capabilities {
            xattrs: false,
            hard_links,
            file_ids: false,
            listing_stats: true,
            ..Capabilities::posix()
        }
    }

    fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
        let root = RelPath::root();
        let session = self.session("open", &root)?;
        let full = self.full(&root);
        // The root's own path may pass through symlinks: the user chose it.
        match session.attrs(protocol::STAT, |r| r.bytes(&full)) {
            Ok(attrs) => Ok(Some(entry(Vec::new(), &attrs).kind)),
            Err(Fail::Status {
                code: protocol::NO_SUCH_FILE,
                ..
            }) => Ok(None),
            Err(fail) => Err(self.error("open", &root, fail)),
        }
    }

    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
        let session = self.session("list", folder)?;
        let full = self.full(folder);
        let handle = session
            .handle(protocol::OPENDIR, |r| r.bytes(&full))
            .map_err(|fail| self.error("list", folder, fail))?;
        Ok(Box::new(Listing {
            backend: self,
            session,
            folder: folder.clone(),
            handle,
            batch: VecDeque::new(),
            done: false,
        }))
    }

    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        let session = self.session("stat", path)?;
        let attrs = self
            .lstat(&session, path)
            .map_err(|fail| self.error("stat", path, fail))?;
        Ok(attrs.map(|a| entry(path.name().to_vec(), &a)))
    }

    fn open_read(&self, path: &RelPath) -> Result<SourceFile, BackendError> {
        let session = self.session("read", path)?;
        let full = self.full(path);
        let fail = |fail| self.error("read", path, fail);
        let handle = session
            .handle(protocol::OPEN, |r| {
                r.bytes(&full)
                    .u32(protocol::OPEN_READ)
                    .attrs(&Attrs::default())
            })
            .map_err(fail)?;
        let attrs = match session.attrs(protocol::FSTAT, |r| r.bytes(&handle)) {
            Ok(attrs) => attrs,
            Err(e) => {
                session.close_later(&handle);
                return Err(fail(e));
            }
        };
        let e = entry(Vec::new(), &attrs);
        Ok(SourceFile {
            reader: Reader::Stream(Box::new(RemoteRead::new(session, handle, e.size))),
            size: e.size,
            mtime_ns: e.mtime_ns,
            own_mtime_ns: None,
            meta: e.meta,
            xattrs: Vec::new(),
            holes: false,
        })
    }

    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
        let session = self.session("read_link", path)?;
        let full = self.full(path);
        match session.call(protocol::READLINK, |r| r.bytes(&full)) {
            Ok(Reply::Name(mut names)) if names.len() == 1 => Ok(names.remove(0).name),
            Ok(other) => Err(self.error("read_link", path, unexpected(other))),
            Err(fail) => Err(self.error("read_link", path, fail)),
        }
    }

    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }

    /// SFTP requests: each read or write of a chunk is one.
    fn requests(&self) -> Option<RequestCounts> {
        Some(self.traffic.counts.snapshot())
    }
}
