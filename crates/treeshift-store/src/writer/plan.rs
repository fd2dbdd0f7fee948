//! The plan and its approval: drafted from discovery's latest `compare`
//! events and the policy's rules, kept while nothing it rests on changes,
//! hashed, and recorded as `copy_plan` when approved.
//!
//! Its hash covers every item (path, kind, size, mtime, action, and what
//! the destination held), so a copy can tell the plan it is about to carry
//! out is the one a person approved.

use super::{Db, Writer, exists};
use crate::error::Context;
use crate::schema::FOLDER;
use crate::{PlanPreview, StoreError, may_approve, still_approved};
use duckdb::arrow::array::{
    Array, ArrowPrimitiveType, BinaryArray, Int64Array, PrimitiveArray, StringArray, UInt8Array,
    UInt32Array, UInt64Array,
};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::params;
use treeshift_core::{Approval, Extras, Fact, Phase, PlanHash, PlanItem, Policy};
use treeshift_state::plan_sql::{
    INSIDE_SKIPPED, PLAN_COLUMNS, PLAN_DIFFERS, leave_empty_folders, link_names, plan_cases,
    plan_counts, plan_counts_from,
};

/// A plan drafted into `plan_candidate`, and what it was drafted from.
/// The same draft asked again, such as a preview and then its approval,
/// is not drafted again: on a large tree a draft reads every node.
pub(super) struct Drafted {
    from: DraftedFrom,
    preview: PlanPreview,
}

/// What a draft is drafted from: the policy and extras asked, and the
/// state of the store. Every node and every event is numbered from one
/// counter each, so while both stand where they stood no row was added.
#[derive(PartialEq)]
struct DraftedFrom {
    policy: Policy,
    extras: Extras,
    next_id: i64,
    next_seq: i64,
    no_symlinks: bool,
    no_empty_folders: bool,
    filter: String,
}

impl Writer {
    /// Computes the plan for `policy` into the temp table `plan_candidate`,
    /// unless the plan there was drafted from the same (see [`Drafted`]).
    fn draft_plan(&mut self, policy: Policy, extras: Extras) -> Result<PlanPreview, StoreError> {
        self.flush()?;
        let from = DraftedFrom {
            policy,
            extras,
            next_id: self.next_id,
            next_seq: self.next_seq,
            no_symlinks: self.flag(crate::flag::NO_SYMLINKS_AT_DESTINATION)?,
            no_empty_folders: self.flag(crate::flag::NO_EMPTY_FOLDERS_AT_DESTINATION)?,
            filter: serde_json::to_string(&self.migration()?.filter)
                .map_err(|e| StoreError::Thread(e.to_string()))?,
        };
        if let Some(drafted) = &self.drafted
            && drafted.from == from
        {
            return Ok(drafted.preview.clone());
        }
        self.drafted = None;
        let preview = self.draft_plan_anew(&from)?;
        self.drafted = Some(Drafted {
            from,
            preview: preview.clone(),
        });
        Ok(preview)
    }

    fn draft_plan_anew(&mut self, from: &DraftedFrom) -> Result<PlanPreview, StoreError> {
        let DraftedFrom {
            policy,
            extras,
            no_symlinks,
            ..
        } = *from;
        let started = std::time::Instant::now();
        // The data is in step, only metadata differs (see `Comparison`).
        let meta_only = "coalesce(cs.reason LIKE 'metadata:%', false)";
        let (action, reason) = plan_cases(
            policy,
            |fact| match fact {
                Fact::Special => "s.kind = 3".into(),
                Fact::UnheldSymlink => format!("s.kind = 2 AND {no_symlinks}"),
                Fact::Is(status) => format!("cs.st = '{}'", status.as_str()),
                Fact::MetadataOnly => meta_only.into(),
                // Whole seconds, as discovery compares.
                Fact::SourceNewer => "mtime_s(s.mtime_ns) > mtime_s(d.mtime_ns)".into(),
            },
            "cs.st",
        );
        self.conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE plan_candidate AS \
                 WITH cs AS (SELECT node_id, arg_max(status, seq) AS st, arg_max(reason, seq) AS reason \
                             FROM src_status_events WHERE phase = 'compare' GROUP BY node_id) \
                 SELECT s.id AS node_id, s.parent_id, s.depth, s.kind, s.size, s.mtime_ns, s.rel_path, \
                   cs.st AS status, d.kind AS dst_kind, d.size AS dst_size, d.mtime_ns AS dst_mtime_ns, \
                   {action} AS action, {reason} AS reason, \
                   s.mode, s.uid, s.gid, s.xattrs, NULL::BLOB AS link_to, \
                   {meta_only} AS meta_only, s.dev, s.ino \
                 FROM src_nodes s JOIN cs ON cs.node_id = s.id \
                 LEFT JOIN dst_nodes d ON d.depth = s.depth AND d.rel_path = s.rel_path \
                 WHERE cs.st IN ('missing', 'differs', 'outdated', 'conflict')"
            ))
            .context("compute the plan")?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "plan: drafted");
        // Under a folder left in conflict, the source's subtree cannot go
        // anywhere: skip it, depth by depth. (A folder left alone because
        // only its metadata differs still receives its contents.)
        let blocked = format!(
            "kind = {FOLDER} AND action = 'skip' \
             AND (status = 'conflict' OR reason = '{INSIDE_SKIPPED}')"
        );
        let skipped_folders = self.query_i64(&format!(
            "SELECT count(*) FROM plan_candidate WHERE {blocked}"
        ))?;
        if skipped_folders > 0 {
            let max_depth = self.query_i64("SELECT coalesce(max(depth), 0) FROM plan_candidate")?;
            for d in 0..max_depth {
                self.conn
                    .execute(
                        &format!(
                            "UPDATE plan_candidate SET action = 'skip', reason = '{INSIDE_SKIPPED}' \
                             WHERE depth = {} AND action <> 'skip' AND parent_id IN \
                             (SELECT node_id FROM plan_candidate WHERE depth = {d} AND {blocked})",
                            d + 1
                        ),
                        [],
                    )
                    .context("skip the subtrees of skipped folders")?;
            }
        }
        if from.no_empty_folders {
            let max_depth = self.query_i64("SELECT coalesce(max(depth), 0) FROM plan_candidate")?;
            for depth in (0..=max_depth).rev() {
                self.conn
                    .execute(&leave_empty_folders(&depth.to_string()), [])
                    .context("leave the empty folders")?;
            }
        }
        self.link_names()?;
        if extras == Extras::Quarantine {
            self.conn
                .execute(
                    "INSERT INTO plan_candidate \
                     SELECT d.id, d.parent_id, d.depth, d.kind, d.size, d.mtime_ns, d.rel_path, 'extra', \
                       d.kind, d.size, d.mtime_ns, 'quarantine', NULL, NULL, NULL, NULL, NULL, NULL, \
                       false, NULL, NULL \
                     FROM dst_nodes d JOIN (SELECT node_id, arg_max(status, seq) AS st FROM dst_status_events \
                                            WHERE phase = 'compare' GROUP BY node_id) e ON e.node_id = d.id \
                     WHERE e.st = 'extra'",
                    [],
                )
                .context("add the extras to quarantine")?;
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "plan: skips and links"
        );
        let hash = self.plan_hash(policy, extras, &from.filter)?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "plan: hashed");
        let counts = self
            .conn
            .query_row(&plan_counts(), [], |r| {
                let mut row = [0i64; 9];
                for (i, value) in row.iter_mut().enumerate() {
                    *value = r.get(i)?;
                }
                Ok(plan_counts_from(|i| row[i]))
            })
            .context("count the plan")?;
        Ok(PlanPreview {
            policy,
            extras,
            plan_hash: hash,
            counts,
        })
    }

    /// Makes links of the other names of hard-linked files in the plan
    /// (see `plan_sql::link_names`).
    fn link_names(&mut self) -> Result<(), StoreError> {
        if !exists(
            &self.conn,
            "SELECT 1 FROM plan_candidate WHERE kind = 1 AND dev IS NOT NULL",
        )
        .context("look for hard links")?
        {
            return Ok(());
        }
        self.conn
            .execute_batch(&link_names("min(rel_path)"))
            .context("find hard links")
    }

    /// The hash of `plan_candidate` (see `PlanHash`).
    fn plan_hash(
        &self,
        policy: Policy,
        extras: Extras,
        filter: &str,
    ) -> Result<String, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT node_id, action::VARCHAR, kind, size, mtime_ns, rel_path, dst_kind, dst_size, \
                   dst_mtime_ns, mode, uid, gid, xattrs, link_to FROM plan_candidate",
            )
            .context("hash the plan")?;
        let mut hash = PlanHash::default();
        // Column by column, a batch at a time: reading a million items
        // value by value through rows took longer than drafting the plan.
        for batch in stmt.query_arrow([]).context("hash the plan")? {
            add_plan_items(&mut hash, &batch)?;
        }
        Ok(hash.finish(policy, extras, filter))
    }

    fn check_discovered(&mut self) -> Result<(), StoreError> {
        let p = self.progress()?;
        if p.src_done && p.dst_done {
            Ok(())
        } else {
            Err(StoreError::NotDiscovered)
        }
    }

    /// The plan `policy` and `extras` would give, not recorded.
    pub(crate) fn preview_plan(
        &mut self,
        policy: Policy,
        extras: Extras,
    ) -> Result<PlanPreview, StoreError> {
        self.check_discovered()?;
        self.draft_plan(policy, extras)
    }

    pub(crate) fn approve(
        &mut self,
        policy: Policy,
        extras: Extras,
        by: &str,
        expected_hash: Option<&str>,
    ) -> Result<Approval, StoreError> {
        self.check_discovered()?;
        let draft = self.draft_plan(policy, extras)?;
        // What the approver saw must be what is approved.
        let old = self.approval()?;
        let copy = || self.copy_summary();
        if let Some(kept) = may_approve(&draft.plan_hash, expected_hash, old, copy)? {
            return Ok(kept);
        }
        let approval = Approval {
            policy,
            plan_hash: draft.plan_hash.clone(),
            approved_by: by.to_string(),
            approved_at: self.utc_now()?,
            filters: self.migration()?.filter.rules(),
            extras,
            pass: self.pass()?,
            extended_at: None,
            extended_items: 0,
            counts: draft.counts,
        };
        self.record_approval(approval)
    }

    /// Extends the approval to the plan items a retry sweep's discovery
    /// added, under the approved policy, when no approved item changed and
    /// none of the new items touches what the destination holds (each is
    /// created or skipped). Anything else needs a person's approval.
    /// Returns how many items were added, `None` without an approval.
    pub(crate) fn extend_approval(&mut self) -> Result<Option<u64>, StoreError> {
        let Some(old) = self.approval()? else {
            return Ok(None);
        };
        self.check_discovered()?;
        let draft = self.draft_plan(old.policy, old.extras)?;
        if draft.plan_hash == old.plan_hash {
            return Ok(Some(0));
        }
        let changed = self.query_i64(&format!(
            "SELECT count(*) FROM copy_plan p LEFT JOIN plan_candidate c ON c.node_id = p.node_id \
             WHERE c.node_id IS NULL OR {}",
            PLAN_DIFFERS
        ))?;
        if changed > 0 {
            return Err(StoreError::PlanChanged {
                approved: old.plan_hash,
                current: draft.plan_hash,
            });
        }
        let [added, touching] =
            ["true", "action IN ('replace', 'rename', 'quarantine')"].map(|cond| {
                self.query_i64(&format!(
                    "SELECT count(*) FROM plan_candidate \
                 WHERE node_id NOT IN (SELECT node_id FROM copy_plan) AND {cond}"
                ))
            });
        let (added, touching) = (added?.max(0) as u64, touching?.max(0) as u64);
        if touching > 0 {
            return Err(StoreError::ExtensionTouchesDestination { items: touching });
        }
        let approval = Approval {
            plan_hash: draft.plan_hash.clone(),
            extended_at: Some(self.utc_now()?),
            extended_items: old.extended_items + added,
            counts: draft.counts,
            ..old
        };
        self.record_approval(approval)?;
        Ok(Some(added))
    }

    /// Records `approval` for the plan in `plan_candidate`. Items new to the
    /// plan, or changed since the last approval, start `pending` (or
    /// `skipped`); items the last approval already held keep their copy
    /// status, so approving again never redoes finished work.
    fn record_approval(&mut self, approval: Approval) -> Result<Approval, StoreError> {
        let json =
            serde_json::to_string(&approval).map_err(|e| StoreError::Thread(e.to_string()))?;
        self.conn
            .execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE plan_fresh AS \
                 SELECT c.node_id, c.depth, c.action, c.reason FROM plan_candidate c \
                 LEFT JOIN copy_plan p ON p.node_id = c.node_id \
                 WHERE p.node_id IS NULL OR {PLAN_DIFFERS}"
            ))
            .context("compare the plan with the approved one")?;
        let rows = self.query_i64("SELECT count(*) FROM plan_fresh")?;
        let base = self.next_seq;
        self.next_seq += rows;
        self.in_transaction("record the approval", |conn| {
            conn.execute("DELETE FROM copy_plan", [])?;
            conn.execute(
                &format!("INSERT INTO copy_plan SELECT {PLAN_COLUMNS} FROM plan_candidate"),
                [],
            )?;
            conn.execute(
                &format!(
                    "INSERT INTO src_status_events \
                     SELECT {base} - 1 + row_number() OVER (), node_id, depth, 'copy', \
                       CASE WHEN action = 'skip' THEN 'skipped' ELSE 'pending' END, \
                       CASE WHEN action = 'skip' THEN reason ELSE NULL END, 1, now() \
                     FROM plan_fresh"
                ),
                [],
            )?;
            conn.execute(
                "UPDATE migrations SET approval = ?, phase = ?, updated_at = now() WHERE id = 1",
                params![json, Phase::Approved.as_str()],
            )?;
            Ok(())
        })?;
        Ok(approval)
    }

    /// Now as RFC 3339 UTC. The clock is read here, not in SQL: DuckDB's
    /// time zone functions need an extension the bundle lacks.
    fn utc_now(&self) -> Result<String, StoreError> {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        self.conn
            .query_row(
                "SELECT strftime(make_timestamp(?::BIGINT), '%Y-%m-%dT%H:%M:%SZ')",
                params![micros],
                |r| r.get(0),
            )
            .context("format the time")
    }

    pub(crate) fn approved_plan(&mut self) -> Result<Approval, StoreError> {
        let approval = self.approval()?;
        still_approved(approval, |a| {
            self.check_discovered()?;
            Ok(self.draft_plan(a.policy, a.extras)?.plan_hash)
        })
    }
}

impl Db {
    pub(crate) fn approval(&self) -> Result<Option<Approval>, StoreError> {
        let text: Option<String> = self
            .row("SELECT approval FROM migrations WHERE id = 1", [], |r| {
                r.get(0)
            })
            .context("read the approval")?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::NotAStateFile {
                path: self.path.clone(),
                detail: format!("unreadable approval: {e}"),
            })
        })
        .transpose()
    }
}

/// Adds the plan items of one batch of `Writer::plan_hash`'s query.
fn add_plan_items(hash: &mut PlanHash, batch: &RecordBatch) -> Result<(), StoreError> {
    let node_id = column::<Int64Array>(batch, 0)?;
    let action = column::<StringArray>(batch, 1)?;
    let kind = column::<UInt8Array>(batch, 2)?;
    let size = column::<UInt64Array>(batch, 3)?;
    let mtime_ns = column::<Int64Array>(batch, 4)?;
    let path = column::<BinaryArray>(batch, 5)?;
    let dst_kind = column::<UInt8Array>(batch, 6)?;
    let dst_size = column::<UInt64Array>(batch, 7)?;
    let dst_mtime_ns = column::<Int64Array>(batch, 8)?;
    let [mode, uid, gid] = [9, 10, 11].map(|i| column::<UInt32Array>(batch, i));
    let (mode, uid, gid) = (mode?, uid?, gid?);
    let xattrs = column::<UInt64Array>(batch, 12)?;
    let link_to = column::<BinaryArray>(batch, 13)?;
    for row in 0..batch.num_rows() {
        let meta_of = |a: &UInt32Array| value(a, row).map(i64::from);
        hash.add(&PlanItem {
            node_id: node_id.value(row),
            action: action.value(row),
            kind: kind.value(row),
            size: size.value(row),
            mtime_ns: value(mtime_ns, row),
            path: path.value(row),
            dst_kind: value(dst_kind, row),
            dst_size: value(dst_size, row),
            dst_mtime_ns: value(dst_mtime_ns, row),
            meta: [
                meta_of(mode),
                meta_of(uid),
                meta_of(gid),
                value(xattrs, row).map(|v| v as i64),
            ],
            link_to: (!link_to.is_null(row)).then(|| link_to.value(row)),
        });
    }
    Ok(())
}

/// Column `i` of `batch` as the array type its SQL type gives.
fn column<A: Array + 'static>(batch: &RecordBatch, i: usize) -> Result<&A, StoreError> {
    let column = batch.column(i);
    column.as_any().downcast_ref::<A>().ok_or_else(|| {
        StoreError::Thread(format!(
            "hash the plan: column {i} came as {}",
            column.data_type()
        ))
    })
}

/// The value at `row`, or `None` where it is NULL.
fn value<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>, row: usize) -> Option<T::Native> {
    (!array.is_null(row)).then(|| array.value(row))
}
