//! A retry sweep of discovery on PostgreSQL: the folders whose latest
//! listing failed are queued again, and the rounds from the shallowest of
//! them reopened, as the DuckDB store does. Their leases go back to open
//! (the epoch grows on), so the next discovery, by any process, lists
//! them and walks their subtrees, while every folder already listed
//! stays listed.

use crate::PgStore;
use crate::error::Context;
use crate::events::{Event, append_events};
use crate::seal::SEAL_LOCK;
use crate::settings::record_phase;
use treeshift_core::{Phase, RelPath, Side};
use treeshift_state::{FoldersRequeued, StoreError};

impl PgStore {
    /// Queues again the folders whose latest listing failed (at or under
    /// `prefix`, if given) and reopens the rounds from the shallowest of
    /// them, in one transaction that no seal interleaves with.
    pub fn requeue_failed_folders(
        &self,
        prefix: Option<&RelPath>,
    ) -> Result<FoldersRequeued, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("begin a retry sweep")?;
            // The seals' lock: a round is not sealed while it reopens.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
                .context("wait for a seal")?;
            let mut requeued = FoldersRequeued::default();
            let mut shallowest: [Option<i32>; 2] = [None, None];
            for side in Side::BOTH {
                let failed = tx
                    .query(
                        &format!(
                            "SELECT n.id, n.depth, n.rel_path, l.attempt FROM {side}_nodes n \
                             JOIN (SELECT DISTINCT ON (node_id) node_id, status, attempt \
                                   FROM {side}_status_events WHERE phase = 'list' \
                                   ORDER BY node_id, seq DESC) l ON l.node_id = n.id \
                             WHERE l.status = 'failed' ORDER BY n.depth, n.id"
                        ),
                        &[],
                    )
                    .context("find the folders that failed")?;
                let failed: Vec<&postgres::Row> = failed
                    .iter()
                    .filter(|r| prefix.is_none_or(|p| RelPath::from_bytes(r.get(2)).is_within(p)))
                    .collect();
                let ids: Vec<i64> = failed.iter().map(|r| r.get(0)).collect();
                append_events(
                    &mut tx,
                    side,
                    "list",
                    failed.iter().map(|r| Event {
                        node_id: r.get(0),
                        depth: r.get(1),
                        status: "requeued",
                        reason: Some("retry sweep"),
                        attempt: r.get(3),
                    }),
                )?;
                tx.execute(
                    &format!(
                        "UPDATE {side}_leases SET done = false, holder = NULL, expires_at = NULL, \
                           pages = 0, position = NULL WHERE node_id = ANY($1)"
                    ),
                    &[&ids],
                )
                .context("open the failed folders' leases")?;
                shallowest[side as usize] = failed.iter().map(|r| r.get::<_, i32>(1)).min();
                match side {
                    Side::Src => requeued.src = ids.len() as u64,
                    Side::Dst => requeued.dst = ids.len() as u64,
                }
            }
            // A source folder's destination counterpart is listed in the
            // destination round of the same depth, so the destination
            // reopens at least as deep as the source.
            let [src_from, dst_from] = shallowest;
            let dst_from = match (src_from, dst_from) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(dst_from) = dst_from else {
                return Ok(requeued);
            };
            if let Some(from) = src_from {
                reopen(&mut tx, Side::Src, from)?;
            }
            reopen(&mut tx, Side::Dst, dst_from)?;
            record_phase(&mut tx, Phase::Discovering)?;
            tx.commit().context("queue the failed folders")?;
            Ok(requeued)
        })
    }
}

/// Reopens `side`'s rounds from `depth`: unsealed, and the side not done.
fn reopen(tx: &mut postgres::Transaction<'_>, side: Side, depth: i32) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM rounds WHERE side = $1 AND depth >= $2",
        &[&side.as_str(), &depth],
    )
    .context("reopen the rounds")?;
    tx.execute(
        "DELETE FROM meta WHERE key = $1",
        &[&format!("{side}_done")],
    )
    .context("reopen the rounds")?;
    Ok(())
}
