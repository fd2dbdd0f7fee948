//! A deterministic simulated tree: the test bed for discovery and copy.
//!
//! Every node is computed from a seed and its relative path, so a tree of any
//! size costs no memory and two backends with the same parameters agree on
//! every byte. A *mutated* variant of the same tree (same shape parameters
//! plus `mutate=SEED`) stands in for a destination that was partly copied
//! and then drifted: folders and files deleted, files modified, extra files.
//! Latency and faults (permission denied, transient errors at the call or in
//! the middle of a listing) are injected from the same hashes.
//!
//! Parameter grammar (the text after `sim:`):
//!
//! ```text
//! params  := "" | param ("," param)*
//! param   := key "=" value
//! key     := seed | depth | fanout | files | sizes | latency_us
//!          | entry_latency_ns | mutate | del_dirs | del_files | modify
//!          | extra | fail_perm | fail_transient | odd_names | bad_names
//!          | symlinks | specials
//! sizes   := small | tiny | mixed | fixed:N
//! ```
//!
//! Integers are unsigned decimals; `del_dirs`, `del_files`, `modify` and
//! `extra` are percentages in `0..=100`; `fail_perm` and `fail_transient` are
//! fractions in `0..=1`; `odd_names` and `bad_names` are `0` or `1`. A key
//! may appear once.
//!
//! Names: folders `d{i:02}`, files `f{i:04}.dat`, mutation extras
//! `x{i}.extra`, symlinks `l{i}`, special files `p{i}`, and with
//! `odd_names=1` the names in [`ODD_NAMES`], with `bad_names=1` the names
//! in [`BAD_NAMES`] (which no local tree can hold, as an object store's
//! listing can give them). A listing yields folders first, then files,
//! extras, odd names, bad names, symlinks and special files.

use crate::{Backend, BackendError, Children, ErrorKind};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;
use treeshift_core::{Entry, Kind, RelPath};

/// Every key `from_params` accepts, in canonical order.
const VALID_KEYS: [&str; 18] = [
    "seed",
    "depth",
    "fanout",
    "files",
    "sizes",
    "latency_us",
    "entry_latency_ns",
    "mutate",
    "del_dirs",
    "del_files",
    "modify",
    "extra",
    "fail_perm",
    "fail_transient",
    "odd_names",
    "bad_names",
    "symlinks",
    "specials",
];

const MTIME_BASE_S: i64 = 1_600_000_000;
const MTIME_SPAN_S: u64 = 3 * 365 * 86_400;
const NS_PER_S: i64 = 1_000_000_000;
/// How much older a modified file is on the mutated variant.
const MODIFY_AGE_NS: i64 = 86_400 * NS_PER_S;
/// Attempts from this number on never fault, so even `fail_transient=1`
/// lets a caller that keeps retrying through.
const TRANSIENT_MAX_FAULTS: u32 = 8;

const LONG_NAME: [u8; 255] = [b'L'; 255];

/// The hostile names every folder holds with `odd_names=1`, as ordinary
/// files: a newline, invalid UTF-8, exactly 255 bytes, a tab, leading and
/// trailing spaces, and a name that starts like `..`.
pub const ODD_NAMES: [&[u8]; 6] = [
    b"new\nline",
    b"bad\xff\xfe",
    &LONG_NAME,
    b"tab\there",
    b" spaced ",
    b"..x",
];

/// Names that cannot become paths, as files in every folder with
/// `bad_names=1`: what an object store's keys can hold (`a//b`, `a/../x`)
/// and a local tree cannot. Discovery must record them as `invalid-name`
/// and never use them as paths.
pub const BAD_NAMES: [&[u8]; 6] = [
    b"",
    b".",
    b"..",
    b"up/../../../escape",
    b"/etc/passwd",
    b"nul\0byte",
];

/// How file sizes are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SizeDist {
    /// Exponential with a mean of 2 KiB, capped at 16 KiB.
    #[default]
    Small,
    /// Uniform in `0..=4096`.
    Tiny,
    /// Like `Small`, but 0.55 % of files are log-uniform in 1–64 MiB.
    Mixed,
    /// Every file has exactly this many bytes.
    Fixed(u64),
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeDist::Small => f.write_str("small"),
            SizeDist::Tiny => f.write_str("tiny"),
            SizeDist::Mixed => f.write_str("mixed"),
            SizeDist::Fixed(n) => write!(f, "fixed:{n}"),
        }
    }
}

/// The parameters of a simulated tree (see the module docs for the grammar).
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// Shapes sizes, mtimes and fault decisions.
    pub seed: u64,
    /// Folders exist at depths `1..=depth`; the root is depth 0.
    pub depth: u32,
    /// Sub-folders per folder (folders at the maximum depth have none).
    pub fanout: u32,
    /// Files per folder, the root included.
    pub files: u32,
    /// The file size distribution.
    pub sizes: SizeDist,
    /// Sleep at each `list_children` call, in microseconds.
    pub latency_us: u64,
    /// Extra sleep per streamed entry, in nanoseconds (paid per 1000 entries).
    pub entry_latency_ns: u64,
    /// If set, this is the mutated destination variant with this mutation seed.
    pub mutate: Option<u64>,
    /// Mutated variant: percent of folders deleted with their subtree.
    pub del_dirs: f64,
    /// Mutated variant: percent of files deleted.
    pub del_files: f64,
    /// Mutated variant: percent of remaining files with another size and an
    /// mtime one day older.
    pub modify: f64,
    /// Mutated variant: extra files per folder, as a percent of `files`.
    pub extra: f64,
    /// Fraction of folders (never the root) that always fail with permission
    /// denied.
    pub fail_perm: f64,
    /// Probability that one listing attempt fails with a temporary error.
    pub fail_transient: f64,
    /// Adds the [`ODD_NAMES`] files to every folder.
    pub odd_names: bool,
    /// Adds the [`BAD_NAMES`] files to every folder.
    pub bad_names: bool,
    /// Symlinks per folder.
    pub symlinks: u32,
    /// Special files per folder.
    pub specials: u32,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            seed: 1,
            depth: 4,
            fanout: 8,
            files: 25,
            sizes: SizeDist::Small,
            latency_us: 0,
            entry_latency_ns: 0,
            mutate: None,
            del_dirs: 5.0,
            del_files: 25.0,
            modify: 5.0,
            extra: 2.0,
            fail_perm: 0.0,
            fail_transient: 0.0,
            odd_names: false,
            bad_names: false,
            symlinks: 0,
            specials: 0,
        }
    }
}

impl SimParams {
    /// Parses comma-separated `key=value` pairs; the empty string gives the
    /// defaults. Errors name the offending key or value and list the valid
    /// keys.
    pub fn parse(text: &str) -> Result<SimParams, BackendError> {
        let mut params = SimParams::default();
        if text.trim().is_empty() {
            return Ok(params);
        }
        let mut seen: Vec<&str> = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let Some((key, value)) = item.split_once('=') else {
                let msg = if item.is_empty() {
                    "an empty parameter (a stray comma)".to_string()
                } else {
                    format!("'{item}' is not key=value")
                };
                return Err(param_error(text, msg));
            };
            let (key, value) = (key.trim(), value.trim());
            if !VALID_KEYS.contains(&key) {
                return Err(param_error(text, format!("unknown parameter '{key}'")));
            }
            if seen.contains(&key) {
                return Err(param_error(text, format!("parameter '{key}' given twice")));
            }
            seen.push(key);
            params.set(key, value).map_err(|expected| {
                param_error(
                    text,
                    format!("bad value '{value}' for '{key}': expected {expected}"),
                )
            })?;
        }
        Ok(params)
    }

    /// Sets one parameter; on failure returns what the value should be.
    fn set(&mut self, key: &str, value: &str) -> Result<(), &'static str> {
        match key {
            "seed" => self.seed = parse_u64(value)?,
            "depth" => self.depth = parse_u32(value)?,
            "fanout" => self.fanout = parse_u32(value)?,
            "files" => self.files = parse_u32(value)?,
            "sizes" => self.sizes = parse_sizes(value)?,
            "latency_us" => self.latency_us = parse_u64(value)?,
            "entry_latency_ns" => self.entry_latency_ns = parse_u64(value)?,
            "mutate" => self.mutate = Some(parse_u64(value)?),
            "del_dirs" => self.del_dirs = parse_percent(value)?,
            "del_files" => self.del_files = parse_percent(value)?,
            "modify" => self.modify = parse_percent(value)?,
            "extra" => self.extra = parse_percent(value)?,
            "fail_perm" => self.fail_perm = parse_fraction(value)?,
            "fail_transient" => self.fail_transient = parse_fraction(value)?,
            "odd_names" => self.odd_names = parse_flag(value)?,
            "bad_names" => self.bad_names = parse_flag(value)?,
            "symlinks" => self.symlinks = parse_u32(value)?,
            "specials" => self.specials = parse_u32(value)?,
            _ => return Err("a known key"),
        }
        Ok(())
    }
}

/// The canonical parameter string: the shape keys always, the others only
/// when they differ from the defaults. It parses back to equal parameters.
impl fmt::Display for SimParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = SimParams::default();
        write!(
            f,
            "seed={},depth={},fanout={},files={},sizes={}",
            self.seed, self.depth, self.fanout, self.files, self.sizes
        )?;
        if self.latency_us != d.latency_us {
            write!(f, ",latency_us={}", self.latency_us)?;
        }
        if self.entry_latency_ns != d.entry_latency_ns {
            write!(f, ",entry_latency_ns={}", self.entry_latency_ns)?;
        }
        if let Some(m) = self.mutate {
            write!(f, ",mutate={m}")?;
        }
        let floats = [
            ("del_dirs", self.del_dirs, d.del_dirs),
            ("del_files", self.del_files, d.del_files),
            ("modify", self.modify, d.modify),
            ("extra", self.extra, d.extra),
            ("fail_perm", self.fail_perm, d.fail_perm),
            ("fail_transient", self.fail_transient, d.fail_transient),
        ];
        for (key, value, default) in floats {
            if value.to_bits() != default.to_bits() {
                write!(f, ",{key}={value}")?;
            }
        }
        if self.odd_names {
            f.write_str(",odd_names=1")?;
        }
        if self.bad_names {
            f.write_str(",bad_names=1")?;
        }
        if self.symlinks != d.symlinks {
            write!(f, ",symlinks={}", self.symlinks)?;
        }
        if self.specials != d.specials {
            write!(f, ",specials={}", self.specials)?;
        }
        Ok(())
    }
}

fn param_error(text: &str, message: String) -> BackendError {
    BackendError::new(
        ErrorKind::Other,
        "open",
        text,
        format!(
            "sim parameters: {message} (valid keys: {})",
            VALID_KEYS.join(", ")
        ),
    )
}

fn parse_u64(value: &str) -> Result<u64, &'static str> {
    value.parse().map_err(|_| "an unsigned integer")
}

fn parse_flag(value: &str) -> Result<bool, &'static str> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err("0 or 1"),
    }
}

fn parse_u32(value: &str) -> Result<u32, &'static str> {
    value.parse().map_err(|_| "an unsigned 32-bit integer")
}

fn parse_percent(value: &str) -> Result<f64, &'static str> {
    const WANT: &str = "a percentage from 0 to 100";
    let v: f64 = value.parse().map_err(|_| WANT)?;
    // `contains` is false for NaN, so "nan" is rejected here too.
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(WANT)
    }
}

fn parse_fraction(value: &str) -> Result<f64, &'static str> {
    const WANT: &str = "a fraction from 0 to 1";
    let v: f64 = value.parse().map_err(|_| WANT)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(WANT)
    }
}

fn parse_sizes(value: &str) -> Result<SizeDist, &'static str> {
    const WANT: &str = "small, tiny, mixed or fixed:N";
    match value {
        "small" => Ok(SizeDist::Small),
        "tiny" => Ok(SizeDist::Tiny),
        "mixed" => Ok(SizeDist::Mixed),
        _ => match value.strip_prefix("fixed:") {
            Some(n) => n.parse().map(SizeDist::Fixed).map_err(|_| WANT),
            None => Err(WANT),
        },
    }
}

// Hashing: a path is hashed with FNV-1a (streamable, so a child's hash
// extends its parent's without rebuilding the path) and then finished with
// the SplitMix64 mixer together with a seed and a purpose tag, so every
// decision about a node is independent of every other and of listing order.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const TAG_SIZE: u64 = 1;
const TAG_MTIME: u64 = 2;
const TAG_DEL_DIR: u64 = 3;
const TAG_DEL_FILE: u64 = 4;
const TAG_MODIFY: u64 = 5;
const TAG_MODIFY_SIZE: u64 = 6;
const TAG_EXTRA_SIZE: u64 = 7;
const TAG_EXTRA_MTIME: u64 = 8;
const TAG_PERM: u64 = 9;
const TAG_TRANSIENT: u64 = 10;
const TAG_CONTENT: u64 = 11;

fn fnv_extend(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn node_hash(seed: u64, tag: u64, path_hash: u64) -> u64 {
    mix(mix(seed ^ mix(tag)) ^ path_hash)
}

/// A uniform number in `[0, 1)` from the top 53 bits.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn percent_hit(h: u64, percent: f64) -> bool {
    unit(h) * 100.0 < percent
}

fn draw_size(dist: SizeDist, h: u64) -> u64 {
    const MIB: f64 = 1024.0 * 1024.0;
    let small = |h: u64| {
        // 1 - unit is in (0, 1], so the logarithm is finite.
        let x = -(1.0 - unit(h)).ln() * 2048.0;
        x.min(16_384.0) as u64
    };
    match dist {
        SizeDist::Small => small(h),
        SizeDist::Tiny => h % 4097,
        SizeDist::Mixed => {
            let h2 = mix(h ^ 0x5151_5151_5151_5151);
            if unit(h2) < 0.0055 {
                let (lo, hi) = (MIB.ln(), (64.0 * MIB).ln());
                (lo + unit(mix(h2)) * (hi - lo)).exp() as u64
            } else {
                small(h)
            }
        }
        SizeDist::Fixed(n) => n,
    }
}

fn mtime_from(h: u64) -> i64 {
    // The span is far below i64::MAX, so the cast cannot wrap.
    (MTIME_BASE_S + (h % MTIME_SPAN_S) as i64) * NS_PER_S
}

/// The kinds of children a folder has, in listing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Folder,
    File,
    Extra,
    Odd,
    Bad,
    Symlink,
    Special,
}

const SLOTS: [Slot; 7] = [
    Slot::Folder,
    Slot::File,
    Slot::Extra,
    Slot::Odd,
    Slot::Bad,
    Slot::Symlink,
    Slot::Special,
];

fn slot_name(slot: Slot, i: u64) -> Vec<u8> {
    match slot {
        Slot::Folder => format!("d{i:02}").into_bytes(),
        Slot::File => format!("f{i:04}.dat").into_bytes(),
        Slot::Extra => format!("x{i}.extra").into_bytes(),
        Slot::Odd => usize::try_from(i)
            .ok()
            .and_then(|i| ODD_NAMES.get(i))
            .map_or_else(Vec::new, |n| n.to_vec()),
        Slot::Bad => usize::try_from(i)
            .ok()
            .and_then(|i| BAD_NAMES.get(i))
            .map_or_else(Vec::new, |n| n.to_vec()),
        Slot::Symlink => format!("l{i}").into_bytes(),
        Slot::Special => format!("p{i}").into_bytes(),
    }
}

/// Parses `{prefix}{index:0width}{suffix}`, accepting only the exact
/// spelling `slot_name` produces, so `f1.dat` is not an alias of `f0001.dat`.
fn parse_indexed(name: &[u8], prefix: &[u8], suffix: &[u8], width: usize) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let i: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (format!("{i:0width$}").as_bytes() == digits).then_some(i)
}

fn classify_name(name: &[u8]) -> Option<(Slot, u64)> {
    if let Some(i) = ODD_NAMES.iter().position(|n| *n == name) {
        return Some((Slot::Odd, i as u64));
    }
    let patterns: [(Slot, &[u8], &[u8], usize); 5] = [
        (Slot::Folder, b"d", b"", 2),
        (Slot::File, b"f", b".dat", 4),
        (Slot::Extra, b"x", b".extra", 0),
        (Slot::Symlink, b"l", b"", 0),
        (Slot::Special, b"p", b"", 0),
    ];
    patterns
        .into_iter()
        .find_map(|(slot, pre, suf, w)| parse_indexed(name, pre, suf, w).map(|i| (slot, i)))
}

/// Where a listed folder sits: what its children's hashes build on.
#[derive(Clone, Copy, Debug)]
struct FolderAt {
    depth: u32,
    /// Hash of the folder's own path (perm and transient decisions).
    own: u64,
    /// Hash of the path plus `/` (nothing for the root), which a child's
    /// name extends to give the child's path hash.
    prefix: u64,
}

impl FolderAt {
    const ROOT: FolderAt = FolderAt {
        depth: 0,
        own: FNV_OFFSET,
        prefix: FNV_OFFSET,
    };

    fn child(&self, name: &[u8]) -> FolderAt {
        let own = fnv_extend(self.prefix, name);
        FolderAt {
            depth: self.depth.saturating_add(1),
            own,
            prefix: fnv_extend(own, b"/"),
        }
    }
}

/// A deterministic simulated tree (see the module docs).
#[derive(Debug)]
pub struct SimBackend {
    params: SimParams,
    extra_count: u64,
    /// Listing attempts per path, kept only for paths that have faulted so
    /// the map stays small when faults are rare.
    attempts: Mutex<HashMap<Vec<u8>, u32>>,
}

impl SimBackend {
    /// A simulated tree with these parameters.
    pub fn new(params: SimParams) -> SimBackend {
        // Saturating float-to-int casts make nonsense values harmless.
        let extra_count = (f64::from(params.files) * params.extra / 100.0).round() as u64;
        SimBackend {
            params,
            extra_count,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Parses `key=value,...` (the text after `sim:`) into a backend.
    pub fn from_params(params: &str) -> Result<SimBackend, BackendError> {
        Ok(SimBackend::new(SimParams::parse(params)?))
    }

    /// The parameters.
    pub fn params(&self) -> &SimParams {
        &self.params
    }

    fn slot_count(&self, at: FolderAt, slot: Slot) -> u64 {
        let p = &self.params;
        match slot {
            Slot::Folder if at.depth < p.depth => u64::from(p.fanout),
            Slot::Folder => 0,
            Slot::File => u64::from(p.files),
            Slot::Extra if p.mutate.is_some() => self.extra_count,
            Slot::Extra => 0,
            Slot::Odd if p.odd_names => ODD_NAMES.len() as u64,
            Slot::Odd => 0,
            Slot::Bad if p.bad_names => BAD_NAMES.len() as u64,
            Slot::Bad => 0,
            Slot::Symlink => u64::from(p.symlinks),
            Slot::Special => u64::from(p.specials),
        }
    }

    fn dir_deleted(&self, path_hash: u64) -> bool {
        self.params.mutate.is_some_and(|m| {
            percent_hit(node_hash(m, TAG_DEL_DIR, path_hash), self.params.del_dirs)
        })
    }

    /// The entry in `slot` called `name` whose path hashes to `ph`, or `None`
    /// if this variant does not have it.
    fn entry_for(&self, slot: Slot, name: Vec<u8>, ph: u64) -> Option<Entry> {
        let p = &self.params;
        match slot {
            Slot::Folder => {
                if self.dir_deleted(ph) {
                    return None;
                }
                Some(Entry::new(
                    name,
                    Kind::Folder,
                    0,
                    Some(mtime_from(node_hash(p.seed, TAG_MTIME, ph))),
                ))
            }
            Slot::Extra => {
                let m = p.mutate?;
                Some(Entry::new(
                    name,
                    Kind::File,
                    draw_size(p.sizes, node_hash(m, TAG_EXTRA_SIZE, ph)),
                    Some(mtime_from(node_hash(m, TAG_EXTRA_MTIME, ph))),
                ))
            }
            Slot::File | Slot::Odd | Slot::Bad | Slot::Symlink | Slot::Special => {
                let kind = match slot {
                    Slot::Symlink => Kind::Symlink,
                    Slot::Special => Kind::Special,
                    _ => Kind::File,
                };
                let size_of = |h: u64| match kind {
                    Kind::Symlink => 1 + h % 64,
                    Kind::Special => 0,
                    _ => draw_size(p.sizes, h),
                };
                let mut size = size_of(node_hash(p.seed, TAG_SIZE, ph));
                let mut mtime = mtime_from(node_hash(p.seed, TAG_MTIME, ph));
                if let Some(m) = p.mutate {
                    if percent_hit(node_hash(m, TAG_DEL_FILE, ph), p.del_files) {
                        return None;
                    }
                    // A special file has no size to change, so it only
                    // ever goes missing.
                    if kind != Kind::Special && percent_hit(node_hash(m, TAG_MODIFY, ph), p.modify)
                    {
                        let new = size_of(node_hash(m, TAG_MODIFY_SIZE, ph));
                        size = if new == size { size ^ 1 } else { new };
                        mtime -= MODIFY_AGE_NS;
                    }
                }
                Some(Entry::new(name, kind, size, Some(mtime)))
            }
        }
    }

    fn child_by_name(&self, at: FolderAt, name: &[u8]) -> Option<Entry> {
        let (slot, i) = classify_name(name)?;
        if i >= self.slot_count(at, slot) {
            return None;
        }
        self.entry_for(slot, name.to_vec(), fnv_extend(at.prefix, name))
    }

    /// Walks `path` name by name, checking that each is a folder this
    /// variant has.
    fn resolve(&self, path: &RelPath) -> Result<FolderAt, BackendError> {
        let mut at = FolderAt::ROOT;
        if path.is_root() {
            return Ok(at);
        }
        for name in path.as_bytes().split(|&b| b == b'/') {
            match self.child_by_name(at, name) {
                Some(e) if e.kind == Kind::Folder => at = at.child(name),
                Some(_) => {
                    return Err(BackendError::new(
                        ErrorKind::Other,
                        "list",
                        path.to_string(),
                        "not a folder",
                    ));
                }
                None => {
                    return Err(BackendError::new(
                        ErrorKind::NotFound,
                        "list",
                        path.to_string(),
                        "no such folder in the simulated tree",
                    ));
                }
            }
        }
        Ok(at)
    }

    /// The entry at `path` in this variant, `None` if it has none. Faults
    /// apply to listings only.
    fn entry_at(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        if path.is_root() {
            return Ok(Some(Entry::new(
                Vec::new(),
                Kind::Folder,
                0,
                Some(mtime_from(node_hash(self.params.seed, TAG_MTIME, 0))),
            )));
        }
        let at = match self.resolve(&path.parent()) {
            Ok(at) => at,
            Err(e) if e.kind == ErrorKind::NotFound || e.kind == ErrorKind::Other => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(self.child_by_name(at, path.name()))
    }

    /// The entry at `path`, which must be of `kind`.
    fn expect_at(
        &self,
        path: &RelPath,
        kind: Kind,
        operation: &'static str,
    ) -> Result<Entry, BackendError> {
        match self.entry_at(path)? {
            Some(e) if e.kind == kind => Ok(e),
            Some(e) => Err(BackendError::new(
                ErrorKind::Other,
                operation,
                path.to_string(),
                format!(
                    "a {} in the simulated tree, not a {}",
                    e.kind.as_str(),
                    kind.as_str()
                ),
            )),
            None => Err(BackendError::new(
                ErrorKind::NotFound,
                operation,
                path.to_string(),
                "not in the simulated tree",
            )),
        }
    }

    /// Decides whether this listing attempt faults: `Err` for a fault at the
    /// call, `Ok(Some(n))` for one after `n` entries, `Ok(None)` for none.
    fn transient_fault(
        &self,
        folder: &RelPath,
        at: FolderAt,
        slots: u64,
    ) -> Result<Option<u64>, BackendError> {
        let p = &self.params;
        if p.fail_transient <= 0.0 || p.fail_transient.is_nan() {
            return Ok(None);
        }
        let key = folder.as_bytes();
        let (attempt, h, fault) = {
            let mut map = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let attempt = map.get(key).copied().unwrap_or(0);
            let h = mix(node_hash(p.seed, TAG_TRANSIENT, at.own) ^ mix(u64::from(attempt)));
            let fault = attempt < TRANSIENT_MAX_FAULTS && unit(h) < p.fail_transient;
            if fault || map.contains_key(key) {
                map.insert(key.to_vec(), attempt.saturating_add(1));
            }
            (attempt, h, fault)
        };
        if !fault {
            Ok(None)
        } else if h & 1 == 0 {
            Err(transient_error(folder, attempt, "at the call"))
        } else {
            Ok(Some(slots / 2))
        }
    }
}

fn transient_error(folder: &RelPath, attempt: u32, when: &str) -> BackendError {
    BackendError::new(
        ErrorKind::Temporary,
        "list",
        folder.to_string(),
        format!("simulated transient fault {when} (attempt {attempt})"),
    )
}

impl Backend for SimBackend {
    fn describe(&self) -> String {
        format!("sim:{}", self.params)
    }

    /// A read-only tree of files with exact mtimes, symlinks and special
    /// files, nothing more.
    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities {
            permissions: false,
            hard_links: false,
            file_ids: false,
            xattrs: false,
            create_new: false,
            rename: false,
            ..crate::Capabilities::posix()
        }
    }

    fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
        Ok(Some(Kind::Folder))
    }

    fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
        let p = &self.params;
        if p.latency_us > 0 {
            thread::sleep(Duration::from_micros(p.latency_us));
        }
        let at = self.resolve(folder)?;
        if !folder.is_root() && unit(node_hash(p.seed, TAG_PERM, at.own)) < p.fail_perm {
            return Err(BackendError::new(
                ErrorKind::PermissionDenied,
                "list",
                folder.to_string(),
                "simulated permission denied",
            ));
        }
        let counts = SLOTS.map(|s| self.slot_count(at, s));
        let slots = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
        let fail = self
            .transient_fault(folder, at, slots)?
            .map(|after| (after, transient_error(folder, 0, "mid-stream")));
        let pause = (p.entry_latency_ns > 0)
            .then(|| Duration::from_nanos(p.entry_latency_ns.saturating_mul(1000)));
        Ok(Box::new(Listing {
            sim: self,
            at,
            counts,
            slot: 0,
            index: 0,
            yielded: 0,
            fail,
            pause,
            finished: false,
        }))
    }

    fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
        self.entry_at(path)
    }

    fn open_read(&self, path: &RelPath) -> Result<crate::SourceFile, BackendError> {
        let p = &self.params;
        if p.latency_us > 0 {
            thread::sleep(Duration::from_micros(p.latency_us));
        }
        let entry = self.expect_at(path, Kind::File, "open")?;
        Ok(crate::SourceFile {
            reader: crate::Reader::Stream(Box::new(SimContent {
                key: content_key(p.seed, path, &entry),
                pos: 0,
                len: entry.size,
            })),
            size: entry.size,
            mtime_ns: entry.mtime_ns,
            meta: treeshift_core::Meta::default(),
            xattrs: Vec::new(),
            own_mtime_ns: None,
            holes: false,
        })
    }

    fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
        let entry = self.expect_at(path, Kind::Symlink, "read_link")?;
        // As long as the size discovery reported, like a real symlink.
        let mut target = b"target-".to_vec();
        let key = content_key(self.params.seed, path, &entry);
        while (target.len() as u64) < entry.size {
            target.push(b'a' + (mix(key ^ target.len() as u64) % 26) as u8);
        }
        target.truncate(entry.size as usize);
        Ok(target)
    }
}

/// A simulated file's content: bytes drawn from a seed, so a copy can be
/// checked byte for byte against a fresh read. The seed covers the path,
/// size and mtime, so a modified file has other content.
struct SimContent {
    key: u64,
    pos: u64,
    len: u64,
}

impl std::io::Read for SimContent {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.len - self.pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *b = mix(self.key ^ (at / 8)).to_le_bytes()[(at % 8) as usize];
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn content_key(seed: u64, path: &RelPath, entry: &Entry) -> u64 {
    let ph = fnv_extend(FolderAt::ROOT.prefix, path.as_bytes());
    node_hash(
        seed,
        TAG_CONTENT,
        ph ^ mix(entry.size) ^ mix(entry.mtime_ns.unwrap_or(0) as u64),
    )
}

/// The lazy listing of one folder: entries are computed as they are pulled.
struct Listing<'a> {
    sim: &'a SimBackend,
    at: FolderAt,
    counts: [u64; SLOTS.len()],
    /// Position in `SLOTS`.
    slot: usize,
    /// Next index within the current slot.
    index: u64,
    yielded: u64,
    /// A mid-stream fault: after how many entries, and the error to yield.
    fail: Option<(u64, BackendError)>,
    pause: Option<Duration>,
    finished: bool,
}

impl Iterator for Listing<'_> {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            let exhausted = self.slot >= SLOTS.len();
            // Deletions can leave fewer entries than planned, so an
            // exhausted listing with a fault pending still fails.
            if self
                .fail
                .as_ref()
                .is_some_and(|(after, _)| exhausted || self.yielded >= *after)
            {
                self.finished = true;
                return self.fail.take().map(|(_, e)| Err(e));
            }
            if exhausted {
                self.finished = true;
                return None;
            }
            if self.index >= self.counts[self.slot] {
                self.slot += 1;
                self.index = 0;
                continue;
            }
            let slot = SLOTS[self.slot];
            let i = self.index;
            self.index += 1;
            let name = slot_name(slot, i);
            let ph = fnv_extend(self.at.prefix, &name);
            if let Some(entry) = self.sim.entry_for(slot, name, ph) {
                self.yielded += 1;
                if let Some(pause) = self.pause
                    && self.yielded.is_multiple_of(1000)
                {
                    thread::sleep(pause);
                }
                return Some(Ok(entry));
            }
        }
    }
}

/// What a correct discovery of `src` against `dst` must count (the roots
/// are not counted). File, byte, symlink and special counts follow
/// `treeshift_core::Totals`: `*_files` and `*_bytes` are regular files only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectedCounts {
    /// Source folders.
    pub src_folders: u64,
    /// Source regular files.
    pub src_files: u64,
    /// Bytes in source regular files.
    pub src_bytes: u64,
    /// Source symlinks.
    pub src_symlinks: u64,
    /// Source special files.
    pub src_special: u64,
    /// Destination folders visited.
    pub dst_folders: u64,
    /// Destination regular files visited.
    pub dst_files: u64,
    /// Bytes in destination regular files visited.
    pub dst_bytes: u64,
    /// Destination symlinks visited.
    pub dst_symlinks: u64,
    /// Destination special files visited.
    pub dst_special: u64,
    /// Source nodes with no destination counterpart (whole subtrees).
    pub missing: u64,
    /// Nodes equal on both sides.
    pub same: u64,
    /// Non-folders whose size or mtime (to the second) differ.
    pub differs: u64,
    /// Names whose kind differs between the sides.
    pub conflict: u64,
    /// Destination nodes with no source counterpart (not recursed).
    pub extra: u64,
}

impl ExpectedCounts {
    fn count_src(&mut self, e: &Entry) {
        match e.kind {
            Kind::Folder => self.src_folders += 1,
            Kind::File => {
                self.src_files += 1;
                self.src_bytes += e.size;
            }
            Kind::Symlink => self.src_symlinks += 1,
            Kind::Special => self.src_special += 1,
        }
    }

    fn count_dst(&mut self, e: &Entry) {
        match e.kind {
            Kind::Folder => self.dst_folders += 1,
            Kind::File => {
                self.dst_files += 1;
                self.dst_bytes += e.size;
            }
            Kind::Symlink => self.dst_symlinks += 1,
            Kind::Special => self.dst_special += 1,
        }
    }
}

/// The reference classification of `src` against `dst`, from a plain
/// depth-first walk of both through [`Backend`]: the oracle the engine's
/// discovery is tested against, meant for small trees.
///
/// # Panics
///
/// If any folder fails to list: the oracle is for fault-free trees.
pub fn expected_counts(src: &dyn Backend, dst: &dyn Backend) -> ExpectedCounts {
    let mut counts = ExpectedCounts::default();
    let root = RelPath::root();
    if matches!(dst.root_kind(), Ok(Some(Kind::Folder))) {
        compare_folder(src, dst, &root, &mut counts);
    } else {
        missing_subtree(src, &root, &mut counts);
    }
    counts
}

fn list_all(backend: &dyn Backend, path: &RelPath) -> Vec<Entry> {
    backend
        .list_children(path)
        .and_then(|children| children.collect())
        .unwrap_or_else(|e| {
            panic!(
                "expected_counts: cannot list {path} on {}: {e}",
                backend.describe()
            )
        })
}

fn compare_folder(src: &dyn Backend, dst: &dyn Backend, path: &RelPath, c: &mut ExpectedCounts) {
    let src_children = list_all(src, path);
    let dst_children = list_all(dst, path);
    let dst_by_name: HashMap<&[u8], &Entry> = dst_children
        .iter()
        .map(|e| (e.name.as_slice(), e))
        .collect();
    for d in &dst_children {
        c.count_dst(d);
    }
    let mut src_names: HashSet<&[u8]> = HashSet::with_capacity(src_children.len());
    for s in &src_children {
        src_names.insert(&s.name);
        c.count_src(s);
        let child = path.join(&s.name);
        match dst_by_name.get(s.name.as_slice()) {
            None => {
                c.missing += 1;
                if s.kind == Kind::Folder {
                    missing_subtree(src, &child, c);
                }
            }
            Some(d) if d.kind != s.kind => {
                c.conflict += 1;
                if s.kind == Kind::Folder {
                    missing_subtree(src, &child, c);
                }
            }
            Some(_) if s.kind == Kind::Folder => {
                c.same += 1;
                compare_folder(src, dst, &child, c);
            }
            Some(d) => {
                let secs = |e: &Entry| e.mtime_ns.map(|ns| ns.div_euclid(NS_PER_S));
                if s.size == d.size && secs(s) == secs(d) {
                    c.same += 1;
                } else {
                    c.differs += 1;
                }
            }
        }
    }
    c.extra += dst_children
        .iter()
        .filter(|d| !src_names.contains(d.name.as_slice()))
        .count() as u64;
}

fn missing_subtree(src: &dyn Backend, path: &RelPath, c: &mut ExpectedCounts) {
    for s in list_all(src, path) {
        c.count_src(&s);
        c.missing += 1;
        if s.kind == Kind::Folder {
            missing_subtree(src, &path.join(&s.name), c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn sim(params: &str) -> SimBackend {
        SimBackend::from_params(params).unwrap()
    }

    fn list(b: &SimBackend, path: &RelPath) -> Vec<Entry> {
        b.list_children(path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Every node below the root with its path, depth first.
    fn walk(b: &SimBackend) -> Vec<(RelPath, Entry)> {
        fn go(b: &SimBackend, path: &RelPath, out: &mut Vec<(RelPath, Entry)>) {
            for e in list(b, path) {
                let child = path.join(&e.name);
                let is_folder = e.kind == Kind::Folder;
                out.push((child.clone(), e));
                if is_folder {
                    go(b, &child, out);
                }
            }
        }
        let mut out = Vec::new();
        go(b, &RelPath::root(), &mut out);
        out
    }

    const SMALL: &str = "seed=3,depth=2,fanout=3,files=4";

    #[test]
    fn same_params_give_identical_trees() {
        let a = walk(&sim(
            "seed=9,depth=3,fanout=4,files=6,sizes=mixed,symlinks=1",
        ));
        let b = walk(&sim(
            "seed=9,depth=3,fanout=4,files=6,sizes=mixed,symlinks=1",
        ));
        assert_eq!(a, b);
        let c = walk(&sim(
            "seed=10,depth=3,fanout=4,files=6,sizes=mixed,symlinks=1",
        ));
        assert_eq!(a.len(), c.len());
        assert_ne!(a, c, "another seed gives other sizes and mtimes");
    }

    #[test]
    fn small_tree_counts_and_order() {
        let b = sim(SMALL);
        let all = walk(&b);
        let folders = all.iter().filter(|(_, e)| e.kind == Kind::Folder).count();
        let files = all.iter().filter(|(_, e)| e.kind == Kind::File).count();
        assert_eq!((folders, files), (12, 52));
        let root: Vec<Vec<u8>> = list(&b, &RelPath::root())
            .into_iter()
            .map(|e| e.name)
            .collect();
        let want: Vec<&[u8]> = vec![
            b"d00",
            b"d01",
            b"d02",
            b"f0000.dat",
            b"f0001.dat",
            b"f0002.dat",
            b"f0003.dat",
        ];
        assert_eq!(root, want);
        for (_, e) in &all {
            let ns = e.mtime_ns.unwrap();
            assert_eq!(ns % NS_PER_S, 0);
            let s = ns / NS_PER_S;
            assert!((MTIME_BASE_S..MTIME_BASE_S + MTIME_SPAN_S as i64).contains(&s));
            if e.kind == Kind::Folder {
                assert_eq!(e.size, 0);
            } else {
                assert!(e.size <= 16_384);
            }
        }
        let c = expected_counts(&b, &b);
        assert_eq!((c.src_folders, c.src_files, c.same), (12, 52, 64));
        assert_eq!((c.missing, c.differs, c.conflict, c.extra), (0, 0, 0, 0));
        assert_eq!(c.src_bytes, c.dst_bytes);
    }

    #[test]
    fn bad_paths_are_not_found_and_files_are_not_folders() {
        let b = sim(SMALL);
        for bad in [
            &b"d03"[..],
            b"d0",
            b"d1",
            b"d00/d00/d00",
            b"x",
            b"d00//d01",
            b"d00/",
            b"f0004.dat",
            b"x0.extra",
        ] {
            let err = b
                .list_children(&RelPath::from_bytes(bad.to_vec()))
                .err()
                .unwrap();
            assert_eq!(err.kind, ErrorKind::NotFound, "{bad:?}");
        }
        let err = b
            .list_children(&RelPath::from_bytes(b"d01/f0002.dat".to_vec()))
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Other);
        assert!(err.message.contains("not a folder"));
        assert_eq!(list(&b, &RelPath::from_bytes(b"d02/d01".to_vec())).len(), 4);
        assert_eq!(b.root_kind().unwrap(), Some(Kind::Folder));
    }

    #[test]
    fn mutated_variant_differs_in_the_expected_directions() {
        let shape = "seed=5,depth=3,fanout=5,files=30,extra=10";
        let plain = sim(shape);
        let mutated = sim(&format!("{shape},mutate=77"));
        let src = walk(&plain);
        let dst: HashMap<RelPath, Entry> = walk(&mutated).into_iter().collect();
        let mut gone_folders = 0;
        let mut modified = 0;
        let mut unchanged = 0;
        for (path, e) in &src {
            match dst.get(path) {
                None if e.kind == Kind::Folder => {
                    let err = mutated.list_children(path).err().unwrap();
                    assert_eq!(err.kind, ErrorKind::NotFound);
                    gone_folders += 1;
                }
                None => {}
                Some(d) if d == e => unchanged += 1,
                Some(d) => {
                    assert_eq!(d.kind, Kind::File);
                    assert_ne!(d.size, e.size);
                    assert_eq!(e.mtime_ns.unwrap() - d.mtime_ns.unwrap(), 86_400 * NS_PER_S);
                    modified += 1;
                }
            }
        }
        let extras: Vec<&RelPath> = dst
            .keys()
            .filter(|p| p.name().ends_with(b".extra"))
            .collect();
        assert!(gone_folders > 0 && modified > 0 && unchanged > modified);
        assert!(!extras.is_empty());
        for p in extras {
            assert!(!src.iter().any(|(q, _)| q == p));
        }
        // Each existing folder holds round(30 * 10 / 100) = 3 extras.
        let root_extras = list(&mutated, &RelPath::root())
            .iter()
            .filter(|e| e.name.starts_with(b"x"))
            .count();
        assert_eq!(root_extras, 3);
    }

    #[test]
    fn expected_counts_on_a_mutated_tree() {
        let shape = "seed=2,depth=3,fanout=4,files=12,sizes=tiny,symlinks=1,specials=1";
        let plain = sim(shape);
        let mutated = sim(&format!("{shape},mutate=4,del_dirs=10,extra=10"));
        let base = expected_counts(&plain, &plain);
        let c = expected_counts(&plain, &mutated);
        assert!(c.missing > 0 && c.extra > 0 && c.differs > 0, "{c:?}");
        assert_eq!(c.conflict, 0);
        assert_eq!(
            (
                c.src_folders,
                c.src_files,
                c.src_bytes,
                c.src_symlinks,
                c.src_special
            ),
            (
                base.src_folders,
                base.src_files,
                base.src_bytes,
                base.src_symlinks,
                base.src_special
            )
        );
        let src_nodes = c.src_folders + c.src_files + c.src_symlinks + c.src_special;
        assert_eq!(c.missing + c.same + c.differs + c.conflict, src_nodes);
        assert!(c.dst_files < c.src_files);
        // The reverse direction sees the extras as missing.
        let r = expected_counts(&mutated, &plain);
        assert_eq!(r.missing, c.extra);
        assert_eq!(r.extra, c.missing - missing_below_deleted(&plain, &mutated));
    }

    /// Source nodes below folders deleted on dst: missing one way, never
    /// visited the other way.
    fn missing_below_deleted(plain: &SimBackend, mutated: &SimBackend) -> u64 {
        let dst: HashSet<RelPath> = walk(mutated).into_iter().map(|(p, _)| p).collect();
        walk(plain)
            .iter()
            .filter(|(p, _)| {
                let b = p.as_bytes();
                let parent = RelPath::from_bytes(
                    b[..b.iter().rposition(|&c| c == b'/').unwrap_or(0)].to_vec(),
                );
                !dst.contains(p) && !parent.is_root() && !dst.contains(&parent)
            })
            .count() as u64
    }

    #[test]
    fn conflicts_are_counted_once() {
        // The sim never clashes kinds by itself, so a wrapper turns the root's
        // `d00` into a file on dst.
        struct Flip(SimBackend);
        impl Backend for Flip {
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn capabilities(&self) -> crate::Capabilities {
                self.0.capabilities()
            }
            fn root_kind(&self) -> Result<Option<Kind>, BackendError> {
                self.0.root_kind()
            }
            fn list_children(&self, folder: &RelPath) -> Result<Children<'_>, BackendError> {
                let at_root = folder.is_root();
                let it = self.0.list_children(folder)?;
                Ok(Box::new(it.map(move |e| {
                    e.map(|mut e| {
                        if at_root && e.name == b"d00" {
                            e.kind = Kind::File;
                        }
                        e
                    })
                })))
            }
            fn stat(&self, path: &RelPath) -> Result<Option<Entry>, BackendError> {
                self.0.stat(path)
            }
            fn open_read(&self, path: &RelPath) -> Result<crate::SourceFile, BackendError> {
                self.0.open_read(path)
            }
            fn read_link(&self, path: &RelPath) -> Result<Vec<u8>, BackendError> {
                self.0.read_link(path)
            }
        }
        let src = sim(SMALL);
        let dst = Flip(sim(SMALL));
        let c = expected_counts(&src, &dst);
        assert_eq!(c.conflict, 1);
        assert_eq!(
            c.missing,
            3 + 4 + 12,
            "d00's sub-folders and files below it"
        );
        assert_eq!(c.same, 44);
        assert_eq!((c.dst_folders, c.dst_files), (8, 37));
        assert_eq!((c.src_folders, c.src_files), (12, 52));
    }

    #[test]
    fn parse_errors_are_clear_and_never_panic() {
        let garbage = [
            "depth=-1",
            "seed=x",
            "bogus=1",
            ",,,",
            "depth",
            "=",
            "=5",
            "seed=1,",
            "seed=1,seed=2",
            "sizes=huge",
            "sizes=fixed:",
            "sizes=fixed:-3",
            "del_files=101",
            "modify=nan",
            "extra=inf",
            "fail_perm=1.5",
            "fail_transient=-0.1",
            "odd_names=2",
            "files=99999999999",
            "mutate=",
            "seed=1=2",
            "\u{0}\u{ff}=\n",
        ];
        for text in garbage {
            let err = SimBackend::from_params(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} parsed"));
            assert_eq!(err.kind, ErrorKind::Other, "{text:?}");
            assert_eq!(err.operation, "open");
            assert_eq!(err.path, text);
            assert!(
                err.message.contains("valid keys: seed, depth"),
                "{}",
                err.message
            );
        }
        let err = SimBackend::from_params("bogus=1").err().unwrap();
        assert!(err.message.contains("'bogus'"));
        let err = SimBackend::from_params("seed=x").err().unwrap();
        assert!(err.message.contains("'x'") && err.message.contains("'seed'"));
    }

    #[test]
    fn params_round_trip_through_describe() {
        assert_eq!(
            SimBackend::from_params("").unwrap().params(),
            &SimParams::default()
        );
        assert_eq!(
            sim("").describe(),
            "sim:seed=1,depth=4,fanout=8,files=25,sizes=small"
        );
        let text = "seed=7,depth=2,fanout=3,files=10,sizes=fixed:100,latency_us=5,entry_latency_ns=3,mutate=9,del_dirs=0,del_files=12.5,modify=0.1,extra=2,fail_perm=0.25,fail_transient=1,odd_names=1,bad_names=1,symlinks=2,specials=1";
        let b = sim(text);
        let d = b.describe();
        let back = sim(d.strip_prefix("sim:").unwrap());
        assert_eq!(back.params(), b.params());
        assert!(!d.contains("extra="), "defaults are left out: {d}");
        let opened = crate::open(&d, &crate::OpenOptions::default()).unwrap();
        assert_eq!(opened.describe(), d);
    }

    #[test]
    fn transient_faults_clear_on_retry_with_the_full_listing() {
        let shape = "seed=11,depth=2,fanout=4,files=10,symlinks=1";
        let clean = sim(shape);
        let faulty = sim(&format!("{shape},fail_transient=0.5"));
        let mut folders = vec![RelPath::root()];
        folders.extend(
            walk(&clean)
                .into_iter()
                .filter(|(_, e)| e.kind == Kind::Folder)
                .map(|(p, _)| p),
        );
        let (mut at_call, mut mid_stream) = (0, 0);
        for path in &folders {
            let want = list(&clean, path);
            let mut got = None;
            for _ in 0..50 {
                match faulty.list_children(path) {
                    Err(e) => {
                        assert_eq!(e.kind, ErrorKind::Temporary);
                        at_call += 1;
                    }
                    Ok(it) => match it.collect::<Result<Vec<_>, _>>() {
                        Ok(v) => {
                            got = Some(v);
                            break;
                        }
                        Err(e) => {
                            assert_eq!(e.kind, ErrorKind::Temporary);
                            mid_stream += 1;
                        }
                    },
                }
            }
            assert_eq!(got.as_ref(), Some(&want), "{path:?}");
        }
        assert!(at_call > 0 && mid_stream > 0, "{at_call} {mid_stream}");
        // Only paths that faulted are remembered.
        let map = faulty.attempts.lock().unwrap();
        assert!(!map.is_empty() && map.len() < folders.len());
    }

    #[test]
    fn mid_stream_fault_yields_entries_first() {
        let b = sim("seed=1,depth=1,fanout=2,files=20,fail_transient=1");
        let mut saw_partial = false;
        for _ in 0..TRANSIENT_MAX_FAULTS {
            if let Ok(it) = b.list_children(&RelPath::root()) {
                let items: Vec<_> = it.collect();
                assert!(items.last().unwrap().is_err());
                assert_eq!(items.iter().filter(|r| r.is_ok()).count(), 11);
                saw_partial = true;
            }
        }
        assert!(saw_partial);
        assert_eq!(
            list(&b, &RelPath::root()).len(),
            22,
            "attempts past the cap succeed"
        );
    }

    #[test]
    fn permission_faults_are_stable_and_spare_the_root() {
        let b = sim("seed=4,depth=2,fanout=6,files=1,fail_perm=0.3");
        let clean = sim("seed=4,depth=2,fanout=6,files=1");
        assert!(b.list_children(&RelPath::root()).is_ok());
        let mut denied = 0;
        for (path, e) in walk(&clean) {
            if e.kind != Kind::Folder {
                continue;
            }
            let first = b.list_children(&path).err().map(|e| e.kind);
            let second = b.list_children(&path).err().map(|e| e.kind);
            assert_eq!(first, second);
            if first == Some(ErrorKind::PermissionDenied) {
                denied += 1;
            }
        }
        assert!(denied > 0 && denied < 42, "{denied}");
    }

    #[test]
    fn odd_names_symlinks_and_specials() {
        let b = sim("depth=1,fanout=1,files=1,odd_names=1,symlinks=2,specials=1");
        let root = list(&b, &RelPath::root());
        let names: Vec<&[u8]> = root.iter().map(|e| e.name.as_slice()).collect();
        for odd in ODD_NAMES {
            assert!(names.contains(&odd), "{odd:?}");
        }
        assert!(names.contains(&&b"new\nline"[..]) && names.contains(&&b"bad\xff\xfe"[..]));
        assert!(names.iter().any(|n| n.len() == 255));
        assert!(
            names.contains(&&b"tab\there"[..])
                && names.contains(&&b" spaced "[..])
                && names.contains(&&b"..x"[..])
        );
        for e in &root {
            assert!(!e.name.contains(&b'/') && !e.name.contains(&0));
            match e.name.as_slice() {
                b"l0" | b"l1" => assert!(e.kind == Kind::Symlink && e.size > 0 && e.size <= 64),
                b"p0" => assert!(e.kind == Kind::Special && e.size == 0),
                b"d00" => assert_eq!(e.kind, Kind::Folder),
                _ => assert_eq!(e.kind, Kind::File),
            }
        }
        assert_eq!(root.len(), 1 + 1 + 6 + 2 + 1);
        let err = b
            .list_children(&RelPath::from_bytes(b"d00/new\nline".to_vec()))
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Other);
    }

    #[test]
    fn content_is_deterministic_and_as_long_as_the_size() {
        let b = sim("depth=1,fanout=2,files=5,sizes=mixed,symlinks=1");
        let read = |p: &str| {
            let mut f = b
                .open_read(&RelPath::from_bytes(p.as_bytes().to_vec()))
                .unwrap();
            let mut data = Vec::new();
            match &mut f.reader {
                crate::Reader::Stream(r) => r.read_to_end(&mut data).unwrap(),
                crate::Reader::File(_) => unreachable!(),
            };
            (f.size, data)
        };
        let (size, data) = read("d00/f0002.dat");
        assert_eq!(data.len() as u64, size);
        assert_eq!(read("d00/f0002.dat").1, data, "the same bytes every time");
        assert_ne!(read("d01/f0002.dat").1, data, "another path, other bytes");
        let link = RelPath::from_bytes(b"d00/l0".to_vec());
        let target = b.read_link(&link).unwrap();
        assert_eq!(target.len() as u64, b.stat(&link).unwrap().unwrap().size);
        assert!(
            b.stat(&RelPath::from_bytes(b"d00/nope".to_vec()))
                .unwrap()
                .is_none()
        );
        let err = b
            .open_read(&RelPath::from_bytes(b"d00".to_vec()))
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Other);
    }

    #[test]
    fn size_distributions() {
        let sizes = |s: &str| -> Vec<u64> {
            list(
                &sim(&format!("depth=0,files=20000,sizes={s}")),
                &RelPath::root(),
            )
            .into_iter()
            .map(|e| e.size)
            .collect()
        };
        assert!(sizes("fixed:123").iter().all(|&s| s == 123));
        assert!(sizes("tiny").iter().all(|&s| s <= 4096));
        let small = sizes("small");
        let mean = small.iter().sum::<u64>() as f64 / small.len() as f64;
        assert!((1800.0..2300.0).contains(&mean), "{mean}");
        assert!(small.iter().all(|&s| s <= 16_384));
        let big = sizes("mixed").into_iter().filter(|&s| s >= 1 << 20).count();
        assert!((60..=170).contains(&big), "{big}");
    }

    #[test]
    fn flat_folder_streams_without_collecting() {
        let b = sim("depth=0,files=2000000");
        let mut n = 0u64;
        for r in b.list_children(&RelPath::root()).unwrap() {
            r.unwrap();
            n += 1;
        }
        assert_eq!(n, 2_000_000);
    }

    #[test]
    fn latency_is_paid() {
        let b = sim("depth=0,files=3000,latency_us=2000,entry_latency_ns=1000");
        let start = std::time::Instant::now();
        assert_eq!(b.list_children(&RelPath::root()).unwrap().count(), 3000);
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
