//! Reader threads: connections of their own to the state file, so that a
//! read asked while the store thread works (a status, a review page, a
//! browse, logs, during a round's seal or a batch of appends) does not
//! wait for it. DuckDB gives each statement a snapshot of what was
//! committed when it began; the store thread's buffered rows are not in it
//! (see `StoreHandle::committed`).

use crate::StoreError;
use crate::writer::{Db, Overlap};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Reader threads per state file. Reads are short and the store runs
/// DuckDB on one thread per connection: two let a slow read (a browse of a
/// huge folder) leave room for a status.
pub(crate) const READERS: usize = 2;

/// A read run on a reader thread with its connection; it answers its
/// caller and returns true, or returns false to be run again.
type ReadCall = Box<dyn FnMut(&Db) -> bool + Send>;

/// Runs of a read that ran out of memory, before its error is the answer:
/// readers share DuckDB's memory limit with the writer, whose largest
/// statements (a round's seal) hold much of it for a moment. (The store's
/// handle then runs it on the store thread: see `StoreHandle::read_after`.)
pub(crate) const OUT_OF_MEMORY_RUNS: u32 = 2;

/// The pause before a read that ran out of memory runs again.
const OUT_OF_MEMORY_PAUSE: Duration = Duration::from_millis(200);

enum Message {
    Read(ReadCall),
    Stop,
}

/// The reader threads of one store; stopped before the store thread's last
/// checkpoint, so that no read runs beside it.
pub(crate) struct Readers {
    tx: Sender<Message>,
    threads: Vec<JoinHandle<()>>,
    /// Set once every reader thread has ended.
    ended: Arc<AtomicBool>,
}

/// A cloneable way to ask the reader threads.
#[derive(Clone)]
pub(crate) struct ReadersHandle {
    tx: Sender<Message>,
    ended: Arc<AtomicBool>,
}

impl Readers {
    /// Starts one reader thread per connection, in the caller's span.
    pub(crate) fn start(
        connections: Vec<Db>,
        overlap: &Arc<Overlap>,
    ) -> Result<Readers, StoreError> {
        let (tx, rx) = bounded::<Message>(crate::CHANNEL_CAPACITY);
        let ended = Arc::new(AtomicBool::new(false));
        let mut readers = Readers {
            tx,
            threads: Vec::new(),
            ended,
        };
        for db in connections {
            let rx = rx.clone();
            let overlap = Arc::clone(overlap);
            let span = tracing::Span::current();
            let thread = std::thread::Builder::new()
                .name("treeshift-reader".into())
                .spawn(move || {
                    let _in_span = span.enter();
                    serve(&db, &rx, &overlap);
                })
                .map_err(|e| StoreError::Thread(e.to_string()))?;
            readers.threads.push(thread);
        }
        Ok(readers)
    }

    pub(crate) fn handle(&self) -> ReadersHandle {
        ReadersHandle {
            tx: self.tx.clone(),
            ended: Arc::clone(&self.ended),
        }
    }

    /// Stops every reader thread once the reads queued before are done.
    pub(crate) fn stop(&mut self) {
        for _ in &self.threads {
            let _ = self.tx.send(Message::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.ended.store(true, Ordering::Release);
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(db: &Db, rx: &Receiver<Message>, overlap: &Overlap) {
    while let Ok(Message::Read(mut read)) = rx.recv() {
        loop {
            let answered = {
                let _reading = overlap.read(db.conn());
                read(db)
            };
            if answered {
                break;
            }
            std::thread::sleep(OUT_OF_MEMORY_PAUSE);
        }
    }
}

impl ReadersHandle {
    /// Runs `f` on a reader thread and waits for its answer.
    /// A read that runs out of memory is run again a few times (see
    /// [`OUT_OF_MEMORY_RUNS`]), unless it streams (what it sent before
    /// would be sent twice).
    pub(crate) fn read<R: Send + 'static>(
        &self,
        streams: bool,
        f: impl Fn(&Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let most_runs = if streams { 1 } else { OUT_OF_MEMORY_RUNS };
        let closed = || StoreError::Stopped("the state file was closed".into());
        let (tx, rx) = bounded(1);
        let mut runs = 0;
        self.tx
            .send(Message::Read(Box::new(move |db| {
                runs += 1;
                let answer = f(db);
                if runs < most_runs && answer.as_ref().is_err_and(StoreError::is_out_of_memory) {
                    return false;
                }
                let _ = tx.send(answer);
                true
            })))
            .map_err(|_| closed())?;
        // A read queued after the readers stopped is never run.
        crate::await_reply(&rx, &self.ended, closed)
    }
}
