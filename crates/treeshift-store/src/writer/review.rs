//! Review reads: the items of a status, streamed in batches.

use super::*;

/// Rows per batch sent to a review consumer.
pub(super) const REVIEW_BATCH: usize = 1_000;

impl Writer {
    pub(crate) fn review(
        &mut self,
        select: ReviewSelect,
        sink: &Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        self.flush()?;
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
        &mut self,
        select: ReviewSelect,
        after: Option<&(Side, RelPath)>,
        prefix: Option<&RelPath>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        self.flush()?;
        let mut clauses = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some((side, path)) = after {
            clauses.push("(side < ? OR (side = ? AND rel_path > ?))");
            args.push(Value::Text(side.as_str().into()));
            args.push(Value::Text(side.as_str().into()));
            args.push(Value::Blob(path.as_bytes().to_vec()));
        }
        if let Some(p) = prefix.filter(|p| !p.is_root()) {
            // The prefix itself, and what is under it: names after `P/`
            // and before `P0` ('0' follows '/').
            clauses.push("(rel_path = ? OR (rel_path >= ? AND rel_path < ?))");
            let base = p.as_bytes().to_vec();
            let below = |end: u8| [base.as_slice(), &[end]].concat();
            args.push(Value::Blob(base.clone()));
            args.push(Value::Blob(below(b'/')));
            args.push(Value::Blob(below(b'0')));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM ({}) {filter} ORDER BY side DESC, rel_path LIMIT {limit}",
                review_sql(select)
            ))
            .context("prepare a review page")?;
        let rows = stmt
            .query_map(duckdb::params_from_iter(args), review_item)
            .context("run a review page")?;
        rows.collect::<Result<_, _>>().context("read a review page")
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
    })
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
