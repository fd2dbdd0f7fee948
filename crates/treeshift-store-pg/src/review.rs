//! A review on PostgreSQL: the nodes of one comparison status, the
//! folders that failed, or everything that needs a look, streamed in
//! batches sorted by side and path (a portal read a batch at a time, so
//! a review of millions is never held whole).

use crate::PgStore;
use crate::copy::LATEST_COPY;
use crate::error::Context;
use crate::verify::LATEST_VERIFY;
use crossbeam_channel::Sender;
use treeshift_core::{Kind, RelPath, Side, Status};
use treeshift_state::{ReviewItem, ReviewSelect, StoreError};

/// Items sent to the reader at a time.
const REVIEW_BATCH: i32 = 1_000;

/// `side`'s nodes with their latest event of `phase`: side, path, kind,
/// size, mtime, status, reason.
fn latest(side: Side, phase: &str) -> String {
    format!(
        "SELECT '{side}' AS side, n.rel_path, n.kind, n.size, n.mtime_ns, e.status, e.reason \
         FROM {side}_nodes n JOIN (SELECT DISTINCT ON (node_id) node_id, status, reason \
           FROM {side}_status_events WHERE phase = '{phase}' ORDER BY node_id, seq DESC) e \
         ON e.node_id = n.id"
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
        ReviewSelect::Copy(status) => format!(
            "SELECT 'src' AS side, p.rel_path, p.kind, p.size, p.mtime_ns, \
               coalesce(c.st, 'pending') AS status, coalesce(c.reason, p.reason) AS reason \
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
