//! Browsing one folder on PostgreSQL: its children on both sides (the
//! destination's extras beside the source's), each with its status and,
//! for a folder, the items and bytes below it by status.
//!
//! Summing a child's subtree reads every node below it: at the root, the
//! whole tree. So once a discovery has ended, the first browse has the
//! items and bytes below every folder summed once, bottom up one depth at
//! a time (`{side}_folder_sums`), and browses read their children's sums.
//! The seal that ends a discovery forgets the sums (a retry sweep's or a
//! new pass's discovery ends with a seal too); while a discovery runs,
//! browsing sums the subtrees.

use crate::PgStore;
use crate::error::Context;
use crate::schema::latest_event;
use crate::seal::{SEAL_LOCK, read_progress};
use postgres::{GenericClient, Transaction};
use treeshift_core::{Kind, RelPath, Side};
use treeshift_state::{BelowStatus, BrowseChild, StoreError};

/// The meta key that says the sums below folders are made.
const MADE: &str = "folder_sums";

impl PgStore {
    /// The children of `folder` after `after` (by path, at most `limit`):
    /// the source's, and the destination's extras.
    pub fn browse(
        &self,
        folder: &RelPath,
        after: Option<&RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        if self.run(|client| Ok(discovered(client)? && !sums_made(client)?))? {
            self.make_folder_sums()?;
        }
        self.browse_children(folder, after, limit, true)
    }

    /// As [`PgStore::browse`], summing each child's subtree whether or
    /// not the sums below folders are made: what a browse answers during
    /// a discovery, for tests to hold the sums to.
    pub fn browse_without_sums(
        &self,
        folder: &RelPath,
        after: Option<&RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        self.browse_children(folder, after, limit, false)
    }

    /// With `use_sums`, from the sums below folders if they are made.
    fn browse_children(
        &self,
        folder: &RelPath,
        after: Option<&RelPath>,
        limit: usize,
        use_sums: bool,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        self.run(|client| {
            // One snapshot: the sums are made in the one the browse reads.
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .context("begin browsing")?;
            let summed = use_sums && sums_made(&mut tx)?;
            let mut children = Vec::new();
            for side in Side::BOTH {
                children.extend(browse_side(&mut tx, side, folder, after, limit, summed)?);
            }
            tx.commit().context("browse a folder")?;
            children.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
            children.truncate(limit);
            Ok(children)
        })
    }

    /// Sums the items and bytes below every folder by status, if a
    /// discovery has ended and they are not made: each folder's from its
    /// children's own statuses and the sums of its child folders, one
    /// depth at a time from the deepest, so each node is read once. Under
    /// the seals' lock, so no round reopens or ends meanwhile, and in one
    /// transaction.
    fn make_folder_sums(&self) -> Result<(), StoreError> {
        self.run(|client| {
            let mut tx = client
                .transaction()
                .context("begin summing below folders")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
                .context("wait for a seal")?;
            if !discovered(&mut tx)? || sums_made(&mut tx)? {
                return Ok(());
            }
            let started = std::time::Instant::now();
            for side in Side::BOTH {
                let deepest: i32 = tx
                    .query_one(
                        &format!("SELECT coalesce(max(depth), 0) FROM {side}_nodes"),
                        &[],
                    )
                    .context("find the deepest nodes")?
                    .get(0);
                for depth in (1..=deepest).rev() {
                    sum_depth(&mut tx, side, depth)?;
                }
            }
            tx.execute("INSERT INTO meta VALUES ($1, 'true')", &[&MADE])
                .context("record the sums below folders")?;
            tx.commit().context("sum below folders")?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "summed what is below each folder"
            );
            Ok(())
        })
    }
}

/// Forgets the sums below folders, in the transaction of the seal that
/// ends a side's discovery.
pub(crate) fn forget_folder_sums(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute(&format!(
        "DELETE FROM src_folder_sums; DELETE FROM dst_folder_sums; \
         DELETE FROM meta WHERE key = '{MADE}'"
    ))
    .context("forget the sums below folders")
}

fn discovered(client: &mut impl GenericClient) -> Result<bool, StoreError> {
    let progress = read_progress(client)?;
    Ok(progress.src_done && progress.dst_done)
}

fn sums_made(client: &mut impl GenericClient) -> Result<bool, StoreError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM meta WHERE key = $1)",
            &[&MADE],
        )
        .context("look for the sums below folders")?
        .get(0))
}

/// Adds, to the folders at `depth - 1`, their children at `depth`: each
/// child's latest comparison, and the sums of those that are folders
/// (made for the depth below).
fn sum_depth(tx: &mut Transaction<'_>, side: Side, depth: i32) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO {side}_folder_sums \
             SELECT folder_id, $1 - 1, status, sum(items)::bigint, sum(bytes)::bigint \
             FROM (SELECT n.parent_id AS folder_id, l.status, 1::bigint AS items, n.size AS bytes \
                   FROM {side}_nodes n \
                   JOIN (SELECT DISTINCT ON (node_id) node_id, status FROM {side}_status_events \
                         WHERE phase = 'compare' AND depth = $1 ORDER BY node_id, seq DESC) l \
                     ON l.node_id = n.id \
                   WHERE n.depth = $1 \
                   UNION ALL \
                   SELECT n.parent_id, s.status, s.items, s.bytes \
                   FROM {side}_folder_sums s JOIN {side}_nodes n ON n.id = s.folder_id \
                   WHERE s.depth = $1 AND n.depth = $1) c \
             GROUP BY folder_id, status"
        ),
        &[&depth],
    )
    .context("sum below the folders of a depth")?;
    Ok(())
}

/// `side`'s children of `folder` (none if the side has no such folder).
///
/// With `summed`, each child folder's sums below it are read from
/// `{side}_folder_sums`. Else each node below the folder is summed into
/// the child it is under, found by its path cut after the child's name:
/// one hash join on that key, not a range join per child. The latest
/// comparisons are then read for the folder's subtree alone (by depth and
/// path), so a folder deep in a large tree costs what its subtree does;
/// the root costs the tree.
fn browse_side(
    client: &mut impl GenericClient,
    side: Side,
    folder: &RelPath,
    after: Option<&RelPath>,
    limit: usize,
    summed: bool,
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
    let after = after.map(|a| a.as_bytes().to_vec());
    // The page of children; `after` is the query's parameter `param`.
    let kids = |param: &str| {
        // The destination shows only what the source has not: its extras.
        let own = match side {
            Side::Src => "",
            Side::Dst => " AND ks.status = 'extra'",
        };
        let page = match after {
            Some(_) => format!(" AND n.rel_path > {param}"),
            None => format!(" AND {param}::bytea IS NULL"),
        };
        format!(
            "kids AS (SELECT n.id, n.rel_path, n.kind, n.size, ks.status \
                      FROM {side}_nodes n LEFT JOIN LATERAL {kid_status} ks ON true \
                      WHERE n.parent_id = $1{page}{own} ORDER BY n.rel_path LIMIT {limit})",
            kid_status = latest_event(side, "compare", "n.id"),
        )
    };
    let rows = if summed {
        let sql = format!(
            "WITH {kids} \
             SELECT k.rel_path, k.kind, k.size, k.status, s.status, coalesce(s.items, 0), \
                    coalesce(s.bytes, 0) \
             FROM kids k LEFT JOIN {side}_folder_sums s ON s.folder_id = k.id \
             ORDER BY k.rel_path, s.status",
            kids = kids("$2"),
        );
        client.query(sql.as_str(), &[&folder_id, &after])
    } else {
        // The paths under the folder (all at the root, where the bounds
        // are empty), and where a child's name starts in them.
        let ([from, to], name_at) = if folder.is_root() {
            ([Vec::new(), Vec::new()], 1)
        } else {
            (folder.below_bounds(), folder.as_bytes().len() as i32 + 2)
        };
        let under = "($4 = ''::bytea OR (d.rel_path >= $4 AND d.rel_path < $5))";
        // The latest comparisons of the nodes under the folder alone; at
        // the root, every node's by depth alone: the filter only added
        // work there (and a nested loop the planner misjudged:
        // BENCHMARKS.md).
        let of_these = if folder.is_root() {
            ""
        } else {
            " AND node_id IN (SELECT id FROM deeper)"
        };
        let sql = format!(
            "WITH {kids}, \
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
            kids = kids("$6"),
        );
        client.query(
            sql.as_str(),
            &[&folder_id, &depth, &name_at, &from, &to, &after],
        )
    }
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
