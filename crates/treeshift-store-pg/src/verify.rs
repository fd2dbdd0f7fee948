//! Verification on PostgreSQL: every copied item (`verify_todo`, made
//! anew by each run), pulled by keyset, its outcome appended as a `verify`
//! event. The process that verifies holds the copy lock alone.

use crate::PgStore;
use crate::copy::{LATEST_COPY, kind_of, meta_at};
use crate::error::Context;
use crate::events::{Event, append_events};
use treeshift_core::{RelPath, Side, VerifySummary};
use treeshift_state::plan_sql::to_verify;
use treeshift_state::{StoreError, VerifyEvent, VerifyTask};

/// Held by the transaction that makes `verify_todo` anew: a verifying
/// process killed meanwhile loses the copy lock at once (that connection
/// sat idle), but its statement goes on in the database until it ends, and
/// the next verifier's waits for it instead of filling the table beside
/// it.
const VERIFY_TODO_LOCK: i64 = 7365736;

/// The latest verify status and reason of each item.
pub(crate) const LATEST_VERIFY: &str = "SELECT DISTINCT ON (node_id) node_id, status AS st, reason \
     FROM src_status_events WHERE phase = 'verify' ORDER BY node_id, seq DESC";

/// The latest record of what was written at each path, among those
/// `filter` keeps, as `w`.
fn latest_written(filter: &str) -> String {
    format!(
        "(SELECT DISTINCT ON (rel_path) rel_path, size, mtime_ns, etag, own_mtime_ns FROM written \
          WHERE {filter} ORDER BY rel_path, seq DESC) w"
    )
}

impl PgStore {
    /// Prepares a verification of every copied item (with a checksum of
    /// the data if `checksum`); returns how many.
    pub fn begin_verify(&self, checksum: bool) -> Result<u64, StoreError> {
        self.hold_verify_lock()?;
        self.run(|client| {
            let mut tx = client.transaction().context("begin a verification")?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&VERIFY_TODO_LOCK])
                .context("wait for a verification that stopped")?;
            tx.execute(
                "INSERT INTO meta VALUES ('verify_checksum', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&checksum.to_string()],
            )
            .context("record the verify mode")?;
            tx.batch_execute(&format!(
                "DELETE FROM verify_todo; INSERT INTO verify_todo {}",
                to_verify(LATEST_COPY, &latest_written("own_mtime_ns IS NOT NULL"))
            ))
            .context("prepare the verification")?;
            let items: i64 = tx
                .query_one("SELECT count(*) FROM verify_todo", &[])
                .context("count the verification")?
                .get(0);
            tx.commit().context("prepare the verification")?;
            Ok(items.max(0) as u64)
        })
    }

    /// Up to `limit` items to verify with ids above `after`.
    pub fn pull_verify(&self, after: i64, limit: usize) -> Result<Vec<VerifyTask>, StoreError> {
        self.hold_copy_lock(true)?;
        let rows = self.run(|client| {
            client
                .query(
                    "SELECT node_id, depth, kind, rel_path, size, mtime_ns, mode, uid, gid, xattrs, \
                       link_to FROM verify_todo WHERE node_id > $1 ORDER BY node_id LIMIT $2",
                    &[&after, &(limit as i64)],
                )
                .context("pull verify tasks")
        })?;
        Ok(rows
            .iter()
            .map(|r| VerifyTask {
                id: r.get(0),
                depth: r.get::<_, i32>(1).max(0) as u32,
                kind: kind_of(r.get(2)),
                path: RelPath::from_bytes(r.get(3)),
                size: r.get::<_, i64>(4).max(0) as u64,
                mtime_ns: r.get(5),
                meta: meta_at(r, 6),
                link_to: r.get::<_, Option<Vec<u8>>>(10).map(RelPath::from_bytes),
            })
            .collect())
    }

    /// Records verification outcomes.
    pub fn record_verify(&self, events: &[VerifyEvent]) -> Result<(), StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().context("record verifications")?;
            append_events(
                &mut tx,
                Side::Src,
                "verify",
                events.iter().map(|e| Event {
                    node_id: e.id,
                    depth: e.depth as i32,
                    status: e.status.as_str(),
                    reason: e.reason.as_deref(),
                    attempt: 1,
                }),
            )?;
            tx.commit().context("record verifications")
        })
    }

    /// The last verification's results, if one ran.
    pub fn verify_summary(&self) -> Result<Option<VerifySummary>, StoreError> {
        self.run(|client| {
            let checksum: Option<String> = client
                .query_opt("SELECT value FROM meta WHERE key = 'verify_checksum'", &[])
                .context("read the verify mode")?
                .map(|r| r.get(0));
            let Some(checksum) = checksum else {
                return Ok(None);
            };
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), count(*) FILTER (WHERE v.st = 'verified'), \
                           count(*) FILTER (WHERE v.st = 'mismatch'), \
                           count(*) FILTER (WHERE v.st = 'failed') \
                         FROM ({LATEST_COPY}) c JOIN ({LATEST_VERIFY}) v ON v.node_id = c.node_id \
                         WHERE c.st = 'copied'"
                    ),
                    &[],
                )
                .context("summarise the verification")?;
            let n = |i| row.get::<_, i64>(i).max(0) as u64;
            Ok(Some(VerifySummary {
                checked: n(0),
                verified: n(1),
                mismatch: n(2),
                failed: n(3),
                checksum: checksum == "true",
            }))
        })
    }
}
