//! Where a migration stands in its lifecycle, as the state file records it
//! and status shows it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A migration's phase. Each pass goes through them in order; a new pass
/// starts again at `Created`. What an operation may do is decided by what
/// the state file holds (discovery finished, a plan approved, the copy
/// finished); the phase names where the last operation left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Recorded, nothing walked yet (or a new pass about to walk).
    Created,
    /// Discovery is walking the trees (or was stopped while it did).
    Discovering,
    /// Both trees walked: the plan can be reviewed and approved.
    Discovered,
    /// A plan approved: the copy can start.
    Approved,
    /// The approved plan is being copied (or the copy was stopped).
    Copying,
    /// The copy finished.
    Copied,
    /// Verify finished.
    Verified,
}

impl Phase {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Discovering => "discovering",
            Phase::Discovered => "discovered",
            Phase::Approved => "approved",
            Phase::Copying => "copying",
            Phase::Copied => "copied",
            Phase::Verified => "verified",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Phase, String> {
        [
            Phase::Created,
            Phase::Discovering,
            Phase::Discovered,
            Phase::Approved,
            Phase::Copying,
            Phase::Copied,
            Phase::Verified,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown phase '{s}'"))
    }
}
