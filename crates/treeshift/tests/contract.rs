//! One contract every backend keeps, run against a local folder and each
//! store's real server on 127.0.0.1: list, stat, read, write (a file
//! larger than one upload part included), refusing to replace (a race of
//! two writers of one new name included, where the backend promises an
//! atomic create-new), a write given up when its source
//! changed, odd names, empty folders, and what the capabilities promise.
//!
//! Each backend's run is a process of its own (this test binary again,
//! running the ignored `contract_on_one_backend`): the stores' credentials
//! come from the environment, which a test can set only for a child.

mod util;

use std::io::Cursor;
use std::process::Command;
use treeshift_backend::{
    Apply, Backend, FolderKeeping, MtimeKeeping, OpenOptions, Reader, SourceFile, Writable, Written,
};
use treeshift_core::{Kind, Meta, RelPath};

/// The location the child process checks.
const LOCATION: &str = "TREESHIFT_CONTRACT_LOCATION";
/// The size of the large file there (past one upload part where the store
/// has multipart uploads).
const BIG: &str = "TREESHIFT_CONTRACT_BIG";

/// Runs the contract against `location` in a child process with the test
/// servers' credentials, and fails with its output if it fails.
fn check_contract(location: &str, big: usize) {
    let out = util::with_test_credentials(Command::new(std::env::current_exe().unwrap()))
        .args([
            "--ignored",
            "--exact",
            "contract_on_one_backend",
            "--nocapture",
        ])
        .env(LOCATION, location)
        .env(BIG, big.to_string())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{location}:\n{said}");
    assert!(
        said.contains("1 passed"),
        "{location}: the contract did not run:\n{said}"
    );
}

#[test]
fn a_local_folder_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tree")).unwrap();
    check_contract(util::s(&dir.path().join("tree")), 9 << 20);
}

#[test]
fn s3_keeps_the_contract() {
    let Some(server) = util::s3_server() else {
        return;
    };
    check_contract(&server.s3("contract"), 9 << 20);
}

#[test]
fn azure_blob_keeps_the_contract() {
    let Some(server) = util::azure_server() else {
        return;
    };
    // With markers for empty folders (S3's run goes without).
    check_contract(
        &(server.azblob("contract") + "&folder_markers=true"),
        9 << 20,
    );
}

#[test]
fn gcs_keeps_the_contract() {
    let Some(server) = util::gcs_server() else {
        return;
    };
    // The emulator has no multipart uploads: within one part.
    check_contract(&(server.gcs("contract") + "&folder_markers=true"), 6 << 20);
}

#[test]
fn webdav_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = util::webdav_server(dir.path()) else {
        return;
    };
    check_contract(&server.webdav("contract"), 9 << 20);
}

/// A source file of `data` with the mtime `mtime_s` (whole seconds).
fn source(data: &[u8], mtime_s: i64) -> SourceFile {
    SourceFile {
        reader: Reader::Stream(Box::new(Cursor::new(data.to_vec()))),
        size: data.len() as u64,
        mtime_ns: Some(mtime_s * 1_000_000_000),
        own_mtime_ns: None,
        meta: Meta::default(),
        xattrs: Vec::new(),
        holes: false,
    }
}

fn path(p: &str) -> RelPath {
    RelPath::from_bytes(p.as_bytes().to_vec())
}

fn temp(p: &RelPath, n: u32) -> RelPath {
    p.sibling(format!(".treeshift-{n}.tmp").as_bytes())
}

/// Writes `data` at `p`; `replace` says whether what is there may go.
fn write(b: &dyn Backend, p: &RelPath, data: &[u8], mtime_s: i64, replace: bool) -> Written {
    let apply = Apply {
        mtime_ns: Some(mtime_s * 1_000_000_000),
        ..Apply::default()
    };
    b.writer()
        .expect("a destination")
        .write(
            p,
            &temp(p, 1),
            &mut source(data, mtime_s),
            replace,
            &apply,
            &|_, _| None,
        )
        .unwrap_or_else(|e| panic!("write {p}: {e}"))
}

fn read(b: &dyn Backend, p: &RelPath) -> Vec<u8> {
    let mut file = b.open_read(p).unwrap_or_else(|e| panic!("open {p}: {e}"));
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut file.reader, &mut data)
        .unwrap_or_else(|e| panic!("read {p}: {e}"));
    data
}

/// Names and kinds of a folder's children, sorted.
fn children(b: &dyn Backend, folder: &RelPath) -> Vec<(String, Kind, u64)> {
    let mut all: Vec<_> = b
        .list_children(folder)
        .unwrap_or_else(|e| panic!("list {folder}: {e}"))
        .map(|e| {
            let e = e.unwrap_or_else(|e| panic!("list {folder}: {e}"));
            (String::from_utf8(e.name).unwrap(), e.kind, e.size)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Two writers of one new name at once: exactly one wins, the other finds
/// the name taken, and the file holds the winner's data whole.
fn create_new_race(w: &dyn Writable, b: &dyn Backend) {
    let race = path("d/race");
    let results: Vec<Written> = std::thread::scope(|s| {
        let writers: Vec<_> = [b"first writer".to_vec(), b"second writer, longer".to_vec()]
            .into_iter()
            .enumerate()
            .map(|(n, data)| {
                let race = &race;
                s.spawn(move || {
                    let apply = Apply::default();
                    let r = w.write(
                        race,
                        &temp(race, 10 + n as u32),
                        &mut source(&data, 1),
                        false,
                        &apply,
                        &|_, _| None,
                    );
                    (r.unwrap(), data)
                })
            })
            .collect();
        let mut won = Vec::new();
        let mut results = Vec::new();
        for h in writers {
            let (r, data) = h.join().unwrap();
            if matches!(r, Written::Done { .. }) {
                won.push(data);
            }
            results.push(r);
        }
        assert_eq!(won.len(), 1, "exactly one writer wins: {results:?}");
        assert_eq!(read(b, &race), won[0]);
        results
    });
    assert!(results.contains(&Written::Occupied), "{results:?}");
}

#[test]
#[ignore = "run by each backend's contract test, in a process with its credentials"]
fn contract_on_one_backend() {
    let location = std::env::var(LOCATION).expect("run by check_contract");
    let big: usize = std::env::var(BIG).unwrap().parse().unwrap();
    // The credentials, from the environment, as the binary gathers them.
    let env = |name: &str| std::env::var(name).ok();
    let options = OpenOptions {
        secrets: treeshift_backend::gather_secrets(&location, &env).unwrap(),
        ..OpenOptions::default()
    };
    let b = treeshift_backend::open(&location, &options)
        .unwrap_or_else(|e| panic!("open {location}: {e}"));
    let b: &dyn Backend = &*b;
    let caps = b.capabilities();
    let w = b.writer().expect("every backend here takes writes");
    let root = RelPath::root();

    // A new tree: there or not yet; made on demand.
    match b.root_kind().unwrap() {
        Some(Kind::Folder) => {}
        None => w.create_folder(&root).unwrap(),
        other => panic!("root: {other:?}"),
    }
    assert_eq!(children(b, &root), vec![], "a fresh tree is empty");

    // Folders, an empty one among them: made, as a marker or for real, or
    // (an object store's prefix) there only once something lies under it.
    for f in ["d", "d/empty"] {
        w.create_folder(&path(f)).unwrap();
    }
    let made = (caps.folders != FolderKeeping::Prefixes).then_some(Kind::Folder);
    assert_eq!(b.stat(&path("d")).unwrap().map(|e| e.kind), made);
    assert_eq!(children(b, &path("d/empty")), vec![], "an empty folder");

    // Files: small, empty, larger than one part, odd names.
    let large: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
    let odd = if caps.cannot_hold(&root, b";?").is_none() {
        "sp ace ü %20 #?&+=;é.txt"
    } else {
        "sp ace ü %20 #&+=é.txt"
    };
    let files: Vec<(String, Vec<u8>)> = vec![
        ("d/a.txt".into(), b"alpha".to_vec()),
        ("d/zero".into(), Vec::new()),
        ("d/large.bin".into(), large),
        (format!("d/{odd}"), b"odd".to_vec()),
    ];
    for (i, (p, data)) in files.iter().enumerate() {
        let written = write(b, &path(p), data, 1_700_000_000 + i as i64, false);
        assert!(
            matches!(written, Written::Done { bytes, .. } if bytes == data.len() as u64),
            "{p}: {written:?}"
        );
    }
    let mut listed = children(b, &path("d"));
    listed.retain(|(name, _, _)| name != "empty");
    let mut expected: Vec<_> = files
        .iter()
        .map(|(p, data)| (p[2..].to_string(), Kind::File, data.len() as u64))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, expected, "the listing: the files, no temporary");
    assert_eq!(children(b, &root), vec![("d".to_string(), Kind::Folder, 0)]);

    // Stat and read back: size, data, and the mtime where it is kept.
    for (i, (p, data)) in files.iter().enumerate() {
        let p = path(p);
        let e = b.stat(&p).unwrap().unwrap_or_else(|| panic!("stat {p}"));
        assert_eq!((e.kind, e.size), (Kind::File, data.len() as u64), "{p}");
        assert!(read(b, &p) == *data, "{p}: the data read back differs");
        let file = b.open_read(&p).unwrap();
        let kept = file
            .own_mtime_ns
            .or(file.mtime_ns)
            .map(|ns| ns / 1_000_000_000);
        if caps.mtime != MtimeKeeping::None {
            assert_eq!(kept, Some(1_700_000_000 + i as i64), "{p}: mtime");
        }
    }
    assert_eq!(b.stat(&path("d/nothing")).unwrap(), None);
    assert!(b.open_read(&path("d/nothing")).is_err());

    // Never replaced unless asked to; replaced when asked.
    assert_eq!(
        write(b, &path("d/a.txt"), b"beta", 1, false),
        Written::Occupied
    );
    assert_eq!(read(b, &path("d/a.txt")), b"alpha");
    assert!(matches!(
        write(b, &path("d/a.txt"), b"gamma!", 1_700_000_100, true),
        Written::Done { bytes: 6, .. }
    ));
    assert_eq!(read(b, &path("d/a.txt")), b"gamma!");

    // Two writers of one new name: one wins, the other finds it taken,
    // and the file holds the winner's data whole. Only where the backend
    // promises it: WebDAV's refusal is checked before its move, not with
    // it, and its capabilities say so; every other backend here promises.
    assert_eq!(
        caps.create_new,
        !location.starts_with("webdav"),
        "{location}: atomic create-new"
    );
    if caps.create_new {
        create_new_race(w, b);
    } else {
        eprintln!("{location}: no atomic create-new, so no race of two writers");
    }

    // A source that changed while it was read: nothing put in place, no
    // temporary left.
    let changed = path("d/changed");
    let r = w
        .write(
            &changed,
            &temp(&changed, 20),
            &mut source(b"moving", 1),
            false,
            &Apply::default(),
            &|_, _| Some("changed while read".into()),
        )
        .unwrap();
    assert_eq!(r, Written::Changed("changed while read".into()));
    w.remove_temp(&temp(&changed, 20)).unwrap();
    assert_eq!(b.stat(&changed).unwrap(), None);
    let names: Vec<String> = children(b, &path("d")).into_iter().map(|c| c.0).collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".treeshift-")),
        "a temporary is left: {names:?}"
    );

    // Empty folders stay findable where the capabilities say so.
    assert_eq!(
        children(b, &path("d"))
            .into_iter()
            .find(|c| c.0 == "empty")
            .map(|c| c.1),
        made,
        "the empty folder ({:?})",
        caps.folders
    );
    assert_eq!(
        b.stat(&path("d")).unwrap().map(|e| e.kind),
        Some(Kind::Folder),
        "a folder with files in it"
    );
    if caps.folders == FolderKeeping::Markers {
        assert_eq!(children(b, &path("d/empty")), vec![]);
    }
    // Names past what the store holds are refused before any request.
    if let Some(max) = caps.max_name_bytes {
        assert!(caps.cannot_hold(&root, &vec![b'n'; max + 1]).is_some());
        assert!(caps.cannot_hold(&root, &vec![b'n'; max]).is_none());
    }
}

#[test]
fn sftp_keeps_the_contract() {
    let Some(server) = util::sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Past what a few requests in flight hold.
    check_contract(&server.location(&dir.path().join("contract")), 9 << 20);
}
