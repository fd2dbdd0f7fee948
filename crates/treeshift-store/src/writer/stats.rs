//! Statistics per depth, recomputed at each seal, and the summary built
//! from them.

use super::*;
use treeshift_state::{DepthStats, summary_from};

/// Recomputes every statistic of the sides in `slices` at `depth` from
/// their nodes (by the slices of their ids given) and their latest
/// comparison, replacing the old rows: sealing a round twice
/// (a resume) never double-counts. One small aggregate by side, kind and
/// status, with the keys derived here: a statement with a filtered
/// aggregate per key cost about 5 ms more to plan, on every seal, than it
/// took to run on a small round; one statement for both sides saves
/// another plan. (A plain join on the events, without taking the latest,
/// peaked 5-7 MiB higher on a 1M-node tree.)
pub(super) fn replace_depth_stats(
    conn: &Connection,
    slices: &[(Side, Slices)],
    depth: u32,
) -> Result<(), duckdb::Error> {
    // One slice of each side's ids per statement (see `id_slices`): on a
    // round of millions of nodes, the latest comparison of every node at
    // once ran out of the store's memory limit.
    let statements = slices.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    let mut stats: [DepthStats; 2] = Default::default();
    for i in 0..statements {
        let per_side: Vec<String> = slices
            .iter()
            .filter_map(|(side, ranges)| ranges.get(i).map(|range| (side, range)))
            .map(|(side, (lo, hi))| {
                format!(
                    "SELECT {at} AS side, n.kind, e.status, coalesce(e.meta_only, false), count(*) AS nodes, \
                            coalesce(sum(n.size), 0)::BIGINT AS bytes \
                     FROM {side}_nodes n LEFT JOIN \
                       (SELECT node_id, arg_max(status, seq) AS status, \
                               arg_max(reason, seq) LIKE 'metadata:%' AS meta_only FROM {side}_status_events \
                        WHERE depth = {depth} AND phase = 'compare' AND node_id BETWEEN {lo} AND {hi} \
                        GROUP BY node_id) e ON e.node_id = n.id \
                     WHERE n.depth = {depth} AND n.id BETWEEN {lo} AND {hi} GROUP BY ALL",
                    at = ix(*side)
                )
            })
            .collect();
        let mut stmt = conn.prepare(&per_side.join(" UNION ALL "))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let at: usize = row.get(0)?;
            let status: Option<String> = row.get(2)?;
            let status = status.and_then(|s| s.parse().ok());
            stats[at].add(row.get(1)?, status, row.get(3)?, row.get(4)?, row.get(5)?);
        }
    }
    for &(side, _) in slices {
        conn.execute(
            &format!("DELETE FROM {side}_stats WHERE depth = {depth}"),
            [],
        )?;
        let mut app = conn.appender(&format!("{side}_stats"))?;
        for (key, value) in stats[ix(side)].rows() {
            app.append_row(params![depth, key, value])?;
        }
        app.flush()?;
    }
    Ok(())
}

impl Db {
    pub(crate) fn summary(&self) -> Result<Summary, StoreError> {
        let failed =
            self.query_i64("SELECT coalesce(sum(folders_failed), 0)::BIGINT FROM rounds")? as u64;
        Ok(summary_from(
            &self.stat_map("src_stats")?,
            &self.stat_map("dst_stats")?,
            failed,
            &self.progress()?,
            self.pass()?,
            self.changes()?,
        ))
    }

    pub(super) fn stat_map(
        &self,
        table: &str,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT key, sum(value)::BIGINT FROM {table} GROUP BY key"
            ))
            .context("read statistics")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .context("read statistics")?;
        rows.collect::<Result<_, _>>().context("read statistics")
    }
}
