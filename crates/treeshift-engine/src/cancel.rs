//! Stopping a run on request. A cancelled run stops taking new work, lets
//! what is in flight finish and be recorded, and returns
//! [`EngineError::Cancelled`](crate::EngineError::Cancelled): the state
//! file is then exactly as a run killed at that moment leaves it, and the
//! next run goes on from there the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag shared by whoever may stop a run (a signal handler, a server's
/// request) and the run itself.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag not raised.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it was asked to.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for a signal handler to raise.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}
