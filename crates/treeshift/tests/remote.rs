//! Remote storage against real servers on 127.0.0.1 (S3: moto; Azure Blob:
//! Azurite), started and stopped by each test: local to the store and
//! back, a discovery after a copy that asks for no object one by one,
//! changes found through the record of what was written, a copy killed and
//! resumed, throttling, a store gone for a moment, unusable stores.

mod util;

use std::fs;
use std::path::Path;
use util::{Rng, Store, azure_server, make_tree, migrate_with_kills, run, s, s3_server, set_mtime};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A source with small files, an empty one, a name with spaces and
/// non-ASCII letters, and a file of `big` bytes (larger than one upload
/// part, where the server takes multipart uploads).
fn source(src: &Path, big: u32) {
    make_tree(src, 2, 1, 3);
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("naïve name.txt"), b"unicode").unwrap();
    let big: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("d0").join("big.bin"), big).unwrap();
    std::os::unix::fs::symlink("empty", src.join("link")).unwrap();
    fs::create_dir_all(src.join("hollow").join("inner")).unwrap();
    for p in ["empty", "naïve name.txt", "d0/big.bin"] {
        set_mtime(&src.join(p), 1_700_000_000);
    }
}

/// Every file under `root` with its content (symlinks left out).
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = util::snapshot(root)
        .into_iter()
        .filter(|(_, n)| n.kind == "file")
        .map(|(p, _)| {
            let p = String::from_utf8(p).unwrap();
            let data = fs::read(root.join(&p)).unwrap();
            (p, data)
        })
        .collect();
    all.sort();
    all
}

fn migrate(src: &str, dst: &str, state: &Path) -> serde_json::Value {
    let (code, out, err) = run(&["migrate", src, dst, "--state", s(state), "--yes", "--json"]);
    assert_eq!(code, 0, "{err}");
    json(&out)
}

fn discover(src: &str, dst: &str, state: &Path) -> serde_json::Value {
    let (code, out, err) = run(&["discover", src, dst, "--state", s(state), "--json"]);
    assert_eq!(code, 0, "{err}");
    json(&out)
}

/// Migrates a source tree to `location` and back, checking along the way:
/// the symlink left with its reason, a second discovery that finds nothing
/// to do and asks for no object one by one, a file rewritten at the same
/// size and one only touched found as outdated through the record of what
/// was written, and the way back compared by rsync (data and mtimes, the
/// mtimes having gone there and back in the objects' metadata). Empty
/// folders go there as markers with `folder_markers=true` (and to WebDAV's
/// real folders); to an object store without, they are left alone with
/// the reason and nothing is written for them. Returns the source.
fn there_and_back(store: &Store, location: &str, dir: &Path, big: u32) -> std::path::PathBuf {
    let keeps_empty_folders =
        location.starts_with("webdav") || location.contains("folder_markers=true");
    let (src, state) = (dir.join("src"), store.state(dir, "s"));
    source(&src, big);
    let first = migrate(s(&src), location, &state);
    let files_in_source = files(&src).len() as u64;
    assert_eq!(first["copy"]["failed"], 0, "{first}");
    // The symlink; `hollow` and `hollow/inner` where no empty folder is held.
    let unheld = if keeps_empty_folders { 1 } else { 3 };
    assert_eq!(first["copy"]["skipped"], unheld, "{first}");
    assert_eq!(first["verify"]["mismatch"], 0, "{first}");
    let (_, skipped, _) = run(&["review", "--state", s(&state), "--status", "skipped"]);
    assert!(skipped.contains("cannot hold symlinks"), "{skipped}");
    assert_eq!(
        skipped.contains("cannot hold empty folders"),
        !keeps_empty_folders,
        "{skipped}"
    );

    // Right after the copy: nothing to copy, found from the listings and
    // the record of what was written, not by asking for each object.
    let second = discover(s(&src), location, &state);
    assert_eq!(second["pass"], 2);
    assert_eq!(second["to_copy"]["files"], 0, "{second}");
    // Discovery counts every folder missing; the plan leaves the empty ones.
    assert_eq!(
        second["to_copy"]["folders"],
        if keeps_empty_folders { 0 } else { 2 },
        "{second}"
    );
    assert_eq!(second["differs"], 0, "{second}");
    let heads = second["calls"]["dst"]["stat"].as_u64().unwrap();
    assert!(heads <= 2, "a stat per object? {heads}: {second}");
    let (code, _, err) = run(&["approve", "--state", s(&state)]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["copy", "--state", s(&state)]);
    assert_eq!(code, 0, "{err}");

    // A file rewritten at the same size, and one only touched: the store
    // cannot tell either from its listing; the record of what treeshift
    // wrote can (the source's mtime then).
    fs::write(src.join("d1").join("f000.txt"), b"/d1/0").unwrap();
    set_mtime(&src.join("d1").join("f000.txt"), 1_700_000_500);
    set_mtime(&src.join("empty"), 1_700_000_600);
    let third = discover(s(&src), location, &state);
    assert_eq!(third["pass"], 3);
    assert_eq!(third["outdated"], 2, "{third}");
    assert_eq!(third["to_copy"]["files"], 2, "{third}");
    let (code, _, err) = run(&["approve", "--state", s(&state)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["copied"], 2, "{out}");

    // And back to a local folder; a discovery after finds nothing to do.
    let (back, back_state) = (dir.join("back"), store.state(dir, "back"));
    let returned = migrate(location, s(&back), &back_state);
    assert_eq!(
        returned["discovery"]["src"]["files"], files_in_source,
        "{returned}"
    );
    assert_eq!(returned["copy"]["failed"], 0, "{returned}");
    assert_eq!(returned["verify"]["mismatch"], 0, "{returned}");
    // The empty folders came back where the store kept them, and only
    // there: no marker was written without the option.
    let unheld: &[&str] = match keeps_empty_folders {
        true => &[],
        false => &["cd+++++++++ hollow/", "cd+++++++++ hollow/inner/"],
    };
    came_back(&src, location, &back, &back_state, unheld);
    src
}

/// `back`, migrated from `location` with the state file `state`, holds
/// `src`'s files byte for byte with their mtimes, and rsync finds only
/// `unheld` missing; a discovery after finds nothing to do.
fn came_back(src: &Path, location: &str, back: &Path, state: &Path, unheld: &[&str]) {
    assert_eq!(files(back), files(src));
    if let Some(differences) = rsync_data_differences(src, back) {
        assert_eq!(differences, unheld);
    }
    let again = discover(location, s(back), state);
    assert_eq!(again["to_copy"]["files"], 0, "{again}");
    assert_eq!(again["differs"], 0, "{again}");
}

#[test]
fn local_to_s3_and_back_and_a_second_discovery_asks_for_no_object() {
    util::on_every_store(|store| {
        let Some(server) = s3_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = there_and_back(store, &server.s3("migrated"), dir.path(), 9 << 20);
        // A tool nobody here wrote agrees on the store too: same data, sizes
        // and mtimes, read from the metadata as rclone writes it.
        if let Some(differences) = server.rclone_differences(&src, "migrated") {
            assert!(differences.is_empty(), "{differences:#?}");
        }
    });
}

#[test]
fn local_to_azure_and_back_and_a_second_discovery_asks_for_no_blob() {
    util::on_every_store(|store| {
        let Some(server) = azure_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let location = server.azblob("migrated") + "&folder_markers=true";
        there_and_back(store, &location, dir.path(), 9 << 20);
    });
}

#[test]
fn local_to_gcs_and_back_and_a_second_discovery_asks_for_no_object() {
    util::on_every_store(|store| {
        let Some(server) = util::gcs_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // The emulator has no multipart uploads (GCS's XML API): the large
        // file stays within one 8 MiB part.
        let location = server.gcs("migrated") + "&folder_markers=true";
        there_and_back(store, &location, dir.path(), 6 << 20);
    });
}

#[test]
fn local_to_webdav_and_back_and_a_second_discovery_asks_for_no_file() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        let Some(server) = util::webdav_server(&served) else {
            return;
        };
        let src = there_and_back(store, &server.webdav("migrated"), dir.path(), 9 << 20);
        // The server's own folder, read by a tool nobody here wrote: the same
        // names and data, every empty folder, no temporary left.
        if let Some(differences) = rsync_content_differences(&src, &served.join("migrated")) {
            assert!(differences.is_empty(), "{differences:#?}");
        }
        assert!(served.join("migrated/hollow/inner").is_dir());
        assert_eq!(util::temporaries(&served), Vec::<Vec<u8>>::new());
    });
}

#[test]
fn a_copy_to_webdav_killed_at_random_moments_resumes_to_the_same_files() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        let Some(server) = util::webdav_server(&served) else {
            return;
        };
        let src = copy_killed_and_resumed(store, &server.webdav("killed"), dir.path(), 5 << 20);
        // A killed upload went to a temporary name: no file under its own
        // name is short, and the resumed copy took every temporary away.
        if let Some(differences) = rsync_content_differences(&src, &served.join("killed")) {
            assert!(differences.is_empty(), "{differences:#?}");
        }
        assert_eq!(util::temporaries(&served), Vec::<Vec<u8>>::new());
    });
}

#[test]
fn a_webdav_server_that_cannot_be_used_or_a_file_too_large_to_send_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    let Some(server) = util::webdav_server(&served) else {
        return;
    };
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    fs::write(src.join("large"), vec![7u8; 4096]).unwrap();
    let state = dir.path().join("s.duckdb");

    // A wrong password: the run stops at the start with the server's
    // answer, and writes nothing.
    let out = util::command()
        .args([
            "discover",
            s(&src),
            &server.webdav("x"),
            "--state",
            s(&state),
        ])
        .env("WEBDAV_PASSWORD", "wrong")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("401") || err.contains("PermissionDenied"),
        "{err}"
    );
    assert!(!served.join("x").exists());

    // A file above the location's buffer limit fails with the reason;
    // the rest is copied.
    let location = format!("{}&max_buffer=1k", server.webdav("limited"));
    let state = dir.path().join("limited.duckdb");
    let (code, out, err) = run(&[
        "migrate",
        s(&src),
        &location,
        "--state",
        s(&state),
        "--yes",
        "--json",
    ]);
    assert_eq!(code, 4, "{out} {err}");
    let summary = json(&out);
    assert_eq!(summary["copy"]["failed"], 1, "{summary}");
    let (_, failed, _) = run(&["review", "--state", s(&state), "--status", "copy-failed"]);
    assert!(failed.contains("max_buffer=SIZE"), "{failed}");
    assert_eq!(fs::read(served.join("limited/small")).unwrap(), b"small");
    assert!(!served.join("limited/large").exists());
    assert_eq!(util::temporaries(&served), Vec::<Vec<u8>>::new());
}

/// Copies a tree with large files to `location`, killing the copy at
/// random moments, resumes it, and checks the store holds the tree (by a
/// new discovery, and by a copy back compared byte for byte). Returns the
/// source.
fn copy_killed_and_resumed(
    store: &Store,
    location: &str,
    dir: &Path,
    big: u32,
) -> std::path::PathBuf {
    let (src, state) = (dir.join("src"), store.state(dir, "s"));
    make_tree(&src, 4, 2, 8);
    // Uploads in several parts where `big` is larger than one, which a kill
    // can leave half sent.
    let big: Vec<u8> = (0..big).map(|i| (i % 253) as u8).collect();
    for name in ["a.bin", "d1/b.bin", "d2/d3/c.bin"] {
        fs::write(src.join(name), &big).unwrap();
    }
    let mut rng = Rng::from_env();
    migrate_with_kills(s(&src), location, &state, ["--dst-tps", "50"], 4, &mut rng);
    let after = discover(s(&src), location, &state);
    assert_eq!(after["to_copy"]["files"], 0, "{after}");
    assert_eq!(after["differs"], 0, "{after}");
    // And back, killed likewise: each file gets its own mtime from the
    // object's metadata, a resumed run included.
    let (back, back_state) = (dir.join("back"), store.state(dir, "back"));
    migrate_with_kills(
        location,
        s(&back),
        &back_state,
        ["--src-tps", "50"],
        3,
        &mut rng,
    );
    came_back(&src, location, &back, &back_state, &[]);
    src
}

#[test]
fn a_copy_to_s3_killed_at_random_moments_resumes_to_the_same_objects() {
    util::on_every_store(|store| {
        let Some(server) = s3_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = copy_killed_and_resumed(store, &server.s3("killed"), dir.path(), 17 << 20);
        if let Some(differences) = server.rclone_differences(&src, "killed") {
            assert!(differences.is_empty(), "{differences:#?}");
        }
    });
}

#[test]
fn a_copy_to_azure_killed_at_random_moments_resumes_to_the_same_blobs() {
    util::on_every_store(|store| {
        let Some(server) = azure_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        copy_killed_and_resumed(store, &server.azblob("killed"), dir.path(), 17 << 20);
    });
}

#[test]
fn a_copy_to_gcs_killed_at_random_moments_resumes_to_the_same_objects() {
    util::on_every_store(|store| {
        let Some(server) = util::gcs_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // Within one part: the emulator has no multipart uploads.
        copy_killed_and_resumed(store, &server.gcs("killed"), dir.path(), 6 << 20);
    });
}

#[test]
fn a_store_that_cannot_be_used_stops_the_run_with_the_reason() {
    let Some(server) = s3_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 1, 0, 1);
    let state = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let no_bucket = server.s3("x").replacen("bkt", "no-such-bucket", 1);
    let (code, _, err) = run(&["discover", s(&src), &no_bucket, "--state", &state("a")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");
    let out = util::command()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("HOME", dir.path())
        .args(["discover", s(&src), &server.s3("x"), "--state", &state("b")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    let gone = format!("s3://bkt/x?endpoint=http://127.0.0.1:{}", util::free_port());
    let (code, _, err) = run(&["discover", s(&src), &gone, "--state", &state("c")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    // None of them left a state file: the corrected location starts
    // afresh on the same one, through discover or migrate.
    for n in ["a", "b", "c"] {
        assert!(!Path::new(&state(n)).exists(), "{n}");
    }
    let (code, _, err) = run(&[
        "migrate",
        s(&src),
        &no_bucket,
        "--state",
        &state("a"),
        "--yes",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(!Path::new(&state("a")).exists());
    let (code, _, err) = run(&["discover", s(&src), &server.s3("x"), "--state", &state("a")]);
    assert_eq!(code, 0, "{err}");
    // A run on an existing state file keeps it, whatever stops it.
    let (code, _, err) = run(&["discover", s(&src), &server.s3("x"), "--state", &state("a")]);
    assert_eq!(code, 0, "{err}");
    let stopped = format!("s3://bkt/x?endpoint=http://127.0.0.1:{}", util::free_port());
    let (code, _, err) = run(&["discover", s(&src), &stopped, "--state", &state("a")]);
    assert_ne!(code, 0, "{err}");
    assert!(Path::new(&state("a")).exists());
}

#[test]
fn throttling_and_a_store_gone_for_a_moment_are_ridden_out() {
    let Some(server) = s3_server() else {
        return;
    };
    // Every 4th request answered 503 SlowDown, 500 or 429 (Retry-After: 1).
    let Some(proxy) = util::s3_proxy(&server, None, 4) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 2, 1, 4);
    let through =
        |port: u16, prefix: &str| format!("s3://bkt/{prefix}?endpoint=http://127.0.0.1:{port}");
    let state = dir.path().join("s.duckdb");
    let done = migrate(s(&src), &through(proxy.port, "throttled"), &state);
    assert_eq!(done["copy"]["failed"], 0, "{done}");
    assert_eq!(done["verify"]["mismatch"], 0, "{done}");
    let requests = &done["calls"]["dst"]["requests"];
    assert!(requests["throttled"].as_u64().unwrap() > 0, "{done}");
    assert!(requests["retried"].as_u64().unwrap() > 0, "{done}");
    if let Some(differences) = server.rclone_differences(&src, "throttled") {
        assert!(differences.is_empty(), "{differences:#?}");
    }

    // The store gone in the middle of a copy (paced, so it is still
    // running), and back on its address a moment later.
    let port = proxy.port;
    drop(proxy);
    let proxy = util::s3_proxy(&server, Some(port), 0).unwrap();
    let state = dir.path().join("gone.duckdb");
    let mut child = util::command()
        .args([
            "migrate",
            s(&src),
            &through(port, "gone"),
            "--state",
            s(&state),
        ])
        .args(["--yes", "--json", "--dst-tps", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    drop(proxy);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let proxy = util::s3_proxy(&server, Some(port), 0).unwrap();
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let done = json(&out);
    assert!(
        done["calls"]["dst"]["requests"]["failed_briefly"]
            .as_u64()
            .unwrap()
            > 0,
        "the store was not gone during the copy: {done}"
    );
    // What was in flight when it went is retried as a whole; what then
    // failed still, a retry sweep takes.
    if done["copy"]["failed"] != 0 {
        let (code, _, err) = run(&["retry", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(status.code(), Some(0), "{err}");
    }
    let again = discover(s(&src), &through(proxy.port, "gone"), &state);
    assert_eq!(again["to_copy"]["files"], 0, "{again}");
    if let Some(differences) = server.rclone_differences(&src, "gone") {
        assert!(differences.is_empty(), "{differences:#?}");
    }
}

#[test]
fn a_requests_per_second_limit_is_for_remote_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    make_tree(&src, 1, 0, 1);
    let state = dir.path().join("s.duckdb");
    let (code, _, err) = run(&[
        "discover",
        s(&src),
        s(&dst),
        "--state",
        s(&state),
        "--src-tps",
        "5",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("remote storage only"), "{err}");
    let (code, _, err) = run(&[
        "discover",
        s(&src),
        s(&dst),
        "--state",
        s(&state),
        "--dst-tps",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
}

/// What rsync would still change to make `back` equal `src`, comparing
/// data by checksum and files' mtimes (an object store keeps neither
/// modes nor folder times; symlinks are left out): one line per item.
fn rsync_data_differences(src: &Path, back: &Path) -> Option<Vec<String>> {
    rsync_differences_in(src, back, "-t")
}

/// Like [`rsync_data_differences`], on data and names alone: for the
/// folder a WebDAV server keeps its files in, whose mtimes are the
/// server's (the source's are kept as properties).
fn rsync_content_differences(src: &Path, served: &Path) -> Option<Vec<String>> {
    rsync_differences_in(src, served, "--no-times")
}

fn rsync_differences_in(src: &Path, back: &Path, times: &str) -> Option<Vec<String>> {
    let out = util::tool(
        "rsync",
        &[
            "-r",
            "-c",
            times,
            "--omit-dir-times",
            "--no-links",
            "-n",
            "-i",
            "--delete",
            &format!("{}/", s(src)),
            &format!("{}/", s(back)),
        ],
    )?;
    Some(
        out.lines()
            .filter(|l| !l.starts_with("skipping non-regular file"))
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn an_azure_container_that_cannot_be_used_stops_the_run_with_the_reason() {
    let Some(server) = azure_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 1, 0, 1);
    let state = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let missing = server.azblob("x").replacen("bkt", "no-such-container", 1);
    let (code, _, err) = run(&["discover", s(&src), &missing, "--state", &state("a")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ContainerNotFound"), "{err}");
    let out = util::command()
        .env_remove("AZURE_STORAGE_ACCOUNT_KEY")
        .args([
            "discover",
            s(&src),
            &server.azblob("x"),
            "--state",
            &state("b"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{err}");
    let out = util::command()
        .env("AZURE_STORAGE_ACCOUNT_KEY", "d3Jvbmcga2V5")
        .args([
            "discover",
            s(&src),
            &server.azblob("x"),
            "--state",
            &state("c"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("403") || err.contains("Authorization"),
        "{err}"
    );
}

#[test]
fn names_a_store_cannot_hold_are_left_out_at_discovery_with_the_reason() {
    util::on_every_store(|store| {
        use std::os::unix::ffi::OsStrExt;
        let Some(server) = s3_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (src, state) = (dir.path().join("src"), store.state(dir.path(), "s"));
        make_tree(&src, 1, 1, 2);
        // Latin-1, as an old file server may hold it: not UTF-8.
        let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(src.join(latin1), b"old").unwrap();
        // A path of 1,020 bytes (five nested folders of 200-byte names, and
        // a 15-byte file name): its key would be 1,026 with the prefix.
        let mut deep = src.clone();
        for i in 0..5 {
            deep = deep.join(format!("{i}{}", "x".repeat(199)));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("fffffffffff.txt"), b"deep").unwrap();
        let (code, out, err) = run(&[
            "migrate",
            s(&src),
            &server.s3("names"),
            "--state",
            s(&state),
            "--yes",
            "--json",
        ]);
        assert_eq!(
            code, 4,
            "invalid names are reported by the exit code: {err}"
        );
        let done = json(&out);
        assert_eq!(done["discovery"]["invalid_name"], 2, "{done}");
        assert_eq!(done["copy"]["failed"], 0, "{done}");
        let items = util::review_csv(&state, "invalid-name");
        assert!(items.iter().any(|l| l.contains("not UTF-8")), "{items:?}");
        assert!(
            items
                .iter()
                .any(|l| l.contains("at most 1018 under its root")),
            "the key limit less the prefix 'names/': {items:?}"
        );
        if let Some(differences) = server.rclone_differences(&src.join("d0"), "names/d0") {
            assert!(differences.is_empty(), "{differences:#?}");
        }
    });
}

#[test]
fn a_gcs_bucket_that_cannot_be_used_stops_the_run_with_the_reason() {
    let Some(server) = util::gcs_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 1, 0, 1);
    let state = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let missing = server.gcs("x").replacen("bkt", "no-such-bucket", 1);
    let (code, _, err) = run(&["discover", s(&src), &missing, "--state", &state("a")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NotFound") || err.contains("404"), "{err}");
    // Signed requests without credentials anywhere: refused at the root
    // check, naming where they come from (the VM metadata server is not
    // asked: the location does not say vm_metadata=true).
    let signed = server.gcs("x").replace("&anonymous=true", "");
    let out = util::command()
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("HOME", dir.path())
        .args(["discover", s(&src), &signed, "--state", &state("b")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
}

#[test]
fn options_given_as_flags_join_the_location_and_stay_with_the_migration() {
    util::on_every_store(|store| {
        let Some(server) = s3_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (src, state) = (dir.path().join("src"), store.state(dir.path(), "s"));
        make_tree(&src, 1, 1, 2);
        let endpoint = format!("endpoint=http://127.0.0.1:{}", server.port);
        let (code, _, err) = run(&[
            "discover",
            s(&src),
            "s3://bkt/opts",
            "--dst-opt",
            &endpoint,
            "--dst-opt",
            "region=eu-west-1",
            "--folder-markers",
            "--state",
            s(&state),
        ]);
        assert_eq!(code, 0, "{err}");
        // The later steps reopen the destination from the state file, options
        // and all.
        let (code, _, err) = run(&["approve", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let (_, out, _) = run(&["status", "--state", s(&state), "--json"]);
        assert!(
            out.contains(&endpoint)
                && out.contains("region=eu-west-1")
                && out.contains("folder_markers=true"),
            "{out}"
        );
        if let Some(differences) = server.rclone_differences(&src, "opts") {
            assert!(differences.is_empty(), "{differences:#?}");
        }
        // Misused: on a local side, an unknown key, no value.
        for (side, option) in [
            ("--src-opt", "region=x"),
            ("--dst-opt", "regoin=x"),
            ("--dst-opt", "region"),
            ("--dst-opt", "part_size=1M"),
            ("--dst-opt", "compare=mtime"),
        ] {
            let other = dir.path().join("o.duckdb");
            let (code, _, err) = run(&[
                "discover",
                s(&src),
                "s3://bkt/opts",
                side,
                option,
                "--state",
                s(&other),
            ]);
            assert_eq!(code, 2, "{side} {option}: {err}");
        }
        // Markers are for object stores; a local folder holds folders.
        let (code, _, err) = run(&[
            "discover",
            &server.s3("opts"),
            s(&dir.path().join("local")),
            "--folder-markers",
            "--state",
            s(&dir.path().join("m.duckdb")),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("--folder-markers is for object stores"),
            "{err}"
        );
        let (code, _, err) = run(&[
            "discover",
            &server.s3("opts"),
            s(&dir.path().join("local")),
            "--compare",
            "meta-mtime",
            "--state",
            s(&dir.path().join("c.duckdb")),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--compare is for object stores"), "{err}");
    });
}

/// `--compare meta-mtime`: an object treeshift did not write (here put
/// there by another migration, with a state of its own), of the same size
/// as the source file, compares by the mtime its metadata holds, one HEAD
/// each; by default it compares by size alone, with no request per
/// object. What the copy then writes compares the same.
#[test]
fn compare_meta_mtime_reads_each_objects_mtime_from_its_metadata() {
    util::on_every_store(|store| {
        let Some(server) = s3_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (src, seed) = (dir.path().join("src"), dir.path().join("seed"));
        for root in [&src, &seed] {
            fs::create_dir_all(root).unwrap();
            for name in ["alike", "touched"] {
                fs::write(root.join(name), b"same").unwrap();
                set_mtime(&root.join(name), 1_700_000_000);
            }
        }
        set_mtime(&src.join("touched"), 1_700_000_100);
        let location = server.s3("meta-mtime");
        let state = |name: &str| store.state(dir.path(), name);
        migrate(s(&seed), &location, &state("seed"));

        let by_size = discover(s(&src), &location, &state("size"));
        assert_eq!(
            (&by_size["same"], &by_size["differs"]),
            (&2.into(), &0.into()),
            "{by_size}"
        );
        let by_mtime = state("mtime");
        let discover_by_mtime = || {
            let (code, out, err) = run(&[
                "discover",
                s(&src),
                &location,
                "--compare",
                "meta-mtime",
                "--state",
                s(&by_mtime),
                "--json",
            ]);
            assert_eq!(code, 0, "{err}");
            json(&out)
        };
        let found = discover_by_mtime();
        assert_eq!(
            (&found["same"], &found["differs"]),
            (&1.into(), &1.into()),
            "{found}"
        );
        // A HEAD for each of the two objects.
        let sent = |v: &serde_json::Value| v["calls"]["dst"]["requests"]["sent"].as_u64().unwrap();
        assert_eq!(sent(&found), sent(&by_size) + 2, "{found} {by_size}");
        let differs = util::review_csv(&by_mtime, "differs");
        assert!(
            differs.iter().any(|row| row.contains("touched")
                && row.contains("mtime 1700000100 on src, 1700000000 on dst")),
            "{differs:?}"
        );
        let (code, _, err) = run(&["approve", "--state", s(&by_mtime), "--policy", "overwrite"]);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run(&["copy", "--state", s(&by_mtime), "--json"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["copied"], 1, "{out}");
        // The next pass reads the mtime the copy wrote.
        let again = discover_by_mtime();
        assert_eq!(
            (&again["same"], &again["differs"]),
            (&2.into(), &0.into()),
            "{again}"
        );
        assert_eq!(sent(&again), sent(&found), "{again}");
    });
}

/// `verify --checksum` toward an object store reads each source file and
/// compares its MD5 with the one the store gives of what it holds: no
/// object is read back where the store gives one (a single-part upload's
/// ETag); a multipart upload's ETag is no MD5, so that object is read
/// back and hashed. A source file rewritten since at the same size and
/// mtime is found all the same.
#[test]
fn verify_checksum_takes_the_stores_md5_and_reads_back_only_objects_without_one() {
    let Some(server) = s3_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, state) = (dir.path().join("src"), dir.path().join("s.duckdb"));
    // One file past the 8 MiB part: a multipart upload.
    source(&src, 9 << 20);
    let location = server.s3("verify-md5");
    let first = migrate(s(&src), &location, &state);
    assert_eq!(first["copy"]["failed"], 0, "{first}");
    let verify = || {
        let (code, out, err) = run(&["verify", "--state", s(&state), "--checksum", "--json"]);
        (code, json(&out), err)
    };
    let (code, verified, err) = verify();
    assert_eq!(code, 0, "{err}");
    assert_eq!(verified["mismatch"], 0, "{verified}");
    let files = files(&src).len() as u64;
    assert_eq!(verified["calls"]["src"]["read"], files, "{verified}");
    assert_eq!(verified["calls"]["dst"]["read"], 1, "{verified}");

    // Same size and mtime, other bytes: the MD5s differ, the object is
    // read back, and the content differs.
    let victim = src.join("d1").join("f000.txt");
    let mut data = fs::read(&victim).unwrap();
    data[0] ^= 0x20;
    util::rewrite_keeping_mtime(&victim, &data);
    let (code, verified, _) = verify();
    assert_eq!(code, 4, "{verified}");
    assert_eq!(verified["mismatch"], 1, "{verified}");
    assert_eq!(verified["calls"]["dst"]["read"], 2, "{verified}");
    let (_, out, _) = run(&["review", "--state", s(&state), "--status", "mismatch"]);
    assert!(
        out.contains("d1/f000.txt") && out.contains("content differs"),
        "{out}"
    );

    // An object rewritten since by another writer (here another
    // migration), the same bytes with another mtime: S3 gives it the same
    // ETag (the MD5 of its bytes), so only its metadata, read for each
    // object, tells that its mtime differs.
    let other = dir.path().join("other");
    fs::create_dir_all(other.join("d0")).unwrap();
    fs::copy(src.join("d0/f001.txt"), other.join("d0/f001.txt")).unwrap();
    set_mtime(&other.join("d0/f001.txt"), 1_750_000_000);
    let (code, _, err) = run(&[
        "migrate",
        s(&other),
        &location,
        "--compare",
        "meta-mtime",
        "--policy",
        "overwrite",
        "--state",
        s(&dir.path().join("other.duckdb")),
        "--yes",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["verify", "--state", s(&state), "--json"]);
    assert_eq!(code, 4, "{out} {err}");
    assert_eq!(json(&out)["mismatch"], 1, "{out}");
    let (_, out, _) = run(&["review", "--state", s(&state), "--status", "mismatch"]);
    assert!(
        out.contains("d0/f001.txt") && out.contains("mtime differs"),
        "{out}"
    );
}
