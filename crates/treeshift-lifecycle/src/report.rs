//! Typed results of each operation, serialized as they are for the CLI's
//! `--json` and the server's API.

use serde::Serialize;
use treeshift_backend::remote::{CopyShape, RequestCosts, Requests};
use treeshift_backend::{CallCounts, RequestCounts};
use treeshift_core::{Approval, CopySummary, FilterSpec, Phase, Summary, VerifySummary};
use treeshift_store::{
    Estimate, FoldersRequeued, MigrationSpec, RoundMetrics, TaskErrors, WorkerLeases,
};

/// Calls made to one side's backend, and the requests a remote one sent.
#[derive(Clone, Debug, Serialize)]
pub struct SideCalls {
    /// Calls by kind.
    #[serde(flatten)]
    pub counts: CallCounts,
    /// Requests a remote backend sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestCounts>,
}

/// Calls made to each side by this operation's process so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Calls {
    /// The source's, if it was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<SideCalls>,
    /// The destination's, if it was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<SideCalls>,
}

/// When each side's walk finished, in seconds from the discovery's start
/// (0 for a side that had finished in an earlier run).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    /// The source.
    pub src_done_s: f64,
    /// The destination.
    pub dst_done_s: f64,
    /// The whole run.
    pub total_s: f64,
}

/// What a discovery found.
#[derive(Clone, Debug, Serialize)]
pub struct DiscoveryReport {
    /// Counts by status, both trees' totals, what is to copy.
    #[serde(flatten)]
    pub summary: Summary,
    /// When each side finished.
    pub timing: Timing,
}

/// What the copy left will cost on each side that is remote storage, in
/// requests by kind and bytes through the network.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CopyCost {
    /// Requests to the source, if it is remote.
    #[schema(value_type = Option<Object>)]
    pub src: Option<Requests>,
    /// Requests to the destination, if it is remote.
    #[schema(value_type = Option<Object>)]
    pub dst: Option<Requests>,
    /// Bytes read from the source and written to the destination.
    pub bytes: u64,
}

impl CopyCost {
    /// The part size to estimate with: the destination's, where it has
    /// multipart uploads.
    pub fn part_size(migration: &MigrationSpec) -> u64 {
        RequestCosts::of(&migration.dst).map_or(u64::MAX, |c| c.part_size)
    }

    /// The cost of `e` (estimated with [`CopyCost::part_size`]); `None`
    /// when neither side is remote.
    pub fn of(migration: &MigrationSpec, e: &Estimate) -> Option<CopyCost> {
        let (src, dst) = (
            RequestCosts::of(&migration.src),
            RequestCosts::of(&migration.dst),
        );
        if src.is_none() && dst.is_none() {
            return None;
        }
        let shape = CopyShape {
            files: e.files,
            large_files: e.large_files,
            parts: e.parts,
            folders: e.folders,
            replaces: e.replaces,
            creates_root: e.creates_root,
        };
        Some(CopyCost {
            src: src.map(|c| c.as_source(&shape)),
            dst: dst.map(|c| c.as_destination(&shape)),
            bytes: e.bytes,
        })
    }
}

/// An approval, and what the copy it allows will cost.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalReport {
    /// What was approved.
    #[serde(flatten)]
    pub approval: Approval,
    /// The copy's cost, where a side is remote.
    pub cost: Option<CopyCost>,
}

/// What a retry sweep of discovery did.
#[derive(Clone, Debug, Serialize)]
pub struct RetriedDiscovery {
    /// Failed folders queued again, by side.
    pub requeued: FoldersRequeued,
    /// The discovery that listed them, if one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// What a retry sweep of the copy did.
#[derive(Clone, Debug, Serialize)]
pub struct RetriedCopy {
    /// The copy's outcome.
    #[serde(flatten)]
    pub summary: CopySummary,
    /// Failed items queued again.
    pub requeued: u64,
    /// New items the approval was extended to (created under its policy).
    pub approval_extended: u64,
}

/// Where a migration stands, whole.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StatusReport {
    /// Discovery's counts.
    #[serde(flatten)]
    pub summary: Summary,
    /// The lifecycle phase.
    pub phase: Phase,
    /// The source's location.
    pub src_location: String,
    /// The destination's location.
    pub dst_location: String,
    /// The filter rules.
    pub filter: FilterSpec,
    /// Whether the destination folds letter case.
    pub dst_case_insensitive: bool,
    /// The approval, if any.
    pub approval: Option<Approval>,
    /// The copy's progress, once approved.
    pub copy: Option<CopySummary>,
    /// The last verify's outcome.
    pub verify: Option<VerifySummary>,
    /// What the copy left would move.
    pub estimate: Estimate,
    /// And cost, where a side is remote.
    pub cost: Option<CopyCost>,
    /// Failures by side and phase, with the first few.
    pub errors: TaskErrors,
    /// Per-round metrics.
    pub rounds: Vec<RoundMetrics>,
    /// The worker processes holding folders, where the state is shared
    /// by many (PostgreSQL).
    pub workers: Vec<WorkerLeases>,
}

impl StatusReport {
    /// Whether anything failed or needs a look (the CLI's exit code 4).
    pub fn has_problems(&self) -> bool {
        let copy = self.copy.as_ref().map_or(0, |c| c.failed + c.changed);
        let verify = self.verify.as_ref().map_or(0, |v| v.mismatch + v.failed);
        self.summary.failed + self.summary.invalid_name + copy + verify > 0
    }
}
