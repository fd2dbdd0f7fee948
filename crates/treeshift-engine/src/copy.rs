//! Copy: carries out exactly the approved plan.
//!
//! Folders are created round by round (depth by depth), then files and
//! symlinks are copied by a worker pool with bounded bytes in flight, then
//! created folders get their source mtimes (deepest first, after their
//! contents were written). Every item is checked before it is written: a
//! source that changed since discovery, or a destination that is no longer
//! what discovery saw, is reported as `changed` and left alone. Data is
//! written to a temporary name and moved into place only when complete;
//! each batch of results is made durable (one sync of the destination)
//! before it is recorded as copied.

use crate::pool::{self, PoolConfig};
use crate::worker::failure;
use crate::{Cancel, EngineError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use treeshift_backend::{
    Apply, Backend, BackendError, Budget, ErrorKind, FolderKeeping, MtimeKeeping, RetryPolicy,
    SourceFile, Writable, Written,
};
use treeshift_core::{
    Action, CopyStatus, CopySummary, Entry, Keep, Kind, Meta, Phase, RelPath, Side, Xattr,
    aside_name, mtime_secs, quarantine_path, temp_name,
};
use treeshift_state::{CopyEvent, CopyPull, CopyTask, CopyTodo, FolderTime, StateStore, WrittenAs};

/// Tuning of a copy run.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Items copied at once.
    pub workers: usize,
    /// Bytes of files being copied at once, at most (a larger file runs
    /// alone).
    pub bytes_in_flight: u64,
    /// Items pulled from the store per batch.
    pub pull_batch: usize,
    /// Items made durable and recorded per batch, at most...
    pub commit_every: usize,
    /// ...or once the oldest result waited this long.
    pub commit_interval: Duration,
    /// Attempts per item for temporary errors.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt.
    pub base_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Raised to stop: items in flight finish and are recorded, the rest
    /// stay pending, and the run returns `Cancelled`.
    pub cancel: Cancel,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            workers: 8,
            bytes_in_flight: 256 << 20,
            pull_batch: 2048,
            commit_every: 4096,
            commit_interval: Duration::from_millis(500),
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            cancel: Cancel::new(),
        }
    }
}

/// Reports copy progress (the CLI draws bars with it).
pub trait CopyProgress: Send + Sync {
    /// What this run has to do.
    fn start(&self, _todo: &CopyTodo) {}
    /// One folder done (any outcome).
    fn folder_done(&self) {}
    /// One file or symlink done (any outcome), with the bytes it covered.
    fn file_done(&self, _bytes: u64) {}
}

impl CopyProgress for crate::NoProgress {}

/// Copies the approved plan from `src` to `dst`; resumes where a stopped
/// run left off. Refuses (with [`EngineError::ApprovalRequired`]) when
/// there is no approval or the plan changed since.
pub fn copy(
    store: &dyn StateStore,
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    options: &CopyOptions,
    progress: &dyn CopyProgress,
) -> Result<CopySummary, EngineError> {
    let approval = store.approved_plan().map_err(EngineError::approval)?;
    let writer = dst
        .writer()
        .ok_or_else(|| EngineError::NotWritable(dst.describe()))?;
    store.set_phase(Phase::Copying)?;
    let todo = store.begin_copy()?;
    let keep = store.migration()?.keep;
    src.keep(&keep);
    dst.keep(&keep);
    let xattrs_refused = store.xattrs_refused()?;
    tracing::info!(folders = todo.folders, files = todo.files, bytes = todo.bytes, policy = %approval.policy, keep = %keep.describe(), "copy started");
    progress.start(&todo);
    let copier = Copier {
        keep,
        xattrs_refused: AtomicBool::new(xattrs_refused),
        last_folders: Default::default(),
        src: src.as_ref(),
        dst: dst.as_ref(),
        writer,
        retry: RetryPolicy {
            max_attempts: options.max_attempts.max(1),
            base_delay: options.base_delay,
            max_delay: options.max_delay,
        },
        budget: Budget::new(options.bytes_in_flight),
        pass: approval.pass,
        src_own_mtimes: src.capabilities().mtime == MtimeKeeping::UserMetadata,
        dst_prefixes: dst.capabilities().folders == FolderKeeping::Prefixes,
    };
    let config = PoolConfig {
        workers: options.workers,
        // On a state other processes copy from too, what this one leases
        // ahead of its workers is taken from them.
        pull_batch: match store.shared() {
            true => options.pull_batch.min(options.workers.max(1) * 2),
            false => options.pull_batch,
        },
        commit_every: options.commit_every,
        commit_interval: options.commit_interval,
        cancel: options.cancel.clone(),
    };
    let commit = |events: Vec<CopyEvent>| -> Result<(), EngineError> {
        // Durable first, recorded second: a crash in between redoes the
        // batch, never trusts data the disk may not have.
        dst.sync().map_err(EngineError::Destination)?;
        store.record_copy(events)?;
        Ok(())
    };
    for &depth in &todo.folder_depths {
        pool::run(
            &config,
            |after| Ok(store.pull_copy(CopyPull::Folders { depth }, after, config.pull_batch)?),
            |t| t.id,
            |_| Ok(()),
            |t| {
                let event = copier.item(t, |t| copier.folder(t))?;
                progress.folder_done();
                Ok(event)
            },
            commit,
        )?;
    }
    let mark_copying = |batch: &[CopyTask]| -> Result<(), EngineError> {
        let marks = batch
            .iter()
            .map(|t| CopyEvent {
                id: t.id,
                depth: t.depth,
                status: CopyStatus::Copying,
                reason: None,
                error: None,
                attempt: t.attempt,
                written: WrittenAs::default(),
            })
            .collect();
        // Committed before any of them is written, so a temporary can
        // only exist for an item a resumed run sees as `copying`.
        store.record_copy(marks)?;
        Ok(store.flush()?)
    };
    pool::run(
        &config,
        |after| Ok(store.pull_copy(CopyPull::Files, after, config.pull_batch)?),
        |t| t.id,
        mark_copying,
        |t| {
            // A quarantine move or a metadata update copies no bytes.
            let (event, bytes) = match t.action {
                Action::Quarantine => (copier.item(t, |t| copier.quarantine(t))?, 0),
                Action::Metadata => (copier.item(t, |t| copier.metadata(t))?, 0),
                _ => (copier.item(t, |t| copier.file(t))?, t.size),
            };
            progress.file_done(bytes);
            Ok(event)
        },
        commit,
    )?;
    // Every file is in place: the other names of files with several.
    pool::run(
        &config,
        |after| Ok(store.pull_copy(CopyPull::Links, after, config.pull_batch)?),
        |t| t.id,
        mark_copying,
        |t| {
            let event = copier.item(t, |t| copier.link(t))?;
            progress.file_done(0);
            Ok(event)
        },
        commit,
    )?;
    copier.finish_folders(store)?;
    dst.sync().map_err(EngineError::Destination)?;
    if copier.xattrs_refused.load(Ordering::Relaxed) && !xattrs_refused {
        store.note_xattrs_refused()?;
    }
    let summary = store.copy_summary()?;
    if summary.is_finished() {
        store.set_phase(Phase::Copied)?;
    }
    tracing::info!(
        copied = summary.copied,
        failed = summary.failed,
        changed = summary.changed,
        pending = summary.pending,
        "copy ended"
    );
    Ok(summary)
}

/// How one item ended, short of an error.
enum Done {
    /// At its destination path, complete.
    Copied {
        /// What the destination could not keep, if anything.
        note: Option<String>,
        /// What a later discovery compares the destination with.
        written: WrittenAs,
    },
    /// Not copied: something changed since discovery.
    Changed(String),
}

const COPIED: Done = Done::Copied {
    note: None,
    written: WrittenAs {
        etag: None,
        own_mtime_ns: None,
    },
};

impl Done {
    fn noted(note: Option<String>) -> Done {
        Done::Copied {
            note,
            written: WrittenAs::default(),
        }
    }
}

/// What writing one file or symlink did.
struct FileWritten {
    written: Written,
    /// What the destination could not keep, if anything.
    note: Option<String>,
    /// The file's own mtime the destination was given, where the source
    /// keeps it apart from its listing's.
    own_mtime_ns: Option<i64>,
}

/// A folder whose identity was checked, and the change found (`None`: it
/// is the folder discovery saw).
type FolderVerdict = (RelPath, Option<String>);

/// The note on items copied without their extended attributes.
const XATTRS_REFUSED: &str =
    "copied without its extended attributes and ACLs: the destination does not support them";

struct Copier<'a> {
    /// What the migration keeps besides data and mtimes.
    keep: Keep,
    /// Set once the destination refused extended attributes: the rest go
    /// without, each with a note.
    xattrs_refused: AtomicBool,
    /// Per side, the last folder whose identity was checked, and the
    /// change found (`None`: it is the folder discovery saw).
    last_folders: [Mutex<Option<FolderVerdict>>; 2],
    src: &'a dyn Backend,
    dst: &'a dyn Backend,
    writer: &'a dyn Writable,
    retry: RetryPolicy,
    /// Bytes of files being copied at once; a file larger than the
    /// whole budget waits until nothing else is in flight, then runs alone.
    budget: Budget,
    /// The approved plan's pass (names its quarantine folder).
    pass: u32,
    /// The source keeps files' own mtimes apart from the ones its
    /// listings give (object stores, in user metadata).
    src_own_mtimes: bool,
    /// The destination's folders are there once something is written
    /// under them (an object store without markers).
    dst_prefixes: bool,
}

impl Copier<'_> {
    /// Runs one item with retries of temporary errors, and turns the result
    /// into its event. Only an error that stops all writes is returned.
    fn item(
        &self,
        task: &CopyTask,
        attempt: impl Fn(&CopyTask) -> Result<Done, BackendError>,
    ) -> Result<CopyEvent, EngineError> {
        let mut tries = 0;
        let mut retried;
        let mut current = task;
        let outcome = loop {
            tries += 1;
            // Nothing is read or written in a folder put in the place of
            // the one discovery saw.
            let attempted = match self.folder_swapped(current) {
                Ok(Some(done)) => Ok(done),
                Ok(None) => attempt(current),
                Err(e) => Err(e),
            };
            match attempted {
                Err(e) if e.kind.is_temporary() && self.retry.again(tries) => {
                    tracing::debug!(path = %task.path, error = %e, tries, "retrying a copy");
                    std::thread::sleep(self.retry.delay(tries, None));
                    // The failed attempt may have written the item all the
                    // same (a store that did the write and lost the answer):
                    // the next one judges what it finds there as a stopped
                    // run's own write.
                    retried = CopyTask {
                        in_flight: true,
                        ..task.clone()
                    };
                    current = &retried;
                }
                other => break other,
            }
        };
        let event = |status, reason| CopyEvent {
            id: task.id,
            depth: task.depth,
            status,
            reason,
            error: None,
            attempt: task.attempt,
            written: WrittenAs::default(),
        };
        // Source calls turn their own changed ways into `Changed`; one
        // left here is the destination's.
        let outcome = match outcome {
            Err(e) if e.kind == ErrorKind::PathChanged => Ok(way_changed("destination", &e)),
            other => other,
        };
        match outcome {
            Ok(Done::Copied { note, written }) => Ok(CopyEvent {
                written,
                ..event(CopyStatus::Copied, note)
            }),
            Ok(Done::Changed(why)) => {
                tracing::info!(path = %task.path, reason = %why, "not copied: changed since discovery");
                Ok(event(CopyStatus::Changed, Some(why)))
            }
            Err(e) if e.kind.stops_writes() => Err(EngineError::Destination(e)),
            Err(e) => {
                tracing::warn!(path = %task.path, error = %e, "copy failed");
                let mut ev = event(CopyStatus::Failed, Some(format!("{}: {e}", e.kind)));
                ev.error = Some((task.path.clone(), failure(&e, tries)));
                Ok(ev)
            }
        }
    }

    /// `Some(changed)` if the folder `task` is in, on either side, is not
    /// the folder discovery saw there: another was put in its place, or it
    /// is gone. Each side remembers its last folder and verdict: items come
    /// in node order, so one look serves a folder's items.
    fn folder_swapped(&self, task: &CopyTask) -> Result<Option<Done>, BackendError> {
        let folder = task.path.parent();
        let sides: [(&str, &dyn Backend); 2] = [("source", self.src), ("destination", self.dst)];
        for (i, (side, backend)) in sides.into_iter().enumerate() {
            let Some(want) = task.folders[i] else {
                continue;
            };
            let cached = self.last_folders[i]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(path, _)| *path == folder)
                .map(|(_, verdict)| verdict.clone());
            let verdict = match cached {
                Some(verdict) => verdict,
                None => {
                    let verdict = match backend.identity(&folder) {
                        Ok(Some(now)) if now == want => None,
                        Ok(Some(_)) => Some(format!(
                            "{side}: {folder} is not the folder discovery saw (another was put in its place)"
                        )),
                        Ok(None) => Some(format!("{side}: {folder} is gone")),
                        Err(e) if e.kind == ErrorKind::PathChanged => {
                            Some(format!("{side}: {} ({})", e.message, e.operation))
                        }
                        Err(e) => return Err(e),
                    };
                    *self.last_folders[i]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) =
                        Some((folder.clone(), verdict.clone()));
                    verdict
                }
            };
            if let Some(why) = verdict {
                return Ok(Some(Done::Changed(why)));
            }
        }
        Ok(None)
    }

    /// Clears the way at the destination path. `Ok(replace)`: write the
    /// item (`replace`: what discovery saw there is still there and the
    /// plan replaces it). `Err(done)`: nothing to write.
    fn prepare(&self, task: &CopyTask) -> Result<Result<bool, Done>, BackendError> {
        match self.dst.stat(&task.path)? {
            Some(now) => self.occupied(task, &now),
            None => Ok(Ok(false)),
        }
    }

    /// What to do with the item at the destination path (`now`); see
    /// [`Copier::prepare`].
    fn occupied(&self, task: &CopyTask, now: &Entry) -> Result<Result<bool, Done>, BackendError> {
        // What a stopped run wrote there carries the file's own mtime where
        // the source keeps it apart (an object's metadata, which its
        // stat gives): that is the one to find, and to record.
        let own_mtime_ns = if task.in_flight && task.kind == Kind::File && self.src_own_mtimes {
            self.src.stat(&task.path)?.and_then(|e| e.mtime_ns)
        } else {
            None
        };
        if matches(now, task.kind, task.size, own_mtime_ns.or(task.mtime_ns)) {
            // Only an item marked `copying` (files and symlinks are marked
            // before they are handed out) can have been written by an
            // earlier run that stopped before recording it. Anything else
            // where discovery saw nothing was put there by someone else, or
            // is another name for the same entry on a case-insensitive
            // store ("Case" for "case"): never take it for ours.
            if task.kind != Kind::Folder && task.action == Action::Create && !task.in_flight {
                return Ok(Err(Done::Changed(format!(
                    "destination: a {} of the same size and mtime appeared since discovery",
                    now.kind.as_str()
                ))));
            }
            return Ok(Err(Done::Copied {
                note: None,
                written: WrittenAs {
                    etag: now.etag.clone(),
                    own_mtime_ns,
                },
            }));
        }
        // Still what discovery saw there?
        let seen = task
            .dst
            .filter(|seen| matches(now, seen.kind, seen.size, seen.mtime_ns));
        match (task.action, seen) {
            (Action::Rename, Some(_)) => {
                let aside = task.path.sibling(&aside_name(task.path.name()));
                self.writer.move_aside(&task.path, &aside)?;
                Ok(Ok(false))
            }
            (Action::Replace, Some(seen)) if seen.kind == Kind::Folder => {
                // Approved: a folder is where the source has a file.
                self.writer.remove(&task.path)?;
                Ok(Ok(false))
            }
            (Action::Replace, Some(_)) => Ok(Ok(true)),
            (Action::Create, _) => Ok(Err(Done::Changed(format!(
                "destination: a {} appeared since discovery",
                now.kind.as_str()
            )))),
            _ => Ok(Err(Done::Changed(format!(
                "destination changed since discovery (now a {} of {} bytes)",
                now.kind.as_str(),
                now.size
            )))),
        }
    }

    /// Moves a destination extra into the pass's quarantine folder, keeping
    /// its relative path; only what discovery saw there is moved.
    fn quarantine(&self, task: &CopyTask) -> Result<Done, BackendError> {
        let target = quarantine_path(self.pass, &task.path);
        let Some(now) = self.dst.stat(&task.path)? else {
            // A run that stopped after the move but before recording it.
            return Ok(match self.dst.stat(&target)? {
                Some(_) => COPIED,
                None => Done::Changed("destination: vanished since discovery".to_string()),
            });
        };
        if let Some(changed) = unlike_seen(task, &now) {
            return Ok(changed);
        }
        let mut ancestors = Vec::new();
        let mut folder = target.parent();
        while !folder.is_root() {
            let up = folder.parent();
            ancestors.push(folder);
            folder = up;
        }
        for folder in ancestors.iter().rev() {
            self.writer.create_folder(folder)?;
        }
        self.writer.move_aside(&task.path, &target)?;
        Ok(COPIED)
    }

    /// After the source item could not be opened: `Some` if that is because
    /// it vanished or became another kind since discovery (a change to
    /// report), `None` if it is still what discovery saw (the error stands).
    fn source_gone(&self, task: &CopyTask) -> Option<Done> {
        match self.src.stat(&task.path) {
            Ok(Some(now)) if now.kind == task.kind => None,
            Ok(other) => Some(kind_changed(task, other.as_ref())),
            Err(e) if e.kind == ErrorKind::PathChanged => Some(way_changed("source", &e)),
            Err(_) => None,
        }
    }

    fn folder(&self, task: &CopyTask) -> Result<Done, BackendError> {
        if self.dst_prefixes && task.action == Action::Create {
            // Nothing to make, nothing to look at first: the folder is
            // there once its contents are (the plan left the empty ones).
            return Ok(COPIED);
        }
        match self.prepare(task)? {
            Ok(replace) => {
                if replace {
                    // Approved: a file is where the source has a folder.
                    self.writer.remove(&task.path)?;
                }
                self.writer.create_folder(&task.path)?;
                Ok(COPIED)
            }
            Err(done) => Ok(done),
        }
    }

    fn file(&self, task: &CopyTask) -> Result<Done, BackendError> {
        let temp = task.path.sibling(&temp_name(task.id));
        if task.in_flight {
            // A stopped run was writing it: a temporary may be left.
            self.writer.remove_temp(&temp)?;
        }
        // A file or symlink the plan creates is written without a look at
        // its destination path first: putting it in place never replaces,
        // and whatever took the path is judged then, as it would be now.
        let create = task.action == Action::Create;
        let replace = if create {
            false
        } else {
            match self.prepare(task)? {
                Ok(replace) => replace,
                Err(done) => return Ok(done),
            }
        };
        let FileWritten {
            written,
            note,
            own_mtime_ns,
        } = match task.kind {
            Kind::File => match self.write_file(task, &temp, replace)? {
                Ok(written) => written,
                Err(done) => return Ok(done),
            },
            Kind::Symlink => {
                let live = match self.src_now(task)? {
                    Ok(live) => live,
                    Err(done) => return Ok(done),
                };
                let target = match self.src.read_link(&task.path) {
                    Ok(target) => target,
                    Err(e) if e.kind == ErrorKind::PathChanged => {
                        return Ok(way_changed("source", &e));
                    }
                    Err(e) => return Err(e),
                };
                let apply = self.apply_for(&live.meta, None, task.mtime_ns);
                let written = self
                    .writer
                    .symlink(&task.path, &temp, &target, replace, &apply)?;
                FileWritten {
                    written,
                    note: None,
                    own_mtime_ns: None,
                }
            }
            Kind::Folder | Kind::Special => {
                return Err(BackendError::new(
                    ErrorKind::Unsupported,
                    "copy",
                    task.path.to_string(),
                    format!("a {} is not copied as a file", task.kind.as_str()),
                ));
            }
        };
        let appeared = || {
            Done::Changed("destination: an item appeared at this path while it was copied".into())
        };
        Ok(match written {
            Written::Done { etag, .. } => Done::Copied {
                note,
                written: WrittenAs { etag, own_mtime_ns },
            },
            Written::Changed(why) => Done::Changed(why),
            Written::Occupied if !create => appeared(),
            Written::Occupied => match self.dst.stat(&task.path)? {
                Some(now) => self.occupied(task, &now)?.err().unwrap_or_else(appeared),
                None => appeared(),
            },
        })
    }

    /// Another name of a file with several: a hard link to the name the
    /// plan made it share data with, once that one holds the source's data
    /// on the destination. Where the destination cannot hold hard links,
    /// the file is copied on its own, with a note.
    fn link(&self, task: &CopyTask) -> Result<Done, BackendError> {
        let Some(leader) = &task.link_to else {
            return self.file(task);
        };
        let temp = task.path.sibling(&temp_name(task.id));
        if task.in_flight {
            self.writer.remove_temp(&temp)?;
        }
        let replace = match self.prepare(task)? {
            Ok(replace) => replace,
            Err(done) => return Ok(done),
        };
        match self.dst.stat(leader)? {
            Some(e) if matches(&e, Kind::File, task.size, task.mtime_ns) => {}
            // Its copy failed or has not happened: a failure a retry sweep
            // redoes, after the name it links to.
            None => {
                return Err(BackendError::new(
                    ErrorKind::NotFound,
                    "hard_link",
                    task.path.to_string(),
                    format!("{leader}, which it is a hard link of, is not on the destination"),
                ));
            }
            Some(_) => {
                return Ok(Done::Changed(format!(
                    "destination: {leader}, which it is a hard link of, does not hold the source's data"
                )));
            }
        }
        if let Err(done) = self.src_now(task)? {
            return Ok(done);
        }
        match self.writer.hard_link(leader, &task.path, &temp, replace) {
            Ok(true) => Ok(COPIED),
            Ok(false) => Ok(Done::Changed(
                "destination: an item appeared at this path while it was linked".to_string(),
            )),
            Err(e) if e.kind == ErrorKind::Unsupported => Ok(match self.file(task)? {
                Done::Copied {
                    note: None,
                    written,
                } => Done::Copied {
                    note: Some(format!(
                        "copied as a file of its own: the destination cannot hold hard links ({leader})"
                    )),
                    written,
                },
                other => other,
            }),
            Err(e) => Err(e),
        }
    }

    /// Writes a file's data with its metadata, reading the source once
    /// more if the destination turns out to refuse extended attributes
    /// (then every later file goes without them, with a note). The source
    /// is checked again after its data is written and before it is put in
    /// place. `Err(done)`: nothing written, for that reason.
    fn write_file(
        &self,
        task: &CopyTask,
        temp: &RelPath,
        replace: bool,
    ) -> Result<Result<FileWritten, Done>, BackendError> {
        let check = |source: &SourceFile, written: u64| {
            let now = source.restat().unwrap_or((written, source.mtime_ns));
            if written != task.size {
                Some(format!(
                    "source: read {written} bytes of {} (changed while copied)",
                    task.size
                ))
            } else {
                source_changed(task, now.0, now.1).map(|why| format!("source: {why} while copied"))
            }
        };
        loop {
            let mut source = match self.src.open_read(&task.path) {
                Ok(f) => f,
                Err(e) => return self.source_gone(task).map(Err).ok_or(e),
            };
            if let Some(why) = source_changed(task, source.size, source.mtime_ns) {
                return Ok(Err(Done::Changed(format!("source: {why} since discovery"))));
            }
            let refused = self.xattrs_refused.load(Ordering::Relaxed);
            let mtime = source.own_mtime_ns.or(source.mtime_ns);
            let apply = self.apply_for(&source.meta, Some(&source.xattrs), mtime);
            let _permit = self.budget.acquire(task.size);
            match self
                .writer
                .write(&task.path, temp, &mut source, replace, &apply, &check)
            {
                Err(e) if !refused && refuses_xattrs(&e) => self.refuse_xattrs(&e),
                Err(e) => return Err(e),
                Ok(written) => {
                    let note =
                        (refused && !source.xattrs.is_empty()).then(|| XATTRS_REFUSED.to_string());
                    return Ok(Ok(FileWritten {
                        written,
                        note,
                        own_mtime_ns: source.own_mtime_ns,
                    }));
                }
            }
        }
    }

    /// An item whose data is in step: sets its metadata as the source has
    /// it now, copying nothing. Both sides must still be what discovery saw.
    fn metadata(&self, task: &CopyTask) -> Result<Done, BackendError> {
        let Some(now) = self.dst.stat(&task.path)? else {
            return Ok(Done::Changed(
                "destination: vanished since discovery".into(),
            ));
        };
        if let Some(changed) = unlike_seen(task, &now) {
            return Ok(changed);
        }
        let live = match self.src_now(task)? {
            Ok(live) => live,
            Err(done) => return Ok(done),
        };
        loop {
            let refused = self.xattrs_refused.load(Ordering::Relaxed);
            let xattrs = match task.kind {
                Kind::File | Kind::Folder if self.keep.any_xattrs() && !refused => {
                    Some(self.src.xattrs(&task.path)?)
                }
                _ => None,
            };
            let apply = self.apply_for(&live.meta, xattrs.as_deref(), task.mtime_ns);
            match self.writer.set_metadata(&task.path, &apply) {
                Err(e) if !refused && refuses_xattrs(&e) => self.refuse_xattrs(&e),
                Err(e) => return Err(e),
                Ok(()) => {
                    let had = xattrs.is_some_and(|x| !x.is_empty());
                    return Ok(Done::noted(
                        (refused && had).then(|| XATTRS_REFUSED.to_string()),
                    ));
                }
            }
        }
    }

    /// The source item as it is now, which must be what discovery saw
    /// (size and mtime aside for a folder). `Err(done)`: it is not.
    fn src_now(&self, task: &CopyTask) -> Result<Result<Entry, Done>, BackendError> {
        let live = match self.src.stat(&task.path) {
            Ok(Some(e)) if e.kind == task.kind => e,
            Ok(other) => return Ok(Err(kind_changed(task, other.as_ref()))),
            Err(e) if e.kind == ErrorKind::PathChanged => {
                return Ok(Err(way_changed("source", &e)));
            }
            Err(e) => return Err(e),
        };
        if task.kind != Kind::Folder
            && let Some(why) = source_changed(task, live.size, live.mtime_ns)
        {
            return Ok(Err(Done::Changed(format!("source: {why} since discovery"))));
        }
        Ok(Ok(live))
    }

    /// What a write puts on an item besides its data: the source's
    /// metadata (`meta`, as the source has it) as the migration keeps it,
    /// owners mapped, and its extended attributes unless the destination
    /// refuses them.
    fn apply_for(&self, meta: &Meta, xattrs: Option<&[Xattr]>, mtime_ns: Option<i64>) -> Apply {
        let kept = self.keep.apply(Side::Src, *meta);
        let refused = self.xattrs_refused.load(Ordering::Relaxed);
        Apply {
            mtime_ns,
            mode: kept.mode,
            owner: kept.uid.zip(kept.gid),
            xattrs: xattrs
                .filter(|_| self.keep.any_xattrs() && !refused)
                .map(<[Xattr]>::to_vec),
        }
    }

    fn refuse_xattrs(&self, e: &BackendError) {
        if !self.xattrs_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "the destination does not support extended attributes: items are copied without them, each with a note");
        }
    }

    /// Gives the folders the copy made, updated or wrote into their
    /// metadata and mtimes, deepest first: last, because writing into a
    /// folder changes its mtime, and a read-only folder must first receive
    /// its contents.
    fn finish_folders(&self, store: &dyn StateStore) -> Result<(), EngineError> {
        let mut after = None;
        loop {
            let batch = store.folder_times(after, 2048)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = Some((last.depth, last.id));
            let mut dated = Vec::with_capacity(batch.len());
            for f in &batch {
                match self.finish_folder(f) {
                    Ok(()) => dated.push((f.id, f.depth)),
                    Err(e) if e.kind.stops_writes() => return Err(EngineError::Destination(e)),
                    Err(e) => {
                        tracing::warn!(path = %f.path, error = %e, "could not set a folder's metadata")
                    }
                }
            }
            store.record_dated(dated)?;
        }
    }

    fn finish_folder(&self, f: &FolderTime) -> Result<(), BackendError> {
        let Some(meta) = f.meta else {
            // In step, but written into: only its mtime is put back.
            return self.writer.set_metadata(
                &f.path,
                &Apply {
                    mtime_ns: Some(f.mtime_ns),
                    ..Apply::default()
                },
            );
        };
        loop {
            let refused = self.xattrs_refused.load(Ordering::Relaxed);
            let xattrs = if self.keep.any_xattrs() && !refused {
                Some(self.src.xattrs(&f.path)?)
            } else {
                None
            };
            // Recorded at discovery with owners mapped already.
            let apply = Apply {
                mtime_ns: Some(f.mtime_ns),
                mode: meta.mode,
                owner: meta.uid.zip(meta.gid),
                xattrs,
            };
            match self.writer.set_metadata(&f.path, &apply) {
                Err(e) if !refused && refuses_xattrs(&e) => self.refuse_xattrs(&e),
                other => return other,
            }
        }
    }
}

/// The destination refused to hold extended attributes (or ACLs).
fn refuses_xattrs(e: &BackendError) -> bool {
    e.kind == ErrorKind::Unsupported && e.operation == "set_xattrs"
}

/// True if `now` (at the destination) is an item of this kind, size and
/// mtime (to the second; a folder matches by kind alone).
/// An mtime missing on either side is not compared: a store that keeps
/// none of its own (an object store) knows it only from what treeshift
/// wrote into the item's metadata.
fn matches(now: &Entry, kind: Kind, size: u64, mtime_ns: Option<i64>) -> bool {
    let same_mtime = match (now.mtime_ns, mtime_ns) {
        (Some(a), Some(b)) => mtime_secs(a) == mtime_secs(b),
        _ => true,
    };
    now.kind == kind && (kind == Kind::Folder || (now.size == size && same_mtime))
}

/// The way to an item changed since discovery (a folder on it became a
/// symlink or a file): nothing was read or written through it.
fn way_changed(side: &str, e: &BackendError) -> Done {
    Done::Changed(format!("{side}: {} ({})", e.message, e.operation))
}

/// `None` if `now`, at the destination, is still what discovery saw
/// there; else the change to report.
fn unlike_seen(task: &CopyTask, now: &Entry) -> Option<Done> {
    let as_seen = task
        .dst
        .is_some_and(|seen| matches(now, seen.kind, seen.size, seen.mtime_ns));
    (!as_seen).then(|| {
        Done::Changed(format!(
            "destination changed since discovery (now a {} of {} bytes)",
            now.kind.as_str(),
            now.size
        ))
    })
}

/// The source item vanished (`None`) or is another kind than discovery saw.
fn kind_changed(task: &CopyTask, now: Option<&Entry>) -> Done {
    Done::Changed(match now {
        None => "source: vanished since discovery".to_string(),
        Some(e) => format!(
            "source: now a {} (a {} at discovery)",
            e.kind.as_str(),
            task.kind.as_str()
        ),
    })
}

fn source_changed(task: &CopyTask, size: u64, mtime_ns: Option<i64>) -> Option<String> {
    if size != task.size {
        Some(format!("size {} became {size}", task.size))
    } else if secs(mtime_ns) != secs(task.mtime_ns) {
        Some("modified".to_string())
    } else {
        None
    }
}

fn secs(ns: Option<i64>) -> Option<i64> {
    ns.map(mtime_secs)
}
