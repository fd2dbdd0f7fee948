//! What a status shows, read from PostgreSQL: failures, each round's
//! metrics, what the copy still costs, and the workers holding folders.

use crate::PgStore;
use crate::copy::LATEST_COPY;
use crate::error::Context;
use crate::schema::latest_event;
use treeshift_core::{Side, display_bytes};
use treeshift_state::{
    Estimate, IDLE_GAP_S, MigrationSpec, RECENT_ERRORS, RoundMetrics, StatusParts, StoreError,
    TaskError, TaskErrors, WorkerLeases,
};

impl PgStore {
    /// Failures by kind and the latest ones.
    pub fn task_errors(&self) -> Result<TaskErrors, StoreError> {
        self.run(|client| {
            let by_kind = client
                .query(
                    "SELECT kind, count(*) FROM task_errors GROUP BY kind ORDER BY kind",
                    &[],
                )
                .context("count failures")?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
                .collect();
            let recent = client
                .query(
                    "SELECT side, phase, rel_path, operation, kind, message, attempt, \
                       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                     FROM task_errors ORDER BY seq DESC LIMIT $1",
                    &[&(RECENT_ERRORS as i64)],
                )
                .context("read failures")?
                .iter()
                .map(|r| TaskError {
                    side: r.get(0),
                    phase: r.get(1),
                    path: display_bytes(&r.get::<_, Option<Vec<u8>>>(2).unwrap_or_default()),
                    operation: r.get(3),
                    kind: r.get(4),
                    message: r.get(5),
                    attempt: r.get::<_, i32>(6).max(0) as u32,
                    at: r.get(7),
                })
                .collect();
            Ok(TaskErrors {
                total: 0,
                by_kind,
                recent,
            })
        })
        .map(|mut errors| {
            errors.total = errors.by_kind.values().sum();
            errors
        })
    }

    /// The latest metrics of every sealed round.
    pub fn queue_stats(&self) -> Result<Vec<RoundMetrics>, StoreError> {
        let rows = self.run(|client| {
            client
                .query(
                    "SELECT DISTINCT ON (side, depth) side, depth, \
                       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                       metrics FROM queue_stats \
                     ORDER BY side DESC, depth, recorded_at DESC",
                    &[],
                )
                .context("read the rounds' metrics")
        })?;
        Ok(rows
            .iter()
            .map(|r| RoundMetrics {
                side: r.get(0),
                depth: r.get::<_, i32>(1).max(0) as u32,
                at: r.get(2),
                metrics: serde_json::from_str(r.get(3)).unwrap_or_default(),
            })
            .collect())
    }

    /// What the copy still has to do (files larger than `part_size`
    /// counted apart, with their parts), at the rates this migration's
    /// copy has had so far. Before an approval, what the default approval
    /// would copy.
    pub fn estimate(&self, part_size: u64) -> Result<Estimate, StoreError> {
        let part = part_size.clamp(1, i64::MAX as u64) as i64;
        let query = if self.approval()?.is_some() {
            format!(
                "SELECT count(*) FILTER (WHERE p.kind <> 0), \
                   coalesce(sum(p.size) FILTER (WHERE p.kind = 1), 0)::bigint, \
                   count(*) FILTER (WHERE p.kind = 0 AND p.depth > 0), \
                   count(*) FILTER (WHERE p.kind = 1 AND p.size > $1), \
                   coalesce(sum(ceil(p.size::numeric / $1)) \
                     FILTER (WHERE p.kind = 1 AND p.size > $1), 0)::bigint, \
                   count(*) FILTER (WHERE p.action IN ('replace', 'rename')), \
                   count(*) FILTER (WHERE p.kind = 0 AND p.depth = 0) \
                 FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
                 WHERE p.action <> 'skip' AND coalesce(c.st, 'pending') IN ('pending', 'copying')"
            )
        } else {
            // The default approval's files, bytes and folders, from the
            // statistics (below the root); then, from the nodes that can
            // count, its large files and their parts, the files it
            // replaces, and whether the root is made. Only those nodes
            // have their latest comparison read: a node ever compared
            // outdated, not every node (a lookup each cost the status of
            // a 100k-node tree half a second).
            format!(
                "SELECT plan.*, nodes.* FROM \
                   (SELECT coalesce(sum(value) FILTER (WHERE key = 'to_copy_files'), 0)::bigint, \
                           coalesce(sum(value) FILTER (WHERE key = 'to_copy_bytes'), 0)::bigint, \
                           coalesce(sum(value) FILTER (WHERE key = 'to_copy_folders'), 0)::bigint \
                    FROM src_stats WHERE depth > 0) plan, \
                   (SELECT count(*) FILTER (WHERE kind = 1 AND size > $1 AND copies), \
                           coalesce(sum(ceil(size::numeric / $1)) \
                             FILTER (WHERE kind = 1 AND size > $1 AND copies), 0)::bigint, \
                           count(*) FILTER (WHERE kind = 1 AND status = 'outdated' AND NOT meta_only), \
                           count(*) FILTER (WHERE depth = 0 AND status = 'missing') \
                    FROM (SELECT *, (status = 'missing' OR (status = 'outdated' AND NOT meta_only)) \
                            AS copies \
                          FROM (SELECT n.kind, n.size, n.depth, e.status, \
                                  coalesce(e.reason LIKE 'metadata:%', false) AS meta_only \
                                FROM src_nodes n JOIN LATERAL {latest} e ON true \
                                WHERE (n.kind = 1 AND n.size > $1) OR n.depth = 0 \
                                   OR n.id IN (SELECT node_id FROM src_status_events \
                                               WHERE phase = 'compare' AND status = 'outdated')) cs \
                          WHERE (kind = 1 AND size > $1) OR depth = 0 OR status = 'outdated') c) nodes",
                latest = latest_event(Side::Src, "compare", "n.id"),
            )
        };
        // Copy events committed together share a timestamp: the gaps
        // between those batches, short ones only, are the time the copy ran.
        let rates = format!(
            "WITH done AS (SELECT e.recorded_at AS t, count(*) AS files, \
                                  coalesce(sum(p.size), 0)::bigint AS bytes \
                           FROM src_status_events e JOIN copy_plan p ON p.node_id = e.node_id \
                           WHERE e.phase = 'copy' AND e.status = 'copied' AND p.kind = 1 \
                           GROUP BY e.recorded_at), \
                  gaps AS (SELECT files, bytes, \
                             extract(epoch FROM t - lag(t) OVER (ORDER BY t))::float8 AS gap \
                           FROM done) \
             SELECT coalesce(sum(files) FILTER (WHERE gap <= {IDLE_GAP_S}), 0)::bigint, \
                    coalesce(sum(bytes) FILTER (WHERE gap <= {IDLE_GAP_S}), 0)::bigint, \
                    coalesce(sum(gap) FILTER (WHERE gap <= {IDLE_GAP_S}), 0)::float8 FROM gaps"
        );
        let (row, rates) = self.run(|client| {
            let row = client
                .query_one(&query, &[&part])
                .context("estimate the copy")?;
            let rates = client
                .query_one(&rates, &[])
                .context("measure the copy's throughput")?;
            Ok((row, rates))
        })?;
        let count = |i| row.get::<_, i64>(i).max(0) as u64;
        let estimate = Estimate {
            files: count(0),
            bytes: count(1),
            folders: count(2),
            large_files: count(3),
            parts: count(4),
            replaces: count(5),
            creates_root: count(6) > 0,
            ..Estimate::default()
        };
        Ok(estimate.with_rates(
            rates.get::<_, i64>(0).max(0) as u64,
            rates.get::<_, i64>(1).max(0) as u64,
            rates.get(2),
        ))
    }

    /// The processes holding folders, by side and round, with how long
    /// their latest lease there lasts.
    pub fn workers(&self) -> Result<Vec<WorkerLeases>, StoreError> {
        let rows = self.run(|client| {
            client
                .query(
                    "SELECT holder, side, depth, count(*), \
                       (extract(epoch FROM max(expires_at) - clock_timestamp()) * 1000)::bigint \
                     FROM (SELECT 'src' AS side, depth, holder, expires_at, done FROM src_leases \
                           UNION ALL SELECT 'dst', depth, holder, expires_at, done FROM dst_leases \
                           UNION ALL SELECT 'copy', 0, holder, expires_at, done FROM copy_todo) l \
                     WHERE holder IS NOT NULL AND NOT done \
                     GROUP BY holder, side, depth ORDER BY holder, side DESC, depth",
                    &[],
                )
                .context("read who holds folders")
        })?;
        Ok(rows
            .iter()
            .map(|r| WorkerLeases {
                holder: r.get(0),
                side: r.get(1),
                round: r.get::<_, i32>(2).max(0) as u32,
                held: r.get::<_, i64>(3).max(0) as u64,
                expires_in_ms: r.get(4),
            })
            .collect())
    }

    /// Everything a status shows.
    pub fn status_parts(
        &self,
        part_size: fn(&MigrationSpec) -> u64,
    ) -> Result<StatusParts, StoreError> {
        let migration = self.migration()?;
        let approval = self.approval()?;
        let copy = match approval {
            Some(_) => Some(self.copy_summary()?),
            None => None,
        };
        Ok(StatusParts {
            phase: self.phase()?,
            summary: self.summary()?,
            estimate: self.estimate(part_size(&migration))?,
            errors: self.task_errors()?,
            rounds: self.queue_stats()?,
            workers: self.workers()?,
            migration,
            approval,
            copy,
            verify: self.verify_summary()?,
        })
    }
}
