//! The store's vocabulary: what goes in (a migration, folders to list and
//! their children, copy and verify outcomes, log records) and what comes
//! out (review items, progress, estimates, browse rows, the plan's
//! preview, stored connections).

use super::*;

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
    /// The epoch of the lease it was handed out under, where the store
    /// leases folders to many processes (0 where it does not): a worker
    /// still on a folder whose lease ran out and was taken again, by
    /// another process or by its own, writes nothing under the new one.
    pub epoch: i64,
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

/// Log levels from most to least severe, as stored.
const LOG_LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The levels a reader asking for `level` sees: it and every more severe
/// one (all of them for a level not named).
pub fn log_levels_down_to(level: &str) -> &'static [&'static str] {
    let rank = LOG_LEVELS
        .iter()
        .position(|l| *l == level)
        .unwrap_or(LOG_LEVELS.len() - 1);
    &LOG_LEVELS[..=rank]
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

/// How many of the latest failures a status shows.
pub const RECENT_ERRORS: usize = 20;

/// The flags a store raises beside a migration's trees, by name: the
/// same names in every store.
pub mod flag {
    /// The destination refused extended attributes (items were copied
    /// without them, each with a note).
    pub const XATTRS_REFUSED: &str = "dst_refuses_xattrs";
    /// The destination cannot hold symlinks.
    pub const NO_SYMLINKS_AT_DESTINATION: &str = "dst_holds_no_symlinks";
    /// The destination cannot hold empty folders.
    pub const NO_EMPTY_FOLDERS_AT_DESTINATION: &str = "dst_holds_no_empty_folders";
}

/// What a destination cannot hold: the plan leaves such source items
/// alone, with the reason, for a person to see before approving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unheld {
    /// Symlinks.
    Symlinks,
    /// Empty folders (an object store without folder markers).
    EmptyFolders,
}

impl Unheld {
    /// The flag that records it.
    pub fn flag(self) -> &'static str {
        match self {
            Unheld::Symlinks => flag::NO_SYMLINKS_AT_DESTINATION,
            Unheld::EmptyFolders => flag::NO_EMPTY_FOLDERS_AT_DESTINATION,
        }
    }
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

/// A pause between two copy batches longer than this is time the copy was
/// not running (stopped, resumed later), not slowness: stores leave it
/// out of the rates.
pub const IDLE_GAP_S: f64 = 30.0;

impl Estimate {
    /// Adds the rates of the copy so far (`files` files of `bytes` bytes
    /// copied in `active_s` seconds of copying) and the time left at
    /// them: the slower of the two bounds. Nothing without a measure.
    pub fn with_rates(mut self, files: u64, bytes: u64, active_s: f64) -> Estimate {
        if files == 0 || active_s <= 0.0 {
            return self;
        }
        let files_per_s = files as f64 / active_s;
        let bytes_per_s = bytes as f64 / active_s;
        self.files_per_s = Some(files_per_s);
        self.bytes_per_s = Some(bytes_per_s);
        let by_files = self.files as f64 / files_per_s;
        let by_bytes = if bytes_per_s > 0.0 {
            self.bytes as f64 / bytes_per_s
        } else {
            0.0
        };
        self.eta_s = Some(by_files.max(by_bytes));
        self
    }
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

impl ReviewItem {
    /// The item with the path of the name the plan links it to, if any,
    /// in its reason: the plan's reason for a link names no path
    /// (`plan_sql::link_names`), which the review renders as every path.
    pub fn linked_to(mut self, leader: Option<Vec<u8>>) -> ReviewItem {
        if let Some(leader) = leader {
            self.reason = Some(format!(
                "{} of {}",
                crate::plan_sql::HARD_LINK,
                RelPath::from_bytes(leader)
            ));
        }
        self
    }
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
    /// The processes holding folders of a store shared by many, and
    /// what they hold (none on a store one process owns).
    pub workers: Vec<WorkerLeases>,
}

/// What one worker process holds of one round of a shared store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerLeases {
    /// The process: host, process id, and which of its stores.
    pub holder: String,
    /// `src` or `dst` (folders of a round of discovery), or `copy`
    /// (items of the copy).
    pub side: String,
    /// The round (folder depth); 0 for the copy.
    pub round: u32,
    /// Folders (or copy items) it holds there, working on them or about
    /// to.
    pub held: u64,
    /// Milliseconds its latest lease there lasts; below 0, expired that
    /// long ago (a process that died: the others take its folders over).
    pub expires_in_ms: i64,
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

impl BrowseChild {
    /// Adds one row of a browse's query to `children`. The rows come one
    /// per child and status below it (one alone for a child with nothing
    /// below), in the children's order: a row of a child not last in
    /// `children` already makes it (`child`), and `below`, if it counts
    /// items, goes under it.
    pub fn add_row<E>(
        children: &mut Vec<BrowseChild>,
        path: &[u8],
        child: impl FnOnce() -> Result<BrowseChild, E>,
        below: Option<BelowStatus>,
    ) -> Result<(), E> {
        if children.last().is_none_or(|c| c.path.as_bytes() != path) {
            children.push(child()?);
        }
        if let (Some(below), Some(child)) = (below, children.last_mut())
            && below.items > 0
        {
            child.below.push(below);
        }
        Ok(())
    }
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
