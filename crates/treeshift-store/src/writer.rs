//! The store thread: owns the DuckDB connection, buffers appends, runs the
//! set-based statements (round seals, pulls, summaries, reviews). This file
//! holds the thread's loop and transactions; by concern:
//!
//! - `open`: settings, identity checks, creating and upgrading the schema
//! - `append`: buffered rows and their batched commits
//! - `rounds`: roots, frontiers, pulls, seals, progress
//! - `compare`: the destination seal's comparison
//! - `stats`: statistics per depth and the summary
//! - `review`: review reads
//! - `credentials`: the sealed connections and the wrapped data key
//! - `plan`: the plan, its drafts and hash, and its approval
//! - `copy`, `retry`, `pass`, `report`, `logs`: the copy and verify
//!   statuses, retry sweeps, delta passes, reports, log records
//!
//! The submodules share this file's imports (`use super::*`).

use crate::backlog::Backlog;
use crate::error::{Context, is_out_of_memory};
use crate::schema::{
    CREATE, FOLDER, LEFT_OUT, SCHEMA_VERSION, UPGRADE_FROM_2, UPGRADE_NODES_FROM_2,
    UPGRADE_NODES_FROM_4, UPGRADE_PLAN_FROM_2, event_types, upgrade_from_3,
};
use crate::{
    BelowStatus, BrowseChild, ChildRecord, Failure, FolderTask, LogRecord, MigrationSpec, OpenMode,
    ReviewFilter, ReviewItem, ReviewSelect, RoundProgress, StoreError,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use duckdb::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, StringArray, UInt8Array, UInt32Array,
    UInt64Array,
};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::types::{TimeUnit, Value};
use duckdb::{Config, Connection, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use treeshift_core::{Entry, Kind, Phase, RelPath, Side, Status, Summary};

mod append;
mod browse;
mod checkpoint;
mod compare;
mod copy;
mod credentials;
mod logs;
mod open;
mod pass;
mod plan;
mod report;
mod retry;
mod review;
mod rounds;
#[cfg(test)]
mod rules;
mod stats;

use append::{Buffers, ErrorRow, EventRow, append_buffered};
pub(crate) use checkpoint::Overlap;
use compare::{Comparison, IN_STEP, Slices, exclude_case_clashes, has_previous_pass, id_slices};
use open::MEMORY_CEILING_MB;
use rounds::latest_listing;
use stats::replace_depth_stats;

/// Buffered rows are committed once there are this many (20k rather than
/// 50k: S3 peaked 2-4 MiB lower over six paired runs, at no cost in time)...
const FLUSH_ROWS: usize = 20_000;

/// ...or once the oldest has waited this long.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Prepared statements each reader keeps (see [`Db::row`]): more than a
/// status reads (about twenty), so that asking again finds them all.
const STATEMENT_CACHE: usize = 64;

/// Prepared statements the store thread keeps: none. Its statements
/// seldom repeat (a round's depth is in their text), and a kept statement
/// holds its last result until it runs again (duckdb-rs frees it only
/// then). With no room, the cache drops each statement after its run, as
/// an uncached one is.
pub(super) const WRITER_STATEMENT_CACHE: usize = 0;

/// A closure run on the store thread with exclusive access to the writer.
pub(crate) type Call = Box<dyn FnOnce(&mut Writer) + Send>;

/// Messages to the store thread. Appends are fire-and-forget (the bounded
/// channel applies back-pressure); everything that needs an answer is a
/// [`Request::Call`].
pub(crate) enum Request {
    Children {
        side: Side,
        parent_id: i64,
        depth: u32,
        parent_path: RelPath,
        children: Vec<ChildRecord>,
        position: Option<Vec<u8>>,
    },
    Listed {
        side: Side,
        id: i64,
        depth: u32,
        attempt: u32,
    },
    Logs(Vec<LogRecord>),
    Call(Call),
    Stop,
}

impl Request {
    /// What the message weighs in the channel's backlog (see `backlog`).
    pub(crate) fn rows(&self) -> usize {
        match self {
            Request::Children { children, .. } => children.len().max(1),
            Request::Logs(records) => records.len().max(1),
            Request::Listed { .. } | Request::Call(_) => 1,
            Request::Stop => 0,
        }
    }
}

fn ix(side: Side) -> usize {
    match side {
        Side::Src => 0,
        Side::Dst => 1,
    }
}

fn now_value() -> Value {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

/// One connection to the state file, with the queries that only read.
/// The store thread's [`Writer`] holds one; each reader thread (see
/// `reader`) another.
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// [`Connection::query_row`] through the connection's cache of
    /// prepared statements: on a reader, a read asked again (a status,
    /// every second or so from a watcher) is parsed and planned once per
    /// connection, which was over half of a status's time (BENCHMARKS.md).
    /// DuckDB plans a statement again by itself when the schema it read
    /// has changed, and one that calls `now()` every time. The store
    /// thread's connection keeps none ([`WRITER_STATEMENT_CACHE`]).
    fn row<T, P: duckdb::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&duckdb::Row<'_>) -> Result<T, duckdb::Error>,
    ) -> Result<T, duckdb::Error> {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }

    fn query_i64(&self, sql: &str) -> Result<i64, StoreError> {
        self.row(sql, [], |r| r.get(0)).context(sql.to_string())
    }

    /// The `N` counts (or sums) of one row `sql` selects, none below zero.
    fn query_counts<const N: usize>(&self, sql: &str, what: &str) -> Result<[u64; N], StoreError> {
        self.row(sql, [], |r| {
            let mut counts = [0u64; N];
            for (i, count) in counts.iter_mut().enumerate() {
                *count = r.get::<_, i64>(i)?.max(0) as u64;
            }
            Ok(counts)
        })
        .context(what.to_string())
    }

    pub(crate) fn flag(&self, key: &str) -> Result<bool, StoreError> {
        exists(
            &self.conn,
            &format!("SELECT 1 FROM meta WHERE key = '{key}' AND value = 'true'"),
        )
        .context("read a flag")
    }

    pub(crate) fn phase(&self) -> Result<Phase, StoreError> {
        let text: String = self
            .row("SELECT phase FROM migrations WHERE id = 1", [], |r| {
                r.get(0)
            })
            .context("read the phase")?;
        text.parse()
            .map_err(|why: String| StoreError::NotAStateFile {
                path: self.path.clone(),
                detail: why,
            })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Another connection to the same database, for a reader thread.
    pub(crate) fn another(&self) -> Result<Db, StoreError> {
        let conn = self.conn.try_clone().context("open a reader connection")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Db {
            conn,
            path: self.path.clone(),
        })
    }
}

/// Owns the connection that writes, and the rows buffered for it. Every
/// method runs on the store thread; the reads it shares with the reader
/// threads are [`Db`]'s.
pub(crate) struct Writer {
    db: Db,
    next_id: i64,
    next_seq: i64,
    buf: Buffers,
    stopping: bool,
    /// The migration's `--dst-case-insensitive`, read once (it never changes
    /// for a state file).
    dst_case_insensitive: Option<bool>,
    /// Nodes per statement of a seal (see `compare::id_slices`).
    seal_slice: i64,
    /// Set when a commit failed (a full disk, an I/O error). DuckDB then
    /// rolls the transaction back in memory, but a later checkpoint could
    /// write what that left behind, and the file would lose or mix rows
    /// (seen in the torture suite on a full disk). So nothing is written
    /// after it: the store thread stops, and the next run resumes from the
    /// commits that did land (replayed from the WAL).
    commit_failed: Option<String>,
    /// Per side, how many rounds begun since opening looked for listings
    /// cut short. Only an earlier process can leave one (a listing that
    /// fails in this one is discarded on the spot), in the first round it
    /// resumes or, as the source lists a round while the round before is
    /// sealed, in the round after; so the first two rounds look.
    cut_short_checked: [u8; 2],
    /// The plan last drafted into `plan_candidate`, and what it was
    /// drafted from (see `plan::Drafted`).
    drafted: Option<plan::Drafted>,
    /// Shared with the reader threads: reads beside a checkpoint.
    pub(crate) overlap: Arc<Overlap>,
}

impl Writer {
    /// Sets the nodes per statement of a seal (as `TREESHIFT_SEAL_SLICE`
    /// does at open).
    #[cfg(test)]
    pub(crate) fn set_seal_slice(&mut self, slice: i64) {
        self.seal_slice = slice;
    }

    /// Runs `f` in one transaction. If DuckDB runs out of memory, the
    /// transaction is rolled back and, under the default (adaptive) limit,
    /// run again with twice the memory: one round of a huge tree may need
    /// more than the default, and a user is better served by a warning
    /// than by a failed run.
    fn in_transaction<R>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Connection) -> Result<R, duckdb::Error>,
    ) -> Result<R, StoreError> {
        loop {
            self.conn.execute_batch("BEGIN TRANSACTION").context(what)?;
            match f(&self.conn) {
                Ok(r) => match self.conn.execute_batch("COMMIT").context(what) {
                    Ok(()) => {
                        self.checkpoint_if_due()?;
                        return Ok(r);
                    }
                    Err(e) => {
                        self.commit_failed = Some(e.to_string());
                        return Err(e);
                    }
                },
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    tracing::debug!(error = %e, "{what}: rolled back");
                    if !(is_out_of_memory(&e) && self.raise_memory_limit(what)?) {
                        return Err(e).context(what);
                    }
                }
            }
        }
    }

    /// Runs `f`, statements that write nothing to the file (reads, temp
    /// tables), outside any transaction (see [`Writer::read`]).
    fn outside_transaction<R>(
        &mut self,
        what: &str,
        f: impl Fn(&Connection) -> Result<R, duckdb::Error>,
    ) -> Result<R, StoreError> {
        self.without_transaction(what, |db| f(&db.conn).context(what))
    }

    /// Runs a read with the writer's connection (see
    /// [`Writer::without_transaction`]).
    pub(crate) fn read<R>(
        &mut self,
        f: impl Fn(&Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.without_transaction("a read", f)
    }

    /// Runs `f` outside any transaction. Readers share the memory limit:
    /// what runs out runs again with more, as a transaction would.
    fn without_transaction<R>(
        &mut self,
        what: &str,
        f: impl Fn(&Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        loop {
            match f(&self.db) {
                Err(e) if e.is_out_of_memory() && self.raise_memory_limit(what)? => {}
                answer => return answer,
            }
        }
    }

    /// Doubles an adaptive memory limit, up to [`MEMORY_CEILING_MB`].
    /// Returns whether it grew.
    fn raise_memory_limit(&mut self, what: &str) -> Result<bool, StoreError> {
        let mut overlap = self.overlap.lock();
        let Some(mb) = overlap.adaptive_mb.filter(|&mb| mb < MEMORY_CEILING_MB) else {
            return Ok(false);
        };
        let raised = (mb * 2).min(MEMORY_CEILING_MB);
        self.conn
            .execute_batch(&format!("SET memory_limit = '{raised}MB'"))
            .context("raise the memory limit")?;
        overlap.adaptive_mb = Some(raised);
        tracing::warn!(
            from_mb = mb,
            to_mb = raised,
            "state store ran out of memory ({what}); raised its limit and ran it again"
        );
        Ok(true)
    }

    /// Serves requests until told to stop. Commits buffered rows when enough
    /// piled up or the oldest waited long enough.
    pub(crate) fn serve(
        &mut self,
        rx: &Receiver<Request>,
        backlog: &Backlog,
    ) -> Result<(), StoreError> {
        loop {
            let wait = match self.buf.since {
                Some(t) => FLUSH_INTERVAL.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            let received = rx.recv_timeout(wait);
            if let Ok(request) = &received {
                backlog.remove(request.rows());
            }
            match received {
                Ok(Request::Children {
                    side,
                    parent_id,
                    depth,
                    parent_path,
                    children,
                    position,
                }) => {
                    self.buffer_children(side, parent_id, depth, &parent_path, children);
                    if let Some(after) = position {
                        let seq = self.take_seq();
                        self.buf.positions.push((side, parent_id, after, seq));
                    }
                }
                Ok(Request::Listed {
                    side,
                    id,
                    depth,
                    attempt,
                }) => {
                    let seq = self.take_seq();
                    self.buffer_event(
                        side,
                        EventRow {
                            seq,
                            node_id: id,
                            depth,
                            phase: "list",
                            status: "listed",
                            reason: None,
                            attempt,
                        },
                    );
                }
                Ok(Request::Logs(records)) => self.buffer_logs(records),
                Ok(Request::Call(call)) => {
                    call(self);
                    // A call may have written outside `in_transaction`.
                    if self.commit_failed.is_none() {
                        self.checkpoint_if_due()?;
                    }
                }
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    return self.shutdown();
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.stopping {
                return Ok(());
            }
            self.no_failed_commit()?;
            let due = self
                .buf
                .since
                .is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL);
            if self.buf.rows >= FLUSH_ROWS || due {
                self.flush()?;
            }
        }
    }

    /// Commits what is buffered and checkpoints the file; the thread then ends.
    pub(crate) fn shutdown(&mut self) -> Result<(), StoreError> {
        self.stopping = true;
        self.no_failed_commit()?;
        self.flush()?;
        // The reader threads have stopped (see `Readers`).
        self.conn.execute_batch("CHECKPOINT").context("checkpoint")
    }

    /// Refuses to go on after a failed commit (see `commit_failed`).
    fn no_failed_commit(&self) -> Result<(), StoreError> {
        match &self.commit_failed {
            Some(why) => Err(StoreError::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Sets a flag of the migration in `meta` (idempotent).
    pub(crate) fn set_flag(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta VALUES (?, 'true')",
                params![key],
            )
            .context("record a flag")?;
        Ok(())
    }

    pub(crate) fn set_phase(&mut self, phase: Phase) -> Result<(), StoreError> {
        self.flush()?;
        self.conn
            .execute(
                "UPDATE migrations SET phase = ?, updated_at = now() WHERE id = 1",
                params![phase.as_str()],
            )
            .context("set the phase")?;
        Ok(())
    }
}

/// The writer reads through its own connection, after committing what it
/// buffered (the caller does that: see `StoreHandle::read`).
impl std::ops::Deref for Writer {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.db
    }
}

/// Whether the query `sql` returns any row. Through the connection's
/// statement cache, as [`Db::row`]: a reader keeps the statement, the
/// store thread does not.
fn exists(conn: &Connection, sql: &str) -> Result<bool, duckdb::Error> {
    conn.prepare_cached(&format!("SELECT EXISTS ({sql})"))?
        .query_row([], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list of 3M integers (24 MB) must be held whole: it cannot spill.
    const NEEDS_24_MB: &str = "SELECT len(list(range)) FROM range(3000000)";

    fn writer(dir: &Path) -> Writer {
        let spec = MigrationSpec {
            src: "sim:a".into(),
            dst: "sim:b".into(),
            filter: Default::default(),
            dst_case_insensitive: false,
            keep: Default::default(),
        };
        Writer::open(
            &dir.join("s.duckdb"),
            &OpenMode::CreateOrResume(Box::new(spec)),
        )
        .unwrap()
        .0
    }

    #[test]
    fn a_file_of_the_previous_schema_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        w.conn
            .execute_batch(
                "INSERT INTO src_nodes (id, depth, kind, size, rel_path) VALUES (7, 1, 1, 3, 'a'::BLOB)",
            )
            .unwrap();
        // What a version 2 file looked like: no metadata columns.
        for table in ["src_nodes", "dst_nodes", "copy_plan"] {
            for column in ["mode", "uid", "gid", "xattrs"] {
                w.conn
                    .execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                    .unwrap();
            }
        }
        for table in ["src_nodes", "dst_nodes"] {
            for column in ["dev", "ino", "etag", "md5"] {
                w.conn
                    .execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                    .unwrap();
            }
        }
        // Nor the enums of the event tables (schema 4).
        for statement in crate::schema::events_as_in_schema_3() {
            w.conn.execute_batch(&statement).unwrap();
        }
        w.conn
            .execute_batch(
                "ALTER TABLE copy_plan DROP COLUMN link_to; \
                 UPDATE meta SET value = '2' WHERE key = 'schema_version'",
            )
            .unwrap();
        w.shutdown().unwrap();
        drop(w);
        let w = writer(dir.path());
        let (version, mode, size): (String, Option<u32>, u64) = w
            .conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema_version'), mode, size \
                 FROM src_nodes WHERE id = 7",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((version, mode, size), (SCHEMA_VERSION.to_string(), None, 3));
    }

    #[test]
    fn a_file_of_schema_4_gains_the_listings_md5_column_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        for table in ["src_nodes", "dst_nodes"] {
            w.conn
                .execute_batch(&format!("ALTER TABLE {table} DROP COLUMN md5"))
                .unwrap();
        }
        w.conn
            .execute_batch("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
            .unwrap();
        w.shutdown().unwrap();
        drop(w);
        let w = writer(dir.path());
        for table in ["src_nodes", "dst_nodes"] {
            // Last, where the appender puts it.
            let last: String = w
                .conn
                .query_row(
                    &format!(
                        "SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}' \
                         ORDER BY column_index DESC LIMIT 1"
                    ),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(last, "md5");
        }
    }

    /// Commits about 6 MB of rows outside the writer's transactions (no
    /// checkpoint), then one more row through one (a checkpoint is due).
    fn commit_past_the_wal_threshold(w: &mut Writer) {
        w.conn
            .execute_batch(
                "INSERT INTO meta SELECT 'row ' || range, repeat('x', 100) FROM range(60000)",
            )
            .unwrap();
        assert!(
            w.wal_bytes() > checkpoint::CHECKPOINT_WAL,
            "a commit alone does not checkpoint: {} bytes of WAL",
            w.wal_bytes()
        );
        w.in_transaction("more rows", |c| {
            c.execute_batch("INSERT INTO meta VALUES ('one more', 'x')")
        })
        .unwrap();
    }

    #[test]
    fn a_commit_past_the_wal_threshold_is_checkpointed_with_the_limit_lowered_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let adaptive = checkpoint::memory_limit(&w.conn);
        commit_past_the_wal_threshold(&mut w);
        assert!(w.wal_bytes() < checkpoint::CHECKPOINT_WAL, "checkpointed");
        assert_eq!(
            checkpoint::memory_limit(&w.conn),
            adaptive,
            "the limit lowered again"
        );
        assert!(!w.limit_raised());
        let rows = w
            .query_i64("SELECT count(*) FROM meta WHERE key LIKE 'row %'")
            .unwrap();
        assert_eq!(rows, 60_000);
    }

    #[test]
    fn a_checkpoint_goes_on_beside_a_read_and_lowers_the_limit_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let adaptive = checkpoint::memory_limit(&w.conn);
        // A read held on another connection until the checkpoint is over,
        // or long after it should be.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (began_tx, began_rx) = std::sync::mpsc::channel();
        let reader = {
            let overlap = Arc::clone(&w.overlap);
            let db = w.another().unwrap();
            std::thread::spawn(move || {
                let _reading = overlap.read(db.conn());
                began_tx.send(()).unwrap();
                // Ok: told the checkpoint is over; Err: it waited for this read.
                done_rx.recv_timeout(Duration::from_secs(30)).is_ok()
            })
        };
        began_rx.recv().unwrap();
        commit_past_the_wal_threshold(&mut w);
        let _ = done_tx.send(());
        assert!(reader.join().unwrap(), "the checkpoint waited for the read");
        assert!(w.wal_bytes() < checkpoint::CHECKPOINT_WAL);
        assert_eq!(checkpoint::memory_limit(&w.conn), adaptive);
        assert!(!w.limit_raised());
    }

    fn limit_to(w: &mut Writer, mb: u64, adaptive: bool) {
        w.conn
            .execute_batch(&format!("SET memory_limit = '{mb}MB'"))
            .unwrap();
        w.overlap.lock().adaptive_mb = adaptive.then_some(mb);
    }

    #[test]
    fn out_of_memory_runs_again_with_a_raised_limit_unless_the_user_fixed_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        limit_to(&mut w, 2, true);
        let n: i64 = w
            .in_transaction("a big list", |c| c.query_row(NEEDS_24_MB, [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 3_000_000);
        let raised = w.overlap.lock().adaptive_mb.unwrap();
        assert!(
            raised > 2 && raised < MEMORY_CEILING_MB && raised.is_power_of_two(),
            "doubled from 2 MB to {raised} MB"
        );

        limit_to(&mut w, 2, false);
        let err = w
            .in_transaction("a big list", |c| {
                c.query_row::<i64, _, _>(NEEDS_24_MB, [], |r| r.get(0))
            })
            .unwrap_err();
        assert!(err.to_string().contains("TREESHIFT_DB_MEMORY"), "{err}");

        limit_to(&mut w, MEMORY_CEILING_MB / 2, true);
        assert!(w.raise_memory_limit("test").unwrap());
        assert!(
            !w.raise_memory_limit("test").unwrap(),
            "never past the ceiling"
        );
    }
}
