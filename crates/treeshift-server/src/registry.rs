//! The migrations under the server's folder: one state file each, or a
//! file that names the PostgreSQL database holding the migration's state
//! (worker processes on other hosts may share it); opened on first use
//! and kept open while used (the server holds a state file: a CLI on the
//! same file is refused meanwhile), closed when idle; and each one's job.

use crate::error::ApiError;
use crate::jobs::{self, Job, JobOptions, JobView, Op};
use crate::{LogRoutes, migration_span};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use treeshift_lifecycle::{DiscoveryRequest, Keys, Limits, Migration, SecretSource};

/// The file name a migration's state file has.
const SUFFIX: &str = ".duckdb";
/// The file name of a migration whose state is in PostgreSQL: it holds
/// the database's address (`postgres://…`, perhaps with a password, so
/// readable by the server's user alone).
const DATABASE_SUFFIX: &str = ".postgres";
/// The longest name a migration may have.
const MAX_NAME: usize = 64;

/// A migration's place in the registry.
pub struct Slot {
    pub name: String,
    /// Its state file.
    path: PathBuf,
    /// The file naming its database, if its state is in PostgreSQL.
    database: PathBuf,
    migration: Mutex<Option<Arc<Migration>>>,
    job: Mutex<Option<Arc<Job>>>,
    /// When a request last asked for the migration.
    used: Mutex<Instant>,
}

impl Slot {
    /// The current (or last) job.
    pub fn job(&self) -> Option<Arc<Job>> {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the migration exists: its state file, or the file naming
    /// its database.
    fn exists(&self) -> bool {
        self.path.exists() || self.database.exists()
    }

    /// Where its state is: the database the file names, if there is one,
    /// else its state file.
    fn state(&self) -> Result<PathBuf, ApiError> {
        match std::fs::read_to_string(&self.database) {
            Ok(url) => Ok(PathBuf::from(url.trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.path.clone()),
            Err(e) => Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("read {}: {e}", self.database.display()),
            )),
        }
    }
}

/// Every migration the server knows.
pub struct Registry {
    dir: PathBuf,
    keys: Arc<dyn Keys>,
    limits: Limits,
    logs: Arc<dyn LogRoutes>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// Whether `name` can name a migration: one plain file name (letters,
/// digits, `.`, `_`, `-`; not starting with a dot), never a path.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Registry {
    pub fn new(
        dir: PathBuf,
        keys: Arc<dyn Keys>,
        limits: Limits,
        logs: Arc<dyn LogRoutes>,
    ) -> Registry {
        Registry {
            dir,
            keys,
            limits,
            logs,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The slot of `name`, checked: a name that is not one plain file
    /// name is refused, and so is a state file (or its WAL, or the file
    /// naming its database) that is a symlink, wherever it points.
    pub fn slot(&self, name: &str) -> Result<Arc<Slot>, ApiError> {
        if !valid_name(name) {
            return Err(ApiError::bad_request(format!(
                "'{name}' is not a migration name: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', not starting with '.'"
            )));
        }
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let database = self.dir.join(format!("{name}{DATABASE_SUFFIX}"));
        for file in [
            path.clone(),
            self.dir.join(format!("{name}{SUFFIX}.wal")),
            database.clone(),
        ] {
            if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    format!(
                        "{name}: its state file is a symlink, which the server does not follow"
                    ),
                ));
            }
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slots
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    name: name.to_string(),
                    path,
                    database,
                    migration: Mutex::new(None),
                    job: Mutex::new(None),
                    used: Mutex::new(Instant::now()),
                })
            })
            .clone())
    }

    /// The names of the migrations in the folder, sorted.
    pub fn names(&self) -> Result<Vec<String>, ApiError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("read {}: {e}", self.dir.display()),
            )
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name
                    .strip_suffix(SUFFIX)
                    .or_else(|| name.strip_suffix(DATABASE_SUFFIX))?;
                valid_name(stem).then(|| stem.to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The open migration of `name` (see [`Registry::slot`] and
    /// [`Registry::migration`]).
    pub fn open(&self, name: &str) -> Result<Arc<Migration>, ApiError> {
        self.migration(&*self.slot(name)?)
    }

    /// The open migration of a slot, opened on first use.
    pub fn migration(&self, slot: &Slot) -> Result<Arc<Migration>, ApiError> {
        *slot.used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut open = slot.migration.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = open.as_ref() {
            return Ok(m.clone());
        }
        if !slot.exists() {
            return Err(ApiError::not_found(format!("no migration '{}'", slot.name)));
        }
        let state = slot.state()?;
        // Opened in the migration's span: the store's thread keeps it.
        let m = migration_span(&slot.name)
            .in_scope(|| Migration::open(&state, self.keys.clone(), self.limits))?;
        let m = Arc::new(m);
        self.logs.opened(&slot.name, m.handle().clone());
        *open = Some(m.clone());
        Ok(m)
    }

    /// Makes a new migration: its state file (or, given `database`, its
    /// state in that PostgreSQL database, named by a file of its own), its
    /// connections (secrets given in the request, else from the server's
    /// environment; sealed if it has a key), both roots checked when its
    /// discovery starts. Secrets given in a request are refused without a
    /// key: they would be gone when the server stops.
    pub fn create(
        &self,
        slot: &Slot,
        mut request: DiscoveryRequest,
        database: Option<String>,
    ) -> Result<(), ApiError> {
        let mut open = slot.migration.lock().unwrap_or_else(|p| p.into_inner());
        if open.is_some() || slot.exists() {
            return Err(ApiError::conflict(format!(
                "a migration '{}' exists already",
                slot.name
            )));
        }
        if request.secrets.iter().any(SecretSource::is_given) && self.keys.key(None)?.is_none() {
            return Err(ApiError::bad_request(
                "secrets given in a request are sealed into the state file, and this server has no key to seal them with: start it with TREESHIFT_MASTER_KEY or --passphrase-file",
            ));
        }
        request.state = match &database {
            Some(url) => {
                let url = PathBuf::from(url);
                if !treeshift_lifecycle::state::is_database(&url) || url.as_os_str().len() > 4096 {
                    return Err(ApiError::bad_request(
                        "state: give a PostgreSQL database as postgres://USER@HOST:PORT/DB, or nothing for a state file",
                    ));
                }
                write_private(&slot.database, url.as_os_str().as_encoded_bytes())?;
                url
            }
            None => slot.path.clone(),
        };
        let prepared = migration_span(&slot.name)
            .in_scope(|| Migration::prepare_discovery(&request, self.keys.clone(), self.limits));
        let m = match prepared {
            Ok(m) => m,
            Err(e) => {
                if database.is_some() {
                    let _ = std::fs::remove_file(&slot.database);
                }
                return Err(e.into());
            }
        };
        self.logs.opened(&slot.name, m.handle().clone());
        *open = Some(Arc::new(m));
        Ok(())
    }

    /// Starts `op` on a slot's migration; refused while a job runs.
    pub fn start(&self, slot: &Slot, op: Op, options: JobOptions) -> Result<JobView, ApiError> {
        // The job's lock first, as `close_idle` takes it: the file is not
        // closed between being opened here and the job starting.
        let mut job = slot.job.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.migration(slot)?;
        if let Some(running) = job.as_ref().filter(|j| j.is_running()) {
            return Err(ApiError::conflict(format!(
                "{} is running a {:?} job: stop it first, or wait for it",
                slot.name, running.op
            )));
        }
        let started = jobs::start(op, options, m, &slot.name).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("start a job: {e}"),
            )
        })?;
        let view = started.view();
        *job = Some(started);
        Ok(view)
    }

    /// Refuses what must not run beside a job (an approval).
    pub fn idle(&self, slot: &Slot) -> Result<(), ApiError> {
        match slot.job().filter(|j| j.is_running()) {
            Some(j) => Err(ApiError::conflict(format!(
                "{} is running a {:?} job",
                slot.name, j.op
            ))),
            None => Ok(()),
        }
    }

    /// Every slot the server has used so far.
    fn all_slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Closes the state files unused for `idle` that no job runs in and no
    /// request holds (a log stream keeps its file open), so that the CLI
    /// can open them; the next request opens them again.
    pub fn close_idle(&self, idle: Duration) {
        let slots = self.all_slots();
        for slot in slots {
            let job = slot.job.lock().unwrap_or_else(|p| p.into_inner());
            if job.as_ref().is_some_and(|j| j.is_running()) {
                continue;
            }
            let mut open = slot.migration.lock().unwrap_or_else(|p| p.into_inner());
            let unused = slot
                .used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                >= idle;
            // Only the slot holds it: no request can be using it, and a
            // new one must come through the slot's lock.
            if unused && open.as_ref().is_some_and(|m| Arc::strong_count(m) == 1) {
                self.logs.closed(&slot.name);
                let closing = open.take();
                drop(closing);
                tracing::debug!(migration = %slot.name, "state file closed, unused");
            }
        }
    }

    /// Stops every running job, waiting (up to a minute) for each to
    /// record what it has in flight.
    pub fn stop_all(&self) {
        let slots = self.all_slots();
        let running: Vec<Arc<Job>> = slots
            .iter()
            .filter_map(|s| s.job())
            .filter(|j| j.is_running())
            .collect();
        for job in &running {
            job.cancel.cancel();
        }
        let until = Instant::now() + Duration::from_secs(60);
        while running.iter().any(|j| j.is_running()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        for slot in slots {
            let closing = slot
                .migration
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if closing.is_some() {
                self.logs.closed(&slot.name);
            }
        }
    }
}

/// Writes `bytes` to a new file at `path` that only the server's user can
/// read (it may hold a password); refused if the file exists.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), ApiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    written.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("write {}: {e}", path.display()),
        )
    })
}
