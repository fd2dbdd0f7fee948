//! Remote locations as the command line takes them:
//! `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1`,
//! `azblob://container/prefix?account=name`, `gcs://bucket/prefix`,
//! `webdav://host:port/path?user=name` (`webdavs` for HTTPS).
//!
//! Options go in the query string. Secrets never do: they are given apart
//! ([`RemoteLocation::with_secrets`]), by the names of each service's usual
//! environment variables (`AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `GOOGLE_APPLICATION_CREDENTIALS`, `WEBDAV_PASSWORD`, ...), gathered from
//! the environment or unsealed from the state file by the caller.
//! A cloud's instance metadata endpoint is never asked unless the location
//! says so.

use crate::{BackendError, ErrorKind};
use base64::Engine;
use opendal::Operator;
use std::fmt;
use treeshift_core::{Secret, Secrets};

/// The remote services this build has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Amazon S3 and S3-compatible stores.
    S3,
    /// Azure Blob Storage.
    Azblob,
    /// Google Cloud Storage.
    Gcs,
    /// A WebDAV server (RFC 4918).
    Webdav,
}

impl Service {
    fn of(scheme: &str) -> Option<Service> {
        match scheme {
            "s3" => Some(Service::S3),
            "azblob" => Some(Service::Azblob),
            "gcs" => Some(Service::Gcs),
            "webdav" | "webdavs" => Some(Service::Webdav),
            _ => None,
        }
    }

    /// The options its locations take.
    fn options(self) -> &'static [&'static str] {
        match self {
            Service::S3 => &[
                "endpoint",
                "region",
                "virtual_host",
                "ec2_metadata",
                "anonymous",
                "folder_markers",
                "part_size",
                "compare",
            ],
            Service::Azblob => &[
                "endpoint",
                "account",
                "anonymous",
                "folder_markers",
                "part_size",
                "compare",
            ],
            Service::Gcs => &[
                "endpoint",
                "anonymous",
                "vm_metadata",
                "folder_markers",
                "part_size",
                "compare",
            ],
            Service::Webdav => &["user", "max_buffer", "mtime"],
        }
    }

    /// The secrets its connections take, by the names of the environment
    /// variables the service's own tools read.
    pub(crate) fn secret_names(self) -> &'static [&'static str] {
        match self {
            Service::S3 => &[AWS_KEY_ID, AWS_SECRET, AWS_SESSION],
            Service::Azblob => &[AZURE_ACCOUNT, AZURE_KEY, AZURE_SAS, AZURE_CONNECTION],
            Service::Gcs => &[GOOGLE_CREDENTIALS],
            Service::Webdav => &[WEBDAV_PASSWORD, WEBDAV_TOKEN],
        }
    }

    /// What the first part of its locations names.
    fn container(self) -> &'static str {
        match self {
            Service::S3 | Service::Gcs => "bucket",
            Service::Azblob => "container",
            Service::Webdav => "host",
        }
    }
}

/// Whether a location of remote storage (`s3://bucket/prefix`) takes the
/// option `key`, whether or not the rest of it parses.
pub fn takes_option(location: &str, key: &str) -> bool {
    location
        .split_once("://")
        .and_then(|(scheme, _)| Service::of(scheme))
        .is_some_and(|service| service.options().contains(&key))
}

/// The part size of a multipart upload unless the location says
/// otherwise (`part_size=`).
pub const PART_SIZE: u64 = 8 << 20;
const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PART_SIZE: u64 = 4000 << 20;

/// The largest file a WebDAV upload holds in memory unless the location
/// says otherwise (`max_buffer=`): OpenDAL sends a WebDAV file in one
/// request from one buffer.
pub const WEBDAV_MAX_BUFFER: u64 = 256 << 20;

/// A parsed remote location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLocation {
    /// The service.
    pub service: Service,
    /// The scheme as written (`s3`, `azblob`, `gcs`, `webdav`, `webdavs`).
    pub scheme: String,
    /// The bucket (or container; the host and port on WebDAV).
    pub bucket: String,
    /// The prefix within it, without slashes at either end.
    pub prefix: String,
    /// Options, by name, in the order given.
    pub options: Vec<(String, String)>,
    /// The connection's secrets (none until given).
    secrets: Secrets,
}

/// AWS's own names for an access key.
const AWS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const AWS_SECRET: &str = "AWS_SECRET_ACCESS_KEY";
const AWS_SESSION: &str = "AWS_SESSION_TOKEN";

/// A service account's key: the variable names a file, and the file's
/// content is the secret.
const GOOGLE_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// The environment variables Azure credentials are read from, as Azure's
/// own tools name them.
const AZURE_ACCOUNT: &str = "AZURE_STORAGE_ACCOUNT_NAME";
const AZURE_KEY: &str = "AZURE_STORAGE_ACCOUNT_KEY";
const AZURE_SAS: &str = "AZURE_STORAGE_SAS_TOKEN";
const AZURE_CONNECTION: &str = "AZURE_STORAGE_CONNECTION_STRING";

/// The environment variables a WebDAV password or bearer token is read
/// from (never the location: it is recorded in the state file).
const WEBDAV_PASSWORD: &str = "WEBDAV_PASSWORD";
const WEBDAV_TOKEN: &str = "WEBDAV_BEARER_TOKEN";

impl RemoteLocation {
    /// Parses `scheme://bucket/prefix?key=value&...`.
    pub fn parse(text: &str) -> Result<RemoteLocation, BackendError> {
        let bad = |why: String| BackendError::new(ErrorKind::Other, "open", text, why);
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://bucket/prefix".into()))?;
        let Some(service) = Service::of(scheme) else {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "open",
                text,
                format!(
                    "no remote service '{scheme}' (this build has s3, azblob, gcs, webdav, webdavs)"
                ),
            ));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            let what = service.container();
            return Err(bad(format!("no {what}: expected {scheme}://{what}/prefix")));
        }
        if service == Service::Webdav && bucket.contains('@') {
            let text = crate::without_password(text);
            return Err(BackendError::new(
                ErrorKind::Other,
                "open",
                text,
                "no user or password in the location: give the user as user=NAME and the \
                 password in WEBDAV_PASSWORD",
            ));
        }
        let options = crate::options::parse(query, scheme, service.options()).map_err(bad)?;
        Ok(RemoteLocation {
            service,
            scheme: scheme.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            options,
            secrets: Secrets::new(),
        })
    }

    /// The location with its connection's secrets.
    pub fn with_secrets(mut self, secrets: Secrets) -> RemoteLocation {
        self.secrets = secrets;
        self
    }

    /// The secrets this location's service takes, each looked up by name
    /// with `lookup` (the environment, or a secret file). A service
    /// account's key file is read: its content is what is kept.
    pub fn gather_secrets(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secrets, BackendError> {
        let mut secrets = Secrets::new();
        for &name in self.service.secret_names() {
            let Some(value) = lookup(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let value = if name == GOOGLE_CREDENTIALS {
                std::fs::read_to_string(&value)
                    .map_err(|e| self.bad(format!("{name}: cannot read {value}: {e}")))?
            } else {
                value
            };
            secrets.insert(name, Secret::new(value));
        }
        Ok(secrets)
    }

    fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(Secret::expose)
    }

    /// `text` without any of the connection's secrets in it.
    pub(super) fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, BackendError> {
        self.flag_or(key, false)
    }

    fn flag_or(&self, key: &str, default: bool) -> Result<bool, BackendError> {
        match self.option(key) {
            None => Ok(default),
            Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => {
                Err(self.bad(format!("option '{key}' takes true or false, not '{other}'")))
            }
        }
    }

    fn bad(&self, why: String) -> BackendError {
        BackendError::new(ErrorKind::Other, "open", self.to_string(), why)
    }

    /// Where this service's credentials come from, for a run that found
    /// none.
    pub(super) fn credentials_hint(&self) -> &'static str {
        match self.service {
            Service::S3 => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with \
                 ~/.aws/credentials), or add anonymous=true to the location of a public bucket"
            }
            Service::Azblob => {
                "set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN (with the account \
                 in AZURE_STORAGE_ACCOUNT_NAME or account=), or AZURE_STORAGE_CONNECTION_STRING, \
                 or add anonymous=true to the location of a public container"
            }
            Service::Gcs => {
                "set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file (or run \
                 gcloud auth application-default login), add vm_metadata=true on a GCE \
                 instance, or anonymous=true for a public bucket"
            }
            Service::Webdav => {
                "give the user as user=NAME and set WEBDAV_PASSWORD, or set WEBDAV_BEARER_TOKEN"
            }
        }
    }

    /// Whether a written file's mtime is kept (WebDAV: as a property,
    /// which a server without a property store refuses; `mtime=false`
    /// writes without it).
    pub(super) fn keeps_mtime(&self) -> Result<bool, BackendError> {
        self.flag_or("mtime", true)
    }

    /// Whether an object store keeps an empty folder as a zero-byte
    /// `name/` marker (`folder_markers=true`); without, an empty folder
    /// cannot be held there, as with rclone unless told.
    pub(super) fn folder_markers(&self) -> Result<bool, BackendError> {
        self.flag("folder_markers")
    }

    /// Whether a listing reads each file's own mtime from its metadata,
    /// one HEAD per file, as rclone compares (`compare=meta-mtime`),
    /// rather than comparing objects treeshift did not write by size and
    /// listed MD5 alone (`compare=size`, the default, no request per
    /// object).
    pub(super) fn lists_own_mtimes(&self) -> Result<bool, BackendError> {
        match self.option("compare") {
            None | Some("size") => Ok(false),
            Some("meta-mtime") => Ok(true),
            Some(other) => Err(self.bad(format!(
                "option 'compare' takes size or meta-mtime, not '{other}'"
            ))),
        }
    }

    /// The part size of multipart uploads (`part_size=`, default 8 MiB):
    /// a file up to it is one PUT. Between the 5 MiB the stores take at
    /// least and the 4,000 MiB Azure takes at most.
    pub(super) fn part_size(&self) -> Result<u64, BackendError> {
        let Some(text) = self.option("part_size") else {
            return Ok(PART_SIZE);
        };
        let size =
            treeshift_core::parse_size(text).map_err(|e| self.bad(format!("part_size: {e}")))?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size) {
            return Err(self.bad(format!(
                "part_size {text}: give 5M to 4000M (the stores' limits on a part)"
            )));
        }
        Ok(size)
    }

    /// The most parts one multipart upload may have on this service.
    pub(super) fn max_parts(&self) -> u64 {
        match self.service {
            Service::Azblob => 50_000,
            Service::S3 | Service::Gcs | Service::Webdav => 10_000,
        }
    }

    /// The largest file a WebDAV upload may hold in memory.
    pub(super) fn max_buffer(&self) -> Result<u64, BackendError> {
        match self.option("max_buffer") {
            None => Ok(WEBDAV_MAX_BUFFER),
            Some(text) => {
                treeshift_core::parse_size(text).map_err(|e| self.bad(format!("max_buffer: {e}")))
            }
        }
    }

    /// The WebDAV server's base URL.
    pub(super) fn webdav_endpoint(&self) -> String {
        let scheme = if self.scheme == "webdavs" {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.bucket)
    }

    /// The WebDAV credentials: the user's password, else a bearer token.
    fn webdav_credentials(&self) -> WebdavCredentials<'_> {
        match self.option("user") {
            Some(user) => WebdavCredentials::Basic {
                user,
                password: self.secret(WEBDAV_PASSWORD).unwrap_or_default(),
            },
            None => self
                .secret(WEBDAV_TOKEN)
                .map_or(WebdavCredentials::None, WebdavCredentials::Bearer),
        }
    }

    /// The `Authorization` header of WebDAV requests, as OpenDAL signs its
    /// own with the same credentials.
    pub(super) fn webdav_authorization(&self) -> Result<Option<String>, BackendError> {
        let header = match self.webdav_credentials() {
            WebdavCredentials::Basic { user, password } => {
                opendal::raw::format_authorization_by_basic(user, password)
            }
            WebdavCredentials::Bearer(token) => opendal::raw::format_authorization_by_bearer(token),
            WebdavCredentials::None => return Ok(None),
        };
        header
            .map(Some)
            .map_err(|e| self.bad(format!("credentials: {e}")))
    }

    /// An OpenDAL operator for the location.
    pub(super) fn operator(&self) -> Result<Operator, BackendError> {
        let op = match self.service {
            Service::S3 => Operator::new(self.s3()?),
            Service::Azblob => Operator::new(self.azblob()?),
            Service::Gcs => Operator::new(self.gcs()?),
            Service::Webdav => Operator::new(self.webdav()?),
        };
        op.map_err(|e| self.bad(e.to_string()))
    }

    fn s3(&self) -> Result<opendal::services::S3, BackendError> {
        let mut builder = opendal::services::S3::default()
            .bucket(&self.bucket)
            .root(&format!("/{}", self.prefix))
            .region(self.option("region").unwrap_or("us-east-1"));
        if let Some(endpoint) = self.option("endpoint") {
            builder = builder.endpoint(endpoint);
        }
        if self.flag("virtual_host")? {
            builder = builder.enable_virtual_host_style();
        }
        // A cloud's instance metadata endpoint is asked only when the
        // location says so: a migration's credentials are its user's.
        if !self.flag("ec2_metadata")? {
            builder = builder.disable_ec2_metadata();
        }
        if self.flag("anonymous")? {
            builder = builder.skip_signature();
        }
        // Keys given (from the environment or the state file) are the
        // only ones used; without any, OpenDAL looks in AWS's files.
        if let (Some(id), Some(secret)) = (self.secret(AWS_KEY_ID), self.secret(AWS_SECRET)) {
            builder = builder
                .access_key_id(id)
                .secret_access_key(secret)
                .disable_config_load();
            if let Some(token) = self.secret(AWS_SESSION) {
                builder = builder.session_token(token);
            }
        }
        Ok(builder)
    }

    /// Azure: the credentials given are handed to OpenDAL; without any
    /// the location is refused, because OpenDAL's own search would go on
    /// to the Azure CLI and the instance metadata endpoint.
    fn azblob(&self) -> Result<opendal::services::Azblob, BackendError> {
        let connection = self.secret(AZURE_CONNECTION);
        let mut builder = match &connection {
            Some(conn) => opendal::services::Azblob::from_connection_string(conn)
                .map_err(|e| self.bad(format!("{AZURE_CONNECTION}: {e}")))?,
            None => opendal::services::Azblob::default(),
        };
        builder = builder
            .container(&self.bucket)
            .root(&format!("/{}", self.prefix));
        let account = self
            .option("account")
            .or_else(|| self.secret(AZURE_ACCOUNT));
        if let Some(account) = &account {
            builder = builder.account_name(account);
        }
        match self.option("endpoint") {
            Some(endpoint) => builder = builder.endpoint(endpoint),
            None if connection.is_none() => {
                let Some(account) = &account else {
                    return Err(self.bad(format!(
                        "no storage account: add account=NAME (or set {AZURE_ACCOUNT})"
                    )));
                };
                builder = builder.endpoint(&format!("https://{account}.blob.core.windows.net"));
            }
            None => {}
        }
        if self.flag("anonymous")? {
            return Ok(builder.skip_signature());
        }
        if let Some(key) = self.secret(AZURE_KEY) {
            builder = builder.account_key(key);
        } else if let Some(sas) = self.secret(AZURE_SAS) {
            builder = builder.sas_token(sas);
        } else if connection.is_none() {
            return Err(self.bad(format!(
                "no credentials were found for azblob: {}",
                self.credentials_hint()
            )));
        }
        Ok(builder)
    }

    /// GCS: credentials from `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's
    /// application default file; the VM metadata server only when asked.
    fn gcs(&self) -> Result<opendal::services::Gcs, BackendError> {
        let mut builder = opendal::services::Gcs::default()
            .bucket(&self.bucket)
            .root(&format!("/{}", self.prefix));
        if let Some(endpoint) = self.option("endpoint") {
            builder = builder.endpoint(endpoint);
        }
        if !self.flag("vm_metadata")? {
            builder = builder.disable_vm_metadata();
        }
        if self.flag("anonymous")? {
            builder = builder.skip_signature();
        }
        if let Some(key) = self.secret(GOOGLE_CREDENTIALS) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(key);
            builder = builder.credential(&encoded).disable_config_load();
        }
        Ok(builder)
    }

    /// WebDAV: the user's password or a bearer token from the
    /// environment. Folders are made by the copy, parents first, so a
    /// write does not look for them again.
    fn webdav(&self) -> Result<opendal::services::Webdav, BackendError> {
        let builder = opendal::services::Webdav::default()
            .endpoint(&self.webdav_endpoint())
            .root(&format!("/{}", self.prefix))
            .disable_create_dir(true);
        Ok(match self.webdav_credentials() {
            WebdavCredentials::Basic { user, password } => {
                builder.username(user).password(password)
            }
            WebdavCredentials::Bearer(token) => builder.token(token),
            WebdavCredentials::None => builder,
        })
    }
}

/// How WebDAV requests are signed.
enum WebdavCredentials<'a> {
    /// Basic authentication (an empty password where none is set).
    Basic { user: &'a str, password: &'a str },
    /// A bearer token.
    Bearer(&'a str),
    /// Not at all.
    None,
}

/// The location as given (it holds no secrets).
impl fmt::Display for RemoteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        crate::options::write(f, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_are_within_what_the_stores_take() {
        let part = |location: &str| RemoteLocation::parse(location).unwrap().part_size();
        assert_eq!(part("s3://b").unwrap(), 8 << 20);
        assert_eq!(part("s3://b?part_size=64M").unwrap(), 64 << 20);
        assert_eq!(part("azblob://c?part_size=4000M").unwrap(), 4000 << 20);
        for bad in [
            "s3://b?part_size=4M",
            "gcs://b?part_size=5G",
            "s3://b?part_size=big",
        ] {
            assert!(part(bad).is_err(), "{bad}");
        }
        assert!(RemoteLocation::parse("webdav://h?part_size=8M").is_err());
    }

    #[test]
    fn object_stores_take_folder_markers_and_nothing_else_does() {
        for location in ["s3://b/p?region=x", "azblob://c", "gcs://b"] {
            assert!(takes_option(location, "folder_markers"), "{location}");
        }
        for location in ["webdav://h/p", "sftp://u@h/p", "/data", "sim:depth=1"] {
            assert!(!takes_option(location, "folder_markers"), "{location}");
        }
    }

    #[test]
    fn locations_parse_and_print_back() {
        let l =
            RemoteLocation::parse("s3://bkt/a/b/?endpoint=http://127.0.0.1:9000&region=x").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bkt", "a/b"));
        assert_eq!(l.option("endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(
            l.to_string(),
            "s3://bkt/a/b?endpoint=http://127.0.0.1:9000&region=x"
        );
        assert_eq!(RemoteLocation::parse("s3://bkt").unwrap().prefix, "");
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b?nope=1",
            "s3://b?region",
            "s3://b?region=a&region=b",
        ] {
            assert!(RemoteLocation::parse(bad).is_err(), "{bad}");
        }
        let e = RemoteLocation::parse("gopher://x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let az = RemoteLocation::parse("azblob://c/p?account=a&endpoint=http://h").unwrap();
        assert_eq!(az.service, Service::Azblob);
        assert!(RemoteLocation::parse("azblob://c?region=x").is_err());
        let gcs = RemoteLocation::parse("gcs://b/p/q?anonymous=true").unwrap();
        assert_eq!((gcs.service, gcs.prefix.as_str()), (Service::Gcs, "p/q"));
        assert!(RemoteLocation::parse("gcs://b?account=x").is_err());
    }
}
