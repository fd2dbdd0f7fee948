//! A local tree through `std::fs`.
//!
//! Listing reads a folder with `readdir` and stats each child relative to the
//! open folder (`statx`/`fstatat` with no symlink following), which is what
//! `find -printf` does. Symlinks are reported, never followed.

use crate::{Backend, BackendError, Children};
use std::ffi::OsStr;
use std::fs::{self, DirEntry, FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use treeshift_core::{Entry, Kind, RelPath};

/// A tree on a local file system.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
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
        let dir = self.full_path(folder);
        let read = fs::read_dir(&dir)
            .map_err(|e| BackendError::from_io("list", folder.to_string(), &e))?;
        let folder = folder.clone();
        Ok(Box::new(read.filter_map(
            move |item| match item.and_then(|entry| to_entry(&entry)) {
                Ok(entry) => entry.map(Ok),
                Err(e) => Some(Err(BackendError::from_io("list", folder.to_string(), &e))),
            },
        )))
    }
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
        mtime_ns: Some(
            meta.mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
        ),
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
}
