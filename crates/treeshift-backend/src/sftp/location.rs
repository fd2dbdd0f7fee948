//! SFTP locations as the command line takes them:
//! `sftp://[user@]host[:port]/path?key=FILE&known_hosts=FILE&connections=N`.
//!
//! The path is absolute on the server (`sftp://host/home/alice/data`).
//! Nothing secret goes in a location (it is recorded in the state file):
//! authentication is `ssh`'s, by key or agent, as `ssh` itself is set up.
//! The content of the key file `key=` names is the connection's secret
//! (`SSH_PRIVATE_KEY`): sealed in the state file, it is handed to `ssh`
//! from memory when the file is gone.

use super::session::Target;
use crate::{BackendError, ErrorKind};
use percent_encoding::percent_decode_str;
use std::fmt;
use treeshift_core::{Secret, Secrets};

/// Sessions (ssh connections) opened at most, by default. A server answers
/// one session's requests one after another, and one session's channel
/// window caps what it moves over a long link, so more can help there;
/// each costs a key exchange to open (see docs/BENCHMARKS.md).
const DEFAULT_CONNECTIONS: usize = 4;

/// The options an `sftp://` location takes.
const OPTIONS: [&str; 3] = ["key", "known_hosts", "connections"];

/// A parsed `sftp://` location.
#[derive(Clone, Debug)]
pub struct SftpLocation {
    pub target: Target,
    /// The root's path on the server, as bytes (percent-decoded).
    pub root: Vec<u8>,
    /// The path as given, for display.
    path_text: String,
    pub connections: usize,
    options: Vec<(String, String)>,
}

impl SftpLocation {
    /// Parses `sftp://[user@]host[:port]/path?options`.
    pub fn parse(text: &str) -> Result<SftpLocation, BackendError> {
        let bad = |why: String| BackendError::new(ErrorKind::Other, "open", text, why);
        let rest = text
            .strip_prefix("sftp://")
            .ok_or_else(|| bad("expected sftp://[user@]host[:port]/path".into()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, _)) if user.contains(':') => {
                return Err(BackendError::new(
                    ErrorKind::Other,
                    "open",
                    crate::without_password(text),
                    "no password in the location: SFTP authenticates by key or agent, as \
                     ssh does (key=FILE names a key)",
                ));
            }
            Some((user, host)) => (Some(user.to_string()), host),
            None => (None, authority),
        };
        let (host, port) = split_port(host_port).map_err(bad)?;
        if host.is_empty() || host.starts_with('-') {
            return Err(bad(
                "no host: expected sftp://[user@]host[:port]/path".into()
            ));
        }
        let mut location = SftpLocation {
            target: Target {
                host: host.to_string(),
                user,
                port,
                key: None,
                known_hosts: None,
            },
            root: percent_decode_str(path).collect(),
            path_text: path.to_string(),
            connections: DEFAULT_CONNECTIONS,
            options: Vec::new(),
        };
        if location.root.contains(&0) {
            return Err(bad("a NUL byte in the path".into()));
        }
        while location.root.len() > 1 && location.root.ends_with(b"/") {
            location.root.pop();
        }
        location.options = crate::options::parse(query, "sftp", &OPTIONS).map_err(bad)?;
        for (k, v) in &location.options {
            let value = percent_decode_str(v).decode_utf8_lossy().into_owned();
            match k.as_str() {
                "key" => location.target.key = Some(value),
                "known_hosts" => location.target.known_hosts = Some(value),
                // `connections`, the only other option `parse` lets through.
                _ => {
                    location.connections = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| bad(format!("connections takes 1 to 64, not '{v}'")))?;
                }
            }
        }
        Ok(location)
    }

    /// The content of the private key file the location names, if any.
    pub fn gather_secrets(&self) -> Result<Secrets, BackendError> {
        let mut secrets = Secrets::new();
        if let Some(path) = &self.target.key {
            let key = std::fs::read_to_string(path).map_err(|e| {
                BackendError::new(
                    ErrorKind::Other,
                    "open",
                    self.to_string(),
                    format!("cannot read the private key {path}: {e}"),
                )
            })?;
            secrets.insert(super::PRIVATE_KEY, Secret::new(key));
        }
        Ok(secrets)
    }
}

/// `host`, `host:port` or `[v6]:port`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("'{text}': an IPv6 address without its ']'"))?;
        (host, rest.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = port
        .map(|p| p.parse().map_err(|_| format!("'{p}' is not a port")))
        .transpose()?;
    Ok((host, port))
}

/// The location as given, options included (it holds no secret).
impl fmt::Display for SftpLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sftp://")?;
        if let Some(user) = &self.target.user {
            write!(f, "{user}@")?;
        }
        match self.target.host.contains(':') {
            true => write!(f, "[{}]", self.target.host)?,
            false => f.write_str(&self.target.host)?,
        }
        if let Some(port) = self.target.port {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path_text)?;
        crate::options::write(f, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print_back() {
        let text = "sftp://alice@example.org:2222/srv/a%20b/?key=/k/id&connections=4";
        let l = SftpLocation::parse(text).unwrap();
        assert_eq!(l.target.user.as_deref(), Some("alice"));
        assert_eq!(
            (l.target.host.as_str(), l.target.port),
            ("example.org", Some(2222))
        );
        assert_eq!(l.root, b"/srv/a b");
        assert_eq!(l.target.key.as_deref(), Some("/k/id"));
        assert_eq!(l.connections, 4);
        assert_eq!(SftpLocation::parse(&l.to_string()).unwrap().root, l.root);
        assert_eq!(l.to_string(), text);
        let v6 = SftpLocation::parse("sftp://[::1]:22/x").unwrap();
        assert_eq!((v6.target.host.as_str(), v6.target.port), ("::1", Some(22)));
        assert_eq!(v6.to_string(), "sftp://[::1]:22/x");
        assert_eq!(SftpLocation::parse("sftp://h").unwrap().root, b"/");
        assert_eq!(
            SftpLocation::parse("sftp://h/a%ff").unwrap().root,
            b"/a\xff"
        );
        for bad in [
            "sftp://",
            "sftp://u:pw@h/x",
            "sftp://h:port/x",
            "sftp://h/x?nope=1",
            "sftp://h/x?connections=0",
            "sftp://h/x?key=a&key=b",
            "sftp://-oProxyCommand=x/y",
            "sftp://h/a%00b",
        ] {
            assert!(SftpLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
