//! Discovery's rounds on PostgreSQL, shared by any number of processes: a
//! round's folders become leases, leased in batches by whoever asks
//! first, each for a time by the database's clock and under an epoch that
//! grows with every lease. What a worker records of a folder (children,
//! completion, failure) goes in only while its lease holds: the check and
//! the write are one transaction, under the lease row's lock, so a worker
//! whose lease expired and was taken over cannot commit (fencing).

use crate::PgStore;
use crate::error::Context;
use crate::schema::{IN_STEP, LEFT_OUT, latest_event};
use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use std::collections::HashMap;
use std::time::Duration;
use treeshift_core::{Entry, ListStatus, Meta, RelPath, Side};
use treeshift_state::{ChildRecord, Failure, FolderTask, StoreError};

/// The node columns a listing fills, in `COPY` order (the id is the
/// sequence's).
const NODE_COLUMNS: &str =
    "parent_id, depth, kind, size, mtime_ns, rel_path, mode, uid, gid, xattrs, dev, ino, etag, md5";
const NODE_TYPES: [Type; 14] = [
    Type::INT8,
    Type::INT4,
    Type::INT2,
    Type::INT8,
    Type::INT8,
    Type::BYTEA,
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
];

/// A node's metadata in PostgreSQL's types. PostgreSQL has no unsigned
/// integers: ids and owners fit a wider type; the 64-bit digest of
/// extended attributes keeps its bits in a `bigint`, not its value.
struct MetaColumns {
    mode: Option<i32>,
    uid: Option<i64>,
    gid: Option<i64>,
    xattrs: Option<i64>,
}

impl From<Meta> for MetaColumns {
    fn from(m: Meta) -> MetaColumns {
        MetaColumns {
            mode: m.mode.map(|v| v as i32),
            uid: m.uid.map(i64::from),
            gid: m.gid.map(i64::from),
            xattrs: m.xattrs.map(|v| v as i64),
        }
    }
}

/// The fencing check of every write under a lease, on its row (`$1`
/// the folder's id, `$2` the lease's epoch): still this lease, not done,
/// not expired by the database's clock.
const HELD: &str = "node_id = $1 AND epoch = $2 AND NOT done AND expires_at >= clock_timestamp()";

/// The error of a write whose lease on `folder` of `side` is no longer
/// the writer's.
pub(crate) fn lease_lost(side: Side, folder: &FolderTask) -> StoreError {
    StoreError::LeaseLost {
        side: side.to_string(),
        folder: folder.path.to_string(),
    }
}

/// Milliseconds, as the statements take a lease's time.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A size as PostgreSQL holds it (no unsigned integers).
fn size_of(e: &Entry, path: &RelPath) -> Result<i64, StoreError> {
    i64::try_from(e.size).map_err(|_| StoreError::Db {
        context: format!("record {path}"),
        cause: treeshift_state::DbError {
            kind: treeshift_state::DbErrorKind::Other,
            message: format!("a size of {} bytes is past what the store holds", e.size),
        },
    })
}

impl PgStore {
    /// Records the roots once, whichever process comes first, and
    /// compares them: the source root, and the destination root if it
    /// exists (`None`: everything is missing). Returns the source root's
    /// id.
    pub fn record_roots(
        &self,
        src_root: &Entry,
        dst_root: Option<&Entry>,
    ) -> Result<i64, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("begin recording the roots")?;
            tx.execute("SELECT pg_advisory_xact_lock(7365728)", &[])
                .context("wait for another process recording the roots")?;
            if let Some(row) = tx
                .query_opt("SELECT id FROM src_nodes WHERE depth = 0", &[])
                .context("look for the roots")?
            {
                return Ok(row.get(0));
            }
            let src_id = insert_root(&mut tx, Side::Src, src_root)?;
            let dst_id = match dst_root {
                Some(root) => Some(insert_root(&mut tx, Side::Dst, root)?),
                None => None,
            };
            self.compare_roots(&mut tx, (src_id, dst_id), src_root, dst_root)?;
            crate::settings::record_phase(&mut tx, treeshift_core::Phase::Discovering)?;
            tx.commit().context("record the roots")?;
            Ok(src_id)
        })
    }

    /// Begins round `depth` of `side` (idempotent, and safe from any
    /// number of processes at once): every folder at that depth to list
    /// becomes a lease to take (on the source, those that take part in
    /// the migration; on the destination, those in step with a source
    /// folder that was listed). Returns how
    /// many of them are not done.
    pub fn begin_round(&self, side: Side, depth: u32) -> Result<u64, StoreError> {
        let case_clashes = side == Side::Src && depth > 0 && self.migration()?.dst_case_insensitive;
        let depth = depth as i32;
        self.run(|client| {
            let mut tx = client.transaction().context("begin a round")?;
            if case_clashes {
                exclude_case_clashes(&mut tx, depth)?;
            }
            // A destination folder is listed only when it pairs with a
            // source folder (its comparison found them in step, metadata
            // aside) that was itself listed: a failed source listing never
            // turns the destination's children into extras.
            let takes_part = match side {
                Side::Src => format!(
                    "NOT EXISTS (SELECT 1 FROM src_status_events e WHERE e.node_id = n.id \
                       AND e.phase = 'compare' AND e.status IN {LEFT_OUT})"
                ),
                Side::Dst => format!(
                    "EXISTS (SELECT 1 FROM {latest} c WHERE c.status IN {IN_STEP}) \
                     AND EXISTS (SELECT 1 FROM src_nodes s JOIN src_status_events e \
                       ON e.node_id = s.id AND e.phase = 'list' AND e.status = 'listed' \
                       WHERE s.kind = 0 AND s.rel_path = n.rel_path AND s.depth = n.depth)",
                    latest = latest_event(Side::Dst, "compare", "n.id"),
                ),
            };
            tx.execute(
                &format!(
                    "INSERT INTO {side}_leases (node_id, depth) \
                     SELECT n.id, n.depth FROM {side}_nodes n \
                     WHERE n.depth = $1 AND n.kind = 0 AND {takes_part} \
                     ON CONFLICT (node_id) DO NOTHING"
                ),
                &[&depth],
            )
            .context("begin a round")?;
            tx.commit().context("begin a round")
        })?;
        self.round_open(side, depth as u32)
    }

    /// How many folders of round `depth` of `side` are not done, leased
    /// or not: the round is listed when it is 0.
    pub fn round_open(&self, side: Side, depth: u32) -> Result<u64, StoreError> {
        let open: i64 = self.run(|client| {
            Ok(client
                .query_one(
                    &format!("SELECT count(*) FROM {side}_leases WHERE depth = $1 AND NOT done"),
                    &[&(depth as i32)],
                )
                .context("count a round's open folders")?
                .get(0))
        })?;
        Ok(open as u64)
    }

    /// Leases up to `limit` folders of round `depth` of `side` that no
    /// one holds (never leased, or their lease expired), lowest ids
    /// first, for `time`. A folder leased again whose earlier listing left
    /// children and no position to resume from has them discarded first.
    pub fn lease(
        &self,
        side: Side,
        depth: u32,
        limit: usize,
        time: Duration,
    ) -> Result<Vec<FolderTask>, StoreError> {
        // A lease whose reply was lost with the connection stays taken by
        // this process, unknown to it: it gives such leases back once it
        // finds nothing left to lease (`release_unknown`).
        self.run(|client| {
            let mut tx = client.transaction().context("begin a lease")?;
            let leased = tx
                .query(
                    &format!(
                        "WITH picked AS ( \
                       SELECT node_id FROM {side}_leases \
                       WHERE depth = $1 AND NOT done \
                         AND (expires_at IS NULL OR expires_at < clock_timestamp()) \
                       ORDER BY node_id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     UPDATE {side}_leases l SET epoch = l.epoch + 1, pages = 0, holder = $3, \
                       expires_at = clock_timestamp() + $4 * interval '1 millisecond' \
                     FROM picked WHERE l.node_id = picked.node_id \
                     RETURNING l.node_id, l.epoch, l.position"
                    ),
                    &[
                        &(depth as i32),
                        &(limit as i64),
                        &self.holder(),
                        &millis(time),
                    ],
                )
                .context("lease folders")?;
            if leased.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<i64> = leased.iter().map(|r| r.get(0)).collect();
            let redo: Vec<i64> = leased
                .iter()
                .filter(|r| r.get::<_, i64>(1) > 1 && r.get::<_, Option<Vec<u8>>>(2).is_none())
                .map(|r| r.get(0))
                .collect();
            if !redo.is_empty() {
                discard_children(&mut tx, side, &redo)?;
            }
            let paths = tx
                .query(
                    &format!(
                        "SELECT n.id, n.rel_path, \
                       (SELECT coalesce(max(e.attempt), 0) FROM {side}_status_events e \
                        WHERE e.node_id = n.id AND e.phase = 'list') \
                     FROM {side}_nodes n WHERE n.id = ANY($1)"
                    ),
                    &[&ids],
                )
                .context("read the leased folders")?;
            tx.commit().context("lease folders")?;
            let paths: HashMap<i64, &postgres::Row> = paths.iter().map(|p| (p.get(0), p)).collect();
            let mut leases: Vec<FolderTask> = leased
                .iter()
                .filter_map(|l| {
                    let id: i64 = l.get(0);
                    let p = paths.get(&id)?;
                    Some(FolderTask {
                        id,
                        depth,
                        path: RelPath::from_bytes(p.get(1)),
                        attempts: p.get::<_, i32>(2) as u32,
                        resume_after: l.get(2),
                        epoch: l.get(1),
                    })
                })
                .collect();
            leases.sort_by_key(|l| l.id);
            Ok(leases)
        })
    }

    /// Records children of a leased folder, and `position`, where its
    /// listing stands after them (a lease taken over later resumes from
    /// there); renews the lease for `time`. [`StoreError::LeaseLost`] if
    /// the lease is no longer this one, and then nothing is recorded.
    ///
    /// Each call is a page of the lease, numbered in the lease's row: a
    /// page whose commit landed but whose reply was lost with the
    /// connection is found recorded when it is sent again, and not
    /// recorded twice.
    pub fn record_children(
        &self,
        side: Side,
        lease: &FolderTask,
        children: Vec<ChildRecord>,
        position: Option<Vec<u8>>,
        time: Duration,
    ) -> Result<(), StoreError> {
        let page = self.pages_sent(side, lease);
        let depth = lease.depth as i32 + 1;
        let mut rows = Vec::with_capacity(children.len());
        for child in children {
            let path = lease.path.join(&child.entry.name);
            let size = size_of(&child.entry, &path)?;
            rows.push((child, path, size));
        }
        let recorded = self.run(|client| {
            let mut tx = client.transaction().context("begin recording children")?;
            let held = tx
                .execute(
                    &format!(
                        "UPDATE {side}_leases SET pages = pages + 1, \
                           expires_at = clock_timestamp() + $3 * interval '1 millisecond', \
                           position = coalesce($4, position) \
                         WHERE {HELD} AND pages = $5"
                    ),
                    &[
                        &lease.id,
                        &lease.epoch,
                        &millis(time),
                        &position,
                        &page,
                    ],
                )
                .context("check the lease")?;
            if held == 0 {
                return landed_or_lost(&mut tx, side, lease, "pages", page + 1);
            }
            let mut left_out = Vec::new();
            {
                let sink = tx
                    .copy_in(&format!("COPY {side}_nodes ({NODE_COLUMNS}) FROM STDIN BINARY"))
                    .context("append children")?;
                let mut writer = BinaryCopyInWriter::new(sink, &NODE_TYPES);
                for (child, path, size) in &rows {
                    let e = &child.entry;
                    let (m, file) = (MetaColumns::from(e.meta), e.file_id);
                    let md5 = e.md5.map(|m| m.to_string());
                    let values: [&(dyn ToSql + Sync); 14] = [
                        &lease.id,
                        &depth,
                        &(e.kind.code() as i16),
                        size,
                        &e.mtime_ns,
                        &path.as_bytes(),
                        &m.mode,
                        &m.uid,
                        &m.gid,
                        &m.xattrs,
                        // Bits kept, as the digest's.
                        &file.map(|f| f.dev as i64),
                        &file.map(|f| f.ino as i64),
                        &e.etag,
                        &md5,
                    ];
                    writer.write(&values).context("append a child")?;
                    if let Some(verdict) = &child.left_out {
                        left_out.push((path, verdict));
                    }
                }
                writer.finish().context("append children")?;
            }
            // Few children are left out: each found by its folder and path.
            for (path, (status, reason)) in left_out {
                tx.execute(
                    &format!(
                        "INSERT INTO {side}_status_events (node_id, depth, phase, status, reason, attempt) \
                         SELECT id, $2, 'compare', $3, $4, 1 FROM {side}_nodes \
                         WHERE parent_id = $1 AND rel_path = $5"
                    ),
                    &[&lease.id, &depth, &status.as_str(), reason, &path.as_bytes()],
                )
                .context("record a child left out")?;
            }
            tx.commit().context("record children")
        });
        match recorded {
            Ok(()) => self.page_recorded(side, lease),
            Err(StoreError::LeaseLost { .. }) => self.forget_pages(side, lease),
            Err(_) => {}
        }
        recorded
    }

    /// Completes a leased folder at its `attempt`-th try: all its children
    /// were recorded before. [`StoreError::LeaseLost`] if the lease is no
    /// longer this one.
    pub fn folder_listed(
        &self,
        side: Side,
        lease: &FolderTask,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.finish(side, lease, ListStatus::Listed, None, attempt)
    }

    /// Records that a leased folder could not be listed, and discards
    /// any children recorded for it. [`StoreError::LeaseLost`] if the
    /// lease is no longer this one.
    pub fn folder_failed(
        &self,
        side: Side,
        lease: &FolderTask,
        failure: &Failure,
    ) -> Result<(), StoreError> {
        self.finish(
            side,
            lease,
            ListStatus::Failed,
            Some(failure),
            failure.attempts,
        )
    }

    /// Discards the children recorded under a leased folder so far, and
    /// where its listing stood (before it is listed again from its
    /// start). [`StoreError::LeaseLost`] if the lease is no longer this
    /// one.
    pub fn discard_children(&self, side: Side, lease: &FolderTask) -> Result<(), StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("begin discarding children")?;
            let held = tx
                .execute(
                    &format!("UPDATE {side}_leases SET position = NULL WHERE {HELD}"),
                    &[&lease.id, &lease.epoch],
                )
                .context("check the lease")?;
            if held == 0 {
                return Err(lease_lost(side, lease));
            }
            discard_children(&mut tx, side, &[lease.id])?;
            tx.commit().context("discard children")
        })
    }

    fn finish(
        &self,
        side: Side,
        lease: &FolderTask,
        status: ListStatus,
        failure: Option<&Failure>,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let reason = failure.map(|f| format!("{}: {}", f.kind, f.message));
        self.run(|client| {
            let mut tx = client.transaction().context("begin completing a folder")?;
            let held = tx
                .execute(
                    &format!(
                        "UPDATE {side}_leases SET done = true, holder = NULL, expires_at = NULL \
                         WHERE {HELD}"
                    ),
                    &[&lease.id, &lease.epoch],
                )
                .context("check the lease")?;
            if held == 0 {
                // Done under this very lease: an earlier try whose reply
                // was lost with the connection.
                return landed_or_lost(&mut tx, side, lease, "done::int", 1);
            }
            if let Some(f) = failure {
                discard_children(&mut tx, side, &[lease.id])?;
                tx.execute(
                    "INSERT INTO task_errors (side, phase, node_id, rel_path, operation, kind, \
                       message, attempt) VALUES ($1, 'discovery', $2, $3, $4, $5, $6, $7)",
                    &[
                        &side.as_str(),
                        &lease.id,
                        &lease.path.as_bytes(),
                        &f.operation,
                        &f.kind,
                        &f.message,
                        &(f.attempts as i32),
                    ],
                )
                .context("record the failure")?;
            } else if side == Side::Dst {
                crate::compare::compare_children(
                    &mut tx,
                    lease.id,
                    lease.depth,
                    &lease.path,
                )?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO {side}_status_events (node_id, depth, phase, status, reason, attempt) \
                     VALUES ($1, $2, 'list', $3, $4, $5)"
                ),
                &[
                    &lease.id,
                    &(lease.depth as i32),
                    &status.as_str(),
                    &reason,
                    &(attempt as i32),
                ],
            )
            .context("record the listing")?;
            tx.commit().context("complete a folder")
        })?;
        self.forget_pages(side, lease);
        Ok(())
    }
}

/// For a case-insensitive destination: among source siblings at `depth`
/// whose names differ only in ASCII letter case, keeps the first (by
/// bytes) and excludes the others with the reason, before anything is
/// compared or listed under them (as the DuckDB store does). Processes
/// beginning the round at once take turns.
fn exclude_case_clashes(tx: &mut Transaction<'_>, depth: i32) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock(7365729)", &[])
        .context("wait for another process beginning the round")?;
    // `encode(.., 'escape')` is ASCII whatever the bytes, and folds only
    // ASCII letters when lowered.
    tx.execute(
        "INSERT INTO src_status_events (node_id, depth, phase, status, reason, attempt) \
         SELECT id, $1, 'compare', 'excluded', \
                'dst-case-clash: one name on the destination with ' || encode(keeper, 'escape'), 1 \
         FROM (SELECT n.id, n.rel_path, first_value(n.rel_path) OVER \
                 (PARTITION BY n.parent_id, lower(encode(n.rel_path, 'escape')) ORDER BY n.rel_path) AS keeper \
               FROM src_nodes n WHERE n.depth = $1 AND NOT EXISTS \
                 (SELECT 1 FROM src_status_events e WHERE e.node_id = n.id AND e.phase = 'compare')) c \
         WHERE rel_path <> keeper",
        &[&depth],
    )
    .context("exclude names that clash by case")?;
    Ok(())
}

/// Records `side`'s root folder (depth 0, the empty path); returns its id.
fn insert_root(tx: &mut Transaction<'_>, side: Side, root: &Entry) -> Result<i64, StoreError> {
    let id: i64 = tx
        .query_one("SELECT nextval('node_ids')", &[])
        .context("number a root")?
        .get(0);
    let m = MetaColumns::from(root.meta);
    tx.execute(
        &format!(
            "INSERT INTO {side}_nodes (id, parent_id, depth, kind, size, mtime_ns, rel_path, mode, uid, gid, xattrs) \
             VALUES ($1, NULL, 0, 0, 0, $2, $3, $4, $5, $6, $7)"
        ),
        &[
            &id,
            &root.mtime_ns,
            &RelPath::root().as_bytes(),
            &m.mode,
            &m.uid,
            &m.gid,
            &m.xattrs,
        ],
    )
    .context("record a root")?;
    Ok(id)
}

/// For a write whose lease check failed: `Ok` if the lease row still has
/// `lease`'s epoch and `column` at `value` (the write had in fact been
/// done under this lease, by an earlier try of the same call whose reply
/// was lost), else [`StoreError::LeaseLost`].
fn landed_or_lost(
    tx: &mut Transaction<'_>,
    side: Side,
    lease: &FolderTask,
    column: &str,
    value: i32,
) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT epoch, {column} FROM {side}_leases WHERE node_id = $1"),
            &[&lease.id],
        )
        .context("read the lease")?;
    if row.is_some_and(|r| r.get::<_, i64>(0) == lease.epoch && r.get::<_, i32>(1) == value) {
        Ok(())
    } else {
        Err(lease_lost(side, lease))
    }
}

/// Removes the children recorded for `folders` and their events.
fn discard_children(
    tx: &mut Transaction<'_>,
    side: Side,
    folders: &[i64],
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "DELETE FROM {side}_status_events WHERE node_id IN \
             (SELECT id FROM {side}_nodes WHERE parent_id = ANY($1))"
        ),
        &[&folders],
    )
    .context("discard children's events")?;
    tx.execute(
        &format!("DELETE FROM {side}_nodes WHERE parent_id = ANY($1)"),
        &[&folders],
    )
    .context("discard children")?;
    Ok(())
}
