//! Verify: re-reads the destination for every copied item and records
//! whether it matches what was copied (kind, size, mtime to the second;
//! with `checksum`, the content's BLAKE3 hash against the source's).

use crate::pool::{self, PoolConfig};
use crate::{Cancel, EngineError};
use std::sync::Arc;
use std::time::Duration;
use treeshift_backend::{Backend, BackendError, ErrorKind, Reader};
use treeshift_core::{
    Keep, Kind, Meta, Phase, VerifyStatus, VerifySummary, mtime_secs, xattr_digest,
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
    pool::run(
        &config,
        |after| Ok(store.pull_verify(after, config.pull_batch)?),
        |t| t.id,
        |_| Ok(()),
        |t| {
            let (status, reason) = match check(src.as_ref(), dst.as_ref(), t, checksum, &keep) {
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
    checksum: bool,
    keep: &Keep,
) -> Result<Option<String>, BackendError> {
    match compare(src, dst, task, checksum, keep) {
        Ok(verdict) => Ok(verdict),
        Err(Stop::Mismatch(why)) => Ok(Some(why)),
        Err(Stop::Failed(e)) => Err(e),
    }
}

fn compare(
    src: &dyn Backend,
    dst: &dyn Backend,
    task: &VerifyTask,
    checksum: bool,
    keep: &Keep,
) -> Result<Option<String>, Stop> {
    let Some(now) = on(DST, dst.stat(&task.path))? else {
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
        let (a, b) = (on(SRC, hash(src, task))?, on(DST, hash(dst, task))?);
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

fn hash(backend: &dyn Backend, task: &VerifyTask) -> Result<blake3::Hash, BackendError> {
    let mut file = backend.open_read(&task.path)?;
    let mut hasher = blake3::Hasher::new();
    let read = match &mut file.reader {
        Reader::File(f) => std::io::copy(f, &mut hasher),
        Reader::Stream(r) => std::io::copy(r, &mut hasher),
    };
    read.map_err(|e| BackendError::from_io("read", task.path.to_string(), &e))?;
    Ok(hasher.finalize())
}
