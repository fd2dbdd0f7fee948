//! The PostgreSQL store's phase, flags, sealed connections and log
//! records, against a real PostgreSQL on 127.0.0.1.

mod cluster;

use cluster::Cluster;
use treeshift_core::{Phase, Side};
use treeshift_state::{Keyring, LogRecord, MigrationSpec, OpenMode, StoredConnection};
use treeshift_store_pg::PgStore;

fn open(url: &str) -> PgStore {
    let spec = MigrationSpec {
        src: "/a".into(),
        dst: "sftp://h/b".into(),
        filter: Default::default(),
        dst_case_insensitive: false,
        keep: Default::default(),
    };
    PgStore::open(url, OpenMode::CreateOrResume(Box::new(spec)))
        .unwrap()
        .0
}

fn connection(side: Side, sealed: &[u8]) -> StoredConnection {
    StoredConnection {
        id: format!("{side}-1"),
        side,
        kind: "sftp".into(),
        location: "sftp://h/b".into(),
        secret_names: vec!["password".into(), "key".into()],
        sealed: sealed.to_vec(),
        updated_at: String::new(),
    }
}

#[test]
fn phase_and_flags_are_kept_and_read_back_by_another_connection() {
    let Some(pg) = Cluster::start() else { return };
    let url = pg.database("m");
    let store = open(&url);
    assert_eq!(store.phase().unwrap(), Phase::Created);
    store.set_phase(Phase::Discovered).unwrap();
    assert!(!store.flag("dst_refuses_xattrs").unwrap());
    store.set_flag("dst_refuses_xattrs").unwrap();
    store.set_flag("dst_refuses_xattrs").unwrap();
    let (other, _) = PgStore::open(&url, OpenMode::Existing).unwrap();
    assert_eq!(other.phase().unwrap(), Phase::Discovered);
    assert!(other.flag("dst_refuses_xattrs").unwrap());
    assert!(!other.flag("dst_holds_no_symlinks").unwrap());
}

#[test]
fn connections_and_the_keyring_are_replaced_whole_per_side() {
    let Some(pg) = Cluster::start() else { return };
    let store = open(&pg.database("m"));
    assert_eq!(store.keyring().unwrap(), None);
    assert!(store.connections().unwrap().is_empty());
    let keyring = Keyring {
        migration_uid: "m-1".into(),
        kek: "passphrase".into(),
        wrapped: vec![0, 1, 2, 255],
    };
    store
        .save_credentials(
            Some(&keyring),
            &[
                connection(Side::Src, b"\x00s"),
                connection(Side::Dst, b"\x00d"),
            ],
        )
        .unwrap();
    // A new secret for the destination alone leaves the source's.
    store
        .save_credentials(None, &[connection(Side::Dst, b"\x00d2")])
        .unwrap();
    assert_eq!(store.keyring().unwrap(), Some(keyring));
    let saved = store.connections().unwrap();
    let sides: Vec<(Side, Vec<u8>)> = saved.iter().map(|c| (c.side, c.sealed.clone())).collect();
    assert_eq!(
        sides,
        vec![
            (Side::Src, b"\x00s".to_vec()),
            (Side::Dst, b"\x00d2".to_vec())
        ]
    );
    assert_eq!(saved[0].secret_names, vec!["password", "key"]);
    assert!(
        saved[0].updated_at.ends_with('Z'),
        "{}",
        saved[0].updated_at
    );
}

#[test]
fn log_records_page_by_sequence_and_filter_by_level() {
    let Some(pg) = Cluster::start() else { return };
    let store = open(&pg.database("m"));
    let records: Vec<LogRecord> = ["INFO", "DEBUG", "ERROR", "WARN", "TRACE"]
        .iter()
        .enumerate()
        .map(|(i, level)| LogRecord {
            at_micros: 1_700_000_000_000_000 + i as i64 * 1_000,
            level,
            target: "treeshift::test".into(),
            message: format!("record {i}"),
        })
        .collect();
    store.append_logs(&records).unwrap();
    let warn = store.logs(0, "WARN", 100).unwrap();
    let got: Vec<&str> = warn.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(got, vec!["record 2", "record 3"]);
    assert_eq!(warn[0].at, "2023-11-14T22:13:20.002Z");
    let all = store.logs(0, "TRACE", 2).unwrap();
    assert_eq!(all.len(), 2);
    let rest = store.logs(all[1].seq, "TRACE", 100).unwrap();
    let got: Vec<&str> = rest.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(got, vec!["record 2", "record 3", "record 4"]);
}
