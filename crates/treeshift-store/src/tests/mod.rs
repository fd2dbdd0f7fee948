//! Store tests: file identity, versions, and the resume invariants.

use super::*;
use crate::error::Context;
use treeshift_core::{CopyStatus, Entry, Extras, FileId, Kind, Meta, Phase, Policy, Status};

mod plan;

fn spec(dst: &str) -> MigrationSpec {
    MigrationSpec {
        src: "sim:a".into(),
        dst: dst.into(),
        filter: Default::default(),
        dst_case_insensitive: false,
        keep: Default::default(),
    }
}

fn root() -> Entry {
    Entry::new(Vec::new(), Kind::Folder, 0, Some(1_600_000_000_000_000_000))
}

fn file(name: &str, size: u64) -> ChildRecord {
    ChildRecord {
        entry: Entry::new(
            name.as_bytes().to_vec(),
            Kind::File,
            size,
            Some(1_600_000_000_000_000_000),
        ),
        left_out: None,
    }
}

#[test]
fn reopening_checks_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, resumed) =
        Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    assert!(!resumed);
    store.close().unwrap();
    let (store, resumed) =
        Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    assert!(resumed);
    assert_eq!(store.handle().migration().unwrap(), spec("sim:b"));
    store.close().unwrap();
    let err = Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:c"))))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            StoreError::OtherMigration {
                what: "destination",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn other_schema_versions_and_foreign_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, _) = Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    store.close().unwrap();
    {
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    }
    let err = Store::open(&path, OpenMode::Existing).err().unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(err.to_string().contains("newer treeshift"), "{err}");

    let foreign = dir.path().join("foreign.duckdb");
    {
        let conn = duckdb::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    }
    let err = Store::open(&foreign, OpenMode::CreateOrResume(Box::new(spec("sim:b"))))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NotAStateFile { .. }), "{err}");
    // A run killed as DuckDB made the file leaves it empty: it holds
    // nothing, so status says what it is and a discovery starts afresh.
    let empty = dir.path().join("empty.duckdb");
    std::fs::write(&empty, b"").unwrap();
    let err = Store::open(&empty, OpenMode::Existing)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, StoreError::NotAStateFile { .. }), "{err}");
    let (store, resumed) =
        Store::open(&empty, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    assert!(!resumed);
    store.close().unwrap();
}

#[test]
fn a_listing_cut_short_is_discarded_and_seals_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, _) = Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    let h = store.handle();
    h.record_roots(root(), Some(root())).unwrap();
    h.record_roots(root(), Some(root())).unwrap();
    assert_eq!(h.begin_round(Side::Src, 0).unwrap(), 1);
    let root = h.pull(Side::Src, i64::MIN, 10).unwrap().remove(0);
    assert!(root.path.is_root());
    // Children sent and committed, but no `listed` event: a crash mid-listing.
    h.record_children(Side::Src, &root, vec![file("a", 1), file("b", 2)], None)
        .unwrap();
    h.flush().unwrap();
    // The next run begins the round again: the partial children go, the
    // root is pending.
    drop(h);
    drop(store);
    let (store, resumed) =
        Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    assert!(resumed);
    let h = store.handle();
    assert_eq!(h.begin_round(Side::Src, 0).unwrap(), 1);
    h.record_children(
        Side::Src,
        &root,
        vec![file("a", 1), file("b", 2), file("c", 3)],
        None,
    )
    .unwrap();
    h.folder_listed(Side::Src, &root, 1).unwrap();
    assert!(
        h.seal_round(Side::Src, 0, serde_json::json!({})).unwrap(),
        "no folders below: src done"
    );
    let first = h.summary().unwrap();
    assert_eq!((first.src.files, first.src.bytes), (3, 6));
    assert!(h.seal_round(Side::Src, 0, serde_json::json!({})).unwrap());
    assert_eq!(
        h.summary().unwrap(),
        first,
        "sealing twice never double-counts"
    );
    assert_eq!(
        h.begin_round(Side::Src, 0).unwrap(),
        0,
        "a listed folder is not pending again"
    );

    // The dst side: its root pairs with the src root; compare on seal.
    assert_eq!(h.begin_round(Side::Dst, 0).unwrap(), 1);
    let droot = h.pull(Side::Dst, i64::MIN, 10).unwrap().remove(0);
    h.record_children(
        Side::Dst,
        &droot,
        vec![file("a", 1), file("b", 5), file("z", 9)],
        None,
    )
    .unwrap();
    h.folder_listed(Side::Dst, &droot, 1).unwrap();
    assert!(h.seal_round(Side::Dst, 0, serde_json::json!({})).unwrap());
    let s = h.summary().unwrap();
    assert_eq!((s.same, s.differs, s.missing, s.extra), (1, 1, 1, 1));
    // The default approval copies what is missing; what differs from a
    // destination no earlier pass left is beside it.
    assert_eq!((s.to_copy.files, s.to_copy.bytes), (1, 3));
    assert_eq!((s.left_alone.items, s.left_alone.bytes), (1, 2));
    assert!(h.seal_round(Side::Dst, 0, serde_json::json!({})).unwrap());
    assert_eq!(h.summary().unwrap(), s, "sealing twice never double-counts");
    store.close().unwrap();
}

/// A state file of schema 3 (statuses as text) is upgraded in place on
/// open: its statuses read as before, and a seal run again on it neither
/// fails nor double-counts.
#[test]
fn a_schema_3_file_is_upgraded_and_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, root) = source_root_to_list(&path);
    let h = store.handle();
    h.record_children(Side::Src, &root, vec![file("a", 1), file("b", 2)], None)
        .unwrap();
    h.folder_listed(Side::Src, &root, 1).unwrap();
    assert!(h.seal_round(Side::Src, 0, serde_json::json!({})).unwrap());
    assert_eq!(h.begin_round(Side::Dst, 0).unwrap(), 1);
    let droot = h.pull(Side::Dst, i64::MIN, 10).unwrap().remove(0);
    h.record_children(Side::Dst, &droot, vec![file("a", 1), file("z", 9)], None)
        .unwrap();
    h.folder_listed(Side::Dst, &droot, 1).unwrap();
    assert!(h.seal_round(Side::Dst, 0, serde_json::json!({})).unwrap());
    let before = h.summary().unwrap();
    assert_eq!((before.same, before.missing, before.extra), (1, 1, 1));
    drop(h);
    store.close().unwrap();
    // What schema 3 had: text statuses, no listings' MD5s.
    {
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute_batch("ALTER TABLE src_nodes DROP md5; ALTER TABLE dst_nodes DROP md5")
            .unwrap();
        for statement in crate::schema::events_as_in_schema_3() {
            conn.execute_batch(&statement).unwrap();
        }
        conn.execute_batch("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
            .unwrap();
    }
    let (store, resumed) =
        Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    assert!(resumed);
    let h = store.handle();
    assert_eq!(h.summary().unwrap(), before);
    assert!(h.seal_round(Side::Dst, 0, serde_json::json!({})).unwrap());
    assert_eq!(h.summary().unwrap(), before);
    drop(h);
    store.close().unwrap();
    let conn = duckdb::Connection::open(&path).unwrap();
    let (version, status_type): (String, String) = conn
        .query_row(
            "SELECT (SELECT value FROM meta WHERE key = 'schema_version'), \
                    (SELECT data_type FROM information_schema.columns \
                     WHERE table_name = 'dst_status_events' AND column_name = 'status')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    assert!(status_type.starts_with("ENUM("), "{status_type}");
}

#[test]
fn a_run_killed_while_the_next_source_round_lists_before_the_seal_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let folder = |name: &str| entry(name.as_bytes(), Kind::Folder, 0);
    let (store, root) = source_root_to_list(&path);
    let h = store.handle();
    h.record_children(
        Side::Src,
        &root,
        vec![folder("a"), folder("b"), file("f", 1)],
        None,
    )
    .unwrap();
    h.folder_listed(Side::Src, &root, 1).unwrap();
    // As the engine does it: round 1 begins and lists before round 0 is
    // sealed; `a` is listed, `b` half listed (committed, no `listed`
    // event), and the run dies before round 0's seal.
    assert_eq!(h.begin_round(Side::Src, 1).unwrap(), 2);
    let tasks = h.pull(Side::Src, i64::MIN, 10).unwrap();
    let (a, b) = (&tasks[0], &tasks[1]);
    h.record_children(Side::Src, a, vec![file("a1", 10)], None)
        .unwrap();
    h.folder_listed(Side::Src, a, 1).unwrap();
    h.record_children(Side::Src, b, vec![file("b1", 100)], None)
        .unwrap();
    let store = killed_and_resumed(&path, store, h);
    let h = store.handle();
    // The resumed run: round 0 has nothing left to list and is sealed once
    // round 1 begins, which finds `b`'s listing cut short and lists it again.
    assert_eq!(h.progress().unwrap().src_sealed, None);
    assert_eq!(h.begin_round(Side::Src, 0).unwrap(), 0);
    assert_eq!(h.begin_round(Side::Src, 1).unwrap(), 1, "only b is pending");
    assert!(!h.seal_round(Side::Src, 0, serde_json::json!({})).unwrap());
    let b = h.pull(Side::Src, i64::MIN, 10).unwrap().remove(0);
    assert_eq!(b.path.as_bytes(), b"b");
    h.record_children(Side::Src, &b, vec![file("b1", 100), file("b2", 1000)], None)
        .unwrap();
    h.folder_listed(Side::Src, &b, 1).unwrap();
    assert_eq!(h.begin_round(Side::Src, 2).unwrap(), 0);
    assert!(h.seal_round(Side::Src, 1, serde_json::json!({})).unwrap());
    let s = h.summary().unwrap();
    assert_eq!(
        (s.src.folders, s.src.files, s.src.bytes),
        (2, 4, 1 + 10 + 100 + 1000),
        "b's first, partial listing is gone; nothing counted twice"
    );
    store.close().unwrap();
}

/// Commits what `store` buffered and ends its run there, leaving the rows
/// a kill right after that commit would; then the next run opens the file.
fn killed_and_resumed(path: &std::path::Path, store: Store, h: StoreHandle) -> Store {
    h.flush().unwrap();
    drop(h);
    drop(store);
    open_state(path)
}

/// The state file at `path`, made or resumed.
fn open_state(path: &std::path::Path) -> Store {
    Store::open(path, OpenMode::CreateOrResume(Box::new(spec("sim:b"))))
        .unwrap()
        .0
}

/// A new state file at `path` with both roots recorded and the source's
/// first round begun: the source root, to list.
fn source_root_to_list(path: &std::path::Path) -> (Store, FolderTask) {
    let store = open_state(path);
    let h = store.handle();
    h.record_roots(root(), Some(root())).unwrap();
    h.begin_round(Side::Src, 0).unwrap();
    let root = h.pull(Side::Src, i64::MIN, 10).unwrap().remove(0);
    (store, root)
}

#[test]
fn a_listing_cut_short_after_a_recorded_position_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, root) = source_root_to_list(&path);
    let h = store.handle();
    assert_eq!(root.resume_after, None);
    // Two chunks committed with their positions, then the run dies.
    let first = vec![file("a", 1), file("b", 2)];
    h.record_children(Side::Src, &root, first, Some(b"b".to_vec()))
        .unwrap();
    h.record_children(Side::Src, &root, vec![file("c", 3)], Some(b"c".to_vec()))
        .unwrap();
    let store = killed_and_resumed(&path, store, h);
    let h = store.handle();
    // The next run keeps what was committed and lists on after `c`.
    assert_eq!(h.begin_round(Side::Src, 0).unwrap(), 1);
    let root = h.pull(Side::Src, i64::MIN, 10).unwrap().remove(0);
    assert_eq!(root.resume_after.as_deref(), Some(&b"c"[..]));
    h.record_children(Side::Src, &root, vec![file("d", 4)], Some(b"d".to_vec()))
        .unwrap();
    h.folder_listed(Side::Src, &root, 1).unwrap();
    assert!(h.seal_round(Side::Src, 0, serde_json::json!({})).unwrap());
    let s = h.summary().unwrap();
    assert_eq!((s.src.files, s.src.bytes), (4, 10), "each child once");

    store.close().unwrap();
}

#[test]
fn a_listing_started_over_forgets_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, root) = source_root_to_list(&path);
    let h = store.handle();
    h.record_children(Side::Src, &root, vec![file("a", 1)], Some(b"a".to_vec()))
        .unwrap();
    // A retry of a storage that cannot resume starts the folder over.
    h.discard_children(Side::Src, &root).unwrap();
    let store = killed_and_resumed(&path, store, h);
    let h = store.handle();
    h.begin_round(Side::Src, 0).unwrap();
    let root = h.pull(Side::Src, i64::MIN, 10).unwrap().remove(0);
    assert_eq!(root.resume_after, None);
    h.record_children(Side::Src, &root, vec![file("a", 1), file("b", 2)], None)
        .unwrap();
    h.folder_listed(Side::Src, &root, 1).unwrap();
    assert!(h.seal_round(Side::Src, 0, serde_json::json!({})).unwrap());
    assert_eq!(h.summary().unwrap().src.files, 2);
    store.close().unwrap();
}

/// Discovers a root with `a` (same), `b` (differs) and `c` (missing).
fn discovered(path: &std::path::Path) -> Store {
    one_level(
        path,
        vec![file("a", 1), file("b", 2), file("c", 3)],
        vec![file("a", 1), file("b", 5)],
    )
}

/// A state with `src` and `dst` as the children of each side's root,
/// discovered.
fn one_level(path: &std::path::Path, src: Vec<ChildRecord>, dst: Vec<ChildRecord>) -> Store {
    let (store, _) = Store::open(path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    let h = store.handle();
    h.record_roots(root(), Some(root())).unwrap();
    for (side, children) in [(Side::Src, src), (Side::Dst, dst)] {
        h.begin_round(side, 0).unwrap();
        let root = h.pull(side, i64::MIN, 10).unwrap().remove(0);
        h.record_children(side, &root, children, None).unwrap();
        h.folder_listed(side, &root, 1).unwrap();
        assert!(h.seal_round(side, 0, serde_json::json!({})).unwrap());
    }
    store
}

#[test]
fn files_compare_by_content_where_both_listings_give_its_md5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let hashed = |name: &str, size, byte: Option<u8>, mtime| {
        let mut child = file(name, size);
        child.entry.mtime_ns = mtime;
        child.entry.md5 = byte.map(|b| treeshift_core::Md5([b; 16]));
        child
    };
    let t = Some(1_600_000_000_000_000_000);
    // An object store's destination listing gives no mtime of the file.
    let src = vec![
        hashed("alike", 4, Some(1), t),
        hashed("changed", 4, Some(1), t),
        hashed("resized", 4, Some(1), t),
        hashed("unhashed", 4, Some(1), t),
    ];
    let dst = vec![
        hashed("alike", 4, Some(1), None),
        hashed("changed", 4, Some(2), None),
        hashed("resized", 5, Some(2), None),
        hashed("unhashed", 4, None, None),
    ];
    one_level(&path, src, dst).close().unwrap();
    let conn = duckdb::Connection::open(&path).unwrap();
    let found: Vec<(String, String, Option<String>, Option<String>)> = conn
        .prepare(
            "SELECT decode(n.rel_path), e.status::VARCHAR, e.reason, n.md5 \
             FROM src_nodes n JOIN src_status_events e ON e.node_id = n.id \
             WHERE e.phase = 'compare' AND n.depth = 1 ORDER BY n.rel_path",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (one, two) = ("01".repeat(16), "02".repeat(16));
    let row = |name: &str, status: &str, reason: Option<String>| {
        (
            name.to_string(),
            status.to_string(),
            reason,
            Some(one.clone()),
        )
    };
    assert_eq!(
        found,
        vec![
            row("alike", "same", None),
            row(
                "changed",
                "differs",
                Some(format!("content MD5 {one} on src, {two} on dst"))
            ),
            row("resized", "differs", Some("size 4 on src, 5 on dst".into())),
            row("unhashed", "same", None),
        ]
    );
}

/// Holds the store thread inside a call until the returned sender is
/// dropped or sent to: what a long round seal does to it.
fn hold_store_thread(store: &Store) -> Sender<()> {
    let (release_tx, release_rx) = bounded::<()>(0);
    let (held_tx, held_rx) = bounded::<()>(0);
    let handle = store.handle();
    std::thread::spawn(move || {
        let _ = handle.call(move |_| {
            let _ = held_tx.send(());
            let _ = release_rx.recv();
            Ok(())
        });
    });
    held_rx.recv().unwrap();
    release_tx
}

#[test]
fn a_reader_asked_again_sees_what_was_committed_since() {
    let dir = tempfile::tempdir().unwrap();
    let store = discovered(&dir.path().join("s.duckdb"));
    let committed = store.handle().committed();
    // Each read asked more often than there are readers: the later ones
    // run the statements a reader kept prepared.
    let read = || {
        let answers: Vec<_> = (0..2 * crate::reader::READERS)
            .map(|_| (committed.phase().unwrap(), committed.summary().unwrap()))
            .collect();
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
        answers[0].clone()
    };
    let (phase, summary) = read();
    assert_eq!(phase, Phase::Discovered);
    assert_eq!(summary.missing, 1, "{summary:?}");

    store.handle().set_phase(Phase::Copying).unwrap();
    let (phase, _) = read();
    assert_eq!(
        phase,
        Phase::Copying,
        "a kept statement answered what it read before"
    );
    store.close().unwrap();
}

#[test]
fn committed_reads_do_not_wait_for_the_store_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = discovered(&dir.path().join("s.duckdb"));
    let committed = store.handle().committed();
    let before = committed.summary().unwrap();
    assert!(before.missing > 0, "{before:?}");

    let release = hold_store_thread(&store);
    // Asked on another thread, so that a read stuck behind the held store
    // thread shows as no answer rather than as a test that never ends.
    let (answer_tx, answer_rx) = bounded(1);
    let reader = committed.clone();
    std::thread::spawn(move || {
        let answer = (
            reader.summary(),
            reader.review_page(
                ReviewSelect::Status(Status::Missing),
                None,
                ReviewFilter::default(),
                10,
            ),
            reader.phase(),
        );
        let _ = answer_tx.send(answer);
    });
    let answer = answer_rx.recv_timeout(Duration::from_secs(60));
    drop(release);
    let (summary, page, phase) = answer.expect("a committed read waited for the store thread");
    assert_eq!(summary.unwrap(), before);
    assert_eq!(page.unwrap().len() as u64, before.missing.min(10));
    assert_eq!(phase.unwrap(), store.handle().phase().unwrap());
    store.close().unwrap();
}

#[test]
fn committed_reads_miss_what_is_buffered_and_the_stores_own_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(
        &dir.path().join("s.duckdb"),
        OpenMode::CreateOrResume(Box::new(spec("sim:b"))),
    )
    .unwrap();
    let handle = store.handle();
    handle
        .append_logs(vec![LogRecord::now("INFO", "test", "one".into())])
        .unwrap();
    assert!(handle.committed().logs(0, "TRACE", 10).unwrap().is_empty());
    let own = handle.logs(0, "TRACE", 10).unwrap();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(handle.committed().logs(0, "TRACE", 10).unwrap(), own);
    store.close().unwrap();
    assert!(
        handle.committed().logs(0, "TRACE", 10).is_err(),
        "a closed store's readers answer with an error"
    );
}

/// The length of a list of `n` integers (8 bytes each, held whole: it
/// cannot spill), counting the runs.
fn list_of(
    db: &writer::Db,
    n: u64,
    runs: &std::sync::atomic::AtomicUsize,
) -> Result<i64, StoreError> {
    runs.fetch_add(1, Ordering::SeqCst);
    db.conn()
        .query_row(
            &format!("SELECT len(list(range)) FROM range({n})"),
            [],
            |r| r.get(0),
        )
        .context("a list")
}

#[test]
fn a_read_that_runs_out_of_memory_runs_again_then_on_the_store_thread() {
    use std::sync::atomic::AtomicUsize;
    let dir = tempfile::tempdir().unwrap();
    let store = discovered(&dir.path().join("s.duckdb"));
    let handle = store.handle();
    // The limit is the database's: set on the writer's connection, it
    // holds for the readers'.
    handle
        .call(|w| {
            w.conn()
                .execute_batch("SET memory_limit = '16MB'")
                .map_err(|e| StoreError::Thread(e.to_string()))
        })
        .unwrap();
    for (streams, runs_expected) in [(false, reader::OUT_OF_MEMORY_RUNS as usize), (true, 1)] {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let err = handle
            .readers
            .read(streams, move |db| list_of(db, 30_000_000, &counted))
            .unwrap_err();
        assert!(err.is_out_of_memory(), "{err}");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            runs_expected,
            "streams: {streams}"
        );
    }
    // Through a handle that reads what is committed, a read that keeps
    // running out on the readers runs on the store thread, which raises
    // the limit (from what it last set, 44 MB) and runs it again.
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let answer = handle
        .committed()
        .read(move |db| list_of(db, 3_000_000, &counted))
        .unwrap();
    assert_eq!(answer, 3_000_000);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        reader::OUT_OF_MEMORY_RUNS as usize + 2,
        "on the readers, then on the store thread at 16 MB and at 88 MB"
    );
    store.close().unwrap();
}

fn entry(name: &[u8], kind: Kind, size: u64) -> ChildRecord {
    ChildRecord {
        entry: Entry::new(name.to_vec(), kind, size, Some(1_600_000_000_000_000_000)),
        left_out: None,
    }
}

/// A source of two levels, with names that sort around `/` and two that
/// would read alike as text if DuckDB did not escape the backslash (the
/// byte 0x80, and `\x80` spelled out), against an empty destination;
/// discovered round by round as the engine does it.
fn two_levels(path: &std::path::Path) -> Store {
    let (store, _) = Store::open(path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    let h = store.handle();
    h.record_roots(root(), Some(root())).unwrap();
    let children = |folder: &[u8]| -> Vec<ChildRecord> {
        match folder {
            b"" => vec![
                entry(b"a", Kind::Folder, 0),
                entry(b"a-b", Kind::Folder, 0),
                entry(b"\x80", Kind::Folder, 0),
                entry(b"\\x80", Kind::Folder, 0),
                entry(b"f", Kind::File, 5),
            ],
            b"a" => vec![entry(b"x", Kind::File, 1), entry(b"y", Kind::File, 2)],
            b"a-b" => vec![entry(b"z", Kind::File, 4)],
            b"\x80" => vec![entry(b"w", Kind::File, 8)],
            _ => vec![entry(b"v", Kind::File, 16)],
        }
    };
    for side in Side::BOTH {
        for depth in 0..3 {
            h.begin_round(side, depth).unwrap();
            for folder in h.pull(side, i64::MIN, 100).unwrap() {
                let kids = match side {
                    Side::Src => children(folder.path.as_bytes()),
                    Side::Dst => Vec::new(),
                };
                h.record_children(side, &folder, kids, None).unwrap();
                h.folder_listed(side, &folder, 1).unwrap();
            }
            h.seal_round(side, depth, serde_json::json!({})).unwrap();
        }
    }
    store
}

/// Items and bytes below a folder with one status.
type StatusSum = (String, u64, u64);

#[test]
fn browse_sums_each_childs_subtree_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_levels(&dir.path().join("s.duckdb"));
    for handle in [store.handle(), store.handle().committed()] {
        let below = |folder: &[u8]| -> Vec<(Vec<u8>, Vec<StatusSum>)> {
            handle
                .browse(RelPath::from_bytes(folder.to_vec()), None, 100)
                .unwrap()
                .into_iter()
                .map(|c| {
                    let sums = c.below.iter().map(|b| (b.status.clone(), b.items, b.bytes));
                    (c.path.as_bytes().to_vec(), sums.collect())
                })
                .collect()
        };
        let missing = |items, bytes| vec![("missing".to_string(), items, bytes)];
        assert_eq!(
            below(b""),
            vec![
                (b"\\x80".to_vec(), missing(1, 16)),
                (b"a".to_vec(), missing(2, 3)),
                (b"a-b".to_vec(), missing(1, 4)),
                (b"f".to_vec(), vec![]),
                (b"\x80".to_vec(), missing(1, 8)),
            ]
        );
        assert_eq!(
            below(b"a"),
            vec![(b"a/x".to_vec(), vec![]), (b"a/y".to_vec(), vec![])]
        );
        assert_eq!(below(b"\x80"), vec![(b"\x80/w".to_vec(), vec![])]);
    }
    store.close().unwrap();
}

/// A source of three levels against a destination that holds some of it
/// (some the same, some different) and extras of its own; discovered
/// round by round, the destination's first `dst_rounds` rounds.
fn two_trees(path: &std::path::Path, dst_rounds: u32) -> Store {
    let (store, _) = Store::open(path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    let h = store.handle();
    h.record_roots(root(), Some(root())).unwrap();
    let folder = |name: &[u8]| entry(name, Kind::Folder, 0);
    let file = |name: &[u8], size| entry(name, Kind::File, size);
    let src = |path: &[u8]| match path {
        b"" => vec![folder(b"a"), folder(b"b"), folder(b"c"), file(b"f", 5)],
        b"a" => vec![folder(b"a1"), folder(b"a2"), file(b"x", 1), file(b"y", 2)],
        b"a/a1" => vec![file(b"p", 3), file(b"q", 4)],
        b"a/a2" => vec![file(b"r", 7)],
        b"b" => vec![folder(b"b1"), file(b"s", 8)],
        b"b/b1" => vec![file(b"t", 9)],
        b"c" => vec![file(b"u", 10)],
        _ => Vec::new(),
    };
    let dst = |path: &[u8]| match path {
        b"" => vec![folder(b"a"), folder(b"d"), file(b"f", 6)],
        b"a" => vec![folder(b"a1"), file(b"x", 1), file(b"z", 11)],
        b"a/a1" => vec![file(b"p", 3), file(b"q", 5)],
        b"d" => vec![folder(b"d1"), file(b"g", 13)],
        b"d/d1" => vec![file(b"e", 12)],
        _ => Vec::new(),
    };
    trees(store, src, dst, [4, dst_rounds])
}

/// Discovers the trees whose folders' children `src` and `dst` give, by
/// path, round by round as the engine does it: `rounds` of each side.
fn trees(
    store: Store,
    src: impl Fn(&[u8]) -> Vec<ChildRecord>,
    dst: impl Fn(&[u8]) -> Vec<ChildRecord>,
    rounds: [u32; 2],
) -> Store {
    let h = store.handle();
    for (side, rounds) in Side::BOTH.into_iter().zip(rounds) {
        for depth in 0..rounds {
            h.begin_round(side, depth).unwrap();
            for folder in h.pull(side, i64::MIN, 100).unwrap() {
                let kids = match side {
                    Side::Src => src(folder.path.as_bytes()),
                    Side::Dst => dst(folder.path.as_bytes()),
                };
                h.record_children(side, &folder, kids, None).unwrap();
                h.folder_listed(side, &folder, 1).unwrap();
            }
            h.seal_round(side, depth, serde_json::json!({})).unwrap();
        }
    }
    store
}

/// Every folder's children as the store reads them from the sums below
/// folders and as it sums their subtrees, page by page.
fn browse_both_ways(h: &StoreHandle, folder: &[u8], limit: usize) -> [Vec<BrowseChild>; 2] {
    [true, false].map(|summed| {
        let mut pages = Vec::new();
        let mut after: Option<RelPath> = None;
        loop {
            let (f, a) = (RelPath::from_bytes(folder.to_vec()), after.clone());
            let page = h
                .read(move |db| db.browse_children(&f, a.as_ref(), limit, summed))
                .unwrap();
            after = page.last().map(|c| c.path.clone());
            let full = page.len() == limit;
            pages.extend(page);
            if !full {
                return pages;
            }
        }
    })
}

#[test]
fn browse_reads_the_sums_below_folders_once_discovered_and_they_equal_the_subtrees() {
    let dir = tempfile::tempdir().unwrap();
    // While the destination is discovered, no sums are made.
    let store = two_trees(&dir.path().join("during.duckdb"), 2);
    let h = store.handle();
    assert!(!h.progress().unwrap().dst_done);
    h.browse(RelPath::root(), None, 100).unwrap();
    assert!(!h.read(|db| db.browse_sums_current()).unwrap());
    store.close().unwrap();

    let store = two_trees(&dir.path().join("done.duckdb"), 4);
    let h = store.handle();
    assert!(h.progress().unwrap().dst_done);
    assert!(!h.read(|db| db.browse_sums_current()).unwrap());
    let root = h.browse(RelPath::root(), None, 100).unwrap();
    assert!(h.read(|db| db.browse_sums_current()).unwrap());
    let sums = |path: &[u8]| -> Vec<StatusSum> {
        let child = root.iter().find(|c| c.path.as_bytes() == path).unwrap();
        let sums = child
            .below
            .iter()
            .map(|b| (b.status.clone(), b.items, b.bytes));
        sums.collect()
    };
    let sum = |status: &str, items, bytes| (status.to_string(), items, bytes);
    assert_eq!(
        sums(b"a"),
        vec![
            sum("differs", 1, 4),
            sum("missing", 3, 9),
            sum("same", 3, 4)
        ]
    );
    assert_eq!(sums(b"b"), vec![sum("missing", 3, 17)]);
    // An extra folder is not listed: nothing is below it.
    assert_eq!(sums(b"d"), vec![]);
    let every_folder_reads_alike = || {
        let folders = [
            &b""[..],
            b"a",
            b"a/a1",
            b"a/a2",
            b"b",
            b"b/b1",
            b"c",
            b"d",
            b"d/d1",
        ];
        for folder in folders {
            for limit in [1, 2, 100] {
                let [summed, subtrees] = browse_both_ways(&h, folder, limit);
                let folder = String::from_utf8_lossy(folder);
                assert_eq!(summed, subtrees, "{folder:?} by {limit}");
            }
        }
    };
    every_folder_reads_alike();
    // A comparison recorded after them (a retry sweep's) puts the sums out
    // of date; the next browse makes them anew, here in slices of one
    // node, so a folder's sums of a status come in several rows.
    h.call(|w| {
        w.set_seal_slice(1);
        w.conn()
            .execute_batch(
                "INSERT INTO src_status_events SELECT max(seq) + 1, 1, 0, 'compare', 'same', \
                 NULL, 2, now() FROM folder_sums_seq",
            )
            .map_err(|e| StoreError::Thread(e.to_string()))
    })
    .unwrap();
    assert!(!h.read(|db| db.browse_sums_current()).unwrap());
    h.browse(RelPath::root(), None, 100).unwrap();
    assert!(h.read(|db| db.browse_sums_current()).unwrap());
    let split = h
        .read(|db| {
            db.conn()
                .query_row(
                    "SELECT count(*) > count(DISTINCT (folder_id, status)) FROM src_folder_sums",
                    [],
                    |r| r.get::<_, bool>(0),
                )
                .map_err(|e| StoreError::Thread(e.to_string()))
        })
        .unwrap();
    assert!(split, "no folder's sums came in slices");
    every_folder_reads_alike();
    store.close().unwrap();
}
