//! A budget threads take from and give back: bytes of files being copied,
//! multipart uploads in flight. What is asked past the whole budget waits
//! until nothing else is taken, then goes alone.

use std::sync::{Condvar, Mutex};

/// A budget of `capacity` units shared by threads.
pub struct Budget {
    capacity: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Units taken from a [`Budget`], given back when dropped.
pub struct Taken<'a> {
    budget: &'a Budget,
    units: u64,
}

impl Budget {
    /// A budget of `capacity` units (at least one).
    pub fn new(capacity: u64) -> Self {
        Budget {
            capacity: capacity.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits until `units` (at most the whole budget) are free, and takes
    /// them.
    pub fn acquire(&self, units: u64) -> Taken<'_> {
        let units = units.min(self.capacity);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + units > self.capacity {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += units;
        Taken {
            budget: self,
            units,
        }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.units;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn a_budget_bounds_what_is_taken_at_once() {
        let budget = Budget::new(100);
        let peak = AtomicU64::new(0);
        let now = AtomicU64::new(0);
        std::thread::scope(|s| {
            for size in [60u64, 60, 30, 500, 10, 90] {
                let (budget, peak, now) = (&budget, &peak, &now);
                s.spawn(move || {
                    let _p = budget.acquire(size);
                    let cur = now.fetch_add(size.min(100), Ordering::SeqCst) + size.min(100);
                    peak.fetch_max(cur, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    now.fetch_sub(size.min(100), Ordering::SeqCst);
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100);
    }
}
