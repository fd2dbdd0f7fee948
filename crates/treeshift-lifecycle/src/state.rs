//! Where a migration's state lives, chosen by its location: a DuckDB
//! file (a path), or a PostgreSQL database (`postgres://…` or
//! `postgresql://…`) that worker processes on many hosts share. Callers
//! hold a [`StateHandle`] and speak [`StateStore`] through it, whichever
//! store answers.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use treeshift_store::{OpenMode, StateStore, Store, StoreError, StoreHandle};
use treeshift_store_pg::PgStore;

pub use treeshift_store::is_database;

/// A migration's open state, as its users hold it (cloned freely).
/// Dereferences to the [`StateStore`] that answers.
#[derive(Clone)]
pub enum StateHandle {
    /// A DuckDB state file.
    File(StoreHandle),
    /// A PostgreSQL database.
    Database(Arc<PgStore>),
}

impl Deref for StateHandle {
    type Target = dyn StateStore;

    fn deref(&self) -> &(dyn StateStore + 'static) {
        match self {
            StateHandle::File(h) => h,
            StateHandle::Database(pg) => pg.as_ref(),
        }
    }
}

impl StateHandle {
    /// A handle whose reads see what is committed and never wait for a
    /// running discovery or copy (a file's reads otherwise queue behind
    /// its writer; a database's never do).
    pub fn committed(&self) -> StateHandle {
        match self {
            StateHandle::File(h) => StateHandle::File(h.committed()),
            StateHandle::Database(_) => self.clone(),
        }
    }

    /// The state's location, for messages (a database's without its
    /// password).
    pub fn path(&self) -> &Path {
        match self {
            StateHandle::File(h) => h.path(),
            StateHandle::Database(pg) => Path::new(pg.location()),
        }
    }
}

/// An open state: what a migration closes when it is done.
pub struct OpenState {
    file: Option<Store>,
    handle: StateHandle,
}

impl OpenState {
    /// Opens the state at `state` (a path, or a database's location,
    /// whose leases last `lease_time` if given); returns it and whether it
    /// held the migration already.
    pub fn open(
        state: &Path,
        mode: OpenMode,
        lease_time: Option<std::time::Duration>,
    ) -> Result<(OpenState, bool), StoreError> {
        if is_database(state) {
            let url = state.to_str().unwrap_or_default();
            let (mut pg, resumed) = PgStore::open(url, mode)?;
            if let Some(time) = lease_time {
                pg.set_lease_time(time);
            }
            let handle = StateHandle::Database(Arc::new(pg));
            return Ok((OpenState { file: None, handle }, resumed));
        }
        let (store, resumed) = Store::open(state, mode)?;
        let handle = StateHandle::File(store.handle());
        Ok((
            OpenState {
                file: Some(store),
                handle,
            },
            resumed,
        ))
    }

    /// The handle to speak to it through.
    pub fn handle(&self) -> &StateHandle {
        &self.handle
    }

    /// Commits what is buffered and closes it: a file is closed; a
    /// database's leases this process did not finish are given back, so
    /// others take them without waiting for them to expire.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.close_now()
    }

    fn close_now(&mut self) -> Result<(), StoreError> {
        if let StateHandle::Database(pg) = &self.handle {
            pg.let_go();
        }
        match self.file.take() {
            Some(store) => store.close(),
            None => Ok(()),
        }
    }
}

impl Drop for OpenState {
    fn drop(&mut self) {
        let _ = self.close_now();
    }
}
