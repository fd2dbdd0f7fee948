//! Writes to a WebDAV server: whole, under a temporary name, then moved
//! into place.
//!
//! A WebDAV server writes a PUT's body where it is addressed, as it
//! arrives: a copy stopped halfway would leave a short file under the
//! final name, looking complete. So the data goes to the copy's temporary
//! name first (with the mtime as a property, which a MOVE carries along),
//! and one MOVE puts it in place: `Overwrite: F` where the plan creates
//! (the server refuses if something took the name), `T` where it
//! replaces. That refusal is not atomic with the move on every server:
//! wsgidav checks whether the name is taken, then renames over it, so a
//! writer that takes the name in between is replaced. The capabilities
//! say so (no atomic create-new).
//!
//! OpenDAL sends a WebDAV file in one request from one buffer, so a file
//! is held in memory while it goes up; files above the location's
//! `max_buffer` are refused with that reason, before anything is read.

use super::{RemoteBackend, key, mtime_metadata};
use crate::{
    Apply, BackendError, Capabilities, Check, ErrorKind, FolderKeeping, MtimeKeeping, SourceFile,
    Written,
};
use http::{Request, StatusCode};
use opendal::Buffer;
use opendal::raw::{build_rooted_abs_path, normalize_root, percent_encode_path};
use std::io::Read;
use treeshift_core::{Kind, RelPath};

/// What a WebDAV backend needs beyond OpenDAL's operator: where MOVE
/// requests go, and how they are signed.
pub(super) struct Webdav {
    endpoint: String,
    root: String,
    authorization: Option<String>,
    max_buffer: u64,
    keeps_mtime: bool,
    /// The root collection is known to be there (made if it was not).
    root_made: std::sync::Mutex<bool>,
}

impl Webdav {
    pub(super) fn new(location: &super::RemoteLocation) -> Result<Webdav, BackendError> {
        Ok(Webdav {
            endpoint: location.webdav_endpoint(),
            root: normalize_root(&format!("/{}", location.prefix)),
            authorization: location.webdav_authorization()?,
            max_buffer: location.max_buffer()?,
            keeps_mtime: location.keeps_mtime()?,
            root_made: std::sync::Mutex::new(false),
        })
    }

    /// Real folders, the mtime as a property (unless the location says
    /// `mtime=false`), a MOVE that can refuse to replace, UTF-8 names of
    /// at most 255 bytes (the file systems behind servers allow no more).
    pub(super) fn capabilities(&self) -> Capabilities {
        Capabilities {
            mtime: if self.keeps_mtime {
                MtimeKeeping::UserMetadata
            } else {
                MtimeKeeping::None
            },
            permissions: false,
            symlinks: false,
            hard_links: false,
            file_ids: false,
            xattrs: false,
            folders: FolderKeeping::Real,
            // `Overwrite: F` is checked before the move, not with it (see
            // the module documentation).
            create_new: false,
            rename: false,
            max_name_bytes: Some(255),
            max_path_bytes: None,
            utf8_names: true,
            case_insensitive: false,
            listing_hash: false,
            listing_stats: false,
            listing_own_mtimes: false,
            resumable_listing: false,
            refused_chars: Some((
                b";?",
                "WebDAV servers differ in how they read it from a MOVE's destination \
                 (one puts the file under the name cut there), so it is not sent",
            )),
        }
    }

    fn url(&self, key: &str) -> String {
        format!(
            "{}{}",
            self.endpoint,
            percent_encode_path(&build_rooted_abs_path(&self.root, key))
        )
    }
}

impl RemoteBackend {
    /// Makes the root collection, with its parents, unless this backend
    /// has made or seen it already: a destination may not be there yet
    /// (as a local one is made on the first write).
    pub(super) fn webdav_root(&self) -> Result<(), BackendError> {
        let mut made = self
            .webdav()
            .root_made
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !*made {
            self.run(self.op.create_dir("/"))
                .map_err(|e| self.err("create_folder", &RelPath::root(), &e))?;
            *made = true;
        }
        Ok(())
    }

    fn webdav(&self) -> &Webdav {
        self.webdav
            .as_ref()
            .expect("a WebDAV write on a WebDAV backend")
    }

    /// See the module documentation.
    pub(super) fn write_webdav(
        &self,
        path: &RelPath,
        temp: &RelPath,
        source: &mut SourceFile,
        replace: bool,
        apply: &Apply,
        check: Check<'_>,
    ) -> Result<Written, BackendError> {
        let dav = self.webdav();
        let (k, temp_key) = (key(path, "write")?, key(temp, "write")?);
        if source.size > dav.max_buffer {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "write",
                path.to_string(),
                format!(
                    "{} bytes: a WebDAV upload is sent from memory, whole, and this location \
                     allows files of up to {} bytes (add max_buffer=SIZE to it for more)",
                    source.size, dav.max_buffer
                ),
            ));
        }
        let mut data = Vec::with_capacity(usize::try_from(source.size).unwrap_or(0));
        // One byte past the size discovery saw is enough to know it grew.
        (&mut source.reader)
            .take(source.size.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| BackendError::from_io("read", path.to_string(), &e))?;
        if let Some(why) = check(source, data.len() as u64) {
            return Ok(Written::Changed(why));
        }
        let bytes = data.len() as u64;
        self.webdav_root()?;
        let mut metadata = std::collections::HashMap::new();
        if let (true, Some(ns)) = (dav.keeps_mtime, apply.mtime_ns) {
            metadata.extend(mtime_metadata(self.location.service, ns));
        }
        self.run(
            self.op
                .write_with(&temp_key, data)
                .if_not_exists(false)
                .user_metadata(metadata),
        )
        .map_err(|e| {
            let mut e = self.err("write", path, &e);
            if e.message.contains("PROPPATCH") || e.message.contains("Proppatch") {
                e.message.push_str(
                    "; the server did not keep the mtime as a property: add mtime=false to \
                     the location to copy without it",
                );
            }
            e
        })?;
        match self.dav_move(&temp_key, &k, replace, path) {
            Ok(true) => {}
            Ok(false) => {
                self.remove_temp_key(&temp_key, temp)?;
                return Ok(Written::Occupied);
            }
            Err(e) => {
                let _ = self.remove_temp_key(&temp_key, temp);
                return Err(e);
            }
        }
        // The tag of the file in place, as later listings give it (a MOVE
        // may or may not keep the one its PUT was given).
        let etag = self
            .run(self.op.stat(&k))
            .map_err(|e| self.err("write", path, &e))?
            .etag()
            .map(|e| e.trim_matches('"').to_string());
        Ok(Written::Done { bytes, etag })
    }

    /// What the root is: a collection, a file, or nothing yet. Asked of
    /// the server itself (OpenDAL answers a stat of the root without a
    /// request), so wrong credentials or a wrong endpoint stop a run at its
    /// start.
    pub(super) fn webdav_root_kind(&self) -> Result<Option<Kind>, BackendError> {
        let request = Request::builder()
            .method("PROPFIND")
            .uri(self.webdav().url(""))
            .header("Depth", "0")
            .header(http::header::CONTENT_TYPE, "application/xml");
        let body = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"#;
        let root = RelPath::root();
        let (status, said) = self.dav_send(request, Buffer::from(body), "open", &root)?;
        match status {
            StatusCode::MULTI_STATUS if said.contains("collection") => Ok(Some(Kind::Folder)),
            StatusCode::MULTI_STATUS => Ok(Some(Kind::File)),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(self.dav_refused(status, &said, "open", &root, "PROPFIND of the root")),
        }
    }

    /// MOVE `from` to `to`; `Ok(false)` when `to` is taken and was not to
    /// be replaced.
    fn dav_move(
        &self,
        from: &str,
        to: &str,
        replace: bool,
        path: &RelPath,
    ) -> Result<bool, BackendError> {
        let dav = self.webdav();
        let request = Request::builder()
            .method("MOVE")
            .uri(dav.url(from))
            .header("Destination", dav.url(to))
            .header("Overwrite", if replace { "T" } else { "F" });
        let (status, said) = self.dav_send(request, Buffer::new(), "write", path)?;
        match status {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::PRECONDITION_FAILED if !replace => Ok(false),
            status => Err(self.dav_refused(status, &said, "write", path, "MOVE into place")),
        }
    }

    /// Sends a request of treeshift's own (OpenDAL has no call for it),
    /// signed as OpenDAL signs its requests and through the same transport;
    /// returns the status and what the response said.
    fn dav_send(
        &self,
        mut request: http::request::Builder,
        body: Buffer,
        operation: &'static str,
        path: &RelPath,
    ) -> Result<(StatusCode, String), BackendError> {
        if let Some(auth) = &self.webdav().authorization {
            request = request.header(http::header::AUTHORIZATION, auth);
        }
        let request = request.body(body).map_err(|e| {
            BackendError::new(ErrorKind::Other, operation, path.to_string(), e.to_string())
        })?;
        let response = self
            .run(self.op.context().http_transport().send(request))
            .map_err(|e| self.err(operation, path, &e))?;
        let status = response.status();
        let said = String::from_utf8_lossy(&response.into_body().to_bytes()).into_owned();
        Ok((status, said))
    }

    /// A request the server refused with `status`, as an error that says
    /// what the caller can do about it.
    fn dav_refused(
        &self,
        status: StatusCode,
        said: &str,
        operation: &'static str,
        path: &RelPath,
        what: &str,
    ) -> BackendError {
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
            StatusCode::INSUFFICIENT_STORAGE => ErrorKind::NoSpace,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                ErrorKind::RateLimited
            }
            s if s.is_server_error() => ErrorKind::Temporary,
            _ => ErrorKind::Other,
        };
        let hint = if status == StatusCode::UNAUTHORIZED {
            format!("; {}", self.location.credentials_hint())
        } else {
            String::new()
        };
        let said = self.location.redact(&super::without_html(said.trim()));
        let said: String = said.chars().take(300).collect();
        BackendError::new(
            kind,
            operation,
            path.to_string(),
            format!("{what}: {status}: {said}{hint}"),
        )
    }

    /// Deletes a temporary a write left (none there is fine).
    pub(super) fn remove_temp_key(
        &self,
        temp_key: &str,
        temp: &RelPath,
    ) -> Result<(), BackendError> {
        self.run(self.op.delete(temp_key))
            .map_err(|e| self.err("remove_temp", temp, &e))
    }
}
