//! Nodes, kinds, sides and the statuses discovery assigns.

use crate::keep::{FileId, Meta};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which tree a node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The tree being migrated from.
    Src,
    /// The tree being migrated to.
    Dst,
}

impl Side {
    /// Both sides, source first.
    pub const BOTH: [Side; 2] = [Side::Src, Side::Dst];

    /// `"src"` or `"dst"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Src => "src",
            Side::Dst => "dst",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node is. Symlinks and special files are nodes of their own kinds:
/// they are reported, never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Can hold children.
    Folder,
    /// A regular file.
    File,
    /// A symbolic link (its target is not followed).
    Symlink,
    /// A fifo, socket or device.
    Special,
}

impl Kind {
    /// The code stored in the state file.
    pub fn code(self) -> u8 {
        match self {
            Kind::Folder => 0,
            Kind::File => 1,
            Kind::Symlink => 2,
            Kind::Special => 3,
        }
    }

    /// The kind for a stored code, if the code is known.
    pub fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            0 => Kind::Folder,
            1 => Kind::File,
            2 => Kind::Symlink,
            3 => Kind::Special,
            _ => return None,
        })
    }

    /// Lower-case name, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Folder => "folder",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Special => "special",
        }
    }
}

/// One child as a backend lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name as raw bytes, never containing `/`.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (0 for folders; the target length for symlinks).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch, if known.
    pub mtime_ns: Option<i64>,
    /// Mode, owners and a digest of the extended attributes, where the
    /// storage has them.
    pub meta: Meta,
    /// The identity of a folder, or of a file with more than one name (the
    /// identity its names share), where the storage has one: a folder put
    /// in another's place, or a file's other names, are told by it.
    pub file_id: Option<FileId>,
    /// The storage's tag for this version of a file, where its listing
    /// gives one (an object store's ETag).
    pub etag: Option<String>,
    /// The MD5 of a file's content, where the listing gives it (an S3
    /// ETag of a single-part upload, Azure's and GCS's `Content-MD5`).
    pub md5: Option<Md5>,
}

/// The MD5 digest of a file's content, as a store's listing gives it.
/// Shown and stored as 32 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Md5(pub [u8; 16]);

impl Md5 {
    /// The digest that `hex` spells (32 hex digits, any case), if it does.
    pub fn from_hex(hex: &str) -> Option<Md5> {
        let bytes = hex.as_bytes();
        if bytes.len() != 32 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut digest = [0u8; 16];
        for (i, pair) in bytes.chunks(2).enumerate() {
            digest[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Md5(digest))
    }
}

impl std::fmt::Display for Md5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Entry {
    /// An entry with no metadata beyond kind, size and mtime.
    pub fn new(name: Vec<u8>, kind: Kind, size: u64, mtime_ns: Option<i64>) -> Entry {
        Entry {
            name,
            kind,
            size,
            mtime_ns,
            meta: Meta::default(),
            file_id: None,
            etag: None,
            md5: None,
        }
    }
}

/// The outcome of comparing a node with its counterpart on the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// On src, not on dst (or under a folder that is missing).
    Missing,
    /// On both sides and equal (folders: both are folders).
    Same,
    /// On both sides, with a different size or mtime (to the second), or
    /// (the reason starts with `metadata:`) only another mode, owner or
    /// extended attributes; the destination is not what an earlier pass
    /// left there, so the policy decides.
    Differs,
    /// Like `Differs`, but the destination is still exactly what the
    /// source held at the previous pass (treeshift wrote it, or it was
    /// already in step) and the source changed since: an update the
    /// migration owns, made by the default approval.
    Outdated,
    /// The same name is of different kinds on the two sides.
    Conflict,
    /// On dst only; recorded, never traversed.
    Extra,
    /// Left out by a filter rule (the rule is the reason).
    Excluded,
    /// A name that cannot become a path (empty, `.`, `..`, holding `/` or
    /// NUL): recorded under a stand-in name, never used as a path.
    InvalidName,
}

impl Status {
    /// Every status, in the order reports show them.
    pub const ALL: [Status; 8] = [
        Status::Missing,
        Status::Outdated,
        Status::Differs,
        Status::Conflict,
        Status::Same,
        Status::Extra,
        Status::Excluded,
        Status::InvalidName,
    ];

    /// Lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Missing => "missing",
            Status::Same => "same",
            Status::Differs => "differs",
            Status::Outdated => "outdated",
            Status::Conflict => "conflict",
            Status::Extra => "extra",
            Status::Excluded => "excluded",
            Status::InvalidName => "invalid-name",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status '{s}'"))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of listing a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListStatus {
    /// All children recorded.
    Listed,
    /// Could not be listed; the reason is recorded.
    Failed,
}

impl ListStatus {
    /// Every status.
    pub const ALL: [ListStatus; 2] = [ListStatus::Listed, ListStatus::Failed];

    /// Lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ListStatus::Listed => "listed",
            ListStatus::Failed => "failed",
        }
    }
}

/// Node counts of one side (the root is not counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Folders found.
    pub folders: u64,
    /// Regular files found.
    pub files: u64,
    /// Symlinks found.
    pub symlinks: u64,
    /// Fifos, sockets and devices found.
    pub special: u64,
    /// Bytes in regular files.
    pub bytes: u64,
}

/// What the default approval (`--policy skip`) would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToCopy {
    /// Files and symlinks missing on dst, or outdated there.
    pub files: u64,
    /// Folders missing on dst.
    pub folders: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Items whose data is in step but whose mode, owner or extended
    /// attributes are outdated: updated in place, no data copied.
    #[serde(default)]
    pub metadata: u64,
}

/// What the default approval leaves alone: items that differ from a
/// destination treeshift did not leave that way (`--policy overwrite`,
/// `newer` or `rename` acts on them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeftAlone {
    /// Items that differ, or whose kind differs.
    pub items: u64,
    /// Bytes of the source's files among them.
    pub bytes: u64,
}

/// Per-side round progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoundState {
    /// Rounds sealed so far.
    pub sealed: u64,
    /// True once this side has nothing left to list.
    pub done: bool,
}

/// What a delta pass found changed on the source since the previous pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Changes {
    /// Nodes that were not there.
    pub new: u64,
    /// Nodes whose kind, size or mtime changed.
    pub modified: u64,
    /// Nodes gone (a deleted folder counts once).
    pub deleted: u64,
}

/// The discovery summary: what `discover --json` and `status --json` print.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// The pass this discovery belongs to (1, then one more per delta pass).
    #[serde(default)]
    pub pass: u32,
    /// What changed on the source since the previous pass (all zero in the
    /// first pass).
    #[serde(default)]
    pub changes: Changes,
    /// The source tree.
    pub src: Totals,
    /// The destination tree (only what discovery listed: a missing folder's
    /// subtree is never listed on dst).
    pub dst: Totals,
    /// Source nodes not on dst.
    pub missing: u64,
    /// Nodes equal on both sides.
    pub same: u64,
    /// Items that differ from a destination treeshift did not leave so.
    pub differs: u64,
    /// Items whose destination is as the previous pass left it while the
    /// source changed (the migration updates them).
    #[serde(default)]
    pub outdated: u64,
    /// Names whose kind differs between the sides.
    pub conflict: u64,
    /// Destination nodes with no source counterpart.
    pub extra: u64,
    /// Source nodes left out by a filter.
    pub excluded: u64,
    /// Nodes whose names cannot become paths (either side).
    #[serde(default)]
    pub invalid_name: u64,
    /// Folders that could not be listed (either side).
    pub failed: u64,
    /// Source nodes not compared yet (their dst folder failed or discovery
    /// has not reached them).
    pub unclassified: u64,
    /// What the default approval would copy.
    pub to_copy: ToCopy,
    /// What the default approval would leave alone.
    #[serde(default)]
    pub left_alone: LeftAlone,
    /// Source rounds.
    pub src_rounds: RoundState,
    /// Destination rounds.
    pub dst_rounds: RoundState,
}

impl Summary {
    /// Returns true if and only if both sides finished discovery.
    pub fn is_done(&self) -> bool {
        self.src_rounds.done && self.dst_rounds.done
    }
}
