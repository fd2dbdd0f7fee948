//! A review on PostgreSQL: the nodes of one comparison status, the
//! folders that failed, or everything that needs a look, streamed in
//! batches sorted by side and path (a portal read a batch at a time, so
//! a review of millions is never held whole).

use crate::PgStore;
use crate::copy::LATEST_COPY;
use crate::error::Context;
use crate::verify::LATEST_VERIFY;
use crossbeam_channel::Sender;
use postgres::types::ToSql;
use treeshift_core::{Kind, RelPath, Side, Status};
use treeshift_state::{ReviewFilter, ReviewItem, ReviewSelect, StoreError};

/// Items sent to the reader at a time.
const REVIEW_BATCH: i32 = 1_000;

/// `side`'s nodes with their latest event of `phase`: side, path, kind,
/// size, mtime, status, reason. Written as an event no later one of its
/// node follows, not as `DISTINCT ON`: a status asked for is then a
/// condition on the events the planner can estimate and push down, and a
/// page of a status most nodes have is read in path order until it is
/// full (a quarter of the time on a 100k-node tree: docs/BENCHMARKS.md).
fn latest(side: Side, phase: &str) -> String {
    format!(
        "SELECT '{side}' AS side, n.rel_path, n.kind, n.size, n.mtime_ns, e.status, e.reason \
         FROM {side}_nodes n JOIN {side}_status_events e ON e.node_id = n.id AND e.phase = '{phase}' \
         WHERE NOT EXISTS (SELECT 1 FROM {side}_status_events l \
                           WHERE l.node_id = e.node_id AND l.phase = '{phase}' AND l.seq > e.seq)"
    )
}

/// The query of a review's items.
fn review_sql(select: ReviewSelect) -> String {
    match select {
        ReviewSelect::Status(Status::Extra) => {
            format!(
                "SELECT * FROM ({}) x WHERE status = 'extra'",
                latest(Side::Dst, "compare")
            )
        }
        ReviewSelect::Status(status) => format!(
            "SELECT * FROM ({}) x WHERE status = '{}' AND rel_path <> ''::bytea",
            latest(Side::Src, "compare"),
            status.as_str()
        ),
        ReviewSelect::Failed => format!(
            "SELECT * FROM ({}) s WHERE status = 'failed' \
             UNION ALL SELECT * FROM ({}) d WHERE status = 'failed'",
            latest(Side::Src, "list"),
            latest(Side::Dst, "list")
        ),
        ReviewSelect::Actionable => format!(
            "SELECT * FROM ({}) a WHERE status <> 'same' AND rel_path <> ''::bytea \
             UNION ALL SELECT * FROM ({}) b WHERE status = 'extra' \
             UNION ALL SELECT * FROM ({}) c WHERE status = 'failed' \
             UNION ALL SELECT * FROM ({}) d WHERE status = 'failed'",
            latest(Side::Src, "compare"),
            latest(Side::Dst, "compare"),
            latest(Side::Src, "list"),
            latest(Side::Dst, "list")
        ),
        // An eighth column: for a name the plan links, whose reason is
        // still the plan's, the name it is linked to (`ReviewItem::linked_to`).
        ReviewSelect::Copy(status) => format!(
            "SELECT 'src' AS side, p.rel_path, p.kind, p.size, p.mtime_ns, \
               coalesce(c.st, 'pending') AS status, coalesce(c.reason, p.reason) AS reason, \
               CASE WHEN c.reason IS NULL THEN p.link_to END AS link_of \
             FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
             WHERE coalesce(c.st, 'pending') = '{}'",
            status.as_str()
        ),
        ReviewSelect::VerifyProblems => format!(
            "SELECT 'src' AS side, p.rel_path, p.kind, p.size, p.mtime_ns, v.st, v.reason \
             FROM copy_plan p JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
             JOIN ({LATEST_VERIFY}) v ON v.node_id = p.node_id \
             WHERE c.st = 'copied' AND v.st <> 'verified'"
        ),
        ReviewSelect::Changes => "SELECT 'src' AS side, rel_path, kind, size, mtime_ns, \
             change AS status, reason FROM src_changes"
            .to_string(),
    }
}

fn review_item(r: &postgres::Row) -> ReviewItem {
    let side: &str = r.get(0);
    ReviewItem {
        side: if side == "src" { Side::Src } else { Side::Dst },
        path: RelPath::from_bytes(r.get(1)),
        kind: Kind::from_code(r.get::<_, i16>(2) as u8).unwrap_or(Kind::Special),
        size: r.get::<_, i64>(3).max(0) as u64,
        mtime_ns: r.get(4),
        status: r.get(5),
        reason: r.get(6),
    }
    .linked_to(if r.len() > 7 { r.get(7) } else { None })
}

impl PgStore {
    /// Streams the selected items in batches to `sink`, sorted by side
    /// (the source's first) and path; stops early without error if the
    /// reader hangs up.
    pub fn review(
        &self,
        select: ReviewSelect,
        sink: &Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        let items = review_sql(select);
        let query = format!("SELECT * FROM ({items}) r ORDER BY side DESC, rel_path");
        // One transaction, on one connection, for the portal's life: a
        // server that goes away ends the review with its error rather
        // than sending some items twice.
        let mut slot = self.connection();
        let client = match slot.as_mut() {
            Some(client) => client,
            None => slot.insert(crate::connect(&self.url).context("connect")?),
        };
        let mut tx = client.transaction().context("begin a review")?;
        let portal = tx.bind(query.as_str(), &[]).context("run a review")?;
        loop {
            let rows = tx
                .query_portal(&portal, REVIEW_BATCH)
                .context("read a review")?;
            if rows.is_empty() {
                return Ok(());
            }
            if sink.send(rows.iter().map(review_item).collect()).is_err() {
                return Ok(());
            }
        }
    }
}

/// A query's arguments, numbered as they are added.
#[derive(Default)]
struct Args(Vec<Box<dyn ToSql + Sync>>);

impl Args {
    /// Adds `value`; returns its placeholder (`$n`).
    fn add(&mut self, value: impl ToSql + Sync + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|a| a.as_ref() as _).collect()
    }
}

/// The filter as conditions on a review row's `rel_path` and `size`.
fn filter_clauses(filter: &ReviewFilter, args: &mut Args) -> Vec<String> {
    let mut clauses = Vec::new();
    if let Some(p) = filter.prefix.as_ref().filter(|p| !p.is_root()) {
        let [from, to] = p.below_bounds().map(|bound| args.add(bound));
        let at = args.add(p.as_bytes().to_vec());
        clauses.push(format!(
            "(rel_path = {at} OR (rel_path >= {from} AND rel_path < {to}))"
        ));
    }
    if let Some(min) = filter.min_size {
        clauses.push(format!("size >= {}", args.add(bigint(min))));
    }
    if let Some(max) = filter.max_size {
        clauses.push(format!("size <= {}", args.add(bigint(max))));
    }
    if let Some(text) = filter.search.as_ref().filter(|t| !t.is_empty()) {
        // Paths are bytes: both sides of the match are spelled as
        // `encode(…, 'escape')` spells them (a byte past ASCII as `\ooo`),
        // and ASCII letters compared in any case.
        let text = args.add(escaped(text.as_bytes()).to_lowercase());
        clauses.push(format!(
            "strpos(lower(encode(rel_path, 'escape')), {text}) > 0"
        ));
    }
    clauses
}

/// A size bound as PostgreSQL holds sizes (past the largest, the largest).
fn bigint(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// `bytes` as PostgreSQL's `encode(…, 'escape')` writes them: a zero byte
/// or one with the high bit set as `\ooo`, a backslash doubled.
fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0 | 0x80.. => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

impl PgStore {
    /// One page of a review: at most `limit` items after `after` (in the
    /// review's order: source items first, then by path) that pass
    /// `filter`. Each page is one query over the review's items, kept to
    /// the page's rows by a top-N sort (docs/SCALE-OUT.md).
    pub fn review_page(
        &self,
        select: ReviewSelect,
        after: Option<&(Side, RelPath)>,
        filter: &ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        let mut args = Args::default();
        let mut clauses = filter_clauses(filter, &mut args);
        if let Some((side, path)) = after {
            let side = args.add(side.as_str());
            let path = args.add(path.as_bytes().to_vec());
            clauses.push(format!(
                "(side < {side} OR (side = {side} AND rel_path > {path}))"
            ));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let query = format!(
            "SELECT * FROM ({}) r {filter} ORDER BY side DESC, rel_path LIMIT {limit}",
            review_sql(select)
        );
        self.run(|client| {
            let rows = client
                .query(query.as_str(), &args.refs())
                .context("read a review page")?;
            Ok(rows.iter().map(review_item).collect())
        })
    }
}
