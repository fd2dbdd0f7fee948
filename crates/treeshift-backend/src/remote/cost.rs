//! What a copy will cost on a remote store, in requests, before it runs:
//! the requests each step of a copy sends to each service, as this
//! adapter makes them (counted against the servers in the tests), so a
//! user can price a copy before approving it.

use super::{RemoteLocation, Service};

/// Requests by kind, as stores bill them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Requests {
    /// Uploads of a whole object (PUT, or GCS's upload POST).
    pub put: u64,
    /// Parts of multipart uploads (S3, GCS) or blocks (Azure).
    pub parts: u64,
    /// Downloads (GET).
    pub get: u64,
    /// Stats (HEAD; WebDAV: PROPFIND of one item).
    pub head: u64,
    /// Listings (LIST; WebDAV: PROPFIND of a folder).
    pub list: u64,
    /// Everything else: starting and completing multipart uploads, block
    /// lists, WebDAV's MOVE, PROPPATCH and MKCOL.
    pub other: u64,
}

impl Requests {
    const fn new(put: u64, get: u64, head: u64, list: u64, other: u64) -> Requests {
        Requests {
            put,
            parts: 0,
            get,
            head,
            list,
            other,
        }
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.put + self.parts + self.get + self.head + self.list + self.other
    }

    fn times(self, n: u64) -> Requests {
        Requests {
            put: self.put * n,
            parts: self.parts * n,
            get: self.get * n,
            head: self.head * n,
            list: self.list * n,
            other: self.other * n,
        }
    }

    fn plus(self, o: Requests) -> Requests {
        Requests {
            put: self.put + o.put,
            parts: self.parts + o.parts,
            get: self.get + o.get,
            head: self.head + o.head,
            list: self.list + o.list,
            other: self.other + o.other,
        }
    }
}

/// What is left to copy, as far as its requests go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyShape {
    /// Files to write.
    pub files: u64,
    /// Of those, files larger than one part.
    pub large_files: u64,
    /// The parts of those large files, all together.
    pub parts: u64,
    /// Folders to make, the root aside.
    pub folders: u64,
    /// Items that replace what is at their destination path (looked at
    /// first).
    pub replaces: u64,
    /// The root is among the folders to make.
    pub creates_root: bool,
}

/// The requests each step of a copy sends to one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestCosts {
    /// Files larger than this go up in parts.
    pub part_size: u64,
    /// A file of at most one part, written where there was none.
    write: Requests,
    /// A file of at most one part, written over the one there.
    write_over: Requests,
    /// A larger file's requests besides its parts.
    write_large: Requests,
    /// A folder made where there was none (looked for first).
    folder: Requests,
    /// The root made, where it can be missing.
    root: Requests,
    /// A look at the root, where it can be missing, before the first write
    /// into it, when the copy does not make it.
    root_seen: Requests,
    /// A look at the destination path before replacing.
    replace: Requests,
    /// A file read as a source.
    read: Requests,
}

impl RequestCosts {
    /// The costs on the store at `location`; `None` for a location that is
    /// not remote storage.
    pub fn of(location: &str) -> Option<RequestCosts> {
        let location = RemoteLocation::parse(location).ok()?;
        let put = Requests::new(1, 0, 0, 0, 0);
        // What the object stores share: one PUT a file (and, with
        // `folder_markers=true`, a marker a folder, after a stat that finds
        // no object and a listing that finds nothing under it; without,
        // nothing), a stat before a replacement, a stat and a GET a read; a
        // prefix is always there.
        let object_store = RequestCosts {
            // A file needing more parts than the store takes goes up in
            // larger ones (`RemoteBackend::part_for`), and is counted here
            // at this size: past 78 GiB at the default on S3.
            part_size: location.part_size().unwrap_or(super::location::PART_SIZE),
            write: put,
            write_over: put,
            write_large: Requests::default(),
            folder: if location.folder_markers().unwrap_or(false) {
                Requests::new(1, 0, 1, 1, 0)
            } else {
                Requests::default()
            },
            root: Requests::default(),
            root_seen: Requests::default(),
            replace: Requests::new(0, 0, 1, 0, 0),
            read: Requests::new(0, 1, 1, 0, 0),
        };
        Some(match location.service {
            Service::S3 => RequestCosts {
                // Starting and completing the multipart upload.
                write_large: Requests::new(0, 0, 0, 0, 2),
                // One GET says all a read needs.
                read: Requests::new(0, 1, 0, 0, 0),
                ..object_store
            },
            Service::Azblob => RequestCosts {
                // The block list that commits the blocks.
                write_large: Requests::new(0, 0, 0, 0, 1),
                ..object_store
            },
            Service::Gcs => RequestCosts {
                // A write that must not replace is a resumable upload: one
                // request starts it, one sends the data; one that replaces
                // is a single upload.
                write: Requests::new(1, 0, 0, 0, 1),
                write_large: Requests::new(0, 0, 0, 0, 1),
                ..object_store
            },
            Service::Webdav => {
                // PUT to the temporary name, PROPPATCH of its mtime (when
                // kept), MOVE into place, PROPFIND of the tag it got.
                let proppatch = u64::from(location.keeps_mtime().unwrap_or(true));
                let write = Requests::new(1, 0, 1, 0, 1 + proppatch);
                RequestCosts {
                    part_size: u64::MAX,
                    write,
                    write_over: write,
                    // Looked for (a PROPFIND of the item, then of it as a
                    // folder), then made: OpenDAL looks for it and its
                    // parent before the MKCOL.
                    folder: Requests::new(0, 0, 3, 1, 1),
                    // Looked for, then made.
                    root: Requests::new(0, 0, 1, 0, 1),
                    root_seen: Requests::new(0, 0, 1, 0, 0),
                    ..object_store
                }
            }
        })
    }

    /// The requests of a copy of `shape` to this store.
    pub fn as_destination(&self, shape: &CopyShape) -> Requests {
        let mut large = self.write_large.times(shape.large_files);
        large.parts += shape.parts;
        let small = shape.files.saturating_sub(shape.large_files);
        let small_over = shape.replaces.min(small);
        let root = if shape.creates_root {
            self.root
        } else if shape.files + shape.folders > 0 {
            self.root_seen
        } else {
            Requests::default()
        };
        self.write
            .times(small - small_over)
            .plus(self.write_over.times(small_over))
            .plus(large)
            .plus(self.folder.times(shape.folders))
            .plus(root)
            .plus(self.replace.times(shape.replaces))
    }

    /// The requests of a copy of `shape` from this store.
    pub fn as_source(&self, shape: &CopyShape) -> Requests {
        self.read.times(shape.files)
    }
}
