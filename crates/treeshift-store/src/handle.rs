//! [`StoreHandle`]: every operation of the store, as a message to its
//! thread (appends, buffered) or a call answered by it or by a reader
//! thread (see `reader`).

use super::*;

/// A cloneable way to talk to the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    pub(crate) tx: Sender<Request>,
    /// Rows in `tx` not yet taken by the store thread.
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) fault: Arc<Mutex<Option<String>>>,
    /// Set when the store thread has ended, however it ended.
    pub(crate) ended: Arc<AtomicBool>,
    pub(crate) path: Arc<PathBuf>,
    pub(crate) readers: ReadersHandle,
    /// Reads go to the reader threads (see [`StoreHandle::committed`]).
    pub(crate) committed: bool,
}

impl StoreHandle {
    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn send(&self, req: Request) -> Result<(), StoreError> {
        if !self.backlog.add(req.rows(), &self.ended) {
            return Err(self.stopped());
        }
        self.tx.send(req).map_err(|_| self.stopped())
    }

    pub(crate) fn stopped(&self) -> StoreError {
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
    pub(crate) fn read<R: Send + 'static>(
        &self,
        f: impl Fn(&Db) -> Result<R, StoreError> + Send + Sync + 'static,
    ) -> Result<R, StoreError> {
        self.read_after(true, f)
    }

    /// Runs a read of what is never buffered (settings, the phase, the
    /// approval, the rounds): as [`StoreHandle::read`], without a commit.
    pub(crate) fn read_unbuffered<R: Send + 'static>(
        &self,
        f: impl Fn(&Db) -> Result<R, StoreError> + Send + Sync + 'static,
    ) -> Result<R, StoreError> {
        self.read_after(false, f)
    }

    /// A read that keeps running out of memory on the readers, beside the
    /// writer (a review's full query during a discovery's seals), runs on
    /// the store thread after all: it waits, but it answers, as every read
    /// did before there were readers.
    pub(crate) fn read_after<R: Send + 'static>(
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
    pub(crate) fn read_streaming(
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

    pub(crate) fn call<R: Send + 'static>(
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
