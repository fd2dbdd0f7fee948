//! What a backend reached by requests sends: the counts a run reports, and
//! the pacing that keeps a side under `--src-tps`/`--dst-tps`. Shared by
//! the HTTP transport of the object stores and WebDAV, and by SFTP.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests a remote backend sent, and what came back that made it wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Requests sent, retries included.
    pub sent: u64,
    /// Of those, repeats of one that was throttled or failed briefly.
    pub retried: u64,
    /// Responses asking to slow down (429, 503).
    pub throttled: u64,
    /// Other responses or connection failures worth another attempt.
    pub failed_briefly: u64,
    /// Milliseconds spent waiting before retries and for pacing slots.
    pub waited_ms: u64,
}

/// The counters behind [`RequestCounts`], updated by any thread.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) failed_briefly: AtomicU64,
    waited_ms: AtomicU64,
}

impl Counters {
    /// The counts so far.
    pub(crate) fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            failed_briefly: self.failed_briefly.load(Ordering::Relaxed),
            waited_ms: self.waited_ms.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn waited(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.waited_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Spaces requests `interval` apart: each takes the next free slot.
pub(crate) struct Pace {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// Pacing to `tps` requests a second; `None` for no limit.
    pub(crate) fn new(tps: Option<u32>) -> Option<Pace> {
        tps.filter(|&t| t > 0).map(|tps| Pace {
            interval: Duration::from_secs(1) / tps,
            next: Mutex::new(None),
        })
    }

    /// Takes the next free slot: the moment this request may go.
    pub(crate) fn slot(&self) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        slot
    }

    /// Blocks this thread until its slot; returns how long it waited.
    pub(crate) fn wait(&self) -> Duration {
        let wait = self.slot().saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spaces_requests() {
        let pace = Pace::new(Some(50)).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            pace.wait();
        }
        // Slots at 0, 20, ..., 80 ms: the fifth cannot start sooner.
        assert!(start.elapsed() >= Duration::from_millis(80));
        assert!(Pace::new(Some(0)).is_none() && Pace::new(None).is_none());
    }
}
