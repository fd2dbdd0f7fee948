//! Retry sweeps of discovery: folders whose listing failed are queued
//! again, and the rounds from the shallowest of them are reopened.

use super::{EventRow, Writer, append_buffered, ix};
use crate::error::Context;
use crate::{FoldersRequeued, StoreError};
use treeshift_core::{RelPath, Side};

impl Writer {
    /// Appends a `requeued` list event for every folder whose latest listing
    /// failed (at or under `prefix`), and, in the same transaction, reopens
    /// the rounds from the shallowest such folder: the next discovery run
    /// lists them, walks their subtrees and compares them as usual, while
    /// every folder already listed stays listed.
    pub(crate) fn requeue_failed_folders(
        &mut self,
        prefix: Option<&RelPath>,
    ) -> Result<FoldersRequeued, StoreError> {
        self.flush()?;
        let mut requeued = FoldersRequeued::default();
        let mut shallowest: [Option<u32>; 2] = [None, None];
        for side in [Side::Src, Side::Dst] {
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT n.id, n.depth, n.rel_path, e.attempt FROM {side}_nodes n JOIN \
                     (SELECT node_id, arg_max(status, seq) AS st, arg_max(attempt, seq) AS attempt \
                      FROM {side}_status_events WHERE phase = 'list' GROUP BY node_id) e \
                     ON e.node_id = n.id WHERE e.st = 'failed' ORDER BY n.depth, n.id"
                ))
                .context("find failed folders")?;
            let failed: Vec<(i64, u32, Vec<u8>, u32)> = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i32>(1)?.max(0) as u32,
                        r.get(2)?,
                        r.get::<_, i32>(3)?.max(0) as u32,
                    ))
                })
                .context("find failed folders")?
                .collect::<Result<_, _>>()
                .context("find failed folders")?;
            drop(stmt);
            for (id, depth, path, attempt) in failed {
                if prefix.is_some_and(|p| !RelPath::from_bytes(path).is_within(p)) {
                    continue;
                }
                let seq = self.take_seq();
                self.buf.events[ix(side)].push(EventRow {
                    seq,
                    node_id: id,
                    depth,
                    phase: "list",
                    status: "requeued",
                    reason: Some("retry sweep".to_string()),
                    attempt,
                });
                let slot = &mut shallowest[ix(side)];
                *slot = Some(slot.map_or(depth, |d| d.min(depth)));
                match side {
                    Side::Src => requeued.src += 1,
                    Side::Dst => requeued.dst += 1,
                }
            }
        }
        // A src folder's dst counterpart is listed in the dst round of the
        // same depth, so the dst reopens at least as deep as the src.
        let src_from = shallowest[ix(Side::Src)];
        let dst_from = match (src_from, shallowest[ix(Side::Dst)]) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(dst_from) = dst_from else {
            return Ok(requeued);
        };
        let buf = std::mem::take(&mut self.buf);
        self.in_transaction("re-queue failed folders", |conn| {
            append_buffered(conn, &buf)?;
            if let Some(from) = src_from {
                conn.execute(
                    &format!("DELETE FROM rounds WHERE side = 'src' AND depth >= {from}"),
                    [],
                )?;
                conn.execute("DELETE FROM meta WHERE key = 'src_done'", [])?;
            }
            conn.execute(
                &format!("DELETE FROM rounds WHERE side = 'dst' AND depth >= {dst_from}"),
                [],
            )?;
            conn.execute("DELETE FROM meta WHERE key = 'dst_done'", [])?;
            conn.execute(
                "UPDATE migrations SET phase = 'discovering', updated_at = now() WHERE id = 1",
                [],
            )?;
            Ok(())
        })?;
        Ok(requeued)
    }
}
