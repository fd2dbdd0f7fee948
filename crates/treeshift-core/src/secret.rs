//! Secrets a connection needs (access keys, passwords, tokens, private
//! keys): values that never print, and are wiped from memory when dropped.

use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// One secret value. `Debug` and `Display` print `[redacted]`; the memory
/// that held it is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value (taken, not copied).
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value, for the one place that must use it (a request signer,
    /// an encryption).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A connection's secrets by name. Names are those of the environment
/// variables each service's own tools read (`AWS_SECRET_ACCESS_KEY`,
/// `AZURE_STORAGE_ACCOUNT_KEY`, ...); they are not secret and may be shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, Secret>);

/// What stands in for a secret in text that reaches a person or a file.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not searched for in text: a one- or two-letter value
/// would blank ordinary words, and is no secret worth the name.
const REDACT_MIN_LEN: usize = 4;

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Sets (or replaces) one secret.
    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.0.insert(name.into(), value);
    }

    /// One secret, by name.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Name and secret pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds every secret of `other`, replacing those of the same name.
    pub fn extend(&mut self, other: Secrets) {
        self.0.extend(other.0);
    }

    /// `text` with every secret value (and its URL-encoded form, as a
    /// request line would carry it) replaced by [`REDACTED`]: for messages
    /// that come from elsewhere (a server's error, a library's) and could
    /// quote a request.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.0.values() {
            let value = secret.expose();
            if value.len() < REDACT_MIN_LEN {
                continue;
            }
            for form in [value.to_string(), url_encoded(value)] {
                if out.contains(&form) {
                    out = out.replace(&form, REDACTED);
                }
            }
        }
        out
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, REDACTED)))
            .finish()
    }
}

/// `value` percent-encoded as a query string component.
fn url_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_are_cut_from_text() {
        let mut s = Secrets::new();
        s.insert("KEY", Secret::new("abc/def+ghi".into()));
        s.insert("SHORT", Secret::new("ab".into()));
        assert_eq!(
            format!("{s:?}"),
            r#"{"KEY": "[redacted]", "SHORT": "[redacted]"}"#
        );
        assert_eq!(s.get("KEY").unwrap().to_string(), REDACTED);
        assert_eq!(
            s.redact("sig=abc%2Fdef%2Bghi and abc/def+ghi; ab stays"),
            "sig=[redacted] and [redacted]; ab stays"
        );
        assert_eq!(s.names().collect::<Vec<_>>(), ["KEY", "SHORT"]);
    }
}
