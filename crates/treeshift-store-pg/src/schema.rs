//! The PostgreSQL schema: the same tables as the DuckDB state file (one
//! database holds one migration), with PostgreSQL's types, plus a table
//! of leases per side. PostgreSQL has no unsigned integers: sizes are
//! `bigint` (a file past 8 EiB is refused), and 64-bit digests and file
//! ids keep their bits in a `bigint`.

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 6;

/// What `meta.format` says in a database that holds a treeshift migration.
pub const FORMAT: &str = "treeshift-pg";

/// Comparison statuses of a folder pair whose contents are compared (the
/// folders agree in kind; their metadata may differ), as a SQL list.
pub const IN_STEP: &str = "('same', 'differs', 'outdated')";

pub use treeshift_state::plan_sql::LEFT_OUT;

/// The latest event of `phase` of `side`'s node whose id is the SQL
/// expression `node`, as a subquery of one row (`status`, `reason`), or
/// none: a node's status is its latest event per phase.
pub fn latest_event(side: treeshift_core::Side, phase: &str, node: &str) -> String {
    format!(
        "(SELECT ev.status, ev.reason FROM {side}_status_events ev \
          WHERE ev.node_id = {node} AND ev.phase = '{phase}' ORDER BY ev.seq DESC LIMIT 1)"
    )
}

/// The tables, created in one transaction.
pub fn create() -> String {
    let mut sql = String::from(
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
         CREATE TABLE migrations (
             id integer PRIMARY KEY, name text NOT NULL, phase text NOT NULL,
             src text NOT NULL, dst text NOT NULL, settings text NOT NULL, approval text,
             created_at timestamptz NOT NULL DEFAULT now(),
             updated_at timestamptz NOT NULL DEFAULT now());
         -- One id space for both sides' nodes, as in the DuckDB store.
         CREATE SEQUENCE node_ids;
         -- The wrapped data key and each side's sealed connection: one
         -- row each at most.
         CREATE TABLE keyring (
             migration_uid text NOT NULL, kek text NOT NULL, wrapped bytea NOT NULL,
             updated_at timestamptz NOT NULL);
         CREATE TABLE connections (
             id text NOT NULL, side text PRIMARY KEY, kind text NOT NULL,
             location text NOT NULL, secret_names text[] NOT NULL, sealed bytea NOT NULL,
             updated_at timestamptz NOT NULL);
         CREATE TABLE logs (
             seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             recorded_at timestamptz NOT NULL, level text NOT NULL,
             target text NOT NULL, message text NOT NULL);
         -- A round sealed, with its folders listed and failed.
         CREATE TABLE rounds (
             side text NOT NULL, depth integer NOT NULL, sealed_at timestamptz NOT NULL,
             folders_listed bigint NOT NULL, folders_failed bigint NOT NULL,
             PRIMARY KEY (side, depth));
         CREATE TABLE queue_stats (
             side text NOT NULL, depth integer NOT NULL, recorded_at timestamptz NOT NULL,
             metrics text NOT NULL);
         CREATE TABLE task_errors (
             seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, side text NOT NULL,
             phase text NOT NULL, node_id bigint, rel_path bytea, operation text NOT NULL,
             kind text NOT NULL, message text NOT NULL, attempt integer NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT now());",
    );
    for side in ["src", "dst"] {
        sql.push_str(&format!(
            "CREATE TABLE {side}_nodes (
                 id bigint PRIMARY KEY DEFAULT nextval('node_ids'), parent_id bigint,
                 depth integer NOT NULL,
                 kind smallint NOT NULL, size bigint NOT NULL, mtime_ns bigint,
                 rel_path bytea NOT NULL,
                 mode integer, uid bigint, gid bigint, xattrs bigint,
                 dev bigint, ino bigint, etag text);
             CREATE INDEX {side}_nodes_parent ON {side}_nodes (parent_id);
             CREATE INDEX {side}_nodes_depth ON {side}_nodes (depth, id);
             CREATE TABLE {side}_status_events (
                 seq bigint GENERATED ALWAYS AS IDENTITY, node_id bigint NOT NULL,
                 depth integer NOT NULL, phase text NOT NULL, status text NOT NULL,
                 reason text, attempt integer NOT NULL,
                 recorded_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX {side}_status_events_node ON {side}_status_events (node_id, phase);
             -- Statistics of the nodes at one depth, recomputed at each seal.
             CREATE TABLE {side}_stats (
                 depth integer NOT NULL, key text NOT NULL, value bigint NOT NULL,
                 PRIMARY KEY (depth, key));
             -- A folder of a round begun: who lists it, until when (the
             -- database's clock), under which epoch, and where a listing
             -- cut short stood; `pages`: how many pages of children the
             -- current lease recorded.
             CREATE TABLE {side}_leases (
                 node_id bigint PRIMARY KEY, depth integer NOT NULL,
                 epoch bigint NOT NULL DEFAULT 0, holder text, expires_at timestamptz,
                 pages integer NOT NULL DEFAULT 0, position bytea,
                 done boolean NOT NULL DEFAULT false);
             CREATE INDEX {side}_leases_open ON {side}_leases (depth, node_id) WHERE NOT done;"
        ));
    }
    // A destination folder's listing is compared with the children of
    // the source folder of its path, found by this.
    sql.push_str("CREATE INDEX src_nodes_folder_path ON src_nodes (rel_path) WHERE kind = 0;");
    sql.push_str(COPY_TABLES);
    sql.push_str(PASS_TABLES);
    sql.push_str(FOLDER_SUMS_TABLES);
    sql.push_str(MD5_COLUMNS);
    sql
}

/// What version 3 adds: the approved plan, the copy's and the
/// verification's working sets, what the copy wrote, and `mtime_s`
/// (whole seconds of a nanosecond mtime, rounded down, as the DuckDB
/// store's macro). A version 2 database gains them when opened.
pub const COPY_TABLES: &str = "
    CREATE FUNCTION mtime_s(ns bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS
      'SELECT CASE WHEN ns >= 0 THEN ns / 1000000000 ELSE -((-ns + 999999999) / 1000000000) END';
    -- The approved plan: one row per source item discovery found not in
    -- step (and, with extras quarantined, per destination extra), with
    -- the action the approved policy gives it and what the destination
    -- held; copy and verify statuses are the source's events.
    CREATE TABLE copy_plan (
        node_id bigint PRIMARY KEY, parent_id bigint, depth integer NOT NULL,
        kind smallint NOT NULL, size bigint NOT NULL, mtime_ns bigint, rel_path bytea NOT NULL,
        status text NOT NULL, dst_kind smallint, dst_size bigint, dst_mtime_ns bigint,
        action text NOT NULL, reason text,
        mode integer, uid bigint, gid bigint, xattrs bigint, link_to bytea);
    -- A copy run's items not done yet, with the identities of the
    -- folders they go into; made anew by a run that finds no other
    -- process copying. Each item is leased as discovery's folders are:
    -- who copies it, until when (the database's clock), under which
    -- epoch, and whether its outcome is recorded.
    CREATE TABLE copy_todo (
        node_id bigint PRIMARY KEY, parent_id bigint, depth integer NOT NULL,
        kind smallint NOT NULL, size bigint NOT NULL, mtime_ns bigint, rel_path bytea NOT NULL,
        status text NOT NULL, dst_kind smallint, dst_size bigint, dst_mtime_ns bigint,
        action text NOT NULL, reason text,
        mode integer, uid bigint, gid bigint, xattrs bigint, link_to bytea,
        copy_status text NOT NULL, attempt integer NOT NULL,
        src_folder_dev bigint, src_folder_ino bigint, dst_folder_dev bigint, dst_folder_ino bigint,
        holder text, expires_at timestamptz, epoch bigint NOT NULL DEFAULT 0,
        done boolean NOT NULL DEFAULT false);
    -- What the copy wrote at a path, where the destination tells more
    -- than the source's listing (an object's etag, its own mtime).
    CREATE TABLE written (
        seq bigint GENERATED ALWAYS AS IDENTITY, depth integer NOT NULL, rel_path bytea NOT NULL,
        size bigint NOT NULL, mtime_ns bigint, etag text, own_mtime_ns bigint);
    CREATE INDEX written_path ON written (rel_path, seq);
    -- Folders whose times (and metadata) the copy sets, deepest first.
    CREATE TABLE folder_dates (
        node_id bigint PRIMARY KEY, depth integer NOT NULL, rel_path bytea NOT NULL,
        mtime_ns bigint, all_meta boolean NOT NULL,
        mode integer, uid bigint, gid bigint, xattrs bigint, copied_at bigint);
    CREATE TABLE verify_todo (
        node_id bigint PRIMARY KEY, depth integer NOT NULL, kind smallint NOT NULL,
        rel_path bytea NOT NULL, size bigint NOT NULL, mtime_ns bigint,
        mode integer, uid bigint, gid bigint, xattrs bigint, link_to bytea);";

/// What version 4 adds: for delta passes, each finished pass's summary,
/// the previous pass's source tree (the node table of that pass, renamed
/// when the next starts; empty in the first pass), and what changed on
/// the source since; and the living processes. A version 3 database
/// gains them when opened.
pub const PASS_TABLES: &str = "
    CREATE TABLE passes (
        pass integer PRIMARY KEY, finished_at timestamptz NOT NULL, discovery text NOT NULL,
        approval text, copy text, verify text);
    CREATE TABLE previous_src_nodes (LIKE src_nodes INCLUDING ALL);
    CREATE TABLE src_changes (
        rel_path bytea NOT NULL, depth integer NOT NULL, change text NOT NULL,
        kind smallint NOT NULL, size bigint NOT NULL, mtime_ns bigint, reason text);
    -- Each living process, and when it took the lock that says so
    -- (`liveness`).
    CREATE TABLE holders (holder text PRIMARY KEY, locked_at timestamptz NOT NULL);";

/// What version 5 adds: the items and bytes below each folder by status,
/// made once a discovery has ended, for browsing (see `browse`). A
/// version 4 database gains them when opened.
pub const FOLDER_SUMS_TABLES: &str = "
    CREATE TABLE src_folder_sums (
        folder_id bigint NOT NULL, depth integer NOT NULL, status text NOT NULL,
        items bigint NOT NULL, bytes bigint NOT NULL, PRIMARY KEY (folder_id, status));
    CREATE TABLE dst_folder_sums (
        folder_id bigint NOT NULL, depth integer NOT NULL, status text NOT NULL,
        items bigint NOT NULL, bytes bigint NOT NULL, PRIMARY KEY (folder_id, status));";

/// What version 6 adds: the MD5 a listing gave of each file (empty for
/// what was discovered before; such files compare by size, as then).
pub const MD5_COLUMNS: &str = "
    ALTER TABLE src_nodes ADD COLUMN md5 text;
    ALTER TABLE dst_nodes ADD COLUMN md5 text;
    ALTER TABLE previous_src_nodes ADD COLUMN md5 text;";
