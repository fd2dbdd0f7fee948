//! Remote locations as the command line takes them:
//! `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1`.
//!
//! Options go in the query string. Secrets never do: they come from the
//! service's usual environment variables and files (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `~/.aws/credentials`, ...).

use crate::{BackendError, ErrorKind};
use opendal::Operator;
use std::fmt;

/// A parsed remote location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLocation {
    /// The service (`s3`).
    pub scheme: String,
    /// The bucket (or container).
    pub bucket: String,
    /// The prefix within it, without slashes at either end.
    pub prefix: String,
    /// Options, by name, in the order given.
    pub options: Vec<(String, String)>,
}

/// Options each service takes.
const S3_OPTIONS: [&str; 5] = [
    "endpoint",
    "region",
    "virtual_host",
    "ec2_metadata",
    "anonymous",
];

impl RemoteLocation {
    /// Parses `scheme://bucket/prefix?key=value&...`.
    pub fn parse(text: &str) -> Result<RemoteLocation, BackendError> {
        let bad = |why: String| BackendError::new(ErrorKind::Other, "open", text, why);
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://bucket/prefix".into()))?;
        if scheme != "s3" {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "open",
                text,
                format!("no remote service '{scheme}' (this build has s3)"),
            ));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket: expected s3://bucket/prefix".into()));
        }
        let mut options = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("option '{pair}' is not key=value")))?;
            if !S3_OPTIONS.contains(&k) {
                return Err(bad(format!(
                    "unknown option '{k}' (s3 takes: {})",
                    S3_OPTIONS.join(", ")
                )));
            }
            if options.iter().any(|(seen, _)| seen == k) {
                return Err(bad(format!("option '{k}' given twice")));
            }
            options.push((k.to_string(), v.to_string()));
        }
        Ok(RemoteLocation {
            scheme: scheme.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            options,
        })
    }

    fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, BackendError> {
        match self.option(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(BackendError::new(
                ErrorKind::Other,
                "open",
                self.to_string(),
                format!("option '{key}' takes true or false, not '{other}'"),
            )),
        }
    }

    /// Where this service's credentials come from, for a run that found
    /// none.
    pub(super) fn credentials_hint(&self) -> &'static str {
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with \
         ~/.aws/credentials), or add anonymous=true to the location of a public bucket"
    }

    /// An OpenDAL operator for the location.
    pub(super) fn operator(&self) -> Result<Operator, BackendError> {
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
        Operator::new(builder).map_err(|e| {
            BackendError::new(ErrorKind::Other, "open", self.to_string(), e.to_string())
        })
    }
}

/// The location as given (it holds no secrets).
impl fmt::Display for RemoteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        for (i, (k, v)) in self.options.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
