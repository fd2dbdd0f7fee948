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
pub(super) fn below(folder: &RelPath) -> [Value; 2] {
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
