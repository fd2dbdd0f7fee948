//! SQL that both stores run as written: the plan's columns, its action
//! lists, the policy's rules as `CASE` expressions, which names of
//! hard-linked files become links, and which folders' times a copy sets.
//! Plain SQL that DuckDB and PostgreSQL read alike (each store defines
//! `mtime_s`, whole seconds of a nanosecond mtime, rounded down); what
//! differs between the two (latest-event lookups, types, an aggregate)
//! each store passes in.

use treeshift_core::{CopyStatus, CopySummary, Fact, PlanCounts, Policy, Rule, Why, rules};

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

/// Why a folder is skipped where the destination holds no empty ones.
pub const NO_EMPTY_FOLDERS: &str =
    "the destination cannot hold empty folders (--folder-markers keeps them as markers)";

/// Leaves alone, with [`NO_EMPTY_FOLDERS`], each folder at depth `depth`
/// (a SQL value) of `plan_candidate` that the plan would make but put
/// nothing in, where the destination has folders only while something lies
/// under them. Run from the deepest depth up, so that a folder holding only
/// such folders is left too.
pub fn leave_empty_folders(depth: &str) -> String {
    format!(
        "UPDATE plan_candidate SET action = 'skip', reason = '{NO_EMPTY_FOLDERS}' \
         WHERE depth = {depth} AND kind = {FOLDER} AND action {DATA} \
           AND NOT EXISTS (SELECT 1 FROM plan_candidate c \
                           WHERE c.parent_id = plan_candidate.node_id AND c.action <> 'skip')"
    )
}

/// The reason of a name the plan makes a hard link of another.
pub const HARD_LINK: &str = "hard link";

/// The kind code of a folder.
const FOLDER: u8 = 0;

/// The `compare` statuses of nodes that take no part in the migration
/// (recorded when listed; never traversed, compared or planned), as a SQL
/// list.
pub const LEFT_OUT: &str = "('excluded', 'invalid-name')";

/// Makes links of the other names of hard-linked files in
/// `plan_candidate`. Among source files with several names in the tree,
/// the first name by path leads: every other name the plan copies becomes
/// a link to it, provided the leader will hold the source's data after
/// the copy (it is in step, or the plan copies it). A name whose leader
/// the plan leaves differing is copied on its own. `first_path` is the
/// dialect's aggregate of the first `rel_path` of a group. The reason
/// names no path: SQL cannot render one as the review does, so a review
/// adds the leader's path (`ReviewItem::linked_to`).
pub fn link_names(first_path: &str) -> String {
    format!(
        "UPDATE plan_candidate SET link_to = g.leader, reason = '{HARD_LINK}' \
         FROM ( \
           WITH members AS ( \
             SELECT s.id, s.rel_path, s.dev, s.ino FROM src_nodes s \
             WHERE s.dev IS NOT NULL AND s.kind = 1 AND s.id NOT IN \
               (SELECT node_id FROM src_status_events WHERE phase = 'compare' AND status IN {LEFT_OUT})), \
           groups AS (SELECT dev, ino, {first_path} AS leader FROM members \
                      GROUP BY dev, ino HAVING count(*) > 1), \
           leaders AS ( \
             SELECT g.dev, g.ino, g.leader FROM groups g \
             JOIN members m ON m.dev = g.dev AND m.ino = g.ino AND m.rel_path = g.leader \
             LEFT JOIN plan_candidate l ON l.node_id = m.id \
             WHERE l.node_id IS NULL OR l.action IN ('create', 'replace', 'rename', 'metadata') \
                OR l.meta_only) \
           SELECT m.id, l.leader FROM members m JOIN leaders l \
             ON l.dev = m.dev AND l.ino = m.ino WHERE m.rel_path <> l.leader \
         ) g \
         WHERE plan_candidate.node_id = g.id AND plan_candidate.action {DATA}"
    )
}

/// The folders whose mtime and metadata a copy sets (node_id, depth,
/// rel_path, mtime_ns, all_meta, mode, uid, gid, xattrs, copied_at): a
/// folder the copy made or updated (a folder left `changed` has something
/// else at its path, which is not ours) when they were never set, or when
/// it or a child of it was copied since the last time; a folder in step
/// that had data written into it, for its mtime back. So a retry or a
/// resumed run touches only the folders it wrote into. `latest_copy` is
/// the store's query of each item's latest copy status (`node_id`, `st`);
/// `no_meta` its typed NULLs for mode, uid, gid, xattrs and copied_at.
pub fn folders_to_date(latest_copy: &str, no_meta: &str) -> String {
    format!(
        "WITH copied AS (SELECT node_id, max(seq) AS s FROM src_status_events \
                         WHERE phase = 'copy' AND status = 'copied' GROUP BY node_id), \
              dated AS (SELECT node_id, max(seq) AS s FROM src_status_events \
                        WHERE phase = 'dated' GROUP BY node_id), \
              touched AS (SELECT p.parent_id AS folder, max(c.s) AS s FROM copy_plan p \
                          JOIN copied c ON c.node_id = p.node_id WHERE p.action {DATA} \
                          GROUP BY p.parent_id), \
              planned AS (SELECT p.node_id, p.depth, p.rel_path, p.mtime_ns, true AS all_meta, \
                            p.mode, p.uid, p.gid, p.xattrs, c.s AS copied_at FROM copy_plan p \
                          JOIN ({latest_copy}) lc ON lc.node_id = p.node_id \
                          JOIN copied c ON c.node_id = p.node_id \
                          WHERE p.kind = {FOLDER} AND p.action {COPIES} AND lc.st = 'copied'), \
              in_step AS (SELECT s.id AS node_id, s.depth, s.rel_path, s.mtime_ns, false AS all_meta, \
                            {no_meta} \
                          FROM src_nodes s JOIN touched t ON t.folder = s.id \
                          WHERE s.kind = {FOLDER} AND s.id NOT IN (SELECT node_id FROM planned)) \
         SELECT x.* FROM (SELECT * FROM planned UNION ALL SELECT * FROM in_step) x \
         LEFT JOIN dated d ON d.node_id = x.node_id \
         LEFT JOIN touched t ON t.folder = x.node_id \
         WHERE x.mtime_ns IS NOT NULL \
           AND (d.s IS NULL OR coalesce(x.copied_at, 0) > d.s OR coalesce(t.s, 0) > d.s)"
    )
}

/// The copy's counts, as one row: the plan's items, then their number by
/// each of `CopyStatus::ALL` in its order, then the bytes planned and the
/// bytes copied (see [`copy_summary_from`]). `latest_copy` is the store's
/// query of each item's latest copy status (`node_id`, `st`).
pub fn copy_summary(latest_copy: &str) -> String {
    let counts = CopyStatus::ALL
        .iter()
        .map(|s| format!("count(*) FILTER (WHERE st = '{}')", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT count(*), {counts}, \
           coalesce(sum(size) FILTER (WHERE kind = 1 AND action {DATA} AND link_to IS NULL), 0)::BIGINT, \
           coalesce(sum(size) FILTER (WHERE kind = 1 AND action {DATA} AND link_to IS NULL \
                                      AND st = 'copied'), 0)::BIGINT \
         FROM (SELECT p.kind, p.size, p.action, p.link_to, coalesce(c.st, 'pending') AS st \
               FROM copy_plan p LEFT JOIN ({latest_copy}) c ON c.node_id = p.node_id) x"
    )
}

/// The summary in a row of [`copy_summary`], read by `value(i)`.
pub fn copy_summary_from(value: impl Fn(usize) -> i64) -> CopySummary {
    let n = |i| value(i).max(0) as u64;
    let by_status = |status: CopyStatus| {
        let at = CopyStatus::ALL.iter().position(|s| *s == status);
        n(1 + at.unwrap_or(0))
    };
    let bytes = 1 + CopyStatus::ALL.len();
    CopySummary {
        planned: n(0),
        pending: by_status(CopyStatus::Pending),
        copying: by_status(CopyStatus::Copying),
        copied: by_status(CopyStatus::Copied),
        skipped: by_status(CopyStatus::Skipped),
        failed: by_status(CopyStatus::Failed),
        changed: by_status(CopyStatus::Changed),
        bytes_planned: n(bytes),
        bytes_copied: n(bytes + 1),
    }
}

/// The counts of the plan in `plan_candidate`, as one row (see
/// [`plan_counts_from`]).
pub fn plan_counts() -> String {
    format!(
        "SELECT count(*) FILTER (WHERE action <> 'skip'), \
           count(*) FILTER (WHERE action {DATA} AND kind <> {FOLDER}), \
           count(*) FILTER (WHERE action {DATA} AND kind = {FOLDER}), \
           coalesce(sum(size) FILTER (WHERE action {DATA} AND kind = 1 AND link_to IS NULL), 0)::BIGINT, \
           count(*) FILTER (WHERE action = 'skip'), \
           count(*) FILTER (WHERE action IN ('replace', 'rename')), \
           count(*) FILTER (WHERE action = 'quarantine'), \
           count(*) FILTER (WHERE action = 'metadata'), \
           count(*) FILTER (WHERE action {DATA} AND link_to IS NOT NULL) \
         FROM plan_candidate"
    )
}

/// [`PlanCounts`] from the row of [`plan_counts`], by column.
pub fn plan_counts_from(value: impl Fn(usize) -> i64) -> PlanCounts {
    let n = |i| value(i).max(0) as u64;
    PlanCounts {
        items: n(0),
        files: n(1),
        folders: n(2),
        bytes: n(3),
        skipped: n(4),
        replaces: n(5),
        quarantines: n(6),
        metadata: n(7),
        links: n(8),
    }
}

/// What a verification checks: every copied item the copy acted on
/// (node_id, depth, kind, rel_path, size, the mtime it should have, mode,
/// uid, gid, xattrs, link_to). `latest_copy` as for [`copy_summary`];
/// `latest_written` the store's query of the latest record of what was
/// written at each path with its own mtime, as `w`.
pub fn to_verify(latest_copy: &str, latest_written: &str) -> String {
    format!(
        "SELECT p.node_id, p.depth, p.kind, p.rel_path, p.size, {expected} AS mtime_ns, \
           p.mode, p.uid, p.gid, p.xattrs, p.link_to FROM copy_plan p \
         JOIN ({latest_copy}) c ON c.node_id = p.node_id \
         LEFT JOIN {latest_written} ON w.rel_path = p.rel_path \
         WHERE c.st = 'copied' AND p.action {COPIES}",
        expected = expected_mtime("p"),
    )
}

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
