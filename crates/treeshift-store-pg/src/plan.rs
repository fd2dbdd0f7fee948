//! The plan and its approval on PostgreSQL. A plan is drafted from
//! discovery's latest `compare` events inside one transaction, into a
//! temporary table dropped at its end (`plan_candidate`); its hash is
//! `treeshift_core::PlanHash` over its rows read through a portal, so a
//! plan of millions of items is never held whole. Approving records the
//! draft as `copy_plan` in the same transaction. The policy's rules and
//! the plan's columns are the SQL both stores share
//! (`treeshift_state::plan_sql`); what is PostgreSQL's own here is the
//! latest-event lookup (`DISTINCT ON`) and the types.

use crate::PgStore;
use crate::copy::read_copy_summary;
use crate::error::Context;
use postgres::Transaction;
use treeshift_core::{Approval, Extras, Fact, Phase, PlanHash, PlanItem, Policy, Side};
use treeshift_state::plan_sql::{self, INSIDE_SKIPPED, PLAN_COLUMNS, PLAN_DIFFERS, plan_cases};
use treeshift_state::{PlanPreview, StoreError, flag, may_approve, still_approved};

/// Rows of the plan read at a time to hash it.
const HASH_PAGE: i32 = 10_000;

/// Two processes approving at once take turns on this lock.
const APPROVAL_LOCK: i64 = 7365732;

/// The latest `compare` status and reason of each of `side`'s nodes.
fn latest_compare(side: Side) -> String {
    format!(
        "SELECT DISTINCT ON (node_id) node_id, status AS st, reason FROM {side}_status_events \
         WHERE phase = 'compare' ORDER BY node_id, seq DESC"
    )
}

/// What the plan is drafted from, read before its transaction.
struct Basis {
    /// The destination cannot hold symlinks,
    no_symlinks: bool,
    /// nor empty folders.
    no_empty_folders: bool,
    /// The filter discovery ran with, as the hash covers it,
    filter: String,
    /// and as an approval lists its rules.
    filter_rules: Vec<String>,
}

impl PgStore {
    fn basis(&self) -> Result<Basis, StoreError> {
        let progress = self.progress()?;
        if !(progress.src_done && progress.dst_done) {
            return Err(StoreError::NotDiscovered);
        }
        let spec = self.migration()?.filter;
        let filter = serde_json::to_string(&spec).map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Basis {
            no_symlinks: self.flag(flag::NO_SYMLINKS_AT_DESTINATION)?,
            no_empty_folders: self.flag(flag::NO_EMPTY_FOLDERS_AT_DESTINATION)?,
            filter,
            filter_rules: spec.rules(),
        })
    }

    /// The plan `policy` and `extras` would give now; nothing is recorded.
    pub fn preview_plan(&self, policy: Policy, extras: Extras) -> Result<PlanPreview, StoreError> {
        let basis = self.basis()?;
        self.run(|client| {
            let mut tx = client.transaction().context("begin a plan")?;
            draft(&mut tx, &basis, policy, extras)
        })
    }

    /// Records the approval of the plan `policy` and `extras` give now,
    /// by `by`; with `expected`, only if that is the plan's hash (what
    /// the approver was shown). A copy of another plan that started and
    /// did not finish refuses it.
    pub fn approve(
        &self,
        policy: Policy,
        extras: Extras,
        by: &str,
        expected: Option<&str>,
    ) -> Result<Approval, StoreError> {
        let basis = self.basis()?;
        self.run(|client| {
            let mut tx = client.transaction().context("begin an approval")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPROVAL_LOCK])
                .context("wait for another approval")?;
            let draft = draft(&mut tx, &basis, policy, extras)?;
            let old = read_approval(&mut tx)?;
            let copy = || read_copy_summary(&mut tx);
            if let Some(kept) = may_approve(&draft.plan_hash, expected, old, copy)? {
                return Ok(kept);
            }
            let approval = Approval {
                policy,
                plan_hash: draft.plan_hash,
                approved_by: by.to_string(),
                approved_at: utc_now(&mut tx)?,
                filters: basis.filter_rules.clone(),
                extras,
                pass: crate::pass::read_pass(&mut tx)?,
                extended_at: None,
                extended_items: 0,
                counts: draft.counts,
            };
            record_approval(&mut tx, &approval)?;
            tx.commit().context("record the approval")?;
            Ok(approval)
        })
    }

    /// The recorded approval, if any, unchecked.
    pub fn approval(&self) -> Result<Option<Approval>, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("read the approval")?;
            read_approval(&mut tx)
        })
    }

    /// The approval, checked against the plan discovery gives now.
    pub fn approved_plan(&self) -> Result<Approval, StoreError> {
        still_approved(self.approval()?, |a| {
            Ok(self.preview_plan(a.policy, a.extras)?.plan_hash)
        })
    }

    /// Extends the approval to plan items new since it (a retry sweep's
    /// discovery found them), under its policy, when no approved item
    /// changed and every new item is created or skipped. `None` without
    /// an approval.
    pub fn extend_approval(&self) -> Result<Option<u64>, StoreError> {
        let Some(old) = self.approval()? else {
            return Ok(None);
        };
        let basis = self.basis()?;
        self.run(|client| {
            let mut tx = client.transaction().context("begin an approval")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPROVAL_LOCK])
                .context("wait for another approval")?;
            let draft = draft(&mut tx, &basis, old.policy, old.extras)?;
            if draft.plan_hash == old.plan_hash {
                return Ok(Some(0));
            }
            let count = |tx: &mut Transaction<'_>, sql: &str| -> Result<u64, StoreError> {
                Ok(tx
                    .query_one(sql, &[])
                    .context("compare the plan with the approved one")?
                    .get::<_, i64>(0)
                    .max(0) as u64)
            };
            let changed = count(
                &mut tx,
                &format!(
                    "SELECT count(*) FROM copy_plan p LEFT JOIN plan_candidate c \
                     ON c.node_id = p.node_id WHERE c.node_id IS NULL OR {PLAN_DIFFERS}"
                ),
            )?;
            if changed > 0 {
                return Err(StoreError::PlanChanged {
                    approved: old.plan_hash.clone(),
                    current: draft.plan_hash,
                });
            }
            let new_items = "FROM plan_candidate c WHERE NOT EXISTS \
                             (SELECT 1 FROM copy_plan p WHERE p.node_id = c.node_id)";
            let added = count(&mut tx, &format!("SELECT count(*) {new_items}"))?;
            let touching = count(
                &mut tx,
                &format!(
                    "SELECT count(*) {new_items} AND c.action IN ('replace', 'rename', 'quarantine')"
                ),
            )?;
            if touching > 0 {
                return Err(StoreError::ExtensionTouchesDestination { items: touching });
            }
            let approval = Approval {
                plan_hash: draft.plan_hash,
                extended_at: Some(utc_now(&mut tx)?),
                extended_items: old.extended_items + added,
                counts: draft.counts,
                ..old.clone()
            };
            record_approval(&mut tx, &approval)?;
            tx.commit().context("extend the approval")?;
            Ok(Some(added))
        })
    }
}

/// The approval recorded, if any.
fn read_approval(tx: &mut Transaction<'_>) -> Result<Option<Approval>, StoreError> {
    let text: Option<String> = tx
        .query_one("SELECT approval FROM migrations WHERE id = 1", &[])
        .context("read the approval")?
        .get(0);
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Db {
            context: "read the approval".into(),
            cause: treeshift_state::DbError {
                kind: treeshift_state::DbErrorKind::Other,
                message: format!("unreadable approval: {e}"),
            },
        })
    })
    .transpose()
}

/// Now, as RFC 3339 UTC, by the database's clock.
fn utc_now(tx: &mut Transaction<'_>) -> Result<String, StoreError> {
    Ok(tx
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .context("read the time")?
        .get(0))
}

/// Drafts the plan of `policy` and `extras` into `plan_candidate` (dropped
/// when `tx` ends) and returns its counts and hash.
fn draft(
    tx: &mut Transaction<'_>,
    basis: &Basis,
    policy: Policy,
    extras: Extras,
) -> Result<PlanPreview, StoreError> {
    // The data is in step, only metadata differs (see `Comparison`).
    let meta_only = "coalesce(cs.reason LIKE 'metadata:%', false)";
    let (action, reason) = plan_cases(
        policy,
        |fact| match fact {
            Fact::Special => "s.kind = 3".into(),
            Fact::UnheldSymlink => format!("s.kind = 2 AND {}", basis.no_symlinks),
            Fact::Is(status) => format!("cs.st = '{}'", status.as_str()),
            Fact::MetadataOnly => meta_only.into(),
            // Whole seconds, as discovery compares.
            Fact::SourceNewer => "mtime_s(s.mtime_ns) > mtime_s(d.mtime_ns)".into(),
        },
        "cs.st",
    );
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE plan_candidate ON COMMIT DROP AS \
         SELECT s.id AS node_id, s.parent_id, s.depth, s.kind, s.size, s.mtime_ns, s.rel_path, \
           cs.st AS status, d.kind AS dst_kind, d.size AS dst_size, d.mtime_ns AS dst_mtime_ns, \
           {action} AS action, {reason} AS reason, \
           s.mode, s.uid, s.gid, s.xattrs, NULL::bytea AS link_to, \
           {meta_only} AS meta_only, s.dev, s.ino \
         FROM src_nodes s JOIN ({cs}) cs ON cs.node_id = s.id \
         LEFT JOIN dst_nodes d ON d.depth = s.depth AND d.rel_path = s.rel_path \
         WHERE cs.st IN ('missing', 'differs', 'outdated', 'conflict')",
        cs = latest_compare(Side::Src),
    ))
    .context("compute the plan")?;
    skip_under_blocked_folders(tx)?;
    if basis.no_empty_folders {
        let max_depth: i32 = tx
            .query_one("SELECT coalesce(max(depth), 0) FROM plan_candidate", &[])
            .context("read the plan's depth")?
            .get(0);
        for depth in (0..=max_depth).rev() {
            tx.execute(&plan_sql::leave_empty_folders("$1"), &[&depth])
                .context("leave the empty folders")?;
        }
    }
    link_names(tx)?;
    if extras == Extras::Quarantine {
        tx.batch_execute(&format!(
            "INSERT INTO plan_candidate \
             SELECT d.id, d.parent_id, d.depth, d.kind, d.size, d.mtime_ns, d.rel_path, 'extra', \
               d.kind, d.size, d.mtime_ns, 'quarantine', NULL, NULL, NULL, NULL, NULL, NULL, \
               false, NULL, NULL \
             FROM dst_nodes d JOIN ({e}) e ON e.node_id = d.id WHERE e.st = 'extra'",
            e = latest_compare(Side::Dst),
        ))
        .context("add the extras to quarantine")?;
    }
    let plan_hash = hash(tx, policy, extras, &basis.filter)?;
    let row = tx
        .query_one(&plan_sql::plan_counts(), &[])
        .context("count the plan")?;
    Ok(PlanPreview {
        policy,
        extras,
        plan_hash,
        counts: plan_sql::plan_counts_from(|i| row.get(i)),
    })
}

/// Under a folder left in conflict, the source's subtree cannot go
/// anywhere: it is skipped, depth by depth. (A folder left alone because
/// only its metadata differs still receives its contents.)
fn skip_under_blocked_folders(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    let blocked = format!(
        "kind = 0 AND action = 'skip' AND (status = 'conflict' OR reason = '{INSIDE_SKIPPED}')"
    );
    let row = tx
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM plan_candidate WHERE {blocked}), \
                   coalesce(max(depth), 0) FROM plan_candidate"
            ),
            &[],
        )
        .context("look for skipped folders")?;
    if !row.get::<_, bool>(0) {
        return Ok(());
    }
    for depth in 0..row.get::<_, i32>(1) {
        tx.execute(
            &format!(
                "UPDATE plan_candidate SET action = 'skip', reason = '{INSIDE_SKIPPED}' \
                 WHERE depth = $1 + 1 AND action <> 'skip' AND parent_id IN \
                 (SELECT node_id FROM plan_candidate WHERE depth = $1 AND {blocked})"
            ),
            &[&depth],
        )
        .context("skip the subtrees of skipped folders")?;
    }
    Ok(())
}

/// Makes links of the other names of hard-linked files in the plan (see
/// `plan_sql::link_names`).
fn link_names(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    let any = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM plan_candidate WHERE kind = 1 AND dev IS NOT NULL)",
            &[],
        )
        .context("look for hard links")?;
    if !any.get::<_, bool>(0) {
        return Ok(());
    }
    // PostgreSQL has no min() of bytea.
    tx.batch_execute(&plan_sql::link_names(
        "(array_agg(rel_path ORDER BY rel_path))[1]",
    ))
    .context("find hard links")
}

/// The hash of `plan_candidate` (see `PlanHash`), read a page at a time.
fn hash(
    tx: &mut Transaction<'_>,
    policy: Policy,
    extras: Extras,
    filter: &str,
) -> Result<String, StoreError> {
    let portal = tx
        .bind(
            "SELECT node_id, action, kind, size, mtime_ns, rel_path, dst_kind, dst_size, \
               dst_mtime_ns, mode, uid, gid, xattrs, link_to FROM plan_candidate",
            &[],
        )
        .context("hash the plan")?;
    let mut hash = PlanHash::default();
    loop {
        let rows = tx
            .query_portal(&portal, HASH_PAGE)
            .context("hash the plan")?;
        if rows.is_empty() {
            return Ok(hash.finish(policy, extras, filter));
        }
        for r in &rows {
            let action: &str = r.get(1);
            let path: &[u8] = r.get(5);
            let link_to: Option<&[u8]> = r.get(13);
            hash.add(&PlanItem {
                node_id: r.get(0),
                action,
                kind: r.get::<_, i16>(2) as u8,
                size: r.get::<_, i64>(3) as u64,
                mtime_ns: r.get(4),
                path,
                dst_kind: r.get::<_, Option<i16>>(6).map(|k| k as u8),
                dst_size: r.get::<_, Option<i64>>(7).map(|s| s as u64),
                dst_mtime_ns: r.get(8),
                meta: [
                    // The mode's bits as the DuckDB store reads them (unsigned).
                    r.get::<_, Option<i32>>(9).map(|m| i64::from(m as u32)),
                    r.get(10),
                    r.get(11),
                    r.get(12),
                ],
                link_to,
            });
        }
    }
}

/// Records `approval` for the plan in `plan_candidate`. Items new to the
/// plan, or changed since the last approval, start `pending` (or
/// `skipped`); items the last approval already held keep their copy
/// status, so approving again never redoes finished work.
fn record_approval(tx: &mut Transaction<'_>, approval: &Approval) -> Result<(), StoreError> {
    let json = serde_json::to_string(approval).map_err(|e| StoreError::Thread(e.to_string()))?;
    tx.batch_execute(&format!(
        "INSERT INTO src_status_events (node_id, depth, phase, status, reason, attempt) \
         SELECT c.node_id, c.depth, 'copy', \
           CASE WHEN c.action = 'skip' THEN 'skipped' ELSE 'pending' END, \
           CASE WHEN c.action = 'skip' THEN c.reason END, 1 \
         FROM plan_candidate c LEFT JOIN copy_plan p ON p.node_id = c.node_id \
         WHERE p.node_id IS NULL OR {PLAN_DIFFERS} ORDER BY c.node_id; \
         DELETE FROM copy_plan; \
         INSERT INTO copy_plan ({PLAN_COLUMNS}) SELECT {PLAN_COLUMNS} FROM plan_candidate;"
    ))
    .context("record the plan")?;
    tx.execute(
        "UPDATE migrations SET approval = $1, phase = $2, updated_at = now() WHERE id = 1",
        &[&json, &Phase::Approved.as_str()],
    )
    .context("record the approval")?;
    Ok(())
}
