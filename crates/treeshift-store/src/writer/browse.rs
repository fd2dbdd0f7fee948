//! Browsing one folder: its children, each with its own status and, for a
//! folder, the items and bytes below it by status.
//!
//! Summing a child's subtree from the nodes reads every node below it: at
//! the root of a large tree, every node and every comparison. So once a
//! discovery has finished, the store thread sums what is below every
//! folder once, bottom up by depth (`{side}_folder_sums`: a folder's
//! items and bytes of a status may come in several rows, one per slice of
//! its children's ids, to be added up), and a browse then reads its
//! children's sums instead of their subtrees. The sums record the last
//! event they include; a comparison recorded after it (a retry sweep's,
//! or a new discovery's) makes them out of date, and browsing sums
//! subtrees again until they are made anew. Comparisons change only in
//! discovery, so a copy never makes them out of date.

use super::review::below;
use super::*;

/// The tables of the sums, made anew with each pass (see `pass`). Created
/// on open when missing, so older state files gain them without a new
/// schema version.
pub(crate) const BROWSE_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS src_folder_sums (
    folder_id BIGINT NOT NULL, depth INTEGER NOT NULL,
    status VARCHAR NOT NULL, items BIGINT NOT NULL, bytes BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dst_folder_sums (
    folder_id BIGINT NOT NULL, depth INTEGER NOT NULL,
    status VARCHAR NOT NULL, items BIGINT NOT NULL, bytes BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS folder_sums_seq (seq BIGINT NOT NULL);
"#;

/// The tables above, for the pass that makes them anew.
pub(crate) const BROWSE_SCOPED: [&str; 3] =
    ["src_folder_sums", "dst_folder_sums", "folder_sums_seq"];

impl Db {
    /// The children of `folder` after `after` (by path, at most `limit`):
    /// the source's, and the destination's extras; each with its own
    /// status and, for a folder, the items and bytes below it by status.
    pub(crate) fn browse(
        &self,
        folder: &RelPath,
        after: Option<&RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        // One snapshot: the sums are current in the one the browse reads.
        self.conn
            .execute_batch("BEGIN TRANSACTION")
            .context("browse a folder")?;
        let children = self
            .browse_sums_current()
            .and_then(|summed| self.browse_children(folder, after, limit, summed));
        let end = if children.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        self.conn.execute_batch(end).context("browse a folder")?;
        children
    }

    /// As [`Db::browse`], from the sums below folders if `summed` (which
    /// must then be current), else from the subtrees.
    pub(crate) fn browse_children(
        &self,
        folder: &RelPath,
        after: Option<&RelPath>,
        limit: usize,
        summed: bool,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        let depth = folder.depth() as i64 + 1;
        let mut children = Vec::new();
        for side in Side::BOTH {
            children.extend(self.browse_side(side, folder, depth, after, limit, summed)?);
        }
        children.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        children.truncate(limit);
        Ok(children)
    }

    /// Whether the sums below folders hold every comparison recorded.
    pub(crate) fn browse_sums_current(&self) -> Result<bool, StoreError> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM folder_sums_seq", [], |r| r.get(0))
            .context("read when the sums below folders were made")?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        // Events are appended in order of `seq`: this reads the last row
        // groups only.
        let newer = |side: Side| {
            exists(
                &self.conn,
                &format!(
                    "SELECT 1 FROM {side}_status_events WHERE seq > {seq} AND phase = 'compare'"
                ),
            )
            .context("look for comparisons newer than the sums below folders")
        };
        Ok(!newer(Side::Src)? && !newer(Side::Dst)?)
    }

    /// Whether a browse wants the sums made: they are out of date and the
    /// discovery has finished, so no comparison will follow soon.
    pub(crate) fn browse_sums_wanted(&self) -> Result<bool, StoreError> {
        let progress = self.progress()?;
        Ok(progress.src_done && progress.dst_done && !self.browse_sums_current()?)
    }

    fn browse_side(
        &self,
        side: Side,
        folder: &RelPath,
        depth: i64,
        after: Option<&RelPath>,
        limit: usize,
        summed: bool,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        // Under the folder (nothing to add at the root), and the page.
        let (under, bounds) = if folder.is_root() {
            ("", Vec::new())
        } else {
            (
                " AND rel_path >= ? AND rel_path < ?",
                below(folder).to_vec(),
            )
        };
        let mut args = Vec::new();
        // The latest comparisons: with the sums, of the children alone;
        // else of the nodes under the folder (a folder deep in a large tree
        // costs what its subtree does), of all at the root, where a filter
        // would only add work.
        let at = if summed { "=" } else { ">=" };
        let of_these = match (summed, folder.is_root()) {
            (false, true) => String::new(),
            (true, true) => format!(" AND depth = {depth}"),
            (_, false) => {
                args.extend(bounds.iter().cloned());
                format!(
                    " AND depth {at} {depth} AND node_id IN \
                     (SELECT id FROM {side}_nodes WHERE depth {at} {depth}{under})"
                )
            }
        };
        args.extend(bounds.iter().cloned());
        let mut page = String::new();
        if let Some(after) = after {
            page.push_str(" AND n.rel_path > ?");
            args.push(Value::Blob(after.as_bytes().to_vec()));
        }
        // The destination shows only what the source has not: its extras.
        let own = match side {
            Side::Src => "",
            Side::Dst => "AND ks.st = 'extra'",
        };
        let n_under = under.replace("rel_path", "n.rel_path");
        let st = format!(
            "st AS (SELECT node_id, arg_max(status, seq) AS st FROM {side}_status_events \
                    WHERE phase = 'compare'{of_these} GROUP BY node_id), \
             kids AS (SELECT n.id, n.rel_path, n.kind, n.size, ks.st, \
                        split_part(n.rel_path::VARCHAR, '/', {depth}) AS name \
                      FROM {side}_nodes n LEFT JOIN st ks ON ks.node_id = n.id \
                      WHERE n.depth = {depth}{n_under}{page} {own} ORDER BY n.rel_path LIMIT {limit})"
        );
        let sql = if summed {
            format!(
                "WITH {st} \
                 SELECT k.rel_path, k.kind, k.size, k.st, s.status, coalesce(s.items, 0), \
                        coalesce(s.bytes, 0) \
                 FROM kids k LEFT JOIN \
                   (SELECT folder_id, status, sum(items)::BIGINT AS items, sum(bytes)::BIGINT AS bytes \
                    FROM {side}_folder_sums WHERE depth = {depth} AND folder_id IN (SELECT id FROM kids) \
                    GROUP BY ALL) s ON s.folder_id = k.id \
                 ORDER BY k.rel_path, s.status"
            )
        } else {
            args.extend(bounds.iter().cloned());
            let d_under = under.replace("rel_path", "d.rel_path");
            // Each node below is summed into the child it is under, matched
            // by that child's component of the path as text, for a hash
            // join (a range join per child cost several times more on a
            // 1M-node tree). DuckDB spells a byte that is not printable
            // ASCII, and the backslash, as `\xNN`, so `/` is only ever a
            // separator and no two names read alike; the child's path
            // bounds are checked all the same.
            format!(
                "WITH {st}, \
                 below AS (SELECT split_part(d.rel_path::VARCHAR, '/', {depth}) AS name, d.rel_path, \
                             ds.st, d.size \
                           FROM {side}_nodes d LEFT JOIN st ds ON ds.node_id = d.id \
                           WHERE d.depth > {depth}{d_under}), \
                 sums AS (SELECT k.rel_path, b.st, count(*) AS n, coalesce(sum(b.size), 0) AS bytes \
                          FROM kids k JOIN below b ON b.name = k.name \
                            AND b.rel_path >= k.rel_path || '/'::BLOB AND b.rel_path < k.rel_path || '0'::BLOB \
                          GROUP BY ALL) \
                 SELECT k.rel_path, k.kind, k.size, k.st, s.st::VARCHAR AS status, coalesce(s.n, 0), \
                        coalesce(s.bytes, 0) \
                 FROM kids k LEFT JOIN sums s ON s.rel_path = k.rel_path ORDER BY k.rel_path, status"
            )
        };
        let mut stmt = self.conn.prepare(&sql).context("prepare a browse")?;
        let mut rows = stmt
            .query(duckdb::params_from_iter(args))
            .context("browse a folder")?;
        let mut out: Vec<BrowseChild> = Vec::new();
        while let Some(r) = rows.next().context("browse a folder")? {
            let path: Vec<u8> = r.get(0).context("browse")?;
            let below_status: Option<String> = r.get(4).context("browse")?;
            let count: i64 = r.get(5).context("browse")?;
            let bytes: i64 = r.get(6).context("browse")?;
            let child = || {
                let kind: u8 = r.get(1).context("browse")?;
                Ok::<_, StoreError>(BrowseChild {
                    side,
                    path: RelPath::from_bytes(path.clone()),
                    kind: Kind::from_code(kind).unwrap_or(Kind::Special),
                    size: r.get(2).context("browse")?,
                    status: r.get(3).context("browse")?,
                    below: Vec::new(),
                })
            };
            let below = below_status.map(|status| BelowStatus {
                status,
                items: count.max(0) as u64,
                bytes: bytes.max(0) as u64,
            });
            BrowseChild::add_row(&mut out, &path, child, below)?;
        }
        Ok(out)
    }
}

impl Writer {
    /// Makes the sums below every folder, if a browse wants them (see
    /// [`Db::browse_sums_wanted`]): each folder's from its children's own
    /// statuses and the sums of its child folders, one depth at a time
    /// from the deepest, so each node is read once; a depth in slices of
    /// its ids, as a seal does, so that memory stays bounded in a huge
    /// folder. Replaces the sums of both sides and the event they are
    /// current to in one transaction.
    pub(crate) fn make_browse_sums(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        if !self.browse_sums_wanted()? {
            return Ok(());
        }
        let started = Instant::now();
        let slice = self.seal_slice;
        self.in_transaction("sum what is below each folder", |conn| {
            for side in Side::BOTH {
                conn.execute(&format!("DELETE FROM {side}_folder_sums"), [])?;
                let deepest: i64 = conn.query_row(
                    &format!("SELECT coalesce(max(depth), 0) FROM {side}_nodes"),
                    [],
                    |r| r.get(0),
                )?;
                for depth in (1..=deepest as u32).rev() {
                    for ids in id_slices(conn, side, depth, slice)? {
                        conn.execute(&sums_of_slice(side, depth, ids), [])?;
                    }
                }
            }
            // Every event recorded so far is committed (flushed above).
            conn.execute_batch(
                "DELETE FROM folder_sums_seq; \
                 INSERT INTO folder_sums_seq SELECT coalesce(greatest( \
                   (SELECT max(seq) FROM src_status_events), (SELECT max(seq) FROM dst_status_events)), 0)",
            )?;
            Ok(())
        })?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "summed what is below each folder"
        );
        Ok(())
    }
}

/// The statement that adds, to the folders at `depth - 1`, their children
/// at `depth` with ids in `(lo, hi)`: each child's latest comparison, and
/// the sums of those children that are folders (made by the statements
/// of the depth below).
fn sums_of_slice(side: Side, depth: u32, (lo, hi): (i64, i64)) -> String {
    format!(
        "INSERT INTO {side}_folder_sums \
         SELECT folder_id, {parent}, status, sum(items)::BIGINT, sum(bytes)::BIGINT \
         FROM (SELECT n.parent_id AS folder_id, l.st::VARCHAR AS status, 1::BIGINT AS items, \
                      n.size::BIGINT AS bytes \
               FROM {side}_nodes n \
               JOIN (SELECT node_id, arg_max(status, seq) AS st FROM {side}_status_events \
                     WHERE phase = 'compare' AND depth = {depth} AND node_id BETWEEN {lo} AND {hi} \
                     GROUP BY node_id) l ON l.node_id = n.id \
               WHERE n.depth = {depth} AND n.id BETWEEN {lo} AND {hi} \
               UNION ALL \
               SELECT n.parent_id, s.status, s.items, s.bytes \
               FROM {side}_folder_sums s JOIN {side}_nodes n ON n.id = s.folder_id \
               WHERE s.depth = {depth} AND s.folder_id BETWEEN {lo} AND {hi} \
                 AND n.depth = {depth} AND n.id BETWEEN {lo} AND {hi}) \
         GROUP BY ALL",
        parent = depth - 1
    )
}
