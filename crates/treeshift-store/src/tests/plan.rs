//! Plans: what they hold, their hash, approval, and drafts kept.

use super::*;
use treeshift_state::plan_sql::NO_EMPTY_FOLDERS;

#[test]
fn approval_records_the_plan_and_a_changed_plan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let store = discovered(&path);
    let h = store.handle();
    assert!(matches!(h.approved_plan(), Err(StoreError::NotApproved)));
    let skip = h.approve(Policy::Skip, Extras::Leave, "tester").unwrap();
    assert_eq!(
        (skip.counts.items, skip.counts.skipped, skip.counts.bytes),
        (1, 1, 3)
    );
    // The phase an approval records is one a reader knows.
    assert_eq!(h.phase().unwrap(), Phase::Approved);
    let c = h.copy_summary().unwrap();
    assert_eq!((c.planned, c.pending, c.skipped), (2, 1, 1));
    // Before any copy, another policy may replace the plan.
    let over = h
        .approve(Policy::Overwrite, Extras::Leave, "tester")
        .unwrap();
    assert_eq!(
        (over.counts.items, over.counts.replaces, over.counts.bytes),
        (2, 1, 5)
    );
    assert_ne!(over.plan_hash, skip.plan_hash);
    assert_eq!(h.approved_plan().unwrap(), over);
    let todo = h.begin_copy().unwrap();
    assert_eq!((todo.files, todo.bytes), (2, 5));
    let task = h.pull_copy(CopyPull::Files, i64::MIN, 1).unwrap().remove(0);
    h.record_copy(vec![CopyEvent {
        id: task.id,
        depth: task.depth,
        status: CopyStatus::Copied,
        reason: None,
        error: None,
        attempt: 1,
        written: Default::default(),
    }])
    .unwrap();
    assert!(matches!(
        h.approve(Policy::Skip, Extras::Leave, "tester"),
        Err(StoreError::CopyStarted { .. })
    ));
    assert_eq!(
        h.approve(Policy::Overwrite, Extras::Leave, "someone else")
            .unwrap(),
        over
    );
    assert_eq!(
        h.begin_copy().unwrap().files,
        1,
        "the copied item is not redone"
    );
    // The other fails; a retry sweep queues it again as attempt 2.
    let other = h.pull_copy(CopyPull::Files, i64::MIN, 1).unwrap().remove(0);
    assert_eq!(other.attempt, 1);
    h.record_copy(vec![CopyEvent {
        id: other.id,
        depth: other.depth,
        status: CopyStatus::Failed,
        reason: Some("permission_denied: open".into()),
        error: None,
        attempt: other.attempt,
        written: Default::default(),
    }])
    .unwrap();
    assert_eq!(h.copy_summary().unwrap().failed, 1);
    let elsewhere = RelPath::from_bytes(b"nope".to_vec());
    assert_eq!(h.requeue_failed_copies(Some(elsewhere)).unwrap(), 0);
    assert_eq!(h.requeue_failed_copies(None).unwrap(), 1);
    assert_eq!(h.begin_copy().unwrap().files, 1);
    let again = h.pull_copy(CopyPull::Files, i64::MIN, 1).unwrap().remove(0);
    assert_eq!((again.id, again.attempt), (other.id, 2));
    store.close().unwrap();
    // Discovery's verdict on `a` changes behind the approval's back.
    {
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO src_status_events SELECT 1000000, id, depth, 'compare', 'differs', NULL, 1, now() \
             FROM src_nodes WHERE rel_path = 'a'::BLOB",
            [],
        )
        .unwrap();
    }
    let (store, _) = Store::open(&path, OpenMode::Existing).unwrap();
    let err = store.handle().approved_plan().unwrap_err();
    assert!(matches!(err, StoreError::PlanChanged { .. }), "{err}");
    store.close().unwrap();
}

/// The plan hash of a plan with metadata to keep, a hard link, and what
/// the destination held, pinned to what the store computed before it read
/// plans in Arrow batches: a change in how the plan is read must not
/// change it, or approvals already given would stop matching their plans.
#[test]
fn the_plan_hash_stays_what_approvals_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let kept = |name: &str, size, mode| {
        let mut child = file(name, size);
        child.entry.meta = Meta {
            mode: Some(mode),
            uid: Some(1000),
            gid: Some(100),
            xattrs: Some(7),
        };
        child
    };
    let linked = |name: &str| {
        let mut child = file(name, 9);
        child.entry.file_id = Some(FileId { dev: 1, ino: 42 });
        child
    };
    let store = one_level(
        &dir.path().join("s.duckdb"),
        vec![
            kept("m", 4, 0o640),
            linked("h1"),
            linked("h2"),
            file("plain", 3),
            file("same", 1),
        ],
        vec![kept("m", 5, 0o600), file("same", 1)],
    );
    let h = store.handle();
    let overwrite = h.preview_plan(Policy::Overwrite, Extras::Leave).unwrap();
    // What the hash covers is in the plan: a hard link, a replacement.
    assert_eq!(
        (overwrite.counts.links, overwrite.counts.replaces),
        (1, 1),
        "{overwrite:?}"
    );
    let hash = |policy| h.preview_plan(policy, Extras::Leave).unwrap().plan_hash;
    assert_eq!(hash(Policy::Skip), "75b067ecc3a2bc99fbf72fee64a3f5c5");
    assert_eq!(hash(Policy::Overwrite), "3352c2534398fec5b247fb40bc05e57d");
    let approval = h
        .approve(Policy::Overwrite, Extras::Leave, "tester")
        .unwrap();
    assert_eq!(approval.plan_hash, hash(Policy::Overwrite));
    store.close().unwrap();
}

#[test]
fn a_plan_asked_again_is_drafted_again_once_what_it_rests_on_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = one_level(
        &dir.path().join("s.duckdb"),
        vec![file("a", 1), entry(b"l", Kind::Symlink, 0)],
        Vec::new(),
    );
    let h = store.handle();
    let preview = || h.preview_plan(Policy::Skip, Extras::Leave).unwrap();
    let first = preview();
    assert_eq!((first.counts.items, first.counts.skipped), (2, 0));
    assert_eq!(preview(), first);
    // A destination found to refuse symlinks leaves the link out.
    h.note_unheld_at_destination(Unheld::Symlinks).unwrap();
    let after = preview();
    assert_eq!((after.counts.items, after.counts.skipped), (1, 1));
    assert_ne!(after.plan_hash, first.plan_hash);
    store.close().unwrap();
}

/// Where the destination holds no empty folders, the plan leaves alone
/// each folder it would make and put nothing in (one holding only such
/// folders, or only what the plan leaves, included), and makes the rest.
#[test]
fn a_destination_without_empty_folders_is_sent_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.duckdb");
    let (store, _) = Store::open(&path, OpenMode::CreateOrResume(Box::new(spec("sim:b")))).unwrap();
    store.handle().record_roots(root(), Some(root())).unwrap();
    let folder = |name: &[u8]| entry(name, Kind::Folder, 0);
    let src = |path: &[u8]| match path {
        b"" => vec![
            folder(b"empty"),
            folder(b"full"),
            folder(b"hollow"),
            folder(b"links"),
            folder(b"there"),
        ],
        b"full" => vec![folder(b"sub")],
        b"full/sub" => vec![entry(b"f", Kind::File, 1)],
        b"hollow" => vec![folder(b"inner")],
        b"links" => vec![entry(b"l", Kind::Symlink, 0)],
        b"there" => vec![entry(b"g", Kind::File, 2)],
        _ => Vec::new(),
    };
    let dst = |path: &[u8]| match path {
        b"" => vec![folder(b"there")],
        _ => Vec::new(),
    };
    let store = trees(store, src, dst, [4, 4]);
    let h = store.handle();
    h.note_unheld_at_destination(Unheld::Symlinks).unwrap();
    let with_folders = h.preview_plan(Policy::Skip, Extras::Leave).unwrap();
    assert_eq!(
        (with_folders.counts.items, with_folders.counts.skipped),
        (8, 1)
    );
    h.note_unheld_at_destination(Unheld::EmptyFolders).unwrap();
    let approval = h.approve(Policy::Skip, Extras::Leave, "tester").unwrap();
    assert_eq!(
        (
            approval.counts.items,
            approval.counts.folders,
            approval.counts.skipped
        ),
        (4, 2, 5)
    );
    assert_ne!(approval.plan_hash, with_folders.plan_hash);
    store.close().unwrap();

    let conn = duckdb::Connection::open(&path).unwrap();
    let plan: Vec<(String, String, Option<String>)> = conn
        .prepare(
            "SELECT decode(rel_path), action::VARCHAR, reason FROM copy_plan ORDER BY rel_path",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (make, no_folder) = (None, Some(NO_EMPTY_FOLDERS.to_string()));
    let row = |path: &str, action: &str, reason: &Option<String>| {
        (path.to_string(), action.to_string(), reason.clone())
    };
    assert_eq!(
        plan,
        vec![
            row("empty", "skip", &no_folder),
            row("full", "create", &make),
            row("full/sub", "create", &make),
            row("full/sub/f", "create", &make),
            row("hollow", "skip", &no_folder),
            row("hollow/inner", "skip", &no_folder),
            row("links", "skip", &no_folder),
            row(
                "links/l",
                "skip",
                &Some(treeshift_core::NO_SYMLINKS.to_string())
            ),
            row("there/g", "create", &make),
        ]
    );
}
