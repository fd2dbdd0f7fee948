//! Discovery by the real engine with its state on PostgreSQL, checked
//! against the same discovery on a DuckDB file: every node's status and
//! reason, and the summary, must agree. The two stores compare in
//! different ways (set-based SQL at each seal; one folder pair at a time
//! under the destination folder's lease), so this is what keeps them
//! from drifting apart.

mod cluster;

use cluster::{Cluster, assert_nothing_doubled};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use treeshift_backend::Backend;
use treeshift_backend::local::LocalBackend;
use treeshift_backend::sim::SimBackend;
use treeshift_core::{Filter, FilterSpec, Keep, Owners, RelPath, Side, Status, Summary};
use treeshift_engine::{Cancel, DiscoverOptions, DiscoveryProgress, NoProgress, discover};
use treeshift_state::{
    BrowseChild, MigrationSpec, OpenMode, ReviewFilter, ReviewSelect, StateStore,
};
use treeshift_store::Store;
use treeshift_store_pg::PgStore;

/// A node as a store classified it: side, path, status, reason.
type Classified = BTreeSet<(String, Vec<u8>, String, Option<String>)>;

fn spec(src: &dyn Backend, dst: &dyn Backend, case_insensitive: bool) -> MigrationSpec {
    MigrationSpec {
        src: src.describe(),
        dst: dst.describe(),
        filter: FilterSpec {
            excludes: vec!["node_modules/".into()],
            ..Default::default()
        },
        dst_case_insensitive: case_insensitive,
        keep: Keep::everything(Owners::Keep),
    }
}

fn options(cancel: Cancel) -> DiscoverOptions {
    DiscoverOptions {
        workers: 4,
        pull_batch: 7,
        base_delay: Duration::from_millis(1),
        cancel,
        ..DiscoverOptions::default()
    }
}

fn run(
    store: &dyn StateStore,
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    cancel: Cancel,
    progress: Arc<dyn DiscoveryProgress>,
) -> Result<Summary, treeshift_engine::EngineError> {
    let filter = Filter::new(&store.migration().unwrap().filter).unwrap();
    discover(
        store,
        src.clone(),
        dst.clone(),
        &filter,
        &options(cancel),
        progress,
    )
}

/// Every node `store`'s review shows, by comparison status.
fn classified(store: &dyn StateStore) -> Classified {
    let mut classified = Classified::new();
    for status in Status::ALL {
        let (tx, rx) = crossbeam_channel::unbounded();
        store.review(ReviewSelect::Status(status), tx).unwrap();
        for item in rx.iter().flatten() {
            let side = item.side.as_str().to_string();
            classified.insert((
                side,
                item.path.as_bytes().to_vec(),
                item.status,
                item.reason,
            ));
        }
    }
    classified
}

/// Discovery on a DuckDB file: its summary and every classified node.
fn on_duckdb(
    spec: MigrationSpec,
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
) -> (Summary, Classified) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(
        &dir.path().join("s.duckdb"),
        OpenMode::CreateOrResume(Box::new(spec)),
    )
    .unwrap();
    let handle = store.handle();
    let summary = run(&handle, src, dst, Cancel::new(), Arc::new(NoProgress)).unwrap();
    let classified = classified(&handle);
    drop(handle);
    store.close().unwrap();
    (summary, classified)
}

/// Every node the PostgreSQL store's review shows; each destination node
/// of a pair shares its source node's comparison (the review shows only
/// the source's).
fn classified_on_pg(url: &str) -> Classified {
    assert_pairs_share_their_comparison(url);
    let store = PgStore::open(url, OpenMode::Existing).unwrap().0;
    classified(&store)
}

/// Every destination node that pairs with a source node has the source
/// node's comparison, reason included (an excluded one, the exclusion).
fn assert_pairs_share_their_comparison(url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let latest = |side: &str, alias: &str| {
        format!(
            "(SELECT x.status, x.reason FROM {side}_status_events x WHERE x.node_id = {alias}.id \
              AND x.phase = 'compare' ORDER BY x.seq DESC LIMIT 1)"
        )
    };
    let rows = client
        .query(
            &format!(
                "SELECT d.rel_path, ds.status, ds.reason, ss.status, ss.reason \
                 FROM dst_nodes d JOIN src_nodes s ON s.rel_path = d.rel_path \
                 JOIN LATERAL {dl} ds ON true JOIN LATERAL {sl} ss ON true \
                 WHERE ds.status <> 'extra' \
                   AND (ds.status, ds.reason) IS DISTINCT FROM (ss.status, ss.reason)",
                dl = latest("dst", "d"),
                sl = latest("src", "s"),
            ),
            &[],
        )
        .unwrap();
    let differ: Vec<String> = rows
        .iter()
        .map(|r| {
            let path: Vec<u8> = r.get(0);
            let (ds, dr, ss, sr): (String, Option<String>, String, Option<String>) =
                (r.get(1), r.get(2), r.get(3), r.get(4));
            format!(
                "{}: dst {ds} {dr:?}, src {ss} {sr:?}",
                String::from_utf8_lossy(&path)
            )
        })
        .collect();
    assert!(differ.is_empty(), "pairs compared apart: {differ:#?}");
}

/// Fails with the nodes the two stores classified differently, if any.
fn assert_same_nodes(got: &Classified, want: &Classified) {
    let shown = |set: std::collections::btree_set::Difference<'_, _>| {
        set.take(20)
            .map(
                |(side, path, status, reason): &(String, Vec<u8>, String, Option<String>)| {
                    format!(
                        "{side} {} {status} {reason:?}",
                        String::from_utf8_lossy(path)
                    )
                },
            )
            .collect::<Vec<_>>()
    };
    let (extra, lacking) = (shown(got.difference(want)), shown(want.difference(got)));
    assert!(
        extra.is_empty() && lacking.is_empty(),
        "on PostgreSQL only: {extra:#?}\non DuckDB only: {lacking:#?}"
    );
}

fn write(path: &Path, bytes: &[u8], mtime_secs: u64, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
        .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Two local trees with one of everything discovery can find: the same,
/// a size, an mtime, a mode that differ, missing files and a missing
/// folder with a subtree, a file where the destination has a folder,
/// extras, and a folder the filter excludes on both sides, a few levels
/// deep.
fn trees(root: &Path) -> (Arc<dyn Backend>, Arc<dyn Backend>) {
    let (src, dst) = (root.join("src"), root.join("dst"));
    for side in [&src, &dst] {
        write(&side.join("a/same.txt"), b"same", 1_000, 0o644);
        write(
            &side.join("a/deep/er/still/same.bin"),
            b"0123",
            1_000,
            0o644,
        );
        write(&side.join("node_modules/x.js"), b"x", 1_000, 0o644);
    }
    write(&src.join("a/size.txt"), b"four", 1_000, 0o644);
    write(&dst.join("a/size.txt"), b"three", 1_000, 0o644);
    write(&src.join("a/mtime.txt"), b"t", 1_000, 0o644);
    write(&dst.join("a/mtime.txt"), b"t", 2_000, 0o644);
    write(&src.join("a/mode.sh"), b"#!", 1_000, 0o755);
    write(&dst.join("a/mode.sh"), b"#!", 1_000, 0o644);
    write(&src.join("a/only-src.txt"), b"new", 1_000, 0o644);
    write(&src.join("b/c/d/new.txt"), b"new", 1_000, 0o644);
    write(&src.join("b/top.txt"), b"new", 1_000, 0o644);
    write(&src.join("clash"), b"file here", 1_000, 0o644);
    write(&dst.join("clash/inside.txt"), b"folder there", 1_000, 0o644);
    write(&dst.join("a/only-dst.txt"), b"old", 1_000, 0o644);
    write(&dst.join("gone/below/old.txt"), b"old", 1_000, 0o644);
    // Folders last, so writing into them does not move their mtimes.
    for side in [&src, &dst] {
        for folder in walk_folders(side) {
            let f = std::fs::File::open(&folder).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(500))
                .unwrap();
        }
    }
    (
        Arc::new(LocalBackend::new(&src)),
        Arc::new(LocalBackend::new(&dst)),
    )
}

fn walk_folders(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        for e in std::fs::read_dir(&out[i]).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

fn create_pg(url: &str, spec: MigrationSpec) -> PgStore {
    PgStore::open(url, OpenMode::CreateOrResume(Box::new(spec)))
        .unwrap()
        .0
}

#[test]
fn a_discovery_on_postgresql_classifies_every_node_as_on_duckdb() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = trees(dir.path());
    let (want, want_nodes) = on_duckdb(spec(src.as_ref(), dst.as_ref(), false), &src, &dst);
    // Everything the trees were built to hold was found.
    assert!(want.is_done());
    assert!(want.same > 0 && want.missing > 0 && want.differs >= 3 && want.conflict == 1);
    assert!(want.extra > 0 && want.excluded > 0, "{want:?}");
    assert!(
        want_nodes
            .iter()
            .any(|n| n.3.as_deref() == Some("metadata: mode 0755 on src, 0644 on dst")),
        "{want_nodes:?}"
    );

    let url = cluster.database("same");
    let store = create_pg(&url, spec(src.as_ref(), dst.as_ref(), false));
    let got = run(&store, &src, &dst, Cancel::new(), Arc::new(NoProgress)).unwrap();
    assert_eq!(got, want);
    assert_same_nodes(&classified_on_pg(&url), &want_nodes);
    assert_nothing_doubled(&url);
    assert_eq!(
        StateStore::phase(&store).unwrap(),
        treeshift_core::Phase::Discovered
    );
}

#[test]
fn names_that_clash_by_case_on_the_destination_are_excluded_as_on_duckdb() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src_root, dst_root) = (dir.path().join("src"), dir.path().join("dst"));
    // A clash of folders at the top, one of files below.
    // (`Docs` sorts first, and is kept.)
    write(&src_root.join("docs/x"), b"x", 1_000, 0o644);
    write(&src_root.join("Docs/inner/README"), b"upper", 1_000, 0o644);
    write(&src_root.join("Docs/inner/readme"), b"lower", 1_000, 0o644);
    std::fs::create_dir_all(&dst_root).unwrap();
    let src: Arc<dyn Backend> = Arc::new(LocalBackend::new(&src_root));
    let dst: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dst_root));
    let (want, want_nodes) = on_duckdb(spec(src.as_ref(), dst.as_ref(), true), &src, &dst);
    assert_eq!(want.excluded, 2, "{want:?}");

    let url = cluster.database("clash");
    let store = create_pg(&url, spec(src.as_ref(), dst.as_ref(), true));
    let got = run(&store, &src, &dst, Cancel::new(), Arc::new(NoProgress)).unwrap();
    assert_eq!(got, want);
    assert_same_nodes(&classified_on_pg(&url), &want_nodes);
}

const TREE: &str = "seed=11,depth=3,fanout=5,files=4,symlinks=1,latency_us=2000";
const MUTATED: &str = "mutate=5,del_dirs=15,del_files=20,modify=10,extra=15";

fn sims() -> (Arc<dyn Backend>, Arc<dyn Backend>) {
    let src: Arc<dyn Backend> = Arc::new(SimBackend::from_params(TREE).unwrap());
    let dst: Arc<dyn Backend> =
        Arc::new(SimBackend::from_params(&format!("{TREE},{MUTATED}")).unwrap());
    (src, dst)
}

#[test]
fn two_stores_discovering_one_migration_at_once_end_as_one_alone() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (src, dst) = sims();
    let (want, want_nodes) = on_duckdb(spec(src.as_ref(), dst.as_ref(), false), &src, &dst);
    assert!(want.missing > 0 && want.differs > 0 && want.extra > 0);

    let url = cluster.database("together");
    let first = create_pg(&url, spec(src.as_ref(), dst.as_ref(), false));
    // Two stores, each with its own connection and leases, as two
    // processes on two hosts would have.
    let second = PgStore::open(&url, OpenMode::Existing).unwrap().0;
    let listed = [Arc::new(Listed::default()), Arc::new(Listed::default())];
    let summaries: Vec<Summary> = std::thread::scope(|scope| {
        let runs: Vec<_> = [&first, &second]
            .into_iter()
            .zip(&listed)
            .map(|(store, listed)| {
                let (src, dst) = (&src, &dst);
                let listed: Arc<dyn DiscoveryProgress> = listed.clone();
                scope.spawn(move || run(store, src, dst, Cancel::new(), listed).unwrap())
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(summaries[0], want);
    assert_eq!(summaries[1], want);
    let listed: Vec<u64> = listed.iter().map(|l| l.0.load(Ordering::SeqCst)).collect();
    assert!(
        listed.iter().all(|&n| n > 0),
        "both took part in the listing: {listed:?}"
    );
    assert_same_nodes(&classified_on_pg(&url), &want_nodes);
    assert_nothing_doubled(&url);
}

/// Counts the folders a run listed.
#[derive(Default)]
struct Listed(AtomicU64);

impl DiscoveryProgress for Listed {
    fn folder_done(&self, _side: Side, _children: u64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Raises `cancel` once `after` folders are listed.
struct CancelAfter {
    listed: AtomicU64,
    after: u64,
    cancel: Cancel,
}

impl DiscoveryProgress for CancelAfter {
    fn folder_done(&self, _side: Side, _children: u64) {
        if self.listed.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.cancel.cancel();
        }
    }
}

#[test]
fn a_discovery_stopped_twice_on_postgresql_resumes_to_the_uninterrupted_result() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (src, dst) = sims();
    let (want, want_nodes) = on_duckdb(spec(src.as_ref(), dst.as_ref(), false), &src, &dst);

    let url = cluster.database("stopped");
    create_pg(&url, spec(src.as_ref(), dst.as_ref(), false));
    for after in [9, 40] {
        // A new store each time, as a new process: the one stopped gave
        // its unfinished leases back when it was dropped.
        let store = PgStore::open(&url, OpenMode::Existing).unwrap().0;
        let cancel = Cancel::new();
        let progress = Arc::new(CancelAfter {
            listed: AtomicU64::new(0),
            after,
            cancel: cancel.clone(),
        });
        let stopped = run(&store, &src, &dst, cancel, progress);
        assert!(stopped.is_err(), "stopped after {after} folders");
    }
    let store = PgStore::open(&url, OpenMode::Existing).unwrap().0;
    let got = run(&store, &src, &dst, Cancel::new(), Arc::new(NoProgress)).unwrap();
    assert_eq!(got, want);
    assert_same_nodes(&classified_on_pg(&url), &want_nodes);
    assert_nothing_doubled(&url);
}

/// A review item as a page shows it: side, path, status, reason, size.
type PagedItem = (String, Vec<u8>, String, Option<String>, u64);

/// Every item of `select` passing `filter`, read `limit` at a time by
/// review pages, each page after the last item of the one before.
fn paged(
    store: &dyn StateStore,
    select: ReviewSelect,
    filter: &ReviewFilter,
    limit: usize,
) -> Vec<PagedItem> {
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let page = store
            .review_page(select, after.clone(), filter.clone(), limit)
            .unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else {
            return out;
        };
        after = Some((last.side, last.path.clone()));
        out.extend(page.into_iter().map(|i| {
            (
                i.side.as_str().to_string(),
                i.path.as_bytes().to_vec(),
                i.status,
                i.reason,
                i.size,
            )
        }));
    }
}

/// Every child of `folder`, read `limit` at a time, each below-count
/// sorted by status.
fn browsed(store: &dyn StateStore, folder: &str, limit: usize) -> Vec<BrowseChild> {
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let page = store
            .browse(
                RelPath::from_bytes(folder.as_bytes().to_vec()),
                after.clone(),
                limit,
            )
            .unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = Some(last.path.clone());
        out.extend(page.into_iter().map(|mut c| {
            c.below.sort_by(|a, b| a.status.cmp(&b.status));
            c
        }));
    }
}

#[test]
fn review_pages_and_browsing_on_postgresql_give_what_they_give_on_duckdb() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = trees(dir.path());
    let (file, _) = Store::open(
        &dir.path().join("s.duckdb"),
        OpenMode::CreateOrResume(Box::new(spec(src.as_ref(), dst.as_ref(), false))),
    )
    .unwrap();
    let file = file.handle();
    run(&file, &src, &dst, Cancel::new(), Arc::new(NoProgress)).unwrap();
    let url = cluster.database("pages");
    let pg = create_pg(&url, spec(src.as_ref(), dst.as_ref(), false));
    run(&pg, &src, &dst, Cancel::new(), Arc::new(NoProgress)).unwrap();

    let everything = ReviewFilter::default();
    let filters = [
        everything.clone(),
        ReviewFilter {
            prefix: Some(RelPath::from_bytes(b"a".to_vec())),
            ..ReviewFilter::default()
        },
        ReviewFilter {
            min_size: Some(4),
            max_size: Some(4),
            ..ReviewFilter::default()
        },
        // Any case.
        ReviewFilter {
            search: Some("ONLY".into()),
            ..ReviewFilter::default()
        },
    ];
    let selects = Status::ALL
        .into_iter()
        .map(ReviewSelect::Status)
        .chain([ReviewSelect::Actionable, ReviewSelect::Failed]);
    for select in selects {
        for filter in &filters {
            let want = paged(&file, select, filter, 1_000);
            // Pages of two go through every item once, in order.
            assert_eq!(paged(&pg, select, filter, 2), want, "{select:?} {filter:?}");
            assert_eq!(
                paged(&pg, select, filter, 1_000),
                want,
                "{select:?} {filter:?}"
            );
        }
    }
    let all = paged(&pg, ReviewSelect::Actionable, &everything, 1_000);
    assert!(all.len() > 10, "{all:?}");
    let only = paged(&pg, ReviewSelect::Actionable, &filters[3], 1_000);
    assert_eq!(only.len(), 2, "a/only-src.txt and a/only-dst.txt: {only:?}");

    // The root, a folder on both sides, one deep inside, a destination
    // extra and a folder neither side has.
    for folder in ["", "a", "a/deep", "gone", "b/c", "nowhere"] {
        let want = browsed(&file, folder, 1_000);
        assert_eq!(browsed(&pg, folder, 2), want, "{folder}");
        // The sums below folders, made by the first browse, say what
        // summing the subtrees says.
        let mut without_sums = pg
            .browse_without_sums(
                &RelPath::from_bytes(folder.as_bytes().to_vec()),
                None,
                1_000,
            )
            .unwrap();
        for child in &mut without_sums {
            child.below.sort_by(|a, b| a.status.cmp(&b.status));
        }
        assert_eq!(without_sums, want, "{folder}");
    }
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let sums: i64 = db
        .query_one("SELECT count(*) FROM src_folder_sums", &[])
        .unwrap()
        .get(0);
    assert!(sums > 0, "browsing made no sums below folders");
    // A database of schema version 4 (before the sums, and the listings'
    // MD5s of version 6) gains them when opened, and browses as before.
    drop(pg);
    db.batch_execute(
        "DROP TABLE src_folder_sums, dst_folder_sums; \
         ALTER TABLE src_nodes DROP COLUMN md5; ALTER TABLE dst_nodes DROP COLUMN md5; \
         ALTER TABLE previous_src_nodes DROP COLUMN md5; \
         DELETE FROM meta WHERE key = 'folder_sums'; \
         UPDATE meta SET value = '4' WHERE key = 'schema_version'",
    )
    .unwrap();
    let (pg, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
    assert_eq!(browsed(&pg, "", 2), browsed(&file, "", 1_000));
    let version: String = db
        .query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, treeshift_store_pg::SCHEMA_VERSION.to_string());
    let root = browsed(&pg, "", 1_000);
    let a = root.iter().find(|c| c.path.as_bytes() == b"a").unwrap();
    assert!(
        a.below
            .iter()
            .any(|b| b.status == "missing" && b.items == 1),
        "{a:?}"
    );
    let gone = root.iter().find(|c| c.path.as_bytes() == b"gone").unwrap();
    assert_eq!(
        (gone.side, gone.status.as_deref()),
        (Side::Dst, Some("extra"))
    );
}
