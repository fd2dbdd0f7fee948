//! Reports for `status`: failures by kind, per-round queue metrics, and the
//! estimate of what the copy still costs.

use super::Db;
use super::copy::LATEST_COPY;
use crate::error::Context;
use crate::schema::FOLDER;
use crate::{Estimate, IDLE_GAP_S, RECENT_ERRORS, RoundMetrics, StoreError, TaskError, TaskErrors};

impl Db {
    pub(crate) fn task_errors(&self) -> Result<TaskErrors, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, count(*) FROM task_errors GROUP BY kind ORDER BY kind")
            .context("count failures")?;
        let by_kind: std::collections::BTreeMap<String, u64> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
            .context("count failures")?
            .collect::<Result<_, _>>()
            .context("count failures")?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT side, phase, rel_path, operation, kind, message, attempt, \
                   strftime(recorded_at, '%Y-%m-%dT%H:%M:%SZ') \
                 FROM task_errors ORDER BY seq DESC LIMIT {RECENT_ERRORS}"
            ))
            .context("read failures")?;
        let recent = stmt
            .query_map([], |r| {
                let path: Option<Vec<u8>> = r.get(2)?;
                Ok(TaskError {
                    side: r.get(0)?,
                    phase: r.get(1)?,
                    path: treeshift_core::display_bytes(&path.unwrap_or_default()),
                    operation: r.get(3)?,
                    kind: r.get(4)?,
                    message: r.get(5)?,
                    attempt: r.get::<_, i32>(6)?.max(0) as u32,
                    at: r.get(7)?,
                })
            })
            .context("read failures")?
            .collect::<Result<_, _>>()
            .context("read failures")?;
        Ok(TaskErrors {
            total: by_kind.values().sum(),
            by_kind,
            recent,
        })
    }

    /// The latest metrics of each round (a resumed or re-swept round is
    /// measured again).
    pub(crate) fn queue_stats(&self) -> Result<Vec<RoundMetrics>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT side, depth, strftime(max(recorded_at), '%Y-%m-%dT%H:%M:%SZ'), \
                   arg_max(metrics, recorded_at) FROM queue_stats \
                 GROUP BY side, depth ORDER BY side DESC, depth",
            )
            .context("read queue statistics")?;
        let rows = stmt
            .query_map([], |r| {
                let metrics: String = r.get(3)?;
                Ok(RoundMetrics {
                    side: r.get(0)?,
                    depth: r.get::<_, i32>(1)?.max(0) as u32,
                    at: r.get(2)?,
                    metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                })
            })
            .context("read queue statistics")?;
        rows.collect::<Result<_, _>>()
            .context("read queue statistics")
    }

    /// What is left to copy, and how long it should take at the rate this
    /// migration's copy has had so far. Before an approval, what the
    /// default approval would copy (see `DepthStats::add`).
    pub(crate) fn estimate(&self, part_size: u64) -> Result<Estimate, StoreError> {
        let part = part_size.clamp(1, i64::MAX as u64);
        let approved = self.approval()?.is_some();
        let counts = if approved {
            self.query_counts(
                &format!(
                    "SELECT count(*) FILTER (WHERE p.kind <> {FOLDER}), \
                       coalesce(sum(p.size) FILTER (WHERE p.kind = 1), 0)::BIGINT, \
                       count(*) FILTER (WHERE p.kind = {FOLDER} AND p.depth > 0), \
                       count(*) FILTER (WHERE p.kind = 1 AND p.size > {part}), \
                       coalesce(sum(ceil(p.size / {part})) FILTER (WHERE p.kind = 1 AND p.size > {part}), 0)::BIGINT, \
                       count(*) FILTER (WHERE p.action IN ('replace', 'rename')), \
                       count(*) FILTER (WHERE p.kind = {FOLDER} AND p.depth = 0) \
                     FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
                     WHERE p.action <> 'skip' AND coalesce(c.st, 'pending') IN ('pending', 'copying')"
                ),
                "estimate the copy",
            )?
        } else {
            self.unapproved_counts(part)?
        };
        let [files, bytes, folders, large_files, parts, replaces, root] = counts;
        let estimate = Estimate {
            files,
            bytes,
            folders,
            large_files,
            parts,
            replaces,
            creates_root: root > 0,
            ..Estimate::default()
        };
        if !approved {
            // No copy runs before an approval: no rate to measure.
            return Ok(estimate);
        }
        // Batches of `copied` events share a timestamp: the gaps between
        // them, short ones only, are the time the copy ran.
        let (files, bytes, active_s): (i64, i64, f64) = self
            .row(
                &format!(
                    "WITH done AS (SELECT e.recorded_at AS t, count(*) AS files, \
                                          coalesce(sum(p.size), 0)::BIGINT AS bytes \
                                   FROM src_status_events e JOIN copy_plan p ON p.node_id = e.node_id \
                                   WHERE e.phase = 'copy' AND e.status = 'copied' AND p.kind = 1 \
                                   GROUP BY e.recorded_at), \
                          gaps AS (SELECT files, bytes, \
                                     epoch(t) - epoch(lag(t) OVER (ORDER BY t)) AS gap FROM done) \
                     SELECT coalesce(sum(files) FILTER (WHERE gap <= {IDLE_GAP_S}), 0)::BIGINT, \
                            coalesce(sum(bytes) FILTER (WHERE gap <= {IDLE_GAP_S}), 0)::BIGINT, \
                            coalesce(sum(gap) FILTER (WHERE gap <= {IDLE_GAP_S}), 0)::DOUBLE FROM gaps"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .context("measure the copy's throughput")?;
        Ok(estimate.with_rates(files.max(0) as u64, bytes.max(0) as u64, active_s))
    }

    /// What the default approval would copy: files, bytes, folders, large
    /// files, parts, replacements and the root, as [`Db::estimate`]
    /// takes them. The counts and bytes are the source's statistics, kept
    /// per sealed round (what the summary's "to copy" shows); the files
    /// past one part, the replacements and the root take the latest
    /// comparison of those nodes alone: a join of every node with its
    /// latest comparison spilled past the store's memory limit on a
    /// 1M-node tree, and made status wait for it (BENCHMARKS.md).
    fn unapproved_counts(&self, part: u64) -> Result<[u64; 7], StoreError> {
        // The statistics start below the root.
        let [files, bytes, folders] = self.query_counts(
            "SELECT coalesce(sum(value) FILTER (WHERE key = 'to_copy_files'), 0)::BIGINT, \
                    coalesce(sum(value) FILTER (WHERE key = 'to_copy_bytes'), 0)::BIGINT, \
                    coalesce(sum(value) FILTER (WHERE key = 'to_copy_folders'), 0)::BIGINT \
             FROM src_stats WHERE depth > 0",
            "estimate the plan",
        )?;
        // Latest comparison of the nodes `candidates` selects (ids), and
        // whether it says a copy (missing, or outdated in content).
        let latest = |candidates: &str| {
            format!(
                "SELECT node_id, arg_max(status, seq) AS st, \
                        arg_max(reason, seq) LIKE 'metadata:%' AS meta_only \
                 FROM src_status_events WHERE phase = 'compare' AND node_id IN ({candidates}) \
                 GROUP BY node_id"
            )
        };
        let copies =
            "(cs.st = 'missing' OR (cs.st = 'outdated' AND NOT coalesce(cs.meta_only, false)))";
        let [large_files, parts, replaces, root] = self.query_counts(
            &format!(
                "WITH big AS (SELECT id, size FROM src_nodes WHERE kind = 1 AND size > {part}), \
                      big_cs AS ({big}), \
                      old_cs AS ({old}), \
                      root_cs AS ({root}) \
                 SELECT (SELECT count(*) FROM big b JOIN big_cs cs ON cs.node_id = b.id WHERE {copies}), \
                        (SELECT coalesce(sum(ceil(b.size / {part})), 0)::BIGINT \
                           FROM big b JOIN big_cs cs ON cs.node_id = b.id WHERE {copies}), \
                        (SELECT count(*) FROM old_cs cs JOIN src_nodes p ON p.id = cs.node_id \
                          WHERE p.kind = 1 AND cs.st = 'outdated' AND NOT coalesce(cs.meta_only, false)), \
                        (SELECT count(*) FROM root_cs WHERE st = 'missing')",
                big = latest("SELECT id FROM big"),
                root = latest("SELECT id FROM src_nodes WHERE depth = 0"),
                old = latest(
                    "SELECT node_id FROM src_status_events WHERE phase = 'compare' AND status = 'outdated'"
                ),
            ),
            "estimate the plan's large files",
        )?;
        Ok([files, bytes, folders, large_files, parts, replaces, root])
    }
}
