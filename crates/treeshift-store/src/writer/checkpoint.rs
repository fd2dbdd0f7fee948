//! Checkpoints: when the store thread writes the WAL into the file, and
//! how reads on the reader threads go on beside it.
//!
//! Commits never checkpoint by themselves (DuckDB's threshold is set out of
//! reach at open): a commit that checkpoints holds DuckDB's transaction
//! lock for the whole checkpoint, and no statement on any connection can
//! begin meanwhile, which was the tail of the API's reads during a
//! discovery (BENCHMARKS.md). The store thread checkpoints instead, after
//! a commit that left the WAL past [`CHECKPOINT_WAL`], and readers go on
//! beside it, each on the snapshot it began with.
//!
//! Readers and a checkpoint share DuckDB's memory limit, and a checkpoint
//! that runs out of memory invalidates the database (DuckDB reports it as
//! FATAL; seen once when a server's reads ran beside a 1M-node discovery).
//! So while a checkpoint and a read run at once, an adaptive limit is
//! [`OVERLAP_LIMIT_FACTOR`] times itself: the reads get twice what a
//! checkpoint alone has run within. It is lowered again after the
//! checkpoint. (Raised to its ceiling instead, it cost 16 to 35 MiB of
//! peak RSS: BENCHMARKS.md.) A limit the user fixed
//! (`TREESHIFT_DB_MEMORY`) is never raised: reads and checkpoints then
//! wait for each other.

use super::*;
use std::sync::{Condvar, Mutex, MutexGuard};

/// WAL size past which the store thread checkpoints (DuckDB's default is
/// 16 MB). Rows committed since the last checkpoint live in memory DuckDB
/// cannot evict (see [`Writer::open`]), so this bounds them.
pub(super) const CHECKPOINT_WAL: u64 = 4 << 20;

/// The adaptive limit while reads run beside a checkpoint, in times the
/// limit.
const OVERLAP_LIMIT_FACTOR: u64 = 3;

/// Who runs now, reads or a checkpoint, shared by the store thread and
/// the reader threads of one state file.
#[derive(Debug)]
pub(crate) struct Overlap {
    state: Mutex<OverlapState>,
    changed: Condvar,
}

#[derive(Debug)]
pub(super) struct OverlapState {
    reads: usize,
    checkpointing: bool,
    /// The limit is raised for an overlap, to be lowered by the store
    /// thread.
    raised: bool,
    /// DuckDB's memory limit in MB when it may grow (not fixed by the
    /// user); the store thread doubles it when a statement runs out.
    pub(super) adaptive_mb: Option<u64>,
}

/// A read in progress (see [`Overlap::read`]).
pub(crate) struct Reading<'a>(&'a Overlap);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.reads -= 1;
        self.0.changed.notify_all();
    }
}

impl Overlap {
    pub(crate) fn new(adaptive_mb: Option<u64>) -> Overlap {
        Overlap {
            state: Mutex::new(OverlapState {
                reads: 0,
                checkpointing: false,
                raised: false,
                adaptive_mb,
            }),
            changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, OverlapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a read as running on `conn` until the returned value is
    /// dropped: beside a checkpoint, with the limit raised, or once it
    /// is done.
    pub(crate) fn read(&self, conn: &Connection) -> Reading<'_> {
        let mut state = self.lock();
        while state.checkpointing && !state.raised {
            state = self.raise_or_wait(state, conn);
        }
        state.reads += 1;
        Reading(self)
    }

    /// Raises an adaptive limit for an overlap, else waits for a change.
    fn raise_or_wait<'a>(
        &self,
        mut state: MutexGuard<'a, OverlapState>,
        conn: &Connection,
    ) -> MutexGuard<'a, OverlapState> {
        let raised = state.adaptive_mb.is_some_and(|mb| {
            let sql = format!("SET memory_limit = '{}MB'", mb * OVERLAP_LIMIT_FACTOR);
            conn.execute_batch(&sql)
                .inspect_err(|e| tracing::debug!(error = %e, "memory limit not raised"))
                .is_ok()
        });
        if raised {
            state.raised = true;
            state
        } else {
            self.wait(state)
        }
    }

    fn wait<'a>(&self, state: MutexGuard<'a, OverlapState>) -> MutexGuard<'a, OverlapState> {
        self.changed.wait(state).unwrap_or_else(|p| p.into_inner())
    }
}

impl Writer {
    /// Checkpoints the file if the WAL has grown past [`CHECKPOINT_WAL`],
    /// and lowers a limit the last checkpoint left raised.
    pub(super) fn checkpoint_if_due(&mut self) -> Result<(), StoreError> {
        self.lower_limit();
        if self.wal_bytes() < CHECKPOINT_WAL {
            return Ok(());
        }
        let overlap = Arc::clone(&self.overlap);
        {
            // Reads that begin from now on see the checkpoint.
            let mut state = overlap.lock();
            state.checkpointing = true;
            while state.reads > 0 && !state.raised {
                state = overlap.raise_or_wait(state, &self.conn);
            }
        }
        let done = self.conn.execute_batch("CHECKPOINT");
        overlap.lock().checkpointing = false;
        overlap.changed.notify_all();
        self.lower_limit();
        match done {
            Ok(()) => Ok(()),
            // A reader's transaction that writes (a browse storing its
            // sums) holds the file: a later commit tries again.
            Err(e) if e.to_string().contains("other write transactions") => {
                tracing::debug!(error = %e, "checkpoint put off");
                Ok(())
            }
            Err(e) => {
                // As after a failed commit: nothing more is written; the
                // next run replays the WAL (see `commit_failed`).
                self.commit_failed = Some(e.to_string());
                Err(e).context("checkpoint")
            }
        }
    }

    /// The size of DuckDB's write-ahead log (the state file's path and
    /// `.wal`; none when the file is checkpointed).
    pub(super) fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push(".wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// Sets a raised limit back. DuckDB refuses while a read holds more
    /// than the limit in memory; the store thread then tries again after
    /// its next commit.
    fn lower_limit(&self) {
        let mut state = self.overlap.lock();
        let Some(mb) = state.adaptive_mb.filter(|_| state.raised) else {
            return;
        };
        match self
            .conn
            .execute_batch(&format!("SET memory_limit = '{mb}MB'"))
        {
            Ok(()) => state.raised = false,
            Err(e) => tracing::debug!(error = %e, "memory limit left raised until the next commit"),
        }
    }

    #[cfg(test)]
    pub(super) fn limit_raised(&self) -> bool {
        self.overlap.lock().raised
    }
}

/// The memory limit as DuckDB shows it.
#[cfg(test)]
pub(super) fn memory_limit(conn: &Connection) -> String {
    conn.query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A read on another thread and connection; it sends the memory limit
    /// it runs under.
    fn read_on_a_thread(
        overlap: &Arc<Overlap>,
        conn: &Connection,
    ) -> (std::thread::JoinHandle<()>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let overlap = Arc::clone(overlap);
        let conn = conn.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let _reading = overlap.read(&conn);
            tx.send(memory_limit(&conn)).unwrap();
        });
        (reader, rx)
    }

    #[test]
    fn a_read_beside_a_checkpoint_raises_an_adaptive_limit() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("SET memory_limit = '44MB'").unwrap();
        let adaptive = memory_limit(&conn);
        let overlap = Arc::new(Overlap::new(Some(44)));
        overlap.lock().checkpointing = true;
        let (reader, rx) = read_on_a_thread(&overlap, &conn);
        // Not waiting for the checkpoint (which never ends here).
        let during = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert!(during.is_ok(), "the read waited for the checkpoint");
        assert_ne!(during.unwrap(), adaptive);
        reader.join().unwrap();
        let state = overlap.lock();
        assert!(state.raised, "for the store thread to lower");
        assert_eq!(state.reads, 0);
    }

    #[test]
    fn under_a_fixed_limit_a_read_waits_for_the_checkpoint() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("SET memory_limit = '44MB'").unwrap();
        let fixed = memory_limit(&conn);
        let overlap = Arc::new(Overlap::new(None));
        overlap.lock().checkpointing = true;
        let (reader, rx) = read_on_a_thread(&overlap, &conn);
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the read ran beside the checkpoint"
        );
        overlap.lock().checkpointing = false;
        overlap.changed.notify_all();
        assert_eq!(rx.recv().unwrap(), fixed, "a fixed limit is never raised");
        reader.join().unwrap();
        assert!(!overlap.lock().raised);
    }
}
