//! Remote storage through OpenDAL: one adapter between the Backend
//! contract and OpenDAL's operator, for every service (S3 now).
//!
//! OpenDAL is asynchronous; treeshift's workers are threads. The adapter
//! owns a small Tokio runtime and runs each call to completion on it from
//! the calling worker thread, so many workers keep many requests in flight.
//! Listings stream page by page; reads stream; writes go up in chunks
//! (one PUT for a small file, a multipart upload for a large one) and are
//! aborted, leaving nothing, when the source changed while it was read.

mod cost;
mod location;
mod metadata;
mod transport;
mod webdav;

pub use cost::{CopyShape, RequestCosts, Requests};
pub use location::{RemoteLocation, Service, takes_option};

use crate::{
    Apply, Backend, BackendError, Capabilities, Check, Children, ErrorKind, FolderKeeping,
    MtimeKeeping, Reader, RequestCounts, SourceFile, Writable, Written,
};
use futures::StreamExt;
use metadata::{entry_of, mtime_metadata, own_mtime};
use opendal::{HttpTransporter, Operator};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use treeshift_core::{Entry, Kind, Meta, RelPath};

/// Multipart uploads in flight at once. Each holds a few parts in memory
/// (the one being read, and those OpenDAL has taken and not yet sent:
/// about 23 MiB an upload of 8 MiB parts, measured), so this caps what
/// large files cost however many transfers run; files within one part are
/// not held back.
/// Two keep a copy of large files within the memory target, four did not
/// (docs/BENCHMARKS.md).
const LARGE_UPLOADS: u64 = 2;

/// A tree in remote storage, under a prefix.
pub struct RemoteBackend {
    op: Operator,
    runtime: tokio::runtime::Runtime,
    location: RemoteLocation,
    requests: Arc<crate::traffic::Counters>,
    /// What a WebDAV server's writes need (`None` for object stores).
    webdav: Option<webdav::Webdav>,
    /// Multipart uploads in flight, one unit each.
    large_uploads: crate::Budget,
    /// Empty folders are kept as `name/` markers (object stores).
    folder_markers: bool,
    /// The part size of multipart uploads (see [`RemoteBackend::part_for`]).
    part_size: u64,
    /// A listing stats each file for its own mtime (`compare=meta-mtime`).
    own_mtimes_listed: bool,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("location", &self.location.to_string())
            .finish()
    }
}

impl RemoteBackend {
    /// Opens the location (`s3://bucket/prefix?endpoint=...`) with its
    /// connection's secrets, sending at most `tps` requests a second.
    /// Without secrets, S3 and GCS look in their tools' files; a cloud's
    /// instance metadata endpoint is never asked unless the location says
    /// `ec2_metadata=true` (or `vm_metadata=true`).
    pub fn open(
        text: &str,
        tps: Option<u32>,
        secrets: treeshift_core::Secrets,
    ) -> Result<RemoteBackend, BackendError> {
        let location = RemoteLocation::parse(text)?.with_secrets(secrets);
        // One TLS provider for the process: ring (see Cargo.toml). And the
        // HTTP transport: without OpenDAL's default features (which would
        // bring aws-lc) nothing installs it; this is the call those
        // features make (first install wins, so calling twice is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("treeshift-remote")
            .enable_all()
            .build()
            .map_err(|e| BackendError::from_io("open", text, &e))?;
        let transport = transport::Transport::new(tps).map_err(|e| {
            BackendError::new(ErrorKind::Other, "open", text, format!("HTTP client: {e}"))
        })?;
        let requests = transport.counters();
        let folder_markers = location.folder_markers()?;
        let part_size = location.part_size()?;
        let own_mtimes_listed = location.lists_own_mtimes()?;
        let op = location.operator()?;
        let webdav = match location.service {
            Service::Webdav => Some(webdav::Webdav::new(&location)?),
            _ => None,
        };
        let op = op.clone().with_context(
            op.context()
                .with_http_transport(HttpTransporter::new(transport)),
        );
        Ok(RemoteBackend {
            op,
            runtime,
            location,
            requests,
            webdav,
            large_uploads: crate::Budget::new(LARGE_UPLOADS),
            folder_markers,
            part_size,
            own_mtimes_listed,
        })
    }

    /// The part size of a file of `size` bytes: the location's, or larger
    /// where the file would need more parts than the store takes (as
    /// rclone does); a file up to it is one PUT. A write reads and sends a
    /// part at a time, and holds a few in memory (see [`LARGE_UPLOADS`]).
    fn part_for(&self, size: u64) -> u64 {
        part_for(self.part_size, self.location.max_parts(), size)
    }

    fn run<T>(
        &self,
        f: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> opendal::Result<T> {
        self.runtime.block_on(f.into_future())
    }

    /// Reads an object with one GET, whose response says all a read needs
    /// (size, time of the upload, etag, the `mtime` metadata): S3 sends
    /// user metadata with the data. One response is one version, so no
    /// condition is needed to keep a rewrite from mixing in.
    fn open_read_in_one(&self, path: &RelPath, k: &str) -> Result<SourceFile, BackendError> {
        let reader = self
            .run(self.op.reader_with(k))
            .map_err(|e| self.err("open", path, &e))?;
        let mut stream = self
            .run(reader.into_bytes_stream(..))
            .map_err(|e| self.err("open", path, &e))?;
        let meta = self
            .run(stream.metadata())
            .map_err(|e| self.err("open", path, &e))?;
        Ok(self.source_file(path, &meta, Box::pin(stream)))
    }

    /// The children of `folder`, all of them or those after the key
    /// `after` names under it. A listing rolled up by `/` can give the
    /// sub-prefix it stood at once more (the keys under it come after
    /// it): whatever is not past `after` is left out.
    fn listing(
        &self,
        folder: &RelPath,
        after: Option<&[u8]>,
    ) -> Result<Children<'_>, BackendError> {
        let prefix = folder_key(folder, "list")?;
        let mut listing = self.op.lister_with(&prefix).recursive(false);
        if let Some(after) = after {
            let start = std::str::from_utf8(after).map_err(|_| {
                BackendError::new(
                    ErrorKind::InvalidName,
                    "list",
                    folder.to_string(),
                    "a listing position that is not UTF-8",
                )
            })?;
            listing = listing.start_after(&format!("{prefix}{start}"));
        }
        let lister = self
            .run(listing)
            .map_err(|e| self.err("list", folder, &e))?;
        Ok(Box::new(Listing {
            backend: self,
            lister,
            prefix,
            folder: folder.clone(),
            after: after.map(<[u8]>::to_vec),
        }))
    }

    /// A source file reading `stream`, described by `meta`.
    fn source_file(
        &self,
        path: &RelPath,
        meta: &opendal::Metadata,
        stream: std::pin::Pin<
            Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>,
        >,
    ) -> SourceFile {
        let entry = entry_of(
            self.location.service,
            std::str::from_utf8(path.name()).unwrap_or_default(),
            meta,
        );
        SourceFile {
            reader: Reader::Stream(Box::new(StreamRead {
                handle: self.runtime.handle().clone(),
                stream,
                pending: bytes_empty(),
            })),
            size: entry.size,
            mtime_ns: entry.mtime_ns,
            own_mtime_ns: own_mtime(meta),
            meta: Meta::default(),
            xattrs: Vec::new(),
            holes: false,
        }
    }

    fn err(&self, operation: &'static str, path: &RelPath, e: &opendal::Error) -> BackendError {
        // A store's error can quote the request, and a SAS token rides in
        // its URL.
        let mut message = self.location.redact(&describe(e));
        if message.contains("failed to load signing credential") {
            message.push_str(&format!(
                "; no credentials were found for {}: {}",
                self.location.scheme,
                self.location.credentials_hint()
            ));
        }
        BackendError::new(error_kind(e), operation, path.to_string(), message)
    }
}

/// An OpenDAL error in one line a person can act on: the store's own code
/// and message where it gave one, then each cause, without the request's
/// headers OpenDAL's `Display` includes.
fn describe(e: &opendal::Error) -> String {
    let message = e.message();
    let quoted = |field: &str| {
        let start = message.find(&format!("{field}: \""))? + field.len() + 3;
        let len = message[start..].find('"')?;
        Some(&message[start..start + len])
    };
    let mut text = match (quoted("code"), quoted("message")) {
        (Some(code), Some(said)) => format!("{code}: {said}"),
        _ => without_html(message),
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    format!("{text} ({})", e.kind())
}

/// A message that holds an HTML error page (as WebDAV servers answer),
/// cut down to what the page says: its first paragraph, else its title.
fn without_html(message: &str) -> String {
    let Some(start) = message.to_ascii_lowercase().find("<html") else {
        return message.to_string();
    };
    let page = &message[start..];
    let between = |open: &str, close: &str| {
        let from = page.find(open)? + open.len();
        let len = page[from..].find(close)?;
        Some(page[from..from + len].trim())
    };
    let said = between("<p>", "</p>")
        .or_else(|| between("<title>", "</title>"))
        .unwrap_or("an HTML page");
    let said = said
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    // What comes before the page, unless it is the page's doctype.
    let before = message[..start].trim();
    if before.is_empty() || before.to_ascii_lowercase().starts_with("<!doctype") {
        said
    } else {
        format!("{before} {said}")
    }
}

/// What an OpenDAL error means to a caller deciding to retry or report.
fn error_kind(e: &opendal::Error) -> ErrorKind {
    match e.kind() {
        opendal::ErrorKind::NotFound => ErrorKind::NotFound,
        opendal::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        opendal::ErrorKind::RateLimited => ErrorKind::RateLimited,
        opendal::ErrorKind::Unsupported => ErrorKind::Unsupported,
        _ if e.is_temporary() => ErrorKind::Temporary,
        _ => ErrorKind::Other,
    }
}

/// The object key of `path` (object keys are UTF-8).
fn key(path: &RelPath, operation: &'static str) -> Result<String, BackendError> {
    std::str::from_utf8(path.as_bytes())
        .map(str::to_string)
        .map_err(|_| {
            BackendError::new(
                ErrorKind::InvalidName,
                operation,
                path.to_string(),
                "object keys are UTF-8; this name is not",
            )
        })
}

/// The prefix a folder's children are listed under (`""` for the root).
fn folder_key(folder: &RelPath, operation: &'static str) -> Result<String, BackendError> {
    let k = key(folder, operation)?;
    Ok(if k.is_empty() { k } else { format!("{k}/") })
}

impl Backend for RemoteBackend {
    fn describe(&self) -> String {
        self.location.to_string()
    }

    /// An object store: the mtime goes into user metadata (rclone's key),
    /// nothing POSIX, folders are prefixes (markers if asked), a write can refuse
    /// to replace (`If-None-Match: *`), keys are UTF-8 of at most 1,024
    /// bytes. A WebDAV server's are its own (see `webdav.rs`).
    fn capabilities(&self) -> Capabilities {
        if let Some(dav) = &self.webdav {
            return dav.capabilities();
        }
        Capabilities {
            mtime: MtimeKeeping::UserMetadata,
            permissions: false,
            symlinks: false,
            hard_links: false,
            file_ids: false,
            xattrs: false,
            folders: if self.folder_markers {
                FolderKeeping::Markers
            } else {
                FolderKeeping::Prefixes
            },
            create_new: true,
            rename: false,
            max_name_bytes: None,
            // A key holds at most 1,024 bytes, the prefix and its slash
            // included.
            max_path_bytes: Some(1024usize.saturating_sub(match self.location.prefix.len() {
                0 => 0,
                n => n + 1,
            })),
            utf8_names: true,
            case_insensitive: false,
            listing_hash: true,
            listing_stats: false,
            listing_own_mtimes: self.own_mtimes_listed,
            // S3's and GCS's listings are in key order and start after a
            // key; Azure's go on only from an opaque marker.
            resumable_listing: self.op.info().capability().list_with_start_after,
            refused_chars: None,
        }
    }

    /// A prefix is always a folder (an empty one holds nothing yet). One
    /// small listing checks the bucket is there and the credentials work:
    /// a run that cannot reach the store stops here, with the store's
    /// answer, not folder by folder.
    fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
        let root = RelPath::root();
        if self.webdav.is_some() {
            // A collection, which the copy makes if it is not there.
            return self.webdav_root_kind();
        }
        let mut lister = self
            .run(self.op.lister_with("").limit(1))
            .map_err(|e| self.err("open", &root, &e))?;
        if let Some(Err(e)) = self.runtime.block_on(lister.next()) {
            return Err(self.err("open", &root, &e));
        }
        Ok(Some(Kind::Folder))
    }

    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
        self.listing(folder, None)
    }

    fn list_children_after(
        &self,
        folder: &RelPath,
        after: &[u8],
    ) -> Result<Children<'_>, BackendError> {
        self.listing(folder, Some(after))
    }

    /// The key under the folder: a sub-folder's ends with `/`, which is
    /// where it sorts among the keys.
    fn listing_position(&self, entry: &Entry) -> Vec<u8> {
        let mut position = entry.name.clone();
        if entry.kind == Kind::Folder {
            position.push(b'/');
        }
        position
    }

    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        if path.is_root() {
            return Ok(Some(Entry::new(Vec::new(), Kind::Folder, 0, None)));
        }
        let k = key(path, "stat")?;
        match self.run(self.op.stat(&k)) {
            Ok(meta) => {
                // The item's own mtime is the one treeshift (or rclone) wrote
                // into its metadata; the store's time of the upload is not.
                let name = std::str::from_utf8(path.name()).unwrap_or_default();
                let mut entry = entry_of(self.location.service, name, &meta);
                entry.mtime_ns = own_mtime(&meta);
                Ok(Some(entry))
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                // No object: a folder if anything lies under it (its
                // marker included).
                let mut lister = self
                    .run(self.op.lister_with(&format!("{k}/")).limit(1))
                    .map_err(|e| self.err("stat", path, &e))?;
                match self.runtime.block_on(lister.next()) {
                    Some(Err(e)) => Err(self.err("stat", path, &e)),
                    Some(Ok(_)) => Ok(Some(Entry::new(
                        path.name().to_vec(),
                        Kind::Folder,
                        0,
                        None,
                    ))),
                    None => Ok(None),
                }
            }
            Err(e) => Err(self.err("stat", path, &e)),
        }
    }

    fn open_read(&self, path: &RelPath) -> Result<SourceFile, BackendError> {
        let k = key(path, "open")?;
        if self.location.service == Service::S3 {
            return self.open_read_in_one(path, &k);
        }
        let meta = self
            .run(self.op.stat(&k))
            .map_err(|e| self.err("open", path, &e))?;
        // The version just looked at, and no other: a rewrite in between
        // fails the read (precondition) instead of mixing the two.
        let mut reading = self.op.reader_with(&k);
        // GCS pins a read by generation (its JSON API's etags are not
        // content tags); the others by etag.
        match (self.location.service, meta.version(), meta.etag()) {
            (Service::Gcs, Some(generation), _) => reading = reading.if_version_match(generation),
            (Service::Gcs, None, _) | (_, _, None) => {}
            (_, _, Some(etag)) => reading = reading.if_match(etag),
        }
        let reader = self.run(reading).map_err(|e| self.err("open", path, &e))?;
        let stream = self
            .run(reader.into_bytes_stream(..))
            .map_err(|e| self.err("open", path, &e))?;
        Ok(self.source_file(path, &meta, Box::pin(stream)))
    }

    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "read_link",
            path.to_string(),
            "object stores hold no symlinks",
        ))
    }

    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }

    fn requests(&self) -> Option<RequestCounts> {
        Some(self.requests.snapshot())
    }
}

fn bytes_empty() -> std::io::Cursor<Vec<u8>> {
    std::io::Cursor::new(Vec::new())
}

/// A listing in progress: one page at a time from the store.
struct Listing<'a> {
    backend: &'a RemoteBackend,
    lister: opendal::Lister,
    prefix: String,
    folder: RelPath,
    /// Where a resumed listing started: nothing up to it is given again.
    after: Option<Vec<u8>>,
}

impl Iterator for Listing<'_> {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = match self.backend.runtime.block_on(self.lister.next())? {
                Ok(item) => item,
                Err(e) => return Some(Err(self.backend.err("list", &self.folder, &e))),
            };
            // The listed prefix itself comes back too.
            if item.path() == self.prefix || item.path().trim_end_matches('/').is_empty() {
                continue;
            }
            let name = item.path()[self.prefix.len().min(item.path().len())..].to_string();
            if self.after.as_deref().is_some_and(|a| name.as_bytes() <= a) {
                continue;
            }
            let mut entry = entry_of(self.backend.location.service, &name, item.metadata());
            if self.backend.own_mtimes_listed && entry.kind == Kind::File {
                match self.backend.run(self.backend.op.stat(item.path())) {
                    Ok(meta) => entry.mtime_ns = own_mtime(&meta),
                    // Gone since it was listed: as if listed a moment later.
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
                    Err(e) => {
                        let path = self.folder.join(name.as_bytes());
                        return Some(Err(self.backend.err("stat", &path, &e)));
                    }
                }
            }
            return Some(Ok(entry));
        }
    }
}

/// An object's data as `std::io::Read`, pulled chunk by chunk.
struct StreamRead {
    handle: tokio::runtime::Handle,
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>,
    pending: std::io::Cursor<Vec<u8>>,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.pending.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(bytes)) => self.pending = std::io::Cursor::new(bytes.to_vec()),
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
    }
}

impl Writable for RemoteBackend {
    /// Folders are prefixes, there once something is written under them;
    /// with `folder_markers=true` a marker object (`name/`, empty) keeps
    /// one that holds nothing, so an empty source folder is found again by
    /// the next discovery (as rclone's `--create-empty-src-dirs` with
    /// `--s3-directory-markers`).
    fn create_folder(&self, path: &RelPath) -> Result<(), BackendError> {
        if self.webdav.is_some() {
            self.webdav_root()?;
        } else if !self.folder_markers {
            return Ok(());
        }
        if path.is_root() {
            return Ok(());
        }
        let k = folder_key(path, "create_folder")?;
        self.run(self.op.create_dir(&k))
            .map_err(|e| self.err("create_folder", path, &e))
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
        if self.webdav.is_some() {
            return self.write_webdav(path, temp, source, replace, apply, check);
        }
        let k = key(path, "write")?;
        let part = self.part_for(source.size);
        let _upload = (source.size > part).then(|| self.large_uploads.acquire(1));
        let mut metadata = HashMap::new();
        if let Some(ns) = apply.mtime_ns {
            metadata.extend(mtime_metadata(self.location.service, ns));
        }
        let mut writer = self
            .run(
                self.op
                    .writer_with(&k)
                    .if_not_exists(!replace)
                    .chunk(part as usize)
                    .user_metadata(metadata),
            )
            .map_err(|e| self.err("write", path, &e))?;
        // Read a whole part at a time into a buffer of its own that goes
        // up as it is (no copy, nothing joined), a small file into one of
        // its size.
        let part = (source.size as usize + 1).clamp(64 << 10, part as usize);
        let mut written = 0u64;
        loop {
            let mut chunk = vec![0u8; part];
            let n = match crate::read_full(&mut source.reader, &mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    let _ = self.run(writer.abort());
                    return Err(BackendError::from_io("read", path.to_string(), &e));
                }
            };
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            if let Err(e) = self.run(writer.write(chunk)) {
                let _ = self.run(writer.abort());
                return Err(self.err("write", path, &e));
            }
            written += n as u64;
            if n < part {
                break;
            }
        }
        if let Some(why) = check(source, written) {
            let _ = self.run(writer.abort());
            return Ok(Written::Changed(why));
        }
        match self.run(writer.close()) {
            Ok(meta) => Ok(Written::Done {
                bytes: written,
                etag: meta.etag().map(|e| e.trim_matches('"').to_string()),
            }),
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(Written::Occupied),
            Err(e) => Err(self.err("write", path, &e)),
        }
    }

    fn symlink(
        &self,
        path: &RelPath,
        _temp: &RelPath,
        _target: &[u8],
        _replace: bool,
        _apply: &Apply,
    ) -> Result<Written, BackendError> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "symlink",
            path.to_string(),
            "object stores hold no symlinks",
        ))
    }

    /// An object write leaves no temporary behind; a WebDAV one may.
    fn remove_temp(&self, temp: &RelPath) -> Result<(), BackendError> {
        if self.webdav.is_none() {
            return Ok(());
        }
        self.remove_temp_key(&key(temp, "remove_temp")?, temp)
    }

    fn move_aside(&self, path: &RelPath, _to: &RelPath) -> Result<(), BackendError> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "move_aside",
            path.to_string(),
            "object stores cannot rename: copy, then delete, is not done without being asked",
        ))
    }

    fn remove(&self, path: &RelPath) -> Result<(), BackendError> {
        let k = key(path, "remove")?;
        self.run(self.op.delete(&k))
            .and_then(|()| self.run(self.op.delete_with(&format!("{k}/")).recursive(true)))
            .map_err(|e| self.err("remove", path, &e))
    }

    /// Folders hold no metadata here, and an object's can only change by
    /// writing it again: what the store cannot hold is left, and the
    /// capabilities said so.
    fn set_metadata(&self, _path: &RelPath, _apply: &Apply) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The part size of a file of `size` bytes where parts are `part_size`
/// unless that takes more than `max_parts`.
fn part_for(part_size: u64, max_parts: u64, size: u64) -> u64 {
    part_size.max(size.div_ceil(max_parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_the_parts_a_store_takes_goes_up_in_larger_parts() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_for(8 * MIB, 10_000, 12 * MIB), 8 * MIB);
        assert_eq!(part_for(8 * MIB, 10_000, 80_000 * MIB), 8 * MIB);
        // 100 GiB on S3: 10,000 parts of just over 10 MiB.
        let big = 100 << 30;
        let part = part_for(8 * MIB, 10_000, big);
        assert_eq!(big.div_ceil(part), 10_000);
        assert!(part > 10 * MIB && part < 11 * MIB, "{part}");
        // Azure takes 50,000 blocks.
        assert_eq!(part_for(8 * MIB, 50_000, big), 8 * MIB);
    }

    #[test]
    fn store_errors_read_as_the_store_said_them() {
        let e = opendal::Error::new(
            opendal::ErrorKind::ConfigInvalid,
            r#"S3Error { code: "NoSuchBucket", message: "The specified bucket does not exist", resource: "" }"#,
        );
        assert_eq!(
            describe(&e),
            "NoSuchBucket: The specified bucket does not exist (ConfigInvalid)"
        );
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .set_source(std::io::Error::other("connection refused"));
        assert_eq!(
            describe(&e),
            "send http request: connection refused (Unexpected)"
        );
    }

    #[test]
    fn an_html_error_page_reads_as_what_it_says() {
        let page = "<!DOCTYPE HTML PUBLIC '-//W3C//DTD HTML 4.01//EN'>\n<html><head>\
                    <title>409 Conflict</title></head><body><h1>409 Conflict</h1>\
                    <p>409 Conflict: PUT parent must be a collection &amp; so on</p></body></html>";
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, page);
        assert_eq!(
            describe(&e),
            "409 Conflict: PUT parent must be a collection & so on (Unexpected)"
        );
        assert_eq!(without_html("plain"), "plain");
    }

    #[test]
    fn keys_are_utf8_and_folders_end_in_a_slash() {
        let path = RelPath::from_bytes(b"a/b".to_vec());
        assert_eq!(key(&path, "t").unwrap(), "a/b");
        assert_eq!(folder_key(&path, "t").unwrap(), "a/b/");
        assert_eq!(folder_key(&RelPath::root(), "t").unwrap(), "");
        let bad = RelPath::from_bytes(b"bad\xff".to_vec());
        assert_eq!(key(&bad, "t").unwrap_err().kind, ErrorKind::InvalidName);
    }
}
