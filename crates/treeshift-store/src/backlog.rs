//! What waits in the channel to the store thread, counted in rows: the
//! bound on its memory, however the rows come (a chunk of thousands of
//! children, or one `listed` event).
//!
//! Counting messages instead would bound the channel to a few messages:
//! enough for a few large chunks, but with many listings in flight each
//! sends small ones, and they all stop whenever the store thread commits
//! a batch, until it reads again. Counted in rows, a quarter of the memory
//! the sixteen messages could hold takes what a few hundred small
//! listings send meanwhile.

use crate::ENDED_POLL;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// Rows the channel holds at most: four full chunks of children (the
/// sixteen messages it held before could be sixteen full chunks).
/// bench/inflight.sh ran as fast with 32,768.
pub(crate) const BACKLOG_ROWS: usize = 8_192;

/// Rows sent and not yet taken by the store thread.
#[derive(Default)]
pub(crate) struct Backlog {
    rows: Mutex<usize>,
    room: Condvar,
}

impl Backlog {
    /// Waits until `rows` more fit, then counts them (a message larger
    /// than the whole bound waits for an empty channel). Returns false if
    /// the store thread ended meanwhile: nothing will take them.
    pub(crate) fn add(&self, rows: usize, ended: &AtomicBool) -> bool {
        let rows = rows.min(BACKLOG_ROWS);
        let mut held = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        while *held + rows > BACKLOG_ROWS {
            if ended.load(Ordering::Acquire) {
                return false;
            }
            held = self
                .room
                .wait_timeout(held, ENDED_POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *held += rows;
        true
    }

    /// The store thread took a message of `rows` rows.
    pub(crate) fn remove(&self, rows: usize) {
        let rows = rows.min(BACKLOG_ROWS);
        let mut held = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        *held = held.saturating_sub(rows);
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_sender_waits_for_room_and_gives_up_once_the_store_thread_ended() {
        let backlog = Arc::new(Backlog::default());
        let ended = Arc::new(AtomicBool::new(false));
        assert!(backlog.add(BACKLOG_ROWS - 10, &ended));
        assert!(backlog.add(10, &ended));
        let waiting = {
            let (backlog, ended) = (Arc::clone(&backlog), Arc::clone(&ended));
            std::thread::spawn(move || backlog.add(2048, &ended))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished(), "no room: the sender waits");
        backlog.remove(2048);
        assert!(waiting.join().unwrap(), "room made: the sender goes on");
        let waiting = {
            let (backlog, ended) = (Arc::clone(&backlog), Arc::clone(&ended));
            std::thread::spawn(move || backlog.add(1, &ended))
        };
        ended.store(true, Ordering::Release);
        assert!(!waiting.join().unwrap(), "the store thread ended");
    }
}
