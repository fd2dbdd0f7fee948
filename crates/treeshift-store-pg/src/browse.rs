//! Browsing one folder on PostgreSQL: its children on both sides (the
//! destination's extras beside the source's), each with its status and,
//! for a folder, the items and bytes below it by status.

use crate::PgStore;
use crate::error::Context;
use crate::schema::latest_event;
use postgres::GenericClient;
use treeshift_core::{Kind, RelPath, Side};
use treeshift_state::{BelowStatus, BrowseChild, StoreError};

impl PgStore {
    /// The children of `folder` after `after` (by path, at most `limit`):
    /// the source's, and the destination's extras.
    pub fn browse(
        &self,
        folder: &RelPath,
        after: Option<&RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("begin browsing")?;
            let mut children = Vec::new();
            for side in Side::BOTH {
                children.extend(browse_side(&mut tx, side, folder, after, limit)?);
            }
            tx.commit().context("browse a folder")?;
            children.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
            children.truncate(limit);
            Ok(children)
        })
    }
}

/// `side`'s children of `folder` (none if the side has no such folder).
///
/// Each node below the folder is summed into the child it is under,
/// found by its path cut after the child's name: one hash join on that
/// key, not a range join per child. The latest comparisons are read for
/// the folder's subtree alone (by depth and path), so a folder deep in a
/// large tree costs what its subtree does; the root costs the tree.
fn browse_side(
    client: &mut impl GenericClient,
    side: Side,
    folder: &RelPath,
    after: Option<&RelPath>,
    limit: usize,
) -> Result<Vec<BrowseChild>, StoreError> {
    let depth = folder.depth() as i32;
    let Some(row) = client
        .query_opt(
            &format!("SELECT id FROM {side}_nodes WHERE kind = 0 AND depth = $1 AND rel_path = $2"),
            &[&depth, &folder.as_bytes()],
        )
        .context("find the folder")?
    else {
        return Ok(Vec::new());
    };
    let folder_id: i64 = row.get(0);
    // The paths under the folder (all at the root, where the bounds are
    // empty), and where a child's name starts in them.
    let (bounds, name_at) = if folder.is_root() {
        ([Vec::new(), Vec::new()], 1)
    } else {
        (folder.below_bounds(), folder.as_bytes().len() as i32 + 2)
    };
    let under = "($4 = ''::bytea OR (d.rel_path >= $4 AND d.rel_path < $5))";
    let page = if after.is_some() {
        " AND n.rel_path > $6"
    } else {
        " AND $6::bytea IS NULL"
    };
    // The latest comparisons of the nodes under the folder alone; at the
    // root, every node's by depth alone: the filter only added work there
    // (and a nested loop the planner misjudged: BENCHMARKS.md).
    let of_these = if folder.is_root() {
        ""
    } else {
        " AND node_id IN (SELECT id FROM deeper)"
    };
    // The destination shows only what the source has not: its extras.
    let own = match side {
        Side::Src => "",
        Side::Dst => " AND ks.status = 'extra'",
    };
    let sql = format!(
        "WITH kids AS (SELECT n.rel_path, n.kind, n.size, ks.status \
                       FROM {side}_nodes n LEFT JOIN LATERAL {kid_status} ks ON true \
                       WHERE n.parent_id = $1{page}{own} ORDER BY n.rel_path LIMIT {limit}), \
              deeper AS (SELECT d.id, d.rel_path, d.size FROM {side}_nodes d \
                         WHERE d.depth > $2 + 1 AND {under}), \
              st AS (SELECT DISTINCT ON (node_id) node_id, status FROM {side}_status_events \
                     WHERE phase = 'compare' AND depth > $2 + 1{of_these} \
                     ORDER BY node_id, seq DESC), \
              below AS (SELECT substring(d.rel_path FROM 1 FOR $3 - 2 + \
                                 position('\\x2f'::bytea IN substring(d.rel_path FROM $3))) AS child, \
                               st.status, d.size \
                        FROM deeper d LEFT JOIN st ON st.node_id = d.id), \
              sums AS (SELECT b.child, b.status, count(*) AS n, coalesce(sum(b.size), 0)::bigint AS bytes \
                       FROM below b WHERE b.child IN (SELECT rel_path FROM kids) GROUP BY 1, 2) \
         SELECT k.rel_path, k.kind, k.size, k.status, s.status, coalesce(s.n, 0), coalesce(s.bytes, 0) \
         FROM kids k LEFT JOIN sums s ON s.child = k.rel_path ORDER BY k.rel_path, s.status",
        kid_status = latest_event(side, "compare", "n.id"),
    );
    let [from, to] = bounds;
    let after = after.map(|a| a.as_bytes().to_vec());
    let rows = client
        .query(
            sql.as_str(),
            &[&folder_id, &depth, &name_at, &from, &to, &after],
        )
        .context("browse a folder")?;
    let mut out: Vec<BrowseChild> = Vec::new();
    for r in &rows {
        let path: &[u8] = r.get(0);
        let child = || {
            Ok::<_, StoreError>(BrowseChild {
                side,
                path: RelPath::from_bytes(path.to_vec()),
                kind: Kind::from_code(r.get::<_, i16>(1) as u8).unwrap_or(Kind::Special),
                size: r.get::<_, i64>(2).max(0) as u64,
                status: r.get(3),
                below: Vec::new(),
            })
        };
        let (status, items, bytes): (Option<String>, i64, i64) = (r.get(4), r.get(5), r.get(6));
        let below = status.map(|status| BelowStatus {
            status,
            items: items.max(0) as u64,
            bytes: bytes.max(0) as u64,
        });
        BrowseChild::add_row(&mut out, path, child, below)?;
    }
    Ok(out)
}
