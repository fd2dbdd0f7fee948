//! The PostgreSQL store against a real PostgreSQL on 127.0.0.1: a
//! migration's identity, and discovery's leases shared by many
//! connections, with expiry and fencing.

mod cluster;

use cluster::Cluster;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use treeshift_core::{Entry, Keep, Kind, Side, Status};
use treeshift_state::{ChildRecord, Failure, FolderTask, MigrationSpec, OpenMode, StoreError};
use treeshift_store_pg::PgStore;

const LONG: Duration = Duration::from_secs(60);

fn spec(dst: &str) -> MigrationSpec {
    MigrationSpec {
        src: "sim:a".into(),
        dst: dst.into(),
        filter: Default::default(),
        dst_case_insensitive: false,
        keep: Keep::default(),
    }
}

fn create(url: &str) -> PgStore {
    let (store, resumed) =
        PgStore::open(url, OpenMode::CreateOrResume(Box::new(spec("/b")))).unwrap();
    assert!(!resumed);
    store
}

fn child(name: &str, kind: Kind) -> ChildRecord {
    ChildRecord {
        entry: Entry::new(
            name.as_bytes().to_vec(),
            kind,
            3,
            Some(1_600_000_000_000_000_000),
        ),
        left_out: None,
    }
}

fn folders(n: usize) -> Vec<ChildRecord> {
    (0..n)
        .map(|i| child(&format!("d{i:04}"), Kind::Folder))
        .collect()
}

/// A source root with `n` folders below it, listed: round 1 has them.
fn source_with_folders(store: &PgStore, n: usize) {
    let root = Entry::new(Vec::new(), Kind::Folder, 0, None);
    store.record_roots(&root, None).unwrap();
    assert_eq!(store.begin_round(Side::Src, 0).unwrap(), 1);
    let lease = store.lease(Side::Src, 0, 10, LONG).unwrap().remove(0);
    store
        .record_children(Side::Src, &lease, folders(n), None, LONG)
        .unwrap();
    store.folder_listed(Side::Src, &lease, 1).unwrap();
    assert_eq!(store.begin_round(Side::Src, 1).unwrap(), n as u64);
}

/// The one value `sql` answers in the database at `url`, read by a
/// connection of the test's own.
fn one<T: for<'a> postgres::types::FromSql<'a>>(
    url: &str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> T {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap()
        .query_one(sql, params)
        .unwrap()
        .get(0)
}

fn children_of(url: &str, folder: i64) -> Vec<String> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut names: Vec<String> = c
        .query(
            "SELECT rel_path FROM src_nodes WHERE parent_id = $1",
            &[&folder],
        )
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.get(0)).unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_database_holds_one_migration_and_refuses_another_or_a_foreign_one() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let empty = PgStore::open(&url, OpenMode::Existing).err().unwrap();
    assert!(
        matches!(&empty, StoreError::NotAStateFile { .. })
            && empty.to_string().contains("holds no treeshift migration"),
        "{empty}"
    );
    drop(create(&url));
    let (store, resumed) =
        PgStore::open(&url, OpenMode::CreateOrResume(Box::new(spec("/b")))).unwrap();
    assert!(resumed);
    assert_eq!(store.migration().unwrap(), spec("/b"));
    match PgStore::open(&url, OpenMode::CreateOrResume(Box::new(spec("/c")))) {
        Err(StoreError::OtherMigration { what, .. }) => assert_eq!(what, "destination"),
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }
    let foreign = pg.database("other_program");
    postgres::Client::connect(&foreign, postgres::NoTls)
        .unwrap()
        .batch_execute("CREATE TABLE invoices (id int)")
        .unwrap();
    let refused = PgStore::open(&foreign, OpenMode::CreateOrResume(Box::new(spec("/b"))));
    match refused {
        Err(e @ StoreError::NotAStateFile { .. }) => {
            assert!(e.to_string().contains("another program"), "{e}")
        }
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }
    // Nothing was created beside the other program's table.
    let tables: i64 = one(
        &foreign,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        &[],
    );
    assert_eq!(tables, 1);
}

#[test]
fn connections_leasing_at_once_take_each_folder_exactly_once() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    source_with_folders(&create(&url), 500);
    let taken: Mutex<HashMap<i64, usize>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                let (store, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
                loop {
                    let batch = store.lease(Side::Src, 1, 7, LONG).unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    for lease in batch {
                        let file = vec![child("f", Kind::File)];
                        store
                            .record_children(Side::Src, &lease, file, None, LONG)
                            .unwrap();
                        store.folder_listed(Side::Src, &lease, 1).unwrap();
                        *taken.lock().unwrap().entry(lease.id).or_default() += 1;
                    }
                }
            });
        }
    });
    let taken = taken.into_inner().unwrap();
    assert_eq!(taken.len(), 500);
    assert!(taken.values().all(|n| *n == 1), "a folder leased twice");
    let (store, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
    assert_eq!(store.round_open(Side::Src, 1).unwrap(), 0);
    let files: i64 = one(&url, "SELECT count(*) FROM src_nodes WHERE depth = 2", &[]);
    assert_eq!(files, 500, "one file under each folder, none twice");
}

#[test]
fn a_worker_whose_lease_expired_cannot_record_over_the_one_that_took_it() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let late = create(&url);
    source_with_folders(&late, 1);
    let (other, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
    // Long enough for what follows to happen inside it on a loaded
    // machine; the test then waits it out.
    let short = Duration::from_secs(2);
    let first: FolderTask = late.lease(Side::Src, 1, 1, short).unwrap().remove(0);
    late.record_children(
        Side::Src,
        &first,
        vec![child("early", Kind::File)],
        None,
        short,
    )
    .unwrap();
    // While the lease holds, no one else gets the folder.
    assert!(other.lease(Side::Src, 1, 1, LONG).unwrap().is_empty());

    // The first worker stalls past its lease (a listing longer than the
    // lease); another takes the folder, under a higher epoch, and its
    // listing starts over (no position was kept).
    std::thread::sleep(short + Duration::from_millis(500));
    let second = other.lease(Side::Src, 1, 1, LONG).unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert!(second.epoch > first.epoch);
    assert_eq!(children_of(&url, first.id), Vec::<String>::new());

    // Fenced: the late worker's records are refused, and leave nothing.
    let refused = late.record_children(
        Side::Src,
        &first,
        vec![child("late", Kind::File)],
        None,
        short,
    );
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    let refused = late.folder_listed(Side::Src, &first, 1);
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    let failure = Failure {
        operation: "list".into(),
        kind: "timed_out".into(),
        message: "late".into(),
        attempts: 1,
    };
    let refused = late.folder_failed(Side::Src, &first, &failure);
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );

    other
        .record_children(
            Side::Src,
            &second,
            vec![child("found", Kind::File)],
            None,
            LONG,
        )
        .unwrap();
    other.folder_listed(Side::Src, &second, 1).unwrap();
    assert_eq!(children_of(&url, first.id), vec!["d0000/found"]);
    assert_eq!(other.round_open(Side::Src, 1).unwrap(), 0);
    // Once done, a folder is leased to no one; completing it again under
    // the same lease (a reply lost) records nothing more.
    assert!(other.lease(Side::Src, 1, 1, LONG).unwrap().is_empty());
    other.folder_listed(Side::Src, &second, 1).unwrap();
    let listed: i64 = one(
        &url,
        "SELECT count(*) FROM src_status_events WHERE node_id = $1 AND phase = 'list'",
        &[&first.id],
    );
    assert_eq!(listed, 1);
}

#[test]
fn a_listing_taken_over_resumes_after_the_position_its_children_were_kept_with() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let first_worker = create(&url);
    source_with_folders(&first_worker, 1);
    let short = Duration::from_millis(1500);
    let first = first_worker
        .lease(Side::Src, 1, 1, short)
        .unwrap()
        .remove(0);
    assert_eq!(first.resume_after, None);
    let page = vec![child("a", Kind::File), child("b", Kind::File)];
    first_worker
        .record_children(Side::Src, &first, page, Some(b"b".to_vec()), short)
        .unwrap();
    std::thread::sleep(short + Duration::from_millis(500));
    let (second_worker, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
    let second = second_worker
        .lease(Side::Src, 1, 1, LONG)
        .unwrap()
        .remove(0);
    assert_eq!(second.resume_after, Some(b"b".to_vec()));
    assert_eq!(children_of(&url, first.id), vec!["d0000/a", "d0000/b"]);
    second_worker
        .record_children(
            Side::Src,
            &second,
            vec![child("c", Kind::File)],
            Some(b"c".to_vec()),
            LONG,
        )
        .unwrap();
    second_worker.folder_listed(Side::Src, &second, 1).unwrap();
    assert_eq!(
        children_of(&url, first.id),
        vec!["d0000/a", "d0000/b", "d0000/c"]
    );
}

#[test]
fn children_left_out_are_recorded_with_their_reason_and_never_become_a_round() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let store = create(&url);
    let root = Entry::new(Vec::new(), Kind::Folder, 0, None);
    store.record_roots(&root, None).unwrap();
    store.begin_round(Side::Src, 0).unwrap();
    let lease = store.lease(Side::Src, 0, 1, LONG).unwrap().remove(0);
    let mut skipped = child("node_modules", Kind::Folder);
    skipped.left_out = Some((Status::Excluded, "exclude node_modules/".into()));
    let kept = child("src", Kind::Folder);
    store
        .record_children(Side::Src, &lease, vec![skipped, kept], None, LONG)
        .unwrap();
    store.folder_listed(Side::Src, &lease, 1).unwrap();
    assert_eq!(store.begin_round(Side::Src, 1).unwrap(), 1);
    let leased = store.lease(Side::Src, 1, 10, LONG).unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].path.to_string(), "src");
    let reason: String = one(
        &url,
        "SELECT e.reason FROM src_status_events e JOIN src_nodes n ON n.id = e.node_id \
         WHERE n.rel_path = 'node_modules'::bytea AND e.status = 'excluded'",
        &[],
    );
    assert_eq!(reason, "exclude node_modules/");
}

#[test]
fn a_server_restarted_mid_listing_is_waited_for_and_nothing_is_lost_or_doubled() {
    let Some(mut pg) = Cluster::start() else {
        return;
    };
    let url = pg.database("m");
    let store = create(&url);
    source_with_folders(&store, 1);
    let lease = store.lease(Side::Src, 1, 1, LONG).unwrap().remove(0);
    let page = |names: &[&str]| names.iter().map(|n| child(n, Kind::File)).collect();
    store
        .record_children(Side::Src, &lease, page(&["a", "b"]), None, LONG)
        .unwrap();
    pg.stop();
    std::thread::scope(|scope| {
        // The server comes back a while after the next page is sent.
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            pg.start_again();
        });
        store
            .record_children(Side::Src, &lease, page(&["c", "d"]), None, LONG)
            .unwrap();
    });
    store.folder_listed(Side::Src, &lease, 1).unwrap();
    assert_eq!(
        children_of(&url, lease.id),
        vec!["d0000/a", "d0000/b", "d0000/c", "d0000/d"]
    );
    assert_eq!(store.round_open(Side::Src, 1).unwrap(), 0);
}

#[test]
fn a_server_that_stays_away_fails_the_operation_once_the_wait_is_over() {
    let Some(mut pg) = Cluster::start() else {
        return;
    };
    let url = pg.database("m");
    let (mut store, _) =
        PgStore::open(&url, OpenMode::CreateOrResume(Box::new(spec("/b")))).unwrap();
    store.wait_for_database(Duration::from_millis(500));
    pg.stop();
    let failed = store.migration().unwrap_err();
    assert!(failed.is_unavailable(), "{failed}");
}

#[test]
fn a_write_whose_reply_was_lost_is_not_made_twice_when_sent_again() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let store = create(&url);
    source_with_folders(&store, 1);
    let lease = store.lease(Side::Src, 1, 1, LONG).unwrap().remove(0);
    store
        .record_children(Side::Src, &lease, vec![child("a", Kind::File)], None, LONG)
        .unwrap();
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // As if the next page had been committed and its reply lost: the
    // lease row counts it already.
    sql.execute(
        "UPDATE src_leases SET pages = pages + 1 WHERE node_id = $1",
        &[&lease.id],
    )
    .unwrap();
    store
        .record_children(Side::Src, &lease, vec![child("b", Kind::File)], None, LONG)
        .unwrap();
    assert_eq!(children_of(&url, lease.id), vec!["d0000/a"], "sent twice");
    // The same for the completion: done under this lease already.
    sql.execute(
        "UPDATE src_leases SET done = true WHERE node_id = $1",
        &[&lease.id],
    )
    .unwrap();
    store.folder_listed(Side::Src, &lease, 1).unwrap();
    // Under another lease, it is the other's: refused.
    let mut other = lease.clone();
    other.epoch += 1;
    let refused = store.folder_listed(Side::Src, &other, 1);
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
}

/// Lists rounds 1..=`depth` of a tree whose folders each hold `fanout`
/// folders (the root's round is listed by `source_with_folders`), as one
/// of several workers: leases, records, completes, and waits for the
/// round to be done by all before the next. Returns the folders it
/// listed.
fn work_rounds(store: &PgStore, depth: u32, fanout: usize, lease_for: Duration) -> usize {
    let mut listed = 0;
    for round in 1..=depth {
        store.begin_round(Side::Src, round).unwrap();
        loop {
            let batch = store.lease(Side::Src, round, 3, lease_for).unwrap();
            if batch.is_empty() {
                if store.round_open(Side::Src, round).unwrap() == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            for lease in batch {
                let children = if round < depth {
                    folders(fanout)
                } else {
                    Vec::new()
                };
                store
                    .record_children(Side::Src, &lease, children, None, lease_for)
                    .unwrap();
                store.folder_listed(Side::Src, &lease, 1).unwrap();
                listed += 1;
            }
        }
    }
    listed
}

#[test]
fn folders_a_dead_worker_held_are_leased_again_once_its_leases_expire() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let dead_for = Duration::from_millis(1500);
    // The root holds 8 folders, each 8 more: 72 folders below the root.
    source_with_folders(&create(&url), 8);
    std::thread::scope(|scope| {
        // A worker that takes three folders, records half a listing and
        // dies (as under SIGKILL: nothing more is sent).
        let dead = scope.spawn(|| {
            let (store, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
            let taken = store.lease(Side::Src, 1, 3, dead_for).unwrap();
            store
                .record_children(Side::Src, &taken[0], folders(4), None, dead_for)
                .unwrap();
            taken.len()
        });
        assert_eq!(dead.join().unwrap(), 3);
        let workers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let (store, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
                    work_rounds(&store, 2, 8, LONG)
                })
            })
            .collect();
        let listed: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(listed, 8 + 64, "every folder listed once by the living");
    });
    let count = |q: &str| -> i64 { one(&url, q, &[]) };
    assert_eq!(count("SELECT count(*) FROM src_nodes"), 1 + 8 + 64);
    assert_eq!(
        count(
            "SELECT count(*) FROM (SELECT rel_path FROM src_nodes GROUP BY 1 HAVING count(*) > 1) d"
        ),
        0,
        "a path recorded twice"
    );
    assert_eq!(
        count("SELECT count(*) FROM src_status_events WHERE phase = 'list'"),
        1 + 8 + 64,
        "one completion per folder"
    );
}

#[test]
fn a_lease_whose_reply_was_lost_is_given_back_and_its_folder_listed() {
    use treeshift_state::StateStore;
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let store = create(&url);
    source_with_folders(&store, 3);
    StateStore::begin_round(&store, Side::Src, 1).unwrap();
    // As if a lease had been committed and its reply lost: one folder is
    // this process's, for long, and the process does not know it.
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let lost: i64 = sql
        .query_one(
            "UPDATE src_leases SET holder = $1, epoch = epoch + 1, \
               expires_at = clock_timestamp() + interval '1 hour' \
             WHERE node_id = (SELECT min(node_id) FROM src_leases WHERE depth = 1) \
             RETURNING node_id",
            &[&store.holder()],
        )
        .unwrap()
        .get(0);
    let mut listed = Vec::new();
    loop {
        let batch = StateStore::pull(&store, Side::Src, 0, 10).unwrap();
        if batch.is_empty() {
            break;
        }
        for folder in batch {
            StateStore::record_children(&store, Side::Src, &folder, Vec::new(), None).unwrap();
            StateStore::folder_listed(&store, Side::Src, &folder, 1).unwrap();
            listed.push(folder.id);
        }
    }
    listed.sort();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&lost), "the lost lease's folder was listed");
    let open: i64 = one(
        &url,
        "SELECT count(*) FROM src_leases WHERE depth = 1 AND NOT done",
        &[],
    );
    assert_eq!(open, 0);
}
