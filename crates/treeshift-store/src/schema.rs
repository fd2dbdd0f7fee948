//! The schema of a state file and its version check.

use treeshift_core::{CopyStatus, ListStatus, Side, Status, VerifyStatus};

/// The schema this build writes and reads. A file with another version is
/// refused with a clear error instead of being misread.
pub const SCHEMA_VERSION: u32 = 5;

/// The phases of status events: a folder's listing, a node's comparison,
/// an item's copy and verification, and a copied folder's dates set.
const EVENT_PHASES: [&str; 5] = ["list", "compare", "copy", "verify", "dated"];

/// Event statuses no enum of `treeshift_core` names: a failed folder put
/// back in the listing queue by a retry sweep, and a folder's dates set.
const OTHER_EVENT_STATUSES: [&str; 2] = ["requeued", "set"];

/// Every status an event can have, each once.
fn event_statuses() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    all.extend(ListStatus::ALL.iter().map(|s| s.as_str()));
    all.extend(CopyStatus::ALL.iter().map(|s| s.as_str()));
    all.extend(VerifyStatus::ALL.iter().map(|s| s.as_str()));
    all.extend(OTHER_EVENT_STATUSES);
    let mut seen = std::collections::HashSet::new();
    all.retain(|s| seen.insert(*s));
    all
}

/// The types of the event tables' `phase` and `status` columns: DuckDB
/// enums, stored as one byte each and read as their names, so a user who
/// opens the file still sees `missing`, not a code. Every seal filters
/// and groups events by phase and status; on a byte that costs the store
/// thread less than on a string (BENCHMARKS.md). A status added later
/// needs a new schema version, which converts these columns.
pub fn event_types() -> String {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "CREATE TYPE event_phase AS ENUM ({}); CREATE TYPE event_status AS ENUM ({});",
        list(&EVENT_PHASES),
        list(&event_statuses())
    )
}

/// Brings a version 3 file to version 4: the event tables' `phase` and
/// `status` columns become the enums of [`event_types`].
pub fn upgrade_from_3() -> Vec<String> {
    let mut statements = vec![event_types()];
    statements.extend(retype_events(["event_phase", "event_status"]));
    statements
}

/// The event tables' `phase` and `status` columns given the types
/// `[phase, status]`.
fn retype_events(types: [&str; 2]) -> Vec<String> {
    Side::BOTH
        .iter()
        .flat_map(|side| {
            ["phase", "status"]
                .iter()
                .zip(types)
                .map(move |(column, ty)| {
                    format!("ALTER TABLE {side}_status_events ALTER COLUMN {column} TYPE {ty}")
                })
        })
        .collect()
}

/// What [`upgrade_from_3`] undoes, for tests that make a file of an
/// earlier schema: statuses as text, and no enum types.
#[cfg(test)]
pub(crate) fn events_as_in_schema_3() -> Vec<String> {
    let mut statements = retype_events(["VARCHAR", "VARCHAR"]);
    statements.push("DROP TYPE event_phase; DROP TYPE event_status".into());
    statements
}

/// Brings a version 2 file to version 3: the metadata columns (mode,
/// owners, a digest of the kept extended attributes, and the identity of
/// files with several names), empty for what was discovered before.
pub const UPGRADE_FROM_2: &[&str] = &[
    "ALTER TABLE {t} ADD COLUMN mode UINTEGER",
    "ALTER TABLE {t} ADD COLUMN uid UINTEGER",
    "ALTER TABLE {t} ADD COLUMN gid UINTEGER",
    "ALTER TABLE {t} ADD COLUMN xattrs UBIGINT",
];

/// What [`UPGRADE_FROM_2`] adds to node tables only.
pub const UPGRADE_NODES_FROM_2: &[&str] = &[
    "ALTER TABLE {t} ADD COLUMN dev UBIGINT",
    "ALTER TABLE {t} ADD COLUMN ino UBIGINT",
    "ALTER TABLE {t} ADD COLUMN etag VARCHAR",
];

/// Brings a version 4 file to version 5: the MD5 a listing gave of each
/// file, empty for what was discovered before (such files compare by
/// size, as they did then).
pub const UPGRADE_NODES_FROM_4: &[&str] = &["ALTER TABLE {t} ADD COLUMN md5 VARCHAR"];

/// What [`UPGRADE_FROM_2`] adds to `copy_plan` only.
pub const UPGRADE_PLAN_FROM_2: &[&str] = &["ALTER TABLE {t} ADD COLUMN link_to BLOB"];

/// Kind codes stored in `*_nodes.kind` (see `treeshift_core::Kind::code`).
pub const FOLDER: u8 = 0;

pub use treeshift_state::plan_sql::LEFT_OUT;

/// Tables of a new state file, made after [`event_types`]. `copy_plan` is
/// the approved plan: one row per source item discovery found missing,
/// differing or in conflict, with the action the approved policy gives it
/// and what the destination held;
/// copy and verify statuses are events (phases `copy`, `verify`) on the
/// source's event table. Node tables carry metadata only; statuses
/// live in the append-only event tables, ordered by `seq` (a counter, never
/// wall-clock time, so there are no ties). Node tables have no index or key,
/// so appends stay fast; reads are depth-filtered scans (rows are written
/// round by round, so on large trees DuckDB's zone maps can skip row groups
/// of other depths; small trees fit in one or two row groups and are
/// scanned whole). JSON documents (settings, approval, metrics) are stored
/// as text: DuckDB's JSON type needs an extension the bundle lacks.
pub const CREATE: &str = r#"
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE migrations (
    id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    phase VARCHAR NOT NULL,
    src VARCHAR NOT NULL,
    dst VARCHAR NOT NULL,
    settings VARCHAR NOT NULL,
    approval VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    updated_at TIMESTAMP NOT NULL DEFAULT now()
);
CREATE TABLE src_nodes (
    id BIGINT NOT NULL, parent_id BIGINT, depth INTEGER NOT NULL,
    kind UTINYINT NOT NULL, size UBIGINT NOT NULL, mtime_ns BIGINT,
    rel_path BLOB NOT NULL,
    mode UINTEGER, uid UINTEGER, gid UINTEGER, xattrs UBIGINT,
    dev UBIGINT, ino UBIGINT, etag VARCHAR, md5 VARCHAR
);
CREATE TABLE dst_nodes (
    id BIGINT NOT NULL, parent_id BIGINT, depth INTEGER NOT NULL,
    kind UTINYINT NOT NULL, size UBIGINT NOT NULL, mtime_ns BIGINT,
    rel_path BLOB NOT NULL,
    mode UINTEGER, uid UINTEGER, gid UINTEGER, xattrs UBIGINT,
    dev UBIGINT, ino UBIGINT, etag VARCHAR, md5 VARCHAR
);
CREATE TABLE src_status_events (
    seq BIGINT NOT NULL, node_id BIGINT NOT NULL, depth INTEGER NOT NULL,
    phase event_phase NOT NULL, status event_status NOT NULL, reason VARCHAR,
    attempt INTEGER NOT NULL, recorded_at TIMESTAMP NOT NULL
);
CREATE TABLE dst_status_events (
    seq BIGINT NOT NULL, node_id BIGINT NOT NULL, depth INTEGER NOT NULL,
    phase event_phase NOT NULL, status event_status NOT NULL, reason VARCHAR,
    attempt INTEGER NOT NULL, recorded_at TIMESTAMP NOT NULL
);
CREATE TABLE src_stats (depth INTEGER NOT NULL, key VARCHAR NOT NULL, value BIGINT NOT NULL);
CREATE TABLE dst_stats (depth INTEGER NOT NULL, key VARCHAR NOT NULL, value BIGINT NOT NULL);
CREATE TABLE rounds (
    side VARCHAR NOT NULL, depth INTEGER NOT NULL, sealed_at TIMESTAMP NOT NULL,
    folders_listed BIGINT NOT NULL, folders_failed BIGINT NOT NULL
);
CREATE TABLE stats (key VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE task_errors (
    seq BIGINT NOT NULL, side VARCHAR NOT NULL, phase VARCHAR NOT NULL,
    node_id BIGINT, rel_path BLOB, operation VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, message VARCHAR NOT NULL, attempt INTEGER NOT NULL,
    recorded_at TIMESTAMP NOT NULL
);
CREATE TABLE logs (
    seq BIGINT NOT NULL, recorded_at TIMESTAMP NOT NULL, level VARCHAR NOT NULL,
    target VARCHAR NOT NULL, message VARCHAR NOT NULL
);
CREATE TABLE copy_plan (
    node_id BIGINT NOT NULL, parent_id BIGINT, depth INTEGER NOT NULL,
    kind UTINYINT NOT NULL, size UBIGINT NOT NULL, mtime_ns BIGINT,
    rel_path BLOB NOT NULL, status VARCHAR NOT NULL,
    dst_kind UTINYINT, dst_size UBIGINT, dst_mtime_ns BIGINT,
    action VARCHAR NOT NULL, reason VARCHAR,
    mode UINTEGER, uid UINTEGER, gid UINTEGER, xattrs UBIGINT, link_to BLOB
);
CREATE TABLE queue_stats (
    side VARCHAR NOT NULL, depth INTEGER NOT NULL, recorded_at TIMESTAMP NOT NULL,
    metrics VARCHAR NOT NULL
);
"#;
