//! treeshift's model: what a node is, which side it lives on, the statuses
//! discovery gives it, relative paths made of raw bytes, and the filters that
//! exclude nodes, and the copy plan's vocabulary. Pure data and rules: nothing here touches storage.

mod compare;
mod filter;
mod keep;
mod model;
mod path;
mod phase;
mod plan;
mod plan_hash;
mod plan_rules;
mod secret;

pub use compare::{
    NodeFacts, PairHistory, WrittenFacts, compare_in_pass, compare_pair, source_change,
};
pub use filter::{Filter, FilterError, FilterSpec, Verdict, parse_size, parse_time};
pub use keep::{FileId, Keep, Meta, OwnerMap, Owners, Xattr, keeps_xattr, xattr_digest};
pub use model::{
    Changes, Entry, Kind, LeftAlone, ListStatus, Md5, RoundState, Side, Status, Summary, ToCopy,
    Totals,
};
pub use path::{RelPath, display_bytes, name_problem, name_stand_in};
pub use phase::Phase;
pub use plan::{
    Action, Approval, CopyStatus, CopySummary, Extras, PlanCounts, Policy, QUARANTINE_DIR,
    VerifyStatus, VerifySummary, aside_name, mtime_secs, quarantine_path, temp_name,
};
pub use plan_hash::{PlanHash, PlanItem};
pub use plan_rules::{Fact, NO_SYMLINKS, Rule, Why, decide, rules};
pub use secret::{REDACTED, Secret, Secrets};
