//! Discovery against the simulated and local backends, checked against an
//! independent oracle (`sim::expected_counts`, a naive recursive compare).

use std::sync::{Arc, Mutex};
use treeshift_backend::sim::{SimBackend, expected_counts};
use treeshift_backend::{Backend, local::LocalBackend};
use treeshift_core::{Filter, Side, Summary};
use treeshift_engine::{DiscoverOptions, DiscoveryProgress, NoProgress, discover};
use treeshift_store::{
    MigrationSpec, OpenMode, ReviewItem, ReviewSelect, StateStore, Store, StoreHandle,
};

fn run(
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    excludes: &[&str],
) -> (tempfile::TempDir, Summary) {
    run_with(src, dst, excludes, Arc::new(NoProgress))
}

fn run_with(
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    excludes: &[&str],
    progress: Arc<dyn DiscoveryProgress>,
) -> (tempfile::TempDir, Summary) {
    let dir = tempfile::tempdir().unwrap();
    let filter = treeshift_core::FilterSpec {
        excludes: excludes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let spec = MigrationSpec {
        src: src.describe(),
        dst: dst.describe(),
        filter: filter.clone(),
        dst_case_insensitive: false,
        keep: treeshift_core::Keep::everything(treeshift_core::Owners::Keep),
    };
    let (store, _) = Store::open(
        &dir.path().join("s.duckdb"),
        OpenMode::CreateOrResume(Box::new(spec)),
    )
    .unwrap();
    let options = DiscoverOptions {
        workers: 4,
        base_delay: std::time::Duration::from_millis(1),
        ..DiscoverOptions::default()
    };
    let summary = discover(
        &store.handle(),
        src,
        dst,
        &Filter::new(&filter).unwrap(),
        &options,
        progress,
    )
    .unwrap();
    store.close().unwrap();
    (dir, summary)
}

fn sim(params: &str) -> Arc<dyn Backend> {
    Arc::new(SimBackend::from_params(params).unwrap())
}

fn review(dir: &tempfile::TempDir, select: ReviewSelect) -> Vec<ReviewItem> {
    let (store, _) = Store::open(&dir.path().join("s.duckdb"), OpenMode::Existing).unwrap();
    let handle: StoreHandle = store.handle();
    let (tx, rx) = crossbeam_channel::unbounded();
    handle.review(select, tx).unwrap();
    store.close().unwrap();
    rx.iter().flatten().collect()
}

#[test]
fn sim_against_mutated_sim_matches_the_oracle() {
    let base = "seed=7,depth=3,fanout=4,files=6,symlinks=1,specials=1";
    let src = sim(base);
    let dst = sim(&format!(
        "{base},mutate=3,del_dirs=20,del_files=25,modify=10,extra=20"
    ));
    let want = expected_counts(src.as_ref(), dst.as_ref());
    let (_dir, got) = run(src, dst, &[]);
    assert!(got.is_done());
    assert_eq!(got.src.folders, want.src_folders);
    assert_eq!(got.src.files, want.src_files);
    assert_eq!(got.src.bytes, want.src_bytes);
    assert_eq!(got.src.symlinks, want.src_symlinks);
    assert_eq!(got.src.special, want.src_special);
    assert_eq!(got.dst.folders, want.dst_folders);
    assert_eq!(got.dst.files, want.dst_files);
    assert_eq!(got.dst.bytes, want.dst_bytes);
    assert_eq!(got.missing, want.missing);
    assert_eq!(got.same, want.same);
    assert_eq!(got.differs, want.differs);
    assert_eq!(got.conflict, want.conflict);
    assert_eq!(got.extra, want.extra);
    assert_eq!((got.failed, got.unclassified, got.excluded), (0, 0, 0));
    assert!(got.missing > 0 && got.differs > 0 && got.extra > 0);
}

#[test]
fn absent_destination_root_makes_everything_missing() {
    let src = sim("seed=2,depth=2,fanout=3,files=4");
    let dir = tempfile::tempdir().unwrap();
    let dst: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("not-yet")));
    let (_state, got) = run(Arc::clone(&src), dst, &[]);
    assert_eq!(got.src.folders, 12);
    assert_eq!(got.src.files, 52);
    assert_eq!(got.missing, 64);
    assert_eq!(got.to_copy.files, 52);
    assert_eq!(got.to_copy.folders, 12);
    assert_eq!(got.to_copy.bytes, got.src.bytes);
    assert_eq!(got.dst, Default::default());
}

#[test]
fn transient_faults_are_retried_to_the_same_result() {
    let base = "seed=5,depth=3,fanout=3,files=5";
    let (_a, clean) = run(sim(base), sim(&format!("{base},mutate=9")), &[]);
    let (_b, faulty) = run(
        sim(&format!("{base},fail_transient=0.3")),
        sim(&format!("{base},mutate=9,fail_transient=0.3")),
        &[],
    );
    assert_eq!(faulty.failed, 0);
    let strip = |s: Summary| Summary {
        src_rounds: Default::default(),
        dst_rounds: Default::default(),
        ..s
    };
    assert_eq!(strip(faulty), strip(clean));
}

#[test]
fn permission_denied_fails_the_folder_and_siblings_continue() {
    let base = "seed=11,depth=3,fanout=4,files=3";
    let (dir, got) = run(
        sim(&format!("{base},fail_perm=0.2")),
        sim(&format!(
            "{base},mutate=1,del_dirs=0,del_files=0,modify=0,extra=0"
        )),
        &[],
    );
    assert!(got.failed > 0, "some folders fail");
    assert!(got.is_done());
    // A failed src listing never makes its dst children look extra.
    assert_eq!(got.extra, 0);
    let failed = review(&dir, ReviewSelect::Failed);
    assert_eq!(failed.len() as u64, got.failed);
    for item in &failed {
        assert_eq!(item.side, Side::Src);
        let reason = item.reason.as_deref().unwrap();
        assert!(reason.starts_with("permission_denied"), "{reason}");
    }
}

#[test]
fn excluded_nodes_are_recorded_with_their_rule_and_not_traversed() {
    let base = "seed=3,depth=2,fanout=3,files=4";
    let (dir, got) = run(
        sim(base),
        sim(&format!("{base},mutate=2")),
        &["d01", "f0001.dat"],
    );
    let excluded = review(&dir, ReviewSelect::Status(treeshift_core::Status::Excluded));
    assert_eq!(excluded.len() as u64, got.excluded);
    // Folders: d01, d00/d01, d02/d01 (d01's subtree is never listed).
    // Files: f0001.dat in each of the 7 folders listed.
    assert!(
        excluded
            .iter()
            .any(|i| i.path.as_bytes() == b"d01" && i.reason.as_deref() == Some("exclude:d01"))
    );
    assert!(
        !excluded
            .iter()
            .any(|i| i.path.as_bytes().starts_with(b"d01/"))
    );
    assert_eq!(got.excluded, 3 + 7);
    assert_eq!(got.unclassified, 0);
}

/// Records the order of round events to check the coordinator's gate.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Side, &'static str, u32, bool)>>);

impl DiscoveryProgress for Recorder {
    fn round_started(&self, side: Side, round: u32, _pending: u64) {
        self.0.lock().unwrap().push((side, "start", round, false));
    }
    fn round_sealed(&self, side: Side, round: u32, done: bool) {
        self.0.lock().unwrap().push((side, "seal", round, done));
    }
}

#[test]
fn dst_round_n_starts_only_after_src_sealed_n_and_n_plus_1() {
    let base = "seed=4,depth=4,fanout=3,files=2";
    let rec = Arc::new(Recorder::default());
    run_with(
        sim(base),
        sim(&format!("{base},mutate=5,del_dirs=0")),
        &[],
        rec.clone(),
    );
    let events = rec.0.lock().unwrap().clone();
    let mut src_sealed: Option<u32> = None;
    let mut src_done = false;
    let mut dst_rounds = 0;
    for (side, what, round, done) in events {
        match (side, what) {
            (Side::Src, "seal") => {
                src_sealed = Some(round);
                src_done |= done;
            }
            (Side::Dst, "start") => {
                dst_rounds += 1;
                assert!(
                    src_done || src_sealed.is_some_and(|s| s > round),
                    "dst round {round} started early"
                );
            }
            _ => {}
        }
    }
    assert!(dst_rounds >= 5);
}

#[cfg(unix)]
#[test]
fn local_trees_with_hostile_names_links_and_fifos() {
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let names: [&[u8]; 5] = [
        b"new\nline",
        b"bad\xff\xfe",
        &[b'n'; 255],
        b" lead and trail ",
        b"tab\there",
    ];
    for root in [src.path(), dst.path()] {
        fs::create_dir(root.join("sub")).unwrap();
    }
    for n in names {
        fs::write(src.path().join("sub").join(OsStr::from_bytes(n)), b"data").unwrap();
    }
    std::os::unix::fs::symlink("sub", src.path().join("link")).unwrap();
    let fifo = src.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Same name, different kinds: a conflict.
    fs::write(src.path().join("clash"), b"file").unwrap();
    fs::create_dir(dst.path().join("clash")).unwrap();
    fs::write(dst.path().join("only-on-dst"), b"x").unwrap();
    // `sub` alike on both sides, its mtime too (writing into the source's
    // moved it, across a second now and then: CI saw it differ once).
    let alike = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for root in [src.path(), dst.path()] {
        fs::File::open(root.join("sub"))
            .unwrap()
            .set_modified(alike)
            .unwrap();
    }

    let (dir, got) = run(
        Arc::new(LocalBackend::new(src.path())),
        Arc::new(LocalBackend::new(dst.path())),
        &[],
    );
    assert_eq!(got.src.files, 6);
    assert_eq!(got.src.symlinks, 1);
    assert_eq!(got.src.special, 1);
    assert_eq!(got.conflict, 1);
    assert_eq!(got.extra, 1);
    assert_eq!(got.same, 1, "sub");
    assert_eq!(got.missing, 5 + 2);
    let missing = review(&dir, ReviewSelect::Status(treeshift_core::Status::Missing));
    for n in names {
        let want = [b"sub/".as_slice(), n].concat();
        assert!(
            missing.iter().any(|i| i.path.as_bytes() == want.as_slice()),
            "{n:?}"
        );
    }
}

/// Every folder of `backend` whose listing is refused, walking only what
/// can be listed: the failures a discovery must report, no more, no less.
fn refused_folders(backend: &dyn Backend) -> Vec<treeshift_core::RelPath> {
    let mut refused = Vec::new();
    let mut queue = std::collections::VecDeque::from([treeshift_core::RelPath::root()]);
    while let Some(folder) = queue.pop_front() {
        match backend.list_children(&folder) {
            Ok(children) => {
                for child in children {
                    let child = child.unwrap();
                    if child.kind == treeshift_core::Kind::Folder {
                        queue.push_back(folder.join(&child.name));
                    }
                }
            }
            Err(e) => {
                assert_eq!(e.kind, treeshift_backend::ErrorKind::PermissionDenied);
                refused.push(folder);
            }
        }
    }
    refused.sort();
    refused
}

#[test]
fn transient_faults_end_in_nothing_failed_and_permanent_ones_are_reported_exactly() {
    let base = "seed=21,depth=4,fanout=6,files=3";
    let (_dir, got) = run(
        sim(&format!("{base},fail_transient=0.05")),
        sim(&format!("{base},mutate=4,fail_transient=0.05")),
        &[],
    );
    assert_eq!(got.failed, 0, "5 % transient faults are all retried away");

    let faulty = format!("{base},fail_perm=0.01,fail_transient=0.05");
    let want =
        refused_folders(&SimBackend::from_params(&format!("{base},fail_perm=0.01")).unwrap());
    assert!(want.len() >= 5, "the seed gives some refusals: {want:?}");
    let (dir, got) = run(sim(&faulty), sim(&format!("{base},mutate=4")), &[]);
    let mut failed: Vec<_> = review(&dir, ReviewSelect::Failed)
        .into_iter()
        .map(|item| {
            assert_eq!(item.side, Side::Src);
            let reason = item.reason.unwrap_or_default();
            assert!(reason.starts_with("permission_denied"), "{reason}");
            item.path
        })
        .collect();
    failed.sort();
    assert_eq!(failed, want);
    assert_eq!(got.failed, want.len() as u64);

    // A retry sweep lists exactly those folders again; the simulated
    // refusals are permanent, so each fails once more and nothing else
    // changes.
    let (store, _) = Store::open(&dir.path().join("s.duckdb"), OpenMode::Existing).unwrap();
    let handle = store.handle();
    let requeued = handle.requeue_failed_folders(None).unwrap();
    assert_eq!(requeued.src, want.len() as u64);
    let options = DiscoverOptions {
        workers: 4,
        base_delay: std::time::Duration::from_millis(1),
        ..DiscoverOptions::default()
    };
    let again = discover(
        &handle,
        sim(&faulty),
        sim(&format!("{base},mutate=4")),
        &Filter::new(&Default::default()).unwrap(),
        &options,
        Arc::new(NoProgress),
    )
    .unwrap();
    store.close().unwrap();
    assert_eq!(again.failed, want.len() as u64);
    assert_eq!(
        Summary {
            src_rounds: Default::default(),
            dst_rounds: Default::default(),
            ..again
        },
        Summary {
            src_rounds: Default::default(),
            dst_rounds: Default::default(),
            ..got
        }
    );
}
