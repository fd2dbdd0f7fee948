//! The copy plan's vocabulary: the policy a person approves, the action it
//! gives each item, the statuses a copy and a verification record, and the
//! names a copy writes besides the final ones.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What to do with destination items that exist but differ from the source
/// (`differs`, and `conflict` when the kinds differ). Missing items are
/// always created; destination data is replaced only under `overwrite` and
/// `newer`, and never without an approval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Leave the destination's version (the default).
    #[default]
    Skip,
    /// Replace the destination's version (a folder in the way is removed
    /// with its contents).
    Overwrite,
    /// Replace a differing file only if the source is newer (by mtime, to
    /// the second); kind conflicts are left alone.
    Newer,
    /// Move the destination's version aside (see [`aside_name`]) and copy.
    Rename,
}

impl Policy {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Skip => "skip",
            Policy::Overwrite => "overwrite",
            Policy::Newer => "newer",
            Policy::Rename => "rename",
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Policy::Skip),
            "overwrite" => Ok(Policy::Overwrite),
            "newer" => Ok(Policy::Newer),
            "rename" => Ok(Policy::Rename),
            other => Err(format!(
                "unknown policy '{other}' (expected skip, overwrite, newer or rename)"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with destination items that have no source counterpart
/// (`extra`). Nothing on the destination is deleted, ever: the most an
/// approval can do is move extras into a quarantine folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Extras {
    /// Leave them where they are (the default).
    #[default]
    Leave,
    /// Move each into the quarantine folder of the pass (see
    /// [`quarantine_path`]), keeping its relative path.
    Quarantine,
}

impl Extras {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Extras::Leave => "leave",
            Extras::Quarantine => "quarantine",
        }
    }
}

impl FromStr for Extras {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leave" => Ok(Extras::Leave),
            "quarantine" => Ok(Extras::Quarantine),
            other => Err(format!(
                "unknown extras policy '{other}' (expected leave or quarantine)"
            )),
        }
    }
}

/// The folder at the destination's root that quarantined extras go to.
/// Discovery never reports it as an extra itself.
pub const QUARANTINE_DIR: &[u8] = b".treeshift-quarantine";

/// Where an extra at `path` goes when pass `pass` quarantines it.
pub fn quarantine_path(pass: u32, path: &crate::RelPath) -> crate::RelPath {
    crate::RelPath::root()
        .join(QUARANTINE_DIR)
        .join(format!("pass-{pass}").as_bytes())
        .join(path.as_bytes())
}

/// What the approved plan does with one source item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create it: nothing is at its destination path.
    Create,
    /// Replace what discovery saw at the destination path.
    Replace,
    /// Move what discovery saw at the destination path aside, then create.
    Rename,
    /// Leave it (the policy, or the item cannot be copied).
    Skip,
    /// A destination extra: move it into the quarantine folder.
    Quarantine,
    /// The data is in step: set the mode, owner and extended attributes
    /// (and mtime) in place, copying nothing.
    Metadata,
}

impl Action {
    /// Stable lower-case name, as stored in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Rename => "rename",
            Action::Skip => "skip",
            Action::Quarantine => "quarantine",
            Action::Metadata => "metadata",
        }
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "create" => Ok(Action::Create),
            "replace" => Ok(Action::Replace),
            "rename" => Ok(Action::Rename),
            "skip" => Ok(Action::Skip),
            "quarantine" => Ok(Action::Quarantine),
            "metadata" => Ok(Action::Metadata),
            other => Err(format!("unknown plan action '{other}'")),
        }
    }
}

/// The copy status of a plan item (the latest `copy` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyStatus {
    /// Approved, not started.
    Pending,
    /// Handed to a worker; if a run stops here, the item is redone.
    Copying,
    /// At its destination path, complete and durable.
    Copied,
    /// Left alone by the policy (or not copyable, such as a fifo).
    Skipped,
    /// Could not be copied; the reason says why.
    Failed,
    /// The source (or the destination) changed since discovery, so the item
    /// was not copied blindly; discover again to plan it anew.
    Changed,
}

impl CopyStatus {
    /// Every status, in display order.
    pub const ALL: [CopyStatus; 6] = [
        CopyStatus::Pending,
        CopyStatus::Copying,
        CopyStatus::Copied,
        CopyStatus::Skipped,
        CopyStatus::Failed,
        CopyStatus::Changed,
    ];

    /// Stable lower-case name, as recorded in the events.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyStatus::Pending => "pending",
            CopyStatus::Copying => "copying",
            CopyStatus::Copied => "copied",
            CopyStatus::Skipped => "skipped",
            CopyStatus::Failed => "failed",
            CopyStatus::Changed => "changed",
        }
    }
}

impl FromStr for CopyStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CopyStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown copy status '{s}'"))
    }
}

/// The verification status of a copied item (the latest `verify` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyStatus {
    /// The destination matches the source.
    Verified,
    /// It does not; the reason says how.
    Mismatch,
    /// It could not be checked (an error reading either side).
    Failed,
}

impl VerifyStatus {
    /// Every status.
    pub const ALL: [VerifyStatus; 3] = [
        VerifyStatus::Verified,
        VerifyStatus::Mismatch,
        VerifyStatus::Failed,
    ];

    /// Stable lower-case name, as recorded in the events.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyStatus::Verified => "verified",
            VerifyStatus::Mismatch => "mismatch",
            VerifyStatus::Failed => "failed",
        }
    }
}

/// The approval of a plan, as recorded in the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    /// The policy approved.
    pub policy: Policy,
    /// Hash of every plan item (path, kind, size, mtime, action, and what
    /// the destination held): a plan that changes is not this approval's.
    pub plan_hash: String,
    /// Who approved (the user name of the approving process).
    pub approved_by: String,
    /// When, as RFC 3339 UTC.
    pub approved_at: String,
    /// The filter rules discovery ran with (what the plan leaves out).
    #[serde(default)]
    pub filters: Vec<String>,
    /// What happens to destination extras.
    #[serde(default)]
    pub extras: Extras,
    /// The pass this plan belongs to (names the quarantine folder).
    #[serde(default)]
    pub pass: u32,
    /// When a retry sweep last extended the approval to items its
    /// discovery added (creations only), as RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_at: Option<String>,
    /// Items retry sweeps added to the approved plan that way.
    #[serde(default)]
    pub extended_items: u64,
    /// What the plan does.
    #[serde(flatten)]
    pub counts: PlanCounts,
}

/// What a plan does, counted: the same for a plan shown (a preview) and
/// the plan approved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanCounts {
    /// Items the plan acts on (not skipped).
    pub items: u64,
    /// Of which files (and symlinks).
    pub files: u64,
    /// Of which folders.
    pub folders: u64,
    /// Bytes the plan copies.
    pub bytes: u64,
    /// Items the plan leaves alone.
    pub skipped: u64,
    /// Destination items the plan replaces or moves aside.
    pub replaces: u64,
    /// Destination extras the plan moves into the quarantine folder.
    #[serde(default)]
    pub quarantines: u64,
    /// Items whose metadata alone the plan updates (no data copied).
    #[serde(default)]
    pub metadata: u64,
    /// Files the plan makes as hard links of another name it copies or
    /// finds in step (no data copied; counted among `files`).
    #[serde(default)]
    pub links: u64,
}

/// Copy progress and results: what `copy --json` and `status --json` print.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CopySummary {
    /// Items in the approved plan (all actions, skips included).
    pub planned: u64,
    /// Not started.
    pub pending: u64,
    /// Started, not finished (a stopped run).
    pub copying: u64,
    /// Done.
    pub copied: u64,
    /// Left alone.
    pub skipped: u64,
    /// Failed with a reason.
    pub failed: u64,
    /// Changed since discovery, not copied.
    pub changed: u64,
    /// Bytes the plan copies.
    pub bytes_planned: u64,
    /// Bytes of the items copied so far.
    pub bytes_copied: u64,
}

impl CopySummary {
    /// Returns true if and only if no item waits to be copied.
    pub fn is_finished(&self) -> bool {
        self.pending == 0 && self.copying == 0
    }
}

/// Verification results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifySummary {
    /// Copied items checked.
    pub checked: u64,
    /// Matching.
    pub verified: u64,
    /// Not matching.
    pub mismatch: u64,
    /// Not checkable.
    pub failed: u64,
    /// True if content hashes were compared too.
    pub checksum: bool,
}

/// The name a copy writes a file's data to before renaming it into place:
/// short (a 255-byte final name still fits), unique per plan item, and the
/// same on every attempt, so a resumed copy knows what to clean up.
pub fn temp_name(node_id: i64) -> Vec<u8> {
    format!(".treeshift-{node_id}.tmp").into_bytes()
}

/// The name the `rename` policy moves a destination item to.
pub fn aside_name(name: &[u8]) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(b".treeshift-old");
    out
}

/// An mtime in nanoseconds truncated to whole seconds (towards minus
/// infinity), the precision discovery compares at.
pub fn mtime_secs(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for p in [
            Policy::Skip,
            Policy::Overwrite,
            Policy::Newer,
            Policy::Rename,
        ] {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        for c in CopyStatus::ALL {
            assert_eq!(c.as_str().parse::<CopyStatus>(), Ok(c));
        }
        assert!("delete".parse::<Policy>().is_err());
    }

    #[test]
    fn mtime_seconds_round_down() {
        assert_eq!(mtime_secs(1_999_999_999), 1);
        assert_eq!(mtime_secs(-1), -1);
        assert_eq!(mtime_secs(-1_000_000_000), -1);
    }

    #[test]
    fn temp_names_are_short_and_hidden() {
        assert_eq!(temp_name(42), b".treeshift-42.tmp");
        assert!(temp_name(i64::MAX).len() < 40);
    }
}
