//! The gate between the two sides.
//!
//! The destination may start round N only once the source has sealed rounds
//! N and N+1, or finished. Comparing round N's folders needs the source's
//! depth N+1 nodes (sealed with round N); the extra round of lead keeps the
//! destination from idling at every round boundary. The source never waits.

use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    src_sealed: Option<u32>,
    src_done: bool,
    aborted: bool,
}

/// Shared by the two side runners.
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

/// The run was aborted while waiting at the gate.
#[derive(Debug, PartialEq, Eq)]
pub struct Aborted;

impl Gate {
    /// A gate that starts from what the store says (on resume).
    pub fn new(src_sealed: Option<u32>, src_done: bool) -> Self {
        Gate {
            state: Mutex::new(State {
                src_sealed,
                src_done,
                aborted: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source sealed `round`; `done` if it has nothing left.
    pub fn src_sealed(&self, round: u32, done: bool) {
        let mut s = self.lock();
        s.src_sealed = Some(round);
        s.src_done |= done;
        self.changed.notify_all();
    }

    /// Wakes every waiter and makes them return [`Aborted`].
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.changed.notify_all();
    }

    /// Returns true if and only if the destination may start `round` now.
    pub fn dst_may_start(&self, round: u32) -> bool {
        let s = self.lock();
        s.src_done || s.src_sealed.is_some_and(|sealed| sealed > round)
    }

    /// Blocks until the destination may start `round`.
    pub fn wait_for_dst(&self, round: u32) -> Result<(), Aborted> {
        let mut s = self.lock();
        loop {
            if s.aborted {
                return Err(Aborted);
            }
            if s.src_done || s.src_sealed.is_some_and(|sealed| sealed > round) {
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn dst_round_n_needs_src_rounds_n_and_n_plus_1() {
        let g = Gate::new(None, false);
        assert!(!g.dst_may_start(0));
        g.src_sealed(0, false);
        assert!(!g.dst_may_start(0), "src finished round 0 only");
        g.src_sealed(1, false);
        assert!(g.dst_may_start(0));
        assert!(!g.dst_may_start(1));
        g.src_sealed(2, true);
        assert!(g.dst_may_start(7), "src done releases every round");
    }

    #[test]
    fn waiter_wakes_on_seal_and_on_abort() {
        let g = Arc::new(Gate::new(Some(1), false));
        let g2 = Arc::clone(&g);
        let t = std::thread::spawn(move || g2.wait_for_dst(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!t.is_finished(), "round 1 waits for src round 2");
        g.src_sealed(2, false);
        assert_eq!(t.join().unwrap(), Ok(()));
        let g3 = Arc::clone(&g);
        let t = std::thread::spawn(move || g3.wait_for_dst(5));
        g.abort();
        assert_eq!(t.join().unwrap(), Err(Aborted));
    }
}
