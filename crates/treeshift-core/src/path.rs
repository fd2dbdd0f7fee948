//! Relative paths as raw bytes.
//!
//! Storage names are not always UTF-8 (a local Linux tree can hold any byte
//! but `/` and NUL), so every name and path is kept as the exact bytes the
//! backend gave; only display escapes them.

use std::fmt;

/// Why `name` cannot be one name in a path, or `None` if it can. Names
/// come from listings of any backend (an object key such as `a/../../x`
/// or `a//b`), and only plain names ever become paths: anything else would
/// climb out of its folder or become several folders.
pub fn name_problem(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("an empty name"),
        b"." => Some("the name '.' (the folder itself)"),
        b".." => Some("the name '..' (would climb out of its folder)"),
        _ if name.contains(&b'/') => Some("a name holding '/' (would become several folders)"),
        _ if name.contains(&0) => Some("a name holding a NUL byte"),
        _ => None,
    }
}

/// A plain name that stands in for an invalid one in the state file, so
/// it can be listed and reviewed: `/`, NUL and `\` escaped as `\xNN`, and
/// `""`, `.` and `..` spelled out. The stand-in is never a path on either
/// tree; an item recorded under one is never listed, compared or copied.
pub fn name_stand_in(name: &[u8]) -> Vec<u8> {
    match name {
        b"" => return b"\\x(empty)".to_vec(),
        b"." => return b"\\x2e".to_vec(),
        b".." => return b"\\x2e\\x2e".to_vec(),
        _ => {}
    }
    let mut out = Vec::with_capacity(name.len() + 8);
    for &b in name {
        match b {
            b'/' | 0 | b'\\' => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// A path relative to a tree's root, as raw bytes with `/` between names.
/// The root itself is the empty path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The root of a tree.
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    /// Wraps bytes that already form a relative path (as stored).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        RelPath(bytes)
    }

    /// A path as a person types it (`--path`, an API query): slashes at
    /// either end are not part of it.
    pub fn from_typed(text: &str) -> Self {
        RelPath(text.trim_matches('/').as_bytes().to_vec())
    }

    /// Returns true if and only if this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The child of this path called `name`.
    pub fn join(&self, name: &[u8]) -> Self {
        if self.0.is_empty() {
            return RelPath(name.to_vec());
        }
        let mut bytes = Vec::with_capacity(self.0.len() + 1 + name.len());
        bytes.extend_from_slice(&self.0);
        bytes.push(b'/');
        bytes.extend_from_slice(name);
        RelPath(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consumes the path and returns its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The last name of the path (empty for the root).
    pub fn name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The folder holding this path (the root for a top-level name and for
    /// the root itself).
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        }
    }

    /// A sibling of this path called `name` (same parent folder).
    pub fn sibling(&self, name: &[u8]) -> RelPath {
        self.parent().join(name)
    }

    /// Returns true if this path is `ancestor` or lies below it (by whole
    /// names: `ab` is not within `a`).
    pub fn is_within(&self, ancestor: &RelPath) -> bool {
        ancestor.is_root()
            || self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.get(ancestor.0.len()) == Some(&b'/'))
    }

    /// The bounds of the paths below this one (not the root): every path
    /// `p` under it has `from <= p < to`, and no other path does: after
    /// `P/` and before `P0` ('0' is the byte after '/'), compared as bytes.
    pub fn below_bounds(&self) -> [Vec<u8>; 2] {
        [b'/', b'0'].map(|end| [self.as_bytes(), &[end]].concat())
    }

    /// Number of names in the path: 0 for the root.
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            1 + self.0.iter().filter(|&&b| b == b'/').count()
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({})", display_bytes(&self.0))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("/")
        } else {
            f.write_str(&display_bytes(&self.0))
        }
    }
}

/// Renders bytes for a terminal or a log line: valid UTF-8 stays as it is,
/// control characters become `\n`, `\t`, `\r` or `\xNN`, a backslash becomes
/// `\\`, and bytes that are not UTF-8 become `\xNN`. The result is
/// unambiguous, so two different names never print the same.
pub fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    for b in c.to_string().bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_goes_by_whole_names() {
        let p = |s: &str| RelPath::from_bytes(s.as_bytes().to_vec());
        assert!(p("a/b").is_within(&p("a")));
        assert!(p("a").is_within(&p("a")));
        assert!(p("a").is_within(&RelPath::root()));
        assert!(!p("ab").is_within(&p("a")));
        assert!(!p("a").is_within(&p("a/b")));
        assert_eq!(p("a/b/c").parent(), p("a/b"));
        assert_eq!(p("a").sibling(b"x"), p("x"));
    }

    #[test]
    fn the_bounds_below_a_path_hold_what_is_within_it_and_nothing_else() {
        let p = |s: &str| RelPath::from_bytes(s.as_bytes().to_vec());
        let folder = p("a/b");
        let [from, to] = folder.below_bounds();
        for path in [
            "a/b/c",
            "a/b/c/d",
            "a/b/\u{ff}",
            "a/b",
            "a/b.x",
            "a/b-",
            "a/bc",
            "a/b0",
            "a/c",
        ] {
            let path = p(path);
            let inside = (from.as_slice()..to.as_slice()).contains(&path.as_bytes());
            let below = path.is_within(&folder) && path != folder;
            assert_eq!(inside, below, "{path:?}");
        }
    }

    #[test]
    fn join_and_name() {
        let p = RelPath::root().join(b"a").join(b"b c");
        assert_eq!(p.as_bytes(), b"a/b c");
        assert_eq!(p.name(), b"b c");
        assert_eq!(p.depth(), 2);
        assert_eq!(RelPath::root().depth(), 0);
        assert_eq!(RelPath::root().to_string(), "/");
    }

    #[test]
    fn display_escapes_control_and_invalid_bytes() {
        assert_eq!(display_bytes(b"a\nb"), "a\\nb");
        assert_eq!(display_bytes(b"x\xffy"), "x\\xffy");
        assert_eq!(display_bytes(b"back\\slash"), "back\\\\slash");
        assert_eq!(display_bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_ne!(display_bytes(b"\\xff"), display_bytes(b"\xff"));
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_paths_are_found_and_stand_ins_are_plain() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/../../x",
            b"/etc",
            b"nul\0x",
            b"a/",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
            let stand_in = name_stand_in(bad);
            assert_eq!(name_problem(&stand_in), None, "{stand_in:?}");
        }
        for good in [&b"a"[..], b"..x", b"...", b"bad\xff", b"new\nline", b" "] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
        assert_eq!(name_stand_in(b"a/../x"), b"a\\x2f..\\x2fx");
    }
}
