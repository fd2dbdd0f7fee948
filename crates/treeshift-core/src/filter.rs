//! Filter rules run on every child as it is listed.
//!
//! An exclude glob without a `/` matches a node's name at any depth (as in
//! `.gitignore`: `*.tmp`, `node_modules`); a glob with a `/` matches the
//! whole path relative to the root (`build/**`, `a/*/cache`).

use crate::{Entry, RelPath};
use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use thiserror::Error;

/// A filter rule that could not be understood.
#[derive(Debug, Error)]
pub enum FilterError {
    /// The glob does not parse.
    #[error("invalid --exclude pattern '{pattern}': {source}")]
    BadGlob {
        /// The pattern as given.
        pattern: String,
        /// What the glob parser said.
        source: globset::Error,
    },
}

/// What the filter decided for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The node takes part in the migration.
    Include,
    /// The node is left out; the string names the rule, e.g. `exclude:*.tmp`.
    Exclude(String),
}

/// The compiled filter rules of one migration.
#[derive(Clone, Debug)]
pub struct Filter {
    patterns: Vec<String>,
    by_name: GlobSet,
    by_name_index: Vec<usize>,
    by_path: GlobSet,
    by_path_index: Vec<usize>,
}

impl Filter {
    /// Compiles exclude globs. An empty list excludes nothing.
    pub fn new(excludes: &[String]) -> Result<Filter, FilterError> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        let (mut by_name_index, mut by_path_index) = (Vec::new(), Vec::new());
        for (i, pattern) in excludes.iter().enumerate() {
            let trimmed = pattern.trim_start_matches('/');
            let glob = compile(trimmed).map_err(|source| FilterError::BadGlob {
                pattern: pattern.clone(),
                source,
            })?;
            if trimmed.contains('/') || pattern.starts_with('/') {
                by_path.add(glob);
                by_path_index.push(i);
            } else {
                by_name.add(glob);
                by_name_index.push(i);
            }
        }
        let build = |b: GlobSetBuilder, pattern: &str| {
            b.build().map_err(|source| FilterError::BadGlob {
                pattern: pattern.to_string(),
                source,
            })
        };
        let joined = excludes.join(" ");
        Ok(Filter {
            patterns: excludes.to_vec(),
            by_name: build(by_name, &joined)?,
            by_name_index,
            by_path: build(by_path, &joined)?,
            by_path_index,
        })
    }

    /// The patterns this filter was built from, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Decides whether the child `entry` at `path` takes part.
    pub fn verdict(&self, path: &RelPath, entry: &Entry) -> Verdict {
        if self.patterns.is_empty() {
            return Verdict::Include;
        }
        let name = Candidate::new(Path::new(OsStr::from_bytes(&entry.name)));
        if let Some(&i) = self.by_name.matches_candidate(&name).first() {
            return self.excluded_by(self.by_name_index[i]);
        }
        let full = Candidate::new(Path::new(OsStr::from_bytes(path.as_bytes())));
        if let Some(&i) = self.by_path.matches_candidate(&full).first() {
            return self.excluded_by(self.by_path_index[i]);
        }
        Verdict::Include
    }

    fn excluded_by(&self, pattern: usize) -> Verdict {
        Verdict::Exclude(format!("exclude:{}", self.patterns[pattern]))
    }
}

fn compile(pattern: &str) -> Result<Glob, globset::Error> {
    // `*` stays within one name so `a/*/c` means one level, as in .gitignore.
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn entry(name: &[u8]) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: Kind::File,
            size: 1,
            mtime_ns: None,
        }
    }

    fn verdict(f: &Filter, path: &[u8]) -> Verdict {
        let p = RelPath::from_bytes(path.to_vec());
        f.verdict(&p, &entry(p.name()))
    }

    #[test]
    fn name_globs_match_at_any_depth() {
        let f = Filter::new(&["*.tmp".into(), "node_modules".into()]).unwrap();
        assert_eq!(
            verdict(&f, b"a/b/c.tmp"),
            Verdict::Exclude("exclude:*.tmp".into())
        );
        assert_eq!(
            verdict(&f, b"x/node_modules"),
            Verdict::Exclude("exclude:node_modules".into())
        );
        assert_eq!(verdict(&f, b"a/c.txt"), Verdict::Include);
    }

    #[test]
    fn path_globs_match_from_the_root() {
        let f = Filter::new(&["a/*/cache".into(), "/top.log".into()]).unwrap();
        assert!(matches!(verdict(&f, b"a/x/cache"), Verdict::Exclude(_)));
        assert_eq!(verdict(&f, b"a/x/y/cache"), Verdict::Include);
        assert!(matches!(verdict(&f, b"top.log"), Verdict::Exclude(_)));
        assert_eq!(verdict(&f, b"sub/top.log"), Verdict::Include);
    }

    #[test]
    fn invalid_utf8_names_are_matched_as_bytes() {
        let f = Filter::new(&["*.tmp".into()]).unwrap();
        assert!(matches!(verdict(&f, b"\xff\xfe.tmp"), Verdict::Exclude(_)));
    }

    #[test]
    fn bad_glob_is_a_clear_error() {
        let err = Filter::new(&["a[".into()]).unwrap_err();
        assert!(err.to_string().contains("invalid --exclude pattern 'a['"));
    }
}
