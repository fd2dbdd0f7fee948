//! Reports for `status`: failures by kind, per-round queue metrics, and the
//! estimate of what the copy still costs.

use super::Writer;
use super::copy::LATEST_COPY;
use crate::error::Context;
use crate::schema::FOLDER;
use crate::{Estimate, RoundMetrics, StoreError, TaskError, TaskErrors};

/// A pause between two copy batches longer than this is time the copy was
/// not running (stopped, resumed later), not slowness: left out of rates.
const IDLE_GAP_S: f64 = 30.0;

/// The most recent failures shown.
const RECENT_ERRORS: usize = 20;

impl Writer {
    pub(crate) fn task_errors(&mut self) -> Result<TaskErrors, StoreError> {
        self.flush()?;
        let mut stmt = self
            .conn
            .prepare("SELECT kind, count(*) FROM task_errors GROUP BY kind ORDER BY kind")
            .context("count failures")?;
        let by_kind: std::collections::BTreeMap<String, u64> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
            .context("count failures")?
            .collect::<Result<_, _>>()
            .context("count failures")?;
        let mut stmt = self
            .conn
            .prepare(&format!(
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
            .prepare(
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
    pub(crate) fn estimate(&mut self, part_size: u64) -> Result<Estimate, StoreError> {
        let part = part_size.clamp(1, i64::MAX as u64);
        // Files past one part, their parts, replacements, and the root, of
        // the rows `p` (kind, size, depth, and `replaces` saying which
        // replace).
        let shape = |replaces: &str| {
            format!(
                "count(*) FILTER (WHERE p.kind = 1 AND p.size > {part}), \
                 coalesce(sum(ceil(p.size / {part})) FILTER (WHERE p.kind = 1 AND p.size > {part}), 0)::BIGINT, \
                 count(*) FILTER (WHERE {replaces}), \
                 count(*) FILTER (WHERE p.kind = {FOLDER} AND p.depth = 0)"
            )
        };
        let approved = self.approval()?.is_some();
        let (query, what) = if approved {
            (
                format!(
                    "SELECT count(*) FILTER (WHERE p.kind <> {FOLDER}), \
                       coalesce(sum(p.size) FILTER (WHERE p.kind = 1), 0)::BIGINT, \
                       count(*) FILTER (WHERE p.kind = {FOLDER} AND p.depth > 0), {} \
                     FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
                     WHERE p.action <> 'skip' AND coalesce(c.st, 'pending') IN ('pending', 'copying')",
                    shape("p.action IN ('replace', 'rename')")
                ),
                "estimate the copy",
            )
        } else {
            (
                format!(
                    "WITH cs AS (SELECT node_id, arg_max(status, seq) AS st, \
                                   arg_max(reason, seq) LIKE 'metadata:%' AS meta_only \
                                 FROM src_status_events WHERE phase = 'compare' GROUP BY node_id) \
                     SELECT count(*) FILTER (WHERE p.kind = 1), \
                       coalesce(sum(p.size) FILTER (WHERE p.kind = 1), 0)::BIGINT, \
                       count(*) FILTER (WHERE p.kind = {FOLDER} AND p.depth > 0 AND cs.st = 'missing'), {} \
                     FROM src_nodes p JOIN cs ON cs.node_id = p.id \
                     WHERE (cs.st = 'missing' AND p.kind IN (1, {FOLDER})) \
                        OR (cs.st = 'outdated' AND p.kind = 1 AND NOT coalesce(cs.meta_only, false))",
                    shape("cs.st = 'outdated'")
                ),
                "estimate the plan",
            )
        };
        let [files, bytes, folders, large_files, parts, replaces, root] =
            self.query_counts(&query, what)?;
        let mut estimate = Estimate {
            files,
            bytes,
            folders,
            large_files,
            parts,
            replaces,
            creates_root: root > 0,
            ..Estimate::default()
        };
        // Batches of `copied` events share a timestamp: the gaps between
        // them, short ones only, are the time the copy ran.
        let (files, bytes, active_s): (i64, i64, f64) = self
            .conn
            .query_row(
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
        if files > 0 && active_s > 0.0 {
            let files_per_s = files as f64 / active_s;
            let bytes_per_s = bytes as f64 / active_s;
            estimate.files_per_s = Some(files_per_s);
            estimate.bytes_per_s = Some(bytes_per_s);
            let by_files = estimate.files as f64 / files_per_s;
            let by_bytes = if bytes_per_s > 0.0 {
                estimate.bytes as f64 / bytes_per_s
            } else {
                0.0
            };
            estimate.eta_s = Some(by_files.max(by_bytes));
        }
        Ok(estimate)
    }
}
