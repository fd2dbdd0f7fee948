//! The store thread: owns the DuckDB connection, buffers appends, runs the
//! set-based statements (round seals, pulls, summaries, reviews).

use crate::error::{Context, is_out_of_memory};
use crate::schema::{
    CREATE, FOLDER, LEFT_OUT, SCHEMA_VERSION, UPGRADE_FROM_2, UPGRADE_NODES_FROM_2,
    UPGRADE_PLAN_FROM_2,
};
use crate::{
    ChildRecord, Failure, FolderTask, LogRecord, MigrationSpec, OpenMode, ReviewItem, ReviewSelect,
    RoundProgress, StoreError,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use duckdb::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, UInt8Array, UInt32Array, UInt64Array,
};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::types::{TimeUnit, Value};
use duckdb::{Config, Connection, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use treeshift_core::{
    Entry, FilterSpec, Keep, Kind, LeftAlone, RelPath, RoundState, Side, Status, Summary, ToCopy,
    Totals,
};

mod copy;
mod logs;
mod pass;
mod report;
mod retry;

/// Buffered rows are committed once there are this many (20k rather than
/// 50k: S3 peaked 2-4 MiB lower over six paired runs, at no cost in time)...
const FLUSH_ROWS: usize = 20_000;
/// ...or once the oldest has waited this long.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// WAL size that triggers a checkpoint (DuckDB's default is 16 MB); see
/// [`Writer::open`].
const CHECKPOINT_WAL: &str = "4MB";
/// Rows per batch sent to a review consumer.
const REVIEW_BATCH: usize = 1_000;

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

struct NodeRow {
    id: i64,
    parent_id: i64,
    depth: u32,
    kind: u8,
    size: u64,
    mtime_ns: Option<i64>,
    rel_path: Vec<u8>,
    meta: treeshift_core::Meta,
    link: Option<treeshift_core::FileId>,
}

struct EventRow {
    seq: i64,
    node_id: i64,
    depth: u32,
    phase: &'static str,
    status: &'static str,
    reason: Option<String>,
    attempt: u32,
}

struct ErrorRow {
    seq: i64,
    side: Side,
    phase: &'static str,
    node_id: i64,
    rel_path: Vec<u8>,
    failure: Failure,
}

#[derive(Default)]
struct Buffers {
    nodes: [Vec<NodeRow>; 2],
    events: [Vec<EventRow>; 2],
    errors: Vec<ErrorRow>,
    logs: Vec<(i64, LogRecord)>,
    rows: usize,
    since: Option<Instant>,
}

impl Buffers {
    fn is_empty(&self) -> bool {
        self.rows == 0 && self.errors.is_empty() && self.logs.is_empty()
    }
}

/// Appends buffered rows inside the caller's transaction. Node rows go
/// before event rows: a `listed` event never lands without the children it
/// vouches for.
fn append_buffered(conn: &Connection, buf: &Buffers) -> Result<(), duckdb::Error> {
    let now = now_value();
    for side in Side::BOTH {
        let nodes = &buf.nodes[ix(side)];
        if !nodes.is_empty() {
            let mut app = conn.appender(&format!("{side}_nodes"))?;
            app.append_record_batch(node_batch(nodes)?)?;
            app.flush()?;
        }
        let events = &buf.events[ix(side)];
        if !events.is_empty() {
            let mut app = conn.appender(&format!("{side}_status_events"))?;
            for e in events {
                app.append_row(params![
                    e.seq,
                    e.node_id,
                    e.depth as i32,
                    e.phase,
                    e.status,
                    e.reason.as_deref(),
                    e.attempt as i32,
                    now.clone()
                ])?;
            }
            app.flush()?;
        }
    }
    if !buf.errors.is_empty() {
        let mut app = conn.appender("task_errors")?;
        for e in &buf.errors {
            app.append_row(params![
                e.seq,
                e.side.as_str(),
                e.phase,
                e.node_id,
                e.rel_path.as_slice(),
                e.failure.operation.as_str(),
                e.failure.kind.as_str(),
                e.failure.message.as_str(),
                e.failure.attempts as i32,
                now.clone()
            ])?;
        }
        app.flush()?;
    }
    if !buf.logs.is_empty() {
        let mut app = conn.appender("logs")?;
        for (seq, log) in &buf.logs {
            app.append_row(params![
                seq,
                Value::Timestamp(TimeUnit::Microsecond, log.at_micros),
                log.level,
                log.target.as_str(),
                log.message.as_str()
            ])?;
        }
        app.flush()?;
    }
    Ok(())
}

/// Node rows as one Arrow batch: DuckDB appends it column by column, where
/// a row-by-row append converts every value on its own (S1's nodes: about a
/// third less time in the appender, measured on 200k rows).
fn node_batch(nodes: &[NodeRow]) -> Result<RecordBatch, duckdb::Error> {
    let path_bytes = nodes.iter().map(|n| n.rel_path.len()).sum();
    let mut paths = BinaryBuilder::with_capacity(nodes.len(), path_bytes);
    for n in nodes {
        paths.append_value(&n.rel_path);
    }
    let u32s = |f: fn(&NodeRow) -> Option<u32>| -> ArrayRef {
        Arc::new(UInt32Array::from_iter(nodes.iter().map(f)))
    };
    let u64s = |f: fn(&NodeRow) -> Option<u64>| -> ArrayRef {
        Arc::new(UInt64Array::from_iter(nodes.iter().map(f)))
    };
    let columns: [(&str, ArrayRef); 13] = [
        (
            "id",
            Arc::new(Int64Array::from_iter_values(nodes.iter().map(|n| n.id))),
        ),
        (
            "parent_id",
            Arc::new(Int64Array::from_iter_values(
                nodes.iter().map(|n| n.parent_id),
            )),
        ),
        (
            "depth",
            Arc::new(Int32Array::from_iter_values(
                nodes.iter().map(|n| n.depth as i32),
            )),
        ),
        (
            "kind",
            Arc::new(UInt8Array::from_iter_values(nodes.iter().map(|n| n.kind))),
        ),
        (
            "size",
            Arc::new(UInt64Array::from_iter_values(nodes.iter().map(|n| n.size))),
        ),
        (
            "mtime_ns",
            Arc::new(Int64Array::from_iter(nodes.iter().map(|n| n.mtime_ns))),
        ),
        ("rel_path", Arc::new(paths.finish())),
        ("mode", u32s(|n| n.meta.mode)),
        ("uid", u32s(|n| n.meta.uid)),
        ("gid", u32s(|n| n.meta.gid)),
        ("xattrs", u64s(|n| n.meta.xattrs)),
        ("link_dev", u64s(|n| n.link.map(|l| l.dev))),
        ("link_ino", u64s(|n| n.link.map(|l| l.ino))),
    ];
    RecordBatch::try_from_iter(columns)
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))
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

/// Owns the connection. Every method runs on the store thread.
pub(crate) struct Writer {
    conn: Connection,
    path: PathBuf,
    next_id: i64,
    next_seq: i64,
    buf: Buffers,
    stopping: bool,
    /// The migration's `--dst-case-insensitive`, read once (it never changes
    /// for a state file).
    dst_case_insensitive: Option<bool>,
    /// DuckDB's memory limit in MB when it may grow (not set by the user).
    memory_limit_mb: Option<u64>,
    /// Set when a commit failed (a full disk, an I/O error). DuckDB then
    /// rolls the transaction back in memory, but a later checkpoint could
    /// write what that left behind, and the file would lose or mix rows
    /// (seen in the torture suite on a full disk). So nothing is written
    /// after it: the store thread stops, and the next run resumes from the
    /// commits that did land (replayed from the WAL).
    commit_failed: Option<String>,
    /// Per side, whether a round begun since opening already looked for
    /// listings cut short. Only an earlier process can leave one (a listing
    /// that fails in this one is discarded on the spot), so one look after
    /// opening is enough.
    cut_short_checked: [bool; 2],
}

impl Writer {
    /// Opens or creates the file; returns the writer and whether it already
    /// held this migration.
    pub(crate) fn open(path: &Path, mode: &OpenMode) -> Result<(Writer, bool), StoreError> {
        let existed = path.exists();
        if !existed && matches!(mode, OpenMode::Existing) {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        if existed && path.is_dir() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "it is a folder".into(),
            });
        }
        // Bounded memory. Rows committed since the last checkpoint live in
        // memory that DuckDB cannot evict (`IN_MEMORY_TABLE` in
        // `duckdb_memory()`: 20 MB before S1's last seal with the default
        // 16 MB WAL threshold, which is what ran out at a 40 MB limit), so
        // the file is checkpointed every 4 MB of WAL; what is checkpointed
        // can be evicted, and joins spill past the limit to a temp folder.
        // One DuckDB thread: the store thread runs every statement itself,
        // with no hand-offs to helper threads that compete with the listing
        // workers for the same cores, and with one set of per-thread join
        // and aggregate buffers instead of two.
        // No extension autoloading: the JSON columns are plain text, and a
        // state store must never reach for the network.
        let (limit, memory_limit_mb) = memory_limit();
        let config = Config::default()
            .enable_autoload_extension(false)
            .and_then(|c| c.max_memory(&limit))
            .and_then(|c| c.threads(1))
            .and_then(|c| c.with("checkpoint_threshold", CHECKPOINT_WAL))
            .and_then(|c| c.with("preserve_insertion_order", "false"))
            .context("configure DuckDB")?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| {
            let message = explain_open_error(&e);
            if is_lock_error(&e) {
                StoreError::InUse {
                    path: path.to_path_buf(),
                    message,
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    message,
                }
            }
        })?;
        // Only `shutdown` checkpoints (after a clean run); closing the
        // connection must not, for the reason at `commit_failed`.
        conn.execute_batch("PRAGMA disable_checkpoint_on_shutdown")
            .context("configure DuckDB")?;
        let mut writer = Writer {
            conn,
            path: path.to_path_buf(),
            next_id: 1,
            next_seq: 1,
            buf: Buffers::default(),
            stopping: false,
            dst_case_insensitive: None,
            memory_limit_mb,
            commit_failed: None,
            cut_short_checked: [false; 2],
        };
        let (has_meta, tables) = writer.tables()?;
        let resumed = if has_meta {
            writer.check_version()?;
            writer.upgrade()?;
            if let OpenMode::CreateOrResume(spec) = mode {
                writer.check_same_migration(spec)?;
            }
            true
        } else if tables > 0 {
            return Err(StoreError::NotAStateFile {
                path: path.to_path_buf(),
                detail: "a DuckDB database without treeshift's tables".into(),
            });
        } else {
            match mode {
                OpenMode::CreateOrResume(spec) => writer.create(spec)?,
                OpenMode::Existing => {
                    return Err(StoreError::NotAStateFile {
                        path: path.to_path_buf(),
                        detail: "an empty database".into(),
                    });
                }
            }
            false
        };
        writer.conn
            .execute_batch(
                "CREATE OR REPLACE TEMP MACRO mtime_s(ns) AS \
                 CASE WHEN ns >= 0 THEN ns // 1000000000 ELSE -((-ns + 999999999) // 1000000000) END; \
                 CREATE OR REPLACE TEMP MACRO kind_name(k) AS \
                 CASE k WHEN 0 THEN 'folder' WHEN 1 THEN 'file' WHEN 2 THEN 'symlink' ELSE 'special' END; \
                 CREATE OR REPLACE TEMP MACRO mode_text(m) AS \
                 ((m >> 9) & 7)::VARCHAR || ((m >> 6) & 7)::VARCHAR || ((m >> 3) & 7)::VARCHAR || (m & 7)::VARCHAR; \
                 CREATE OR REPLACE TEMP MACRO owner_text(u, g) AS \
                 coalesce(u::VARCHAR, '?') || ':' || coalesce(g::VARCHAR, '?');",
            )
            .context("define macros")?;
        writer
            .conn
            .execute_batch(pass::PASS_TABLES)
            .context("add the tables of delta passes")?;
        // One counter orders status events, failures and log records.
        (writer.next_id, writer.next_seq) = writer
            .conn
            .query_row(
                "SELECT coalesce(greatest((SELECT max(id) FROM src_nodes), \
                                          (SELECT max(id) FROM dst_nodes)), 0) + 1, \
                        coalesce(greatest((SELECT max(seq) FROM src_status_events), \
                                          (SELECT max(seq) FROM dst_status_events), \
                                          (SELECT max(seq) FROM task_errors), \
                                          (SELECT max(seq) FROM logs)), 0) + 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .context("read the next node id and sequence number")?;
        Ok((writer, resumed))
    }

    /// Whether the file has treeshift's `meta` table, and how many tables
    /// it has in all. Read from `duckdb_tables()` itself: the
    /// `information_schema.tables` view unions it with `duckdb_views()`,
    /// which only adds planning to every command.
    fn tables(&self) -> Result<(bool, i64), StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FILTER (WHERE table_name = 'meta') > 0, count(*) FROM duckdb_tables() \
                 WHERE database_name = current_database() AND schema_name = 'main'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.not_a_state_file(e))
    }

    fn not_a_state_file(&self, e: duckdb::Error) -> StoreError {
        StoreError::NotAStateFile {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn check_version(&self) -> Result<(), StoreError> {
        let found: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .ok();
        match found {
            Some(v) if v == SCHEMA_VERSION.to_string() || v == "2" => Ok(()),
            Some(v) => {
                let newer = v
                    .parse::<u32>()
                    .map(|n| n > SCHEMA_VERSION)
                    .unwrap_or(false);
                Err(StoreError::SchemaVersion {
                    path: self.path.clone(),
                    found: v,
                    expected: SCHEMA_VERSION,
                    hint: if newer {
                        " (written by a newer treeshift: upgrade treeshift)"
                    } else {
                        " (written by an older treeshift: finish it with that version or start a new state file)"
                    },
                })
            }
            None => Err(StoreError::NotAStateFile {
                path: self.path.clone(),
                detail: "no schema version recorded".into(),
            }),
        }
    }

    /// Brings a file of the previous schema up to this one, in one
    /// transaction: the metadata columns, empty for what was discovered
    /// before (such nodes compare as they did then).
    fn upgrade(&mut self) -> Result<(), StoreError> {
        let version: String = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .context("read the schema version")?;
        if version != "2" {
            return Ok(());
        }
        let previous = exists(
            &self.conn,
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'previous_src_nodes'",
        )
        .context("look for the previous pass's tree")?;
        let mut node_tables = vec!["src_nodes", "dst_nodes"];
        if previous {
            node_tables.push("previous_src_nodes");
        }
        let mut statements = Vec::new();
        for table in node_tables.iter().chain(["copy_plan"].iter()) {
            statements.extend(UPGRADE_FROM_2.iter().map(|s| s.replace("{t}", table)));
        }
        for table in &node_tables {
            statements.extend(UPGRADE_NODES_FROM_2.iter().map(|s| s.replace("{t}", table)));
        }
        statements.extend(
            UPGRADE_PLAN_FROM_2
                .iter()
                .map(|s| s.replace("{t}", "copy_plan")),
        );
        self.in_transaction("upgrade the state file", |conn| {
            for statement in &statements {
                conn.execute_batch(statement)?;
            }
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                params![SCHEMA_VERSION.to_string()],
            )?;
            Ok(())
        })?;
        tracing::info!(path = %self.path.display(), "state file upgraded from schema 2 to {SCHEMA_VERSION}");
        Ok(())
    }

    fn check_same_migration(&self, spec: &MigrationSpec) -> Result<(), StoreError> {
        let recorded = self.migration()?;
        let mismatch = |what, recorded: String, requested: String| StoreError::OtherMigration {
            path: self.path.clone(),
            what,
            recorded,
            requested,
        };
        if recorded.src != spec.src {
            return Err(mismatch("source", recorded.src, spec.src.clone()));
        }
        if recorded.dst != spec.dst {
            return Err(mismatch("destination", recorded.dst, spec.dst.clone()));
        }
        if recorded.dst_case_insensitive != spec.dst_case_insensitive {
            let says = |on: bool| {
                if on {
                    "case-insensitive"
                } else {
                    "case-sensitive"
                }
            };
            return Err(mismatch(
                "destination case rule",
                says(recorded.dst_case_insensitive).into(),
                says(spec.dst_case_insensitive).into(),
            ));
        }
        if recorded.keep != spec.keep {
            return Err(mismatch(
                "what is kept",
                recorded.keep.describe(),
                spec.keep.describe(),
            ));
        }
        if recorded.filter != spec.filter {
            let rules = |f: &FilterSpec| f.rules().join(", ");
            return Err(mismatch(
                "filter rules",
                rules(&recorded.filter),
                rules(&spec.filter),
            ));
        }
        Ok(())
    }

    fn create(&mut self, spec: &MigrationSpec) -> Result<(), StoreError> {
        let settings = serde_json::json!({
            "filter": spec.filter,
            "dst_case_insensitive": spec.dst_case_insensitive,
            "keep": spec.keep,
        })
        .to_string();
        self.in_transaction("create the schema", |conn| {
            conn.execute_batch(CREATE)?;
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created_by', ?)",
                params![SCHEMA_VERSION.to_string(), format!("treeshift {}", env!("CARGO_PKG_VERSION"))],
            )?;
            conn.execute(
                "INSERT INTO migrations (id, name, phase, src, dst, settings) VALUES (1, ?, 'created', ?, ?, ?)",
                params![format!("{} -> {}", spec.src, spec.dst), spec.src, spec.dst, settings],
            )?;
            Ok(())
        })
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
                    Ok(()) => return Ok(r),
                    Err(e) => {
                        self.commit_failed = Some(e.to_string());
                        return Err(e);
                    }
                },
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    if !(is_out_of_memory(&e) && self.raise_memory_limit(what)?) {
                        return Err(e).context(what);
                    }
                }
            }
        }
    }

    /// Doubles an adaptive memory limit, up to [`MEMORY_CEILING_MB`].
    /// Returns whether it grew.
    fn raise_memory_limit(&mut self, what: &str) -> Result<bool, StoreError> {
        let Some(mb) = self.memory_limit_mb.filter(|&mb| mb < MEMORY_CEILING_MB) else {
            return Ok(false);
        };
        let raised = (mb * 2).min(MEMORY_CEILING_MB);
        self.conn
            .execute_batch(&format!("SET memory_limit = '{raised}MB'"))
            .context("raise the memory limit")?;
        self.memory_limit_mb = Some(raised);
        tracing::warn!(
            from_mb = mb,
            to_mb = raised,
            "state store ran out of memory ({what}); raised its limit and ran it again"
        );
        Ok(true)
    }

    fn query_i64(&self, sql: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .context(sql.to_string())
    }

    /// Serves requests until told to stop. Commits buffered rows when enough
    /// piled up or the oldest waited long enough.
    pub(crate) fn serve(&mut self, rx: &Receiver<Request>) -> Result<(), StoreError> {
        loop {
            let wait = match self.buf.since {
                Some(t) => FLUSH_INTERVAL.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(Request::Children {
                    side,
                    parent_id,
                    depth,
                    parent_path,
                    children,
                }) => self.buffer_children(side, parent_id, depth, &parent_path, children),
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
                Ok(Request::Call(call)) => call(self),
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

    fn buffer_event(&mut self, side: Side, row: EventRow) {
        self.buf.events[ix(side)].push(row);
        self.note_rows(1);
    }

    fn note_rows(&mut self, n: usize) {
        self.buf.rows += n;
        if self.buf.since.is_none() {
            self.buf.since = Some(Instant::now());
        }
    }

    fn buffer_children(
        &mut self,
        side: Side,
        parent_id: i64,
        depth: u32,
        parent_path: &RelPath,
        children: Vec<ChildRecord>,
    ) {
        let n = children.len();
        for child in children {
            let id = self.next_id;
            self.next_id += 1;
            if let Some((status, reason)) = child.left_out {
                let seq = self.take_seq();
                self.buf.events[ix(side)].push(EventRow {
                    seq,
                    node_id: id,
                    depth: depth + 1,
                    phase: "compare",
                    status: status.as_str(),
                    reason: Some(reason),
                    attempt: 1,
                });
                self.buf.rows += 1;
            }
            let e = child.entry;
            self.buf.nodes[ix(side)].push(NodeRow {
                id,
                parent_id,
                depth: depth + 1,
                kind: e.kind.code(),
                size: e.size,
                mtime_ns: e.mtime_ns,
                rel_path: parent_path.join(&e.name).into_bytes(),
                meta: e.meta,
                link: e.link,
            });
        }
        self.note_rows(n);
    }

    /// Appends and commits everything buffered, in one transaction.
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        self.in_transaction("append a batch", |conn| append_buffered(conn, &buf))
    }

    fn dst_case_insensitive(&mut self) -> Result<bool, StoreError> {
        if self.dst_case_insensitive.is_none() {
            self.dst_case_insensitive = Some(self.migration()?.dst_case_insensitive);
        }
        Ok(self.dst_case_insensitive.unwrap_or(false))
    }

    pub(crate) fn migration(&self) -> Result<MigrationSpec, StoreError> {
        let (src, dst, settings): (String, String, String) = self
            .conn
            .query_row(
                "SELECT src, dst, settings::VARCHAR FROM migrations WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| self.not_a_state_file(e))?;
        let settings: serde_json::Value =
            serde_json::from_str(&settings).map_err(|e| StoreError::NotAStateFile {
                path: self.path.clone(),
                detail: format!("unreadable settings: {e}"),
            })?;
        // Files before filters grew beyond globs recorded `excludes` alone.
        let filter = match settings.get("filter") {
            Some(f) => serde_json::from_value(f.clone()),
            None => serde_json::from_value(serde_json::json!({ "excludes": settings["excludes"] })),
        }
        .map_err(|e| StoreError::NotAStateFile {
            path: self.path.clone(),
            detail: format!("unreadable filter settings: {e}"),
        })?;
        let dst_case_insensitive = settings["dst_case_insensitive"].as_bool().unwrap_or(false);
        // Files before these settings kept modes only.
        let keep = match settings.get("keep") {
            Some(k) => {
                serde_json::from_value(k.clone()).map_err(|e| StoreError::NotAStateFile {
                    path: self.path.clone(),
                    detail: format!("unreadable settings of what is kept: {e}"),
                })?
            }
            None => Keep::default(),
        };
        Ok(MigrationSpec {
            src,
            dst,
            filter,
            dst_case_insensitive,
            keep,
        })
    }

    pub(crate) fn set_phase(&mut self, phase: &str) -> Result<(), StoreError> {
        self.flush()?;
        self.conn
            .execute(
                "UPDATE migrations SET phase = ?, updated_at = now() WHERE id = 1",
                params![phase],
            )
            .context("set the phase")?;
        Ok(())
    }

    pub(crate) fn phase(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT phase FROM migrations WHERE id = 1", [], |r| {
                r.get(0)
            })
            .context("read the phase")
    }

    pub(crate) fn record_roots(
        &mut self,
        src_root: &Entry,
        dst_root: Option<&Entry>,
    ) -> Result<(), StoreError> {
        if exists(&self.conn, "SELECT 1 FROM src_nodes WHERE depth = 0")
            .context("look for the recorded roots")?
        {
            return Ok(());
        }
        let (src_id, dst_id) = (self.next_id, self.next_id + 1);
        self.next_id += 2;
        let (s1, s2) = (self.take_seq(), self.take_seq());
        let previous = has_previous_pass(&self.conn).context("look for the previous pass")?;
        let verdict = Comparison {
            previous: if previous { "pv" } else { "" },
        };
        let pv_join = if previous {
            "LEFT JOIN previous_src_nodes pv ON pv.depth = 0"
        } else {
            ""
        };
        let insert = "VALUES (?, NULL, 0, 0, 0, ?, ''::BLOB, ?, ?, ?, ?, NULL, NULL)";
        self.in_transaction("record the roots", |conn| {
            let insert_root = |table: &str, id: i64, e: &Entry| {
                let m = e.meta;
                conn.execute(
                    &format!("INSERT INTO {table} {insert}"),
                    params![id, e.mtime_ns, m.mode, m.uid, m.gid, m.xattrs],
                )
            };
            insert_root("src_nodes", src_id, src_root)?;
            let Some(dst_root) = dst_root else {
                conn.execute(
                    "INSERT INTO src_status_events VALUES \
                     (?, ?, 0, 'compare', 'missing', 'destination root does not exist', 1, now())",
                    params![s1, src_id],
                )?;
                return mark_discovering(conn);
            };
            insert_root("dst_nodes", dst_id, dst_root)?;
            // Both roots take the pair's status, as every other pair.
            for (table, seq, id) in [("src", s1, src_id), ("dst", s2, dst_id)] {
                conn.execute(
                    &format!(
                        "INSERT INTO {table}_status_events \
                         SELECT {seq}, {id}, 0, 'compare', {status}, {reason}, 1, now() \
                         FROM src_nodes c JOIN dst_nodes d ON d.depth = 0 {pv_join} WHERE c.depth = 0",
                        status = verdict.status(),
                        reason = verdict.reason(),
                    ),
                    [],
                )?;
            }
            mark_discovering(conn)
        })
    }

    /// Deletes the children (and their events) of one folder.
    pub(crate) fn discard_children(
        &mut self,
        side: Side,
        folder: &FolderTask,
    ) -> Result<(), StoreError> {
        self.flush()?;
        let (d, id) = (folder.depth + 1, folder.id);
        self.in_transaction("discard a partial listing", |conn| {
            conn.execute(
                &format!(
                    "DELETE FROM {side}_status_events WHERE depth = {d} AND node_id IN \
                     (SELECT id FROM {side}_nodes WHERE depth = {d} AND parent_id = {id})"
                ),
                [],
            )?;
            conn.execute(
                &format!("DELETE FROM {side}_nodes WHERE depth = {d} AND parent_id = {id}"),
                [],
            )?;
            Ok(())
        })
    }

    pub(crate) fn folder_failed(
        &mut self,
        side: Side,
        folder: &FolderTask,
        failure: &Failure,
    ) -> Result<(), StoreError> {
        self.discard_children(side, folder)?;
        let seq = self.take_seq();
        self.buffer_event(
            side,
            EventRow {
                seq,
                node_id: folder.id,
                depth: folder.depth,
                phase: "list",
                status: "failed",
                reason: Some(format!("{}: {}", failure.kind, failure.message)),
                attempt: failure.attempts,
            },
        );
        let seq = self.take_seq();
        self.buf.errors.push(ErrorRow {
            phase: "discovery",
            seq,
            side,
            node_id: folder.id,
            rel_path: folder.path.as_bytes().to_vec(),
            failure: failure.clone(),
        });
        Ok(())
    }

    pub(crate) fn begin_round(&mut self, side: Side, depth: u32) -> Result<u64, StoreError> {
        let (n, n1) = (depth, depth + 1);
        // Nodes one level down exist at the start of a round only if a
        // listing was cut short (a crash): drop the children of every folder
        // of this round that has no `list` event; it is listed again.
        let look = !std::mem::replace(&mut self.cut_short_checked[ix(side)], true);
        if look
            && exists(
                &self.conn,
                &format!("SELECT 1 FROM {side}_nodes WHERE depth = {n1}"),
            )
            .context("look for a listing cut short")?
        {
            self.flush()?;
            let unlisted = format!(
                "SELECT p.id FROM {side}_nodes p WHERE p.depth = {n} AND p.kind = {FOLDER} \
                 AND p.id NOT IN (SELECT node_id FROM {side}_status_events \
                                  WHERE depth = {n} AND phase = 'list' AND status = 'listed')"
            );
            self.in_transaction("drop a cut-short listing", |conn| {
                conn.execute(
                    &format!(
                        "DELETE FROM {side}_status_events WHERE depth = {n1} AND node_id IN \
                         (SELECT id FROM {side}_nodes WHERE depth = {n1} AND parent_id IN ({unlisted}))"
                    ),
                    [],
                )?;
                conn.execute(
                    &format!("DELETE FROM {side}_nodes WHERE depth = {n1} AND parent_id IN ({unlisted})"),
                    [],
                )
            })?;
        }
        let frontier = match side {
            Side::Src => format!(
                "CREATE OR REPLACE TEMP TABLE frontier_src AS \
                 WITH {ll} \
                 SELECT n.id, n.rel_path, coalesce(ll.attempt, 0) AS attempt FROM src_nodes n \
                 LEFT JOIN ll ON ll.node_id = n.id \
                 WHERE n.depth = {n} AND n.kind = {FOLDER} AND (ll.st IS NULL OR ll.st = 'requeued') \
                   AND n.id NOT IN (SELECT node_id FROM src_status_events WHERE depth = {n} \
                                    AND phase = 'compare' AND status IN {LEFT_OUT}) \
                 ORDER BY n.id",
                ll = latest_listing(side, Some(depth))
            ),
            // A dst folder is listed only when it pairs with a src folder
            // (its comparison found them in step, metadata aside) that was itself listed: a failed
            // src listing never turns dst children into extras.
            Side::Dst => format!(
                "CREATE OR REPLACE TEMP TABLE frontier_dst AS \
                 WITH {ll}, \
                 cmp AS (SELECT node_id, arg_max(status, seq) AS st FROM dst_status_events \
                              WHERE depth = {n} AND phase = 'compare' GROUP BY node_id), \
                 src_listed AS (SELECT s.rel_path FROM src_nodes s WHERE s.depth = {n} AND s.kind = {FOLDER} \
                              AND s.id IN (SELECT node_id FROM src_status_events \
                                           WHERE depth = {n} AND phase = 'list' AND status = 'listed')) \
                 SELECT d.id, d.rel_path, coalesce(ll.attempt, 0) AS attempt \
                 FROM dst_nodes d JOIN cmp ON cmp.node_id = d.id AND cmp.st IN {IN_STEP} \
                 LEFT JOIN ll ON ll.node_id = d.id \
                 WHERE d.depth = {n} AND d.kind = {FOLDER} AND (ll.st IS NULL OR ll.st = 'requeued') \
                   AND d.rel_path IN (SELECT rel_path FROM src_listed) \
                 ORDER BY d.id",
                ll = latest_listing(side, Some(depth))
            ),
        };
        // A temp table: nothing goes to the file, so no transaction needed.
        let pending = self
            .conn
            .execute(&frontier, [])
            .context("prepare the round's frontier")?;
        Ok(pending as u64)
    }

    pub(crate) fn pull(
        &mut self,
        side: Side,
        after: i64,
        limit: usize,
    ) -> Result<Vec<FolderTask>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT f.id, f.rel_path, f.attempt FROM frontier_{side} f WHERE f.id > ? ORDER BY f.id LIMIT ?"
            ))
            .context("prepare a pull")?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                let path: Vec<u8> = r.get(1)?;
                Ok((r.get::<_, i64>(0)?, path, r.get::<_, i32>(2)?))
            })
            .context("pull pending folders")?;
        let mut out = Vec::with_capacity(limit);
        for row in rows {
            let (id, path, attempts) = row.context("read a pending folder")?;
            let path = RelPath::from_bytes(path);
            out.push(FolderTask {
                id,
                depth: path.depth() as u32,
                path,
                attempts: attempts.max(0) as u32,
            });
        }
        Ok(out)
    }

    pub(crate) fn seal_round(
        &mut self,
        side: Side,
        depth: u32,
        metrics: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        // The round's last appends commit first, as any batch does: rows
        // not yet committed stay in memory for the whole transaction, and
        // the comparison needs that memory for its hash tables.
        let started = Instant::now();
        self.flush()?;
        let appended = started.elapsed();
        tracing::debug!(%side, depth, ms = appended.as_millis() as u64, "seal: appended");
        let base = self.next_seq;
        let metrics = metrics.to_string();
        let case_folding = side == Side::Src && self.dst_case_insensitive()?;
        // One transaction: the round's comparison, its statistics and its
        // marker land together or not at all.
        let (done, used) = self.in_transaction("seal a round", |conn| {
            let used = match side {
                Side::Src => {
                    let used = if case_folding {
                        exclude_case_clashes(conn, depth + 1, base)?
                    } else {
                        0
                    };
                    replace_depth_stats(conn, &[Side::Src], depth + 1)?;
                    used
                }
                Side::Dst => {
                    let used = compare_round(conn, depth, base)?;
                    tracing::debug!(ms = started.elapsed().as_millis() as u64, "seal: compared");
                    replace_depth_stats(conn, &Side::BOTH, depth + 1)?;
                    used
                }
            };
            tracing::debug!(
                %side,
                depth,
                append_ms = appended.as_millis() as u64,
                ms = started.elapsed().as_millis() as u64,
                "seal: statistics written"
            );
            // Delete + insert: cheaper than an upsert on a keyed table.
            conn.execute(&format!("DELETE FROM rounds WHERE side = '{side}' AND depth = {depth}"), [])?;
            conn.execute(
                &format!(
                    "INSERT INTO rounds SELECT '{side}', {depth}, now(), \
                     count(*) FILTER (WHERE st = 'listed'), count(*) FILTER (WHERE st = 'failed') \
                     FROM (SELECT arg_max(status, seq) AS st FROM {side}_status_events \
                           WHERE depth = {depth} AND phase = 'list' GROUP BY node_id)"
                ),
                [],
            )?;
            conn.execute(
                "INSERT INTO queue_stats VALUES (?, ?, now(), ?)",
                params![side.as_str(), depth, metrics],
            )?;
            tracing::debug!(%side, depth, ms = started.elapsed().as_millis() as u64, "seal: round recorded");
            let done = side_done_after(conn, side, depth)?;
            tracing::debug!(%side, depth, ms = started.elapsed().as_millis() as u64, "seal: done checked");
            if done && side == Side::Src {
                pass::record_changes(conn)?;
            }
            if done {
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    params![format!("{side}_done"), depth.to_string()],
                )?;
                if side == Side::Dst {
                    conn.execute(
                        "UPDATE migrations SET phase = 'discovered', updated_at = now() WHERE id = 1",
                        [],
                    )?;
                }
            }
            Ok((done, used))
        })?;
        tracing::debug!(%side, depth, ms = started.elapsed().as_millis() as u64, "seal: committed");
        self.next_seq = base + used;
        Ok(done)
    }

    pub(crate) fn progress(&self) -> Result<RoundProgress, StoreError> {
        // One statement: each costs more to plan than these lookups take.
        let (src_sealed, src_done, dst_sealed, dst_done, roots_recorded) = self
            .conn
            .query_row(
                "SELECT (SELECT max(depth) FROM rounds WHERE side = 'src'), \
                        EXISTS (SELECT 1 FROM meta WHERE key = 'src_done'), \
                        (SELECT max(depth) FROM rounds WHERE side = 'dst'), \
                        EXISTS (SELECT 1 FROM meta WHERE key = 'dst_done'), \
                        EXISTS (SELECT 1 FROM src_nodes WHERE depth = 0)",
                [],
                |r| {
                    Ok((
                        r.get::<_, Option<u32>>(0)?,
                        r.get(1)?,
                        r.get::<_, Option<u32>>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                },
            )
            .context("read where the rounds stand")?;
        Ok(RoundProgress {
            src_sealed,
            src_done,
            dst_sealed,
            dst_done,
            roots_recorded,
        })
    }

    pub(crate) fn summary(&mut self) -> Result<Summary, StoreError> {
        self.flush()?;
        let src = self.stat_map("src_stats")?;
        let dst = self.stat_map("dst_stats")?;
        let get = |m: &std::collections::HashMap<String, i64>, k: &str| {
            m.get(k).copied().unwrap_or(0).max(0) as u64
        };
        let totals = |m| Totals {
            folders: get(m, "folders"),
            files: get(m, "files"),
            symlinks: get(m, "symlinks"),
            special: get(m, "special"),
            bytes: get(m, "bytes"),
        };
        let progress = self.progress()?;
        let src_totals = totals(&src);
        let classified: u64 = Status::ALL
            .iter()
            .filter(|st| **st != Status::Extra)
            .map(|st| get(&src, st.as_str()))
            .sum();
        let src_nodes =
            src_totals.folders + src_totals.files + src_totals.symlinks + src_totals.special;
        Ok(Summary {
            pass: self.pass()?,
            changes: self.changes()?,
            dst: totals(&dst),
            missing: get(&src, "missing"),
            same: get(&src, "same"),
            differs: get(&src, "differs"),
            conflict: get(&src, "conflict"),
            extra: get(&dst, "extra"),
            excluded: get(&src, "excluded"),
            invalid_name: get(&src, "invalid-name") + get(&dst, "invalid-name"),
            failed: self.query_i64("SELECT coalesce(sum(folders_failed), 0)::BIGINT FROM rounds")?
                as u64,
            unclassified: src_nodes.saturating_sub(classified),
            outdated: get(&src, "outdated"),
            to_copy: ToCopy {
                files: get(&src, "to_copy_files"),
                folders: get(&src, "to_copy_folders"),
                bytes: get(&src, "to_copy_bytes"),
                metadata: get(&src, "to_copy_metadata"),
            },
            left_alone: LeftAlone {
                items: get(&src, "left_alone_items"),
                bytes: get(&src, "left_alone_bytes"),
            },
            src: src_totals,
            src_rounds: RoundState {
                sealed: progress.src_sealed.map_or(0, |d| d as u64 + 1),
                done: progress.src_done,
            },
            dst_rounds: RoundState {
                sealed: progress.dst_sealed.map_or(0, |d| d as u64 + 1),
                done: progress.dst_done,
            },
        })
    }

    fn stat_map(&self, table: &str) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT key, sum(value)::BIGINT FROM {table} GROUP BY key"
            ))
            .context("read statistics")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .context("read statistics")?;
        rows.collect::<Result<_, _>>().context("read statistics")
    }

    pub(crate) fn review(
        &mut self,
        select: ReviewSelect,
        sink: &Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        self.flush()?;
        let latest = |side: Side, phase: &str| {
            format!(
                "SELECT '{side}' AS side, n.rel_path, n.kind, n.size, n.mtime_ns, e.st, e.reason \
                 FROM {side}_nodes n JOIN (SELECT node_id, arg_max(status, seq) AS st, arg_max(reason, seq) AS reason \
                 FROM {side}_status_events WHERE phase = '{phase}' GROUP BY node_id) e ON e.node_id = n.id"
            )
        };
        let sql = match select {
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
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT * FROM ({sql}) ORDER BY side DESC, rel_path"
            ))
            .context("prepare a review")?;
        let rows = stmt
            .query_map([], |r| {
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
            })
            .context("run a review")?;
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
}

/// A CTE `ll`: the latest `list` event (status, attempt) of each folder of
/// `side` at `depth` (or at every depth). A folder is pending when it has
/// none, or when a retry sweep re-queued it after it failed.
pub(super) fn latest_listing(side: Side, depth: Option<u32>) -> String {
    let at_depth = depth.map_or(String::new(), |d| format!("depth = {d} AND "));
    format!(
        "ll AS (SELECT node_id, arg_max(status, seq) AS st, arg_max(attempt, seq) AS attempt \
         FROM {side}_status_events WHERE {at_depth}phase = 'list' GROUP BY node_id)"
    )
}

/// Compares the children of the folder pairs at `depth` (depth + 1 nodes)
/// in a few set-based statements, appending one `compare` event per node.
/// Returns how many sequence numbers it used, starting at `base`.
fn compare_round(conn: &Connection, depth: u32, base: i64) -> Result<i64, duckdb::Error> {
    let (n, n1) = (depth, depth + 1);
    // Each src folder at this depth: compare its children with the dst
    // folder of the same path (if that one was listed), or mark them all
    // missing (the folder itself is missing, or is a file on dst). The dst
    // join is a plain equi-join on the path (a dst child exists only under
    // a listed dst folder), so DuckDB hashes it; a condition on the parent's
    // mode there would turn it into a nested loop.
    let previous = has_previous_pass(conn)?;
    let (pv_join, pv) = if previous {
        (
            format!(
                "LEFT JOIN previous_src_nodes pv ON pv.depth = {n1} AND pv.rel_path = c.rel_path"
            ),
            "pv",
        )
    } else {
        (String::new(), "")
    };
    let verdict = Comparison { previous: pv };
    let (status, reason) = (verdict.status(), verdict.reason());
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE seal_src AS \
         WITH cs AS (SELECT node_id, arg_max(status, seq) AS st FROM src_status_events \
                     WHERE depth = {n} AND phase = 'compare' GROUP BY node_id), \
              dl AS (SELECT node_id, arg_max(status, seq) AS st FROM dst_status_events \
                     WHERE depth = {n} AND phase = 'list' GROUP BY node_id), \
              seal_parents AS ( \
                SELECT s.id AS src_id, \
                  CASE WHEN cs.st IN ('missing', 'conflict') THEN 'missing' \
                       WHEN cs.st IN {IN_STEP} AND dl.st = 'listed' THEN 'compare' \
                       ELSE 'skip' END AS mode \
                FROM src_nodes s JOIN cs ON cs.node_id = s.id \
                LEFT JOIN dst_nodes d ON d.depth = {n} AND d.rel_path = s.rel_path \
                LEFT JOIN dl ON dl.node_id = d.id \
                WHERE s.depth = {n} AND s.kind = {FOLDER}) \
         SELECT c.id AS src_id, d.id AS dst_id, \
           CASE WHEN p.mode = 'missing' OR d.id IS NULL THEN 'missing' ELSE {status} END AS status, \
           CASE WHEN p.mode = 'missing' THEN 'parent folder missing on dst' \
                WHEN d.id IS NULL THEN NULL ELSE {reason} END AS reason \
         FROM src_nodes c \
         JOIN seal_parents p ON p.src_id = c.parent_id AND p.mode <> 'skip' \
         LEFT JOIN dst_nodes d ON d.depth = {n1} AND d.rel_path = c.rel_path {pv_join} \
         WHERE c.depth = {n1} AND c.id NOT IN \
           (SELECT node_id FROM src_status_events WHERE depth = {n1} AND phase = 'compare')"
    ))?;
    let src_events = conn.execute(
        &format!(
            "INSERT INTO src_status_events \
             SELECT {base} - 1 + row_number() OVER (), src_id, {n1}, 'compare', status, reason, 1, now() \
             FROM seal_src"
        ),
        [],
    )? as i64;
    let base2 = base + src_events;
    // Every dst child not yet classified: the status of its src pair, the
    // filter's verdict if its src pair was excluded, or `extra`. Most
    // depths exclude nothing, and joining the excluded paths then reads
    // every src path at the depth for nothing (18 of 42 ms in S1's last
    // seal), so that join is left out unless there is something to find.
    let any_excluded = exists(
        conn,
        &format!(
            "SELECT 1 FROM src_status_events \
             WHERE depth = {n1} AND phase = 'compare' AND status = 'excluded'"
        ),
    )?;
    let (excluded_join, verdict) = if any_excluded {
        (
            format!(
                "LEFT JOIN (SELECT s.rel_path, e.reason FROM src_nodes s \
                   JOIN src_status_events e ON e.node_id = s.id \
                   WHERE s.depth = {n1} AND e.depth = {n1} AND e.phase = 'compare' \
                     AND e.status = 'excluded') ex ON ex.rel_path = d.rel_path"
            ),
            "CASE WHEN x.status IS NOT NULL THEN x.status \
                  WHEN ex.rel_path IS NOT NULL THEN 'excluded' ELSE 'extra' END, \
             CASE WHEN x.status IS NOT NULL THEN x.reason \
                  WHEN ex.rel_path IS NOT NULL THEN ex.reason ELSE NULL END",
        )
    } else {
        (String::new(), "coalesce(x.status, 'extra'), x.reason")
    };
    let dst_events = conn.execute(
        &format!(
            "INSERT INTO dst_status_events \
             SELECT {base2} - 1 + row_number() OVER (), d.id, {n1}, 'compare', {verdict}, 1, now() \
             FROM dst_nodes d LEFT JOIN seal_src x ON x.dst_id = d.id {excluded_join} \
             WHERE d.depth = {n1} AND d.id NOT IN \
               (SELECT node_id FROM dst_status_events WHERE depth = {n1} AND phase = 'compare')"
        ),
        [],
    )? as i64;
    conn.execute_batch("DROP TABLE seal_src")?;
    Ok(src_events + dst_events)
}

/// Comparison statuses of a folder pair whose contents are compared: the
/// folders agree in kind (their metadata may differ), as a SQL list.
pub(super) const IN_STEP: &str = "('same', 'differs', 'outdated')";

/// Returns true if and only if the file holds the previous pass's source
/// tree (from the second pass on).
fn has_previous_pass(conn: &Connection) -> Result<bool, duckdb::Error> {
    exists(
        conn,
        "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() \
         AND schema_name = 'main' AND table_name = 'previous_src_nodes'",
    )
}

/// How a source node `c` compares with the destination node `d` of the
/// same path (both present, so neither is missing), as SQL expressions:
/// the status and its reason. Data first (kind, then size and mtime to
/// the second, for all but folders), then metadata (mode, owners, the
/// digest of the kept extended attributes), each compared only where both
/// sides recorded it. A difference is `outdated` rather than `differs`
/// when the destination still equals the previous pass's source node
/// (`previous` names it; empty in the first pass): the destination is as
/// that pass left it (or was already in step then), so the update is the
/// migration's to make.
struct Comparison {
    previous: &'static str,
}

impl Comparison {
    fn data_differs() -> String {
        format!(
            "(c.kind <> {FOLDER} AND (c.size <> d.size \
              OR mtime_s(c.mtime_ns) IS DISTINCT FROM mtime_s(d.mtime_ns)))"
        )
    }

    /// A folder's mtime is metadata too: rsync -a keeps it, and a copy
    /// restores it after writing into the folder.
    fn meta_differs() -> String {
        format!(
            "(coalesce(c.mode <> d.mode, false) OR coalesce(c.uid <> d.uid, false) \
              OR coalesce(c.gid <> d.gid, false) OR coalesce(c.xattrs <> d.xattrs, false) \
              OR (c.kind = {FOLDER} AND coalesce(mtime_s(c.mtime_ns) <> mtime_s(d.mtime_ns), false)))"
        )
    }

    /// The destination equals the previous pass's source node.
    fn owned(&self) -> String {
        let pv = self.previous;
        if pv.is_empty() {
            return "false".into();
        }
        format!(
            "({pv}.id IS NOT NULL AND {pv}.kind = d.kind AND {pv}.size = d.size \
              AND mtime_s({pv}.mtime_ns) IS NOT DISTINCT FROM mtime_s(d.mtime_ns) \
              AND coalesce({pv}.mode = d.mode, true) AND coalesce({pv}.uid = d.uid, true) \
              AND coalesce({pv}.gid = d.gid, true) AND coalesce({pv}.xattrs = d.xattrs, true))"
        )
    }

    fn status(&self) -> String {
        format!(
            "CASE WHEN d.kind <> c.kind THEN 'conflict' \
                  WHEN {data} OR {meta} THEN CASE WHEN {owned} THEN 'outdated' ELSE 'differs' END \
                  ELSE 'same' END",
            data = Self::data_differs(),
            meta = Self::meta_differs(),
            owned = self.owned(),
        )
    }

    /// A reason that starts with `metadata:` says the data is in step.
    fn reason(&self) -> String {
        format!(
            "CASE WHEN d.kind <> c.kind THEN kind_name(c.kind) || ' on src, ' || kind_name(d.kind) || ' on dst' \
                  WHEN c.kind <> {FOLDER} AND c.size <> d.size THEN \
                       'size ' || c.size::VARCHAR || ' on src, ' || d.size::VARCHAR || ' on dst' \
                  WHEN c.kind <> {FOLDER} AND mtime_s(c.mtime_ns) IS DISTINCT FROM mtime_s(d.mtime_ns) THEN \
                       'mtime ' || coalesce(mtime_s(c.mtime_ns)::VARCHAR, '?') || ' on src, ' \
                       || coalesce(mtime_s(d.mtime_ns)::VARCHAR, '?') || ' on dst' \
                  WHEN {meta} THEN 'metadata: ' || concat_ws('; ', \
                       CASE WHEN c.mode <> d.mode THEN \
                            'mode ' || mode_text(c.mode) || ' on src, ' || mode_text(d.mode) || ' on dst' END, \
                       CASE WHEN c.uid <> d.uid OR c.gid <> d.gid THEN \
                            'owner ' || owner_text(c.uid, c.gid) || ' on src, ' || owner_text(d.uid, d.gid) || ' on dst' END, \
                       CASE WHEN c.xattrs <> d.xattrs THEN 'extended attributes or ACLs' END, \
                       CASE WHEN c.kind = {FOLDER} AND mtime_s(c.mtime_ns) <> mtime_s(d.mtime_ns) THEN \
                            'mtime ' || mtime_s(c.mtime_ns)::VARCHAR || ' on src, ' || mtime_s(d.mtime_ns)::VARCHAR || ' on dst' END) \
                  ELSE NULL END",
            meta = Self::meta_differs(),
        )
    }
}

/// For a case-insensitive destination: among source siblings at `depth`
/// whose names differ only in ASCII letter case, keeps the first (by
/// bytes) and excludes the others with the reason, before anything is
/// compared or listed under them. Returns the sequence numbers used.
fn exclude_case_clashes(conn: &Connection, depth: u32, base: i64) -> Result<i64, duckdb::Error> {
    let excluded = conn.execute(
        &format!(
            "INSERT INTO src_status_events \
             SELECT {base} - 1 + row_number() OVER (), id, {depth}, 'compare', 'excluded', \
                    'dst-case-clash: one name on the destination with ' || keeper::VARCHAR, 1, now() \
             FROM (SELECT id, rel_path, first_value(rel_path) OVER \
                     (PARTITION BY parent_id, lower(rel_path::VARCHAR) ORDER BY rel_path) AS keeper \
                   FROM src_nodes WHERE depth = {depth} AND id NOT IN \
                     (SELECT node_id FROM src_status_events WHERE depth = {depth} AND phase = 'compare')) \
             WHERE rel_path <> keeper"
        ),
        [],
    )?;
    Ok(excluded as i64)
}

/// The statistics of one side at one depth, as stored in `*_stats`.
#[derive(Default)]
struct DepthStats {
    folders: i64,
    files: i64,
    symlinks: i64,
    special: i64,
    bytes: i64,
    by_status: [i64; Status::ALL.len()],
    extra_bytes: i64,
    to_copy_files: i64,
    to_copy_folders: i64,
    to_copy_bytes: i64,
    to_copy_metadata: i64,
    left_alone_items: i64,
    left_alone_bytes: i64,
}

impl DepthStats {
    /// Adds `count` nodes of kind code `kind` and comparison `status`
    /// (`None`: not compared yet) holding `bytes`; `meta_only`: the
    /// difference is in metadata alone.
    fn add(&mut self, kind: u8, status: Option<Status>, meta_only: bool, count: i64, bytes: i64) {
        let kind = Kind::from_code(kind);
        match kind {
            Some(Kind::Folder) => self.folders += count,
            Some(Kind::File) => {
                self.files += count;
                self.bytes += bytes;
            }
            Some(Kind::Symlink) => self.symlinks += count,
            Some(Kind::Special) => self.special += count,
            None => {}
        }
        let Some(status) = status else { return };
        if let Some(i) = Status::ALL.iter().position(|s| *s == status) {
            self.by_status[i] += count;
        }
        // What the default approval does: creates what is missing, updates
        // what is outdated, leaves what differs (or conflicts) alone.
        match (status, kind) {
            (Status::Extra, Some(Kind::File)) => self.extra_bytes += bytes,
            (Status::Outdated, _) if meta_only => self.to_copy_metadata += count,
            (Status::Missing | Status::Outdated, Some(Kind::File)) => {
                self.to_copy_files += count;
                self.to_copy_bytes += bytes;
            }
            (Status::Missing, Some(Kind::Folder)) => self.to_copy_folders += count,
            (Status::Differs | Status::Conflict, _) => {
                self.left_alone_items += count;
                if kind == Some(Kind::File) {
                    self.left_alone_bytes += bytes;
                }
            }
            _ => {}
        }
    }

    /// `(key, value)` rows; every key is written, zeros included.
    fn rows(&self) -> Vec<(&'static str, i64)> {
        let mut rows = vec![
            ("folders", self.folders),
            ("files", self.files),
            ("symlinks", self.symlinks),
            ("special", self.special),
            ("bytes", self.bytes),
        ];
        rows.extend(
            Status::ALL
                .iter()
                .zip(self.by_status)
                .map(|(s, n)| (s.as_str(), n)),
        );
        rows.extend([
            ("extra_bytes", self.extra_bytes),
            ("to_copy_files", self.to_copy_files),
            ("to_copy_folders", self.to_copy_folders),
            ("to_copy_bytes", self.to_copy_bytes),
            ("to_copy_metadata", self.to_copy_metadata),
            ("left_alone_items", self.left_alone_items),
            ("left_alone_bytes", self.left_alone_bytes),
        ]);
        rows
    }
}

/// Recomputes every statistic of `sides` at `depth` from their nodes and
/// their latest comparison, replacing the old rows: sealing a round twice
/// (a resume) never double-counts. One small aggregate by side, kind and
/// status, with the keys derived here: a statement with a filtered
/// aggregate per key cost about 5 ms more to plan, on every seal, than it
/// took to run on a small round; one statement for both sides saves
/// another plan. (A plain join on the events, without taking the latest,
/// peaked 5-7 MiB higher on a 1M-node tree.)
fn replace_depth_stats(conn: &Connection, sides: &[Side], depth: u32) -> Result<(), duckdb::Error> {
    let per_side: Vec<String> = sides
        .iter()
        .map(|side| {
            format!(
                "SELECT {at} AS side, n.kind, e.status, coalesce(e.meta_only, false), count(*) AS nodes, \
                        coalesce(sum(n.size), 0)::BIGINT AS bytes \
                 FROM {side}_nodes n LEFT JOIN \
                   (SELECT node_id, arg_max(status, seq) AS status, \
                           arg_max(reason, seq) LIKE 'metadata:%' AS meta_only FROM {side}_status_events \
                    WHERE depth = {depth} AND phase = 'compare' GROUP BY node_id) e ON e.node_id = n.id \
                 WHERE n.depth = {depth} GROUP BY ALL",
                at = ix(*side)
            )
        })
        .collect();
    let mut stats: [DepthStats; 2] = Default::default();
    let mut stmt = conn.prepare(&per_side.join(" UNION ALL "))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let at: usize = row.get(0)?;
        let status: Option<String> = row.get(2)?;
        let status = status.and_then(|s| s.parse().ok());
        stats[at].add(row.get(1)?, status, row.get(3)?, row.get(4)?, row.get(5)?);
    }
    for &side in sides {
        conn.execute(
            &format!("DELETE FROM {side}_stats WHERE depth = {depth}"),
            [],
        )?;
        let mut app = conn.appender(&format!("{side}_stats"))?;
        for (key, value) in stats[ix(side)].rows() {
            app.append_row(params![depth, key, value])?;
        }
        app.flush()?;
    }
    Ok(())
}

/// Decides, inside a seal, whether `side` has nothing left after `depth`.
fn side_done_after(conn: &Connection, side: Side, depth: u32) -> Result<bool, duckdb::Error> {
    let n1 = depth + 1;
    match side {
        Side::Src => Ok(!exists(
            conn,
            &format!(
                "SELECT 1 FROM src_nodes WHERE depth = {n1} AND kind = {FOLDER} AND id NOT IN \
                 (SELECT node_id FROM src_status_events WHERE depth = {n1} AND phase = 'compare' AND status IN {LEFT_OUT})"
            ),
        )?),
        // The dst is done once the src is done, no src node lies deeper than
        // the depth just compared, and no dst folder there waits to be listed.
        // Checked in that order, each only if the one before held: most
        // rounds end at the first, cheap check; only the last joins.
        Side::Dst => Ok(exists(conn, "SELECT 1 FROM meta WHERE key = 'src_done'")?
            && !exists(conn, &format!("SELECT 1 FROM src_nodes WHERE depth > {n1}"))?
            && !exists(
                conn,
                &format!(
                    "SELECT 1 FROM dst_nodes d JOIN dst_status_events e ON e.node_id = d.id \
                     WHERE d.depth = {n1} AND d.kind = {FOLDER} AND e.depth = {n1} \
                     AND e.phase = 'compare' AND e.status IN {IN_STEP}"
                ),
            )?),
    }
}

fn mark_discovering(conn: &Connection) -> Result<(), duckdb::Error> {
    conn.execute(
        "UPDATE migrations SET phase = 'discovering', updated_at = now() WHERE id = 1",
        [],
    )?;
    Ok(())
}

/// Whether the query `sql` returns any row.
fn exists(conn: &Connection, sql: &str) -> Result<bool, duckdb::Error> {
    conn.query_row(&format!("SELECT EXISTS ({sql})"), [], |r| r.get(0))
}

/// DuckDB's memory limit at start, in MB, when `TREESHIFT_DB_MEMORY` is not
/// set. With the 4 MB checkpoint threshold, S1 (100k files vs a partial
/// copy) and S3 (200k files in one folder) discover and migrate within it,
/// and so does a simulated tree of 1M nodes, whose largest seal needs more
/// than 40 MB. At 48 MB, S3 peaked at 101 MiB RSS once in six runs; at 44,
/// 90-92 MiB in five. A tree of 10M nodes needs more (see
/// [`Writer::raise_memory_limit`]).
const MEMORY_START_MB: u64 = 44;
/// The most an adaptive limit grows to.
const MEMORY_CEILING_MB: u64 = 4096;

/// DuckDB's memory limit: `TREESHIFT_DB_MEMORY` as given (a fixed limit),
/// or [`MEMORY_START_MB`], which may grow (the second value).
fn memory_limit() -> (String, Option<u64>) {
    match std::env::var("TREESHIFT_DB_MEMORY") {
        Ok(v) if !v.trim().is_empty() => (v, None),
        _ => (format!("{MEMORY_START_MB}MB"), Some(MEMORY_START_MB)),
    }
}

/// Turns DuckDB's open errors into something a user can act on.
fn is_lock_error(e: &duckdb::Error) -> bool {
    let msg = e.to_string();
    msg.contains("Could not set lock") || msg.contains("Conflicting lock")
}

fn explain_open_error(e: &duckdb::Error) -> String {
    let msg = e.to_string();
    if is_lock_error(e) {
        format!("another treeshift process is using it ({msg})")
    } else if msg.contains("not a valid DuckDB database")
        || msg.contains("Serialization")
        || msg.contains("Corrupt")
    {
        format!("not a DuckDB database, or corrupt ({msg})")
    } else {
        msg
    }
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
            for column in ["link_dev", "link_ino"] {
                w.conn
                    .execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                    .unwrap();
            }
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
        assert_eq!((version.as_str(), mode, size), ("3", None, 3));
    }

    fn limit_to(w: &mut Writer, mb: u64, adaptive: bool) {
        w.conn
            .execute_batch(&format!("SET memory_limit = '{mb}MB'"))
            .unwrap();
        w.memory_limit_mb = adaptive.then_some(mb);
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
        let raised = w.memory_limit_mb.unwrap();
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

    #[test]
    fn depth_stats_count_kinds_statuses_and_what_is_to_copy() {
        let mut stats = DepthStats::default();
        stats.add(Kind::File.code(), Some(Status::Missing), false, 3, 300);
        stats.add(Kind::File.code(), Some(Status::Differs), false, 2, 20);
        stats.add(Kind::File.code(), Some(Status::Extra), false, 1, 7);
        stats.add(Kind::File.code(), None, false, 4, 40);
        stats.add(FOLDER, Some(Status::Missing), false, 5, 0);
        stats.add(FOLDER, Some(Status::Same), false, 6, 0);
        stats.add(Kind::Symlink.code(), Some(Status::Conflict), false, 1, 0);
        stats.add(Kind::Special.code(), Some(Status::Excluded), false, 1, 0);
        stats.add(Kind::File.code(), Some(Status::InvalidName), false, 2, 9);
        stats.add(Kind::File.code(), Some(Status::Outdated), false, 3, 30);
        stats.add(Kind::File.code(), Some(Status::Outdated), true, 1, 5);
        stats.add(FOLDER, Some(Status::Outdated), true, 2, 0);
        let rows: std::collections::HashMap<_, _> = stats.rows().into_iter().collect();
        let expected = [
            ("folders", 13),
            ("files", 16),
            ("symlinks", 1),
            ("special", 1),
            ("bytes", 411),
            ("missing", 8),
            ("outdated", 6),
            ("same", 6),
            ("differs", 2),
            ("conflict", 1),
            ("extra", 1),
            ("excluded", 1),
            ("invalid-name", 2),
            ("extra_bytes", 7),
            ("to_copy_files", 6),
            ("to_copy_folders", 5),
            ("to_copy_bytes", 330),
            ("to_copy_metadata", 3),
            ("left_alone_items", 3),
            ("left_alone_bytes", 20),
        ];
        assert_eq!(rows.len(), expected.len(), "every key, once");
        for (key, value) in expected {
            assert_eq!(rows[key], value, "{key}");
        }
    }
}
