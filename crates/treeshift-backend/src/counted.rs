//! A layer that counts the calls made to a backend, so a run can report how
//! much of each tree it touched (a retry sweep must touch only what failed).

use crate::{
    Apply, Backend, BackendError, Capabilities, Check, Children, SourceFile, Writable, Written,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use treeshift_core::{Entry, FileId, Keep, Kind, RelPath, Xattr};

/// Calls made through a [`Counted`] backend, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    /// Folder listings.
    pub list: u64,
    /// Metadata lookups of one path.
    pub stat: u64,
    /// Files opened for reading and symlinks read.
    pub read: u64,
    /// Changes: folders created, files and symlinks written, renames,
    /// removals and mtimes set.
    pub write: u64,
}

/// Wraps a backend and counts every call; behaves exactly like it otherwise.
pub struct Counted {
    inner: Arc<dyn Backend>,
    list: AtomicU64,
    stat: AtomicU64,
    read: AtomicU64,
    write: AtomicU64,
}

impl Counted {
    /// Counts the calls made to `inner` from now on.
    pub fn new(inner: Arc<dyn Backend>) -> Counted {
        Counted {
            inner,
            list: AtomicU64::new(0),
            stat: AtomicU64::new(0),
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
        }
    }

    /// The calls so far.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            list: self.list.load(Ordering::Relaxed),
            stat: self.stat.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            write: self.write.load(Ordering::Relaxed),
        }
    }

    fn write_through(&self) -> Result<&dyn Writable, BackendError> {
        self.write.fetch_add(1, Ordering::Relaxed);
        self.inner.writer().ok_or_else(|| {
            BackendError::new(
                crate::ErrorKind::Unsupported,
                "write",
                self.inner.describe(),
                "this backend cannot be written to",
            )
        })
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Backend for Counted {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
        bump(&self.stat);
        self.inner.root_kind()
    }

    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
        bump(&self.list);
        self.inner.list_children(folder)
    }

    fn list_children_after(
        &self,
        folder: &RelPath,
        after: &[u8],
    ) -> Result<Children<'_>, BackendError> {
        bump(&self.list);
        self.inner.list_children_after(folder, after)
    }

    fn listing_position(&self, entry: &Entry) -> Vec<u8> {
        self.inner.listing_position(entry)
    }

    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        bump(&self.stat);
        self.inner.stat(path)
    }

    fn open_read(&self, path: &RelPath) -> Result<SourceFile, BackendError> {
        bump(&self.read);
        self.inner.open_read(path)
    }

    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
        bump(&self.read);
        self.inner.read_link(path)
    }

    fn identity(&self, path: &RelPath) -> Result<Option<FileId>, BackendError> {
        bump(&self.stat);
        self.inner.identity(path)
    }

    fn keep(&self, keep: &Keep) {
        self.inner.keep(keep);
    }

    fn xattrs(&self, path: &RelPath) -> Result<Vec<Xattr>, BackendError> {
        bump(&self.read);
        self.inner.xattrs(path)
    }

    fn sync(&self) -> Result<(), BackendError> {
        self.inner.sync()
    }

    fn writer(&self) -> Option<&dyn Writable> {
        self.inner.writer().map(|_| self as &dyn Writable)
    }

    fn requests(&self) -> Option<crate::RequestCounts> {
        self.inner.requests()
    }
}

impl Writable for Counted {
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError> {
        self.write_through()?.create_folder(path)
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
        self.write_through()?
            .write(path, temp, source, replace, apply, check)
    }

    fn symlink(
        &self,
        path: &RelPath,
        temp: &RelPath,
        target: &[u8],
        replace: bool,
        apply: &Apply,
    ) -> Result<Written, BackendError> {
        self.write_through()?
            .symlink(path, temp, target, replace, apply)
    }

    fn remove_temp(&self, temp: &RelPath) -> Result<(), BackendError> {
        self.write_through()?.remove_temp(temp)
    }

    fn move_aside(&self, path: &RelPath, to: &RelPath) -> Result<(), BackendError> {
        self.write_through()?.move_aside(path, to)
    }

    fn remove(&self, path: &RelPath) -> Result<(), BackendError> {
        self.write_through()?.remove(path)
    }

    fn hard_link(
        &self,
        existing: &RelPath,
        path: &RelPath,
        temp: &RelPath,
        replace: bool,
    ) -> Result<bool, BackendError> {
        self.write_through()?
            .hard_link(existing, path, temp, replace)
    }

    fn set_metadata(&self, path: &RelPath, apply: &Apply) -> Result<(), BackendError> {
        self.write_through()?.set_metadata(path, apply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimBackend;

    #[test]
    fn counts_each_kind_of_call_and_changes_nothing() {
        let sim: Arc<dyn Backend> =
            Arc::new(SimBackend::from_params("seed=1,depth=1,fanout=2,files=2").unwrap());
        let counted = Counted::new(sim.clone());
        let root = RelPath::root();
        let direct: Vec<Entry> = sim
            .list_children(&root)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let through: Vec<Entry> = counted
            .list_children(&root)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(direct, through);
        let file = direct.iter().find(|e| e.kind == Kind::File).unwrap();
        counted.stat(&root.join(&file.name)).unwrap();
        counted.open_read(&root.join(&file.name)).unwrap();
        assert!(
            counted.writer().is_none(),
            "sim is read-only, and so is its layer"
        );
        assert_eq!(
            counted.counts(),
            CallCounts {
                list: 1,
                stat: 1,
                read: 1,
                write: 0
            }
        );
    }
}
