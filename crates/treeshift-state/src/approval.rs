//! When a plan may be approved, and when an approval still holds: the
//! rules both stores keep.

use crate::StoreError;
use treeshift_core::{Approval, CopySummary};

/// Whether approving the plan whose hash is `current` may go on. Refused
/// if the approver was shown another plan (`seen`), or if the copy of
/// another approved plan (`old`) started and has not finished (`copy`
/// reads its progress). `Some(old)` when that copy's plan is this one:
/// approving again then changes nothing.
pub fn may_approve(
    current: &str,
    seen: Option<&str>,
    old: Option<Approval>,
    copy: impl FnOnce() -> Result<CopySummary, StoreError>,
) -> Result<Option<Approval>, StoreError> {
    if let Some(seen) = seen.filter(|h| *h != current) {
        return Err(StoreError::PlanChanged {
            approved: seen.to_string(),
            current: current.to_string(),
        });
    }
    let Some(old) = old else {
        return Ok(None);
    };
    let copy = copy()?;
    let started = copy.copied + copy.failed + copy.changed + copy.copying > 0;
    if !started || copy.is_finished() {
        return Ok(None);
    }
    if old.plan_hash == current {
        return Ok(Some(old));
    }
    Err(StoreError::CopyStarted {
        policy: old.policy.to_string(),
    })
}

/// The recorded `approval` (`None`: nothing approved), if the plan
/// discovery gives now, whose hash `current` reads, is still the one it
/// approved.
pub fn still_approved(
    approval: Option<Approval>,
    current: impl FnOnce(&Approval) -> Result<String, StoreError>,
) -> Result<Approval, StoreError> {
    let approval = approval.ok_or(StoreError::NotApproved)?;
    let current = current(&approval)?;
    if current != approval.plan_hash {
        return Err(StoreError::PlanChanged {
            approved: approval.plan_hash,
            current,
        });
    }
    Ok(approval)
}
