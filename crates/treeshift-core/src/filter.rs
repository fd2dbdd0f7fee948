//! Filter rules run on every child as it is listed.
//!
//! A [`FilterSpec`] holds the rules as the user gave them (it is stored in
//! the state file and is part of the approved plan); a [`Filter`] is the
//! compiled form that gives each listed child a [`Verdict`]. An excluded
//! folder's subtree is never listed, so nothing below it is seen at all.
//!
//! # Globs
//!
//! `--exclude` and `--include` lines have `.gitignore` semantics (through the
//! `ignore` crate), matched against the path relative to the tree's root:
//!
//! * a pattern without a `/` (`*.tmp`, `node_modules`) matches a name at any
//!   depth;
//! * a leading or middle `/` anchors the pattern to the root (`/top.log`,
//!   `a/*/cache`); `*` and `?` never match a `/`, `**` matches any number of
//!   folders;
//! * a trailing `/` (`build/`) matches folders only;
//! * `!pattern` takes back what an earlier line matched; the last matching
//!   line wins;
//! * a `[` without its `]` is an error (git would read it literally), a
//!   line starting with `#` (a comment in a `.gitignore`) or matching nothing
//!   (empty, `!`, `/`) is an error too, so no rule is silently dropped; write
//!   `\#` or `\!` for a literal leading `#` or `!`. As in `.gitignore`,
//!   trailing spaces are dropped unless escaped (`foo\ `).
//!
//! Names are raw bytes (not always UTF-8, may hold newlines) and are matched
//! as bytes; `*` matches any byte but `/`.
//!
//! # Order of the checks
//!
//! The first rule that leaves a node out names it in the verdict:
//!
//! 1. kinds: `--skip-symlinks` (`kind:symlink`), `--skip-special`
//!    (`kind:special`);
//! 2. `--skip-hidden`: a name starting with `.`, any kind (`hidden`);
//! 3. excludes: the last matching line, unless it is a `!` line
//!    (`exclude:<line>`);
//! 4. includes, files, symlinks and special files only: a node takes part if
//!    the last include line matching its path, or else one of its folders
//!    (nearest first), is not a `!` line; so `--include docs/` takes in
//!    everything below `docs` (`include:no match`, or `include:!<line>` when
//!    a `!` line took it out). Folders are never left out by includes, so
//!    files deep down can still match;
//! 5. sizes, files only: `--min-size` and `--max-size` are inclusive
//!    (`min-size:<bytes>`, `max-size:<bytes>`);
//! 6. modification time, files only: a file takes part if
//!    `modified-after <= mtime < modified-before` (half-open, so two ranges
//!    that meet at one instant split files cleanly); a file without an mtime
//!    is never left out by these rules (`modified-after:<UTC time>`,
//!    `modified-before:<UTC time>`).
//!
//! Kinds and hidden come first because they are the cheapest, and a `!`
//! exclude line cannot bring back a node those rules left out.

use crate::{Entry, Kind, RelPath};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use thiserror::Error;

/// A filter rule that could not be understood.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// An `--exclude` or `--include` line does not parse.
    #[error("invalid {flag} pattern '{pattern}': {reason}")]
    BadPattern {
        /// `--exclude` or `--include`.
        flag: &'static str,
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size does not parse (see [`parse_size`]).
    #[error("invalid {what} '{text}': {reason}")]
    BadSize {
        /// The flag (`--min-size`) once [`FilterError::with_flag`] named it,
        /// else `size`.
        what: &'static str,
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A date/time does not parse (see [`parse_time`]).
    #[error("invalid {what} '{text}': {reason}")]
    BadTime {
        /// The flag (`--modified-after`) once [`FilterError::with_flag`]
        /// named it, else `date`.
        what: &'static str,
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two rules leave no file that could take part.
    #[error("{0}, so no file could take part")]
    EmptyRange(String),
}

impl FilterError {
    /// Names the flag a size or time was given for, so the message reads
    /// `invalid --min-size '12q': ...` instead of `invalid size '12q': ...`.
    /// Other errors are returned unchanged.
    pub fn with_flag(self, flag: &'static str) -> FilterError {
        match self {
            FilterError::BadSize { text, reason, .. } => FilterError::BadSize {
                what: flag,
                text,
                reason,
            },
            FilterError::BadTime { text, reason, .. } => FilterError::BadTime {
                what: flag,
                text,
                reason,
            },
            other => other,
        }
    }
}

/// Filter rules as the user gave them; stored in the state file's settings
/// and part of the approved plan. Every field has a default, so a stored
/// spec with fewer fields (an older state file) still reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct FilterSpec {
    /// `.gitignore`-style lines leaving nodes out; `!x` takes `x` back.
    pub excludes: Vec<String>,
    /// If non-empty, only files, symlinks and special files matching one of
    /// these (`.gitignore`-style) take part; folders are always traversed
    /// unless excluded.
    pub includes: Vec<String>,
    /// Files smaller than this many bytes are left out.
    pub min_size: Option<u64>,
    /// Files larger than this many bytes are left out.
    pub max_size: Option<u64>,
    /// Unix seconds: files modified before this are left out.
    pub modified_after: Option<i64>,
    /// Unix seconds: files modified at or after this are left out.
    pub modified_before: Option<i64>,
    /// Leave out names starting with `.` (any kind; a hidden folder's
    /// subtree is not traversed).
    pub skip_hidden: bool,
    /// Leave out symlinks.
    pub skip_symlinks: bool,
    /// Leave out fifos, sockets and devices.
    pub skip_special: bool,
}

impl FilterSpec {
    /// Returns true if and only if no rule is set (every node takes part).
    pub fn is_empty(&self) -> bool {
        *self == FilterSpec::default()
    }

    /// One human-readable line per active rule, in the order of the flags:
    /// `exclude *.tmp`, `include *.rs`, `min-size 1024`, `max-size 1048576`,
    /// `modified-after 2026-01-31T00:00:00Z`, `modified-before ...`,
    /// `skip-hidden`, `skip-symlinks`, `skip-special`.
    pub fn rules(&self) -> Vec<String> {
        let mut rules = Vec::new();
        rules.extend(self.excludes.iter().map(|p| format!("exclude {p}")));
        rules.extend(self.includes.iter().map(|p| format!("include {p}")));
        if let Some(n) = self.min_size {
            rules.push(format!("min-size {n}"));
        }
        if let Some(n) = self.max_size {
            rules.push(format!("max-size {n}"));
        }
        if let Some(t) = self.modified_after {
            rules.push(format!("modified-after {}", format_time(t)));
        }
        if let Some(t) = self.modified_before {
            rules.push(format!("modified-before {}", format_time(t)));
        }
        if self.skip_hidden {
            rules.push("skip-hidden".into());
        }
        if self.skip_symlinks {
            rules.push("skip-symlinks".into());
        }
        if self.skip_special {
            rules.push("skip-special".into());
        }
        rules
    }
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
    spec: FilterSpec,
    /// False when the spec is empty: `verdict` returns at once.
    active: bool,
    excludes: Option<Gitignore>,
    includes: Option<Gitignore>,
    /// Inclusive bounds; `0` and `u64::MAX` when not set.
    min_size: u64,
    max_size: u64,
    /// Nanosecond bounds (i128: any i64 seconds times 1e9 fits).
    after_ns: Option<i128>,
    before_ns: Option<i128>,
    /// Verdict texts of the size and time rules, formatted once.
    why_min_size: String,
    why_max_size: String,
    why_after: String,
    why_before: String,
}

const NS_PER_SEC: i128 = 1_000_000_000;

impl Filter {
    /// Compiles the rules of `spec`. An empty spec leaves nothing out.
    ///
    /// Fails on a pattern that does not parse (or would be silently
    /// dropped), and on `--min-size` above `--max-size` or
    /// `--modified-after` not before `--modified-before`.
    pub fn new(spec: &FilterSpec) -> Result<Filter, FilterError> {
        if let (Some(min), Some(max)) = (spec.min_size, spec.max_size)
            && min > max
        {
            return Err(FilterError::EmptyRange(format!(
                "--min-size {min} is larger than --max-size {max}"
            )));
        }
        if let (Some(after), Some(before)) = (spec.modified_after, spec.modified_before)
            && after >= before
        {
            return Err(FilterError::EmptyRange(format!(
                "--modified-after {} is not before --modified-before {}",
                format_time(after),
                format_time(before)
            )));
        }
        Ok(Filter {
            active: !spec.is_empty(),
            excludes: compile("--exclude", &spec.excludes)?,
            includes: compile("--include", &spec.includes)?,
            min_size: spec.min_size.unwrap_or(0),
            max_size: spec.max_size.unwrap_or(u64::MAX),
            after_ns: spec.modified_after.map(|s| i128::from(s) * NS_PER_SEC),
            before_ns: spec.modified_before.map(|s| i128::from(s) * NS_PER_SEC),
            why_min_size: format!("min-size:{}", spec.min_size.unwrap_or(0)),
            why_max_size: format!("max-size:{}", spec.max_size.unwrap_or(u64::MAX)),
            why_after: format!(
                "modified-after:{}",
                format_time(spec.modified_after.unwrap_or(0))
            ),
            why_before: format!(
                "modified-before:{}",
                format_time(spec.modified_before.unwrap_or(0))
            ),
            spec: spec.clone(),
        })
    }

    /// The rules this filter was built from.
    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Returns true if and only if this filter leaves nothing out, so a
    /// caller may skip [`Filter::verdict`] altogether.
    pub fn is_empty(&self) -> bool {
        !self.active
    }

    /// Decides whether the child `entry` at `path` takes part (see the
    /// module documentation for the order of the checks). Allocates only
    /// for the text of an exclusion.
    pub fn verdict(&self, path: &RelPath, entry: &Entry) -> Verdict {
        if !self.active {
            return Verdict::Include;
        }
        match entry.kind {
            Kind::Symlink if self.spec.skip_symlinks => return excluded("kind:symlink"),
            Kind::Special if self.spec.skip_special => return excluded("kind:special"),
            _ => {}
        }
        if self.spec.skip_hidden && entry.name.first() == Some(&b'.') {
            return excluded("hidden");
        }
        let is_dir = entry.kind == Kind::Folder;
        let rel = Path::new(OsStr::from_bytes(path.as_bytes()));
        if let Some(excludes) = &self.excludes
            && let Match::Ignore(glob) = excludes.matched(rel, is_dir)
        {
            return Verdict::Exclude(format!("exclude:{}", glob.original()));
        }
        if is_dir {
            return Verdict::Include;
        }
        // `matched_path_or_any_parents` panics on a path with a root; a
        // RelPath never has one, and the guard keeps a bad one from aborting.
        if let Some(includes) = &self.includes
            && !rel.has_root()
        {
            match includes.matched_path_or_any_parents(rel, false) {
                Match::Ignore(_) => {}
                Match::Whitelist(glob) => {
                    return Verdict::Exclude(format!("include:{}", glob.original()));
                }
                Match::None => return excluded("include:no match"),
            }
        }
        if entry.kind != Kind::File {
            return Verdict::Include;
        }
        if entry.size < self.min_size {
            return excluded(&self.why_min_size);
        }
        if entry.size > self.max_size {
            return excluded(&self.why_max_size);
        }
        if let Some(mtime) = entry.mtime_ns {
            let mtime = i128::from(mtime);
            if self.after_ns.is_some_and(|after| mtime < after) {
                return excluded(&self.why_after);
            }
            if self.before_ns.is_some_and(|before| mtime >= before) {
                return excluded(&self.why_before);
            }
        }
        Verdict::Include
    }
}

fn excluded(rule: &str) -> Verdict {
    Verdict::Exclude(rule.to_string())
}

/// Compiles `.gitignore`-style lines; `None` for no lines.
fn compile(flag: &'static str, lines: &[String]) -> Result<Option<Gitignore>, FilterError> {
    if lines.is_empty() {
        return Ok(None);
    }
    let bad = |pattern: &str, reason: String| FilterError::BadPattern {
        flag,
        pattern: pattern.to_string(),
        reason,
    };
    // Root "." keeps `ignore` from stripping any prefix: paths are already
    // relative to the tree's root.
    let mut builder = GitignoreBuilder::new(".");
    builder.allow_unclosed_class(false);
    for line in lines {
        if line.starts_with('#') {
            return Err(bad(
                line,
                "a line starting with '#' is a comment in .gitignore syntax; \
                 write '\\#' to match a name starting with '#'"
                    .into(),
            ));
        }
        // The same line alone must give one glob, or `ignore` dropped it.
        let mut single = GitignoreBuilder::new(".");
        single.allow_unclosed_class(false);
        single
            .add_line(None, line)
            .map_err(|e| bad(line, glob_reason(e)))?;
        let compiled = single.build().map_err(|e| bad(line, glob_reason(e)))?;
        if compiled.is_empty() {
            return Err(bad(line, "the pattern matches nothing".into()));
        }
        builder
            .add_line(None, line)
            .map_err(|e| bad(line, glob_reason(e)))?;
    }
    let joined = lines.join(" ");
    builder
        .build()
        .map(Some)
        .map_err(|e| bad(&joined, glob_reason(e)))
}

/// The glob parser's own words, without `ignore`'s "error parsing glob" frame.
fn glob_reason(err: ignore::Error) -> String {
    match err {
        ignore::Error::Glob { err, .. } => err,
        other => other.to_string(),
    }
}

/// Parses a size into bytes: a number (`10`, `1.5`) and an optional unit,
/// case-insensitive: `k`, `M`, `G`, `T`, also written `KiB`/`KB`, `MiB`/`MB`,
/// `GiB`/`GB`, `TiB`/`TB`; all are powers of 1024. `B` (or nothing) means
/// bytes. A fraction needs a unit and is rounded down to whole bytes
/// (`1.5k` = 1536). The error says `invalid size '...'`; see
/// [`FilterError::with_flag`] to name the flag instead.
pub fn parse_size(text: &str) -> Result<u64, FilterError> {
    let bad = |reason: &str| FilterError::BadSize {
        what: "size",
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad(
            "empty; expected a number such as 10, 10k, 1.5M or 2GiB",
        ));
    }
    if t.starts_with('-') {
        return Err(bad("a size cannot be negative"));
    }
    let number_len = t
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_len);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(bad("expected a number such as 10, 10k, 1.5M or 2GiB"));
    }
    let unit = unit.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(bad(&format!(
                "unknown unit '{unit}' (use k, M, G or T, also written KiB or KB etc.; \
                 all are powers of 1024)"
            )));
        }
    };
    let multiplier: u64 = 1 << shift;
    if shift == 0 && !frac.is_empty() {
        return Err(bad("a fraction of a byte needs a unit, e.g. 1.5k"));
    }
    if frac.len() > 18 {
        return Err(bad("too many decimal places"));
    }
    let too_large = || bad("too large (more than 16 EiB)");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(frac.len() as u32);
        let part =
            u64::try_from(digits * u128::from(multiplier) / scale).map_err(|_| too_large())?;
        bytes = bytes.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(bytes)
}

/// Parses an absolute date/time into Unix seconds: `2026-01-31` (midnight),
/// `2026-01-31T12:00:00Z`, `2026-01-31 12:00:00`, `2026-01-31T12:00`. Without
/// an offset the time is UTC; `Z` or `+hh:mm`/`-hh:mm` may follow. Relative
/// times (`7d`) are refused: a resumed run would see a different cutoff than
/// the approved plan. The error says `invalid date '...'`; see
/// [`FilterError::with_flag`] to name the flag instead.
pub fn parse_time(text: &str) -> Result<i64, FilterError> {
    parse_time_inner(text.trim()).map_err(|reason| FilterError::BadTime {
        what: "date",
        text: text.to_string(),
        reason,
    })
}

const TIME_FORMS: &str = "expected 2026-01-31, 2026-01-31T12:00:00Z or '2026-01-31 12:00:00' (UTC)";

fn parse_time_inner(t: &str) -> Result<i64, String> {
    let b = t.as_bytes();
    let looks_relative = !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric())
        && b[0].is_ascii_digit()
        && b.last().is_some_and(|c| c.is_ascii_alphabetic());
    if looks_relative {
        return Err(format!(
            "relative times are not accepted (a resumed run would see another cutoff); {TIME_FORMS}"
        ));
    }
    let num = |at: usize, len: usize| -> Result<i64, String> {
        let digits = b.get(at..at + len).ok_or_else(|| TIME_FORMS.to_string())?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(TIME_FORMS.to_string());
        }
        Ok(digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, c: u8| -> Result<(), String> {
        if b.get(at) == Some(&c) {
            Ok(())
        } else {
            Err(TIME_FORMS.to_string())
        }
    };
    let year = num(0, 4)?;
    sep(4, b'-')?;
    let month = num(5, 2)?;
    sep(7, b'-')?;
    let day = num(8, 2)?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is not 1 to 12"));
    }
    let days_in_month = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days_in_month).contains(&day) {
        return Err(format!(
            "day {day} is not in {year:04}-{month:02} (1 to {days_in_month})"
        ));
    }
    let mut at = 10;
    let (mut hour, mut minute, mut second) = (0, 0, 0);
    if at < b.len() && matches!(b[at], b'T' | b't' | b' ') {
        hour = num(at + 1, 2)?;
        sep(at + 3, b':')?;
        minute = num(at + 4, 2)?;
        at += 6;
        if b.get(at) == Some(&b':') {
            second = num(at + 1, 2)?;
            at += 3;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(format!(
                "time {hour:02}:{minute:02}:{second:02} is not between 00:00:00 and 23:59:59"
            ));
        }
    }
    let mut offset = 0;
    match b.get(at) {
        None => {}
        Some(b'Z' | b'z') if at + 1 == b.len() => {}
        Some(&c @ (b'+' | b'-')) => {
            let oh = num(at + 1, 2)?;
            sep(at + 3, b':')?;
            let om = num(at + 4, 2)?;
            if at + 6 != b.len() || oh > 23 || om > 59 {
                return Err(TIME_FORMS.to_string());
            }
            offset = (oh * 60 + om) * 60 * if c == b'+' { 1 } else { -1 };
        }
        Some(_) => return Err(TIME_FORMS.to_string()),
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), which [`parse_time`] reads
/// back.
fn format_time(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1_000_000_000;

    fn node(kind: Kind, size: u64, mtime_ns: Option<i64>) -> Entry {
        Entry::new(Vec::new(), kind, size, mtime_ns)
    }

    /// The verdict for the node at `path` (its name is the path's last name).
    fn check(f: &Filter, path: &[u8], mut entry: Entry) -> Verdict {
        let p = RelPath::from_bytes(path.to_vec());
        entry.name = p.name().to_vec();
        f.verdict(&p, &entry)
    }

    fn file(f: &Filter, path: &[u8]) -> Verdict {
        check(f, path, node(Kind::File, 1, None))
    }

    fn folder(f: &Filter, path: &[u8]) -> Verdict {
        check(f, path, node(Kind::Folder, 0, None))
    }

    fn out(rule: &str) -> Verdict {
        Verdict::Exclude(rule.into())
    }

    fn lines(patterns: &[&str]) -> Vec<String> {
        patterns.iter().map(|p| p.to_string()).collect()
    }

    fn excluding(patterns: &[&str]) -> Filter {
        Filter::new(&FilterSpec {
            excludes: lines(patterns),
            ..FilterSpec::default()
        })
        .unwrap()
    }

    fn including(patterns: &[&str]) -> Filter {
        Filter::new(&FilterSpec {
            includes: lines(patterns),
            ..FilterSpec::default()
        })
        .unwrap()
    }

    #[test]
    fn empty_spec_includes_everything() {
        let f = Filter::new(&FilterSpec::default()).unwrap();
        assert!(f.is_empty());
        assert!(f.spec().is_empty());
        assert!(f.spec().rules().is_empty());
        assert_eq!(file(&f, b".hidden"), Verdict::Include);
        assert_eq!(
            check(&f, b"a/l", node(Kind::Symlink, 3, None)),
            Verdict::Include
        );
    }

    #[test]
    fn name_globs_match_at_any_depth() {
        let f = excluding(&["*.tmp", "node_modules"]);
        assert!(!f.is_empty());
        assert_eq!(file(&f, b"a/b/c.tmp"), out("exclude:*.tmp"));
        assert_eq!(file(&f, b"c.tmp"), out("exclude:*.tmp"));
        assert_eq!(folder(&f, b"x/node_modules"), out("exclude:node_modules"));
        assert_eq!(file(&f, b"node_modules"), out("exclude:node_modules"));
        assert_eq!(file(&f, b"a/c.txt"), Verdict::Include);
        assert_eq!(folder(&f, b"a/c.tmp.d"), Verdict::Include);
    }

    #[test]
    fn path_globs_match_from_the_root() {
        let f = excluding(&["a/*/cache", "/top.log", "docs/**/*.pdf"]);
        assert_eq!(folder(&f, b"a/x/cache"), out("exclude:a/*/cache"));
        assert_eq!(folder(&f, b"a/x/y/cache"), Verdict::Include);
        assert_eq!(folder(&f, b"b/a/x/cache"), Verdict::Include);
        assert_eq!(file(&f, b"top.log"), out("exclude:/top.log"));
        assert_eq!(file(&f, b"sub/top.log"), Verdict::Include);
        assert_eq!(file(&f, b"docs/a.pdf"), out("exclude:docs/**/*.pdf"));
        assert_eq!(file(&f, b"docs/x/y/a.pdf"), out("exclude:docs/**/*.pdf"));
        assert_eq!(file(&f, b"z/docs/a.pdf"), Verdict::Include);
    }

    #[test]
    fn double_star_at_the_start_and_end() {
        let f = excluding(&["**/logs", "build/**"]);
        assert_eq!(folder(&f, b"logs"), out("exclude:**/logs"));
        assert_eq!(folder(&f, b"a/b/logs"), out("exclude:**/logs"));
        // `build/**` matches what is inside `build`, not `build` itself.
        assert_eq!(folder(&f, b"build"), Verdict::Include);
        assert_eq!(file(&f, b"build/x"), out("exclude:build/**"));
    }

    #[test]
    fn trailing_slash_matches_folders_only() {
        let f = excluding(&["build/", "/out/"]);
        assert_eq!(folder(&f, b"build"), out("exclude:build/"));
        assert_eq!(folder(&f, b"a/b/build"), out("exclude:build/"));
        assert_eq!(file(&f, b"a/build"), Verdict::Include);
        assert_eq!(
            check(&f, b"build", node(Kind::Symlink, 5, None)),
            Verdict::Include
        );
        assert_eq!(folder(&f, b"out"), out("exclude:/out/"));
        assert_eq!(folder(&f, b"a/out"), Verdict::Include);
    }

    #[test]
    fn negation_takes_back_and_the_last_line_wins() {
        let f = excluding(&["*.log", "!keep.log", "/logs/keep.log"]);
        assert_eq!(file(&f, b"a.log"), out("exclude:*.log"));
        assert_eq!(file(&f, b"a/keep.log"), Verdict::Include);
        assert_eq!(file(&f, b"keep.log"), Verdict::Include);
        assert_eq!(file(&f, b"logs/keep.log"), out("exclude:/logs/keep.log"));
        // An escaped `!` is a literal name.
        let f = excluding(&["\\!important"]);
        assert_eq!(file(&f, b"!important"), out("exclude:\\!important"));
        assert_eq!(file(&f, b"important"), Verdict::Include);
    }

    #[test]
    fn includes_pick_files_and_never_folders() {
        let f = including(&["*.rs", "/Cargo.toml"]);
        assert_eq!(file(&f, b"src/deep/main.rs"), Verdict::Include);
        assert_eq!(file(&f, b"Cargo.toml"), Verdict::Include);
        assert_eq!(file(&f, b"sub/Cargo.toml"), out("include:no match"));
        assert_eq!(file(&f, b"README.md"), out("include:no match"));
        assert_eq!(
            check(&f, b"link", node(Kind::Symlink, 4, None)),
            out("include:no match")
        );
        assert_eq!(
            check(&f, b"fifo", node(Kind::Special, 0, None)),
            out("include:no match")
        );
        // Folders are traversed whatever their name, so files deep down can match.
        assert_eq!(folder(&f, b"src"), Verdict::Include);
        assert_eq!(folder(&f, b"docs/guide"), Verdict::Include);
    }

    #[test]
    fn includes_match_through_folders_and_negation() {
        let f = including(&["docs/", "!*.bak", "/src"]);
        assert_eq!(file(&f, b"docs/a.md"), Verdict::Include);
        assert_eq!(file(&f, b"x/docs/y/a.md"), Verdict::Include);
        assert_eq!(file(&f, b"docs/a.bak"), out("include:!*.bak"));
        assert_eq!(file(&f, b"src/lib.rs"), Verdict::Include);
        assert_eq!(file(&f, b"a/src/lib.rs"), out("include:no match"));
        assert_eq!(file(&f, b"docs"), out("include:no match"));
    }

    #[test]
    fn excludes_win_over_includes() {
        let f = Filter::new(&FilterSpec {
            excludes: lines(&["target/", "*.tmp.rs"]),
            includes: lines(&["*.rs"]),
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(folder(&f, b"target"), out("exclude:target/"));
        assert_eq!(file(&f, b"a.tmp.rs"), out("exclude:*.tmp.rs"));
        assert_eq!(file(&f, b"a.rs"), Verdict::Include);
    }

    #[test]
    fn sizes_are_inclusive_and_for_files_only() {
        let f = Filter::new(&FilterSpec {
            min_size: Some(1024),
            max_size: Some(1_048_576),
            ..FilterSpec::default()
        })
        .unwrap();
        let sized = |kind, size| check(&f, b"a/x", node(kind, size, None));
        assert_eq!(sized(Kind::File, 1023), out("min-size:1024"));
        assert_eq!(sized(Kind::File, 1024), Verdict::Include);
        assert_eq!(sized(Kind::File, 1_048_576), Verdict::Include);
        assert_eq!(sized(Kind::File, 1_048_577), out("max-size:1048576"));
        assert_eq!(sized(Kind::File, 0), out("min-size:1024"));
        assert_eq!(sized(Kind::Folder, 0), Verdict::Include);
        assert_eq!(sized(Kind::Symlink, 3), Verdict::Include);
        assert_eq!(sized(Kind::Special, 0), Verdict::Include);
        // min == max is one exact size; min > max is refused.
        let exact = Filter::new(&FilterSpec {
            min_size: Some(7),
            max_size: Some(7),
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(
            check(&exact, b"x", node(Kind::File, 7, None)),
            Verdict::Include
        );
        let err = Filter::new(&FilterSpec {
            min_size: Some(8),
            max_size: Some(7),
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--min-size 8 is larger than --max-size 7, so no file could take part"
        );
    }

    #[test]
    fn mtimes_are_a_half_open_range_and_missing_mtime_passes() {
        let after = parse_time("2026-01-01").unwrap();
        let before = parse_time("2026-02-01").unwrap();
        let f = Filter::new(&FilterSpec {
            modified_after: Some(after),
            modified_before: Some(before),
            ..FilterSpec::default()
        })
        .unwrap();
        let at = |ns: Option<i64>| check(&f, b"f", node(Kind::File, 1, ns));
        let why_after = out("modified-after:2026-01-01T00:00:00Z");
        let why_before = out("modified-before:2026-02-01T00:00:00Z");
        assert_eq!(at(Some(after * NS - 1)), why_after);
        assert_eq!(at(Some(after * NS)), Verdict::Include);
        assert_eq!(at(Some(before * NS - 1)), Verdict::Include);
        assert_eq!(at(Some(before * NS)), why_before);
        assert_eq!(at(Some(i64::MIN)), why_after);
        assert_eq!(at(Some(i64::MAX)), why_before);
        assert_eq!(at(None), Verdict::Include);
        // Folders and symlinks are not aged.
        assert_eq!(
            check(&f, b"d", node(Kind::Folder, 0, Some(0))),
            Verdict::Include
        );
        assert_eq!(
            check(&f, b"l", node(Kind::Symlink, 1, Some(0))),
            Verdict::Include
        );
        // Times before 1970 and extreme bounds do not overflow.
        let f = Filter::new(&FilterSpec {
            modified_after: Some(-86_400),
            modified_before: Some(i64::MAX),
            ..FilterSpec::default()
        })
        .unwrap();
        let at = |ns: i64| check(&f, b"f", node(Kind::File, 1, Some(ns)));
        assert_eq!(at(-86_400 * NS), Verdict::Include);
        assert_eq!(
            at(-86_400 * NS - 1),
            out("modified-after:1969-12-31T00:00:00Z")
        );
        assert_eq!(at(i64::MAX), Verdict::Include);
        let err = Filter::new(&FilterSpec {
            modified_after: Some(before),
            modified_before: Some(before),
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert!(matches!(err, FilterError::EmptyRange(_)), "{err}");
    }

    #[test]
    fn hidden_names_of_any_kind() {
        let f = Filter::new(&FilterSpec {
            skip_hidden: true,
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(file(&f, b".env"), out("hidden"));
        assert_eq!(folder(&f, b"a/.git"), out("hidden"));
        assert_eq!(
            check(&f, b".l", node(Kind::Symlink, 1, None)),
            out("hidden")
        );
        assert_eq!(file(&f, b"a.b"), Verdict::Include);
        assert_eq!(file(&f, b".x/visible"), Verdict::Include);
        // Hidden comes before excludes, so `!` cannot bring a hidden name back.
        let f = Filter::new(&FilterSpec {
            excludes: lines(&["*", "!.env"]),
            skip_hidden: true,
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(file(&f, b".env"), out("hidden"));
    }

    #[test]
    fn kinds() {
        let f = Filter::new(&FilterSpec {
            skip_symlinks: true,
            skip_special: true,
            excludes: lines(&["*.sock"]),
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(
            check(&f, b"a/l", node(Kind::Symlink, 1, None)),
            out("kind:symlink")
        );
        assert_eq!(
            check(&f, b"a/s.sock", node(Kind::Special, 0, None)),
            out("kind:special")
        );
        assert_eq!(file(&f, b"a/f"), Verdict::Include);
        assert_eq!(folder(&f, b"a/d"), Verdict::Include);
        let only_links = Filter::new(&FilterSpec {
            skip_symlinks: true,
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(
            check(&only_links, b"p", node(Kind::Special, 0, None)),
            Verdict::Include
        );
    }

    #[test]
    fn invalid_utf8_and_newline_names_are_matched_as_bytes() {
        let f = excluding(&["*.tmp", "/a?b", "x/*/y"]);
        assert_eq!(file(&f, b"\xff\xfe.tmp"), out("exclude:*.tmp"));
        assert_eq!(file(&f, b"d\xff/n.tmp"), out("exclude:*.tmp"));
        assert_eq!(file(&f, b"line1\nline2.tmp"), out("exclude:*.tmp"));
        assert_eq!(file(&f, b"a\nb"), out("exclude:/a?b"));
        assert_eq!(folder(&f, b"x/\n\xff/y"), out("exclude:x/*/y"));
        assert_eq!(file(&f, b"\xff\xfe.txt"), Verdict::Include);
        assert_eq!(file(&f, b"a\n/b"), Verdict::Include);
        let f = including(&["*.rs"]);
        assert_eq!(file(&f, b"\xc3(\n.rs"), Verdict::Include);
        assert_eq!(file(&f, b"\xc3(\n.rs\n"), out("include:no match"));
        let f = Filter::new(&FilterSpec {
            skip_hidden: true,
            ..FilterSpec::default()
        })
        .unwrap();
        assert_eq!(file(&f, b".\xff"), out("hidden"));
    }

    #[test]
    fn bad_patterns_are_clear_errors() {
        let err = Filter::new(&FilterSpec {
            excludes: lines(&["ok", "a["]),
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid --exclude pattern 'a[': "),
            "{err}"
        );
        let err = Filter::new(&FilterSpec {
            includes: lines(&["{a,b"]),
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid --include pattern '{a,b': "),
            "{err}"
        );
        for dropped in ["", "   ", "!", "/", "#notes"] {
            let err = Filter::new(&FilterSpec {
                excludes: lines(&[dropped]),
                ..FilterSpec::default()
            })
            .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid --exclude pattern '{dropped}': ")),
                "{err}"
            );
        }
        // An escaped `#` is a literal name.
        let f = excluding(&["\\#notes"]);
        assert_eq!(file(&f, b"#notes"), out("exclude:\\#notes"));
    }

    #[test]
    fn parse_size_good() {
        let k = 1024u64;
        for (text, bytes) in [
            ("0", 0),
            ("10", 10),
            ("10b", 10),
            ("10B", 10),
            ("10k", 10 * k),
            ("10K", 10 * k),
            ("10KiB", 10 * k),
            ("10kb", 10 * k),
            ("10 KB", 10 * k),
            (" 1.5M ", 3 * k * k / 2),
            ("1.5MiB", 3 * k * k / 2),
            ("2GiB", 2 * k * k * k),
            ("3G", 3 * k * k * k),
            ("3gb", 3 * k * k * k),
            ("1T", k * k * k * k),
            ("1TiB", k * k * k * k),
            ("0.5k", 512),
            ("0.1k", 102),
            ("1.000000000000000001T", k * k * k * k),
            ("18446744073709551615", u64::MAX),
            (
                "16777215.999999T",
                16_777_215 * k * k * k * k + 1_099_510_528_264,
            ),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn parse_size_bad() {
        for (text, reason) in [
            ("", "empty"),
            ("12q", "unknown unit 'q'"),
            ("k", "expected a number"),
            ("-1", "negative"),
            ("1.", "expected a number"),
            (".5k", "expected a number"),
            ("1.2.3k", "expected a number"),
            ("1.5", "fraction of a byte"),
            ("1e3", "unknown unit 'e3'"),
            ("10 kilobytes", "unknown unit 'kilobytes'"),
            ("18446744073709551616", "too large"),
            ("16777216T", "too large"),
            ("17179869184G", "too large"),
            ("1.0000000000000000000k", "decimal places"),
        ] {
            let err = parse_size(text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid size '{text}': ")),
                "{msg}"
            );
            assert!(msg.contains(reason), "{text}: {msg}");
        }
        let err = parse_size("12q").unwrap_err().with_flag("--min-size");
        assert!(
            err.to_string()
                .starts_with("invalid --min-size '12q': unknown unit"),
            "{err}"
        );
    }

    #[test]
    fn parse_time_good() {
        let day = 86_400;
        let jan31 = 1_769_817_600; // 2026-01-31T00:00:00Z
        for (text, secs) in [
            ("1970-01-01", 0),
            ("1970-01-02", day),
            ("1969-12-31", -day),
            ("2026-01-31", jan31),
            ("2026-01-31T12:00:00Z", jan31 + 12 * 3600),
            ("2026-01-31 12:00:00", jan31 + 12 * 3600),
            ("2026-01-31t12:00:00z", jan31 + 12 * 3600),
            ("2026-01-31T12:34", jan31 + 12 * 3600 + 34 * 60),
            ("2026-01-31T23:59:59", jan31 + day - 1),
            ("2026-01-31T12:00:00+02:00", jan31 + 10 * 3600),
            ("2026-01-31T12:00:00-01:30", jan31 + 13 * 3600 + 30 * 60),
            (" 2026-01-31 ", jan31),
            ("2024-02-29", 1_709_164_800),
            ("2000-02-29", 951_782_400),
            ("2000-03-01", 951_868_800),
            ("0000-01-01", -62_167_219_200),
            ("9999-12-31T23:59:59Z", 253_402_300_799),
        ] {
            assert_eq!(parse_time(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn parse_time_bad() {
        for (text, reason) in [
            ("", "expected 2026-01-31"),
            ("7d", "relative times are not accepted"),
            ("12h", "relative times are not accepted"),
            ("yesterday", "expected 2026-01-31"),
            ("2026-1-31", "expected 2026-01-31"),
            ("26-01-31", "expected 2026-01-31"),
            ("2026/01/31", "expected 2026-01-31"),
            ("2026-13-01", "month 13 is not 1 to 12"),
            ("2026-00-10", "month 0"),
            ("2026-02-29", "day 29 is not in 2026-02 (1 to 28)"),
            ("1900-02-29", "day 29"),
            ("2026-04-31", "day 31"),
            ("2026-01-00", "day 0"),
            ("2026-01-31T24:00:00", "not between 00:00:00 and 23:59:59"),
            ("2026-01-31T12:60", "not between"),
            ("2026-01-31T12:00:60Z", "not between"),
            ("2026-01-31T12", "expected 2026-01-31"),
            ("2026-01-31T", "expected 2026-01-31"),
            ("2026-01-31X", "expected 2026-01-31"),
            ("2026-01-31T12:00:00ZZ", "expected 2026-01-31"),
            ("2026-01-31T12:00:00+2", "expected 2026-01-31"),
            ("2026-01-31T12:00:00+24:00", "expected 2026-01-31"),
            ("2026-01-31T12:00:00.5Z", "expected 2026-01-31"),
            ("1769817600", "expected 2026-01-31"),
        ] {
            let msg = parse_time(text).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("invalid date '{text}': ")),
                "{msg}"
            );
            assert!(msg.contains(reason), "{text}: {msg}");
        }
        let err = parse_time("7d").unwrap_err().with_flag("--modified-after");
        assert!(
            err.to_string()
                .starts_with("invalid --modified-after '7d': "),
            "{err}"
        );
    }

    #[test]
    fn formatted_times_read_back() {
        for secs in [
            0,
            -1,
            951_782_400,
            1_769_817_600 + 45_296,
            -62_167_219_200,
            253_402_300_799,
        ] {
            let text = format_time(secs);
            assert_eq!(parse_time(&text), Ok(secs), "{text}");
        }
        assert_eq!(format_time(1_769_862_896), "2026-01-31T12:34:56Z");
        // Out-of-range values format without panicking.
        let _ = format_time(i64::MAX);
        let _ = format_time(i64::MIN);
    }

    #[test]
    fn rules_list_every_active_rule() {
        let spec = FilterSpec {
            excludes: lines(&["*.tmp", "!keep.tmp"]),
            includes: lines(&["*.rs"]),
            min_size: Some(1024),
            max_size: Some(1_048_576),
            modified_after: Some(1_769_817_600),
            modified_before: Some(1_769_904_000),
            skip_hidden: true,
            skip_symlinks: true,
            skip_special: true,
        };
        assert!(!spec.is_empty());
        assert_eq!(
            spec.rules(),
            [
                "exclude *.tmp",
                "exclude !keep.tmp",
                "include *.rs",
                "min-size 1024",
                "max-size 1048576",
                "modified-after 2026-01-31T00:00:00Z",
                "modified-before 2026-02-01T00:00:00Z",
                "skip-hidden",
                "skip-symlinks",
                "skip-special",
            ]
        );
        let f = Filter::new(&spec).unwrap();
        assert_eq!(f.spec(), &spec);
    }

    #[test]
    fn spec_serde_round_trip_and_old_state_files() {
        let spec = FilterSpec {
            excludes: lines(&["*.tmp"]),
            includes: lines(&["docs/"]),
            min_size: Some(1),
            max_size: None,
            modified_after: Some(-5),
            modified_before: Some(1_769_817_600),
            skip_hidden: true,
            skip_symlinks: false,
            skip_special: true,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<FilterSpec>(&json).unwrap(), spec);
        assert_eq!(
            serde_json::from_str::<FilterSpec>("{}").unwrap(),
            FilterSpec::default()
        );
        let old: FilterSpec = serde_json::from_str(r#"{"excludes": ["*.tmp", "/a/"]}"#).unwrap();
        assert_eq!(
            old,
            FilterSpec {
                excludes: lines(&["*.tmp", "/a/"]),
                ..FilterSpec::default()
            }
        );
    }

    #[test]
    fn filter_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + Clone>() {}
        shared::<Filter>();
        let f = excluding(&["*.tmp"]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert_eq!(file(&f, b"a/b.tmp"), out("exclude:*.tmp")));
            }
        });
    }
}
