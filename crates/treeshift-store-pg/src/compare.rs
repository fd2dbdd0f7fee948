//! Comparison on PostgreSQL, one folder pair at a time: when a
//! destination folder's listing completes, its children are compared with
//! the source folder's of the same path, in the transaction that
//! completes it (under its lease). So the comparison is spread over the
//! workers that list, and a seal only marks what no listing compares
//! (the children of a folder missing on the destination) and counts.
//! The rule is [`treeshift_core::compare_in_pass`], the one the DuckDB
//! store writes in SQL.

use crate::PgStore;
use crate::error::Context;
use crate::events::{Event, append_events};
use crate::schema::latest_event;
use postgres::Transaction;
use treeshift_core::{
    Entry, Kind, Md5, Meta, NodeFacts, PairHistory, RelPath, Side, Status, WrittenFacts,
    compare_in_pass,
};
use treeshift_state::StoreError;

/// Rows of a folder pair read at a time: a folder of millions of
/// children is compared in pages, never held whole.
const PAIRS_PER_PAGE: i32 = 10_000;

/// One `compare` event to append.
pub(crate) struct Verdict {
    pub(crate) node_id: i64,
    pub(crate) status: Status,
    pub(crate) reason: Option<String>,
}

/// A node's columns as the comparison reads them, from `first` on:
/// kind, size, mtime, mode, uid, gid, xattrs (not the listing's MD5,
/// which only a pair's comparison reads: see [`md5_at`]).
pub(crate) fn facts(row: &postgres::Row, first: usize) -> NodeFacts {
    let code = row.get::<_, i16>(first);
    NodeFacts {
        kind: Kind::from_code(code as u8).unwrap_or(Kind::Special),
        size: row.get::<_, i64>(first + 1) as u64,
        mtime_ns: row.get(first + 2),
        meta: Meta {
            mode: row.get::<_, Option<i32>>(first + 3).map(|v| v as u32),
            uid: row.get::<_, Option<i64>>(first + 4).map(|v| v as u32),
            gid: row.get::<_, Option<i64>>(first + 5).map(|v| v as u32),
            // The digest's bits, as recorded.
            xattrs: row.get::<_, Option<i64>>(first + 6).map(|v| v as u64),
        },
        md5: None,
    }
}

/// A listing's MD5 as recorded (32 hex digits), at column `at`.
fn md5_at(row: &postgres::Row, at: usize) -> Option<Md5> {
    row.get::<_, Option<&str>>(at).and_then(Md5::from_hex)
}

/// What a root records, as the comparison reads it.
pub(crate) fn root_facts(root: &Entry) -> NodeFacts {
    NodeFacts {
        kind: Kind::Folder,
        size: 0,
        mtime_ns: root.mtime_ns,
        meta: root.meta,
        md5: None,
    }
}

/// Appends `verdicts` to `side`'s events at `depth`, in one binary COPY.
pub(crate) fn append_verdicts(
    tx: &mut Transaction<'_>,
    side: Side,
    depth: i32,
    verdicts: &[Verdict],
) -> Result<(), StoreError> {
    append_events(
        tx,
        side,
        "compare",
        verdicts.iter().map(|v| Event {
            node_id: v.node_id,
            depth,
            status: v.status.as_str(),
            reason: v.reason.as_deref(),
            attempt: 1,
        }),
    )
}

/// The node columns [`facts`] reads, of the alias `n`.
const FACT_COLUMNS: &str = "n.kind, n.size, n.mtime_ns, n.mode, n.uid, n.gid, n.xattrs";

/// Compares the children of the destination folder `dst_folder` (just
/// listed, at `depth`, with path `path`) with those of the source folder
/// of the same path, inside the transaction that completes it: each
/// source child not yet classified gets its status against the
/// destination child of its name (missing without one), the pair's
/// destination child the same; a destination child nobody pairs with is
/// `extra`, or `excluded` where the source's child of its name was
/// (with its reason). Children left out when listed keep their status.
pub(crate) fn compare_children(
    tx: &mut Transaction<'_>,
    dst_folder: i64,
    depth: u32,
    path: &RelPath,
) -> Result<(), StoreError> {
    // Each pair with its history: the previous pass's source node of its
    // path (that table is empty in the first pass) and the latest record
    // of what treeshift wrote there.
    let query = format!(
        "SELECT s.id, {s_facts}, se.status, se.reason, d.id, {d_facts}, de.status, d.etag, \
                pv.id, {pv_facts}, w.size, w.mtime_ns, w.etag, w.own_mtime_ns, s.md5, d.md5 \
         FROM (SELECT * FROM src_nodes WHERE parent_id = \
                 (SELECT id FROM src_nodes WHERE kind = 0 AND rel_path = $1 AND depth = $2)) s \
         FULL JOIN (SELECT * FROM dst_nodes WHERE parent_id = $3) d ON d.rel_path = s.rel_path \
         LEFT JOIN (SELECT * FROM previous_src_nodes WHERE parent_id = \
                 (SELECT id FROM previous_src_nodes WHERE kind = 0 AND rel_path = $1 AND depth = $2)) pv \
           ON pv.rel_path = s.rel_path \
         LEFT JOIN LATERAL (SELECT size, mtime_ns, etag, own_mtime_ns FROM written \
                            WHERE rel_path = s.rel_path ORDER BY seq DESC LIMIT 1) w ON true \
         LEFT JOIN LATERAL {se} se ON true LEFT JOIN LATERAL {de} de ON true",
        s_facts = FACT_COLUMNS.replace("n.", "s."),
        d_facts = FACT_COLUMNS.replace("n.", "d."),
        pv_facts = FACT_COLUMNS.replace("n.", "pv."),
        se = latest_event(Side::Src, "compare", "s.id"),
        de = latest_event(Side::Dst, "compare", "d.id"),
    );
    let portal = tx
        .bind(
            query.as_str(),
            &[&path.as_bytes(), &(depth as i32), &dst_folder],
        )
        .context("pair a folder's children")?;
    loop {
        let rows = tx
            .query_portal(&portal, PAIRS_PER_PAGE)
            .context("read a folder's pairs")?;
        if rows.is_empty() {
            return Ok(());
        }
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        for row in &rows {
            let s_id: Option<i64> = row.get(0);
            let s_status: Option<String> = row.get(8);
            let d_id: Option<i64> = row.get(10);
            let d_classified = row.get::<_, Option<String>>(18).is_some();
            let verdict = match (s_id, d_id) {
                (Some(_), _) if s_status.is_some() => {
                    // Left out at listing: its destination namesake is
                    // excluded with it, or free (a name the destination
                    // cannot hold was never compared).
                    let excluded = s_status.as_deref() == Some(Status::Excluded.as_str());
                    if excluded {
                        (None, Some((Status::Excluded, row.get(9))))
                    } else {
                        (None, Some((Status::Extra, None)))
                    }
                }
                (Some(_), None) => (Some((Status::Missing, None)), None),
                (Some(_), Some(_)) => {
                    let src = NodeFacts {
                        md5: md5_at(row, 32),
                        ..facts(row, 1)
                    };
                    let dst = NodeFacts {
                        md5: md5_at(row, 33),
                        ..facts(row, 11)
                    };
                    let (status, reason) = compare_in_pass(&src, &dst, &history(row));
                    (Some((status, reason.clone())), Some((status, reason)))
                }
                (None, Some(_)) => (None, Some((Status::Extra, None))),
                (None, None) => (None, None),
            };
            if let (Some(node_id), Some((status, reason))) = (s_id, verdict.0) {
                src.push(Verdict {
                    node_id,
                    status,
                    reason,
                });
            }
            if let (Some(node_id), Some((status, reason)), false) = (d_id, verdict.1, d_classified)
            {
                dst.push(Verdict {
                    node_id,
                    status,
                    reason,
                });
            }
        }
        let children = depth as i32 + 1;
        append_verdicts(tx, Side::Src, children, &src)?;
        append_verdicts(tx, Side::Dst, children, &dst)?;
    }
}

/// A pair's history from its row of [`compare_children`]: the
/// destination's etag, then the previous pass's node, then what was
/// written.
fn history(row: &postgres::Row) -> PairHistory<'_> {
    PairHistory {
        dst_etag: row.get(19),
        previous: row.get::<_, Option<i64>>(20).map(|_| facts(row, 21)),
        written: row.get::<_, Option<i64>>(28).map(|size| WrittenFacts {
            size: size.max(0) as u64,
            mtime_ns: row.get(29),
            etag: row.get(30),
            own_mtime_ns: row.get(31),
        }),
    }
}

impl PgStore {
    /// Compares the roots (recorded once, by whichever process comes
    /// first): the source root, and the destination's if it exists
    /// (without one, everything is missing).
    pub(crate) fn compare_roots(
        &self,
        tx: &mut Transaction<'_>,
        ids: (i64, Option<i64>),
        src_root: &Entry,
        dst_root: Option<&Entry>,
    ) -> Result<(), StoreError> {
        let (src_id, dst_id) = ids;
        // The root of the previous pass's source, if there was one.
        let previous = tx
            .query_opt(
                &format!("SELECT {FACT_COLUMNS} FROM previous_src_nodes n WHERE depth = 0"),
                &[],
            )
            .context("read the previous pass's root")?
            .map(|row| facts(&row, 0));
        let history = PairHistory {
            previous,
            ..PairHistory::default()
        };
        let (status, reason) = match dst_root {
            Some(dst) => compare_in_pass(&root_facts(src_root), &root_facts(dst), &history),
            None => (
                Status::Missing,
                Some("destination root does not exist".to_string()),
            ),
        };
        let verdict = |node_id| Verdict {
            node_id,
            status,
            reason: reason.clone(),
        };
        append_verdicts(tx, Side::Src, 0, &[verdict(src_id)])?;
        if let Some(dst_id) = dst_id {
            append_verdicts(tx, Side::Dst, 0, &[verdict(dst_id)])?;
        }
        Ok(())
    }
}
