//! Review reads: the items of a status, streamed in batches.

use super::*;

/// Rows per batch sent to a review consumer.
pub(super) const REVIEW_BATCH: usize = 1_000;

impl Db {
    pub(crate) fn review(
        &self,
        select: ReviewSelect,
        sink: &Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM ({}) ORDER BY side DESC, rel_path",
                review_sql(select)
            ))
            .context("prepare a review")?;
        let rows = stmt.query_map([], review_item).context("run a review")?;
        let mut batch = Vec::with_capacity(REVIEW_BATCH);
        for row in rows {
            batch.push(row.context("read a review row")?);
            if batch.len() == REVIEW_BATCH && sink.send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            let _ = sink.send(batch);
        }
        Ok(())
    }

    /// One page of a review: at most `limit` items after `after` (in the
    /// review's order: source items first, then by path), at or under
    /// `prefix` if given.
    pub(crate) fn review_page(
        &self,
        select: ReviewSelect,
        after: Option<&(Side, RelPath)>,
        filter: &ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        match select {
            ReviewSelect::Status(status) => {
                self.status_page(status, after, filter, limit, limit * WINDOW_PAGES)
            }
            _ => self.full_page(select, after, filter, limit),
        }
    }

    /// A page of one comparison status, read a window at a time: the
    /// first `window` nodes after the cursor in path order, and the latest
    /// comparison of those alone. Joining every node with its latest
    /// comparison, as [`Db::full_page`] does, spilled past the store's
    /// memory limit on a 1M-node tree (BENCHMARKS.md). Where that window
    /// does not fill the page (a sparse status, or one not compared yet:
    /// a page during a discovery), the next windows hold only the nodes
    /// that have a comparison of the status at all, each eight times the
    /// last, and a node is kept if that comparison is its latest.
    fn status_page(
        &self,
        status: Status,
        after: Option<&(Side, RelPath)>,
        filter: &ReviewFilter,
        limit: usize,
        mut window: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        // Extras are the destination's; every other status the source's.
        let side = if status == Status::Extra {
            Side::Dst
        } else {
            Side::Src
        };
        let mut from = match after {
            // The source's items come first: a cursor in the
            // destination's is past them all.
            Some((at, _)) if *at != side && side == Side::Src => return Ok(Vec::new()),
            Some((at, path)) if *at == side => Some(path.as_bytes().to_vec()),
            _ => None,
        };
        let mut out = Vec::new();
        // After the first window: the nodes with a comparison of the status.
        let mut compared_only = false;
        loop {
            let (mut clauses, mut args) = filter_clauses(filter);
            if let Some(from) = &from {
                clauses.push("rel_path > ?");
                args.push(Value::Blob(from.clone()));
            }
            if side == Side::Src {
                // The root is the migration itself, not an item.
                clauses.push("rel_path <> ''::BLOB");
            }
            if compared_only {
                clauses.push(if side == Side::Src {
                    "id IN (SELECT node_id FROM src_status_events WHERE phase = 'compare' AND status = ?)"
                } else {
                    "id IN (SELECT node_id FROM dst_status_events WHERE phase = 'compare' AND status = ?)"
                });
                args.push(Value::Text(status.as_str().into()));
            }
            let (seen, last) =
                self.window_of(side, status, (&clauses, &args), window, limit, &mut out)?;
            if out.len() == limit || seen < window {
                return Ok(out);
            }
            // The window held fewer than the page needs, and was full: go
            // on after it. Nearly every node of the next windows has the
            // status as its latest, so they start as small as the first.
            from = last;
            if compared_only {
                window = window.saturating_mul(8);
            }
            compared_only = true;
        }
    }

    /// Adds to `out` the nodes of one window of a status page (the first
    /// `window` of `side`'s nodes that meet `clauses`, in path order)
    /// whose latest comparison is `status`, up to `limit` in all; returns
    /// how many nodes the window held and the last of their paths. One
    /// statement: every node of the window comes back with its latest
    /// comparison, and the status is picked here.
    fn window_of(
        &self,
        side: Side,
        status: Status,
        (clauses, args): (&[&str], &[Value]),
        window: usize,
        limit: usize,
        out: &mut Vec<ReviewItem>,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "WITH cand AS MATERIALIZED (SELECT id, rel_path, kind, size, mtime_ns FROM {side}_nodes {} \
                                           ORDER BY rel_path LIMIT {window}), \
                      e AS (SELECT node_id, arg_max(status, seq) AS st, arg_max(reason, seq) AS reason \
                            FROM {side}_status_events \
                            WHERE phase = 'compare' AND node_id IN (SELECT id FROM cand) \
                            GROUP BY node_id) \
                 SELECT '{side}' AS side, c.rel_path, c.kind, c.size, c.mtime_ns, \
                        coalesce(e.st::VARCHAR, ''), e.reason \
                 FROM cand c LEFT JOIN e ON e.node_id = c.id ORDER BY c.rel_path",
                where_clause(clauses)
            ))
            .context("prepare a review page")?;
        let mut rows = stmt
            .query(duckdb::params_from_iter(args.iter()))
            .context("run a review page")?;
        let (mut seen, mut last) = (0, None);
        while let Some(row) = rows.next().context("read a review page")? {
            let item = review_item(row).context("read a review page")?;
            seen += 1;
            last = Some(item.path.as_bytes().to_vec());
            if item.status == status.as_str() {
                out.push(item);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok((seen, last))
    }

    /// A page of any review, by one query over every item of it.
    fn full_page(
        &self,
        select: ReviewSelect,
        after: Option<&(Side, RelPath)>,
        filter: &ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let (mut clauses, mut args) = filter_clauses(filter);
        if let Some((side, path)) = after {
            clauses.push("(side < ? OR (side = ? AND rel_path > ?))");
            args.push(Value::Text(side.as_str().into()));
            args.push(Value::Text(side.as_str().into()));
            args.push(Value::Blob(path.as_bytes().to_vec()));
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM ({}) {} ORDER BY side DESC, rel_path LIMIT {limit}",
                review_sql(select),
                where_clause(&clauses)
            ))
            .context("prepare a review page")?;
        let rows = stmt
            .query_map(duckdb::params_from_iter(args), review_item)
            .context("run a review page")?;
        rows.collect::<Result<_, _>>().context("read a review page")
    }
}

/// A status page's first window, in pages: the nodes it examines.
const WINDOW_PAGES: usize = 4;

/// The review filter as clauses on a row's `rel_path` and `size`, with
/// their arguments.
fn filter_clauses(filter: &ReviewFilter) -> (Vec<&'static str>, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(p) = filter.prefix.as_ref().filter(|p| !p.is_root()) {
        // The prefix itself, and what is under it.
        clauses.push("(rel_path = ? OR (rel_path >= ? AND rel_path < ?))");
        args.push(Value::Blob(p.as_bytes().to_vec()));
        args.extend(below(p));
    }
    if let Some(min) = filter.min_size {
        clauses.push("size >= ?");
        args.push(Value::UBigInt(min));
    }
    if let Some(max) = filter.max_size {
        clauses.push("size <= ?");
        args.push(Value::UBigInt(max));
    }
    if let Some(text) = filter.search.as_ref().filter(|t| !t.is_empty()) {
        // Bytes that are not UTF-8 read as escapes (`\xFF`).
        clauses.push("contains(lower(CAST(rel_path AS VARCHAR)), lower(?))");
        args.push(Value::Text(text.clone()));
    }
    (clauses, args)
}

/// The bounds of the paths under `folder` (not the root), for
/// `rel_path >= ? AND rel_path < ?` ([`RelPath::below_bounds`]).
fn below(folder: &RelPath) -> [Value; 2] {
    folder.below_bounds().map(Value::Blob)
}

fn where_clause(clauses: &[&str]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

fn review_item(r: &duckdb::Row<'_>) -> Result<ReviewItem, duckdb::Error> {
    let side: String = r.get(0)?;
    let kind: u8 = r.get(2)?;
    Ok(ReviewItem {
        side: if side == "src" { Side::Src } else { Side::Dst },
        path: RelPath::from_bytes(r.get(1)?),
        kind: Kind::from_code(kind).unwrap_or(Kind::Special),
        size: r.get(3)?,
        mtime_ns: r.get(4)?,
        status: r.get(5)?,
        reason: r.get(6)?,
    }
    .linked_to(if r.as_ref().column_count() > 7 {
        r.get(7)?
    } else {
        None
    }))
}

/// The query of a review's items: side, path, kind, size, mtime, status,
/// reason.
fn review_sql(select: ReviewSelect) -> String {
    {
        let latest = |side: Side, phase: &str| {
            format!(
                "SELECT '{side}' AS side, n.rel_path, n.kind, n.size, n.mtime_ns, e.st, e.reason \
                 FROM {side}_nodes n JOIN (SELECT node_id, arg_max(status, seq) AS st, arg_max(reason, seq) AS reason \
                 FROM {side}_status_events WHERE phase = '{phase}' GROUP BY node_id) e ON e.node_id = n.id"
            )
        };
        match select {
            ReviewSelect::Copy(_) | ReviewSelect::VerifyProblems => {
                copy::review_sql(select).unwrap_or_default()
            }
            ReviewSelect::Status(Status::Extra) => {
                format!(
                    "SELECT * FROM ({}) WHERE st = 'extra'",
                    latest(Side::Dst, "compare")
                )
            }
            ReviewSelect::Status(st) => {
                format!(
                    "SELECT * FROM ({}) WHERE st = '{}' AND rel_path <> ''::BLOB",
                    latest(Side::Src, "compare"),
                    st.as_str()
                )
            }
            ReviewSelect::Changes => "SELECT 'src' AS side, rel_path, kind, size, mtime_ns, \
                 change AS st, reason FROM src_changes"
                .to_string(),
            ReviewSelect::Failed => format!(
                "SELECT * FROM ({}) WHERE st = 'failed' UNION ALL SELECT * FROM ({}) WHERE st = 'failed'",
                latest(Side::Src, "list"),
                latest(Side::Dst, "list")
            ),
            ReviewSelect::Actionable => format!(
                "SELECT * FROM ({}) WHERE st NOT IN ('same') AND rel_path <> ''::BLOB \
                 UNION ALL SELECT * FROM ({}) WHERE st = 'extra' \
                 UNION ALL SELECT * FROM ({}) WHERE st = 'failed' \
                 UNION ALL SELECT * FROM ({}) WHERE st = 'failed'",
                latest(Side::Src, "compare"),
                latest(Side::Dst, "compare"),
                latest(Side::Src, "list"),
                latest(Side::Dst, "list")
            ),
        }
    }
}

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
        let depth = folder.depth() as i64 + 1;
        let mut children = Vec::new();
        for side in Side::BOTH {
            children.extend(self.browse_side(side, folder, depth, after, limit)?);
        }
        children.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        children.truncate(limit);
        Ok(children)
    }

    fn browse_side(
        &self,
        side: Side,
        folder: &RelPath,
        depth: i64,
        after: Option<&RelPath>,
        limit: usize,
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
        // The latest comparisons: of the nodes under the folder alone (a
        // folder deep in a large tree costs what its subtree does), of all
        // at the root, where a filter would only add work.
        let of_these = if folder.is_root() {
            String::new()
        } else {
            args.extend(bounds.iter().cloned());
            format!(" AND node_id IN (SELECT id FROM {side}_nodes WHERE depth >= {depth}{under})")
        };
        args.extend(bounds.iter().cloned());
        let mut page = String::new();
        if let Some(after) = after {
            page.push_str(" AND n.rel_path > ?");
            args.push(Value::Blob(after.as_bytes().to_vec()));
        }
        args.extend(bounds.iter().cloned());
        // The destination shows only what the source has not: its extras.
        let own = match side {
            Side::Src => "",
            Side::Dst => "AND ks.st = 'extra'",
        };
        let n_under = under.replace("rel_path", "n.rel_path");
        let d_under = under.replace("rel_path", "d.rel_path");
        // Each node below is summed into the child it is under, matched by
        // that child's component of the path as text, for a hash join (a
        // range join per child cost several times more on a 1M-node tree).
        // DuckDB spells a byte that is not printable ASCII, and the
        // backslash, as `\xNN`, so `/` is only ever a separator and no two
        // names read alike; the child's path bounds are checked all the
        // same.
        let sql = format!(
            "WITH st AS (SELECT node_id, arg_max(status, seq) AS st FROM {side}_status_events \
                         WHERE phase = 'compare'{of_these} GROUP BY node_id), \
             kids AS (SELECT n.id, n.rel_path, n.kind, n.size, ks.st, \
                        split_part(n.rel_path::VARCHAR, '/', {depth}) AS name \
                      FROM {side}_nodes n LEFT JOIN st ks ON ks.node_id = n.id \
                      WHERE n.depth = {depth}{n_under}{page} {own} ORDER BY n.rel_path LIMIT {limit}), \
             below AS (SELECT split_part(d.rel_path::VARCHAR, '/', {depth}) AS name, d.rel_path, \
                         ds.st, d.size \
                       FROM {side}_nodes d LEFT JOIN st ds ON ds.node_id = d.id \
                       WHERE d.depth > {depth}{d_under}), \
             sums AS (SELECT k.rel_path, b.st, count(*) AS n, coalesce(sum(b.size), 0) AS bytes \
                      FROM kids k JOIN below b ON b.name = k.name \
                        AND b.rel_path >= k.rel_path || '/'::BLOB AND b.rel_path < k.rel_path || '0'::BLOB \
                      GROUP BY ALL) \
             SELECT k.rel_path, k.kind, k.size, k.st, s.st, coalesce(s.n, 0), coalesce(s.bytes, 0) \
             FROM kids k LEFT JOIN sums s ON s.rel_path = k.rel_path ORDER BY k.rel_path"
        );
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
