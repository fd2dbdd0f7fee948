//! Verify: re-reads the destination for every copied item and records
//! whether it matches what was copied (kind, size, mtime to the second;
//! with `checksum`, the content's BLAKE3 hash against the source's, or
//! the source's MD5 against the one an object store gives of what it
//! holds, which spares reading the object back).

use crate::pool::{self, PoolConfig};
use crate::{Cancel, EngineError};
use md5::Digest as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use treeshift_backend::{Backend, BackendError, ErrorKind, Reader};
use treeshift_core::{
    Entry, Keep, Kind, Md5, Meta, Phase, RelPath, VerifyStatus, VerifySummary, mtime_secs,
    xattr_digest,
};
use treeshift_state::{StateStore, VerifyEvent, VerifyTask};

/// Reports verification progress.
pub trait VerifyProgress: Send + Sync {
    /// How many items will be checked.
    fn start(&self, _items: u64) {}
    /// One item checked, with the bytes hashed for it.
    fn item_done(&self, _bytes: u64) {}
}

impl VerifyProgress for crate::NoProgress {}

/// How verify runs.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Also read both sides' content and compare hashes.
    pub checksum: bool,
    /// Items checked at once.
    pub workers: usize,
    /// Raised to stop; what was checked is recorded.
    pub cancel: Cancel,
}

/// Verifies every copied item.
pub fn verify(
    store: &dyn StateStore,
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    options: &VerifyOptions,
    progress: &dyn VerifyProgress,
) -> Result<VerifySummary, EngineError> {
    let checksum = options.checksum;
    store
        .approval()?
        .ok_or_else(|| EngineError::approval(treeshift_state::StoreError::NotApproved))?;
    let mut keep = store.migration()?.keep;
    // The copy reported, item by item, what the destination would not hold.
    if store.xattrs_refused()? {
        keep.xattrs = false;
        keep.acls = false;
    }
    src.keep(&keep);
    dst.keep(&keep);
    let items = store.begin_verify(checksum)?;
    progress.start(items);
    let config = PoolConfig {
        workers: options.workers,
        pull_batch: 2048,
        commit_every: 4096,
        commit_interval: Duration::from_millis(500),
        cancel: options.cancel.clone(),
    };
    let listed = Listed::default();
    let by_listing = dst.capabilities().listing_stats;
    pool::run(
        &config,
        |after| Ok(store.pull_verify(after, config.pull_batch)?),
        |t| t.id,
        |batch| {
            if by_listing {
                read_back_by_listing(dst.as_ref(), batch, &listed, config.workers);
            }
            Ok(())
        },
        |t| {
            let seen = if by_listing {
                listed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&t.id)
            } else {
                None
            };
            let (status, reason) = match check(src.as_ref(), dst.as_ref(), t, seen, checksum, &keep)
            {
                Ok(None) => (VerifyStatus::Verified, None),
                Ok(Some(why)) => (VerifyStatus::Mismatch, Some(why)),
                Err(e) => (VerifyStatus::Failed, Some(format!("{}: {e}", e.kind))),
            };
            if status != VerifyStatus::Verified {
                tracing::warn!(path = %t.path, status = status.as_str(), reason = reason.as_deref().unwrap_or(""), "verification");
            }
            progress.item_done(if checksum { t.size } else { 0 });
            Ok(VerifyEvent {
                id: t.id,
                depth: t.depth,
                status,
                reason,
            })
        },
        |events| Ok(store.record_verify(events)?),
    )?;
    let summary = store.verify_summary()?.unwrap_or_default();
    if summary.mismatch == 0 && summary.failed == 0 {
        store.set_phase(Phase::Verified)?;
    }
    Ok(summary)
}

/// Destination entries read back by listing their folders, by task id
/// (`None`: the whole listing went by without the name). Holds at most
/// the two batches the pool has out at once.
type Listed = Mutex<HashMap<i64, Option<Entry>>>;

/// Items of one folder in a batch from which listing it pays, rather than
/// a stat for each.
const LIST_FROM: usize = 4;

/// Where the destination's listings carry what a stat does
/// (`Capabilities::listing_stats`), lists once each folder that holds at
/// least [`LIST_FROM`] items of `batch`, `workers` folders at a time,
/// and records what it finds of them in `listed`. What it does not find
/// out (a listing that failed, or a huge folder given up on) is left to a
/// stat, as before.
fn read_back_by_listing(dst: &dyn Backend, batch: &[VerifyTask], listed: &Listed, workers: usize) {
    let mut by_folder: HashMap<RelPath, HashMap<&[u8], i64>> = HashMap::new();
    for t in batch.iter().filter(|t| !t.path.is_root()) {
        by_folder
            .entry(t.path.parent())
            .or_default()
            .insert(t.path.name(), t.id);
    }
    let folders: Vec<_> = by_folder
        .into_iter()
        .filter(|(_, wanted)| wanted.len() >= LIST_FROM)
        .collect();
    // No thread for a batch with no folder to list, nor more than folders.
    let threads = workers.max(1).min(folders.len());
    let folders = Mutex::new(folders.into_iter());
    let next = || folders.lock().unwrap_or_else(|p| p.into_inner()).next();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some((folder, wanted)) = next() {
                    let found = list_for(dst, &folder, wanted);
                    listed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(found);
                }
            });
        }
    });
}

/// The entries of `folder` named in `wanted` (name to task id), and, if
/// the listing went to its end, the names it did not hold as `None`. A
/// folder far larger than what is wanted of it is given up on after a
/// bounded number of entries: those not found by then are stat'ed.
fn list_for(
    dst: &dyn Backend,
    folder: &RelPath,
    mut wanted: HashMap<&[u8], i64>,
) -> Vec<(i64, Option<Entry>)> {
    let Ok(children) = dst.list_children(folder) else {
        return Vec::new();
    };
    let most = wanted.len() * 4 + 1024;
    let mut found = Vec::with_capacity(wanted.len());
    for (seen, child) in children.enumerate() {
        let Ok(entry) = child else {
            return found;
        };
        if let Some(id) = wanted.remove(entry.name.as_slice()) {
            found.push((id, Some(entry)));
            if wanted.is_empty() {
                return found;
            }
        }
        if seen >= most {
            return found;
        }
    }
    found.extend(wanted.into_values().map(|id| (id, None)));
    found
}

const SRC: &str = "source";
const DST: &str = "destination";

/// Why a check ended short of a verdict on content.
enum Stop {
    /// A mismatch, with its reason.
    Mismatch(String),
    /// An error of the backend.
    Failed(BackendError),
}

/// A folder on the way to the item became a symlink or a file on `side`:
/// what was copied is not where it was, and nothing is read through it. A
/// mismatch to report, not a failure to retry.
fn on<T>(side: &str, r: Result<T, BackendError>) -> Result<T, Stop> {
    r.map_err(|e| match e.kind {
        ErrorKind::PathChanged => {
            Stop::Mismatch(format!("{side}: {} ({})", e.message, e.operation))
        }
        _ => Stop::Failed(e),
    })
}

/// `Ok(None)` if the destination matches, `Ok(Some(how))` if not.
fn check(
    src: &dyn Backend,
    dst: &dyn Backend,
    task: &VerifyTask,
    seen: Option<Option<Entry>>,
    checksum: bool,
    keep: &Keep,
) -> Result<Option<String>, BackendError> {
    match compare(src, dst, task, seen, checksum, keep) {
        Ok(verdict) => Ok(verdict),
        Err(Stop::Mismatch(why)) => Ok(Some(why)),
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// `seen`: the destination's entry if its folder's listing gave it (or
/// went by without it); else it is stat'ed.
fn compare(
    src: &dyn Backend,
    dst: &dyn Backend,
    task: &VerifyTask,
    seen: Option<Option<Entry>>,
    checksum: bool,
    keep: &Keep,
) -> Result<Option<String>, Stop> {
    let now = match seen {
        Some(entry) => entry,
        None => on(DST, dst.stat(&task.path))?,
    };
    let Some(now) = now else {
        return Ok(Some("missing on the destination".into()));
    };
    if now.kind != task.kind {
        return Ok(Some(format!(
            "a {} on the destination, a {} was copied",
            now.kind.as_str(),
            task.kind.as_str()
        )));
    }
    if let Some(why) = meta_mismatch(&task.meta, &now.meta) {
        return Ok(Some(why));
    }
    if keep.any_xattrs()
        && matches!(task.kind, Kind::File | Kind::Folder)
        && let Some(want) = task.meta.xattrs
        && xattr_digest(&on(DST, dst.xattrs(&task.path))?) != want
    {
        return Ok(Some(
            "extended attributes or ACLs differ from the source's".into(),
        ));
    }
    if task.kind == Kind::Folder {
        return Ok(None);
    }
    // Where the destination shows no identities (SFTP), a link made there
    // cannot be seen to be one: its data is checked as a file's.
    if keep.hard_links
        && let Some(leader) = &task.link_to
        && dst.capabilities().file_ids
    {
        let other = on(DST, dst.stat(leader))?;
        if now.file_id.is_none() || other.and_then(|o| o.file_id) != now.file_id {
            return Ok(Some(format!(
                "not a hard link of {leader} on the destination"
            )));
        }
    }
    if now.size != task.size {
        return Ok(Some(format!(
            "size {} on the destination, {} copied",
            now.size, task.size
        )));
    }
    if now.mtime_ns.map(mtime_secs) != task.mtime_ns.map(mtime_secs) {
        return Ok(Some("mtime differs from the one copied".into()));
    }
    if checksum && task.kind == Kind::File {
        // Where the store gives the MD5 of what it holds (an object store),
        // the source's MD5 equal to it verifies the content without reading
        // it back; another (an ETag that is no MD5: an encrypted object's)
        // sends it to be read and hashed, as where none is given.
        let (a, source_md5) = on(SRC, hash(src, task, now.md5.is_some()))?;
        if source_md5.is_some() && source_md5 == now.md5 {
            return Ok(None);
        }
        let (b, _) = on(DST, hash(dst, task, false))?;
        if a != b {
            return Ok(Some(format!(
                "content differs (blake3 {} on the source, {} on the destination)",
                &a.to_hex()[..16],
                &b.to_hex()[..16]
            )));
        }
    }
    if checksum
        && task.kind == Kind::Symlink
        && on(SRC, src.read_link(&task.path))? != on(DST, dst.read_link(&task.path))?
    {
        return Ok(Some("symlink target differs".into()));
    }
    Ok(None)
}

/// How the destination's mode and owners differ from what was copied
/// (each checked where the source's was recorded).
fn meta_mismatch(want: &Meta, got: &Meta) -> Option<String> {
    let mut how = Vec::new();
    if let (Some(w), Some(g)) = (want.mode, got.mode)
        && w != g
    {
        how.push(format!("mode {g:04o} on the destination, {w:04o} copied"));
    }
    let owner = |u: Option<u32>, g: Option<u32>| {
        let id = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        format!("{}:{}", id(u), id(g))
    };
    if (want.uid.is_some() && want.uid != got.uid) || (want.gid.is_some() && want.gid != got.gid) {
        how.push(format!(
            "owner {} on the destination, {} copied",
            owner(got.uid, got.gid),
            owner(want.uid, want.gid)
        ));
    }
    (!how.is_empty()).then(|| how.join("; "))
}

/// The BLAKE3 of the item's content on `backend`, and its MD5 too if
/// `with_md5`, in one read.
fn hash(
    backend: &dyn Backend,
    task: &VerifyTask,
    with_md5: bool,
) -> Result<(blake3::Hash, Option<Md5>), BackendError> {
    let mut file = backend.open_read(&task.path)?;
    let mut hashes = Hashes {
        blake3: blake3::Hasher::new(),
        md5: with_md5.then(md5::Md5::new),
    };
    let read = match &mut file.reader {
        Reader::File(f) => std::io::copy(f, &mut hashes),
        Reader::Stream(r) => std::io::copy(r, &mut hashes),
    };
    read.map_err(|e| BackendError::from_io("read", task.path.to_string(), &e))?;
    let md5 = hashes
        .md5
        .and_then(|h| <[u8; 16]>::try_from(h.finalize().as_slice()).ok())
        .map(Md5);
    Ok((hashes.blake3.finalize(), md5))
}

/// The hashes a read feeds.
struct Hashes {
    blake3: blake3::Hasher,
    md5: Option<md5::Md5>,
}

impl std::io::Write for Hashes {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.blake3.update(bytes);
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
