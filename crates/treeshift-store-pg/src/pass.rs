//! Delta passes on PostgreSQL, as in the DuckDB store: once the copy of a
//! plan has finished, a new discovery starts the next pass. The finished
//! pass is summarised in `passes`, the source tree it saw is kept as
//! `previous_src_nodes` (the node table itself, renamed: no row is
//! copied), and discovery's tables start empty. When the new walk of the
//! source is done, `src_changes` records what changed since.

use crate::PgStore;
use crate::compare::facts;
use crate::error::Context;
use crate::seal::SEAL_LOCK;
use crate::settings::record_phase;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Transaction};
use treeshift_core::{Changes, Phase, source_change};
use treeshift_state::StoreError;

/// Tables of one pass, emptied when the next starts (besides
/// `src_nodes`, which becomes the previous pass's).
const PASS_SCOPED: &str = "dst_nodes, src_status_events, dst_status_events, src_stats, \
    dst_stats, rounds, src_leases, dst_leases, copy_plan, copy_todo, folder_dates, verify_todo, \
    src_changes";

/// Rows of changed nodes read at a time when the changes are recorded.
const CHANGES_PER_PAGE: i32 = 10_000;

/// The current pass (1 for the first discovery).
pub(crate) fn read_pass(client: &mut impl GenericClient) -> Result<u32, StoreError> {
    let pass: Option<String> = client
        .query_opt("SELECT value FROM meta WHERE key = 'pass'", &[])
        .context("read the pass")?
        .map(|r| r.get(0));
    Ok(pass.and_then(|p| p.parse().ok()).unwrap_or(1).max(1))
}

/// Counts of `src_changes` by kind of change.
pub(crate) fn read_changes(client: &mut impl GenericClient) -> Result<Changes, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE change = 'new'), \
                    count(*) FILTER (WHERE change = 'modified'), \
                    count(*) FILTER (WHERE change = 'deleted') FROM src_changes",
            &[],
        )
        .context("count the changes")?;
    let count = |i| row.get::<_, i64>(i).max(0) as u64;
    Ok(Changes {
        new: count(0),
        modified: count(1),
        deleted: count(2),
    })
}

impl PgStore {
    /// Starts the next pass if this one is over: discovered, approved,
    /// and its copy finished. Returns the new pass's number, or `None`
    /// while the current pass goes on (a discovery then resumes it).
    /// Waits, a minute at most, for processes still ending their part of
    /// the copy; refused while one verifies.
    pub fn next_pass(&self) -> Result<Option<u32>, StoreError> {
        if !self.copy_finished()? {
            return Ok(None);
        }
        let progress = self.progress()?;
        if !(progress.src_done && progress.dst_done) {
            return Ok(None);
        }
        // No process copies or verifies while the pass ends.
        self.hold_verify_lock()?;
        let started = self.start_next_pass();
        self.release_copy_lock();
        started
    }

    fn start_next_pass(&self) -> Result<Option<u32>, StoreError> {
        let json = |v: serde_json::Result<String>| {
            v.map_err(|e| StoreError::Thread(format!("summarise the pass: {e}")))
        };
        let Some(approval) = self.approval()? else {
            // Another process started the next pass meanwhile.
            return Ok(None);
        };
        let discovery = json(serde_json::to_string(&self.summary()?))?;
        let copy = json(serde_json::to_string(&self.copy_summary()?))?;
        let verify = match self.verify_summary()? {
            Some(v) => Some(json(serde_json::to_string(&v))?),
            None => None,
        };
        let approval_json = json(serde_json::to_string(&approval))?;
        self.run(|client| {
            let mut tx = client.transaction().context("begin the next pass")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
                .context("wait for another process sealing")?;
            let pass = read_pass(&mut tx)?;
            let still: bool = tx
                .query_one(
                    "SELECT approval IS NOT NULL FROM migrations WHERE id = 1",
                    &[],
                )
                .context("read the approval")?
                .get(0);
            if pass != approval.pass || !still {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO passes VALUES ($1, now(), $2, $3, $4, $5)",
                &[&(pass as i32), &discovery, &approval_json, &copy, &verify],
            )
            .context("record the finished pass")?;
            keep_source_tree(&mut tx)?;
            tx.batch_execute(&format!("TRUNCATE {PASS_SCOPED}"))
                .context("empty the pass's tables")?;
            tx.execute(
                "DELETE FROM meta WHERE key IN ('src_done', 'dst_done', 'pass', 'verify_checksum')",
                &[],
            )
            .context("reset the pass's marks")?;
            tx.execute(
                "INSERT INTO meta VALUES ('pass', $1)",
                &[&(pass + 1).to_string()],
            )
            .context("record the pass")?;
            tx.execute("UPDATE migrations SET approval = NULL WHERE id = 1", &[])
                .context("clear the approval")?;
            record_phase(&mut tx, Phase::Created)?;
            tx.commit().context("start the next pass")?;
            Ok(Some(pass + 1))
        })
    }
}

/// Keeps the source tree of the pass that ended as the previous pass's
/// (the table renamed, with its indexes) and makes `src_nodes` anew.
fn keep_source_tree(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute(
        "DROP TABLE previous_src_nodes; ALTER TABLE src_nodes RENAME TO previous_src_nodes;",
    )
    .context("keep the source tree")?;
    let indexes = tx
        .query(
            "SELECT indexname FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 'previous_src_nodes'",
            &[],
        )
        .context("read the indexes of the source tree")?;
    for row in &indexes {
        let name: String = row.get(0);
        tx.batch_execute(&format!(
            "ALTER INDEX \"{name}\" RENAME TO \"previous_{name}\""
        ))
        .context("keep the indexes of the source tree")?;
    }
    tx.batch_execute("CREATE TABLE src_nodes (LIKE previous_src_nodes INCLUDING ALL)")
        .context("make the source tree's table anew")?;
    Ok(())
}

/// Records what changed on the source since the previous pass, once the
/// source's walk is done (inside the seal that says so): new and
/// modified nodes one by one, by [`source_change`]; a deleted subtree
/// once, at its top (a node gone from a folder listed in this pass), so a
/// folder that could not be listed never makes its contents look
/// deleted. Nothing in the first pass.
pub(crate) fn record_changes(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("DELETE FROM src_changes", &[])
        .context("forget the changes")?;
    if read_pass(tx)? == 1 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO src_changes \
         SELECT n.rel_path, n.depth, 'new', n.kind, n.size, n.mtime_ns, NULL \
         FROM src_nodes n LEFT JOIN previous_src_nodes p ON p.depth = n.depth AND p.rel_path = n.rel_path \
         WHERE n.depth > 0 AND p.id IS NULL",
        &[],
    )
    .context("record the new nodes")?;
    record_modified(tx)?;
    tx.execute(
        "INSERT INTO src_changes \
         SELECT p.rel_path, p.depth, 'deleted', p.kind, p.size, p.mtime_ns, NULL \
         FROM previous_src_nodes p JOIN previous_src_nodes pp ON pp.id = p.parent_id \
         JOIN src_nodes parent ON parent.depth = p.depth - 1 AND parent.rel_path = pp.rel_path \
         LEFT JOIN src_nodes n ON n.depth = p.depth AND n.rel_path = p.rel_path \
         WHERE n.id IS NULL AND EXISTS (SELECT 1 FROM src_status_events e \
           WHERE e.node_id = parent.id AND e.phase = 'list' AND e.status = 'listed')",
        &[],
    )
    .context("record the deleted nodes")?;
    Ok(())
}

/// The nodes of both passes that may differ (anything recorded not the
/// same) are read a page at a time; [`source_change`] says which changed
/// and why, and those are appended in one binary COPY per page.
fn record_modified(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    const FACTS: &str = "kind, size, mtime_ns, mode, uid, gid, xattrs";
    let both = |alias: &str| {
        FACTS
            .split(", ")
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let query = format!(
        "SELECT n.rel_path, n.depth, {now}, {before} \
         FROM src_nodes n JOIN previous_src_nodes p ON p.depth = n.depth AND p.rel_path = n.rel_path \
         WHERE n.depth > 0 AND ({now_m}) IS DISTINCT FROM ({before_m})",
        now = both("n"),
        before = both("p"),
        now_m = both("n").replace("n.mtime_ns", "mtime_s(n.mtime_ns)"),
        before_m = both("p").replace("p.mtime_ns", "mtime_s(p.mtime_ns)"),
    );
    let portal = tx
        .bind(query.as_str(), &[])
        .context("compare the source with the previous pass's")?;
    loop {
        let rows = tx
            .query_portal(&portal, CHANGES_PER_PAGE)
            .context("read the source's changes")?;
        if rows.is_empty() {
            return Ok(());
        }
        let modified: Vec<_> = rows
            .iter()
            .filter_map(|r| {
                let (now, before) = (facts(r, 2), facts(r, 9));
                let (_, reason) = source_change(Some(&before), &now)?;
                Some((r, now, reason))
            })
            .collect();
        if modified.is_empty() {
            continue;
        }
        let sink = tx
            .copy_in(
                "COPY src_changes (rel_path, depth, change, kind, size, mtime_ns, reason) \
                 FROM STDIN BINARY",
            )
            .context("record the modified nodes")?;
        let types = [
            Type::BYTEA,
            Type::INT4,
            Type::TEXT,
            Type::INT2,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
        ];
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        for (row, now, reason) in &modified {
            let (path, depth): (&[u8], i32) = (row.get(0), row.get(1));
            let (kind, size): (i16, i64) = (now.kind.code() as i16, now.size as i64);
            let values: [&(dyn ToSql + Sync); 7] = [
                &path,
                &depth,
                &"modified",
                &kind,
                &size,
                &now.mtime_ns,
                reason,
            ];
            writer.write(&values).context("record a modified node")?;
        }
        writer.finish().context("record the modified nodes")?;
    }
}
