//! [`StateStore`]: everything the engine, the lifecycle, the CLI and the
//! server ask of a migration's state, named by operation. A store keeps
//! its SQL (or whatever it keeps) to itself; callers hold a
//! `&dyn StateStore` and never learn which database answers.
//!
//! Discovery's protocol, which every store keeps:
//! 1. [`StateStore::begin_round`] prepares a side's round: the folders to
//!    list at that depth, minus those already listed (a resumed round).
//! 2. [`StateStore::pull`] leases them in batches, by ascending id.
//! 3. For each folder, its children go to
//!    [`StateStore::record_children`] (in several calls for a huge one,
//!    each with the listing's position), then
//!    [`StateStore::folder_listed`] completes it. A store commits a
//!    folder's children no later than its completion, so a completed
//!    folder always has all of its children, and the children of a folder
//!    never completed are discarded when its round begins again.
//! 4. [`StateStore::seal_round`] compares the round's pairs (destination
//!    rounds), recomputes its statistics from the events (replace, never
//!    increment, so a repeated seal does not double-count) and says
//!    whether the side is done.
//!
//! Statuses are append-only events; a node's status is its latest event
//! per phase. That is what makes a killed run resume to the uninterrupted
//! result, whichever store holds it.

use crate::*;

/// The state of one migration, as its callers use it. Writes marked
/// "buffered" may be committed later, in batches; a read through the same
/// store sees them (the store commits what it buffered first), and
/// [`StateStore::flush`] commits them on demand.
pub trait StateStore: Send + Sync {
    // The migration: what it is, its phase, its connections and flags.

    /// The migration this store holds.
    fn migration(&self) -> Result<MigrationSpec, StoreError>;

    /// Checks that the store holds `spec`'s migration (what opening with
    /// [`OpenMode::CreateOrResume`] checks), for a caller that opened it
    /// before it knew the migration.
    fn check_same_migration(&self, spec: MigrationSpec) -> Result<(), StoreError>;

    /// Records the migration's lifecycle phase.
    fn set_phase(&self, phase: Phase) -> Result<(), StoreError>;

    /// The migration's current phase.
    fn phase(&self) -> Result<Phase, StoreError>;

    /// The wrapped data key, if the migration has sealed any secret.
    fn keyring(&self) -> Result<Option<Keyring>, StoreError>;

    /// The migration's recorded connections (source first).
    fn connections(&self) -> Result<Vec<StoredConnection>, StoreError>;

    /// Replaces the keyring (when given) and the connections of the sides
    /// given, in one transaction.
    fn save_credentials(
        &self,
        keyring: Option<Keyring>,
        connections: Vec<StoredConnection>,
    ) -> Result<(), StoreError>;

    /// Records that the destination refused extended attributes (items
    /// were copied without them, each with a note), so verification does
    /// not report again what the copy reported.
    fn note_xattrs_refused(&self) -> Result<(), StoreError>;

    /// Records that the destination cannot hold `what`: the plan leaves
    /// such source items alone, with that reason, for a person to see
    /// before approving.
    fn note_unheld_at_destination(&self, what: Unheld) -> Result<(), StoreError>;

    /// Whether [`Self::note_xattrs_refused`] was recorded.
    fn xattrs_refused(&self) -> Result<bool, StoreError>;

    // Discovery: rounds of folders, leased, listed and sealed.

    /// Records both roots once (idempotent), with their mtimes and
    /// metadata (as the migration keeps them): the source root, and the
    /// destination root if it exists (`None` if it does not, in which case
    /// everything is missing). The roots compare like any other pair.
    fn record_roots(&self, src_root: Entry, dst_root: Option<Entry>) -> Result<(), StoreError>;

    /// Starts (or restarts) round `depth` of `side`: drops children of any
    /// folder of this round whose listing never finished, excludes (on the
    /// source, with a case-insensitive destination) names that clash by
    /// case at this depth, then prepares the round's frontier. Returns how
    /// many folders are pending. The source's round `depth` begins before
    /// round `depth - 1` is sealed.
    fn begin_round(&self, side: Side, depth: u32) -> Result<u64, StoreError>;

    /// Up to `limit` pending folders of the current round with ids above
    /// `after` (keyset paging).
    fn pull(&self, side: Side, after: i64, limit: usize) -> Result<Vec<FolderTask>, StoreError>;

    /// Appends children of `parent` (buffered; committed in batches).
    /// `position`, where the storage can resume a listing, is where the
    /// listing stands after them: it is committed with them, so a run
    /// killed in the middle of a huge folder lists on from the last
    /// committed position instead of from its start.
    fn record_children(
        &self,
        side: Side,
        parent: &FolderTask,
        children: Vec<ChildRecord>,
        position: Option<Vec<u8>>,
    ) -> Result<(), StoreError>;

    /// Marks `folder` listed at its `attempt`-th try: all its children were
    /// sent before this.
    fn folder_listed(
        &self,
        side: Side,
        folder: &FolderTask,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// Marks `folder` failed and discards any children sent for it.
    fn folder_failed(
        &self,
        side: Side,
        folder: &FolderTask,
        failure: Failure,
    ) -> Result<(), StoreError>;

    /// Discards the children sent for `folder` so far (before a retry).
    fn discard_children(&self, side: Side, folder: &FolderTask) -> Result<(), StoreError>;

    /// Seals round `depth` of `side`: statistics, comparison (destination
    /// rounds), and the round marker, in one transaction. Returns true if
    /// the side has nothing left to list. A source round is sealed once the
    /// next one has begun (see [`Self::begin_round`]). `metrics` is stored in
    /// `queue_stats` as measured by the caller.
    fn seal_round(
        &self,
        side: Side,
        depth: u32,
        metrics: serde_json::Value,
    ) -> Result<bool, StoreError>;

    /// Where the rounds stand.
    fn progress(&self) -> Result<RoundProgress, StoreError>;

    /// The discovery summary, from sealed statistics.
    fn summary(&self) -> Result<Summary, StoreError>;

    /// Queues the folders whose listing failed again (those under `prefix`
    /// only, if given) and reopens discovery from the shallowest of them;
    /// the next discovery run lists them and walks their subtrees.
    fn requeue_failed_folders(
        &self,
        prefix: Option<RelPath>,
    ) -> Result<FoldersRequeued, StoreError>;

    // Review and approval.

    /// Streams the selected items in batches to `sink`, sorted by side and
    /// path. Stops early without error if the receiver hangs up.
    fn review(&self, select: ReviewSelect, sink: Sender<Vec<ReviewItem>>)
    -> Result<(), StoreError>;

    /// One page of a review: at most `limit` items after `after` (a side
    /// and a path, as the last item of the previous page gives), at or
    /// under `prefix` if given. Pages are keyset pulls: each costs the
    /// same wherever it is.
    fn review_page(
        &self,
        select: ReviewSelect,
        after: Option<(Side, RelPath)>,
        filter: ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError>;

    /// The children of `folder` (after `after`, at most `limit`, by path):
    /// the source's and the destination's extras, each with its status
    /// and, for a folder, the items and bytes below it by status.
    fn browse(
        &self,
        folder: RelPath,
        after: Option<RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError>;

    /// The plan `policy` and `extras` would give now, with its hash: what
    /// an approval would cover. Nothing is recorded.
    fn preview_plan(&self, policy: Policy, extras: Extras) -> Result<PlanPreview, StoreError>;

    /// Computes the plan for `policy` (and `extras`) and records its
    /// approval by `approved_by`. Refused before discovery finished, and
    /// once the copy of a different plan started.
    fn approve(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
    ) -> Result<Approval, StoreError>;

    /// Like [`Self::approve`], only if the plan's hash is
    /// `expected` (the plan the approver was shown); a plan that changed
    /// since is refused with [`StoreError::PlanChanged`].
    fn approve_seen(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
        expected: &str,
    ) -> Result<Approval, StoreError>;

    /// The recorded approval, if any, without checking it.
    fn approval(&self) -> Result<Option<Approval>, StoreError>;

    /// The approval, checked against the plan discovery gives now: an error
    /// if there is none or the plan changed since.
    fn approved_plan(&self) -> Result<Approval, StoreError>;

    /// Extends the approval to items a retry sweep's discovery added, when
    /// every one of them is a creation (or skipped) and no approved item
    /// changed; returns how many were added, `None` if nothing is approved.
    fn extend_approval(&self) -> Result<Option<u64>, StoreError>;

    /// Everything a status shows, read at once; the estimate counts files
    /// larger than `part_size(migration)` apart (see
    /// [`Self::estimate`]).
    fn status_parts(&self, part_size: fn(&MigrationSpec) -> u64)
    -> Result<StatusParts, StoreError>;

    /// Failures by kind and the latest ones.
    fn task_errors(&self) -> Result<TaskErrors, StoreError>;

    /// The latest metrics of every discovery round.
    fn queue_stats(&self) -> Result<Vec<RoundMetrics>, StoreError>;

    /// What the copy still costs, with an ETA once a copy has run; files
    /// larger than `part_size` are counted apart, with their parts.
    fn estimate(&self, part_size: u64) -> Result<Estimate, StoreError>;

    // Copy, and the passes that follow.

    /// Prepares a copy run: the approved items not done yet.
    fn begin_copy(&self) -> Result<CopyTodo, StoreError>;

    /// Up to `limit` items of the copy run with ids above `after`.
    fn pull_copy(
        &self,
        pull: CopyPull,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError>;

    /// Records copy outcomes (buffered; committed in batches). The caller
    /// makes the data durable first.
    fn record_copy(&self, events: Vec<CopyEvent>) -> Result<(), StoreError>;

    /// Queues the failed copies again (those under `prefix` only, if
    /// given), one attempt more each; returns how many.
    fn requeue_failed_copies(&self, prefix: Option<RelPath>) -> Result<u64, StoreError>;

    /// Folders the copy made or updated (status `copied`), and folders it
    /// wrote into, whose mtime and metadata need setting (never set, or
    /// something was copied into them since), deepest first, after the
    /// keyset position `after` (depth, id).
    fn folder_times(
        &self,
        after: Option<(u32, i64)>,
        limit: usize,
    ) -> Result<Vec<FolderTime>, StoreError>;

    /// Records that these folders' (id, depth) mtimes were set.
    fn record_dated(&self, folders: Vec<(i64, u32)>) -> Result<(), StoreError>;

    /// Copy progress and results.
    fn copy_summary(&self) -> Result<CopySummary, StoreError>;

    /// Starts the next delta pass if the current one's copy finished (see
    /// the `pass` module); returns its number, `None` if the current pass
    /// goes on.
    fn next_pass(&self) -> Result<Option<u32>, StoreError>;

    // Verification.

    /// Prepares a verification of every copied item; returns how many.
    fn begin_verify(&self, checksum: bool) -> Result<u64, StoreError>;

    /// Up to `limit` items to verify with ids above `after`.
    fn pull_verify(&self, after: i64, limit: usize) -> Result<Vec<VerifyTask>, StoreError>;

    /// Records verification outcomes (buffered).
    fn record_verify(&self, events: Vec<VerifyEvent>) -> Result<(), StoreError>;

    /// Verification results, if a verification ran.
    fn verify_summary(&self) -> Result<Option<VerifySummary>, StoreError>;

    // Logs, and what is buffered.

    /// Appends log records (buffered; committed with the next batch).
    fn append_logs(&self, records: Vec<LogRecord>) -> Result<(), StoreError>;

    /// Up to `limit` log records after sequence number `after`, at `level`
    /// (`ERROR` ... `TRACE`) or more severe, oldest first.
    fn logs(&self, after: i64, level: &str, limit: usize) -> Result<Vec<LogEntry>, StoreError>;

    /// Commits everything buffered so far.
    fn flush(&self) -> Result<(), StoreError>;

    /// Whether other processes may work on this state at the same time,
    /// each leasing what it takes: a caller then pulls no further ahead
    /// than its own workers need, so that the others find work too.
    fn shared(&self) -> bool {
        false
    }
}
