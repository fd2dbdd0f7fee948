//! Statistics per depth, recomputed at each seal, and the summary built
//! from them.

use super::*;

/// The statistics of one side at one depth, as stored in `*_stats`.
#[derive(Default)]
pub(super) struct DepthStats {
    folders: i64,
    files: i64,
    symlinks: i64,
    special: i64,
    bytes: i64,
    by_status: [i64; Status::ALL.len()],
    extra_bytes: i64,
    to_copy_files: i64,
    to_copy_folders: i64,
    to_copy_bytes: i64,
    to_copy_metadata: i64,
    left_alone_items: i64,
    left_alone_bytes: i64,
}

impl DepthStats {
    /// Adds `count` nodes of kind code `kind` and comparison `status`
    /// (`None`: not compared yet) holding `bytes`; `meta_only`: the
    /// difference is in metadata alone.
    fn add(&mut self, kind: u8, status: Option<Status>, meta_only: bool, count: i64, bytes: i64) {
        let kind = Kind::from_code(kind);
        match kind {
            Some(Kind::Folder) => self.folders += count,
            Some(Kind::File) => {
                self.files += count;
                self.bytes += bytes;
            }
            Some(Kind::Symlink) => self.symlinks += count,
            Some(Kind::Special) => self.special += count,
            None => {}
        }
        let Some(status) = status else { return };
        if let Some(i) = Status::ALL.iter().position(|s| *s == status) {
            self.by_status[i] += count;
        }
        // What the default approval does: creates what is missing, updates
        // what is outdated, leaves what differs (or conflicts) alone.
        match (status, kind) {
            (Status::Extra, Some(Kind::File)) => self.extra_bytes += bytes,
            (Status::Outdated, _) if meta_only => self.to_copy_metadata += count,
            (Status::Missing | Status::Outdated, Some(Kind::File)) => {
                self.to_copy_files += count;
                self.to_copy_bytes += bytes;
            }
            (Status::Missing, Some(Kind::Folder)) => self.to_copy_folders += count,
            (Status::Differs | Status::Conflict, _) => {
                self.left_alone_items += count;
                if kind == Some(Kind::File) {
                    self.left_alone_bytes += bytes;
                }
            }
            _ => {}
        }
    }

    /// `(key, value)` rows; every key is written, zeros included.
    fn rows(&self) -> Vec<(&'static str, i64)> {
        let mut rows = vec![
            ("folders", self.folders),
            ("files", self.files),
            ("symlinks", self.symlinks),
            ("special", self.special),
            ("bytes", self.bytes),
        ];
        rows.extend(
            Status::ALL
                .iter()
                .zip(self.by_status)
                .map(|(s, n)| (s.as_str(), n)),
        );
        rows.extend([
            ("extra_bytes", self.extra_bytes),
            ("to_copy_files", self.to_copy_files),
            ("to_copy_folders", self.to_copy_folders),
            ("to_copy_bytes", self.to_copy_bytes),
            ("to_copy_metadata", self.to_copy_metadata),
            ("left_alone_items", self.left_alone_items),
            ("left_alone_bytes", self.left_alone_bytes),
        ]);
        rows
    }
}

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
        let src = self.stat_map("src_stats")?;
        let dst = self.stat_map("dst_stats")?;
        let get = |m: &std::collections::HashMap<String, i64>, k: &str| {
            m.get(k).copied().unwrap_or(0).max(0) as u64
        };
        let totals = |m| Totals {
            folders: get(m, "folders"),
            files: get(m, "files"),
            symlinks: get(m, "symlinks"),
            special: get(m, "special"),
            bytes: get(m, "bytes"),
        };
        let progress = self.progress()?;
        let src_totals = totals(&src);
        let classified: u64 = Status::ALL
            .iter()
            .filter(|st| **st != Status::Extra)
            .map(|st| get(&src, st.as_str()))
            .sum();
        let src_nodes =
            src_totals.folders + src_totals.files + src_totals.symlinks + src_totals.special;
        Ok(Summary {
            pass: self.pass()?,
            changes: self.changes()?,
            dst: totals(&dst),
            missing: get(&src, "missing"),
            same: get(&src, "same"),
            differs: get(&src, "differs"),
            conflict: get(&src, "conflict"),
            extra: get(&dst, "extra"),
            excluded: get(&src, "excluded"),
            invalid_name: get(&src, "invalid-name") + get(&dst, "invalid-name"),
            failed: self.query_i64("SELECT coalesce(sum(folders_failed), 0)::BIGINT FROM rounds")?
                as u64,
            unclassified: src_nodes.saturating_sub(classified),
            outdated: get(&src, "outdated"),
            to_copy: ToCopy {
                files: get(&src, "to_copy_files"),
                folders: get(&src, "to_copy_folders"),
                bytes: get(&src, "to_copy_bytes"),
                metadata: get(&src, "to_copy_metadata"),
            },
            left_alone: LeftAlone {
                items: get(&src, "left_alone_items"),
                bytes: get(&src, "left_alone_bytes"),
            },
            src: src_totals,
            src_rounds: RoundState {
                sealed: progress.src_sealed.map_or(0, |d| d as u64 + 1),
                done: progress.src_done,
            },
            dst_rounds: RoundState {
                sealed: progress.dst_sealed.map_or(0, |d| d as u64 + 1),
                done: progress.dst_done,
            },
        })
    }

    pub(super) fn stat_map(
        &self,
        table: &str,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT key, sum(value)::BIGINT FROM {table} GROUP BY key"
            ))
            .context("read statistics")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .context("read statistics")?;
        rows.collect::<Result<_, _>>().context("read statistics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_stats_count_kinds_statuses_and_what_is_to_copy() {
        let mut stats = DepthStats::default();
        stats.add(Kind::File.code(), Some(Status::Missing), false, 3, 300);
        stats.add(Kind::File.code(), Some(Status::Differs), false, 2, 20);
        stats.add(Kind::File.code(), Some(Status::Extra), false, 1, 7);
        stats.add(Kind::File.code(), None, false, 4, 40);
        stats.add(FOLDER, Some(Status::Missing), false, 5, 0);
        stats.add(FOLDER, Some(Status::Same), false, 6, 0);
        stats.add(Kind::Symlink.code(), Some(Status::Conflict), false, 1, 0);
        stats.add(Kind::Special.code(), Some(Status::Excluded), false, 1, 0);
        stats.add(Kind::File.code(), Some(Status::InvalidName), false, 2, 9);
        stats.add(Kind::File.code(), Some(Status::Outdated), false, 3, 30);
        stats.add(Kind::File.code(), Some(Status::Outdated), true, 1, 5);
        stats.add(FOLDER, Some(Status::Outdated), true, 2, 0);
        let rows: std::collections::HashMap<_, _> = stats.rows().into_iter().collect();
        let expected = [
            ("folders", 13),
            ("files", 16),
            ("symlinks", 1),
            ("special", 1),
            ("bytes", 411),
            ("missing", 8),
            ("outdated", 6),
            ("same", 6),
            ("differs", 2),
            ("conflict", 1),
            ("extra", 1),
            ("excluded", 1),
            ("invalid-name", 2),
            ("extra_bytes", 7),
            ("to_copy_files", 6),
            ("to_copy_folders", 5),
            ("to_copy_bytes", 330),
            ("to_copy_metadata", 3),
            ("left_alone_items", 3),
            ("left_alone_bytes", 20),
        ];
        assert_eq!(rows.len(), expected.len(), "every key, once");
        for (key, value) in expected {
            assert_eq!(rows[key], value, "{key}");
        }
    }
}
