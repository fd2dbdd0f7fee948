//! A run asked to stop stops, and the next run ends exactly where an
//! uninterrupted one does: discovery (the round in progress is not
//! sealed), copy and verify (what was in flight is recorded, the rest
//! stays pending).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use treeshift_backend::Backend;
use treeshift_backend::local::LocalBackend;
use treeshift_backend::sim::SimBackend;
use treeshift_core::{Extras, Filter, FilterSpec, Keep, Owners, Policy, Summary};
use treeshift_engine::{
    Cancel, CopyOptions, CopyProgress, DiscoverOptions, DiscoveryProgress, EngineError, NoProgress,
    VerifyOptions, copy, discover, verify,
};
use treeshift_store::{MigrationSpec, OpenMode, StateStore, Store, StoreHandle};

const TREE: &str = "seed=7,depth=3,fanout=4,files=6,latency_us=300";

fn open(state: &std::path::Path, src: &dyn Backend, dst: &dyn Backend) -> Store {
    let spec = MigrationSpec {
        src: src.describe(),
        dst: dst.describe(),
        filter: FilterSpec::default(),
        dst_case_insensitive: false,
        keep: Keep::everything(Owners::Ignore),
    };
    Store::open(state, OpenMode::CreateOrResume(Box::new(spec)))
        .unwrap()
        .0
}

/// Raises `cancel` once `after` folders (or files) are done.
struct CancelAfter {
    done: AtomicU64,
    after: u64,
    cancel: Cancel,
}

impl CancelAfter {
    fn tick(&self) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.cancel.cancel();
        }
    }
}

impl DiscoveryProgress for CancelAfter {
    fn folder_done(&self, _side: treeshift_core::Side, _children: u64) {
        self.tick();
    }
}

impl CopyProgress for CancelAfter {
    fn file_done(&self, _bytes: u64) {
        self.tick();
    }
}

fn discover_once(
    h: &StoreHandle,
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    progress: Arc<dyn DiscoveryProgress>,
    cancel: &Cancel,
) -> Result<Summary, EngineError> {
    let options = DiscoverOptions {
        workers: 4,
        cancel: cancel.clone(),
        ..DiscoverOptions::default()
    };
    let filter = Filter::new(&FilterSpec::default()).unwrap();
    discover(h, src.clone(), dst.clone(), &filter, &options, progress)
}

#[test]
fn a_cancelled_discovery_copy_and_verify_resume_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let src: Arc<dyn Backend> = Arc::new(SimBackend::from_params(TREE).unwrap());
    let dst_root = dir.path().join("dst");
    let dst: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dst_root));

    // The uninterrupted discovery, on a state file of its own.
    let whole = open(&dir.path().join("whole.duckdb"), &*src, &*dst);
    let want = discover_once(
        &whole.handle(),
        &src,
        &dst,
        Arc::new(NoProgress),
        &Cancel::new(),
    )
    .unwrap();
    whole.close().unwrap();

    let store = open(&dir.path().join("s.duckdb"), &*src, &*dst);
    let h = store.handle();
    let cancel = Cancel::new();
    let stopper = Arc::new(CancelAfter {
        done: AtomicU64::new(0),
        after: 10,
        cancel: cancel.clone(),
    });
    let stopped = discover_once(&h, &src, &dst, stopper, &cancel);
    assert!(
        matches!(stopped, Err(EngineError::Cancelled)),
        "{stopped:?}"
    );
    assert!(!h.progress().unwrap().src_done, "stopped before the end");
    let got = discover_once(&h, &src, &dst, Arc::new(NoProgress), &Cancel::new()).unwrap();
    assert_eq!(got, want);

    h.approve(Policy::Skip, Extras::Leave, "test").unwrap();
    let cancel = Cancel::new();
    let stopper = CancelAfter {
        done: AtomicU64::new(0),
        after: 20,
        cancel: cancel.clone(),
    };
    let options = CopyOptions {
        workers: 4,
        cancel: cancel.clone(),
        ..CopyOptions::default()
    };
    let stopped = copy(&h, src.clone(), dst.clone(), &options, &stopper);
    assert!(
        matches!(stopped, Err(EngineError::Cancelled)),
        "{stopped:?}"
    );
    assert!(!h.copy_summary().unwrap().is_finished());
    let copied = copy(
        &h,
        src.clone(),
        dst.clone(),
        &CopyOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(copied.is_finished(), "{copied:?}");
    assert_eq!((copied.failed, copied.changed), (0, 0));
    assert_eq!(copied.copied + copied.skipped, copied.planned);
    assert!(copied.copied > 20);

    let cancel = Cancel::new();
    cancel.cancel();
    let options = VerifyOptions {
        checksum: true,
        workers: 4,
        cancel,
    };
    let stopped = verify(&h, src.clone(), dst.clone(), &options, &NoProgress);
    assert!(
        matches!(stopped, Err(EngineError::Cancelled)),
        "{stopped:?}"
    );
    let options = VerifyOptions {
        checksum: true,
        workers: 4,
        cancel: Cancel::new(),
    };
    let verified = verify(&h, src, dst, &options, &NoProgress).unwrap();
    assert_eq!((verified.mismatch, verified.failed), (0, 0), "{verified:?}");
    assert_eq!(verified.verified, copied.copied);
    store.close().unwrap();
}
