//! A local tree through `std::fs`.
//!
//! Listing reads a folder with `readdir` and stats each child relative to the
//! open folder (`statx`/`fstatat` with no symlink following), which is what
//! `find -printf` does. Symlinks are reported, never followed.

use crate::{Backend, BackendError, Children, Reader, SourceFile, Staged, Writable};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags, Timespec, Timestamps, UTIME_OMIT};
use std::ffi::OsStr;
use std::fs::{self, DirEntry, File, FileType, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use treeshift_core::{Entry, Kind, RelPath};

/// A tree on a local file system.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Set once the file system refused an anonymous file.
    no_tmpfile: AtomicBool,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            no_tmpfile: AtomicBool::new(false),
        }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute location of a relative path.
    pub fn full_path(&self, rel: &RelPath) -> PathBuf {
        if rel.is_root() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel.as_bytes()))
        }
    }

    /// A path the kernel accepts for `rel`: its absolute path, or, when that
    /// is too long for one system call (PATH_MAX), the rest of it below an
    /// open handle of an ancestor folder reached step by step, spelled
    /// through `/proc/self/fd`. Deep trees then work like shallow ones.
    fn sys(&self, rel: &RelPath, operation: &'static str) -> Result<SysPath, BackendError> {
        let full = self.full_path(rel);
        if full.as_os_str().len() < SHORT_ENOUGH {
            return Ok(SysPath {
                path: full,
                _anchor: None,
            });
        }
        let too_long = || {
            let e = io::Error::from_raw_os_error(rustix::io::Errno::NAMETOOLONG.raw_os_error());
            self.err(operation, rel, &e)
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut anchor = rustix::fs::open(&self.root, flags, Mode::empty())
            .map_err(|e| self.err(operation, rel, &e.into()))?;
        let mut rest = rel.as_bytes();
        while rest.len() >= STEP {
            let cut = rest[..STEP]
                .iter()
                .rposition(|&b| b == b'/')
                .ok_or_else(too_long)?;
            anchor = rustix::fs::openat(
                &anchor,
                OsStr::from_bytes(&rest[..cut]),
                flags,
                Mode::empty(),
            )
            .map_err(|e| self.err(operation, rel, &e.into()))?;
            rest = &rest[cut + 1..];
        }
        let path = PathBuf::from(format!("/proc/self/fd/{}", anchor.as_raw_fd()))
            .join(OsStr::from_bytes(rest));
        Ok(SysPath {
            path,
            _anchor: Some(anchor),
        })
    }
}

/// Paths at least this long go through an ancestor's handle (PATH_MAX is
/// 4096 including the terminating zero).
const SHORT_ENOUGH: usize = 4000;

/// The most bytes of a relative path resolved in one step below a handle.
const STEP: usize = 3900;

/// A path for one system call, and the folder handle it may go through
/// (kept open for as long as the path is used).
struct SysPath {
    path: PathBuf,
    _anchor: Option<rustix::fd::OwnedFd>,
}

impl AsRef<Path> for SysPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for SysPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
        match fs::symlink_metadata(&self.root) {
            Ok(meta) => Ok(Some(kind_of(meta.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::from_io(
                "stat",
                self.root.display().to_string(),
                &e,
            )),
        }
    }

    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
        let dir = self.sys(folder, "list")?;
        let read = fs::read_dir(&*dir)
            .map_err(|e| BackendError::from_io("list", folder.to_string(), &e))?;
        let folder = folder.clone();
        Ok(Box::new(read.filter_map(
            move |item| match item.and_then(|entry| to_entry(&entry)) {
                Ok(entry) => entry.map(Ok),
                Err(e) => Some(Err(BackendError::from_io("list", folder.to_string(), &e))),
            },
        )))
    }

    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        match fs::symlink_metadata(&*self.sys(path, "stat")?) {
            Ok(meta) => Ok(Some(entry_from_metadata(path.name().to_vec(), &meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", path, &e)),
        }
    }

    fn open_read(&self, path: &RelPath) -> Result<SourceFile, BackendError> {
        // O_NOFOLLOW: a file replaced by a symlink since discovery is not
        // followed out of the tree.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&*self.sys(path, "open")?)
            .map_err(|e| self.err("open", path, &e))?;
        let meta = file.metadata().map_err(|e| self.err("stat", path, &e))?;
        if !meta.is_file() {
            return Err(BackendError::new(
                crate::ErrorKind::Other,
                "open",
                path.to_string(),
                "not a regular file",
            ));
        }
        Ok(SourceFile {
            size: meta.len(),
            mtime_ns: Some(mtime_ns(&meta)),
            mode: Some(meta.mode()),
            reader: Reader::File(file),
        })
    }

    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
        fs::read_link(&*self.sys(path, "read_link")?)
            .map(|t| t.into_os_string().into_encoded_bytes())
            .map_err(|e| self.err("read_link", path, &e))
    }

    fn sync(&self) -> Result<(), BackendError> {
        let root = File::open(&self.root).map_err(|e| self.err("sync", &RelPath::root(), &e))?;
        rustix::fs::syncfs(&root).map_err(|e| self.err("sync", &RelPath::root(), &e.into()))
    }

    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }
}

impl LocalBackend {
    fn err(&self, operation: &'static str, path: &RelPath, e: &io::Error) -> BackendError {
        BackendError::from_io(operation, path.to_string(), e)
    }
}

impl Writable for LocalBackend {
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError> {
        let full = self.sys(path, "create_folder")?;
        let made = if path.is_root() {
            fs::create_dir_all(&full)
        } else {
            fs::create_dir(&full)
        };
        match made {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_real_dir(&full) => Ok(()),
            Err(e) => Err(self.err("create_folder", path, &e)),
        }
    }

    fn write_temp(
        &self,
        temp: &RelPath,
        source: &mut SourceFile,
        anonymous: bool,
    ) -> Result<(Staged, u64), BackendError> {
        let (mut out, staged_name) = match anonymous.then(|| self.open_anonymous(temp)).flatten() {
            Some(file) => (file, None),
            None => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&*self.sys(temp, "write")?)
                    .map_err(|e| self.err("write", temp, &e))?;
                (file, Some(temp.clone()))
            }
        };
        let result = fill(&mut out, source).map_err(|(op, e)| self.err(op, temp, &e));
        match (result, staged_name) {
            (Ok(n), None) => Ok((Staged::Anonymous(out), n)),
            (Ok(n), Some(name)) => Ok((Staged::Named(name), n)),
            (Err(e), name) => {
                if let Some(name) = name {
                    let _ = self.remove_temp(&name);
                }
                Err(e)
            }
        }
    }

    fn symlink_temp(
        &self,
        temp: &RelPath,
        target: &[u8],
        mtime_ns: Option<i64>,
    ) -> Result<Staged, BackendError> {
        let full = self.sys(temp, "symlink")?;
        let _ = fs::remove_file(&*full);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &*full)
            .map_err(|e| self.err("symlink", temp, &e))?;
        if let Some(ns) = mtime_ns {
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: timespec(ns),
            };
            if let Err(e) = rustix::fs::utimensat(CWD, &*full, &times, AtFlags::SYMLINK_NOFOLLOW) {
                let _ = fs::remove_file(&*full);
                return Err(self.err("set_mtime", temp, &e.into()));
            }
        }
        Ok(Staged::Named(temp.clone()))
    }

    fn commit(&self, staged: Staged, path: &RelPath, replace: bool) -> Result<bool, BackendError> {
        let to = self.sys(path, "link")?;
        match staged {
            Staged::Anonymous(file) => {
                // Named through /proc: linkat never replaces, and needs no
                // privilege (unlike AT_EMPTY_PATH).
                let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
                match rustix::fs::linkat(CWD, &proc_path, CWD, &*to, AtFlags::SYMLINK_FOLLOW) {
                    Ok(()) => Ok(true),
                    Err(rustix::io::Errno::EXIST) if !replace => Ok(false),
                    Err(e) => Err(self.err("link", path, &e.into())),
                }
            }
            Staged::Named(temp) => {
                let from = self.sys(&temp, "rename")?;
                let placed = if replace {
                    fs::rename(&*from, &*to).map(|()| true)
                } else {
                    rename_noreplace(&from, &to)
                };
                match placed {
                    Ok(true) => Ok(true),
                    Ok(false) => {
                        self.remove_temp(&temp)?;
                        Ok(false)
                    }
                    Err(e) => {
                        let _ = self.remove_temp(&temp);
                        Err(self.err("rename", path, &e))
                    }
                }
            }
        }
    }

    fn discard(&self, staged: Staged) -> Result<(), BackendError> {
        match staged {
            Staged::Anonymous(file) => {
                drop(file);
                Ok(())
            }
            Staged::Named(temp) => self.remove_temp(&temp),
        }
    }

    fn remove_temp(&self, temp: &RelPath) -> Result<(), BackendError> {
        match fs::remove_file(&*self.sys(temp, "remove_temp")?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("remove_temp", temp, &e)),
        }
    }

    fn move_aside(&self, path: &RelPath, to: &RelPath) -> Result<(), BackendError> {
        let (from, to) = (self.sys(path, "move_aside")?, self.sys(to, "move_aside")?);
        rustix::fs::renameat_with(CWD, &*from, CWD, &*to, RenameFlags::NOREPLACE)
            .map_err(|e| self.err("move_aside", path, &e.into()))
    }

    fn remove(&self, path: &RelPath) -> Result<(), BackendError> {
        let full = self.sys(path, "remove")?;
        let removed = match fs::symlink_metadata(&*full) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&*full),
            Ok(_) => fs::remove_file(&*full),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|e| self.err("remove", path, &e))
    }

    fn set_mtime(&self, path: &RelPath, mtime_ns: i64) -> Result<(), BackendError> {
        File::open(&*self.sys(path, "set_mtime")?)
            .and_then(|f| f.set_modified(system_time(mtime_ns)))
            .map_err(|e| self.err("set_mtime", path, &e))
    }
}

impl LocalBackend {
    /// An anonymous file in the folder of `temp`, if the file system has
    /// them (`O_TMPFILE`; remembered when it does not).
    fn open_anonymous(&self, temp: &RelPath) -> Option<File> {
        if self.no_tmpfile.load(Ordering::Relaxed) {
            return None;
        }
        let dir = self.sys(&temp.parent(), "write").ok()?;
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, &*dir, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Some(File::from(fd)),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {
                self.no_tmpfile.store(true, Ordering::Relaxed);
                None
            }
            // Anything else (a missing folder, no permission) shows again,
            // with its path, on the named route.
            Err(_) => None,
        }
    }
}

/// Copies the data, then the permission bits and the mtime. The error
/// carries the failing operation.
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

/// Renames without replacing: `Ok(false)` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        // File systems without RENAME_NOREPLACE: a hard link never
        // replaces either (a symlink is linked as itself).
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => match fs::hard_link(from, to) {
            Ok(()) => fs::remove_file(from).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    }
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn system_time(ns: i64) -> SystemTime {
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

/// A file's mtime in nanoseconds.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Turns a directory entry into an [`Entry`]; `None` if it vanished meanwhile.
fn to_entry(entry: &DirEntry) -> io::Result<Option<Entry>> {
    let name = entry.file_name().as_bytes().to_vec();
    let meta = match entry.metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(entry_from_metadata(name, &meta)))
}

/// Builds an [`Entry`] from `lstat` data.
pub fn entry_from_metadata(name: Vec<u8>, meta: &Metadata) -> Entry {
    let kind = kind_of(meta.file_type());
    Entry {
        name,
        kind,
        size: if kind == Kind::Folder { 0 } else { meta.size() },
        mtime_ns: Some(mtime_ns(meta)),
    }
}

fn kind_of(ft: FileType) -> Kind {
    if ft.is_dir() {
        Kind::Folder
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        // fifo, socket, block or char device (or something newer)
        Kind::Special
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::symlink;

    fn names(b: &LocalBackend, p: &RelPath) -> Vec<(Vec<u8>, Kind)> {
        let mut v: Vec<_> = b
            .list_children(p)
            .unwrap()
            .map(|e| e.map(|e| (e.name, e.kind)).unwrap())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn lists_kinds_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("f"), b"hello").unwrap();
        symlink("sub", dir.path().join("link")).unwrap();
        symlink("/nonexistent", dir.path().join("dangling")).unwrap();
        let b = LocalBackend::new(dir.path());
        assert_eq!(
            names(&b, &RelPath::root()),
            vec![
                (b"dangling".to_vec(), Kind::Symlink),
                (b"f".to_vec(), Kind::File),
                (b"link".to_vec(), Kind::Symlink),
                (b"sub".to_vec(), Kind::Folder),
            ]
        );
        let f = b
            .list_children(&RelPath::root())
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.name == b"f")
            .unwrap();
        assert_eq!(f.size, 5);
        assert!(f.mtime_ns.unwrap() > 0);
    }

    #[test]
    fn odd_names_round_trip_as_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let odd: [&[u8]; 3] = [b"new\nline", b"bad\xff\xfe", &[b'x'; 255]];
        for n in odd {
            fs::write(dir.path().join(OsStr::from_bytes(n)), b"").unwrap();
        }
        let b = LocalBackend::new(dir.path());
        let got: Vec<Vec<u8>> = names(&b, &RelPath::root())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut want: Vec<Vec<u8>> = odd.iter().map(|n| n.to_vec()).collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn missing_root_and_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("nope"));
        assert_eq!(b.root_kind().unwrap(), None);
        let err = b.list_children(&RelPath::root()).err().unwrap();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    #[test]
    fn writes_land_whole_and_never_replace_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"new data").unwrap();
        fs::set_permissions(src.join("f"), Permissions::from_mode(0o640)).unwrap();
        File::options()
            .write(true)
            .open(src.join("f"))
            .unwrap()
            .set_modified(system_time(1_600_000_000_123_456_789))
            .unwrap();
        let (s, d) = (LocalBackend::new(&src), LocalBackend::new(&dst));
        let w = d.writer().unwrap();
        w.create_folder(&RelPath::root()).unwrap();
        w.create_folder(&RelPath::root()).unwrap();
        let (f, tmp) = (
            RelPath::from_bytes(b"f".to_vec()),
            RelPath::from_bytes(b".t".to_vec()),
        );
        for anonymous in [true, false] {
            let _ = fs::remove_file(dst.join("f"));
            let mut source = s.open_read(&f).unwrap();
            let (staged, n) = w.write_temp(&tmp, &mut source, anonymous).unwrap();
            assert_eq!(n, 8);
            assert_eq!(matches!(staged, Staged::Anonymous(_)), anonymous);
            fs::write(dst.join("f"), b"theirs").unwrap();
            assert!(!w.commit(staged, &f, false).unwrap(), "never replaces");
            assert_eq!(fs::read(dst.join("f")).unwrap(), b"theirs");
            assert!(!dst.join(".t").exists(), "a refused item is discarded");
            fs::remove_file(dst.join("f")).unwrap();
            let mut source = s.open_read(&f).unwrap();
            let (staged, _) = w.write_temp(&tmp, &mut source, anonymous).unwrap();
            assert!(w.commit(staged, &f, false).unwrap());
            assert_eq!(fs::read(dst.join("f")).unwrap(), b"new data");
            assert!(!dst.join(".t").exists());
            let (a, b) = (s.stat(&f).unwrap().unwrap(), d.stat(&f).unwrap().unwrap());
            assert_eq!(
                (a.size, a.mtime_ns),
                (b.size, b.mtime_ns),
                "mtime to the nanosecond"
            );
            let mode = fs::metadata(dst.join("f")).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640);
        }
        fs::write(dst.join("f"), b"theirs").unwrap();
        let (staged, _) = w
            .write_temp(&tmp, &mut s.open_read(&f).unwrap(), false)
            .unwrap();
        assert!(w.commit(staged, &f, true).unwrap(), "replaces when asked");
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"new data");
        let staged = w
            .symlink_temp(&tmp, b"../elsewhere", Some(1_500_000_000_000_000_000))
            .unwrap();
        let link = RelPath::from_bytes(b"l".to_vec());
        assert!(w.commit(staged, &link, false).unwrap());
        assert_eq!(d.read_link(&link).unwrap(), b"../elsewhere");
        assert_eq!(
            d.stat(&link).unwrap().unwrap().mtime_ns,
            Some(1_500_000_000_000_000_000)
        );
        let aside = RelPath::from_bytes(b"f.old".to_vec());
        w.move_aside(&f, &aside).unwrap();
        assert_eq!(fs::read(dst.join("f.old")).unwrap(), b"new data");
        fs::write(dst.join("f"), b"again").unwrap();
        assert!(
            w.move_aside(&f, &aside).is_err(),
            "an aside name is never replaced"
        );
    }

    #[test]
    fn paths_past_path_max_work_like_short_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        let (s, d) = (LocalBackend::new(&src), LocalBackend::new(&dst));
        let w = d.writer().unwrap();
        w.create_folder(&RelPath::root()).unwrap();
        // 30 folders of 200 bytes: a 6,000-byte path, made through the
        // backend itself on the destination.
        let segment = vec![b's'; 200];
        let mut deep = RelPath::root();
        for _ in 0..30 {
            deep = deep.join(&segment);
            w.create_folder(&deep).unwrap();
        }
        assert!(d.full_path(&deep).as_os_str().len() > 6000);
        fs::write(src.join("f"), b"deep data").unwrap();
        let file = deep.join(b"f");
        let temp = deep.join(b".t");
        let mut source = s.open_read(&RelPath::from_bytes(b"f".to_vec())).unwrap();
        let (staged, n) = w.write_temp(&temp, &mut source, false).unwrap();
        assert_eq!(n, 9);
        assert!(w.commit(staged, &file, false).unwrap());
        let listed = names(&d, &deep);
        assert_eq!(listed, vec![(b"f".to_vec(), Kind::File)]);
        assert_eq!(d.stat(&file).unwrap().unwrap().size, 9);
        w.set_mtime(&file, 1_000_000_000_000_000_000).unwrap();
        assert_eq!(
            d.stat(&file).unwrap().unwrap().mtime_ns,
            Some(1_000_000_000_000_000_000)
        );
        let mut back = Vec::new();
        match d.open_read(&file).unwrap().reader {
            Reader::File(mut f) => io::Read::read_to_end(&mut f, &mut back).unwrap(),
            Reader::Stream(_) => unreachable!("local files are files"),
        };
        assert_eq!(back, b"deep data");
        w.remove(&deep.parent().parent()).unwrap();
        assert_eq!(d.stat(&deep).unwrap(), None);
    }
}
