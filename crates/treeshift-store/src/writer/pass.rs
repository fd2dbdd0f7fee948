//! Delta passes. Once the copy of a plan has finished, a new discovery on the
//! same state file starts the next pass: the finished pass is summarised in
//! `passes`, the source tree it saw is kept as `previous_src_nodes` (the
//! node table itself, renamed: nothing is copied), and the discovery tables
//! start empty. When the new walk of the source is done,
//! `src_changes` records what changed since the previous pass (new,
//! modified, deleted); the new plan is reviewed and approved like the first.

use super::browse::BROWSE_SCOPED;
use super::{Db, Writer, now_value};
use crate::StoreError;
use crate::schema::FOLDER;
use duckdb::{Connection, params};
use treeshift_core::{Changes, Phase};

/// Tables of delta passes. Created on open when missing, so state files
/// written before passes existed gain them without a new schema version.
pub(crate) const PASS_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS passes (
    pass INTEGER NOT NULL, finished_at TIMESTAMP NOT NULL, discovery VARCHAR NOT NULL,
    approval VARCHAR, copy VARCHAR, verify VARCHAR
);
CREATE TABLE IF NOT EXISTS src_changes (
    rel_path BLOB NOT NULL, depth INTEGER NOT NULL, change VARCHAR NOT NULL,
    kind UTINYINT NOT NULL, size UBIGINT NOT NULL, mtime_ns BIGINT, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS written (
    depth INTEGER NOT NULL, rel_path BLOB NOT NULL, size UBIGINT NOT NULL, mtime_ns BIGINT,
    etag VARCHAR, own_mtime_ns BIGINT, seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS list_positions (
    side VARCHAR NOT NULL, node_id BIGINT NOT NULL, after BLOB NOT NULL, seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS written_new (
    node_id BIGINT NOT NULL, etag VARCHAR, own_mtime_ns BIGINT, seq BIGINT NOT NULL
);
"#;

/// Where the previous pass's source tree is kept.
const PREVIOUS_SRC: &str = "previous_src_nodes";

/// Discovery's own tables besides `src_nodes`: made anew when a new pass
/// starts.
const PASS_SCOPED: [&str; 9] = [
    "dst_nodes",
    "src_status_events",
    "dst_status_events",
    "src_stats",
    "dst_stats",
    "rounds",
    "copy_plan",
    "src_changes",
    "list_positions",
];

impl Db {
    /// The current pass (1 for the first discovery).
    pub(crate) fn pass(&self) -> Result<u32, StoreError> {
        Ok(self
            .query_i64("SELECT coalesce(max(value::INTEGER), 1) FROM meta WHERE key = 'pass'")?
            .max(1) as u32)
    }

    /// Counts of `src_changes` by kind of change.
    pub(crate) fn changes(&self) -> Result<Changes, StoreError> {
        let count = |change: &str| {
            self.query_i64(&format!(
                "SELECT count(*) FROM src_changes WHERE change = '{change}'"
            ))
            .map(|n| n.max(0) as u64)
        };
        Ok(Changes {
            new: count("new")?,
            modified: count("modified")?,
            deleted: count("deleted")?,
        })
    }
}

impl Writer {
    /// Starts the next pass if this one is over: discovered, approved, and
    /// its copy finished (nothing pending or in flight). Returns the new
    /// pass number, or `None` when the current pass is still going (a
    /// discovery then resumes it).
    pub(crate) fn next_pass(&mut self) -> Result<Option<u32>, StoreError> {
        self.flush()?;
        let progress = self.progress()?;
        if !(progress.src_done && progress.dst_done) {
            return Ok(None);
        }
        let Some(approval) = self.approval()? else {
            return Ok(None);
        };
        let copy = self.copy_summary()?;
        if !copy.is_finished() {
            return Ok(None);
        }
        let json = |v: serde_json::Result<String>| v.map_err(|e| StoreError::Thread(e.to_string()));
        let discovery = json(serde_json::to_string(&self.summary()?))?;
        let approval = json(serde_json::to_string(&approval))?;
        let copy = json(serde_json::to_string(&copy))?;
        let verify = match self.verify_summary()? {
            Some(v) => Some(json(serde_json::to_string(&v))?),
            None => None,
        };
        let pass = self.pass()?;
        self.flush()?;
        let started = std::time::Instant::now();
        self.in_transaction("start the next pass", |conn| {
            conn.execute(
                "INSERT INTO passes VALUES (?, ?, ?, ?, ?, ?)",
                params![pass, now_value(), discovery, approval, copy, verify],
            )?;
            // Tables are dropped (or renamed) and made anew, not emptied row
            // by row: no rows are copied, and the checkpoint frees whole
            // blocks instead of compacting deleted rows.
            let ddl = |table: &str| -> Result<String, duckdb::Error> {
                conn.query_row(
                    "SELECT sql FROM duckdb_tables() WHERE table_name = ? AND NOT temporary",
                    params![table],
                    |r| r.get(0),
                )
            };
            let src_nodes = ddl("src_nodes")?;
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS {PREVIOUS_SRC}; \
                 ALTER TABLE src_nodes RENAME TO {PREVIOUS_SRC}; {src_nodes}"
            ))?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "pass: kept the source tree"
            );
            for table in PASS_SCOPED.into_iter().chain(BROWSE_SCOPED) {
                let sql = ddl(table)?;
                conn.execute_batch(&format!("DROP TABLE {table}; {sql}"))?;
            }
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "pass: emptied the tables"
            );
            conn.execute(
                "DELETE FROM meta WHERE key IN ('src_done', 'dst_done', 'pass')",
                [],
            )?;
            conn.execute(
                "INSERT INTO meta VALUES ('pass', ?)",
                params![(pass + 1).to_string()],
            )?;
            conn.execute(
                "UPDATE migrations SET approval = NULL, phase = ?, updated_at = now() WHERE id = 1",
                params![Phase::Created.as_str()],
            )?;
            Ok(())
        })?;
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "pass: committed");
        Ok(Some(pass + 1))
    }
}

/// Records what changed on the source since the previous pass, once the
/// source's walk is done (inside the seal that says so). New and modified
/// nodes are listed one by one; a deleted subtree once, at its top (a node
/// gone from a folder that was listed in this pass), so a folder that could
/// not be listed never makes its contents look deleted. Folder mtimes are
/// not compared: they change whenever their children do. A changed mode,
/// owner or set of extended attributes is a modification too.
pub(crate) fn record_changes(conn: &Connection) -> Result<(), duckdb::Error> {
    conn.execute("DELETE FROM src_changes", [])?;
    let previous: i64 = conn.query_row(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary",
        params![PREVIOUS_SRC],
        |r| r.get(0),
    )?;
    if previous == 0 {
        return Ok(());
    }
    conn.execute(
        &format!(
            "INSERT INTO src_changes \
             SELECT n.rel_path, n.depth, CASE WHEN p.rel_path IS NULL THEN 'new' ELSE 'modified' END, \
               n.kind, n.size, n.mtime_ns, \
               CASE WHEN p.rel_path IS NULL THEN NULL \
                    WHEN p.kind <> n.kind THEN kind_name(p.kind) || ' before, ' || kind_name(n.kind) || ' now' \
                    WHEN n.kind <> {FOLDER} AND p.size <> n.size THEN \
                         'size ' || p.size::VARCHAR || ' before, ' || n.size::VARCHAR || ' now' \
                    WHEN n.kind <> {FOLDER} AND mtime_s(p.mtime_ns) IS DISTINCT FROM mtime_s(n.mtime_ns) THEN \
                         'mtime ' || coalesce(mtime_s(p.mtime_ns)::VARCHAR, '?') || ' before, ' \
                         || coalesce(mtime_s(n.mtime_ns)::VARCHAR, '?') || ' now' \
                    ELSE 'metadata: ' || concat_ws('; ', \
                         CASE WHEN p.mode <> n.mode THEN 'mode ' || mode_text(p.mode) || ' before, ' || mode_text(n.mode) || ' now' END, \
                         CASE WHEN p.uid <> n.uid OR p.gid <> n.gid THEN \
                              'owner ' || owner_text(p.uid, p.gid) || ' before, ' || owner_text(n.uid, n.gid) || ' now' END, \
                         CASE WHEN p.xattrs <> n.xattrs THEN 'extended attributes or ACLs' END) END \
             FROM src_nodes n LEFT JOIN {PREVIOUS_SRC} p ON p.depth = n.depth AND p.rel_path = n.rel_path \
             WHERE n.depth > 0 AND (p.rel_path IS NULL OR p.kind <> n.kind \
               OR (n.kind <> {FOLDER} AND (p.size <> n.size \
                   OR mtime_s(p.mtime_ns) IS DISTINCT FROM mtime_s(n.mtime_ns))) \
               OR coalesce(p.mode <> n.mode, false) OR coalesce(p.uid <> n.uid, false) \
               OR coalesce(p.gid <> n.gid, false) OR coalesce(p.xattrs <> n.xattrs, false))"
        ),
        [],
    )?;
    conn.execute(
        &format!(
            "INSERT INTO src_changes \
             SELECT p.rel_path, p.depth, 'deleted', p.kind, p.size, p.mtime_ns, NULL \
             FROM {PREVIOUS_SRC} p JOIN {PREVIOUS_SRC} pp ON pp.id = p.parent_id \
             JOIN src_nodes parent ON parent.depth = p.depth - 1 AND parent.rel_path = pp.rel_path \
             LEFT JOIN src_nodes n ON n.depth = p.depth AND n.rel_path = p.rel_path \
             WHERE n.rel_path IS NULL AND parent.id IN \
               (SELECT node_id FROM src_status_events WHERE phase = 'list' AND status = 'listed')"
        ),
        [],
    )?;
    Ok(())
}
