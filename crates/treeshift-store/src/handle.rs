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
}

impl StateStore for StoreHandle {
    fn migration(&self) -> Result<MigrationSpec, StoreError> {
        self.read_unbuffered(|db| db.migration())
    }

    fn check_same_migration(&self, spec: MigrationSpec) -> Result<(), StoreError> {
        self.call(move |w| w.check_same_migration(&spec))
    }

    fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        self.call(|w| w.keyring())
    }

    fn connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        self.call(|w| w.connections())
    }

    fn save_credentials(
        &self,
        keyring: Option<Keyring>,
        connections: Vec<StoredConnection>,
    ) -> Result<(), StoreError> {
        self.call(move |w| w.save_credentials(keyring.as_ref(), &connections))
    }

    fn record_roots(&self, src_root: Entry, dst_root: Option<Entry>) -> Result<(), StoreError> {
        self.call(move |w| w.record_roots(&src_root, dst_root.as_ref()))
    }

    fn record_children(
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

    fn folder_listed(
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

    fn folder_failed(
        &self,
        side: Side,
        folder: &FolderTask,
        failure: Failure,
    ) -> Result<(), StoreError> {
        let folder = folder.clone();
        self.call(move |w| w.folder_failed(side, &folder, &failure))
    }

    fn discard_children(&self, side: Side, folder: &FolderTask) -> Result<(), StoreError> {
        let folder = folder.clone();
        self.call(move |w| w.discard_children(side, &folder))
    }

    fn begin_round(&self, side: Side, depth: u32) -> Result<u64, StoreError> {
        self.call(move |w| w.begin_round(side, depth))
    }

    fn pull(&self, side: Side, after: i64, limit: usize) -> Result<Vec<FolderTask>, StoreError> {
        self.call(move |w| w.pull(side, after, limit))
    }

    fn seal_round(
        &self,
        side: Side,
        depth: u32,
        metrics: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.call(move |w| w.seal_round(side, depth, &metrics))
    }

    fn progress(&self) -> Result<RoundProgress, StoreError> {
        self.read_unbuffered(|db| db.progress())
    }

    fn set_phase(&self, phase: Phase) -> Result<(), StoreError> {
        self.call(move |w| w.set_phase(phase))
    }

    fn phase(&self) -> Result<Phase, StoreError> {
        self.read_unbuffered(|db| db.phase())
    }

    fn note_xattrs_refused(&self) -> Result<(), StoreError> {
        self.call(|w| w.set_flag(flag::XATTRS_REFUSED))
    }

    fn note_unheld_at_destination(&self, what: Unheld) -> Result<(), StoreError> {
        self.call(move |w| w.set_flag(what.flag()))
    }

    fn xattrs_refused(&self) -> Result<bool, StoreError> {
        self.call(|w| w.flag(flag::XATTRS_REFUSED))
    }

    fn status_parts(
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
                // One process owns a file.
                workers: Vec::new(),
                migration,
                approval,
                copy,
                verify,
            })
        })
    }

    fn summary(&self) -> Result<Summary, StoreError> {
        self.read(|db| db.summary())
    }

    fn review(
        &self,
        select: ReviewSelect,
        sink: Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        self.read_streaming(move |db| db.review(select, &sink))
    }

    fn review_page(
        &self,
        select: ReviewSelect,
        after: Option<(Side, RelPath)>,
        filter: ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        self.read(move |db| db.review_page(select, after.as_ref(), &filter, limit))
    }

    fn browse(
        &self,
        folder: RelPath,
        after: Option<RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        // The first browse after a discovery has the store thread sum what
        // is below each folder; every browse after it reads those sums.
        if self.read_unbuffered(|db| db.browse_sums_wanted())? {
            self.call(|w| w.make_browse_sums())?;
        }
        self.read(move |db| db.browse(&folder, after.as_ref(), limit))
    }

    fn approve(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
    ) -> Result<Approval, StoreError> {
        let by = approved_by.to_string();
        self.call(move |w| w.approve(policy, extras, &by, None))
    }

    fn approve_seen(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
        expected: &str,
    ) -> Result<Approval, StoreError> {
        let (by, expected) = (approved_by.to_string(), expected.to_string());
        self.call(move |w| w.approve(policy, extras, &by, Some(&expected)))
    }

    fn preview_plan(&self, policy: Policy, extras: Extras) -> Result<PlanPreview, StoreError> {
        self.call(move |w| w.preview_plan(policy, extras))
    }

    fn approval(&self) -> Result<Option<Approval>, StoreError> {
        self.read_unbuffered(|db| db.approval())
    }

    fn approved_plan(&self) -> Result<Approval, StoreError> {
        self.call(|w| w.approved_plan())
    }

    fn begin_copy(&self) -> Result<CopyTodo, StoreError> {
        self.call(|w| w.begin_copy())
    }

    fn pull_copy(
        &self,
        pull: CopyPull,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        self.call(move |w| w.pull_copy(pull, after, limit))
    }

    fn record_copy(&self, events: Vec<CopyEvent>) -> Result<(), StoreError> {
        self.call(move |w| {
            w.record_copy(events);
            Ok(())
        })
    }

    fn task_errors(&self) -> Result<TaskErrors, StoreError> {
        self.read(|db| db.task_errors())
    }

    fn queue_stats(&self) -> Result<Vec<RoundMetrics>, StoreError> {
        self.read_unbuffered(|db| db.queue_stats())
    }

    fn estimate(&self, part_size: u64) -> Result<Estimate, StoreError> {
        self.read(move |db| db.estimate(part_size))
    }

    fn append_logs(&self, records: Vec<LogRecord>) -> Result<(), StoreError> {
        self.send(Request::Logs(records))
    }

    fn logs(&self, after: i64, level: &str, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let level = level.to_string();
        self.read(move |db| db.logs(after, &level, limit))
    }

    fn next_pass(&self) -> Result<Option<u32>, StoreError> {
        self.call(|w| w.next_pass())
    }

    fn requeue_failed_folders(
        &self,
        prefix: Option<RelPath>,
    ) -> Result<FoldersRequeued, StoreError> {
        self.call(move |w| w.requeue_failed_folders(prefix.as_ref()))
    }

    fn extend_approval(&self) -> Result<Option<u64>, StoreError> {
        self.call(|w| w.extend_approval())
    }

    fn requeue_failed_copies(&self, prefix: Option<RelPath>) -> Result<u64, StoreError> {
        self.call(move |w| w.requeue_failed_copies(prefix.as_ref()))
    }

    fn folder_times(
        &self,
        after: Option<(u32, i64)>,
        limit: usize,
    ) -> Result<Vec<FolderTime>, StoreError> {
        self.call(move |w| w.folder_times(after, limit))
    }

    fn record_dated(&self, folders: Vec<(i64, u32)>) -> Result<(), StoreError> {
        self.call(move |w| {
            w.record_dated(folders);
            Ok(())
        })
    }

    fn copy_summary(&self) -> Result<CopySummary, StoreError> {
        self.read(|db| db.copy_summary())
    }

    fn begin_verify(&self, checksum: bool) -> Result<u64, StoreError> {
        self.call(move |w| w.begin_verify(checksum))
    }

    fn pull_verify(&self, after: i64, limit: usize) -> Result<Vec<VerifyTask>, StoreError> {
        self.call(move |w| w.pull_verify(after, limit))
    }

    fn record_verify(&self, events: Vec<VerifyEvent>) -> Result<(), StoreError> {
        self.call(move |w| {
            w.record_verify(events);
            Ok(())
        })
    }

    fn verify_summary(&self) -> Result<Option<VerifySummary>, StoreError> {
        self.read(|db| db.verify_summary())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.call(|w| w.flush())
    }
}
