//! Discovery: two side runners (src, dst), each with its own worker pool,
//! walking their trees round by round through the store.

use crate::coordinator::Gate;
use crate::progress::DiscoveryProgress;
use crate::worker::Lister;
use crate::{Cancel, EngineError};
use crossbeam_channel::{TrySendError, bounded};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use treeshift_backend::{
    Backend, BackendError, Capabilities, FolderKeeping, MtimeKeeping, RetryPolicy,
};
use treeshift_core::{Entry, Filter, Keep, Kind, RelPath, Side, Summary, xattr_digest};
use treeshift_state::{FolderTask, StateStore, StoreError, Unheld};

/// How often a destination listed alone reads where the source's rounds
/// stand.
const SOURCE_WATCH: Duration = Duration::from_millis(100);

/// Tuning of a discovery run.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// Workers per side (each lists one folder at a time).
    pub workers: usize,
    /// Folders pulled from the store per keyset batch.
    pub pull_batch: usize,
    /// Attempts per folder for temporary errors (1 = no retry).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt.
    pub base_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Raised to stop: folders being listed finish and are recorded, the
    /// round is not sealed, and the run returns `Cancelled`.
    pub cancel: Cancel,
    /// This side's folders only (a process beside others on a shared
    /// store, near one of the trees); both when `None`. The destination
    /// alone still trails the source, as the store says it stands.
    pub side: Option<Side>,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            workers: 8,
            pull_batch: 1000,
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            cancel: Cancel::new(),
            side: None,
        }
    }
}

/// Runs (or resumes) discovery of `src` against `dst` into `store`, and
/// returns the summary. Safe to call again after any crash: finished rounds
/// are not redone, and a round cut short is finished.
pub fn discover(
    store: &dyn StateStore,
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    filter: &Filter,
    options: &DiscoverOptions,
    progress: Arc<dyn DiscoveryProgress>,
) -> Result<Summary, EngineError> {
    let keep = store.migration()?.keep;
    src.keep(&keep);
    dst.keep(&keep);
    check_roots(store, src.as_ref(), dst.as_ref(), &keep)?;
    let state = store.progress()?;
    let gate = Gate::new(state.src_sealed, state.src_done);
    let retry = RetryPolicy {
        max_attempts: options.max_attempts.max(1),
        base_delay: options.base_delay,
        max_delay: options.max_delay,
    };
    let dst_caps = dst.capabilities();
    let sides: Vec<_> = [
        (Side::Src, src, state.src_sealed, state.src_done),
        (Side::Dst, dst, state.dst_sealed, state.dst_done),
    ]
    .into_iter()
    .filter(|(side, ..)| options.side.is_none_or(|only| only == *side))
    .collect();
    // The caller's span (a server's job names its migration there) goes
    // onto each thread, so their log records are the run's.
    let span = tracing::Span::current();
    let finished = AtomicBool::new(false);
    let results: Vec<Result<(), EngineError>> = std::thread::scope(|scope| {
        if options.side == Some(Side::Dst) && !state.src_done {
            // No source runner here to open the gate: the store's word on
            // the source's rounds, which other processes list, does.
            let (gate, finished) = (&gate, &finished);
            scope.spawn(move || {
                while !finished.load(Ordering::Relaxed) && !options.cancel.is_cancelled() {
                    match store.progress() {
                        Ok(p) => {
                            if let Some(round) = p.src_sealed {
                                gate.src_sealed(round, p.src_done);
                            }
                            if p.src_done {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "reading the source's rounds"),
                    }
                    std::thread::sleep(SOURCE_WATCH);
                }
            });
        }
        let handles: Vec<_> = sides
            .iter()
            .map(|(side, backend, sealed, done)| {
                let runner = SideRunner {
                    side: *side,
                    backend: backend.as_ref(),
                    destination: (*side == Side::Src).then_some(&dst_caps),
                    filter,
                    keep: &keep,
                    store,
                    options,
                    retry: &retry,
                    gate: &gate,
                    progress: progress.as_ref(),
                };
                let (sealed, done, span) = (*sealed, *done, &span);
                scope.spawn(move || {
                    let _in_span = span.enter();
                    let result = if done {
                        Ok(())
                    } else {
                        runner.run(sealed.map_or(0, |r| r + 1))
                    };
                    if result.is_err() {
                        runner.gate.abort();
                    }
                    result
                })
            })
            .collect();
        let results = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EngineError::Internal("a side runner panicked".into())))
            })
            .collect();
        finished.store(true, Ordering::Relaxed);
        results
    });
    for r in results {
        r?;
    }
    Ok(store.summary()?)
}

/// Validates the roots and records them, with their metadata, on the
/// first run.
fn check_roots(
    store: &dyn StateStore,
    src: &dyn Backend,
    dst: &dyn Backend,
    keep: &Keep,
) -> Result<(), EngineError> {
    match src.root_kind() {
        Ok(Some(Kind::Folder)) => {}
        Ok(Some(kind)) => return Err(EngineError::not_folder("source", src.describe(), kind)),
        Ok(None) => return Err(EngineError::SrcRootMissing(src.describe())),
        Err(source) => {
            return Err(EngineError::Root {
                side: "source",
                source,
            });
        }
    }
    let dst_kind = match dst.root_kind() {
        Ok(Some(Kind::Folder)) => Some(Kind::Folder),
        Ok(Some(kind)) => return Err(EngineError::not_folder("destination", dst.describe(), kind)),
        Ok(None) => None,
        Err(source) => {
            return Err(EngineError::Root {
                side: "destination",
                source,
            });
        }
    };
    let caps = dst.capabilities();
    if !caps.symlinks {
        store.note_unheld_at_destination(Unheld::Symlinks)?;
    }
    if caps.folders == FolderKeeping::Prefixes {
        store.note_unheld_at_destination(Unheld::EmptyFolders)?;
    }
    if store.progress()?.roots_recorded {
        return Ok(());
    }
    let root = |backend: &dyn Backend, side: Side| -> Result<Entry, BackendError> {
        let path = RelPath::root();
        let mut entry = backend
            .stat(&path)?
            .unwrap_or_else(|| Entry::new(Vec::new(), Kind::Folder, 0, None));
        if keep.any_xattrs() {
            entry.meta.xattrs = Some(xattr_digest(&backend.xattrs(&path)?));
        }
        entry.meta = keep.apply(side, entry.meta);
        entry.file_id = None;
        if side == Side::Dst && backend.capabilities().mtime != MtimeKeeping::Native {
            entry.mtime_ns = None;
        }
        Ok(entry)
    };
    let src_root = root(src, Side::Src).map_err(|source| EngineError::Root {
        side: "source",
        source,
    })?;
    let dst_root = dst_kind
        .map(|_| root(dst, Side::Dst))
        .transpose()
        .map_err(|source| EngineError::Root {
            side: "destination",
            source,
        })?;
    store.record_roots(src_root, dst_root)?;
    Ok(())
}

/// Counts tasks handed out and not yet finished in the current round.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
    /// The most tasks handed out at once since the last `peak` call.
    most: AtomicU64,
}

impl InFlight {
    fn add(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        self.most.fetch_max(*n as u64, Ordering::Relaxed);
    }

    /// The peak since the last call (one round's), and starts a new one.
    fn peak(&self) -> u64 {
        self.most.swap(0, Ordering::Relaxed)
    }

    fn finish(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct SideRunner<'a> {
    side: Side,
    backend: &'a dyn Backend,
    /// For the source: what the destination can hold.
    destination: Option<&'a Capabilities>,
    filter: &'a Filter,
    keep: &'a Keep,
    store: &'a dyn StateStore,
    options: &'a DiscoverOptions,
    retry: &'a RetryPolicy,
    gate: &'a Gate,
    progress: &'a dyn DiscoveryProgress,
}

impl SideRunner<'_> {
    /// Runs rounds from `first` until the side is done.
    fn run(&self, first: u32) -> Result<(), EngineError> {
        let workers = self.options.workers.max(1);
        // Bounded: at most a few tasks per worker wait in memory; the rest
        // of the frontier stays in the store.
        let (task_tx, task_rx) = bounded::<FolderTask>(workers * 2);
        let in_flight = InFlight::default();
        let failed: Mutex<Option<StoreError>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let children_found = AtomicU64::new(0);
        let span = tracing::Span::current();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let task_rx = task_rx.clone();
                let (in_flight, failed, stop, children_found) =
                    (&in_flight, &failed, &stop, &children_found);
                let lister = Lister {
                    side: self.side,
                    backend: self.backend,
                    filter: self.filter,
                    keep: self.keep,
                    files_own_mtimes: {
                        let caps = self.backend.capabilities();
                        caps.mtime == MtimeKeeping::Native || caps.listing_own_mtimes
                    },
                    destination: self.destination,
                    store: self.store,
                    retry: self.retry,
                    resumable: self.backend.capabilities().resumable_listing,
                };
                let span = &span;
                scope.spawn(move || {
                    let _in_span = span.enter();
                    for task in task_rx {
                        let cancelled = self.options.cancel.is_cancelled();
                        if !stop.load(Ordering::Relaxed) && !cancelled {
                            match lister.run(&task) {
                                Ok(n) => {
                                    children_found.fetch_add(n, Ordering::Relaxed);
                                    self.progress.folder_done(self.side, n);
                                }
                                // This process stalled past the lease (paused, or cut
                                // off from the database) and the folder was leased
                                // again: the later lease's listing is the one recorded.
                                Err(StoreError::LeaseLost { folder, .. }) => {
                                    tracing::warn!(side = %self.side, %folder, "the lease on a folder ran out and it was leased again; this listing of it is dropped");
                                }
                                Err(e) => {
                                    stop.store(true, Ordering::Relaxed);
                                    failed
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .get_or_insert(e);
                                }
                            }
                        }
                        in_flight.finish();
                    }
                });
            }
            drop(task_rx);
            let result = self.rounds(first, &task_tx, &in_flight, &failed, &stop, &children_found);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            drop(task_tx);
            result
        })
    }

    fn rounds(
        &self,
        first: u32,
        task_tx: &crossbeam_channel::Sender<FolderTask>,
        in_flight: &InFlight,
        failed: &Mutex<Option<StoreError>>,
        stop: &AtomicBool,
        children_found: &AtomicU64,
    ) -> Result<(), EngineError> {
        let mut round = first;
        // The source's round listed and not yet sealed: it is sealed while
        // the workers list the next one (its first tasks handed out), so
        // they do not wait for the store's statements between rounds. The
        // destination's next round depends on its seal (the comparison
        // decides which folders are listed), so it seals first.
        let mut unsealed: Option<(u32, serde_json::Value)> = None;
        loop {
            if self.side == Side::Dst && self.gate.wait_for_dst(round).is_err() {
                return Ok(());
            }
            let started = Instant::now();
            children_found.store(0, Ordering::Relaxed);
            let pending = self.store.begin_round(self.side, round)?;
            if pending == 0
                && let Some(previous) = unsealed.take()
                && self.seal(previous)?
            {
                return Ok(());
            }
            self.progress.round_started(self.side, round, pending);
            let mut after = i64::MIN;
            let mut leased = 0u64;
            while !stop.load(Ordering::Relaxed) && !self.options.cancel.is_cancelled() {
                let batch = self.store.pull(self.side, after, self.options.pull_batch)?;
                // Only an empty pull ends the round: a short batch is not
                // the last where other processes lease from the same
                // round (a store shared by many, docs/SCALE-OUT.md): one
                // of them may die and its folders come back.
                let Some(last) = batch.last() else { break };
                after = last.id;
                for task in batch {
                    in_flight.add();
                    leased += 1;
                    // Once the workers have all they can take, the round
                    // before is sealed.
                    let task = if unsealed.is_none() {
                        task
                    } else {
                        match task_tx.try_send(task) {
                            Ok(()) => continue,
                            Err(TrySendError::Full(task)) => {
                                if let Some(previous) = unsealed.take() {
                                    self.seal(previous)?;
                                }
                                task
                            }
                            Err(TrySendError::Disconnected(task)) => task,
                        }
                    };
                    if task_tx.send(task).is_err() {
                        in_flight.finish();
                    }
                }
            }
            // A round of fewer folders than the workers take at once seals
            // the one before here. One stopped early leaves it to the run
            // that resumes (which finds it listed and seals it).
            if let Some(previous) = unsealed.take()
                && !stop.load(Ordering::Relaxed)
                && !self.options.cancel.is_cancelled()
            {
                self.seal(previous)?;
            }
            in_flight.wait_idle();
            if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e.into());
            }
            // Folders left unlisted stay pending: the round is not sealed.
            if self.options.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let elapsed = started.elapsed();
            let secs = elapsed.as_secs_f64().max(1e-9);
            let children = children_found.load(Ordering::Relaxed);
            let metrics = serde_json::json!({
                "pending_at_start": pending,
                "folders": leased,
                "children": children,
                "elapsed_ms": elapsed.as_millis() as u64,
                "folders_per_s": leased as f64 / secs,
                "nodes_per_s": children as f64 / secs,
                "workers": self.options.workers,
                "max_in_flight": in_flight.peak(),
            });
            tracing::info!(side = %self.side, round, folders = leased, ms = elapsed.as_millis() as u64, "round listed");
            match self.side {
                Side::Src => unsealed = Some((round, metrics)),
                Side::Dst => {
                    if self.seal((round, metrics))? {
                        return Ok(());
                    }
                }
            }
            round += 1;
        }
    }

    /// Seals a listed round; returns true if the side is done.
    fn seal(&self, (round, metrics): (u32, serde_json::Value)) -> Result<bool, EngineError> {
        let done = self.store.seal_round(self.side, round, metrics)?;
        tracing::info!(side = %self.side, round, done, "round sealed");
        self.progress.round_sealed(self.side, round, done);
        if self.side == Side::Src {
            self.gate.src_sealed(round, done);
        }
        Ok(done)
    }
}
