//! The treeshift state store on PostgreSQL, for a migration that worker
//! processes on many hosts discover together (issue 19). One database
//! holds one migration, as one DuckDB file does; `--state postgres://…`
//! opens it.
//!
//! What makes many workers safe is discovery's leases
//! ([`PgStore::lease`]): a folder is leased with `FOR UPDATE SKIP
//! LOCKED`, for a time measured by the database's clock, under an epoch
//! that grows with each lease. Recording a folder's children and
//! completing it check, in the same transaction, that the lease is still
//! the caller's ([`StoreError::LeaseLost`] if it expired and was taken):
//! a worker that stalled past its lease cannot commit over the one that
//! took the folder over. The plan and its approval (`plan`); the copy
//! (`copy`), its items leased as folders are, by any number of processes;
//! verification (`verify`), by one process alone; a retry sweep reopens
//! discovery's rounds (`retry`); a discovery after a finished copy
//! starts a delta pass (`pass`). Review pages and browsing are the DuckDB
//! store's alone so far.

mod browse;
mod compare;
mod copy;
mod error;
mod events;
mod leases;
mod liveness;
mod pass;
mod plan;
mod report;
mod retry;
mod review;
mod schema;
mod seal;
mod settings;
mod state_store;
mod verify;

pub use schema::SCHEMA_VERSION;
pub use state_store::LEASE_TIME;

use error::Context;
use postgres::{Client, NoTls};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use treeshift_core::Side;
use treeshift_state::{FolderTask, MigrationSpec, OpenMode, StoreError};

/// How long an operation waits for a database it cannot reach (a server
/// restarting) before it fails, unless [`PgStore::wait_for_database`]
/// says otherwise.
pub const WAIT_FOR_DATABASE: Duration = Duration::from_secs(120);

/// Connections a store holds at most (besides its heartbeat's).
const CONNECTIONS: usize = 4;

/// Stores opened by this process so far.
static OPENED: AtomicU64 = AtomicU64::new(0);

/// The migration's locations and recorded settings.
const MIGRATION_ROW: &str = "SELECT src, dst, settings FROM migrations WHERE id = 1";

/// One migration's state in a PostgreSQL database, for the threads of
/// one process (each process opens its own).
pub struct PgStore {
    /// A few connections, taken by whichever thread needs one (each
    /// operation is one transaction, on any of them): one connection for
    /// all of a process's threads made them wait for each other
    /// (docs/BENCHMARKS.md). Connected on first use; the first at open.
    clients: Vec<Mutex<Option<Client>>>,
    /// Where to connect again (it may hold a password: never shown).
    url: String,
    /// The location without its password, for messages.
    location: String,
    /// Who holds this store's leases: host, process id, and which of
    /// the process's stores (each has its own leases).
    holder: String,
    /// Pages of children recorded under each lease this process holds.
    pages: Mutex<HashMap<(Side, i64, i64), i32>>,
    /// The epoch of each folder this process leased through
    /// [`treeshift_state::StateStore::pull`] and has not finished.
    held: Mutex<HashMap<(Side, i64), i64>>,
    /// The round each side began last in this process.
    rounds: Mutex<[Option<u32>; 2]>,
    /// Renews this process's leases once it holds some.
    heartbeat: Mutex<Option<state_store::Heartbeat>>,
    /// When this process last looked for lease holders that are gone.
    reaped_at: Mutex<Option<Instant>>,
    /// The epoch of each copy item this process leased and has not
    /// recorded an outcome for.
    copy_held: Mutex<HashMap<i64, i64>>,
    /// The connection that holds the copy lock once this process copies
    /// or verifies.
    copier: Mutex<Option<copy::Copier>>,
    /// How long this process's leases last unless renewed.
    lease_time: Duration,
    wait_for_database: Duration,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.let_go();
    }
}

/// `url` with any password replaced by `***` (a URL's, or a key=value
/// connection string's).
fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        return match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        };
    }
    url.split_whitespace()
        .map(|word| match word.split_once('=') {
            Some(("password", _)) => "password=***",
            _ => word,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A connection to `url` whose commits do not wait for the server's disk
/// (`synchronous_commit = off`). A server that crashes may lose its last
/// commits, all together and in order, never one without those before it:
/// what a worker completed in them is leased again once its lease
/// expires (a re-leased folder is listed again from its start, or its
/// kept position), and discovery ends as an uninterrupted one. Waiting
/// for the disk at each commit made each folder cost two disk flushes
/// (docs/BENCHMARKS.md).
///
/// And without JIT compilation: a round's tables are rarely analyzed
/// yet when a folder is compared, so the planner's estimates run high and
/// passed JIT's threshold, and each comparison of a folder of 200 paid a
/// compilation of tens of milliseconds for a query of two.
fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute("SET synchronous_commit TO off; SET jit TO off")?;
    Ok(client)
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// and opens the migration it holds, or, with
    /// [`OpenMode::CreateOrResume`], creates it there. Returns the store
    /// and whether the database already held this migration. A database
    /// with other tables and no treeshift migration is refused, as is one
    /// holding another migration.
    pub fn open(url: &str, mode: OpenMode) -> Result<(PgStore, bool), StoreError> {
        let location = redacted(url);
        let client = connect(url).map_err(|e| StoreError::Open {
            path: PathBuf::from(&location),
            message: error::message(&e),
        })?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let store = PgStore {
            clients: std::iter::once(Some(client))
                .chain(std::iter::repeat_with(|| None))
                .take(CONNECTIONS)
                .map(Mutex::new)
                .collect(),
            url: url.to_string(),
            holder: format!(
                "{host}:{}:{}",
                std::process::id(),
                OPENED.fetch_add(1, Ordering::Relaxed)
            ),
            location,
            pages: Mutex::default(),
            held: Mutex::default(),
            rounds: Mutex::default(),
            heartbeat: Mutex::default(),
            reaped_at: Mutex::default(),
            copy_held: Mutex::default(),
            copier: Mutex::default(),
            lease_time: LEASE_TIME,
            wait_for_database: WAIT_FOR_DATABASE,
        };
        let resumed = store.open_migration(mode)?;
        Ok((store, resumed))
    }

    /// The database's location, without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Who this process's leases name as their holder.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long an operation waits for a database it cannot reach.
    pub fn wait_for_database(&mut self, wait: Duration) {
        self.wait_for_database = wait;
    }

    /// How long this process's leases last unless renewed (its heartbeat
    /// renews them three times a lease): how long its share of the work
    /// waits for the others if it dies. [`LEASE_TIME`] unless set.
    pub fn set_lease_time(&mut self, time: Duration) {
        self.lease_time = time.max(Duration::from_millis(300));
    }

    /// Runs `operation` (one transaction, or one statement) on one of
    /// this store's connections. If the database cannot be reached (the
    /// connection was lost, the server restarts), connects again, with
    /// growing pauses, and runs it once more, for up to
    /// [`PgStore::wait_for_database`]. Every operation is written so
    /// that running it again after its reply was lost does no harm.
    pub(crate) fn run<T>(
        &self,
        mut operation: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.connection();
        let deadline = Instant::now() + self.wait_for_database;
        let mut pause = Duration::from_millis(50);
        loop {
            let client = match slot.as_mut() {
                Some(client) => client,
                None => match connect(&self.url) {
                    Ok(client) => slot.insert(client),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(2));
                        continue;
                    }
                    Err(e) => return Err(error::db_error("connect again", &e)),
                },
            };
            match operation(client) {
                Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "the state database cannot be reached; connecting again");
                    *slot = None;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                answer => return answer,
            }
        }
    }

    /// A connection slot no other thread holds, or, if all are taken,
    /// the one this thread's id picks, once it comes free (so waiting
    /// threads spread over the slots).
    pub(crate) fn connection(&self) -> MutexGuard<'_, Option<Client>> {
        for slot in &self.clients {
            match slot.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let mut waits = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&std::thread::current().id(), &mut waits);
        let at = std::hash::Hasher::finish(&waits) as usize % self.clients.len();
        self.clients[at].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number the next page of children under `lease` takes.
    pub(crate) fn pages_sent(&self, side: Side, lease: &FolderTask) -> i32 {
        let pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        pages
            .get(&(side, lease.id, lease.epoch))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn page_recorded(&self, side: Side, lease: &FolderTask) {
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        *pages.entry((side, lease.id, lease.epoch)).or_default() += 1;
    }

    pub(crate) fn forget_pages(&self, side: Side, lease: &FolderTask) {
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        pages.remove(&(side, lease.id, lease.epoch));
    }

    fn not_ours(&self, detail: String) -> StoreError {
        StoreError::NotAStateFile {
            path: PathBuf::from(&self.location),
            detail,
        }
    }

    /// Checks what the database holds and creates the migration if asked
    /// to; true if it held the migration already.
    fn open_migration(&self, mode: OpenMode) -> Result<bool, StoreError> {
        self.run(|client| self.open_in(client, &mode))
    }

    fn open_in(&self, client: &mut Client, mode: &OpenMode) -> Result<bool, StoreError> {
        let mut tx = client.transaction().context("begin opening")?;
        // Two processes creating the same migration at once: the second
        // waits here, then finds it made.
        tx.execute("SELECT pg_advisory_xact_lock(7365727)", &[])
            .context("wait for other processes opening the migration")?;
        let has_meta: bool = tx
            .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
            .context("look for the migration")?
            .get(0);
        if has_meta {
            let rows = tx
                .query("SELECT key, value FROM meta", &[])
                .map_err(|e| self.not_ours(format!("its table meta: {e}")))?;
            let get = |key: &str| {
                rows.iter()
                    .find(|r| r.get::<_, String>(0) == key)
                    .map(|r| r.get::<_, String>(1))
            };
            if get("format").as_deref() != Some(schema::FORMAT) {
                return Err(self.not_ours("its table meta is not treeshift's".into()));
            }
            let mut version = get("schema_version").unwrap_or_default();
            // Each version's additions, in order, from the one found.
            for (from, tables, what) in [
                ("2", schema::COPY_TABLES, "the copy's tables"),
                ("3", schema::PASS_TABLES, "the tables of delta passes"),
                ("4", schema::FOLDER_SUMS_TABLES, "the sums below folders"),
                ("5", schema::MD5_COLUMNS, "the listings' MD5s"),
            ] {
                if version != from {
                    continue;
                }
                let to = from.parse::<u32>().map_or(0, |v| v + 1).to_string();
                tx.batch_execute(tables)
                    .context(&format!("add {what} (schema version {to})"))?;
                tx.execute(
                    "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
                    &[&to],
                )
                .context(&format!("record schema version {to}"))?;
                version = to;
            }
            if version != SCHEMA_VERSION.to_string() {
                return Err(StoreError::SchemaVersion {
                    path: PathBuf::from(&self.location),
                    found: version,
                    expected: SCHEMA_VERSION,
                    hint: "",
                });
            }
            let row = tx
                .query_one(MIGRATION_ROW, &[])
                .map_err(|e| self.not_ours(format!("no migration recorded: {e}")))?;
            let recorded = self.spec_of(&row)?;
            if let OpenMode::CreateOrResume(spec) = mode
                && let Some(d) = recorded.difference(spec)
            {
                return Err(d.refused_at(PathBuf::from(&self.location)));
            }
            tx.commit().context("finish opening")?;
            return Ok(true);
        }
        let OpenMode::CreateOrResume(spec) = mode else {
            return Err(
                self.not_ours("it holds no treeshift migration: discover makes one there".into())
            );
        };
        let tables: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
                &[],
            )
            .context("look at the database's tables")?
            .get(0);
        if tables > 0 {
            return Err(self.not_ours(format!(
                "it holds {tables} tables of another program; give treeshift a database of its own"
            )));
        }
        tx.batch_execute(&schema::create())
            .context("create the schema")?;
        tx.execute(
            "INSERT INTO meta VALUES ('format', $1), ('schema_version', $2), ('created_by', $3)",
            &[
                &schema::FORMAT,
                &SCHEMA_VERSION.to_string(),
                &format!("treeshift {}", env!("CARGO_PKG_VERSION")),
            ],
        )
        .context("record the schema")?;
        tx.execute(
            "INSERT INTO migrations (id, name, phase, src, dst, settings) \
             VALUES (1, $1, 'created', $2, $3, $4)",
            &[
                &format!("{} -> {}", spec.src, spec.dst),
                &spec.src,
                &spec.dst,
                &spec.settings_json(),
            ],
        )
        .context("record the migration")?;
        tx.commit().context("create the migration")?;
        Ok(false)
    }

    /// The migration this database holds.
    pub fn migration(&self) -> Result<MigrationSpec, StoreError> {
        let row = self.run(|client| {
            client
                .query_one(MIGRATION_ROW, &[])
                .context("read the migration")
        })?;
        self.spec_of(&row)
    }

    /// The migration a row of [`MIGRATION_ROW`] records.
    fn spec_of(&self, row: &postgres::Row) -> Result<MigrationSpec, StoreError> {
        MigrationSpec::from_recorded(row.get(0), row.get(1), row.get(2))
            .map_err(|detail| self.not_ours(detail))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            super::redacted("postgres://ann:secret@db:5432/m"),
            "postgres://ann:***@db:5432/m"
        );
        assert_eq!(
            super::redacted("postgres://ann@db/m"),
            "postgres://ann@db/m"
        );
        assert_eq!(
            super::redacted("host=db password=secret user=ann"),
            "host=db password=*** user=ann"
        );
    }
}
