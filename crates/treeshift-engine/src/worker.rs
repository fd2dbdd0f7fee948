//! One task: list one folder's children, filter them, stream them to the
//! store, and record the outcome. Temporary errors are retried with
//! exponential backoff and jitter; anything else fails the folder with its
//! reason, and its siblings carry on.

use treeshift_backend::{Backend, BackendError, Capabilities, RetryPolicy};
use treeshift_core::{
    Filter, Keep, Kind, QUARANTINE_DIR, Side, Status, Verdict, display_bytes, name_problem,
    name_stand_in,
};
use treeshift_state::{ChildRecord, Failure, FolderTask, StateStore, StoreError};

/// Children per message to the store: large enough to amortise the channel,
/// small enough that a 10-million-child folder streams in bounded memory.
const CHUNK: usize = 2048;

/// Everything a worker needs, shared by the workers of one side.
pub(crate) struct Lister<'a> {
    pub side: Side,
    pub backend: &'a dyn Backend,
    pub filter: &'a Filter,
    pub keep: &'a Keep,
    /// The side's listings give files' own mtimes: the storage keeps them
    /// natively, or its listing reads them from user metadata.
    pub files_own_mtimes: bool,
    /// For the source: what the destination can hold. A source item it
    /// cannot (a name not UTF-8 toward an object store, a name or key too
    /// long) is left out as an invalid name, with the reason, instead of
    /// failing at its copy.
    pub destination: Option<&'a Capabilities>,
    pub store: &'a dyn StateStore,
    pub retry: &'a RetryPolicy,
    /// The side's listings can go on from a position
    /// ([`Capabilities::resumable_listing`]): each chunk of children is
    /// recorded with where the listing stands, and a listing cut short (a
    /// kill, a passing failure) goes on from the last one recorded.
    pub resumable: bool,
}

impl Lister<'_> {
    /// Lists `task` to completion or failure. Returns the number of children
    /// recorded. Only a store failure is an error: it stops the run.
    pub(crate) fn run(&self, task: &FolderTask) -> Result<u64, StoreError> {
        let mut attempt = 0;
        let mut after = task.resume_after.clone().filter(|_| self.resumable);
        loop {
            attempt += 1;
            let mut sent_any = false;
            match self.list_once(task, &mut after, &mut sent_any) {
                Ok(Ok(count)) => {
                    self.store
                        .folder_listed(self.side, task, task.attempts + attempt)?;
                    return Ok(count);
                }
                Ok(Err(err)) if err.kind.is_temporary() && self.retry.again(attempt) => {
                    tracing::debug!(side = %self.side, path = %task.path, attempt, error = %err, "retrying a listing");
                    // What was sent stays where the listing goes on after
                    // it; elsewhere the folder starts over.
                    if sent_any && !self.resumable {
                        self.store.discard_children(self.side, task)?;
                    }
                    std::thread::sleep(self.retry.delay(attempt, None));
                }
                Ok(Err(err)) => {
                    tracing::warn!(side = %self.side, path = %task.path, error = %err, "folder could not be listed");
                    self.store.folder_failed(
                        self.side,
                        task,
                        failure(&err, task.attempts + attempt),
                    )?;
                    return Ok(0);
                }
                Err(store_err) => return Err(store_err),
            }
        }
    }

    /// One attempt, after the position `after` where there is one (moved
    /// on with each chunk sent). The outer `Result` is the store's, the
    /// inner the backend's.
    fn list_once(
        &self,
        task: &FolderTask,
        after: &mut Option<Vec<u8>>,
        sent_any: &mut bool,
    ) -> Result<Result<u64, BackendError>, StoreError> {
        let listed = match after {
            Some(position) => self.backend.list_children_after(&task.path, position),
            None => self.backend.list_children(&task.path),
        };
        let children = match listed {
            Ok(children) => children,
            Err(e) => return Ok(Err(e)),
        };
        let mut position = None;
        let filtering = !self.filter.is_empty();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut count = 0u64;
        for child in children {
            let mut entry = match child {
                Ok(entry) => entry,
                Err(e) => return Ok(Err(e)),
            };
            if self.resumable {
                position = Some(self.backend.listing_position(&entry));
            }
            // Our own quarantine folder is not part of the destination's tree.
            if self.side == Side::Dst && task.path.is_root() && entry.name == QUARANTINE_DIR {
                continue;
            }
            // Only what the migration keeps is recorded and compared.
            entry.meta = self.keep.apply(self.side, entry.meta);
            // A destination that keeps no mtime of its own lists the time of
            // each upload: no mtime to compare (see the store's comparison),
            // unless its listing read each file's own from its metadata.
            if self.side == Side::Dst && !self.files_own_mtimes {
                entry.mtime_ns = None;
            }
            if !self.keep.hard_links && entry.kind != Kind::Folder {
                entry.file_id = None;
            }
            // A name that cannot be a path never becomes one, whatever the
            // backend: it is recorded under a plain stand-in.
            let cannot_hold = || {
                self.destination
                    .and_then(|caps| caps.cannot_hold(&task.path, &entry.name))
            };
            let left_out = if let Some(problem) = name_problem(&entry.name) {
                let reason = format!("{problem}: \"{}\"", display_bytes(&entry.name));
                entry.name = name_stand_in(&entry.name);
                Some((Status::InvalidName, reason))
            } else if let Some(why) = cannot_hold() {
                Some((Status::InvalidName, why))
            } else if filtering {
                match self.filter.verdict(&task.path.join(&entry.name), &entry) {
                    Verdict::Include => None,
                    Verdict::Exclude(rule) => Some((Status::Excluded, rule)),
                }
            } else {
                None
            };
            chunk.push(ChildRecord { entry, left_out });
            count += 1;
            if chunk.len() == CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                self.send(task, full, &position, after, sent_any)?;
            }
        }
        if !chunk.is_empty() {
            self.send(task, chunk, &position, after, sent_any)?;
        }
        Ok(Ok(count))
    }

    /// Sends a chunk of children with the position after it, which is then
    /// where a retry goes on from.
    fn send(
        &self,
        task: &FolderTask,
        chunk: Vec<ChildRecord>,
        position: &Option<Vec<u8>>,
        after: &mut Option<Vec<u8>>,
        sent_any: &mut bool,
    ) -> Result<(), StoreError> {
        self.store
            .record_children(self.side, task, chunk, position.clone())?;
        *sent_any = true;
        if position.is_some() {
            after.clone_from(position);
        }
        Ok(())
    }
}

/// A backend error as the store records it, after `attempts` attempts.
pub(crate) fn failure(err: &BackendError, attempts: u32) -> Failure {
    Failure {
        operation: err.operation.to_string(),
        kind: err.kind.as_str().to_string(),
        message: err.message.clone(),
        attempts,
    }
}
