//! Opening a state file: DuckDB's settings, the identity checks (a state
//! file of this migration, of a known schema), creating and upgrading the
//! schema.

use super::*;

impl Writer {
    /// Opens or creates the file; returns the writer and whether it already
    /// held this migration.
    pub(crate) fn open(path: &Path, mode: &OpenMode) -> Result<(Writer, bool), StoreError> {
        let existed = path.exists();
        if !existed && matches!(mode, OpenMode::Existing) {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        if existed && path.is_dir() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "it is a folder".into(),
            });
        }
        // A run killed just as DuckDB made the file leaves it empty, and
        // DuckDB will not open an empty file. It holds nothing: a new
        // migration starts in its place.
        if existed && path.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
            match mode {
                OpenMode::Existing => {
                    return Err(StoreError::NotAStateFile {
                        path: path.to_path_buf(),
                        detail: "an empty file".into(),
                    });
                }
                OpenMode::CreateOrResume(_) => {
                    std::fs::remove_file(path).map_err(|e| StoreError::Open {
                        path: path.to_path_buf(),
                        message: format!("remove the empty file a killed run left: {e}"),
                    })?;
                }
            }
        }
        // Bounded memory. Rows committed since the last checkpoint live in
        // memory that DuckDB cannot evict (`IN_MEMORY_TABLE` in
        // `duckdb_memory()`: 20 MB before S1's last seal with the default
        // 16 MB WAL threshold, which is what ran out at a 40 MB limit), so
        // the file is checkpointed every 4 MB of WAL (see `checkpoint`);
        // what is checkpointed can be evicted, and joins spill past the
        // limit to a temp folder.
        // One DuckDB thread: the store thread runs every statement itself,
        // with no hand-offs to helper threads that compete with the listing
        // workers for the same cores, and with one set of per-thread join
        // and aggregate buffers instead of two.
        // No extension autoloading: the JSON columns are plain text, and a
        // state store must never reach for the network.
        let (limit, memory_limit_mb) = memory_limit();
        let config = Config::default()
            .enable_autoload_extension(false)
            .and_then(|c| c.max_memory(&limit))
            .and_then(|c| c.threads(1))
            // Commits never checkpoint: the store thread does (`checkpoint`).
            .and_then(|c| c.with("checkpoint_threshold", "1TB"))
            // A new file in DuckDB 1.4's storage. In 2.0's, a checkpoint
            // may move row ids, so every lookup by key in a table with a
            // primary key (`meta`, `migrations`: each status reads both)
            // waits for the whole checkpoint; in 1.4's it goes on beside
            // it. (A file made before keeps its storage.) DuckDB 1.4 can
            // open it too.
            .and_then(|c| c.with("storage_compatibility_version", "v1.4.0"))
            .and_then(|c| c.with("preserve_insertion_order", "false"))
            .context("configure DuckDB")?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| {
            let message = explain_open_error(&e);
            if is_lock_error(&e) {
                StoreError::InUse {
                    path: path.to_path_buf(),
                    message,
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    message,
                }
            }
        })?;
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENT_CACHE);
        // Only `shutdown` checkpoints (after a clean run); closing the
        // connection must not, for the reason at `commit_failed`.
        conn.execute_batch("PRAGMA disable_checkpoint_on_shutdown")
            .context("configure DuckDB")?;
        let mut writer = Writer {
            db: Db {
                conn,
                path: path.to_path_buf(),
            },
            next_id: 1,
            next_seq: 1,
            buf: Buffers::default(),
            stopping: false,
            dst_case_insensitive: None,
            seal_slice: seal_slice(),
            commit_failed: None,
            cut_short_checked: [0; 2],
            drafted: None,
            overlap: Arc::new(Overlap::new(memory_limit_mb)),
        };
        let (has_meta, tables) = writer.tables()?;
        let resumed = if has_meta {
            writer.check_version()?;
            writer.upgrade()?;
            if let OpenMode::CreateOrResume(spec) = mode {
                writer.check_same_migration(spec)?;
            }
            true
        } else if tables > 0 {
            return Err(StoreError::NotAStateFile {
                path: path.to_path_buf(),
                detail: "a DuckDB database without treeshift's tables".into(),
            });
        } else {
            match mode {
                OpenMode::CreateOrResume(spec) => writer.create(spec)?,
                OpenMode::Existing => {
                    return Err(StoreError::NotAStateFile {
                        path: path.to_path_buf(),
                        detail: "an empty database".into(),
                    });
                }
            }
            false
        };
        writer.conn
            .execute_batch(
                "CREATE OR REPLACE TEMP MACRO mtime_s(ns) AS \
                 CASE WHEN ns >= 0 THEN ns // 1000000000 ELSE -((-ns + 999999999) // 1000000000) END; \
                 CREATE OR REPLACE TEMP MACRO kind_name(k) AS \
                 CASE k WHEN 0 THEN 'folder' WHEN 1 THEN 'file' WHEN 2 THEN 'symlink' ELSE 'special' END; \
                 CREATE OR REPLACE TEMP MACRO mode_text(m) AS \
                 ((m >> 9) & 7)::VARCHAR || ((m >> 6) & 7)::VARCHAR || ((m >> 3) & 7)::VARCHAR || (m & 7)::VARCHAR; \
                 CREATE OR REPLACE TEMP MACRO owner_text(u, g) AS \
                 coalesce(u::VARCHAR, '?') || ':' || coalesce(g::VARCHAR, '?');",
            )
            .context("define macros")?;
        writer
            .conn
            .execute_batch(pass::PASS_TABLES)
            .context("add the tables of delta passes")?;
        writer
            .conn
            .execute_batch(super::browse::BROWSE_TABLES)
            .context("add the tables of browsing")?;
        writer
            .conn
            .execute_batch(super::credentials::CREDENTIAL_TABLES)
            .context("add the tables of connections")?;
        // One counter orders status events, failures and log records.
        (writer.next_id, writer.next_seq) = writer
            .conn
            .query_row(
                "SELECT coalesce(greatest((SELECT max(id) FROM src_nodes), \
                                          (SELECT max(id) FROM dst_nodes)), 0) + 1, \
                        coalesce(greatest((SELECT max(seq) FROM src_status_events), \
                                          (SELECT max(seq) FROM dst_status_events), \
                                          (SELECT max(seq) FROM task_errors), \
                                          (SELECT max(seq) FROM logs)), 0) + 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .context("read the next node id and sequence number")?;
        Ok((writer, resumed))
    }

    /// Whether the file has treeshift's `meta` table, and how many tables
    /// it has in all. Read from `duckdb_tables()` itself: the
    /// `information_schema.tables` view unions it with `duckdb_views()`,
    /// which only adds planning to every command.
    pub(super) fn tables(&self) -> Result<(bool, i64), StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FILTER (WHERE table_name = 'meta') > 0, count(*) FROM duckdb_tables() \
                 WHERE database_name = current_database() AND schema_name = 'main'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.not_a_state_file(e))
    }

    pub(super) fn check_version(&self) -> Result<(), StoreError> {
        let found: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .ok();
        match found {
            Some(v) if v == SCHEMA_VERSION.to_string() || ["2", "3", "4"].contains(&v.as_str()) => {
                Ok(())
            }
            Some(v) => {
                let newer = v
                    .parse::<u32>()
                    .map(|n| n > SCHEMA_VERSION)
                    .unwrap_or(false);
                Err(StoreError::SchemaVersion {
                    path: self.path.clone(),
                    found: v,
                    expected: SCHEMA_VERSION,
                    hint: if newer {
                        " (written by a newer treeshift: upgrade treeshift)"
                    } else {
                        " (written by an older treeshift: finish it with that version or start a new state file)"
                    },
                })
            }
            None => Err(StoreError::NotAStateFile {
                path: self.path.clone(),
                detail: "no schema version recorded".into(),
            }),
        }
    }

    /// Brings a file of an earlier schema up to this one, in one
    /// transaction: from 2, the metadata columns, empty for what was
    /// discovered before (such nodes compare as they did then); from 3,
    /// the event tables' statuses as enums; from 4, listings' MD5s.
    pub(super) fn upgrade(&mut self) -> Result<(), StoreError> {
        let version: String = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .context("read the schema version")?;
        let mut statements = match version.as_str() {
            "2" => {
                let mut statements = self.upgrade_from_2()?;
                statements.extend(upgrade_from_3());
                statements
            }
            "3" => upgrade_from_3(),
            "4" => Vec::new(),
            _ => return Ok(()),
        };
        for table in self.node_tables()? {
            statements.extend(UPGRADE_NODES_FROM_4.iter().map(|s| s.replace("{t}", table)));
        }
        self.in_transaction("upgrade the state file", |conn| {
            for statement in &statements {
                conn.execute_batch(statement)?;
            }
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                params![SCHEMA_VERSION.to_string()],
            )?;
            Ok(())
        })?;
        tracing::info!(path = %self.path.display(), "state file upgraded from schema {version} to {SCHEMA_VERSION}");
        Ok(())
    }

    /// The tables of nodes: both sides', and the previous pass's source
    /// where there was one.
    fn node_tables(&self) -> Result<Vec<&'static str>, StoreError> {
        let previous = exists(
            &self.conn,
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'previous_src_nodes'",
        )
        .context("look for the previous pass's tree")?;
        let mut node_tables = vec!["src_nodes", "dst_nodes"];
        if previous {
            node_tables.push("previous_src_nodes");
        }
        Ok(node_tables)
    }

    /// The statements that bring a version 2 file to version 3.
    fn upgrade_from_2(&self) -> Result<Vec<String>, StoreError> {
        let node_tables = self.node_tables()?;
        let mut statements = Vec::new();
        for table in node_tables.iter().chain(["copy_plan"].iter()) {
            statements.extend(UPGRADE_FROM_2.iter().map(|s| s.replace("{t}", table)));
        }
        for table in &node_tables {
            statements.extend(UPGRADE_NODES_FROM_2.iter().map(|s| s.replace("{t}", table)));
        }
        statements.extend(
            UPGRADE_PLAN_FROM_2
                .iter()
                .map(|s| s.replace("{t}", "copy_plan")),
        );
        Ok(statements)
    }

    pub(crate) fn check_same_migration(&self, spec: &MigrationSpec) -> Result<(), StoreError> {
        match self.migration()?.difference(spec) {
            None => Ok(()),
            Some(d) => Err(d.refused_at(self.path.clone())),
        }
    }

    pub(super) fn create(&mut self, spec: &MigrationSpec) -> Result<(), StoreError> {
        let settings = spec.settings_json();
        self.in_transaction("create the schema", |conn| {
            conn.execute_batch(&event_types())?;
            conn.execute_batch(CREATE)?;
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created_by', ?)",
                params![SCHEMA_VERSION.to_string(), format!("treeshift {}", env!("CARGO_PKG_VERSION"))],
            )?;
            conn.execute(
                "INSERT INTO migrations (id, name, phase, src, dst, settings) VALUES (1, ?, ?, ?, ?, ?)",
                params![format!("{} -> {}", spec.src, spec.dst), Phase::Created.as_str(), spec.src, spec.dst, settings],
            )?;
            Ok(())
        })
    }
}

impl Db {
    pub(super) fn not_a_state_file(&self, e: duckdb::Error) -> StoreError {
        StoreError::NotAStateFile {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    pub(crate) fn migration(&self) -> Result<MigrationSpec, StoreError> {
        let (src, dst, settings): (String, String, String) = self
            .row(
                "SELECT src, dst, settings::VARCHAR FROM migrations WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| self.not_a_state_file(e))?;
        MigrationSpec::from_recorded(src, dst, &settings).map_err(|detail| {
            StoreError::NotAStateFile {
                path: self.path.clone(),
                detail,
            }
        })
    }
}

impl Writer {
    pub(super) fn dst_case_insensitive(&mut self) -> Result<bool, StoreError> {
        if self.dst_case_insensitive.is_none() {
            self.dst_case_insensitive = Some(self.migration()?.dst_case_insensitive);
        }
        Ok(self.dst_case_insensitive.unwrap_or(false))
    }
}

/// Nodes per statement of a seal by default (see [`seal_slice`]): on a
/// 10M-node tree, the last seal as one statement ran out of the 44 MB
/// limit twice, in slices of 250,000 once, in slices of this size not at
/// all (BENCHMARKS.md).
pub(super) const SEAL_SLICE: i64 = 100_000;

/// DuckDB's memory limit at start, in MB, when `TREESHIFT_DB_MEMORY` is not
/// set. With the 4 MB checkpoint threshold, S1 (100k files vs a partial
/// copy) and S3 (200k files in one folder) discover and migrate within it,
/// and so does a simulated tree of 1M nodes, whose largest seal needs more
/// than 40 MB. At 48 MB, S3 peaked at 101 MiB RSS once in six runs; at 44,
/// 90-92 MiB in five. A tree of 10M nodes needs more (see
/// [`Writer::raise_memory_limit`]).
pub(super) const MEMORY_START_MB: u64 = 44;

/// The most an adaptive limit grows to.
pub(super) const MEMORY_CEILING_MB: u64 = 4096;

/// DuckDB's memory limit: `TREESHIFT_DB_MEMORY` as given (a fixed limit),
/// or [`MEMORY_START_MB`], which may grow (the second value).
pub(super) fn memory_limit() -> (String, Option<u64>) {
    match std::env::var("TREESHIFT_DB_MEMORY") {
        Ok(v) if !v.trim().is_empty() => (v, None),
        _ => (format!("{MEMORY_START_MB}MB"), Some(MEMORY_START_MB)),
    }
}

/// Nodes per statement of a seal: `TREESHIFT_SEAL_SLICE` if set to a
/// positive number, else [`SEAL_SLICE`]. Memory per statement grows with
/// it; statements per seal shrink.
fn seal_slice() -> i64 {
    std::env::var("TREESHIFT_SEAL_SLICE")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SEAL_SLICE)
}

/// Turns DuckDB's open errors into something a user can act on.
pub(super) fn is_lock_error(e: &duckdb::Error) -> bool {
    let msg = e.to_string();
    msg.contains("Could not set lock") || msg.contains("Conflicting lock")
}

pub(super) fn explain_open_error(e: &duckdb::Error) -> String {
    let msg = e.to_string();
    if is_lock_error(e) {
        format!("another treeshift process is using it ({msg})")
    } else if msg.contains("not a valid DuckDB database")
        || msg.contains("Serialization")
        || msg.contains("Corrupt")
    {
        format!("not a DuckDB database, or corrupt ({msg})")
    } else {
        msg
    }
}
