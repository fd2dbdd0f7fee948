//! A worker pool over keyset-pulled tasks, shared by copy and verify.
//!
//! The calling thread pulls tasks from the store in batches and feeds a
//! bounded channel; `workers` threads run them; one committer collects the
//! results and hands them on in batches (for copy, after making the data
//! durable). Memory stays bounded by the channel sizes. A fatal error (the
//! destination is full or read-only, or the store failed) stops the feed;
//! tasks not finished stay pending in the store and are redone next run.

use crate::{Cancel, EngineError};
use crossbeam_channel::{RecvTimeoutError, bounded};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sizes and timings of a pool.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    /// Worker threads.
    pub workers: usize,
    /// Tasks per pull from the store.
    pub pull_batch: usize,
    /// Results per commit at most...
    pub commit_every: usize,
    /// ...or once the oldest waited this long.
    pub commit_interval: Duration,
    /// Raised to stop taking tasks (those pulled and not started stay
    /// pending, as after a kill).
    pub cancel: Cancel,
}

/// Runs every task `pull` yields through `work`, and every result through
/// `commit`. `pull(after)` returns the next batch after the key `after`
/// (empty when done); `dispatch` sees each batch before the workers do.
pub(crate) fn run<T, R>(
    config: &PoolConfig,
    mut pull: impl FnMut(i64) -> Result<Vec<T>, EngineError>,
    key: impl Fn(&T) -> i64,
    mut dispatch: impl FnMut(&[T]) -> Result<(), EngineError>,
    work: impl Fn(&T) -> Result<R, EngineError> + Sync,
    commit: impl FnMut(Vec<R>) -> Result<(), EngineError> + Send,
) -> Result<(), EngineError>
where
    T: Send,
    R: Send,
{
    let workers = config.workers.max(1);
    let stop = AtomicBool::new(false);
    let halted = || stop.load(Ordering::SeqCst) || config.cancel.is_cancelled();
    let first_error: Mutex<Option<EngineError>> = Mutex::new(None);
    let fail = |e: EngineError| {
        stop.store(true, Ordering::SeqCst);
        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    };
    // Room for a whole pulled batch: the runner queues it at once and goes
    // back to the store while the workers chew, so they never sit idle
    // through a pull.
    let (task_tx, task_rx) = bounded::<T>((workers * 4).max(config.pull_batch));
    let (result_tx, result_rx) = bounded::<R>(config.commit_every.max(1));
    let mut commit = commit;
    // The caller's span (a server's job names its migration there) goes
    // with the work onto each thread, so their log records are the run's.
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        let committer = scope.spawn(|| {
            let _in_span = span.enter();
            let mut batch = Vec::with_capacity(config.commit_every);
            let mut oldest: Option<Instant> = None;
            loop {
                let wait = oldest.map_or(Duration::from_secs(3600), |t| {
                    config.commit_interval.saturating_sub(t.elapsed())
                });
                let closed = match result_rx.recv_timeout(wait) {
                    Ok(r) => {
                        batch.push(r);
                        oldest.get_or_insert_with(Instant::now);
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                };
                let due = oldest.is_some_and(|t| t.elapsed() >= config.commit_interval);
                if !batch.is_empty() && (closed || due || batch.len() >= config.commit_every) {
                    if let Err(e) = commit(std::mem::take(&mut batch)) {
                        fail(e);
                        // Keep draining so workers never block on a full channel.
                        while result_rx.recv().is_ok() {}
                        return;
                    }
                    oldest = None;
                }
                if closed {
                    return;
                }
            }
        });
        for _ in 0..workers {
            let task_rx = task_rx.clone();
            let result_tx = result_tx.clone();
            let (work, halted, fail, span) = (&work, &halted, &fail, &span);
            scope.spawn(move || {
                let _in_span = span.enter();
                for task in task_rx {
                    if halted() {
                        continue; // left pending for the next run
                    }
                    match work(&task) {
                        Ok(r) => {
                            if result_tx.send(r).is_err() {
                                return;
                            }
                        }
                        Err(e) => fail(e),
                    }
                }
            });
        }
        drop((task_rx, result_tx));
        let mut after = i64::MIN;
        while !halted() {
            let batch = match pull(after) {
                Ok(b) => b,
                Err(e) => {
                    fail(e);
                    break;
                }
            };
            let Some(last) = batch.last() else { break };
            after = key(last);
            if let Err(e) = dispatch(&batch) {
                fail(e);
                break;
            }
            for task in batch {
                if halted() || task_tx.send(task).is_err() {
                    break;
                }
            }
        }
        drop(task_tx);
        let _ = committer.join();
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None if config.cancel.is_cancelled() => Err(EngineError::Cancelled),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn config() -> PoolConfig {
        PoolConfig {
            workers: 3,
            pull_batch: 7,
            commit_every: 5,
            commit_interval: Duration::from_millis(20),
            cancel: Cancel::new(),
        }
    }

    /// Pulls 0..n in batches of `pull_batch`, keyed by value.
    fn puller(n: i64, batch: usize) -> impl FnMut(i64) -> Result<Vec<i64>, EngineError> {
        move |after| Ok(((after.max(-1) + 1)..n).take(batch).collect())
    }

    #[test]
    fn every_task_runs_once_and_is_committed() {
        let committed = Mutex::new(Vec::new());
        run(
            &config(),
            puller(100, 7),
            |t| *t,
            |_| Ok(()),
            |t| Ok(t * 2),
            |batch| {
                assert!(batch.len() <= 5);
                committed.lock().unwrap().extend(batch);
                Ok(())
            },
        )
        .unwrap();
        let mut got = committed.into_inner().unwrap();
        got.sort();
        assert_eq!(got, (0..100).map(|t| t * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_fatal_error_stops_the_feed() {
        let ran = AtomicU64::new(0);
        let err = run(
            &config(),
            puller(10_000, 7),
            |t| *t,
            |_| Ok(()),
            |t| {
                ran.fetch_add(1, Ordering::SeqCst);
                if *t == 20 {
                    Err(EngineError::Internal("disk full".into()))
                } else {
                    Ok(*t)
                }
            },
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert!(ran.load(Ordering::SeqCst) < 10_000);
    }

    #[test]
    fn a_failed_commit_stops_the_run() {
        let err = run(
            &config(),
            puller(10_000, 7),
            |t| *t,
            |_| Ok(()),
            |t| Ok(*t),
            |_| Err(EngineError::Internal("store gone".into())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("store gone"));
    }
}
