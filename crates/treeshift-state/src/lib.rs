//! What a treeshift state store is, apart from any database: the
//! [`StateStore`] trait (every operation on a migration's state), the
//! vocabulary that goes in and out of it (`types`), and its errors, which
//! name no database. The engine depends on this crate only; a store
//! (DuckDB on one host; PostgreSQL, for many, is being built:
//! docs/SCALE-OUT.md) implements the trait.

mod approval;
mod error;
mod migration;
pub mod plan_sql;
mod stats;
mod store;
mod types;

pub use approval::{may_approve, still_approved};
pub use error::{DbError, DbErrorKind, StoreError, is_database};
pub use migration::Difference;
pub use stats::{DepthStats, summary_from};
pub use store::StateStore;
pub use types::*;

use crossbeam_channel::Sender;
use std::time::{SystemTime, UNIX_EPOCH};
use treeshift_core::{
    Action, Approval, CopyStatus, CopySummary, Entry, Extras, FileId, FilterSpec, Keep, Kind, Meta,
    Phase, Policy, RelPath, Side, Status, Summary, VerifyStatus, VerifySummary,
};
