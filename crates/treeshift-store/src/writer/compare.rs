//! Comparison at a destination round's seal: every source node of the
//! depth against the destination node of its path, in set-based
//! statements.

use super::*;
use treeshift_state::plan_sql::expected_mtime;

impl Writer {
    /// Compares the children of the folder pairs at `depth` (depth + 1
    /// nodes), appending one `compare` event per node, in set-based
    /// statements on slices of the children (see [`id_slices`]), each
    /// joined only with what can pair with it, and each committed on its
    /// own. So a round of ten million nodes needs no more memory than one
    /// of a few hundred thousand: as one statement in one transaction, a
    /// 10M-node tree's last seal ran out of the store's memory limit twice,
    /// and what it inserted piled up uncommitted (BENCHMARKS.md). A seal
    /// run again after a crash skips what a committed slice classified.
    /// Returns the slices of each side's nodes at depth + 1, which the
    /// seal's statistics count by.
    pub(super) fn compare_round(&mut self, depth: u32) -> Result<[Slices; 2], StoreError> {
        let (n, n1) = (depth, depth + 1);
        // Each src folder at this depth whose children are compared with
        // the dst folder of the same path (if that one was listed), or all
        // marked missing (the folder itself is missing, or is a file on
        // dst). Only folders' events are read: the files of the depth can
        // be millions. A temp table: no transaction needed.
        let parents = format!(
            "CREATE OR REPLACE TEMP TABLE seal_parents AS \
             SELECT * FROM ( \
               WITH sf AS (SELECT id, rel_path FROM src_nodes WHERE depth = {n} AND kind = {FOLDER}), \
                    df AS (SELECT id, rel_path FROM dst_nodes WHERE depth = {n} AND kind = {FOLDER}), \
                    cs AS (SELECT node_id, arg_max(status, seq) AS st FROM src_status_events \
                           WHERE depth = {n} AND phase = 'compare' AND node_id IN (SELECT id FROM sf) \
                           GROUP BY node_id), \
                    dl AS (SELECT node_id, arg_max(status, seq) AS st FROM dst_status_events \
                           WHERE depth = {n} AND phase = 'list' GROUP BY node_id) \
               SELECT s.id AS src_id, d.id AS dst_id, \
                 CASE WHEN cs.st IN ('missing', 'conflict') THEN 'missing' \
                      WHEN cs.st IN {IN_STEP} AND dl.st = 'listed' THEN 'compare' \
                      ELSE 'skip' END AS mode \
               FROM sf s JOIN cs ON cs.node_id = s.id \
               LEFT JOIN df d ON d.rel_path = s.rel_path \
               LEFT JOIN dl ON dl.node_id = d.id) \
             WHERE mode <> 'skip'"
        );
        let what = "compare a round";
        let slice = self.seal_slice;
        self.outside_transaction("compare a round: pair its folders", |conn| {
            conn.execute_batch(&parents)
        })?;
        let (verdict, modes, src_slices) = self.outside_transaction(what, |conn| {
            Ok((
                Comparison::at(conn, n1)?,
                ParentModes::of(conn)?,
                id_slices(conn, Side::Src, n1, slice)?,
            ))
        })?;
        for &ids in &src_slices {
            let (base, started) = (self.next_seq, Instant::now());
            self.next_seq += self.in_transaction("compare a slice of a round", |conn| {
                let mut appended = 0;
                if modes.missing {
                    appended += mark_missing_slice(conn, n1, ids, base)?;
                }
                if modes.compare {
                    appended += compare_src_slice(conn, n1, ids, &verdict, base + appended)?;
                }
                Ok(appended)
            })?;
            tracing::debug!(
                ?ids,
                ms = started.elapsed().as_millis() as u64,
                "seal: slice compared"
            );
        }
        let (any_excluded, dst_slices) = self.outside_transaction(what, |conn| {
            let any_excluded = exists(
                conn,
                &format!(
                    "SELECT 1 FROM src_status_events \
                     WHERE depth = {n1} AND phase = 'compare' AND status = 'excluded'"
                ),
            )?;
            Ok((any_excluded, id_slices(conn, Side::Dst, n1, slice)?))
        })?;
        for &ids in &dst_slices {
            let (base, started) = (self.next_seq, Instant::now());
            self.next_seq += self
                .in_transaction("classify a slice of a round's extras", |conn| {
                    classify_dst_slice(conn, n1, ids, any_excluded, base)
                })?;
            tracing::debug!(
                ?ids,
                ms = started.elapsed().as_millis() as u64,
                "seal: slice classified"
            );
        }
        tracing::debug!(
            src_slices = src_slices.len(),
            dst_slices = dst_slices.len(),
            "seal: compared in slices"
        );
        self.outside_transaction(what, |conn| conn.execute_batch("DROP TABLE seal_parents"))?;
        Ok([src_slices, dst_slices])
    }
}

/// Ranges of node ids, `(first, last)`, each a slice of a seal.
pub(super) type Slices = Vec<(i64, i64)>;

/// Splits the ids of `side`'s nodes at `depth` into ranges of about
/// `slice` nodes each, as `(first, last)`; none when there are no
/// nodes. Ids are given out in order as listings arrive, the two sides'
/// interleaved, so equal ranges of ids hold about equal numbers of one
/// side's nodes; and a side's rows are appended in id order, so DuckDB's
/// zone maps skip the rest of the table when a statement asks for one
/// range.
pub(super) fn id_slices(
    conn: &Connection,
    side: Side,
    depth: u32,
    slice: i64,
) -> Result<Slices, duckdb::Error> {
    let (first, last, count): (Option<i64>, Option<i64>, i64) = conn.query_row(
        &format!("SELECT min(id), max(id), count(*) FROM {side}_nodes WHERE depth = {depth}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let slices = (count + slice - 1) / slice;
    let width = (last - first + slices) / slices;
    Ok((0..slices)
        .map(|i| (first + i * width, (first + (i + 1) * width - 1).min(last)))
        .filter(|(lo, hi)| lo <= hi)
        .collect())
}

/// A condition on `side`'s node `alias`: it is at depth `n1`, in the
/// slice of ids `(lo, hi)`, and has no comparison yet (nodes left out at
/// listing have theirs; a seal run again after a crash skips what a
/// committed slice classified).
fn uncompared(side: Side, alias: &str, n1: u32, (lo, hi): (i64, i64)) -> String {
    format!(
        "{alias}.depth = {n1} AND {alias}.id BETWEEN {lo} AND {hi} AND {alias}.id NOT IN \
           (SELECT node_id FROM {side}_status_events \
            WHERE depth = {n1} AND phase = 'compare' AND node_id BETWEEN {lo} AND {hi})"
    )
}

/// Which kinds of parents a seal has (`seal_parents.mode`): each kind's
/// statement runs only where there are some. A destination that is empty,
/// or missing, has only missing parents below its first round, and their
/// children need no comparison, so no statement that plans one.
struct ParentModes {
    missing: bool,
    compare: bool,
}

impl ParentModes {
    fn of(conn: &Connection) -> Result<ParentModes, duckdb::Error> {
        conn.query_row(
            "SELECT count(*) FILTER (WHERE mode = 'missing') > 0, \
                    count(*) FILTER (WHERE mode = 'compare') > 0 FROM seal_parents",
            [],
            |r| {
                Ok(ParentModes {
                    missing: r.get(0)?,
                    compare: r.get(1)?,
                })
            },
        )
    }
}

/// Marks the source children with ids in `ids` at depth `n1` whose parent
/// is missing on the destination (or is a file there) as missing, each
/// not yet classified: they have no destination node to pair with.
/// Returns the events appended.
fn mark_missing_slice(
    conn: &Connection,
    n1: u32,
    ids: (i64, i64),
    base: i64,
) -> Result<i64, duckdb::Error> {
    let appended = conn.execute(
        &format!(
            "INSERT INTO src_status_events \
             SELECT {base} - 1 + row_number() OVER (), c.id, {n1}, 'compare', 'missing', \
                    'parent folder missing on dst', 1, now() \
             FROM src_nodes c \
             WHERE {uncompared} \
               AND c.parent_id IN (SELECT src_id FROM seal_parents WHERE mode = 'missing')",
            uncompared = uncompared(Side::Src, "c", n1, ids),
        ),
        [],
    )?;
    Ok(appended as i64)
}

/// Compares the source children with ids in `ids` at depth `n1` whose
/// parent is compared in `seal_parents`, each with the destination node
/// of its path: one event per child not yet classified (at listing, by the
/// filter or its name), and the same event for the destination node it
/// pairs with (a pair shares its comparison). Returns the events
/// appended.
fn compare_src_slice(
    conn: &Connection,
    n1: u32,
    (lo, hi): (i64, i64),
    verdict: &Comparison,
    base: i64,
) -> Result<i64, duckdb::Error> {
    // The parents of this slice's children, and their paths: the joins
    // below read only what lies under them, so each slice costs what its
    // own nodes do, not what the whole depth does.
    let parents = format!(
        "(SELECT parent_id FROM src_nodes WHERE depth = {n1} AND id BETWEEN {lo} AND {hi})"
    );
    let n = n1 - 1;
    let pv_join = if verdict.previous.is_empty() {
        String::new()
    } else {
        // The previous pass's nodes under the folders of these parents'
        // paths (its ids are its own).
        format!(
            "LEFT JOIN (SELECT * FROM previous_src_nodes pv WHERE pv.depth = {n1} AND pv.parent_id IN \
                          (SELECT q.id FROM previous_src_nodes q WHERE q.depth = {n} AND q.rel_path IN \
                             (SELECT s.rel_path FROM src_nodes s WHERE s.depth = {n} AND s.id IN {parents}))) pv \
               ON pv.rel_path = c.rel_path"
        )
    };
    let w_join = if verdict.written {
        format!(
            "LEFT JOIN {latest} ON w.rel_path = c.rel_path",
            latest = latest_written(&format!(
                "depth = {n1} AND rel_path IN \
                 (SELECT rel_path FROM src_nodes WHERE depth = {n1} AND id BETWEEN {lo} AND {hi})"
            ))
        )
    } else {
        String::new()
    };
    let (status, reason) = (verdict.status(), verdict.reason());
    // The dst join is a plain equi-join on the path, so DuckDB hashes it;
    // a condition on the parent's mode there would turn it into a nested
    // loop. It reads only the dst children under the folders the parents
    // pair with (a dst child of the same path is under the folder of the
    // parent's path, which is the parent's pair): a semi-join, whose ids
    // DuckDB also uses to skip row groups.
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE seal_slice AS \
         SELECT c.id AS src_id, d.id AS dst_id, \
           CASE WHEN d.id IS NULL THEN 'missing' ELSE {status} END AS status, \
           CASE WHEN d.id IS NULL THEN NULL ELSE {reason} END AS reason \
         FROM src_nodes c \
         JOIN seal_parents p ON p.src_id = c.parent_id AND p.mode = 'compare' \
         LEFT JOIN (SELECT * FROM dst_nodes d WHERE d.depth = {n1} AND d.parent_id IN \
                      (SELECT p.dst_id FROM seal_parents p WHERE p.src_id IN {parents})) d \
           ON d.rel_path = c.rel_path {pv_join} {w_join} \
         WHERE {uncompared}",
        uncompared = uncompared(Side::Src, "c", n1, (lo, hi)),
    ))?;
    let src_events = conn.execute(
        &format!(
            "INSERT INTO src_status_events \
             SELECT {base} - 1 + row_number() OVER (), src_id, {n1}, 'compare', status, reason, 1, now() \
             FROM seal_slice"
        ),
        [],
    )? as i64;
    let base = base + src_events;
    let dst_events = conn.execute(
        &format!(
            "INSERT INTO dst_status_events \
             SELECT {base} - 1 + row_number() OVER (), dst_id, {n1}, 'compare', status, reason, 1, now() \
             FROM seal_slice WHERE dst_id IS NOT NULL AND dst_id NOT IN \
               (SELECT node_id FROM dst_status_events WHERE depth = {n1} AND phase = 'compare' \
                AND node_id IN (SELECT dst_id FROM seal_slice))"
        ),
        [],
    )? as i64;
    conn.execute_batch("DROP TABLE seal_slice")?;
    Ok(src_events + dst_events)
}

/// Classifies the destination nodes with ids in `ids` at depth `n1` that
/// no source node paired with: excluded where the source node of the same
/// path was (with its reason), else `extra`. (A source name the
/// destination cannot hold was never compared, so its path is free.)
/// Returns the events appended.
fn classify_dst_slice(
    conn: &Connection,
    n1: u32,
    ids: (i64, i64),
    any_excluded: bool,
    base: i64,
) -> Result<i64, duckdb::Error> {
    // Most depths exclude nothing, and joining the excluded paths then
    // reads every src path at the depth for nothing, so that join is left
    // out unless there is something to find.
    let (excluded_join, status, reason) = if any_excluded {
        (
            format!(
                "LEFT JOIN (SELECT s.rel_path, e.reason FROM src_nodes s \
                   JOIN src_status_events e ON e.node_id = s.id \
                   WHERE s.depth = {n1} AND e.depth = {n1} AND e.phase = 'compare' \
                     AND e.status = 'excluded') ex ON ex.rel_path = d.rel_path"
            ),
            "CASE WHEN ex.rel_path IS NOT NULL THEN 'excluded' ELSE 'extra' END",
            "ex.reason",
        )
    } else {
        (String::new(), "'extra'", "NULL")
    };
    let appended = conn.execute(
        &format!(
            "INSERT INTO dst_status_events \
             SELECT {base} - 1 + row_number() OVER (), d.id, {n1}, 'compare', {status}, {reason}, 1, now() \
             FROM dst_nodes d {excluded_join} WHERE {uncompared}",
            uncompared = uncompared(Side::Dst, "d", n1, ids),
        ),
        [],
    )?;
    Ok(appended as i64)
}

/// Comparison statuses of a folder pair whose contents are compared: the
/// folders agree in kind (their metadata may differ), as a SQL list.
pub(super) const IN_STEP: &str = "('same', 'differs', 'outdated')";

/// Returns true if and only if the file holds the previous pass's source
/// tree (from the second pass on).
pub(super) fn has_previous_pass(conn: &Connection) -> Result<bool, duckdb::Error> {
    exists(
        conn,
        "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() \
         AND schema_name = 'main' AND table_name = 'previous_src_nodes'",
    )
}

/// How a source node `c` compares with the destination node `d` of the
/// same path (both present, so neither is missing), as SQL expressions:
/// the status and its reason. Data first (kind, then size and mtime to
/// the second, for all but folders), then metadata (mode, owners, the
/// digest of the kept extended attributes), each compared only where both
/// sides recorded it. A difference is `outdated` rather than `differs`
/// when the destination still equals the previous pass's source node
/// (`previous` names it; empty in the first pass): the destination is as
/// that pass left it (or was already in step then), so the update is the
/// migration's to make.
///
/// A destination that keeps no mtime of its own (an object store's
/// listing gives the time of the upload) has none recorded: its files
/// compare by size, and by the record of what treeshift wrote there
/// (`written`, joined as `w` when `written` is set): the same etag means
/// the object is what treeshift wrote, from the source's size and mtime
/// then. So a discovery right after a copy finds nothing to do without a
/// request per object, and a source file changed since is still found.
/// A file treeshift did not write compares by content too where both
/// listings gave its MD5 (from one object store to another).
///
/// A source that keeps files' own mtimes apart from its listing's (an
/// object store: the listing gives the upload time, the metadata the
/// file's mtime) gave the destination the file's own: while the source is
/// the version copied (the same size and listed mtime as then), that is
/// the mtime expected on the destination.
pub(super) struct Comparison {
    pub(super) previous: &'static str,
    pub(super) written: bool,
}

impl Comparison {
    /// The comparison of the nodes at depth `n1`: with the previous
    /// pass's source from the second pass on, and with what treeshift
    /// wrote at this depth where the listings cannot tell (a destination
    /// that keeps no mtime of its own: its listing's size and etag are
    /// compared with that; a source that keeps files' own mtimes apart
    /// from its listing's: the destination got the file's own).
    fn at(conn: &Connection, n1: u32) -> Result<Comparison, duckdb::Error> {
        Ok(Comparison {
            previous: if has_previous_pass(conn)? { "pv" } else { "" },
            written: exists(conn, &format!("SELECT 1 FROM written WHERE depth = {n1}"))?,
        })
    }

    fn data_differs(&self) -> String {
        format!(
            "(c.kind <> {FOLDER} AND (c.size <> d.size \
              OR (d.mtime_ns IS NOT NULL AND mtime_s({expected}) IS DISTINCT FROM mtime_s(d.mtime_ns)) \
              OR {unlike} OR {content}))",
            expected = self.expected_mtime(),
            unlike = self.unlike_written(),
            content = self.content_unlike(),
        )
    }

    /// A file treeshift did not write whose content differs, where both
    /// listings gave its MD5.
    fn content_unlike(&self) -> &'static str {
        if self.written {
            "(w.rel_path IS NULL AND coalesce(c.md5 <> d.md5, false))"
        } else {
            "coalesce(c.md5 <> d.md5, false)"
        }
    }

    /// The mtime a file should have on the destination (see above).
    fn expected_mtime(&self) -> String {
        if !self.written {
            return "c.mtime_ns".into();
        }
        expected_mtime("c")
    }

    /// A destination file without an mtime is not what treeshift wrote
    /// from this version of the source.
    fn unlike_written(&self) -> &'static str {
        if !self.written {
            return "false";
        }
        "(d.mtime_ns IS NULL AND c.kind = 1 AND w.rel_path IS NOT NULL \
          AND (w.size <> c.size OR mtime_s(w.mtime_ns) IS DISTINCT FROM mtime_s(c.mtime_ns) \
               OR w.etag IS DISTINCT FROM d.etag))"
    }

    /// A folder's mtime is metadata too: rsync -a keeps it, and a copy
    /// restores it after writing into the folder.
    fn meta_differs() -> String {
        format!(
            "(coalesce(c.mode <> d.mode, false) OR coalesce(c.uid <> d.uid, false) \
              OR coalesce(c.gid <> d.gid, false) OR coalesce(c.xattrs <> d.xattrs, false) \
              OR (c.kind = {FOLDER} AND coalesce(mtime_s(c.mtime_ns) <> mtime_s(d.mtime_ns), false)))"
        )
    }

    /// The destination equals the previous pass's source node, or is the
    /// very object treeshift wrote there (its etag).
    fn owned(&self) -> String {
        let pv = self.previous;
        let previous = if pv.is_empty() {
            "false".to_string()
        } else {
            format!(
                "({pv}.id IS NOT NULL AND {pv}.kind = d.kind AND {pv}.size = d.size \
                  AND mtime_s({pv}.mtime_ns) IS NOT DISTINCT FROM mtime_s(d.mtime_ns) \
                  AND coalesce({pv}.mode = d.mode, true) AND coalesce({pv}.uid = d.uid, true) \
                  AND coalesce({pv}.gid = d.gid, true) AND coalesce({pv}.xattrs = d.xattrs, true))"
            )
        };
        if self.written {
            format!(
                "({previous} OR (w.rel_path IS NOT NULL AND w.etag = d.etag) \
                  OR (w.rel_path IS NOT NULL AND w.size = d.size \
                      AND mtime_s(w.own_mtime_ns) = mtime_s(d.mtime_ns)))"
            )
        } else {
            previous
        }
    }

    pub(super) fn status(&self) -> String {
        format!(
            "CASE WHEN d.kind <> c.kind THEN 'conflict' \
                  WHEN {data} OR {meta} THEN CASE WHEN {owned} THEN 'outdated' ELSE 'differs' END \
                  ELSE 'same' END",
            data = self.data_differs(),
            meta = Self::meta_differs(),
            owned = self.owned(),
        )
    }

    /// A reason that starts with `metadata:` says the data is in step.
    pub(super) fn reason(&self) -> String {
        format!(
            "CASE WHEN d.kind <> c.kind THEN kind_name(c.kind) || ' on src, ' || kind_name(d.kind) || ' on dst' \
                  WHEN c.kind <> {FOLDER} AND c.size <> d.size THEN \
                       'size ' || c.size::VARCHAR || ' on src, ' || d.size::VARCHAR || ' on dst' \
                  WHEN c.kind <> {FOLDER} AND d.mtime_ns IS NOT NULL \
                       AND mtime_s({expected}) IS DISTINCT FROM mtime_s(d.mtime_ns) THEN \
                       'mtime ' || coalesce(mtime_s({expected})::VARCHAR, '?') || ' on src, ' \
                       || coalesce(mtime_s(d.mtime_ns)::VARCHAR, '?') || ' on dst' \
                  {written_reasons} \
                  WHEN {content} THEN 'content MD5 ' || c.md5 || ' on src, ' || d.md5 || ' on dst' \
                  WHEN {meta} THEN 'metadata: ' || concat_ws('; ', \
                       CASE WHEN c.mode <> d.mode THEN \
                            'mode ' || mode_text(c.mode) || ' on src, ' || mode_text(d.mode) || ' on dst' END, \
                       CASE WHEN c.uid <> d.uid OR c.gid <> d.gid THEN \
                            'owner ' || owner_text(c.uid, c.gid) || ' on src, ' || owner_text(d.uid, d.gid) || ' on dst' END, \
                       CASE WHEN c.xattrs <> d.xattrs THEN 'extended attributes or ACLs' END, \
                       CASE WHEN c.kind = {FOLDER} AND mtime_s(c.mtime_ns) <> mtime_s(d.mtime_ns) THEN \
                            'mtime ' || mtime_s(c.mtime_ns)::VARCHAR || ' on src, ' || mtime_s(d.mtime_ns)::VARCHAR || ' on dst' END) \
                  ELSE NULL END",
            meta = Self::meta_differs(),
            expected = self.expected_mtime(),
            content = self.content_unlike(),
            written_reasons = if self.written {
                format!(
                    "WHEN {unlike} AND w.etag IS DISTINCT FROM d.etag THEN \
                          'changed on the destination since treeshift wrote it (etag ' || coalesce(d.etag, '?') || ')' \
                     WHEN {unlike} THEN 'the destination holds what treeshift wrote from an earlier version of the source'",
                    unlike = self.unlike_written()
                )
            } else {
                String::new()
            },
        )
    }
}

/// The latest record of what the copy wrote, per path, among the
/// `written` rows `filter` keeps, as the subquery `w`.
pub(super) fn latest_written(filter: &str) -> String {
    format!(
        "(SELECT rel_path, arg_max(size, seq) AS size, arg_max(mtime_ns, seq) AS mtime_ns, \
                 arg_max(etag, seq) AS etag, arg_max(own_mtime_ns, seq) AS own_mtime_ns \
          FROM written WHERE {filter} GROUP BY rel_path) w"
    )
}

/// For a case-insensitive destination: among source siblings at `depth`
/// whose names differ only in ASCII letter case, keeps the first (by
/// bytes) and excludes the others with the reason, before anything is
/// compared or listed under them. Returns the sequence numbers used.
pub(super) fn exclude_case_clashes(
    conn: &Connection,
    depth: u32,
    base: i64,
) -> Result<i64, duckdb::Error> {
    let excluded = conn.execute(
        &format!(
            "INSERT INTO src_status_events \
             SELECT {base} - 1 + row_number() OVER (), id, {depth}, 'compare', 'excluded', \
                    'dst-case-clash: one name on the destination with ' || keeper::VARCHAR, 1, now() \
             FROM (SELECT id, rel_path, first_value(rel_path) OVER \
                     (PARTITION BY parent_id, lower(rel_path::VARCHAR) ORDER BY rel_path) AS keeper \
                   FROM src_nodes WHERE depth = {depth} AND id NOT IN \
                     (SELECT node_id FROM src_status_events WHERE depth = {depth} AND phase = 'compare')) \
             WHERE rel_path <> keeper"
        ),
        [],
    )?;
    Ok(excluded as i64)
}
