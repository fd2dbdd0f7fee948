//! Retry sweeps of discovery: folders whose listing failed are queued
//! again, and the rounds from the shallowest of them are reopened.

use super::{EventRow, Writer, append_buffered, ix, latest_listing};
use crate::error::Context;
use crate::{FoldersRequeued, StoreError};
use treeshift_core::{RelPath, Side};

impl Writer {
    /// Runs `sql`, which selects (id, depth, rel_path, attempt) of failed
    /// items, and keeps those at or under `prefix`: (id, depth, attempt).
    pub(super) fn failed_items(
        &self,
        sql: &str,
        prefix: Option<&RelPath>,
    ) -> Result<Vec<(i64, u32, u32)>, StoreError> {
        let mut stmt = self.conn.prepare(sql).context("find failed items")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i32>(1)?.max(0) as u32,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i32>(3)?.max(0) as u32,
                ))
            })
            .context("find failed items")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, depth, path, attempt) = row.context("find failed items")?;
            if prefix.is_none_or(|p| RelPath::from_bytes(path).is_within(p)) {
                out.push((id, depth, attempt));
            }
        }
        Ok(out)
    }

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
            let failed = self.failed_items(
                &format!(
                    "WITH {ll} SELECT n.id, n.depth, n.rel_path, ll.attempt FROM {side}_nodes n \
                     JOIN ll ON ll.node_id = n.id WHERE ll.st = 'failed' ORDER BY n.depth, n.id",
                    ll = latest_listing(side, None)
                ),
                prefix,
            )?;
            for (id, depth, attempt) in failed {
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
            super::rounds::mark_discovering(conn)?;
            Ok(())
        })?;
        Ok(requeued)
    }
}
