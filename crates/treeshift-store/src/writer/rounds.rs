//! Rounds: recording the roots, the frontier of a round and its keyset
//! pulls, listed and failed folders, seals, and where each side stands.

use super::*;

impl Writer {
    pub(crate) fn record_roots(
        &mut self,
        src_root: &Entry,
        dst_root: Option<&Entry>,
    ) -> Result<(), StoreError> {
        if exists(&self.conn, "SELECT 1 FROM src_nodes WHERE depth = 0")
            .context("look for the recorded roots")?
        {
            return Ok(());
        }
        let (src_id, dst_id) = (self.next_id, self.next_id + 1);
        self.next_id += 2;
        let (s1, s2) = (self.take_seq(), self.take_seq());
        let previous = has_previous_pass(&self.conn).context("look for the previous pass")?;
        let verdict = Comparison {
            previous: if previous { "pv" } else { "" },
            written: false,
        };
        let pv_join = if previous {
            "LEFT JOIN previous_src_nodes pv ON pv.depth = 0"
        } else {
            ""
        };
        let insert = "VALUES (?, NULL, 0, 0, 0, ?, ''::BLOB, ?, ?, ?, ?, NULL, NULL, NULL, NULL)";
        self.in_transaction("record the roots", |conn| {
            let insert_root = |table: &str, id: i64, e: &Entry| {
                let m = e.meta;
                conn.execute(
                    &format!("INSERT INTO {table} {insert}"),
                    params![id, e.mtime_ns, m.mode, m.uid, m.gid, m.xattrs],
                )
            };
            insert_root("src_nodes", src_id, src_root)?;
            let Some(dst_root) = dst_root else {
                conn.execute(
                    "INSERT INTO src_status_events VALUES \
                     (?, ?, 0, 'compare', 'missing', 'destination root does not exist', 1, now())",
                    params![s1, src_id],
                )?;
                return mark_discovering(conn);
            };
            insert_root("dst_nodes", dst_id, dst_root)?;
            // Both roots take the pair's status, as every other pair: the
            // comparison is planned once (its planning is most of its cost).
            let (status, reason): (String, Option<String>) = conn.query_row(
                &format!(
                    "SELECT {status}, {reason} \
                     FROM src_nodes c JOIN dst_nodes d ON d.depth = 0 {pv_join} WHERE c.depth = 0",
                    status = verdict.status(),
                    reason = verdict.reason(),
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for (table, seq, id) in [("src", s1, src_id), ("dst", s2, dst_id)] {
                conn.execute(
                    &format!(
                        "INSERT INTO {table}_status_events VALUES (?, ?, 0, 'compare', ?, ?, 1, now())"
                    ),
                    params![seq, id, status, reason],
                )?;
            }
            mark_discovering(conn)
        })
    }

    /// Deletes the children (and their events) of one folder.
    pub(crate) fn discard_children(
        &mut self,
        side: Side,
        folder: &FolderTask,
    ) -> Result<(), StoreError> {
        self.flush()?;
        let (d, id) = (folder.depth + 1, folder.id);
        self.in_transaction("discard a partial listing", |conn| {
            conn.execute(
                &format!(
                    "DELETE FROM {side}_status_events WHERE depth = {d} AND node_id IN \
                     (SELECT id FROM {side}_nodes WHERE depth = {d} AND parent_id = {id})"
                ),
                [],
            )?;
            conn.execute(
                &format!("DELETE FROM {side}_nodes WHERE depth = {d} AND parent_id = {id}"),
                [],
            )?;
            conn.execute(
                &format!("DELETE FROM list_positions WHERE side = '{side}' AND node_id = {id}"),
                [],
            )?;
            Ok(())
        })
    }

    pub(crate) fn folder_failed(
        &mut self,
        side: Side,
        folder: &FolderTask,
        failure: &Failure,
    ) -> Result<(), StoreError> {
        self.discard_children(side, folder)?;
        let seq = self.take_seq();
        self.buffer_event(
            side,
            EventRow {
                seq,
                node_id: folder.id,
                depth: folder.depth,
                phase: "list",
                status: "failed",
                reason: Some(format!("{}: {}", failure.kind, failure.message)),
                attempt: failure.attempts,
            },
        );
        let seq = self.take_seq();
        self.buf.errors.push(ErrorRow {
            phase: "discovery",
            seq,
            side,
            node_id: folder.id,
            rel_path: folder.path.as_bytes().to_vec(),
            failure: failure.clone(),
        });
        Ok(())
    }

    pub(crate) fn begin_round(&mut self, side: Side, depth: u32) -> Result<u64, StoreError> {
        let (n, n1) = (depth, depth + 1);
        // The frontier is read from the file: what a run stopped on request
        // (not killed) listed of this round may still be buffered.
        self.flush()?;
        // Nodes one level down exist at the start of a round only if a
        // listing was cut short (a crash): drop the children of every folder
        // of this round that has no `list` event and no recorded position;
        // it is listed again. One with a position keeps the children up to
        // it (committed with it) and lists on from there.
        let looked = &mut self.cut_short_checked[ix(side)];
        let look = *looked < 2;
        *looked = looked.saturating_add(1);
        if look
            && exists(
                &self.conn,
                &format!("SELECT 1 FROM {side}_nodes WHERE depth = {n1}"),
            )
            .context("look for a listing cut short")?
        {
            self.flush()?;
            let unlisted = format!(
                "SELECT p.id FROM {side}_nodes p WHERE p.depth = {n} AND p.kind = {FOLDER} \
                 AND p.id NOT IN (SELECT node_id FROM {side}_status_events \
                                  WHERE depth = {n} AND phase = 'list' AND status = 'listed') \
                 AND p.id NOT IN (SELECT node_id FROM list_positions WHERE side = '{side}')"
            );
            self.in_transaction("drop a cut-short listing", |conn| {
                conn.execute(
                    &format!(
                        "DELETE FROM {side}_status_events WHERE depth = {n1} AND node_id IN \
                         (SELECT id FROM {side}_nodes WHERE depth = {n1} AND parent_id IN ({unlisted}))"
                    ),
                    [],
                )?;
                conn.execute(
                    &format!("DELETE FROM {side}_nodes WHERE depth = {n1} AND parent_id IN ({unlisted})"),
                    [],
                )
            })?;
        }
        // With `--dst-case-insensitive`, among the round's siblings whose
        // names differ only in letter case, all but the first are excluded
        // before anything is listed under them (and before the seal of
        // the round before counts them; see `seal_round`).
        if side == Side::Src && depth > 0 && self.dst_case_insensitive()? {
            let base = self.next_seq;
            let used = self.in_transaction("exclude names that clash by case", |conn| {
                exclude_case_clashes(conn, depth, base)
            })?;
            self.next_seq = base + used;
        }
        let frontier = match side {
            Side::Src => format!(
                "CREATE OR REPLACE TEMP TABLE frontier_src AS \
                 WITH {ll}, {pos} \
                 SELECT n.id, n.rel_path, coalesce(ll.attempt, 0) AS attempt, pos.after FROM src_nodes n \
                 LEFT JOIN ll ON ll.node_id = n.id LEFT JOIN pos ON pos.node_id = n.id \
                 WHERE n.depth = {n} AND n.kind = {FOLDER} AND (ll.st IS NULL OR ll.st = 'requeued') \
                   AND n.id NOT IN (SELECT node_id FROM src_status_events WHERE depth = {n} \
                                    AND phase = 'compare' AND status IN {LEFT_OUT}) \
                 ORDER BY n.id",
                ll = latest_listing(side, Some(depth)),
                pos = positions(side),
            ),
            // A dst folder is listed only when it pairs with a src folder
            // (its comparison found them in step, metadata aside) that was itself listed: a failed
            // src listing never turns dst children into extras.
            Side::Dst => format!(
                "CREATE OR REPLACE TEMP TABLE frontier_dst AS \
                 WITH {ll}, {pos}, \
                 cmp AS (SELECT node_id, arg_max(status, seq) AS st FROM dst_status_events \
                              WHERE depth = {n} AND phase = 'compare' GROUP BY node_id), \
                 src_listed AS (SELECT s.rel_path FROM src_nodes s WHERE s.depth = {n} AND s.kind = {FOLDER} \
                              AND s.id IN (SELECT node_id FROM src_status_events \
                                           WHERE depth = {n} AND phase = 'list' AND status = 'listed')) \
                 SELECT d.id, d.rel_path, coalesce(ll.attempt, 0) AS attempt, pos.after \
                 FROM dst_nodes d JOIN cmp ON cmp.node_id = d.id AND cmp.st IN {IN_STEP} \
                 LEFT JOIN ll ON ll.node_id = d.id LEFT JOIN pos ON pos.node_id = d.id \
                 WHERE d.depth = {n} AND d.kind = {FOLDER} AND (ll.st IS NULL OR ll.st = 'requeued') \
                   AND d.rel_path IN (SELECT rel_path FROM src_listed) \
                 ORDER BY d.id",
                ll = latest_listing(side, Some(depth)),
                pos = positions(side),
            ),
        };
        // A temp table: nothing goes to the file, so no transaction needed.
        let pending = self.outside_transaction("prepare the round's frontier", |conn| {
            conn.execute(&frontier, [])
        })?;
        Ok(pending as u64)
    }

    pub(crate) fn pull(
        &mut self,
        side: Side,
        after: i64,
        limit: usize,
    ) -> Result<Vec<FolderTask>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT f.id, f.rel_path, f.attempt, f.after FROM frontier_{side} f WHERE f.id > ? ORDER BY f.id LIMIT ?"
            ))
            .context("prepare a pull")?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                let path: Vec<u8> = r.get(1)?;
                let after: Option<Vec<u8>> = r.get(3)?;
                Ok((r.get::<_, i64>(0)?, path, r.get::<_, i32>(2)?, after))
            })
            .context("pull pending folders")?;
        let mut out = Vec::with_capacity(limit);
        for row in rows {
            let (id, path, attempts, resume_after) = row.context("read a pending folder")?;
            let path = RelPath::from_bytes(path);
            out.push(FolderTask {
                id,
                depth: path.depth() as u32,
                path,
                attempts: attempts.max(0) as u32,
                resume_after,
                epoch: 0,
            });
        }
        Ok(out)
    }

    pub(crate) fn seal_round(
        &mut self,
        side: Side,
        depth: u32,
        metrics: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        // The round's last appends commit first, as any batch does: rows
        // not yet committed stay in memory for the whole transaction, and
        // the comparison needs that memory for its hash tables.
        let started = Instant::now();
        self.flush()?;
        let appended = started.elapsed();
        tracing::debug!(%side, depth, ms = appended.as_millis() as u64, "seal: appended");
        let slices = match side {
            Side::Dst => {
                let [src, dst] = self.compare_round(depth)?;
                tracing::debug!(ms = started.elapsed().as_millis() as u64, "seal: compared");
                vec![(Side::Src, src), (Side::Dst, dst)]
            }
            Side::Src => {
                let slice = self.seal_slice;
                let src = self.outside_transaction("seal a round", |conn| {
                    id_slices(conn, Side::Src, depth + 1, slice)
                })?;
                vec![(Side::Src, src)]
            }
        };
        let metrics = metrics.to_string();
        // One transaction: the round's statistics and its marker land
        // together or not at all. (The comparison commits slice by slice
        // before it: a seal run again after a crash finds what is compared
        // and compares the rest.) A source round's seal comes after the
        // next round began (`begin_round` excluded the names that clash
        // by case among the children counted here).
        let done = self.in_transaction("seal a round", |conn| {
            replace_depth_stats(conn, &slices, depth + 1)?;
            tracing::debug!(
                %side,
                depth,
                append_ms = appended.as_millis() as u64,
                ms = started.elapsed().as_millis() as u64,
                "seal: statistics written"
            );
            // Delete + insert: cheaper than an upsert on a keyed table.
            conn.execute(&format!("DELETE FROM rounds WHERE side = '{side}' AND depth = {depth}"), [])?;
            conn.execute(
                &format!(
                    "INSERT INTO rounds SELECT '{side}', {depth}, now(), \
                     count(*) FILTER (WHERE st = 'listed'), count(*) FILTER (WHERE st = 'failed') \
                     FROM (SELECT arg_max(status, seq) AS st FROM {side}_status_events \
                           WHERE depth = {depth} AND phase = 'list' GROUP BY node_id)"
                ),
                [],
            )?;
            conn.execute(
                "INSERT INTO queue_stats VALUES (?, ?, now(), ?)",
                params![side.as_str(), depth, metrics],
            )?;
            tracing::debug!(%side, depth, ms = started.elapsed().as_millis() as u64, "seal: round recorded");
            let done = side_done_after(conn, side, depth)?;
            tracing::debug!(%side, depth, ms = started.elapsed().as_millis() as u64, "seal: done checked");
            if done && side == Side::Src {
                pass::record_changes(conn)?;
            }
            if done {
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    params![format!("{side}_done"), depth.to_string()],
                )?;
                if side == Side::Dst {
                    set_phase(conn, Phase::Discovered)?;
                }
            }
            Ok(done)
        })?;
        tracing::debug!(%side, depth, ms = started.elapsed().as_millis() as u64, "seal: committed");
        Ok(done)
    }
}

impl Db {
    pub(crate) fn progress(&self) -> Result<RoundProgress, StoreError> {
        // One statement: each costs more to plan than these lookups take.
        let (src_sealed, src_done, dst_sealed, dst_done, roots_recorded) = self
            .row(
                "SELECT (SELECT max(depth) FROM rounds WHERE side = 'src'), \
                        EXISTS (SELECT 1 FROM meta WHERE key = 'src_done'), \
                        (SELECT max(depth) FROM rounds WHERE side = 'dst'), \
                        EXISTS (SELECT 1 FROM meta WHERE key = 'dst_done'), \
                        EXISTS (SELECT 1 FROM src_nodes WHERE depth = 0)",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<u32>>(0)?,
                        r.get(1)?,
                        r.get::<_, Option<u32>>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                },
            )
            .context("read where the rounds stand")?;
        Ok(RoundProgress {
            src_sealed,
            src_done,
            dst_sealed,
            dst_done,
            roots_recorded,
        })
    }
}

/// A CTE `ll`: the latest `list` event (status, attempt) of each folder of
/// `side` at `depth` (or at every depth). A folder is pending when it has
/// none, or when a retry sweep re-queued it after it failed.
pub(super) fn latest_listing(side: Side, depth: Option<u32>) -> String {
    let at_depth = depth.map_or(String::new(), |d| format!("depth = {d} AND "));
    format!(
        "ll AS (SELECT node_id, arg_max(status, seq) AS st, arg_max(attempt, seq) AS attempt \
         FROM {side}_status_events WHERE {at_depth}phase = 'list' GROUP BY node_id)"
    )
}

/// Decides, inside a seal, whether `side` has nothing left after `depth`.
pub(super) fn side_done_after(
    conn: &Connection,
    side: Side,
    depth: u32,
) -> Result<bool, duckdb::Error> {
    let n1 = depth + 1;
    match side {
        Side::Src => Ok(!exists(
            conn,
            &format!(
                "SELECT 1 FROM src_nodes WHERE depth = {n1} AND kind = {FOLDER} AND id NOT IN \
                 (SELECT node_id FROM src_status_events WHERE depth = {n1} AND phase = 'compare' AND status IN {LEFT_OUT})"
            ),
        )?),
        // The dst is done once the src is done, no src node lies deeper than
        // the depth just compared, and no dst folder there waits to be listed.
        // Checked in that order, each only if the one before held: most
        // rounds end at the first, cheap check; only the last joins.
        Side::Dst => Ok(exists(conn, "SELECT 1 FROM meta WHERE key = 'src_done'")?
            && !exists(conn, &format!("SELECT 1 FROM src_nodes WHERE depth > {n1}"))?
            && !exists(
                conn,
                &format!(
                    "SELECT 1 FROM dst_nodes d JOIN dst_status_events e ON e.node_id = d.id \
                     WHERE d.depth = {n1} AND d.kind = {FOLDER} AND e.depth = {n1} \
                     AND e.phase = 'compare' AND e.status IN {IN_STEP}"
                ),
            )?),
    }
}

pub(super) fn mark_discovering(conn: &Connection) -> Result<(), duckdb::Error> {
    set_phase(conn, Phase::Discovering)
}

/// Records the phase, in the caller's transaction.
pub(super) fn set_phase(conn: &Connection, phase: Phase) -> Result<(), duckdb::Error> {
    conn.execute(
        "UPDATE migrations SET phase = ?, updated_at = now() WHERE id = 1",
        params![phase.as_str()],
    )?;
    Ok(())
}

/// A CTE `pos`: the last recorded listing position of each of `side`'s
/// folders whose listing was cut short.
fn positions(side: Side) -> String {
    format!(
        "pos AS (SELECT node_id, arg_max(after, seq) AS after FROM list_positions \
         WHERE side = '{side}' GROUP BY node_id)"
    )
}
