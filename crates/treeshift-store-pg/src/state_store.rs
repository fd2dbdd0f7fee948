//! [`StateStore`] on PostgreSQL, so the engine runs discovery against it
//! as against a DuckDB file. The trait speaks of folders, this store of
//! leases: [`StateStore::pull`] leases the next folders of the round
//! begun, this process remembers each lease's epoch, and every write
//! about a folder goes in under it. A heartbeat keeps the leases of this
//! process alive while its folders wait in the engine's queue or are
//! listed; a process that dies stops renewing them, and others lease them
//! again once they expire, or as soon as they see it gone
//! (`liveness`).

use crate::PgStore;
use crossbeam_channel::{RecvTimeoutError, Sender, bounded};
use postgres::Client;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;
use treeshift_core::{Approval, Entry, Extras, Phase, Policy, RelPath, Side};
use treeshift_state::*;

/// How long a lease lasts unless renewed, unless the process asks for
/// another time ([`PgStore::set_lease_time`]): how long the folders and
/// copy items of a process that died wait before another process takes
/// them.
pub const LEASE_TIME: Duration = Duration::from_secs(30);

/// How often a process with nothing to lease looks again while other
/// processes hold the round's last folders (or a copy step's last items).
pub(crate) const WAIT_FOR_OTHERS: Duration = Duration::from_millis(100);

/// The most folders one pull leases: a process holds no more than it
/// lists soon (the engine pulls again as its workers take them), so the
/// others find folders to take; a process that took a whole round at once
/// would list it alone.
const LEASE_BATCH: usize = 16;

/// The thread that renews this process's leases, stopped when the store
/// is dropped.
pub(crate) struct Heartbeat {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Heartbeat {
    /// Starts renewing the leases `holder` holds for `lease_time`, three
    /// times a lease (so one missed beat, a slow database, loses
    /// nothing), on a connection of its own to `url` (a listing that holds
    /// the store's connection must not hold up the renewal).
    ///
    /// Its connection holds the lock that says this process lives
    /// (`liveness`), taken before this returns: before any lease.
    fn start(url: String, holder: String, lease_time: Duration) -> Heartbeat {
        let (stop, stopped) = bounded::<()>(0);
        let alive = holder.clone();
        let connect = move || {
            let mut client = crate::connect(&url).ok()?;
            crate::liveness::hold_alive(&mut client, &alive).ok()?;
            Some(client)
        };
        let mut client: Option<Client> = connect();
        let thread = std::thread::spawn(move || {
            // Without its connection, this process looks gone to the
            // others (its lock is free): connect again soon, not at the
            // next beat.
            let pause = |client: &Option<Client>| match client {
                Some(_) => lease_time / 3,
                None => (lease_time / 3).min(Duration::from_millis(200)),
            };
            let mut warned = false;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(pause(&client)) {
                if client.is_none() {
                    client = connect();
                }
                let Some(c) = client.as_mut() else {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!("lease heartbeat: the state database cannot be reached");
                    }
                    continue;
                };
                warned = false;
                if let Err(e) = renew(c, &holder, lease_time) {
                    tracing::warn!(error = %e, "lease heartbeat: renewal failed");
                    client = None;
                }
            }
        });
        Heartbeat { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Tables whose rows are leased: each side's folders, and copy items.
pub(crate) const LEASED: [&str; 3] = ["src_leases", "dst_leases", "copy_todo"];

/// Extends every lease `holder` holds by `lease_time`.
fn renew(client: &mut Client, holder: &str, lease_time: Duration) -> Result<(), postgres::Error> {
    for table in LEASED {
        client.execute(
            &format!(
                "UPDATE {table} SET expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
                 WHERE holder = $1 AND NOT done"
            ),
            &[&holder, &(lease_time.as_secs_f64() * 1000.0)],
        )?;
    }
    Ok(())
}

impl PgStore {
    /// Runs `write` under `folder`'s lease. The lease is forgotten once
    /// `write` ends it, or finds it lost (expired and taken again, by
    /// another process or this one: a write under the earlier epoch is
    /// refused, and the folder is the later lease's to list).
    fn under_lease<T>(
        &self,
        side: Side,
        folder: &FolderTask,
        ends: bool,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = write();
        if (ends && result.is_ok()) || matches!(result, Err(StoreError::LeaseLost { .. })) {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.get(&(side, folder.id)) == Some(&folder.epoch) {
                held.remove(&(side, folder.id));
            }
        }
        result
    }

    /// How many open folders of round `depth` of `side` other processes
    /// hold.
    fn held_by_others(&self, side: Side, depth: u32) -> Result<i64, StoreError> {
        use crate::error::Context;
        self.run(|client| {
            Ok(client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {side}_leases \
                         WHERE depth = $1 AND NOT done AND holder IS DISTINCT FROM $2"
                    ),
                    &[&(depth as i32), &self.holder()],
                )
                .context("count the folders other processes hold")?
                .get(0))
        })
    }

    /// Starts the heartbeat, once.
    pub(crate) fn beat(&self) {
        let mut heartbeat = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner());
        if heartbeat.is_none() {
            *heartbeat = Some(Heartbeat::start(
                self.url.clone(),
                self.holder().to_string(),
                self.lease_time,
            ));
        }
    }

    /// Stops the heartbeat and gives back the leases of folders this
    /// store did not finish, so another process (or the next run) lists
    /// them without waiting for them to expire. Called when the store is
    /// dropped; a process that closes its state calls it before (its log
    /// layer may hold the store longer).
    pub fn let_go(&self) {
        let heartbeat = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(heartbeat) = heartbeat else {
            return;
        };
        heartbeat.stop();
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.copy_held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let mut slot = self.connection();
        if slot.is_none() {
            *slot = crate::connect(&self.url).ok();
        }
        let Some(client) = slot.as_mut() else {
            return;
        };
        for table in LEASED {
            // One try: a database gone away lets the leases expire instead.
            let _ = client.execute(
                &format!(
                    "UPDATE {table} SET holder = NULL, expires_at = NULL \
                     WHERE holder = $1 AND NOT done"
                ),
                &[&self.holder],
            );
        }
        let _ = client.execute("DELETE FROM holders WHERE holder = $1", &[&self.holder]);
    }
}

impl StateStore for PgStore {
    fn migration(&self) -> Result<MigrationSpec, StoreError> {
        PgStore::migration(self)
    }

    fn check_same_migration(&self, spec: MigrationSpec) -> Result<(), StoreError> {
        match PgStore::migration(self)?.difference(&spec) {
            Some(d) => Err(d.refused_at(PathBuf::from(&self.location))),
            None => Ok(()),
        }
    }

    fn set_phase(&self, phase: Phase) -> Result<(), StoreError> {
        PgStore::set_phase(self, phase)
    }

    fn phase(&self) -> Result<Phase, StoreError> {
        PgStore::phase(self)
    }

    fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        PgStore::keyring(self)
    }

    fn connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        PgStore::connections(self)
    }

    fn save_credentials(
        &self,
        keyring: Option<Keyring>,
        connections: Vec<StoredConnection>,
    ) -> Result<(), StoreError> {
        PgStore::save_credentials(self, keyring.as_ref(), &connections)
    }

    fn note_xattrs_refused(&self) -> Result<(), StoreError> {
        self.set_flag(flag::XATTRS_REFUSED)
    }

    fn note_unheld_at_destination(&self, what: Unheld) -> Result<(), StoreError> {
        self.set_flag(what.flag())
    }

    fn xattrs_refused(&self) -> Result<bool, StoreError> {
        self.flag(flag::XATTRS_REFUSED)
    }

    fn record_roots(&self, src_root: Entry, dst_root: Option<Entry>) -> Result<(), StoreError> {
        PgStore::record_roots(self, &src_root, dst_root.as_ref())?;
        Ok(())
    }

    fn begin_round(&self, side: Side, depth: u32) -> Result<u64, StoreError> {
        let open = PgStore::begin_round(self, side, depth)?;
        let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        rounds[side as usize] = Some(depth);
        Ok(open)
    }

    /// Leases the next folders of the round begun, [`LEASE_BATCH`] at
    /// most (`after` plays no part: what is leased is no longer offered). Empty once every open folder
    /// of the round is this process's; while other processes hold some,
    /// waits for them to finish or expire.
    fn pull(&self, side: Side, _after: i64, limit: usize) -> Result<Vec<FolderTask>, StoreError> {
        let Some(depth) = self.rounds.lock().unwrap_or_else(|p| p.into_inner())[side as usize]
        else {
            return Ok(Vec::new());
        };
        self.beat();
        loop {
            let leases = self.lease(side, depth, limit.min(LEASE_BATCH), self.lease_time)?;
            if !leases.is_empty() {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                held.extend(leases.iter().map(|l| ((side, l.id), l.epoch)));
                return Ok(leases);
            }
            if self.held_by_others(side, depth)? == 0 {
                let known = |id| {
                    let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                    held.contains_key(&(side, id))
                };
                let scope = format!("depth = {depth}");
                if self.release_unknown(&format!("{side}_leases"), &scope, known)? > 0 {
                    continue;
                }
                return Ok(Vec::new());
            }
            if self.reap_gone_holders()? == 0 {
                std::thread::sleep(WAIT_FOR_OTHERS);
            }
        }
    }

    fn record_children(
        &self,
        side: Side,
        parent: &FolderTask,
        children: Vec<ChildRecord>,
        position: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.under_lease(side, parent, false, || {
            PgStore::record_children(self, side, parent, children, position, self.lease_time)
        })
    }

    fn folder_listed(
        &self,
        side: Side,
        folder: &FolderTask,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.under_lease(side, folder, true, || {
            PgStore::folder_listed(self, side, folder, attempt)
        })
    }

    fn folder_failed(
        &self,
        side: Side,
        folder: &FolderTask,
        failure: Failure,
    ) -> Result<(), StoreError> {
        self.under_lease(side, folder, true, || {
            PgStore::folder_failed(self, side, folder, &failure)
        })
    }

    fn discard_children(&self, side: Side, folder: &FolderTask) -> Result<(), StoreError> {
        self.under_lease(side, folder, false, || {
            PgStore::discard_children(self, side, folder)
        })
    }

    fn seal_round(
        &self,
        side: Side,
        depth: u32,
        metrics: serde_json::Value,
    ) -> Result<bool, StoreError> {
        PgStore::seal_round(self, side, depth, &metrics)
    }

    fn progress(&self) -> Result<RoundProgress, StoreError> {
        PgStore::progress(self)
    }

    fn summary(&self) -> Result<treeshift_core::Summary, StoreError> {
        PgStore::summary(self)
    }

    fn requeue_failed_folders(
        &self,
        prefix: Option<RelPath>,
    ) -> Result<FoldersRequeued, StoreError> {
        PgStore::requeue_failed_folders(self, prefix.as_ref())
    }

    fn review(
        &self,
        select: ReviewSelect,
        sink: crossbeam_channel::Sender<Vec<ReviewItem>>,
    ) -> Result<(), StoreError> {
        PgStore::review(self, select, &sink)
    }

    fn review_page(
        &self,
        select: ReviewSelect,
        after: Option<(Side, RelPath)>,
        filter: ReviewFilter,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, StoreError> {
        PgStore::review_page(self, select, after.as_ref(), &filter, limit)
    }

    fn browse(
        &self,
        folder: RelPath,
        after: Option<RelPath>,
        limit: usize,
    ) -> Result<Vec<BrowseChild>, StoreError> {
        PgStore::browse(self, &folder, after.as_ref(), limit)
    }

    fn preview_plan(&self, policy: Policy, extras: Extras) -> Result<PlanPreview, StoreError> {
        PgStore::preview_plan(self, policy, extras)
    }

    fn approve(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
    ) -> Result<Approval, StoreError> {
        PgStore::approve(self, policy, extras, approved_by, None)
    }

    fn approve_seen(
        &self,
        policy: Policy,
        extras: Extras,
        approved_by: &str,
        expected: &str,
    ) -> Result<Approval, StoreError> {
        PgStore::approve(self, policy, extras, approved_by, Some(expected))
    }

    fn approval(&self) -> Result<Option<Approval>, StoreError> {
        PgStore::approval(self)
    }

    fn approved_plan(&self) -> Result<Approval, StoreError> {
        PgStore::approved_plan(self)
    }

    fn extend_approval(&self) -> Result<Option<u64>, StoreError> {
        PgStore::extend_approval(self)
    }

    fn status_parts(
        &self,
        part_size: fn(&MigrationSpec) -> u64,
    ) -> Result<StatusParts, StoreError> {
        PgStore::status_parts(self, part_size)
    }

    fn task_errors(&self) -> Result<TaskErrors, StoreError> {
        PgStore::task_errors(self)
    }

    fn queue_stats(&self) -> Result<Vec<RoundMetrics>, StoreError> {
        PgStore::queue_stats(self)
    }

    fn estimate(&self, part_size: u64) -> Result<Estimate, StoreError> {
        PgStore::estimate(self, part_size)
    }

    fn begin_copy(&self) -> Result<CopyTodo, StoreError> {
        PgStore::begin_copy(self)
    }

    fn pull_copy(
        &self,
        pull: CopyPull,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError> {
        PgStore::pull_copy(self, pull, after, limit)
    }

    /// Committed before it returns, as every write here.
    fn record_copy(&self, events: Vec<CopyEvent>) -> Result<(), StoreError> {
        PgStore::record_copy(self, &events)
    }

    fn requeue_failed_copies(&self, prefix: Option<RelPath>) -> Result<u64, StoreError> {
        PgStore::requeue_failed_copies(self, prefix.as_ref())
    }

    fn folder_times(
        &self,
        after: Option<(u32, i64)>,
        limit: usize,
    ) -> Result<Vec<FolderTime>, StoreError> {
        PgStore::folder_times(self, after, limit)
    }

    fn record_dated(&self, folders: Vec<(i64, u32)>) -> Result<(), StoreError> {
        PgStore::record_dated(self, &folders)
    }

    fn copy_summary(&self) -> Result<treeshift_core::CopySummary, StoreError> {
        PgStore::copy_summary(self)
    }

    fn next_pass(&self) -> Result<Option<u32>, StoreError> {
        PgStore::next_pass(self)
    }

    fn begin_verify(&self, checksum: bool) -> Result<u64, StoreError> {
        PgStore::begin_verify(self, checksum)
    }

    fn pull_verify(&self, after: i64, limit: usize) -> Result<Vec<VerifyTask>, StoreError> {
        PgStore::pull_verify(self, after, limit)
    }

    fn record_verify(&self, events: Vec<VerifyEvent>) -> Result<(), StoreError> {
        PgStore::record_verify(self, &events)
    }

    fn verify_summary(&self) -> Result<Option<treeshift_core::VerifySummary>, StoreError> {
        PgStore::verify_summary(self)
    }

    fn append_logs(&self, records: Vec<LogRecord>) -> Result<(), StoreError> {
        PgStore::append_logs(self, &records)
    }

    fn logs(&self, after: i64, level: &str, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        PgStore::logs(self, after, level, limit)
    }

    /// Nothing is buffered: every write commits before it returns.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }
}
