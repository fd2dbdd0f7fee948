//! The treeshift state store: one DuckDB file per migration.
//!
//! One thread owns the connection ([`Store`] starts it); everything else
//! talks to it through a cloneable [`StoreHandle`] over a bounded channel, so
//! the database is never contended and memory stays bounded. Writes are
//! buffered and appended in batches (thousands of rows per transaction);
//! reads and round seals are set-based SQL inside the store. No SQL leaves
//! this crate.
//!
//! The invariants the engine relies on:
//! - A folder's children are appended before its `listed` event, over one
//!   FIFO channel, so a committed `listed` event implies committed children.
//!   Children of a folder that has no `list` event (a listing cut short by a
//!   crash) are discarded when its round begins again.
//! - Statuses are append-only events ordered by a sequence number; the
//!   current status of a node is its latest event per phase.
//! - Per-depth statistics are recomputed from nodes and events when a round
//!   is sealed (replace, never increment), so a resumed or repeated round
//!   never double-counts.

mod backlog;
mod error;
mod reader;
mod schema;
mod writer;

pub use error::StoreError;
pub use schema::SCHEMA_VERSION;

use backlog::Backlog;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use reader::{Readers, ReadersHandle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use treeshift_core::{
    Action, Approval, CopyStatus, CopySummary, Entry, Extras, FileId, FilterSpec, Keep, Kind, Meta,
    Phase, Policy, RelPath, Side, Status, Summary, VerifyStatus, VerifySummary,
};
use writer::{Db, Request, Writer};

/// What a migration is: its two roots and the settings discovery ran with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationSpec {
    /// Source location, as resolved by the caller (absolute for local paths).
    pub src: String,
    /// Destination location.
    pub dst: String,
    /// The filter rules discovery runs with (part of the approved plan).
    pub filter: FilterSpec,
    /// The destination holds names that differ only in letter case as one:
    /// of such source siblings only the first (by bytes) is planned, the
    /// others are excluded with the reason.
    pub dst_case_insensitive: bool,
    /// What the migration keeps besides data and mtimes (modes, owners,
    /// extended attributes, ACLs, hard links).
    pub keep: Keep,
}

/// A folder to list: leased from the store, handed back with its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderTask {
    /// Node id in the side's node table.
    pub id: i64,
    /// BFS depth (the root is 0).
    pub depth: u32,
    /// Path relative to the side's root.
    pub path: RelPath,
    /// Listing attempts made before this one (in earlier runs or sweeps).
    pub attempts: u32,
    /// Where an earlier run's listing of this folder stood when it was cut
    /// short (its children up to there are kept): the listing resumes
    /// after it.
    pub resume_after: Option<Vec<u8>>,
}

/// One listed child, with the filter's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRecord {
    /// What the backend reported.
    pub entry: Entry,
    /// `Some((status, reason))` if it takes no part in the migration: a
    /// filter excluded it ([`Status::Excluded`], the rule is the reason) or
    /// its name cannot be a path ([`Status::InvalidName`]). It is recorded
    /// with that status, never traversed, compared or planned.
    pub left_out: Option<(Status, String)>,
}

/// Why a folder could not be listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The backend operation, e.g. `list`.
    pub operation: String,
    /// The error kind, e.g. `permission_denied`.
    pub kind: String,
    /// The full message.
    pub message: String,
    /// How many attempts were made.
    pub attempts: u32,
}

/// One log record, as the binary's tracing layer hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// When it was emitted, microseconds since the Unix epoch (UTC).
    pub at_micros: i64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: &'static str,
    /// The module that emitted it.
    pub target: String,
    /// The message and its fields, formatted.
    pub message: String,
}

impl LogRecord {
    /// A record emitted now.
    pub fn now(level: &'static str, target: impl Into<String>, message: String) -> LogRecord {
        LogRecord {
            at_micros: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
            level,
            target: target.into(),
            message,
        }
    }
}

/// One row of the `logs` table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// Its sequence number (pages and `--follow` continue after it).
    pub seq: i64,
    /// When, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// Its level.
    pub level: String,
    /// The module that emitted it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

/// Failures recorded in `task_errors`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TaskErrors {
    /// All failures ever recorded (every attempt that ended in one).
    pub total: u64,
    /// By error kind (`permission_denied`, `not_found`, ...).
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// The latest ones, newest first.
    pub recent: Vec<TaskError>,
}

/// One row of `task_errors`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TaskError {
    /// `src` or `dst`.
    pub side: String,
    /// `discovery` or `copy`.
    pub phase: String,
    /// The item, escaped for display.
    pub path: String,
    /// What was being done (`list`, `read`, ...).
    pub operation: String,
    /// The error kind.
    pub kind: String,
    /// The error's message.
    pub message: String,
    /// Which attempt failed.
    pub attempt: u32,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// The metrics of one discovery round, as sealed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RoundMetrics {
    /// `src` or `dst`.
    pub side: String,
    /// The round (folder depth).
    pub depth: u32,
    /// When it was sealed, RFC 3339 UTC.
    pub at: String,
    /// Folders, children, elapsed ms, folders/s, workers.
    pub metrics: serde_json::Value,
}

/// What the copy still has to do, and how long that should take.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Estimate {
    /// Files and symlinks left to copy.
    pub files: u64,
    /// Bytes left to copy.
    pub bytes: u64,
    /// Folders left to create (the root aside: see `creates_root`).
    pub folders: u64,
    /// Of the files, those larger than the part size asked for.
    pub large_files: u64,
    /// The parts of those large files, all together.
    pub parts: u64,
    /// Items that replace what is at their destination path.
    pub replaces: u64,
    /// The destination's root is among the folders to create.
    pub creates_root: bool,
    /// Files per second this migration's copy has had so far.
    pub files_per_s: Option<f64>,
    /// Bytes per second likewise.
    pub bytes_per_s: Option<f64>,
    /// Seconds left at those rates (the slower of the two bounds).
    pub eta_s: Option<f64>,
}

/// Folders a retry sweep queued again, per side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FoldersRequeued {
    /// Source folders.
    pub src: u64,
    /// Destination folders.
    pub dst: u64,
}

impl FoldersRequeued {
    /// Both sides together.
    pub fn total(&self) -> u64 {
        self.src + self.dst
    }
}

/// Where each side's rounds stand (read on start, to resume).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundProgress {
    /// The last sealed source round, if any.
    pub src_sealed: Option<u32>,
    /// True once the source has nothing left to list.
    pub src_done: bool,
    /// The last sealed destination round, if any.
    pub dst_sealed: Option<u32>,
    /// True once the destination has nothing left to list.
    pub dst_done: bool,
    /// True once the roots were recorded.
    pub roots_recorded: bool,
}

/// One row of a review listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewItem {
    /// Which tree the node is in.
    pub side: Side,
    /// Its path relative to that tree's root.
    pub path: RelPath,
    /// Its kind.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// Its mtime in nanoseconds, if known.
    pub mtime_ns: Option<i64>,
    /// `missing`, `same`, ..., or `failed` for folders that could not be listed.
    pub status: String,
    /// Why (the filter rule, the size or mtime difference, the error).
    pub reason: Option<String>,
}

/// What discovery saw at a destination path the plan replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DstSeen {
    /// Its kind.
    pub kind: Kind,
    /// Its size.
    pub size: u64,
    /// Its mtime in nanoseconds.
    pub mtime_ns: Option<i64>,
}

/// One approved plan item to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyTask {
    /// Source node id.
    pub id: i64,
    /// Depth (the root is 0).
    pub depth: u32,
    /// Kind on the source.
    pub kind: Kind,
    /// What the plan does.
    pub action: Action,
    /// Path relative to both roots.
    pub path: RelPath,
    /// Size discovery recorded on the source.
    pub size: u64,
    /// Mtime discovery recorded on the source.
    pub mtime_ns: Option<i64>,
    /// What discovery saw at the destination path, if anything.
    pub dst: Option<DstSeen>,
    /// True if a stopped run was copying it (it may have left a temporary).
    pub in_flight: bool,
    /// Which attempt this is (1, then one more per retry sweep).
    pub attempt: u32,
    /// For another name of a file with several names (hard links): the
    /// path of the name whose data it shares, which the copy links to.
    pub link_to: Option<RelPath>,
    /// The identity discovery recorded of the folder the item is in, on
    /// the source and on the destination (`None` where none was recorded:
    /// a folder the copy made, a root, a backend without identities).
    pub folders: [Option<FileId>; 2],
}

/// What a copy run has left to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyTodo {
    /// Folders to create.
    pub folders: u64,
    /// Files and symlinks to copy.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Depths that have folders to create, ascending.
    pub folder_depths: Vec<u32>,
}

/// Which pending items to pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPull {
    /// Folders at this depth.
    Folders {
        /// The depth.
        depth: u32,
    },
    /// Files and symlinks (all depths), and the moves of destination
    /// extras into quarantine.
    Files,
    /// Other names of files with several names: linked once every file
    /// is in place.
    Links,
}

/// The outcome of one copy task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyEvent {
    /// Source node id.
    pub id: i64,
    /// Its depth.
    pub depth: u32,
    /// The new status.
    pub status: CopyStatus,
    /// Why (for failed, changed, skipped).
    pub reason: Option<String>,
    /// For failures: the path and the error, also recorded in `task_errors`.
    pub error: Option<(RelPath, Failure)>,
    /// The attempt it belongs to (the task's).
    pub attempt: u32,
    /// For a copied file: what a later discovery compares the destination
    /// with, besides the source (recorded with the source's size and mtime
    /// as discovery saw them).
    pub written: WrittenAs,
}

/// What a copy left at the destination that the source's listing cannot
/// tell: recorded for each copied file that has any of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrittenAs {
    /// The tag the destination gave the data, where it gives one (an
    /// object store's ETag).
    pub etag: Option<String>,
    /// The mtime the destination was given, where the source keeps a
    /// file's own mtime apart from the one its listing gives (an object's
    /// `mtime` metadata beside its upload time).
    pub own_mtime_ns: Option<i64>,
}

impl WrittenAs {
    /// True if there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.own_mtime_ns.is_none()
    }
}

/// A folder the copy made, updated or wrote into, whose mtime (and, for
/// one it made or updated, mode, owners and extended attributes) is set
/// once its contents are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderTime {
    /// Source node id.
    pub id: i64,
    /// Depth.
    pub depth: u32,
    /// Path.
    pub path: RelPath,
    /// The source's mtime.
    pub mtime_ns: i64,
    /// The source's metadata as discovery recorded it (owners mapped),
    /// for a folder the plan made or updates; `None` for a folder that was
    /// in step and only had items written into it (its mtime is restored).
    pub meta: Option<Meta>,
}

/// One copied item to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyTask {
    /// Source node id.
    pub id: i64,
    /// Depth.
    pub depth: u32,
    /// Kind.
    pub kind: Kind,
    /// Path.
    pub path: RelPath,
    /// Size copied.
    pub size: u64,
    /// Mtime copied.
    pub mtime_ns: Option<i64>,
    /// Metadata copied, as discovery recorded it on the source (owners
    /// mapped); each part is checked where recorded.
    pub meta: Meta,
    /// A hard link: the name whose file it must be on the destination too.
    pub link_to: Option<RelPath>,
}

/// The outcome of verifying one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyEvent {
    /// Source node id.
    pub id: i64,
    /// Depth.
    pub depth: u32,
    /// The result.
    pub status: VerifyStatus,
    /// How it differs, or why it could not be checked.
    pub reason: Option<String>,
}

/// Which items a review lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewSelect {
    /// Nodes with this comparison status.
    Status(Status),
    /// Folders that could not be listed, on either side.
    Failed,
    /// What changed on the source since the previous pass.
    Changes,
    /// Everything that needs attention or action: all but `same`.
    Actionable,
    /// Plan items with this copy status.
    Copy(CopyStatus),
    /// Copied items whose verification did not pass.
    VerifyProblems,
}

impl std::str::FromStr for ReviewSelect {
    type Err = String;

    /// A review's status as the CLI and the API take it: a comparison
    /// status, a copy status, `all`, `failed`, `copy-failed` or `mismatch`.
    fn from_str(text: &str) -> Result<ReviewSelect, String> {
        Ok(match text {
            "all" => ReviewSelect::Actionable,
            "failed" => ReviewSelect::Failed,
            "copy-failed" => ReviewSelect::Copy(CopyStatus::Failed),
            "mismatch" => ReviewSelect::VerifyProblems,
            other => match (other.parse::<Status>(), other.parse::<CopyStatus>()) {
                (Ok(st), _) => ReviewSelect::Status(st),
                (_, Ok(cs)) if cs != CopyStatus::Failed => ReviewSelect::Copy(cs),
                _ => {
                    return Err(format!(
                        "unknown status '{other}'; expected one of missing, differs, conflict, same, extra, excluded, invalid-name, failed, all, pending, copying, copied, skipped, changed, copy-failed, mismatch"
                    ));
                }
            },
        })
    }
}

/// The owner of a state file: starts the store thread and stops it.
pub struct Store {
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
    readers: Readers,
}

/// A cloneable way to talk to the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: Sender<Request>,
    /// Rows in `tx` not yet taken by the store thread.
    backlog: Arc<Backlog>,
    fault: Arc<Mutex<Option<String>>>,
    /// Set when the store thread has ended, however it ended.
    ended: Arc<AtomicBool>,
    path: Arc<PathBuf>,
    readers: ReadersHandle,
    /// Reads go to the reader threads (see [`StoreHandle::committed`]).
    committed: bool,
}

/// Everything a status shows, read in one visit to the store: on a busy
/// store, each visit may wait for a commit.
#[derive(Clone, Debug)]
pub struct StatusParts {
    /// The migration.
    pub migration: MigrationSpec,
    /// Its lifecycle phase.
    pub phase: Phase,
    /// Discovery's counts.
    pub summary: Summary,
    /// The approval, if any.
    pub approval: Option<Approval>,
    /// The copy's progress, once approved.
    pub copy: Option<CopySummary>,
    /// The last verification's outcome, once approved.
    pub verify: Option<VerifySummary>,
    /// What the copy still costs.
    pub estimate: Estimate,
    /// Failures.
    pub errors: TaskErrors,
    /// Each round's latest metrics.
    pub rounds: Vec<RoundMetrics>,
}

/// What a review page is narrowed to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReviewFilter {
    /// Items at or under this path.
    pub prefix: Option<RelPath>,
    /// Items of at least this many bytes.
    pub min_size: Option<u64>,
    /// Items of at most this many bytes.
    pub max_size: Option<u64>,
    /// Items whose path holds this text (any case).
    pub search: Option<String>,
}

/// One child of a browsed folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowseChild {
    /// The source's, or (an extra) the destination's.
    pub side: Side,
    /// Its path.
    pub path: RelPath,
    /// Its kind.
    pub kind: Kind,
    /// Its own size.
    pub size: u64,
    /// Its status (`missing`, `same`, ..., `extra`), if compared.
    pub status: Option<String>,
    /// For a folder: the items below it and their bytes, by status.
    pub below: Vec<BelowStatus>,
}

/// Items of one status below a folder, and their bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BelowStatus {
    /// The status.
    pub status: String,
    /// How many items.
    pub items: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What an approval of a policy would cover, before it is given.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PlanPreview {
    /// The policy.
    pub policy: Policy,
    /// What happens to extras.
    pub extras: Extras,
    /// The plan's hash, which an approval must name.
    pub plan_hash: String,
    /// What the plan does.
    #[serde(flatten)]
    pub counts: treeshift_core::PlanCounts,
}

/// A migration's data key as stored: wrapped under a key-encryption key
/// that is not in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    /// The migration's random id, bound into every sealed blob.
    pub migration_uid: String,
    /// What wraps the data key (`master-key` or `passphrase`).
    pub kek: String,
    /// The wrapped data key.
    pub wrapped: Vec<u8>,
}

/// One side's connection as stored: in clear what it is and where, its
/// secrets sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConnection {
    /// A stable random id, bound into the sealed blob.
    pub id: String,
    /// Which side it serves.
    pub side: Side,
    /// The backend kind (`s3`, `sftp`, ...).
    pub kind: String,
    /// The location, as recorded for the migration (it holds no secret).
    pub location: String,
    /// The names of the sealed secrets (not secret themselves).
    pub secret_names: Vec<String>,
    /// The secrets, sealed.
    pub sealed: Vec<u8>,
    /// When it was last set (UTC, as read back).
    pub updated_at: String,
}

/// How [`Store::open`] treats the file.
#[derive(Clone, Debug)]
pub enum OpenMode {
    /// Create the file for this migration, or reopen it if it already holds
    /// the same migration (the resume case). A file of another migration is
    /// an error.
    CreateOrResume(Box<MigrationSpec>),
    /// Open an existing file only (status, review).
    Existing,
}

/// Reads the reader threads' queue holds at most.
pub(crate) const CHANNEL_CAPACITY: usize = 16;

/// The `meta` flag set when the destination cannot hold symlinks.
const NO_SYMLINKS_AT_DESTINATION: &str = "dst_holds_no_symlinks";
/// How often a caller waiting for the store thread or a reader checks that
/// it still runs.
const ENDED_POLL: Duration = Duration::from_millis(100);

/// Waits for the reply to a request queued for a thread that may end
/// before it runs it (then the reply's sender stays queued with it, and
/// `gone` is the answer): checks `ended` every [`ENDED_POLL`].
fn await_reply<R>(
    rx: &Receiver<Result<R, StoreError>>,
    ended: &AtomicBool,
    gone: impl Fn() -> StoreError,
) -> Result<R, StoreError> {
    loop {
        match rx.recv_timeout(ENDED_POLL) {
            Ok(reply) => return reply,
            Err(RecvTimeoutError::Timeout) if ended.load(Ordering::Acquire) => {
                return rx.try_recv().unwrap_or_else(|_| Err(gone()));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(gone()),
        }
    }
}

impl Store {
    /// Opens (or creates) the state file at `path` and starts its thread.
    /// Returns the store and whether the file already held this migration.
    pub fn open(path: &Path, mode: OpenMode) -> Result<(Store, bool), StoreError> {
        // Unbounded in messages: the backlog bounds it in rows.
        let (tx, rx) = unbounded();
        let backlog = Arc::new(Backlog::default());
        let thread_backlog = Arc::clone(&backlog);
        let (ready_tx, ready_rx) = bounded(1);
        let fault = Arc::new(Mutex::new(None));
        let thread_fault = Arc::clone(&fault);
        let ended = Arc::new(AtomicBool::new(false));
        let thread_ended = EndedGuard(Arc::clone(&ended));
        let owned_path = path.to_path_buf();
        // The opener's span (a server names the migration there) goes with
        // the thread, so the store's log records are the migration's.
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("treeshift-store".into())
            .spawn(move || {
                let _in_span = span.enter();
                let _ended = thread_ended;
                run(
                    owned_path,
                    mode,
                    rx,
                    &thread_backlog,
                    ready_tx,
                    thread_fault,
                )
            })
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        let (resumed, connections, gate) = match ready_rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StoreError::Thread(
                    "the store thread stopped while opening".into(),
                ));
            }
        };
        let readers = Readers::start(connections, &gate)?;
        let handle = StoreHandle {
            tx,
            backlog,
            fault,
            ended,
            path: Arc::new(path.to_path_buf()),
            readers: readers.handle(),
            committed: false,
        };
        Ok((
            Store {
                handle,
                thread: Some(thread),
                readers,
            },
            resumed,
        ))
    }

    /// A handle for other threads.
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Commits everything buffered, checkpoints, and stops the thread.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.readers.stop();
        let result = self.handle.call(|w| w.shutdown());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.readers.stop();
            let _ = self.handle.tx.send(Request::Stop);
            let _ = t.join();
        }
    }
}

/// Marks the store thread as ended when dropped (also on a panic).
struct EndedGuard(Arc<AtomicBool>);

impl Drop for EndedGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the store thread hands back once the file is open: whether it
/// held the migration already, the reader threads' connections, and the
/// gate they share with the writer.
type Opened = (bool, Vec<Db>, writer::Gate);

fn run(
    path: PathBuf,
    mode: OpenMode,
    rx: Receiver<Request>,
    backlog: &Backlog,
    ready: Sender<Result<Opened, StoreError>>,
    fault: Arc<Mutex<Option<String>>>,
) {
    let opened = Writer::open(&path, &mode).and_then(|(w, resumed)| {
        let connections = (0..reader::READERS)
            .map(|_| w.another())
            .collect::<Result<Vec<_>, _>>()?;
        let gate = Arc::clone(&w.gate);
        Ok((w, (resumed, connections, gate)))
    });
    let mut writer = match opened {
        Ok((w, opened)) => {
            let _ = ready.send(Ok(opened));
            w
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Err(e) = writer.serve(&rx, backlog) {
        // Not logged as an error: every caller gets it from now on, and
        // the command reports it once.
        tracing::debug!(error = %e, "state store stopped");
        let cause = match e {
            StoreError::Stopped(cause) => cause,
            e => e.to_string(),
        };
        *fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
    }
}

impl StoreHandle {
    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, req: Request) -> Result<(), StoreError> {
        if !self.backlog.add(req.rows(), &self.ended) {
            return Err(self.stopped());
        }
        self.tx.send(req).map_err(|_| self.stopped())
    }

    fn stopped(&self) -> StoreError {
        let cause = self
            .fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the store thread has stopped".into());
        StoreError::Stopped(cause)
    }

    /// A handle whose reads run on the reader threads, on what was
    /// committed when they were asked: they never wait for the store
    /// thread (a round's seal, a batch of appends), and do not see the
    /// rows it holds buffered, appended in the last half second or so.
    /// For observers (a server's status, review pages, browse, logs); a
    /// caller that must read what it has just written asks through the
    /// store's own handle, which commits what is buffered first. Its
    /// writes are the store's, as always.
    pub fn committed(&self) -> StoreHandle {
        StoreHandle {
            committed: true,
            ..self.clone()
        }
    }

    /// Runs a read: on a reader thread if this handle reads what is
    /// committed, else on the store thread after committing what it
    /// buffered.
    fn read<R: Send + 'static>(
        &self,
        f: impl Fn(&Db) -> Result<R, StoreError> + Send + Sync + 'static,
    ) -> Result<R, StoreError> {
        self.read_after(true, f)
    }

    /// Runs a read of what is never buffered (settings, the phase, the
    /// approval, the rounds): as [`StoreHandle::read`], without a commit.
    fn read_unbuffered<R: Send + 'static>(
        &self,
        f: impl Fn(&Db) -> Result<R, StoreError> + Send + Sync + 'static,
    ) -> Result<R, StoreError> {
        self.read_after(false, f)
    }

    /// A read that keeps running out of memory on the readers, beside the
    /// writer (a review's full query during a discovery's seals), runs on
    /// the store thread after all: it waits, but it answers, as every read
    /// did before there were readers.
    fn read_after<R: Send + 'static>(
        &self,
        flush: bool,
        f: impl Fn(&Db) -> Result<R, StoreError> + Send + Sync + 'static,
    ) -> Result<R, StoreError> {
        let f = Arc::new(f);
        if self.committed {
            let on_reader = Arc::clone(&f);
            match self.readers.read(false, move |db| on_reader(db)) {
                Err(e) if e.is_out_of_memory() => {
                    tracing::debug!(error = %e, "a read ran out of memory beside the writer; reading on the store thread");
                }
                answer => return answer,
            }
        }
        self.call(move |w| {
            if flush {
                w.flush()?;
            }
            w.read(|db| f(db))
        })
    }

    /// Runs a read that streams its answer (never run twice): as
    /// [`StoreHandle::read`].
    fn read_streaming(
        &self,
        f: impl Fn(&Db) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        if self.committed {
            return self.readers.read(true, f);
        }
        self.call(move |w| {
            w.flush()?;
            f(w)
        })
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = bounded(1);
        self.send(Request::Call(Box::new(move |w| {
            let _ = tx.send(f(w));
        })))?;
        // A call queued when the thread stopped (after a failed commit) is
        // never run.
        await_reply(&rx, &self.ended, || self.stopped())
    }

    /// The migration this file holds.
    pub fn migration(&self) -> Result<MigrationSpec, StoreError> {
        self.read_unbuffered(|db| db.migration())
    }

    /// Checks that the file holds `spec`'s migration (what opening with
    /// [`OpenMode::CreateOrResume`] checks), for a caller that opened it
    /// before it knew the migration.
    pub fn check_same_migration(&self, spec: MigrationSpec) -> Result<(), StoreError> {
        self.call(move |w| w.check_same_migration(&spec))
    }

    /// The wrapped data key, if the migration has sealed any secret.
    pub fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        self.call(|w| w.keyring())
    }

    /// The migration's recorded connections (source first).
    pub fn connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        self.call(|w| w.connections())
    }

    /// Replaces the keyring (when given) and the connections of the sides
    /// given, in one transaction.
    pub fn save_credentials(
        &self,
        keyring: Option<Keyring>,
        connections: Vec<StoredConnection>,
    ) -> Result<(), StoreError> {
        self.call(move |w| w.save_credentials(keyring.as_ref(), &connections))
    }

    /// Records both roots once (idempotent), with their mtimes and
    /// metadata (as the migration keeps them): the source root, and the
    /// destination root if it exists (`None` if it does not, in which case
    /// everything is missing). The roots compare like any other pair.
    pub fn record_roots(&self, src_root: Entry, dst_root: Option<Entry>) -> Result<(), StoreError> {
        self.call(move |w| w.record_roots(&src_root, dst_root.as_ref()))
    }

    /// Appends children of `parent` (buffered; committed in batches).
    /// `position`, where the storage can resume a listing, is where the
    /// listing stands after them: it is committed with them, so a run
    /// killed in the middle of a huge folder lists on from the last
    /// committed position instead of from its start.
    pub fn record_children(
        &self,
        side: Side,
        parent: &FolderTask,
        children: Vec<ChildRecord>,
        position: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.send(Request::Children {
            side,
            parent_id: parent.id,
            depth: parent.depth,
            parent_path: parent.path.clone(),
            children,
            position,
        })
    }

    /// Marks `folder` listed at its `attempt`-th try: all its children were
    /// sent before this.
    pub fn folder_listed(
        &self,
        side: Side,
        folder: &FolderTask,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.send(Request::Listed {
            side,
            id: folder.id,
            depth: folder.depth,
            attempt,
        })
    }

    /// Marks `folder` failed and discards any children sent for it.
    pub fn folder_failed(
        &self,
        side: Side,
        folder: &FolderTask,
        failure: Failure,
    ) -> Result<(), StoreError> {
        let folder = folder.clone();
        self.call(move |w| w.folder_failed(side, &folder, &failure))
    }

    /// Discards the children sent for `folder` so far (before a retry).
    pub fn discard_children(&self, side: Side, folder: &FolderTask) -> Result<(), StoreError> {
        let folder = folder.clone();
        self.call(move |w| w.discard_children(side, &folder))
    }

    /// Starts (or restarts) round `depth` of `side`: drops children of any
    /// folder of this round whose listing never finished, excludes (on the
    /// source, with a case-insensitive destination) names that clash by
    /// case at this depth, then prepares the round's frontier. Returns how
    /// many folders are pending. The source's round `depth` begins before
    /// round `depth - 1` is sealed.
    pub fn begin_round(&self, side: Side, depth: u32) -> Result<u64, StoreError> {
        self.call(move |w| w.begin_round(side, depth))
    }

    /// Up to `limit` pending folders of the current round with ids above
    /// `after` (keyset paging).
    pub fn pull(
        &self,
        side: Side,
        after: i64,
        limit: usize,
    ) -> Result<Vec<FolderTask>, StoreError> {
        self.call(move |w| w.pull(side, after, limit))
    }

    /// Seals round `depth` of `side`: statistics, comparison (destination
    /// rounds), and the round marker, in one transaction. Returns true if
    /// the side has nothing left to list. A source round is sealed once the
    /// next one has begun (see [`StoreHandle::begin_round`]). `metrics` is stored in
    /// `queue_stats` as measured by the caller.
    pub fn seal_round(
        &self,
        side: Side,
        depth: u32,
        metrics: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.call(move |w| w.seal_round(side, depth, &metrics))
    }

    /// Where the rounds stand.
    pub fn progress(&self) -> Result<RoundProgress, StoreError> {
        self.read_unbuffered(|db| db.progress())
    }

    /// Records the migration's lifecycle phase.
    pub fn set_phase(&self, phase: Phase) -> Result<(), StoreError> {
        self.call(move |w| w.set_phase(phase))
    }

    /// The migration's current phase.
    pub fn phase(&self) -> Result<Phase, StoreError> {
        self.read_unbuffered(|db| db.phase())
    }

    /// Records that the destination refused extended attributes (items
    /// were copied without them, each with a note), so verification does
    /// not report again what the copy reported.
    pub fn note_xattrs_refused(&self) -> Result<(), StoreError> {
        self.call(|w| w.set_flag("dst_refuses_xattrs"))
    }

    /// Records that the destination cannot hold symlinks: the plan leaves
    /// the source's symlinks alone, with that reason, for a person to see
    /// before approving.
    pub fn note_no_symlinks_at_destination(&self) -> Result<(), StoreError> {
        self.call(|w| w.set_flag(NO_SYMLINKS_AT_DESTINATION))
    }

    /// Whether [`StoreHandle::note_xattrs_refused`] was recorded.
    pub fn xattrs_refused(&self) -> Result<bool, StoreError> {
        self.call(|w| w.flag("dst_refuses_xattrs"))
    }

    /// Everything a status shows, read at once; the estimate counts files
    /// larger than `part_size(migration)` apart (see
    /// [`StoreHandle::estimate`]).
    pub fn status_parts(
        &self,
        part_size: fn(&MigrationSpec) -> u64,
    ) -> Result<StatusParts, StoreError> {
        self.read(move |db| {
            let migration = db.migration()?;
            let approval = db.approval()?;
            let (copy, verify) = match approval {
                Some(_) => (Some(db.copy_summary()?), db.verify_summary()?),
                None => (None, None),
            };
            Ok(StatusParts {
                phase: db.phase()?,
                summary: db.summary()?,
                estimate: db.estimate(part_size(&migration))?,
                errors: db.task_errors()?,
                rounds: db.queue_stats()?,
                migration,
                approval,
                copy,
                verify,
            })
        })
    }

    /// The discovery summary, from sealed statistics.
    pub fn summary(&self) -> Result<Summary, StoreError> {
        self.read(|db| db.summary())
    }

    /// Streams the selected items in batches to `sink`, sorted by side and
    /// path. Stops early without error if the receiver hangs up.
    pub fn review(
        &self,
        select: ReviewSelect,
        sink: Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        self.read_streaming(move |db| db.review(select, &sink))
    }

    /// One page of a review: at most `limit` items after `after` (a side
    /// and a path, as the last item of the previous page gives), at or
    /// under `prefix` if given. Pages are keyset pulls: each costs the
    /// same wherever it is.
    pub fn review_page(
        &self,
        select: ReviewSelect,
        after: Option<(Side, RelPath)>,
        filter: ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        self.read(move |db| db.review_page(select, after.as_ref(), &filter, limit))
    }

    /// The children of `folder` (after `after`, at most `limit`, by path):
    /// the source's and the destination's extras, each with its status
    /// and, for a folder, the items and bytes below it by status.
    pub fn browse(
        &self,
        folder: RelPath,
        after: Option<RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        self.read(move |db| db.browse(&folder, after.as_ref(), limit))
    }

    /// Computes the plan for `policy` (and `extras`) and records its
    /// approval by `approved_by`. Refused before discovery finished, and
    /// once the copy of a different plan started.
    pub fn approve(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
    ) -> Result<Approval, StoreError> {
        let by = approved_by.to_string();
        self.call(move |w| w.approve(policy, extras, &by, None))
    }

    /// Like [`StoreHandle::approve`], only if the plan's hash is
    /// `expected` (the plan the approver was shown); a plan that changed
    /// since is refused with [`StoreError::PlanChanged`].
    pub fn approve_seen(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
        expected: &str,
    ) -> Result<Approval, StoreError> {
        let (by, expected) = (approved_by.to_string(), expected.to_string());
        self.call(move |w| w.approve(policy, extras, &by, Some(&expected)))
    }

    /// The plan `policy` and `extras` would give now, with its hash: what
    /// an approval would cover. Nothing is recorded.
    pub fn preview_plan(&self, policy: Policy, extras: Extras) -> Result<PlanPreview, StoreError> {
        self.call(move |w| w.preview_plan(policy, extras))
    }

    /// The recorded approval, if any, without checking it.
    pub fn approval(&self) -> Result<Option<Approval>, StoreError> {
        self.read_unbuffered(|db| db.approval())
    }

    /// The approval, checked against the plan discovery gives now: an error
    /// if there is none or the plan changed since.
    pub fn approved_plan(&self) -> Result<Approval, StoreError> {
        self.call(|w| w.approved_plan())
    }

    /// Prepares a copy run: the approved items not done yet.
    pub fn begin_copy(&self) -> Result<CopyTodo, StoreError> {
        self.call(|w| w.begin_copy())
    }

    /// Up to `limit` items of the copy run with ids above `after`.
    pub fn pull_copy(
        &self,
        pull: CopyPull,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        self.call(move |w| w.pull_copy(pull, after, limit))
    }

    /// Records copy outcomes (buffered; committed in batches). The caller
    /// makes the data durable first.
    pub fn record_copy(&self, events: Vec<CopyEvent>) -> Result<(), StoreError> {
        self.call(move |w| {
            w.record_copy(events);
            Ok(())
        })
    }

    /// Failures by kind and the latest ones.
    pub fn task_errors(&self) -> Result<TaskErrors, StoreError> {
        self.read(|db| db.task_errors())
    }

    /// The latest metrics of every discovery round.
    pub fn queue_stats(&self) -> Result<Vec<RoundMetrics>, StoreError> {
        self.read_unbuffered(|db| db.queue_stats())
    }

    /// What the copy still costs, with an ETA once a copy has run; files
    /// larger than `part_size` are counted apart, with their parts.
    pub fn estimate(&self, part_size: u64) -> Result<Estimate, StoreError> {
        self.read(move |db| db.estimate(part_size))
    }

    /// Appends log records (buffered; committed with the next batch).
    pub fn append_logs(&self, records: Vec<LogRecord>) -> Result<(), StoreError> {
        self.send(Request::Logs(records))
    }

    /// Up to `limit` log records after sequence number `after`, at `level`
    /// (`ERROR` ... `TRACE`) or more severe, oldest first.
    pub fn logs(&self, after: i64, level: &str, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let level = level.to_string();
        self.read(move |db| db.logs(after, &level, limit))
    }

    /// Starts the next delta pass if the current one's copy finished (see
    /// the `pass` module); returns its number, `None` if the current pass
    /// goes on.
    pub fn next_pass(&self) -> Result<Option<u32>, StoreError> {
        self.call(|w| w.next_pass())
    }

    /// Queues the folders whose listing failed again (those under `prefix`
    /// only, if given) and reopens discovery from the shallowest of them;
    /// the next discovery run lists them and walks their subtrees.
    pub fn requeue_failed_folders(
        &self,
        prefix: Option<RelPath>,
    ) -> Result<FoldersRequeued, StoreError> {
        self.call(move |w| w.requeue_failed_folders(prefix.as_ref()))
    }

    /// Extends the approval to items a retry sweep's discovery added, when
    /// every one of them is a creation (or skipped) and no approved item
    /// changed; returns how many were added, `None` if nothing is approved.
    pub fn extend_approval(&self) -> Result<Option<u64>, StoreError> {
        self.call(|w| w.extend_approval())
    }

    /// Queues the failed copies again (those under `prefix` only, if
    /// given), one attempt more each; returns how many.
    pub fn requeue_failed_copies(&self, prefix: Option<RelPath>) -> Result<u64, StoreError> {
        self.call(move |w| w.requeue_failed_copies(prefix.as_ref()))
    }

    /// Folders the copy made or updated (status `copied`), and folders it
    /// wrote into, whose mtime and metadata need setting (never set, or
    /// something was copied into them since), deepest first, after the
    /// keyset position `after` (depth, id).
    pub fn folder_times(
        &self,
        after: Option<(u32, i64)>,
        limit: usize,
    ) -> Result<Vec<FolderTime>, StoreError> {
        self.call(move |w| w.folder_times(after, limit))
    }

    /// Records that these folders' (id, depth) mtimes were set.
    pub fn record_dated(&self, folders: Vec<(i64, u32)>) -> Result<(), StoreError> {
        self.call(move |w| {
            w.record_dated(folders);
            Ok(())
        })
    }

    /// Copy progress and results.
    pub fn copy_summary(&self) -> Result<CopySummary, StoreError> {
        self.read(|db| db.copy_summary())
    }

    /// Prepares a verification of every copied item; returns how many.
    pub fn begin_verify(&self, checksum: bool) -> Result<u64, StoreError> {
        self.call(move |w| w.begin_verify(checksum))
    }

    /// Up to `limit` items to verify with ids above `after`.
    pub fn pull_verify(&self, after: i64, limit: usize) -> Result<Vec<VerifyTask>, StoreError> {
        self.call(move |w| w.pull_verify(after, limit))
    }

    /// Records verification outcomes (buffered).
    pub fn record_verify(&self, events: Vec<VerifyEvent>) -> Result<(), StoreError> {
        self.call(move |w| {
            w.record_verify(events);
            Ok(())
        })
    }

    /// Verification results, if a verification ran.
    pub fn verify_summary(&self) -> Result<Option<VerifySummary>, StoreError> {
        self.read(|db| db.verify_summary())
    }

    /// Commits everything buffered so far.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.call(|w| w.flush())
    }
}

#[cfg(test)]
mod tests;
