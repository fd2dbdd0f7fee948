//! Progress reporting is a trait: the engine never touches a terminal. The
//! CLI draws bars, a server would stream events, tests use [`NoProgress`].

use treeshift_core::Side;

/// Receives discovery progress. Called from worker threads; keep it cheap.
pub trait DiscoveryProgress: Send + Sync {
    /// A side started round `round` with `pending` folders to list.
    fn round_started(&self, _side: Side, _round: u32, _pending: u64) {}
    /// A folder was listed (or failed) with `children` children.
    fn folder_done(&self, _side: Side, _children: u64) {}
    /// A side sealed round `round`; `done` when it has nothing left.
    fn round_sealed(&self, _side: Side, _round: u32, _done: bool) {}
}

/// Reports nothing.
pub struct NoProgress;

impl DiscoveryProgress for NoProgress {}
