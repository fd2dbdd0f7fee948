//! The copy on PostgreSQL, shared by any number of processes: the
//! approved plan's items not done yet (`copy_todo`, brought up to date by
//! each process that begins, around the items others hold), each
//! leased as discovery's folders are (`FOR UPDATE SKIP LOCKED`, an expiry
//! by the database's clock, an epoch), and its outcome recorded only under
//! the lease that copied it. The engine's steps (folders depth by depth,
//! then files, then the other names of hard-linked files, then folder
//! times) stay in order across processes: a pull with nothing left to
//! lease waits while other processes hold items of the same step. A
//! verification runs alone: copying processes hold a shared session lock
//! ([`PgStore::hold_copy_lock`]), a verifying one an exclusive one; the
//! database releases a process's lock when it ends, however it ends.

use crate::PgStore;
use crate::error::{Context, db_error};
use crate::events::{Event, append_events};
use crate::state_store::WAIT_FOR_OTHERS;
use postgres::GenericClient;
use std::path::PathBuf;
use std::time::Duration;
use treeshift_core::{Action, CopyStatus, CopySummary, FileId, Kind, Meta, RelPath, Side};
use treeshift_state::plan_sql::{
    COPIES, DATA, PLAN_COLUMNS, copy_summary, copy_summary_from, folders_to_date,
};
use treeshift_state::{CopyEvent, CopyPull, CopyTask, CopyTodo, DstSeen, FolderTime, StoreError};

/// The session lock copying processes hold shared, and a verifying one
/// exclusive.
const COPY_LOCK: i64 = 7365731;

/// A process beginning a copy holds this lock alone, one recording
/// outcomes shared: a beginning reads the items' statuses and then sets
/// the rows from them, with no outcome recorded in between.
const COPY_BEGIN_LOCK: i64 = 7365733;

/// The session lock of the one process that sets the folders' times.
const DATING_LOCK: i64 = 7365734;

/// Held by the transaction that finds the folders to date: a process
/// killed meanwhile loses its session lock at once (that connection sat
/// idle), but its statement goes on in the database until it ends, and the
/// next process's waits for it instead of filling the table beside it.
const FOLDER_DATES_LOCK: i64 = 7365735;

/// The most copy items one pull leases: a process holds no more than it
/// copies soon, so the others find items to take.
const COPY_LEASE_BATCH: usize = 16;

/// The latest copy status, reason and attempt of each plan item.
pub(crate) const LATEST_COPY: &str = "SELECT DISTINCT ON (node_id) node_id, status AS st, reason, attempt \
     FROM src_status_events WHERE phase = 'copy' ORDER BY node_id, seq DESC";

/// Columns of a leased `copy_todo` row `t` a pull reads, in [`copy_task`]'s
/// order. An item leased before may have been begun by the process that
/// held it: it is in flight, as one marked `copying` is.
const TASK_COLUMNS: &str = "t.node_id, t.depth, t.kind, t.action, t.rel_path, t.size, t.mtime_ns, \
     t.dst_kind, t.dst_size, t.dst_mtime_ns, t.copy_status = 'copying' OR t.epoch > 1, t.attempt, \
     t.link_to, t.src_folder_dev, t.src_folder_ino, t.dst_folder_dev, t.dst_folder_ino, t.epoch";

/// An item not done that is not `$1`'s: leased by another process (its
/// lease running or not), or by none yet.
const LEFT_TO_OTHERS: &str = "NOT done AND holder IS DISTINCT FROM $1";

/// The connection on which a process holds the copy lock.
pub(crate) struct Copier {
    client: postgres::Client,
    /// Held exclusive (to verify), not shared (to copy).
    exclusive: bool,
}

impl PgStore {
    /// Takes (or checks that this process still holds) the copy lock:
    /// shared to copy (many processes copy at once), `exclusive` to verify
    /// (alone). Refused with [`StoreError::InUse`], naming the process
    /// that last took it, while another process holds it in the other
    /// mode. A lock lost with its connection (the server restarted) is
    /// taken again if nobody took it meanwhile.
    pub(crate) fn hold_copy_lock(&self, exclusive: bool) -> Result<(), StoreError> {
        let mut slot = self.copier.lock().unwrap_or_else(|p| p.into_inner());
        let mut exclusive = exclusive;
        if let Some(held) = slot.as_mut() {
            if held.client.is_valid(Duration::from_secs(10)).is_err() {
                // Lost with its connection: taken again, in the same mode.
                exclusive |= held.exclusive;
                *slot = None;
            } else if held.exclusive || !exclusive {
                return Ok(());
            }
        }
        // A connection kept holds the lock shared: put back as it was if
        // the exclusive one is refused.
        let (mut client, kept) = match slot.take() {
            Some(held) => (held.client, true),
            None => (
                self.run(|_| crate::connect(&self.url).context("connect"))?,
                false,
            ),
        };
        let function = if exclusive {
            "pg_try_advisory_lock"
        } else {
            "pg_try_advisory_lock_shared"
        };
        let taken: bool = client
            .query_one(&format!("SELECT {function}($1)"), &[&COPY_LOCK])
            .map_err(|e| db_error("take the copy lock", &e))?
            .get(0);
        if !taken {
            let who: Option<String> = client
                .query_opt("SELECT value FROM meta WHERE key = 'copier'", &[])
                .map_err(|e| db_error("read who copies", &e))?
                .map(|r| r.get(0));
            if kept {
                *slot = Some(Copier {
                    client,
                    exclusive: false,
                });
            }
            return Err(StoreError::InUse {
                path: PathBuf::from(&self.location),
                message: format!(
                    "another process ({}) is {} this migration: wait for it to end, or stop it",
                    who.as_deref().unwrap_or("unknown"),
                    if exclusive {
                        "copying or verifying"
                    } else {
                        "verifying"
                    },
                ),
            });
        }
        client
            .execute(
                "INSERT INTO meta VALUES ('copier', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&self.holder],
            )
            .map_err(|e| db_error("record who copies", &e))?;
        *slot = Some(Copier { client, exclusive });
        Ok(())
    }

    /// Takes the copy lock alone, to verify. While other processes hold it
    /// and the copy has finished (they are ending), waits for them, a
    /// minute at most; while the copy goes on, refused.
    pub(crate) fn hold_verify_lock(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.hold_copy_lock(true) {
                Err(StoreError::InUse { .. })
                    if std::time::Instant::now() < deadline && self.copy_finished()? =>
                {
                    std::thread::sleep(WAIT_FOR_OTHERS);
                }
                held => return held,
            }
        }
    }

    /// Lets go of the copy lock, in whichever mode it was held.
    pub(crate) fn release_copy_lock(&self) {
        // Its connection closed, the session lock goes with it.
        self.copier.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Prepares this process's part of a copy run, the same whether other
    /// processes copy already or not: the run's working set is brought up
    /// to the approved items not done yet (those whose latest copy event
    /// is `pending` or `copying`). Items another process holds are left
    /// as they are; any other item is (re)set from the plan, or dropped
    /// once it needs no work. Returns what is left to do.
    pub fn begin_copy(&self) -> Result<CopyTodo, StoreError> {
        self.hold_copy_lock(false)?;
        // Rows no other process holds (none whose lease runs): this
        // process's own are from a run of its own it left.
        let free = format!(
            "(t.done OR t.holder IS NULL OR t.holder = '{}' OR t.expires_at < clock_timestamp())",
            self.holder.replace('\'', "''")
        );
        let columns = format!(
            "{PLAN_COLUMNS}, copy_status, attempt, src_folder_dev, src_folder_ino, \
             dst_folder_dev, dst_folder_ino"
        );
        let refreshed = columns
            .split(',')
            .map(|c| format!("{0} = excluded.{0}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        self.run(|client| {
            let mut tx = client.transaction().context("begin a copy")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COPY_BEGIN_LOCK])
                .context("wait for another process beginning a copy")?;
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE copy_needed ON COMMIT DROP AS \
                 SELECT p.*, coalesce(c.st, 'pending') AS copy_status, \
                   coalesce(c.attempt, 1) AS attempt, sp.dev AS src_folder_dev, \
                   sp.ino AS src_folder_ino, coalesce(dp.dev, qp.dev) AS dst_folder_dev, \
                   coalesce(dp.ino, qp.ino) AS dst_folder_ino \
                 FROM copy_plan p LEFT JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id \
                 LEFT JOIN src_nodes sp ON p.action <> 'quarantine' AND sp.id = p.parent_id \
                 LEFT JOIN dst_nodes dp ON dp.depth = p.depth - 1 AND dp.rel_path = sp.rel_path \
                 LEFT JOIN dst_nodes qp ON p.action = 'quarantine' AND qp.id = p.parent_id \
                 WHERE p.action <> 'skip' AND coalesce(c.st, 'pending') IN ('pending', 'copying'); \
                 DELETE FROM copy_todo WHERE node_id IN ( \
                   SELECT t.node_id FROM copy_todo t WHERE {free} \
                     AND NOT EXISTS (SELECT 1 FROM copy_needed n WHERE n.node_id = t.node_id) \
                   ORDER BY t.node_id FOR UPDATE); \
                 INSERT INTO copy_todo AS t ({columns}) \
                 SELECT * FROM copy_needed ORDER BY node_id \
                 ON CONFLICT (node_id) DO UPDATE SET {refreshed}, \
                   done = false, holder = NULL, expires_at = NULL WHERE {free};"
            ))
            .context("prepare the copy")?;
            let row = tx
                .query_one(
                    &format!(
                        "SELECT count(*) FILTER (WHERE kind = 0 AND action {COPIES}), \
                           count(*) FILTER (WHERE kind <> 0 OR action = 'quarantine'), \
                           coalesce(sum(size) FILTER (WHERE kind = 1 AND action {DATA} \
                                                      AND link_to IS NULL), 0)::bigint, \
                           coalesce(array_agg(DISTINCT depth) \
                                    FILTER (WHERE kind = 0 AND action {COPIES}), '{{}}') \
                         FROM copy_todo WHERE NOT done"
                    ),
                    &[],
                )
                .context("count the copy")?;
            let mut folder_depths: Vec<u32> = row
                .get::<_, Vec<i32>>(3)
                .into_iter()
                .map(|d| d.max(0) as u32)
                .collect();
            folder_depths.sort_unstable();
            tx.commit().context("prepare the copy")?;
            Ok(CopyTodo {
                folders: row.get::<_, i64>(0).max(0) as u64,
                files: row.get::<_, i64>(1).max(0) as u64,
                bytes: row.get::<_, i64>(2).max(0) as u64,
                folder_depths,
            })
        })
    }

    /// Leases the next items of a step of the copy run, [`COPY_LEASE_BATCH`]
    /// at most (`after` plays no part: what is leased is no longer
    /// offered). Empty once every item of the step is done or this
    /// process's; while other processes hold some, waits for them to
    /// finish or expire (the next step must not begin before).
    pub fn pull_copy(
        &self,
        pull: CopyPull,
        _after: i64,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        self.hold_copy_lock(false)?;
        self.beat();
        let step = match pull {
            CopyPull::Folders { depth } => {
                format!("kind = 0 AND action {COPIES} AND depth = {depth}")
            }
            // Quarantine moves (of files and folders alike) run with files.
            CopyPull::Files => "(kind <> 0 OR action = 'quarantine') AND link_to IS NULL".into(),
            CopyPull::Links => "link_to IS NOT NULL".into(),
        };
        let lease = format!(
            "WITH picked AS ( \
               SELECT node_id FROM copy_todo \
               WHERE {step} AND NOT done \
                 AND (expires_at IS NULL OR expires_at < clock_timestamp()) \
               ORDER BY node_id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE copy_todo t SET epoch = t.epoch + 1, holder = $1, \
               expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
             FROM picked WHERE t.node_id = picked.node_id \
             RETURNING {TASK_COLUMNS}"
        );
        // Counted after a lease found nothing: a lease that ran out between
        // the two is counted (and taken on the next try), never missed.
        let others = format!("SELECT count(*) FROM copy_todo WHERE {step} AND {LEFT_TO_OTHERS}");
        let batch = limit.clamp(1, COPY_LEASE_BATCH) as i64;
        let millis = self.lease_time.as_secs_f64() * 1000.0;
        loop {
            let rows = self.run(|client| {
                client
                    .query(&lease, &[&self.holder, &batch, &millis])
                    .context("lease copy items")
            })?;
            if !rows.is_empty() {
                let mut held = self.copy_held.lock().unwrap_or_else(|p| p.into_inner());
                let mut tasks: Vec<CopyTask> = rows
                    .iter()
                    .map(|r| {
                        held.insert(r.get(0), r.get(17));
                        copy_task(r)
                    })
                    .collect();
                tasks.sort_by_key(|t| t.id);
                return Ok(tasks);
            }
            let left_to_others: i64 = self.run(|client| {
                Ok(client
                    .query_one(&others, &[&self.holder])
                    .context("count the items other processes hold")?
                    .get(0))
            })?;
            if left_to_others == 0 {
                let known = |id| {
                    let held = self.copy_held.lock().unwrap_or_else(|p| p.into_inner());
                    held.contains_key(&id)
                };
                if self.release_unknown("copy_todo", &step, known)? > 0 {
                    continue;
                }
                return Ok(Vec::new());
            }
            if self.reap_gone_holders()? == 0 {
                std::thread::sleep(WAIT_FOR_OTHERS);
            }
        }
    }

    /// Records copy outcomes, in one transaction, for the items this
    /// process still holds the lease of (an item whose lease expired and
    /// was taken over is the new holder's to record: its outcome here is
    /// dropped, with a warning): their events, what was written where a
    /// destination tells more than the source, and the failures. An
    /// outcome other than `copying` ends the item's lease.
    pub fn record_copy(&self, events: &[CopyEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let (ids, epochs, ends): (Vec<i64>, Vec<i64>, Vec<bool>) = {
            let held = self.copy_held.lock().unwrap_or_else(|p| p.into_inner());
            let mut columns = (Vec::new(), Vec::new(), Vec::new());
            // In one order, as every process updates rows.
            let mut in_order: Vec<&CopyEvent> = events.iter().collect();
            in_order.sort_by_key(|e| e.id);
            for e in in_order {
                columns.0.push(e.id);
                columns.1.push(held.get(&e.id).copied().unwrap_or(-1));
                columns.2.push(e.status != CopyStatus::Copying);
            }
            columns
        };
        let accepted: std::collections::HashSet<i64> = self.run(|client| {
            let mut tx = client.transaction().context("record copies")?;
            // Never between the statements of a process beginning, which
            // would take an item done here for one still to do.
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared($1)",
                &[&COPY_BEGIN_LOCK],
            )
            .context("wait for a process beginning a copy")?;
            let accepted: std::collections::HashSet<i64> = tx
                .query(
                    "UPDATE copy_todo t SET done = o.ends \
                     FROM unnest($1::bigint[], $2::bigint[], $3::boolean[]) AS o(id, epoch, ends) \
                     WHERE t.node_id = o.id AND t.holder = $4 AND t.epoch = o.epoch AND NOT t.done \
                     RETURNING t.node_id",
                    &[&ids, &epochs, &ends, &self.holder],
                )
                .context("check the copy leases")?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mine = || events.iter().filter(|e| accepted.contains(&e.id));
            append_events(
                &mut tx,
                Side::Src,
                "copy",
                mine().map(|e| Event {
                    node_id: e.id,
                    depth: e.depth as i32,
                    status: e.status.as_str(),
                    reason: e.reason.as_deref(),
                    attempt: e.attempt as i32,
                }),
            )?;
            for e in mine() {
                if e.status == CopyStatus::Copied && !e.written.is_empty() {
                    tx.execute(
                        "INSERT INTO written (depth, rel_path, size, mtime_ns, etag, own_mtime_ns) \
                         SELECT depth, rel_path, size, mtime_ns, $2, $3 FROM copy_plan \
                         WHERE node_id = $1",
                        &[&e.id, &e.written.etag, &e.written.own_mtime_ns],
                    )
                    .context("record what was written")?;
                }
                if let Some((path, failure)) = &e.error {
                    tx.execute(
                        "INSERT INTO task_errors (side, phase, node_id, rel_path, operation, \
                           kind, message, attempt) VALUES ('dst', 'copy', $1, $2, $3, $4, $5, $6)",
                        &[
                            &e.id,
                            &path.as_bytes(),
                            &failure.operation,
                            &failure.kind,
                            &failure.message,
                            &(failure.attempts as i32),
                        ],
                    )
                    .context("record a failed copy")?;
                }
            }
            tx.commit().context("record copies")?;
            Ok(accepted)
        })?;
        let mut held = self.copy_held.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let ends = e.status != CopyStatus::Copying;
            if !accepted.contains(&e.id) {
                tracing::warn!(
                    path = %e.error.as_ref().map_or(String::new(), |(p, _)| p.to_string()),
                    id = e.id,
                    "copy: the lease of an item ran out and another process took it over; \
                     its outcome is that process's to record"
                );
                held.remove(&e.id);
            } else if ends {
                held.remove(&e.id);
            }
        }
        Ok(())
    }

    /// Queues the failed copies (at or under `prefix`) again, one attempt
    /// more each; returns how many.
    pub fn requeue_failed_copies(&self, prefix: Option<&RelPath>) -> Result<u64, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("queue failed copies")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COPY_BEGIN_LOCK])
                .context("wait for a process beginning a copy")?;
            let failed = tx
                .query(
                    &format!(
                        "SELECT p.node_id, p.depth, p.rel_path, c.attempt FROM copy_plan p \
                         JOIN ({LATEST_COPY}) c ON c.node_id = p.node_id WHERE c.st = 'failed'"
                    ),
                    &[],
                )
                .context("find failed copies")?;
            let requeued: Vec<Event<'_>> = failed
                .iter()
                .filter(|r| prefix.is_none_or(|p| RelPath::from_bytes(r.get(2)).is_within(p)))
                .map(|r| Event {
                    node_id: r.get(0),
                    depth: r.get(1),
                    status: CopyStatus::Pending.as_str(),
                    reason: None,
                    attempt: r.get::<_, i32>(3).max(1) + 1,
                })
                .collect();
            let count = requeued.len() as u64;
            // A copy running now (its run made before) takes them too.
            let ids: Vec<i64> = requeued.iter().map(|e| e.node_id).collect();
            let attempts: Vec<i32> = requeued.iter().map(|e| e.attempt).collect();
            tx.execute(
                "UPDATE copy_todo t SET done = false, holder = NULL, expires_at = NULL, \
                   copy_status = 'pending', attempt = o.attempt \
                 FROM unnest($1::bigint[], $2::integer[]) AS o(id, attempt) WHERE t.node_id = o.id",
                &[&ids, &attempts],
            )
            .context("queue failed copies")?;
            append_events(&mut tx, Side::Src, "copy", requeued)?;
            tx.commit().context("queue failed copies")?;
            Ok(count)
        })
    }

    /// Folders whose mtime (and, for those the copy made or updated,
    /// metadata) needs setting, deepest first, after the keyset position
    /// `after`; the first page (`after` = `None`) decides the set.
    pub fn folder_times(
        &self,
        after: Option<(u32, i64)>,
        limit: usize,
    ) -> Result<Vec<FolderTime>, StoreError> {
        if after.is_none() {
            if !self.hold_dating_lock()? {
                // Another process sets them, after the same last item.
                return Ok(Vec::new());
            }
            self.run(|client| {
                client
                    .batch_execute(&format!(
                        "SELECT pg_advisory_xact_lock({FOLDER_DATES_LOCK}); \
                         DELETE FROM folder_dates; INSERT INTO folder_dates {}",
                        folders_to_date(
                            LATEST_COPY,
                            "NULL::integer AS mode, NULL::bigint AS uid, NULL::bigint AS gid, \
                             NULL::bigint AS xattrs, NULL::bigint AS copied_at"
                        )
                    ))
                    .context("find folders to date")
            })?;
        }
        let (depth, id) = after.map_or((i32::MAX, 0), |(d, id)| (d as i32, id));
        let rows = self.run(|client| {
            client
                .query(
                    "SELECT node_id, depth, rel_path, mtime_ns, all_meta, mode, uid, gid, xattrs \
                     FROM folder_dates WHERE depth < $1 OR (depth = $1 AND node_id > $2) \
                     ORDER BY depth DESC, node_id LIMIT $3",
                    &[&depth, &id, &(limit as i64)],
                )
                .context("pull folder times")
        })?;
        Ok(rows
            .iter()
            .map(|r| FolderTime {
                id: r.get(0),
                depth: r.get::<_, i32>(1).max(0) as u32,
                path: RelPath::from_bytes(r.get(2)),
                mtime_ns: r.get(3),
                meta: r.get::<_, bool>(4).then(|| meta_at(r, 5)),
            })
            .collect())
    }

    /// Takes the lock of the one process that sets the folders' times
    /// (kept until it ends); false if another holds it.
    fn hold_dating_lock(&self) -> Result<bool, StoreError> {
        self.hold_copy_lock(false)?;
        let mut slot = self.copier.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = slot.as_mut() else {
            return Ok(false);
        };
        Ok(held
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&DATING_LOCK])
            .map_err(|e| db_error("take the lock of folder times", &e))?
            .get(0))
    }

    /// Records that these folders' (id, depth) times were set.
    pub fn record_dated(&self, folders: &[(i64, u32)]) -> Result<(), StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("record folder times")?;
            append_events(
                &mut tx,
                Side::Src,
                "dated",
                folders.iter().map(|&(node_id, depth)| Event {
                    node_id,
                    depth: depth as i32,
                    status: "set",
                    reason: None,
                    attempt: 1,
                }),
            )?;
            tx.commit().context("record folder times")
        })
    }

    /// Whether the copy of an approved plan finished: a new pass would
    /// start now (which this store does not do yet).
    pub fn copy_finished(&self) -> Result<bool, StoreError> {
        self.run(|client| {
            let approved: bool = client
                .query_one(
                    "SELECT approval IS NOT NULL FROM migrations WHERE id = 1",
                    &[],
                )
                .context("read the approval")?
                .get(0);
            Ok(approved && read_copy_summary(client)?.is_finished())
        })
    }

    /// Copy progress and results.
    pub fn copy_summary(&self) -> Result<CopySummary, StoreError> {
        self.run(read_copy_summary)
    }
}

/// Copy progress and results, read through `client`.
pub(crate) fn read_copy_summary(
    client: &mut impl GenericClient,
) -> Result<CopySummary, StoreError> {
    let row = client
        .query_one(&copy_summary(LATEST_COPY), &[])
        .context("summarise the copy")?;
    Ok(copy_summary_from(|i| row.get(i)))
}

/// A copy task from a row of [`TASK_COLUMNS`].
fn copy_task(r: &postgres::Row) -> CopyTask {
    let dst_kind: Option<i16> = r.get(7);
    let action: &str = r.get(3);
    CopyTask {
        id: r.get(0),
        depth: r.get::<_, i32>(1).max(0) as u32,
        kind: kind_of(r.get(2)),
        action: action.parse().unwrap_or(Action::Skip),
        path: RelPath::from_bytes(r.get(4)),
        size: r.get::<_, i64>(5).max(0) as u64,
        mtime_ns: r.get(6),
        dst: dst_kind.map(|k| DstSeen {
            kind: kind_of(k),
            size: r.get::<_, Option<i64>>(8).unwrap_or(0).max(0) as u64,
            mtime_ns: r.get(9),
        }),
        in_flight: r.get(10),
        attempt: r.get::<_, i32>(11).max(1) as u32,
        link_to: r.get::<_, Option<Vec<u8>>>(12).map(RelPath::from_bytes),
        folders: [file_id_at(r, 13), file_id_at(r, 15)],
    }
}

/// The identity in the two columns from `at` (dev, ino), if recorded.
fn file_id_at(r: &postgres::Row, at: usize) -> Option<FileId> {
    match (r.get::<_, Option<i64>>(at), r.get::<_, Option<i64>>(at + 1)) {
        (Some(dev), Some(ino)) => Some(FileId {
            dev: dev as u64,
            ino: ino as u64,
        }),
        _ => None,
    }
}

/// The metadata in the four columns from `at` (mode, uid, gid, xattrs).
pub(crate) fn meta_at(r: &postgres::Row, at: usize) -> Meta {
    Meta {
        mode: r.get::<_, Option<i32>>(at).map(|v| v as u32),
        uid: r.get::<_, Option<i64>>(at + 1).map(|v| v as u32),
        gid: r.get::<_, Option<i64>>(at + 2).map(|v| v as u32),
        xattrs: r.get::<_, Option<i64>>(at + 3).map(|v| v as u64),
    }
}

pub(crate) fn kind_of(code: i16) -> Kind {
    Kind::from_code(code as u8).unwrap_or(Kind::Special)
}
