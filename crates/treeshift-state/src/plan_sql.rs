//! SQL that both stores run as written: the plan's columns, its action
//! lists and the policy's rules as `CASE` expressions. Plain SQL that
//! DuckDB and PostgreSQL read alike (each store defines `mtime_s`, whole
//! seconds of a nanosecond mtime, rounded down); what differs between the
//! two (latest-event lookups, types) stays in each store.

use treeshift_core::{Fact, Policy, Rule, Why, rules};

/// Columns of `copy_plan`, in table order.
pub const PLAN_COLUMNS: &str = "node_id, parent_id, depth, kind, size, mtime_ns, rel_path, status, \
     dst_kind, dst_size, dst_mtime_ns, action, reason, mode, uid, gid, xattrs, link_to";

/// True when a `copy_plan` row `p` and a `plan_candidate` row `c` of the
/// same node say different things.
pub const PLAN_DIFFERS: &str = "c.action IS DISTINCT FROM p.action OR c.kind IS DISTINCT FROM p.kind \
     OR c.size IS DISTINCT FROM p.size OR c.mtime_ns IS DISTINCT FROM p.mtime_ns \
     OR c.rel_path IS DISTINCT FROM p.rel_path OR c.dst_kind IS DISTINCT FROM p.dst_kind \
     OR c.dst_size IS DISTINCT FROM p.dst_size OR c.dst_mtime_ns IS DISTINCT FROM p.dst_mtime_ns \
     OR c.mode IS DISTINCT FROM p.mode OR c.uid IS DISTINCT FROM p.uid \
     OR c.gid IS DISTINCT FROM p.gid OR c.xattrs IS DISTINCT FROM p.xattrs \
     OR c.link_to IS DISTINCT FROM p.link_to";

/// Plan actions the copy carries out on a source item (its data, or its
/// metadata alone).
pub const COPIES: &str = "NOT IN ('skip', 'quarantine')";

/// Plan actions that copy an item's data.
pub const DATA: &str = "IN ('create', 'replace', 'rename')";

/// Why an item under a folder in conflict is skipped.
pub const INSIDE_SKIPPED: &str = "inside a folder the plan leaves alone";

/// The mtime the destination holds for the source file `item` (a row
/// with its size and mtime as discovery saw them) when the copy left it
/// in step: the file's own mtime where the latest record `w` of what was
/// written there was written from this very version of the source with
/// one, else the source's.
pub fn expected_mtime(item: &str) -> String {
    format!(
        "coalesce(CASE WHEN w.size = {item}.size \
                        AND mtime_s(w.mtime_ns) IS NOT DISTINCT FROM mtime_s({item}.mtime_ns) \
                       THEN w.own_mtime_ns END, {item}.mtime_ns)"
    )
}

/// The `CASE` expressions of the action and the reason `policy` gives a
/// row (`treeshift_core::rules`), where `fact` is each fact's SQL
/// condition on that row and `status` its status column.
pub fn plan_cases(policy: Policy, fact: impl Fn(Fact) -> String, status: &str) -> (String, String) {
    let when = |r: &Rule| match r.when {
        [] => "true".to_string(),
        facts => facts
            .iter()
            .map(|f| format!("({})", fact(*f)))
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    let mut action = String::from("CASE");
    let mut reason = String::from("CASE");
    for r in rules(policy) {
        let condition = when(r);
        action.push_str(&format!(" WHEN {condition} THEN '{}'", r.action.as_str()));
        let why = match r.why {
            Why::Nothing => "NULL".to_string(),
            Why::Text(text) => format!("'{}'", text.replace('\'', "''")),
            Why::StatusUnderSkip => format!("{status} || ' (policy skip)'"),
        };
        reason.push_str(&format!(" WHEN {condition} THEN {why}"));
    }
    action.push_str(" END");
    reason.push_str(" END");
    (action, reason)
}
