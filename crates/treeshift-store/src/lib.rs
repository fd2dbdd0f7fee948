//! The treeshift state store: one DuckDB file per migration.
//!
//! One thread owns the connection ([`Store`] starts it); everything else
//! talks to it through a cloneable [`StoreHandle`] over a channel bounded in
//! rows (`backlog`), so
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
//!
//! By concern: `handle` (every operation of [`StateStore`], as a message
//! or a call), `backlog` (the channel's bound), `writer` (the store
//! thread), `reader` (the reader threads), `error` (DuckDB's errors in the
//! neutral terms of `treeshift-state`); this file starts and stops them.
//! What goes in and out, and the errors, are `treeshift-state`'s.

mod backlog;
mod error;
mod handle;
mod reader;
mod schema;
mod writer;

pub use handle::StoreHandle;
pub use schema::SCHEMA_VERSION;
// The vocabulary, the errors and the trait this store implements, so a
// caller that opens a DuckDB store needs no second import.
pub use treeshift_state::*;

use backlog::Backlog;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use reader::{Readers, ReadersHandle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use treeshift_core::{
    Approval, CopySummary, Entry, Extras, Phase, Policy, RelPath, Side, Summary, VerifySummary,
};
use writer::{Db, Request, Writer};

/// The owner of a state file: starts the store thread and stops it.
pub struct Store {
    handle: StoreHandle,
    thread: Option<JoinHandle<()>>,
    readers: Readers,
}

/// Reads the reader threads' queue holds at most.
pub(crate) const CHANNEL_CAPACITY: usize = 16;

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
        let (resumed, connections, overlap) = match ready_rx.recv() {
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
        let readers = Readers::start(connections, &overlap)?;
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
/// held the migration already, the reader threads' connections, and what
/// tells them of checkpoints.
type Opened = (bool, Vec<Db>, Arc<writer::Overlap>);

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
        let overlap = Arc::clone(&w.overlap);
        Ok((w, (resumed, connections, overlap)))
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

#[cfg(test)]
mod tests;
