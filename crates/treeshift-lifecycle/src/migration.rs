//! One migration, open: its state file, its two backends (opened once,
//! with the secrets the state file sealed or the environment gives), and
//! the operations, each returning a typed result.

use crate::credentials::{self, Keys, SecretSource};
use crate::error::{LifecycleError, Result, input};
use crate::report::{
    ApprovalReport, Calls, CopyCost, DiscoveryReport, RetriedCopy, RetriedDiscovery, SideCalls,
    StatusReport, Timing,
};
use crate::state::{self, OpenState, StateHandle};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use treeshift_backend::{Backend, Capabilities, Counted};
use treeshift_core::{Extras, Filter, FilterSpec, Keep, Owners, Policy, RelPath, Secrets, Side};
use treeshift_engine::{
    Cancel, CopyOptions, CopyProgress, DiscoverOptions, DiscoveryProgress, EngineError,
    VerifyOptions, VerifyProgress,
};
use treeshift_store::{MigrationSpec, OpenMode, StoreError};

/// What this process keeps to: requests a second, at most, to each side
/// (remote storage only), and how long its leases last (a state shared in
/// PostgreSQL only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// To the source.
    pub src_tps: Option<u32>,
    /// To the destination.
    pub dst_tps: Option<u32>,
    /// How long this process's hold on a folder or a copy item lasts
    /// unless renewed: how long its share waits for the others if it dies.
    pub lease_time: Option<std::time::Duration>,
}

/// What a new (or resumed) discovery is asked for.
#[derive(Clone, Debug)]
pub struct DiscoveryRequest {
    /// The state file.
    pub state: PathBuf,
    /// The source's location, options included.
    pub src: String,
    /// The destination's.
    pub dst: String,
    /// Where each side's secrets come from, if the state file does not
    /// hold them sealed already (the environment by default).
    pub secrets: [SecretSource; 2],
    /// The filter rules.
    pub filter: FilterSpec,
    /// The destination folds letter case.
    pub dst_case_insensitive: bool,
    /// What to keep, as asked (trimmed to what both sides can hold).
    pub keep: Keep,
}

/// An open migration.
pub struct Migration {
    state: Option<OpenState>,
    handle: StateHandle,
    keys: Arc<dyn Keys>,
    limits: Limits,
    backends: Mutex<Option<[Arc<Counted>; 2]>>,
    /// A discovery prepared on a file that did not exist: if it cannot
    /// start, the file is removed again.
    fresh: bool,
    filter: Option<Filter>,
    not_kept: Vec<Side>,
}

/// Opens the source and the destination, each with its secrets and
/// request limit, behind a layer that counts their calls.
fn open_backends(
    locations: [&str; 2],
    limits: Limits,
    secrets: [Secrets; 2],
) -> Result<[Arc<Counted>; 2]> {
    let [src_secrets, dst_secrets] = secrets;
    let open = |location: &str, role: &'static str, tps, secrets| {
        let options = treeshift_backend::OpenOptions { tps, secrets };
        let backend = treeshift_backend::open(location, &options)
            .map_err(|source| LifecycleError::Open { role, source })?;
        Ok::<_, LifecycleError>(Arc::new(Counted::new(backend)))
    };
    Ok([
        open(locations[0], "source", limits.src_tps, src_secrets)?,
        open(locations[1], "destination", limits.dst_tps, dst_secrets)?,
    ])
}

impl Migration {
    /// Opens the migration an existing state file holds.
    pub fn open(state: &Path, keys: Arc<dyn Keys>, limits: Limits) -> Result<Migration> {
        let (state, _) = OpenState::open(state, OpenMode::Existing, limits.lease_time)?;
        Ok(Migration {
            handle: state.handle().clone(),
            state: Some(state),
            keys,
            limits,
            backends: Mutex::new(None),
            fresh: false,
            filter: None,
            not_kept: Vec::new(),
        })
    }

    /// Opens both backends and the state file for a discovery: the file
    /// is made for this migration, or resumed if it holds it (another
    /// migration's is refused). Each side's secrets are the sealed ones
    /// where the file holds some, else the secret file's or the
    /// environment's, which are then sealed if a key was given.
    pub fn prepare_discovery(
        request: &DiscoveryRequest,
        keys: Arc<dyn Keys>,
        limits: Limits,
    ) -> Result<Migration> {
        let filter = Filter::new(&request.filter).map_err(input)?;
        // An existing state file is opened once: its sealed secrets choose
        // the backends' credentials, and the migration it holds is checked
        // against this one once the backends describe themselves.
        let existing = match OpenState::open(&request.state, OpenMode::Existing, limits.lease_time)
        {
            Ok((state, _)) => Some(state),
            // Nothing recorded yet: no file, or one that a run killed as
            // it created it left empty; a file that is another program's
            // is refused by the open below, in its own words.
            Err(StoreError::Missing(_) | StoreError::NotAStateFile { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let chosen = credentials::for_discovery(
            &request.state,
            existing.as_ref().map(OpenState::handle),
            [&request.src, &request.dst],
            [&request.secrets[0], &request.secrets[1]],
            keys.as_ref(),
        )?;
        let [src, dst] =
            open_backends([&request.src, &request.dst], limits, chosen.secrets.clone())?;
        let spec = MigrationSpec {
            src: src.describe(),
            dst: dst.describe(),
            filter: request.filter.clone(),
            dst_case_insensitive: request.dst_case_insensitive,
            keep: keep_within(
                request.keep.clone(),
                &src.capabilities(),
                &dst.capabilities(),
            ),
        };
        // A database is never removed (see `close_after`).
        let fresh = !state::is_database(&request.state) && !request.state.exists();
        let state = match existing {
            Some(state) => {
                state.handle().check_same_migration(spec)?;
                state
            }
            None => {
                let mode = OpenMode::CreateOrResume(Box::new(spec));
                OpenState::open(&request.state, mode, limits.lease_time)?.0
            }
        };
        let handle = state.handle().clone();
        let not_kept = credentials::record(&handle, chosen, keys.as_ref())?;
        Ok(Migration {
            handle,
            state: Some(state),
            keys,
            limits,
            backends: Mutex::new(Some([src, dst])),
            fresh,
            filter: Some(filter),
            not_kept,
        })
    }

    /// The state's handle (for a log sink, or reads of its own).
    pub fn handle(&self) -> &StateHandle {
        &self.handle
    }

    /// The sides whose secrets this discovery could not keep, for want of
    /// a key (they are read from the environment on every run).
    pub fn secrets_not_kept(&self) -> &[Side] {
        &self.not_kept
    }

    /// Commits what is buffered and closes the state file.
    pub fn close(mut self) -> Result<()> {
        match self.state.take() {
            Some(state) => Ok(state.close()?),
            None => Ok(()),
        }
    }

    /// Both backends, opened on first use with the secrets the state file
    /// sealed (or the environment's).
    fn backends(&self) -> Result<(Arc<dyn Backend>, Arc<dyn Backend>)> {
        let mut opened = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        let [src, dst] = match opened.as_ref() {
            Some(pair) => pair.clone(),
            None => {
                let spec = self.handle.migration()?;
                let secrets = credentials::for_existing(&self.handle, self.keys.as_ref())?;
                let pair = open_backends([&spec.src, &spec.dst], self.limits, secrets)?;
                opened.insert(pair).clone()
            }
        };
        Ok((src, dst))
    }

    /// Calls made to each backend so far.
    pub fn calls(&self) -> Calls {
        let opened = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        let side = |b: &Arc<Counted>| SideCalls {
            counts: b.counts(),
            requests: b.requests(),
        };
        match opened.as_ref() {
            Some([src, dst]) => Calls {
                src: Some(side(src)),
                dst: Some(side(dst)),
            },
            None => Calls::default(),
        }
    }

    /// On a migration whose copy finished, starts a delta pass: both trees
    /// are walked again and the changes become a new plan to approve.
    /// Returns the new pass's number.
    pub fn start_next_pass(&self) -> Result<Option<u32>> {
        let pass = self.handle.next_pass()?;
        if let Some(pass) = pass {
            tracing::info!(pass, "delta pass started");
        }
        Ok(pass)
    }

    /// Runs (or resumes) discovery. A first discovery that cannot start
    /// (a root missing, not a folder, or unreachable) removes the state
    /// file it made: it recorded nothing but the locations, and a run
    /// with the location corrected would be refused as another
    /// migration's.
    pub fn discover(
        &self,
        workers: usize,
        progress: Arc<dyn DiscoveryProgress>,
        cancel: &Cancel,
    ) -> Result<DiscoveryReport> {
        self.discover_side(None, workers, progress, cancel)
    }

    /// Like [`Migration::discover`], listing `side`'s folders only when
    /// given (a worker beside others on a shared state, near that tree);
    /// the summary is then what the state holds when this side is done.
    pub fn discover_side(
        &self,
        side: Option<Side>,
        workers: usize,
        progress: Arc<dyn DiscoveryProgress>,
        cancel: &Cancel,
    ) -> Result<DiscoveryReport> {
        let filter = match &self.filter {
            Some(f) => f.clone(),
            None => Filter::new(&self.handle.migration()?.filter).map_err(input)?,
        };
        let (src, dst) = self.backends()?;
        let timed = Arc::new(Timed::new(progress));
        let options = DiscoverOptions {
            workers,
            cancel: cancel.clone(),
            side,
            ..DiscoverOptions::default()
        };
        let result =
            treeshift_engine::discover(&*self.handle, src, dst, &filter, &options, timed.clone());
        let summary = result.map_err(LifecycleError::Engine)?;
        Ok(DiscoveryReport {
            summary,
            timing: Timing {
                src_done_s: timed.done_secs(Side::Src),
                dst_done_s: timed.done_secs(Side::Dst),
                total_s: timed.started.elapsed().as_secs_f64(),
            },
        })
    }

    /// Whether `e` says the first discovery could not start; see
    /// [`Migration::discover`].
    fn unstarted(e: &LifecycleError) -> bool {
        matches!(
            e,
            LifecycleError::Engine(
                EngineError::Root { .. }
                    | EngineError::SrcRootMissing(_)
                    | EngineError::RootNotFolder { .. }
            )
        )
    }

    /// Closes the migration after `e`; removes the state file a first
    /// discovery made if it could not start.
    pub fn close_after(self, e: &LifecycleError) {
        let path = self.handle.path().to_path_buf();
        let forget = self.fresh && Self::unstarted(e);
        let _ = self.close();
        if forget {
            let mut wal = path.as_os_str().to_owned();
            wal.push(".wal");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(wal);
        }
    }

    /// Approves the current plan under `policy`.
    pub fn approve(&self, policy: Policy, extras: Extras, by: &str) -> Result<ApprovalReport> {
        let approval = self.handle.approve(policy, extras, by)?;
        self.approved(approval)
    }

    /// Approves the plan `policy` gives only if it is the one whose hash
    /// the approver was shown (a plan that changed since is refused).
    pub fn approve_seen(
        &self,
        policy: Policy,
        extras: Extras,
        by: &str,
        plan_hash: &str,
    ) -> Result<ApprovalReport> {
        let approval = self.handle.approve_seen(policy, extras, by, plan_hash)?;
        self.approved(approval)
    }

    fn approved(&self, approval: treeshift_core::Approval) -> Result<ApprovalReport> {
        tracing::info!(by = %approval.approved_by, policy = %approval.policy, extras = approval.extras.as_str(), plan = %approval.plan_hash, items = approval.counts.items, "plan approved");
        let migration = self.handle.migration()?;
        let estimate = self.handle.estimate(CopyCost::part_size(&migration))?;
        Ok(ApprovalReport {
            approval,
            cost: CopyCost::of(&migration, &estimate),
        })
    }

    /// Copies the approved plan (resumes a stopped copy).
    pub fn copy(
        &self,
        workers: usize,
        progress: &dyn CopyProgress,
        cancel: &Cancel,
    ) -> Result<treeshift_core::CopySummary> {
        let (src, dst) = self.backends()?;
        let options = CopyOptions {
            workers,
            cancel: cancel.clone(),
            ..CopyOptions::default()
        };
        Ok(treeshift_engine::copy(
            &*self.handle,
            src,
            dst,
            &options,
            progress,
        )?)
    }

    /// Whether a copy waits to be run or joined: a plan is approved and
    /// its copy has not finished.
    pub fn copy_to_join(&self) -> Result<bool> {
        if self.handle.approval()?.is_none() {
            return Ok(false);
        }
        Ok(!self.handle.copy_summary()?.is_finished())
    }

    /// Re-reads what was copied on both sides and compares.
    pub fn verify(
        &self,
        checksum: bool,
        workers: usize,
        progress: &dyn VerifyProgress,
        cancel: &Cancel,
    ) -> Result<treeshift_core::VerifySummary> {
        let (src, dst) = self.backends()?;
        let options = VerifyOptions {
            checksum,
            workers,
            cancel: cancel.clone(),
        };
        Ok(treeshift_engine::verify(
            &*self.handle,
            src,
            dst,
            &options,
            progress,
        )?)
    }

    /// Queues the folders whose listing failed (at or under `prefix`)
    /// again and, if discovery is not finished, runs it.
    pub fn retry_discovery(
        &self,
        prefix: Option<RelPath>,
        workers: usize,
        progress: Arc<dyn DiscoveryProgress>,
        cancel: &Cancel,
    ) -> Result<RetriedDiscovery> {
        let requeued = self.handle.requeue_failed_folders(prefix)?;
        tracing::info!(
            src = requeued.src,
            dst = requeued.dst,
            "retry sweep: failed folders re-queued"
        );
        let progress_now = self.handle.progress()?;
        let summary = if progress_now.src_done && progress_now.dst_done {
            None
        } else {
            Some(self.discover(workers, progress, cancel)?.summary)
        };
        Ok(RetriedDiscovery { requeued, summary })
    }

    /// Extends the approval to new items (created under its policy),
    /// queues the failed copies (at or under `prefix`) again and copies.
    /// `None` when nothing was approved yet.
    pub fn retry_copy(
        &self,
        prefix: Option<RelPath>,
        workers: usize,
        progress: &dyn CopyProgress,
        cancel: &Cancel,
    ) -> Result<Option<RetriedCopy>> {
        let Some(added) = self
            .handle
            .extend_approval()
            .map_err(EngineError::approval)?
        else {
            return Ok(None);
        };
        let requeued = self.handle.requeue_failed_copies(prefix)?;
        tracing::info!(
            requeued,
            approval_extended = added,
            "retry sweep: failed copies re-queued"
        );
        let summary = self.copy(workers, progress, cancel)?;
        Ok(Some(RetriedCopy {
            summary,
            requeued,
            approval_extended: added,
        }))
    }

    /// Refuses a copy sweep on a migration nothing was approved on.
    pub fn require_approval(&self) -> Result<()> {
        match self.handle.approval()? {
            Some(_) => Ok(()),
            None => Err(EngineError::ApprovalRequired(StoreError::NotApproved).into()),
        }
    }

    /// Where the migration stands, as committed when asked: it never waits
    /// for a running discovery or copy (see `StoreHandle::committed`).
    pub fn status(&self) -> Result<StatusReport> {
        let p = self.handle.committed().status_parts(CopyCost::part_size)?;
        Ok(StatusReport {
            summary: p.summary,
            phase: p.phase,
            cost: CopyCost::of(&p.migration, &p.estimate),
            src_location: p.migration.src,
            dst_location: p.migration.dst,
            filter: p.migration.filter,
            dst_case_insensitive: p.migration.dst_case_insensitive,
            approval: p.approval,
            copy: p.copy,
            verify: p.verify,
            estimate: p.estimate,
            errors: p.errors,
            rounds: p.rounds,
            workers: p.workers,
        })
    }
}

impl Drop for Migration {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let _ = state.close();
        }
    }
}

/// What both sides can hold of `keep` (modes and owners, extended
/// attributes and ACLs, hard links): what either side cannot hold is not
/// recorded, compared or set.
fn keep_within(mut keep: Keep, src: &Capabilities, dst: &Capabilities) -> Keep {
    let permissions = src.permissions && dst.permissions;
    keep.modes &= permissions;
    if !permissions {
        keep.owners = Owners::Ignore;
    }
    let xattrs = src.xattrs && dst.xattrs;
    keep.xattrs &= xattrs;
    keep.acls &= xattrs;
    keep.hard_links &= src.hard_links && dst.hard_links;
    keep
}

/// Forwards discovery progress and notes when each side finished.
struct Timed {
    inner: Arc<dyn DiscoveryProgress>,
    started: Instant,
    done: [Mutex<Option<Duration>>; 2],
}

impl Timed {
    fn new(inner: Arc<dyn DiscoveryProgress>) -> Timed {
        Timed {
            inner,
            started: Instant::now(),
            done: Default::default(),
        }
    }

    fn done_secs(&self, side: Side) -> f64 {
        let i = usize::from(side == Side::Dst);
        self.done[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

impl DiscoveryProgress for Timed {
    fn round_started(&self, side: Side, round: u32, pending: u64) {
        self.inner.round_started(side, round, pending);
    }

    fn folder_done(&self, side: Side, children: u64) {
        self.inner.folder_done(side, children);
    }

    fn round_sealed(&self, side: Side, round: u32, done: bool) {
        if done {
            let i = usize::from(side == Side::Dst);
            *self.done[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(self.started.elapsed());
        }
        self.inner.round_sealed(side, round, done);
    }
}
