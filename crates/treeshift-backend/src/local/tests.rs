use super::*;
use crate::{Apply, ErrorKind, Written};
use std::fs::{self, Permissions};
use std::os::unix::fs::symlink;

fn system_time(ns: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)
}

/// Writes the source's `f` to `path` with its mode and mtime, checking
/// nothing.
fn put(
    w: &dyn Writable,
    s: &LocalBackend,
    path: &RelPath,
    tmp: &RelPath,
    replace: bool,
) -> Written {
    let mut source = s.open_read(&RelPath::from_bytes(b"f".to_vec())).unwrap();
    let apply = as_source(&source);
    w.write(path, tmp, &mut source, replace, &apply, &|_, _| None)
        .unwrap()
}

/// What the engine asks a write to keep of a source file: mode and mtime.
fn as_source(source: &SourceFile) -> Apply {
    Apply {
        mtime_ns: source.mtime_ns,
        mode: source.meta.mode,
        ..Apply::default()
    }
}

fn mtime(ns: i64) -> Apply {
    Apply {
        mtime_ns: Some(ns),
        ..Apply::default()
    }
}

fn names(b: &LocalBackend, p: &RelPath) -> Vec<(Vec<u8>, Kind)> {
    let mut v: Vec<_> = b
        .list_children(p)
        .unwrap()
        .map(|e| e.map(|e| (e.name, e.kind)).unwrap())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn lists_kinds_without_following_links() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("f"), b"hello").unwrap();
    symlink("sub", dir.path().join("link")).unwrap();
    symlink("/nonexistent", dir.path().join("dangling")).unwrap();
    let b = LocalBackend::new(dir.path());
    assert_eq!(
        names(&b, &RelPath::root()),
        vec![
            (b"dangling".to_vec(), Kind::Symlink),
            (b"f".to_vec(), Kind::File),
            (b"link".to_vec(), Kind::Symlink),
            (b"sub".to_vec(), Kind::Folder),
        ]
    );
    let f = b
        .list_children(&RelPath::root())
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.name == b"f")
        .unwrap();
    assert_eq!(f.size, 5);
    assert!(f.mtime_ns.unwrap() > 0);
}

#[test]
fn odd_names_round_trip_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let odd: [&[u8]; 3] = [b"new\nline", b"bad\xff\xfe", &[b'x'; 255]];
    for n in odd {
        fs::write(dir.path().join(OsStr::from_bytes(n)), b"").unwrap();
    }
    let b = LocalBackend::new(dir.path());
    let got: Vec<Vec<u8>> = names(&b, &RelPath::root())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut want: Vec<Vec<u8>> = odd.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn missing_root_and_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("nope"));
    assert_eq!(b.root_kind().unwrap(), None);
    let err = b.list_children(&RelPath::root()).err().unwrap();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

/// A backend of each way of resolving paths: `openat2`, and the walk
/// that stands in for it on kernels without one.
fn both_ways(root: &Path) -> [LocalBackend; 2] {
    [
        LocalBackend::new(root),
        LocalBackend::with_root(Root::walking(root.to_path_buf())),
    ]
}

#[test]
fn writes_land_whole_and_never_replace_unless_asked() {
    for walking in [false, true] {
        writes_land_whole(walking);
    }
}

fn writes_land_whole(walking: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"new data").unwrap();
    fs::set_permissions(src.join("f"), Permissions::from_mode(0o640)).unwrap();
    File::options()
        .write(true)
        .open(src.join("f"))
        .unwrap()
        .set_modified(system_time(1_600_000_000_123_456_789))
        .unwrap();
    let (s, [d, d_walking]) = (LocalBackend::new(&src), both_ways(&dst));
    let d = if walking { d_walking } else { d };
    let w = d.writer().unwrap();
    w.create_folder(&RelPath::root()).unwrap();
    w.create_folder(&RelPath::root()).unwrap();
    let (f, tmp) = (
        RelPath::from_bytes(b"f".to_vec()),
        RelPath::from_bytes(b".t".to_vec()),
    );
    for anonymous in [true, false] {
        // Where the file system has no anonymous files, a file is staged
        // under its temporary name.
        d.no_tmpfile
            .store(!anonymous, std::sync::atomic::Ordering::Relaxed);
        let _ = fs::remove_file(dst.join("f"));
        fs::write(dst.join("f"), b"theirs").unwrap();
        assert_eq!(
            put(w, &s, &f, &tmp, false),
            Written::Occupied,
            "never replaces"
        );
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"theirs");
        assert!(!dst.join(".t").exists(), "a refused item is discarded");
        fs::remove_file(dst.join("f")).unwrap();
        // The source changed while it was read: nothing is put in place.
        let mut source = s.open_read(&f).unwrap();
        let apply = as_source(&source);
        let changed = w
            .write(&f, &tmp, &mut source, false, &apply, &|_, n| {
                Some(format!("{n} read"))
            })
            .unwrap();
        assert_eq!(changed, Written::Changed("8 read".into()));
        assert!(!dst.join("f").exists() && !dst.join(".t").exists());
        assert_eq!(
            put(w, &s, &f, &tmp, false),
            Written::Done {
                bytes: 8,
                etag: None
            }
        );
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"new data");
        assert!(!dst.join(".t").exists());
        let (a, b) = (s.stat(&f).unwrap().unwrap(), d.stat(&f).unwrap().unwrap());
        assert_eq!(
            (a.size, a.mtime_ns),
            (b.size, b.mtime_ns),
            "mtime to the nanosecond"
        );
        let mode = fs::metadata(dst.join("f")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
    fs::write(dst.join("f"), b"theirs").unwrap();
    assert!(
        matches!(put(w, &s, &f, &tmp, true), Written::Done { .. }),
        "replaces when asked"
    );
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"new data");
    let link = RelPath::from_bytes(b"l".to_vec());
    let written = w
        .symlink(
            &link,
            &tmp,
            b"../elsewhere",
            false,
            &mtime(1_500_000_000_000_000_000),
        )
        .unwrap();
    assert!(matches!(written, Written::Done { .. }));
    assert_eq!(d.read_link(&link).unwrap(), b"../elsewhere");
    assert_eq!(
        d.stat(&link).unwrap().unwrap().mtime_ns,
        Some(1_500_000_000_000_000_000)
    );
    let aside = RelPath::from_bytes(b"f.old".to_vec());
    w.move_aside(&f, &aside).unwrap();
    assert_eq!(fs::read(dst.join("f.old")).unwrap(), b"new data");
    fs::write(dst.join("f"), b"again").unwrap();
    assert!(
        w.move_aside(&f, &aside).is_err(),
        "an aside name is never replaced"
    );
}

#[test]
fn paths_past_path_max_work_like_short_ones() {
    for walking in [false, true] {
        deep_paths(walking);
    }
}

fn deep_paths(walking: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).unwrap();
    let (s, [d, d_walking]) = (LocalBackend::new(&src), both_ways(&dst));
    let d = if walking { d_walking } else { d };
    let w = d.writer().unwrap();
    w.create_folder(&RelPath::root()).unwrap();
    // 30 folders of 200 bytes: a 6,000-byte path, made through the
    // backend itself on the destination.
    let segment = vec![b's'; 200];
    let mut deep = RelPath::root();
    for _ in 0..30 {
        deep = deep.join(&segment);
        w.create_folder(&deep).unwrap();
    }
    assert!(d.full_path(&deep).as_os_str().len() > 6000);
    fs::write(src.join("f"), b"deep data").unwrap();
    let file = deep.join(b"f");
    let temp = deep.join(b".t");
    let mut source = s.open_read(&RelPath::from_bytes(b"f".to_vec())).unwrap();
    let apply = as_source(&source);
    let written = w
        .write(&file, &temp, &mut source, false, &apply, &|_, _| None)
        .unwrap();
    assert_eq!(
        written,
        Written::Done {
            bytes: 9,
            etag: None
        }
    );
    let listed = names(&d, &deep);
    assert_eq!(listed, vec![(b"f".to_vec(), Kind::File)]);
    assert_eq!(d.stat(&file).unwrap().unwrap().size, 9);
    w.set_metadata(&file, &mtime(1_000_000_000_000_000_000))
        .unwrap();
    assert_eq!(
        d.stat(&file).unwrap().unwrap().mtime_ns,
        Some(1_000_000_000_000_000_000)
    );
    let mut back = Vec::new();
    match d.open_read(&file).unwrap().reader {
        Reader::File(mut f) => io::Read::read_to_end(&mut f, &mut back).unwrap(),
        Reader::Stream(_) => unreachable!("local files are files"),
    };
    assert_eq!(back, b"deep data");
    w.remove(&deep.parent().parent()).unwrap();
    assert_eq!(d.stat(&deep).unwrap(), None);
}

/// A tree with a folder `a` (holding `f`, `l` and `b/`) and, beside the
/// tree, an outside folder holding the same names.
fn tree_and_outside(dir: &Path) -> (PathBuf, PathBuf) {
    let (root, outside) = (dir.join("root"), dir.join("outside"));
    for base in [&root, &outside] {
        let a = if base == &root {
            base.join("a")
        } else {
            base.clone()
        };
        fs::create_dir_all(a.join("b")).unwrap();
        fs::write(a.join("f"), b"secret").unwrap();
        symlink("f", a.join("l")).unwrap();
    }
    (root, outside)
}

/// Every listing of the outside folder, with sizes and content: what must
/// stay untouched.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            let data = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            all.push((p, m.len(), data));
        }
    }
    all.sort();
    all
}

#[test]
fn a_folder_swapped_for_a_symlink_is_never_followed() {
    for walking in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = tree_and_outside(dir.path());
        let [b, b_walking] = both_ways(&root);
        let b = if walking { b_walking } else { b };
        // Resolve once while `a` is a folder, so the root is open...
        assert_eq!(
            names(&b, &RelPath::root()),
            vec![(b"a".to_vec(), Kind::Folder)]
        );
        // ...then swap it for a symlink to the outside folder.
        fs::rename(root.join("a"), dir.path().join("a.moved")).unwrap();
        symlink(&outside, root.join("a")).unwrap();
        let before = fingerprint(&outside);
        let p = |s: &str| RelPath::from_bytes(s.as_bytes().to_vec());
        let changed = |r: Result<(), BackendError>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.kind, ErrorKind::PathChanged, "{what} ({walking}): {e}");
        };
        changed(b.list_children(&p("a")).map(drop), "list");
        changed(b.list_children(&p("a/b")).map(drop), "list below");
        changed(b.stat(&p("a/f")).map(drop), "stat");
        changed(b.open_read(&p("a/f")).map(drop), "open");
        changed(b.read_link(&p("a/l")).map(drop), "read_link");
        let w = b.writer().unwrap();
        changed(w.create_folder(&p("a/new")), "create_folder");
        changed(w.set_metadata(&p("a/f"), &mtime(0)), "set_metadata");
        changed(w.remove(&p("a/b")), "remove");
        changed(w.remove(&p("a/f")), "remove a file");
        changed(w.remove_temp(&p("a/f")), "remove_temp");
        changed(w.move_aside(&p("a/f"), &p("moved")), "move_aside from");
        fs::write(root.join("mine"), b"x").unwrap();
        changed(w.move_aside(&p("mine"), &p("a/mine")), "move_aside into");
        let src_dir = tempfile::tempdir().unwrap();
        fs::write(src_dir.path().join("g"), b"payload").unwrap();
        let s = LocalBackend::new(src_dir.path());
        for replace in [false, true] {
            let mut source = s.open_read(&p("g")).unwrap();
            changed(
                w.write(
                    &p("a/g"),
                    &p("a/.t"),
                    &mut source,
                    replace,
                    &Apply::default(),
                    &|_, _| None,
                )
                .map(drop),
                "write",
            );
        }
        changed(
            w.symlink(&p("a/l2"), &p("a/.t"), b"x", false, &Apply::default())
                .map(drop),
            "symlink",
        );
        // The symlink itself is what a listing shows.
        let top = b.list_children(&RelPath::root()).unwrap();
        let kinds: Vec<_> = top.map(|e| e.unwrap()).map(|e| (e.name, e.kind)).collect();
        assert!(kinds.contains(&(b"a".to_vec(), Kind::Symlink)), "{kinds:?}");
        assert_eq!(
            fingerprint(&outside),
            before,
            "the outside folder is untouched"
        );
    }
}

#[test]
fn a_file_swapped_for_a_symlink_is_not_read_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, outside) = tree_and_outside(dir.path());
    for b in both_ways(&root) {
        fs::remove_file(root.join("a/f")).unwrap();
        symlink(outside.join("f"), root.join("a/f")).unwrap();
        let e = b
            .open_read(&RelPath::from_bytes(b"a/f".to_vec()))
            .err()
            .expect("never opened through the link");
        assert_eq!(e.kind, ErrorKind::PathChanged, "{e}");
        fs::remove_file(root.join("a/f")).unwrap();
        fs::write(root.join("a/f"), b"mine").unwrap();
    }
}

#[test]
fn names_that_would_climb_or_split_never_reach_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _outside) = tree_and_outside(dir.path());
    for b in both_ways(&root) {
        for bad in [
            &b"../outside/f"[..],
            b"a/../../outside/f",
            b"a/./f",
            b"a//f",
            b"/etc/passwd",
            b"a/f\0x",
            b"..",
        ] {
            let path = RelPath::from_bytes(bad.to_vec());
            let e = b.open_read(&path).err().expect("refused");
            assert!(
                matches!(e.kind, ErrorKind::PathChanged | ErrorKind::InvalidName),
                "{}: {e}",
                String::from_utf8_lossy(bad)
            );
            assert!(b.stat(&path).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(b.list_children(&path).is_err());
        }
    }
}

#[test]
fn a_swapped_root_is_not_followed_once_open() {
    let dir = tempfile::tempdir().unwrap();
    let (root, outside) = tree_and_outside(dir.path());
    let b = LocalBackend::new(&root);
    assert!(
        b.stat(&RelPath::from_bytes(b"a/f".to_vec()))
            .unwrap()
            .is_some()
    );
    fs::rename(&root, dir.path().join("root.moved")).unwrap();
    symlink(&outside, &root).unwrap();
    // The open root is the original folder, wherever it is now.
    let f = b.stat(&RelPath::from_bytes(b"a/f".to_vec())).unwrap();
    assert!(f.is_some(), "still the original tree");
    assert_eq!(b.stat(&RelPath::from_bytes(b"f".to_vec())).unwrap(), None);
}

#[test]
fn owners_modes_and_extended_attributes_are_read_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    // chown clears setuid: owner first, as a copy must too.
    std::os::unix::fs::chown(src.join("f"), Some(1234), Some(4321)).unwrap();
    fs::set_permissions(src.join("f"), Permissions::from_mode(0o4750)).unwrap();
    rustix::fs::setxattr(
        src.join("f"),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let keep = Keep::everything(treeshift_core::Owners::Keep);
    let (s, d) = (LocalBackend::new(&src), LocalBackend::new(&dst));
    s.keep(&keep);
    d.keep(&keep);
    let listed: Vec<Entry> = s
        .list_children(&RelPath::root())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let f = listed.iter().find(|e| e.name == b"f").unwrap();
    assert_eq!(
        (f.meta.mode, f.meta.uid, f.meta.gid),
        (Some(0o4750), Some(1234), Some(4321))
    );
    let want = vec![(b"user.note".to_vec(), b"kept".to_vec())];
    assert_eq!(f.meta.xattrs, Some(treeshift_core::xattr_digest(&want)));
    let sub = listed.iter().find(|e| e.name == b"sub").unwrap();
    assert_eq!(sub.meta.xattrs, Some(0), "none");

    // Written: owner first, so the setuid bit survives; then the
    // attributes, the mode and the mtime.
    let w = d.writer().unwrap();
    w.create_folder(&RelPath::root()).unwrap();
    let path = RelPath::from_bytes(b"f".to_vec());
    let mut source = s.open_read(&path).unwrap();
    assert_eq!(source.xattrs, want);
    let apply = Apply {
        mtime_ns: source.mtime_ns,
        mode: source.meta.mode,
        owner: Some((1234, 4321)),
        xattrs: Some(source.xattrs.clone()),
    };
    let written = w
        .write(
            &path,
            &RelPath::from_bytes(b".t".to_vec()),
            &mut source,
            false,
            &apply,
            &|_, _| None,
        )
        .unwrap();
    assert!(matches!(written, Written::Done { .. }));
    let got = d.stat(&path).unwrap().unwrap();
    assert_eq!(
        (got.meta.mode, got.meta.uid, got.meta.gid),
        (Some(0o4750), Some(1234), Some(4321))
    );
    assert_eq!(d.xattrs(&path).unwrap(), want);

    // In place: a folder's mode with the sticky and setgid bits, an
    // attribute removed, a symlink's owner.
    let folder = RelPath::from_bytes(b"shared".to_vec());
    w.create_folder(&folder).unwrap();
    for mode in [0o1777, 0o2775, 0o700] {
        let apply = Apply {
            mode: Some(mode),
            owner: Some((7, 8)),
            mtime_ns: Some(1_600_000_000_000_000_000),
            xattrs: Some(Vec::new()),
        };
        w.set_metadata(&folder, &apply).unwrap();
        let got = d.stat(&folder).unwrap().unwrap();
        assert_eq!((got.meta.mode, got.meta.uid), (Some(mode), Some(7)));
        assert_eq!(got.mtime_ns, Some(1_600_000_000_000_000_000));
    }
    w.set_metadata(
        &path,
        &Apply {
            xattrs: Some(Vec::new()),
            ..Apply::default()
        },
    )
    .unwrap();
    assert!(d.xattrs(&path).unwrap().is_empty(), "removed");
    let link = RelPath::from_bytes(b"l".to_vec());
    let written = w
        .symlink(
            &link,
            &RelPath::from_bytes(b".l".to_vec()),
            b"f",
            false,
            &Apply {
                owner: Some((55, 66)),
                ..mtime(1_500_000_000_000_000_000)
            },
        )
        .unwrap();
    assert!(matches!(written, Written::Done { .. }));
    let got = d.stat(&link).unwrap().unwrap();
    assert_eq!(
        (got.meta.uid, got.meta.gid, got.meta.mode),
        (Some(55), Some(66), None)
    );
    assert_eq!(got.mtime_ns, Some(1_500_000_000_000_000_000));
}

#[test]
fn hard_links_are_made_and_replace_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("a")).unwrap();
    fs::write(dir.path().join("a/f"), b"shared").unwrap();
    fs::write(dir.path().join("g"), b"someone's").unwrap();
    for b in both_ways(dir.path()) {
        let w = b.writer().unwrap();
        let p = |s: &str| RelPath::from_bytes(s.as_bytes().to_vec());
        let _ = fs::remove_file(dir.path().join("h"));
        assert!(w.hard_link(&p("a/f"), &p("h"), &p(".t"), false).unwrap());
        assert!(
            !w.hard_link(&p("a/f"), &p("g"), &p(".t"), false).unwrap(),
            "never replaces"
        );
        assert_eq!(fs::read(dir.path().join("g")).unwrap(), b"someone's");
        let (f, h) = (
            b.stat(&p("a/f")).unwrap().unwrap(),
            b.stat(&p("h")).unwrap().unwrap(),
        );
        assert!(
            f.file_id.is_some() && f.file_id == h.file_id,
            "one file, two names"
        );
        // Replacing, even a name that is already a link of the file.
        for _ in 0..2 {
            assert!(w.hard_link(&p("a/f"), &p("h"), &p(".t"), true).unwrap());
            assert!(!dir.path().join(".t").exists(), "no temporary left");
        }
        assert_eq!(fs::read(dir.path().join("h")).unwrap(), b"shared");
    }
}

#[test]
fn holes_are_kept() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    let f = File::create(src.join("sparse")).unwrap();
    f.set_len(32 << 20).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&[1u8; 10_000], 20 << 20).unwrap();
    drop(f);
    let (s, d) = (LocalBackend::new(&src), LocalBackend::new(&dst));
    let w = d.writer().unwrap();
    w.create_folder(&RelPath::root()).unwrap();
    let path = RelPath::from_bytes(b"sparse".to_vec());
    let mut source = s.open_read(&path).unwrap();
    let written = w
        .write(
            &path,
            &RelPath::from_bytes(b".t".to_vec()),
            &mut source,
            false,
            &Apply::default(),
            &|_, _| None,
        )
        .unwrap();
    assert_eq!(
        written,
        Written::Done {
            bytes: 32 << 20,
            etag: None
        }
    );
    let (a, b) = (
        fs::metadata(src.join("sparse")).unwrap(),
        fs::metadata(dst.join("sparse")).unwrap(),
    );
    assert_eq!(b.len(), a.len());
    assert!(
        b.blocks() <= a.blocks() + 3 * 8,
        "{} for {}",
        b.blocks(),
        a.blocks()
    );
    assert_eq!(
        fs::read(dst.join("sparse")).unwrap(),
        fs::read(src.join("sparse")).unwrap()
    );
}
