//! The copy and verify statuses: set-based statements on the store
//! thread, over the approved plan (see `plan.rs`).

use super::compare::latest_written;
use super::{Db, ErrorRow, EventRow, Writer, ix};
use crate::error::Context;
use crate::schema::FOLDER;
use crate::{
    CopyEvent, CopyPull, CopyTask, CopyTodo, DstSeen, FolderTime, ReviewSelect, StoreError,
    VerifyEvent, VerifyTask,
};
use duckdb::params;
use treeshift_core::{
    Action, CopyStatus, CopySummary, FileId, Kind, Meta, RelPath, Side, VerifySummary,
};
use treeshift_state::plan_sql::{
    COPIES, DATA, copy_summary, copy_summary_from, folders_to_date, to_verify,
};

/// The latest copy status and reason per plan item.
pub(super) const LATEST_COPY: &str = "SELECT node_id, arg_max(status, seq) AS st, arg_max(reason, seq) AS reason, \
     arg_max(attempt, seq) AS attempt FROM src_status_events WHERE phase = 'copy' GROUP BY node_id";

/// The latest verify status and reason per item.
const LATEST_VERIFY: &str = "SELECT node_id, arg_max(status, seq) AS st, arg_max(reason, seq) AS reason \
     FROM src_status_events WHERE phase = 'verify' GROUP BY node_id";

impl Writer {
    pub(crate) fn begin_copy(&mut self) -> Result<CopyTodo, StoreError> {
        self.flush()?;
        self.conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE copy_todo AS \
                 SELECT p.*, coalesce(c.st, 'pending') AS copy_status, coalesce(c.attempt, 1) AS attempt, \
                   sp.dev AS src_folder_dev, sp.ino AS src_folder_ino, \
                   coalesce(dp.dev, qp.dev) AS dst_folder_dev, coalesce(dp.ino, qp.ino) AS dst_folder_ino \
                 FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
                 LEFT JOIN src_nodes sp ON p.action <> 'quarantine' AND sp.id = p.parent_id \
                 LEFT JOIN dst_nodes dp ON dp.depth = p.depth - 1 AND dp.rel_path = sp.rel_path \
                 LEFT JOIN dst_nodes qp ON p.action = 'quarantine' AND qp.id = p.parent_id \
                 WHERE p.action <> 'skip' AND coalesce(c.st, 'pending') IN ('pending', 'copying')"
            ))
            .context("prepare the copy")?;
        let (folders, files, bytes): (i64, i64, i64) = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*) FILTER (WHERE kind = {FOLDER} AND action {COPIES}), \
                       count(*) FILTER (WHERE kind <> {FOLDER} OR action = 'quarantine'), \
                       coalesce(sum(size) FILTER (WHERE kind = 1 AND action {DATA} AND link_to IS NULL), 0)::BIGINT \
                     FROM copy_todo"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .context("count the copy")?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT DISTINCT depth FROM copy_todo WHERE kind = {FOLDER} AND action {COPIES} ORDER BY depth"
            ))
            .context("list folder depths")?;
        let folder_depths = stmt
            .query_map([], |r| r.get::<_, i32>(0))
            .context("list folder depths")?
            .map(|d| d.map(|d| d.max(0) as u32))
            .collect::<Result<_, _>>()
            .context("list folder depths")?;
        Ok(CopyTodo {
            folders: folders as u64,
            files: files as u64,
            bytes: bytes as u64,
            folder_depths,
        })
    }

    pub(crate) fn pull_copy(
        &mut self,
        pull: CopyPull,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        let filter = match pull {
            CopyPull::Folders { depth } => {
                format!("kind = {FOLDER} AND action {COPIES} AND depth = {depth}")
            }
            // Quarantine moves (of files and folders alike) run with files.
            CopyPull::Files => {
                format!("(kind <> {FOLDER} OR action = 'quarantine') AND link_to IS NULL")
            }
            CopyPull::Links => "link_to IS NOT NULL".to_string(),
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT node_id, depth, kind, action, rel_path, size, mtime_ns, dst_kind, dst_size, dst_mtime_ns, \
                   copy_status = 'copying', attempt, link_to, \
                   src_folder_dev, src_folder_ino, dst_folder_dev, dst_folder_ino FROM copy_todo \
                 WHERE {filter} AND node_id > ? ORDER BY node_id LIMIT ?"
            ))
            .context("pull copy tasks")?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                let dst_kind: Option<u8> = r.get(7)?;
                let action: String = r.get(3)?;
                Ok(CopyTask {
                    id: r.get(0)?,
                    depth: r.get::<_, i32>(1)?.max(0) as u32,
                    kind: kind_of(r.get(2)?),
                    action: action.parse().unwrap_or(Action::Skip),
                    path: RelPath::from_bytes(r.get(4)?),
                    size: r.get(5)?,
                    mtime_ns: r.get(6)?,
                    dst: match dst_kind {
                        Some(k) => Some(DstSeen {
                            kind: kind_of(k),
                            size: r.get::<_, Option<u64>>(8)?.unwrap_or(0),
                            mtime_ns: r.get(9)?,
                        }),
                        None => None,
                    },
                    in_flight: r.get(10)?,
                    attempt: r.get::<_, i32>(11)?.max(1) as u32,
                    link_to: r.get::<_, Option<Vec<u8>>>(12)?.map(RelPath::from_bytes),
                    folders: [file_id_at(r, 13)?, file_id_at(r, 15)?],
                })
            })
            .context("pull copy tasks")?;
        rows.collect::<Result<_, _>>().context("pull copy tasks")
    }

    /// Buffers one `copy` or `verify` event of a source item.
    fn buffer_item_event(
        &mut self,
        phase: &'static str,
        (id, depth, attempt): (i64, u32, u32),
        status: &'static str,
        reason: Option<String>,
    ) {
        let seq = self.take_seq();
        self.buf.events[ix(Side::Src)].push(EventRow {
            seq,
            node_id: id,
            depth,
            phase,
            status,
            reason,
            attempt,
        });
        self.note_rows(1);
    }

    pub(crate) fn record_copy(&mut self, events: Vec<CopyEvent>) {
        for e in events {
            if e.status == CopyStatus::Copied && !e.written.is_empty() {
                let seq = self.take_seq();
                self.buf.written.push((e.id, e.written, seq));
            }
            self.buffer_item_event(
                "copy",
                (e.id, e.depth, e.attempt),
                e.status.as_str(),
                e.reason,
            );
            if let Some((path, failure)) = e.error {
                let seq = self.take_seq();
                self.buf.errors.push(ErrorRow {
                    seq,
                    side: Side::Dst,
                    phase: "copy",
                    node_id: e.id,
                    rel_path: path.into_bytes(),
                    failure,
                });
            }
        }
    }

    pub(crate) fn requeue_failed_copies(
        &mut self,
        prefix: Option<&RelPath>,
    ) -> Result<u64, StoreError> {
        self.flush()?;
        let failed = self.failed_items(
            &format!(
                "SELECT p.node_id, p.depth, p.rel_path, c.attempt FROM copy_plan p \
                 JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id WHERE c.st = 'failed'"
            ),
            prefix,
        )?;
        let requeued = failed.len() as u64;
        for (id, depth, attempt) in failed {
            self.buffer_item_event("copy", (id, depth, attempt.max(1) + 1), "pending", None);
        }
        self.flush()?;
        Ok(requeued)
    }

    /// Folders whose mtime needs setting, deepest first, after the keyset
    /// position `after`; the first page (`after` = `None`) decides the set.
    pub(crate) fn folder_times(
        &mut self,
        after: Option<(u32, i64)>,
        limit: usize,
    ) -> Result<Vec<FolderTime>, StoreError> {
        if after.is_none() {
            self.flush()?;
            self.conn
                .execute_batch(&format!(
                    "CREATE OR REPLACE TEMP TABLE folder_dates AS {}",
                    folders_to_date(
                        LATEST_COPY,
                        "NULL::UINTEGER AS mode, NULL::UINTEGER AS uid, NULL::UINTEGER AS gid, \
                         NULL::UBIGINT AS xattrs, NULL::BIGINT AS copied_at"
                    )
                ))
                .context("find folders to date")?;
        }
        let keyset = match after {
            Some((d, id)) => format!("WHERE depth < {d} OR (depth = {d} AND node_id > {id})"),
            None => String::new(),
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT node_id, depth, rel_path, mtime_ns, all_meta, mode, uid, gid, xattrs FROM folder_dates \
                 {keyset} ORDER BY depth DESC, node_id LIMIT {limit}"
            ))
            .context("pull folder times")?;
        let rows = stmt
            .query_map([], |r| {
                let all_meta: bool = r.get(4)?;
                Ok(FolderTime {
                    id: r.get(0)?,
                    depth: r.get::<_, i32>(1)?.max(0) as u32,
                    path: RelPath::from_bytes(r.get(2)?),
                    mtime_ns: r.get(3)?,
                    meta: if all_meta { Some(meta_at(r, 5)?) } else { None },
                })
            })
            .context("pull folder times")?;
        rows.collect::<Result<_, _>>().context("pull folder times")
    }

    /// Records that these folders' mtimes were set (buffered).
    pub(crate) fn record_dated(&mut self, folders: Vec<(i64, u32)>) {
        for (id, depth) in folders {
            self.buffer_item_event("dated", (id, depth, 1), "set", None);
        }
    }

    pub(crate) fn begin_verify(&mut self, checksum: bool) -> Result<u64, StoreError> {
        self.flush()?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta VALUES ('verify_checksum', ?)",
                params![checksum.to_string()],
            )
            .context("record the verify mode")?;
        self.conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE verify_todo AS {}",
                to_verify(LATEST_COPY, &latest_written("own_mtime_ns IS NOT NULL"))
            ))
            .context("prepare the verification")?;
        Ok(self.query_i64("SELECT count(*) FROM verify_todo")?.max(0) as u64)
    }

    pub(crate) fn pull_verify(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<VerifyTask>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT node_id, depth, kind, rel_path, size, mtime_ns, mode, uid, gid, xattrs, link_to \
                 FROM verify_todo \
                 WHERE node_id > ? ORDER BY node_id LIMIT ?",
            )
            .context("pull verify tasks")?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(VerifyTask {
                    id: r.get(0)?,
                    depth: r.get::<_, i32>(1)?.max(0) as u32,
                    kind: kind_of(r.get(2)?),
                    path: RelPath::from_bytes(r.get(3)?),
                    size: r.get(4)?,
                    mtime_ns: r.get(5)?,
                    meta: meta_at(r, 6)?,
                    link_to: r.get::<_, Option<Vec<u8>>>(10)?.map(RelPath::from_bytes),
                })
            })
            .context("pull verify tasks")?;
        rows.collect::<Result<_, _>>().context("pull verify tasks")
    }

    pub(crate) fn record_verify(&mut self, events: Vec<VerifyEvent>) {
        for e in events {
            self.buffer_item_event("verify", (e.id, e.depth, 1), e.status.as_str(), e.reason);
        }
    }
}

impl Db {
    pub(crate) fn copy_summary(&self) -> Result<CopySummary, StoreError> {
        self.row(&copy_summary(LATEST_COPY), [], |r| {
            let v = (0..9)
                .map(|i| r.get::<_, i64>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(copy_summary_from(|i| v[i]))
        })
        .context("summarise the copy")
    }

    pub(crate) fn verify_summary(&self) -> Result<Option<VerifySummary>, StoreError> {
        let checksum: Option<String> = self
            .row(
                "SELECT value FROM meta WHERE key = 'verify_checksum'",
                [],
                |r| r.get(0),
            )
            .ok();
        let Some(checksum) = checksum else {
            return Ok(None);
        };
        let v: Vec<i64> = self
            .row(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE v.st = 'verified'), \
                       count(*) FILTER (WHERE v.st = 'mismatch'), count(*) FILTER (WHERE v.st = 'failed') \
                     FROM ({LATEST_COPY}) c JOIN ({LATEST_VERIFY}) v ON v.node_id = c.node_id \
                     WHERE c.st = 'copied'"
                ),
                [],
                |r| (0..4).map(|i| r.get::<_, i64>(i)).collect(),
            )
            .context("summarise the verification")?;
        let v: Vec<u64> = v.into_iter().map(|x| x.max(0) as u64).collect();
        Ok(Some(VerifySummary {
            checked: v[0],
            verified: v[1],
            mismatch: v[2],
            failed: v[3],
            checksum: checksum == "true",
        }))
    }
}

/// The review query for copy and verify selections (`None` for the
/// discovery ones). Columns as the discovery review's; a copy status's
/// have an eighth: for a name the plan links, whose reason is still the
/// plan's, the name it is linked to (`ReviewItem::linked_to`).
pub(super) fn review_sql(select: ReviewSelect) -> Option<String> {
    match select {
        ReviewSelect::Copy(status) => Some(format!(
            "SELECT 'src' AS side, p.rel_path, p.kind, p.size, p.mtime_ns, \
               coalesce(c.st, 'pending') AS st, coalesce(c.reason, p.reason) AS reason, \
               CASE WHEN c.reason IS NULL THEN p.link_to END AS link_of \
             FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
             WHERE coalesce(c.st, 'pending') = '{}'",
            status.as_str()
        )),
        ReviewSelect::VerifyProblems => Some(format!(
            "SELECT 'src' AS side, p.rel_path, p.kind, p.size, p.mtime_ns, v.st, v.reason \
             FROM copy_plan p JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
             JOIN ({LATEST_VERIFY}) v ON v.node_id = p.node_id \
             WHERE c.st = 'copied' AND v.st <> 'verified'"
        )),
        _ => None,
    }
}

/// The identity in the two columns from `at` (dev, ino), if recorded.
fn file_id_at(r: &duckdb::Row<'_>, at: usize) -> Result<Option<FileId>, duckdb::Error> {
    Ok(match (r.get(at)?, r.get(at + 1)?) {
        (Some(dev), Some(ino)) => Some(FileId { dev, ino }),
        _ => None,
    })
}

/// The metadata in the four columns from `at` (mode, uid, gid, xattrs).
fn meta_at(r: &duckdb::Row<'_>, at: usize) -> Result<Meta, duckdb::Error> {
    Ok(Meta {
        mode: r.get(at)?,
        uid: r.get(at + 1)?,
        gid: r.get(at + 2)?,
        xattrs: r.get(at + 3)?,
    })
}

fn kind_of(code: u8) -> Kind {
    Kind::from_code(code).unwrap_or(Kind::Special)
}
