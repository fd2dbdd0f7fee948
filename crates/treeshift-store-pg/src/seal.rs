//! Seals on PostgreSQL: what no listing compares (the children of a
//! folder missing on the destination), each round's statistics
//! recomputed from the events (replaced, never incremented, so a seal
//! run twice or by two processes counts once), the round's marker, and
//! whether the side is done; and where the rounds stand.

use crate::PgStore;
use crate::error::Context;
use crate::pass::{read_changes, read_pass, record_changes};
use crate::schema::{IN_STEP, LEFT_OUT, latest_event};
use crate::settings::record_phase;
use postgres::{GenericClient, Transaction};
use std::collections::HashMap;
use treeshift_core::{Phase, Side, Status, Summary};
use treeshift_state::{DepthStats, RoundProgress, StoreError, summary_from};

/// Processes sealing a round take turns on this lock (and a retry sweep
/// reopening rounds takes it too).
pub(crate) const SEAL_LOCK: i64 = 7365730;

impl PgStore {
    /// Seals round `depth` of `side`, in one transaction: for a
    /// destination round, marks missing the source children of folders
    /// missing on the destination (or a file there); recomputes the
    /// statistics of the nodes one level down (both sides' after a
    /// destination round); records the round and its `metrics`. Returns
    /// true if the side has nothing left to list.
    pub fn seal_round(
        &self,
        side: Side,
        depth: u32,
        metrics: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let (n, n1) = (depth as i32, depth as i32 + 1);
        let metrics = metrics.to_string();
        self.run(|client| {
            let mut tx = client.transaction().context("begin a seal")?;
            // Every process that listed a round seals it: they take
            // turns, and the first seals it for all. A round sealed is
            // complete (it is sealed once all its folders are done, and
            // in one transaction), so the others only read whether the
            // side is done: counting it again for each process cost
            // each a scan of the round's nodes (docs/BENCHMARKS.md).
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
                .context("wait for another process sealing")?;
            let sealed = tx
                .query_opt(
                    "SELECT EXISTS (SELECT 1 FROM meta WHERE key = $3) \
                     FROM rounds WHERE side = $1 AND depth = $2",
                    &[&side.as_str(), &n, &format!("{side}_done")],
                )
                .context("look for the round's seal")?;
            if let Some(row) = sealed {
                return Ok(row.get(0));
            }
            let sides: &[Side] = match side {
                Side::Src => &[Side::Src],
                Side::Dst => {
                    mark_missing_children(&mut tx, n)?;
                    &[Side::Src, Side::Dst]
                }
            };
            for &s in sides {
                replace_depth_stats(&mut tx, s, n1)?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO rounds \
                     SELECT $1, $2, now(), count(*) FILTER (WHERE x.status = 'listed'), \
                            count(*) FILTER (WHERE x.status = 'failed') \
                     FROM {side}_leases l, LATERAL {listing} x \
                     WHERE l.depth = $2 \
                     ON CONFLICT (side, depth) DO UPDATE SET sealed_at = excluded.sealed_at, \
                       folders_listed = excluded.folders_listed, \
                       folders_failed = excluded.folders_failed",
                    listing = latest_event(side, "list", "l.node_id"),
                ),
                &[&side.as_str(), &n],
            )
            .context("record the round")?;
            tx.execute(
                "INSERT INTO queue_stats VALUES ($1, $2, now(), $3)",
                &[&side.as_str(), &n, &metrics],
            )
            .context("record the round's metrics")?;
            let done = side_done_after(&mut tx, side, n1)?;
            if done {
                tx.execute(
                    "INSERT INTO meta VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&format!("{side}_done"), &n.to_string()],
                )
                .context("record that the side is done")?;
                crate::browse::forget_folder_sums(&mut tx)?;
                match side {
                    Side::Src => record_changes(&mut tx)?,
                    Side::Dst => record_phase(&mut tx, Phase::Discovered)?,
                }
            }
            tx.commit().context("seal a round")?;
            if done && side == Side::Dst {
                analyze_discovery(client)?;
            }
            Ok(done)
        })
    }

    /// Where the rounds stand.
    pub fn progress(&self) -> Result<RoundProgress, StoreError> {
        self.run(read_progress)
    }

    /// The discovery summary, from the sealed statistics.
    pub fn summary(&self) -> Result<Summary, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("begin reading the summary")?;
            let src = stat_map(&mut tx, Side::Src)?;
            let dst = stat_map(&mut tx, Side::Dst)?;
            let failed: i64 = tx
                .query_one(
                    "SELECT coalesce(sum(folders_failed), 0)::bigint FROM rounds",
                    &[],
                )
                .context("count failed folders")?
                .get(0);
            let progress = read_progress(&mut tx)?;
            let pass = read_pass(&mut tx)?;
            let changes = read_changes(&mut tx)?;
            tx.commit().context("read the summary")?;
            Ok(summary_from(
                &src,
                &dst,
                failed.max(0) as u64,
                &progress,
                pass,
                changes,
            ))
        })
    }
}

pub(crate) fn read_progress(client: &mut impl GenericClient) -> Result<RoundProgress, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT max(depth) FROM rounds WHERE side = 'src'), \
                    EXISTS (SELECT 1 FROM meta WHERE key = 'src_done'), \
                    (SELECT max(depth) FROM rounds WHERE side = 'dst'), \
                    EXISTS (SELECT 1 FROM meta WHERE key = 'dst_done'), \
                    EXISTS (SELECT 1 FROM src_nodes WHERE depth = 0)",
            &[],
        )
        .context("read where the rounds stand")?;
    let depth = |i| row.get::<_, Option<i32>>(i).map(|d| d as u32);
    Ok(RoundProgress {
        src_sealed: depth(0),
        src_done: row.get(1),
        dst_sealed: depth(2),
        dst_done: row.get(3),
        roots_recorded: row.get(4),
    })
}

/// Has PostgreSQL gather the statistics of discovery's tables, once a
/// discovery has ended: the review queries that follow are planned from
/// them. Autovacuum gathers them too, but minutes later, and until then
/// the planner misjudged the tables (a review page of a 100k-node tree
/// took six times as long, docs/BENCHMARKS.md).
fn analyze_discovery(client: &mut impl GenericClient) -> Result<(), StoreError> {
    client
        .batch_execute("ANALYZE src_nodes, dst_nodes, src_status_events, dst_status_events")
        .context("gather the statistics of the discovery's tables")
}

/// Marks missing, as not compared yet, the source children (at `n` + 1)
/// of the folders at `n` whose own comparison found them missing on the
/// destination, or something else than a folder there: no destination
/// listing pairs with them.
///
/// The folders are found first, on their own: a round's tables are
/// rarely analyzed yet when it is sealed, and the planner, taking them
/// for a few rows, looked up a folder's comparison once per child (five
/// times the time on a round of 400k, docs/BENCHMARKS.md).
fn mark_missing_children(tx: &mut Transaction<'_>, n: i32) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "WITH gone AS MATERIALIZED ( \
               SELECT p.id FROM src_nodes p \
               JOIN LATERAL {parent} pc ON pc.status IN ('missing', 'conflict') \
               WHERE p.depth = $1 AND p.kind = 0) \
             INSERT INTO src_status_events (node_id, depth, phase, status, reason, attempt) \
             SELECT c.id, $1 + 1, 'compare', 'missing', 'parent folder missing on dst', 1 \
             FROM gone JOIN src_nodes c ON c.parent_id = gone.id \
             WHERE NOT EXISTS \
               (SELECT 1 FROM src_status_events e WHERE e.node_id = c.id AND e.phase = 'compare')",
            parent = latest_event(Side::Src, "compare", "p.id"),
        ),
        &[&n],
    )
    .context("mark the children of missing folders")?;
    Ok(())
}

/// Recomputes `side`'s statistics at `depth` from its nodes and their
/// latest comparison, replacing the old rows. A round's nodes were
/// recorded together, so their ids span a short range: the comparisons
/// are read in one pass over that range of the events' index (half the
/// time of a lookup per node on a round of 400k, docs/BENCHMARKS.md).
fn replace_depth_stats(tx: &mut Transaction<'_>, side: Side, depth: i32) -> Result<(), StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT n.kind, e.status, coalesce(e.reason LIKE 'metadata:%', false), \
                        count(*), coalesce(sum(n.size), 0)::bigint \
                 FROM {side}_nodes n LEFT JOIN ( \
                   SELECT DISTINCT ON (ev.node_id) ev.node_id, ev.status, ev.reason \
                   FROM {side}_status_events ev, \
                     (SELECT min(id) AS lo, max(id) AS hi FROM {side}_nodes WHERE depth = $1) r \
                   WHERE ev.node_id BETWEEN r.lo AND r.hi AND ev.phase = 'compare' \
                   ORDER BY ev.node_id, ev.seq DESC) e ON e.node_id = n.id \
                 WHERE n.depth = $1 GROUP BY 1, 2, 3"
            ),
            &[&depth],
        )
        .context("count a round's nodes")?;
    let mut stats = DepthStats::default();
    for row in &rows {
        let status: Option<Status> = row.get::<_, Option<String>>(1).and_then(|s| s.parse().ok());
        stats.add(
            row.get::<_, i16>(0) as u8,
            status,
            row.get(2),
            row.get(3),
            row.get(4),
        );
    }
    tx.execute(
        &format!("DELETE FROM {side}_stats WHERE depth = $1"),
        &[&depth],
    )
    .context("replace a round's statistics")?;
    for (key, value) in stats.rows() {
        tx.execute(
            &format!("INSERT INTO {side}_stats VALUES ($1, $2, $3)"),
            &[&depth, &key, &value],
        )
        .context("record a round's statistics")?;
    }
    Ok(())
}

/// Whether `side` has nothing left to list below depth `n1` - 1, inside
/// a seal.
fn side_done_after(tx: &mut Transaction<'_>, side: Side, n1: i32) -> Result<bool, StoreError> {
    let query = match side {
        Side::Src => format!(
            "SELECT NOT EXISTS (SELECT 1 FROM src_nodes n WHERE n.depth = $1 AND n.kind = 0 \
               AND NOT EXISTS (SELECT 1 FROM src_status_events e WHERE e.node_id = n.id \
                               AND e.phase = 'compare' AND e.status IN {LEFT_OUT}))"
        ),
        // The destination is done once the source is, no source node lies
        // deeper than the depth just compared, and no destination folder
        // there waits to be listed.
        Side::Dst => format!(
            "SELECT EXISTS (SELECT 1 FROM meta WHERE key = 'src_done') \
               AND NOT EXISTS (SELECT 1 FROM src_nodes WHERE depth > $1) \
               AND NOT EXISTS (SELECT 1 FROM dst_nodes d JOIN dst_status_events e ON e.node_id = d.id \
                               WHERE d.depth = $1 AND d.kind = 0 AND e.phase = 'compare' \
                                 AND e.status IN {IN_STEP})"
        ),
    };
    Ok(tx
        .query_one(&query, &[&n1])
        .context("check whether the side is done")?
        .get(0))
}

/// `side`'s statistics summed over depths, by key.
fn stat_map(tx: &mut Transaction<'_>, side: Side) -> Result<HashMap<String, i64>, StoreError> {
    let rows = tx
        .query(
            &format!("SELECT key, sum(value)::bigint FROM {side}_stats GROUP BY key"),
            &[],
        )
        .context("read statistics")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
