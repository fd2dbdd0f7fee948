//! SFTP against OpenSSH's server on 127.0.0.1, started and stopped by each
//! test: a tree with everything a POSIX tree holds (modes, owners, raw
//! byte names, symlinks, hard links, empty folders) there and back, read
//! by rsync on the server's own folder; copies killed at random moments
//! and resumed; servers that cannot be used.

mod util;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use util::{Rng, make_tree, migrate_with_kills, run, s, set_mtime, sftp_server};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn name(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// A tree with what a POSIX tree holds that an object store does not.
fn posix_source(src: &Path) {
    make_tree(src, 2, 1, 3);
    let odd = src.join(name(b"caf\xe9 (latin-1)"));
    fs::create_dir(&odd).unwrap();
    fs::write(odd.join(name(b"r\xe9sum\xe9\nnewline")), b"raw bytes").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..5_000_003u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("d0/big.bin"), big).unwrap();
    fs::set_permissions(src.join("d0/big.bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(src.join("secret"), b"0600").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(src.join("secret"), Some(1234), Some(5678)).unwrap();
    fs::create_dir_all(src.join("hollow/inner")).unwrap();
    fs::set_permissions(src.join("hollow"), fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::chown(src.join("hollow"), Some(4321), Some(8765)).unwrap();
    symlink("../empty", src.join("d1/link")).unwrap();
    symlink("nowhere", src.join("dangling")).unwrap();
    fs::hard_link(src.join("d1/f000.txt"), src.join("d1/hard")).unwrap();
    for p in ["empty", "secret", "d0/big.bin"] {
        set_mtime(&src.join(p), 1_700_000_000);
    }
}

/// Runs treeshift with `args` and `--json`; it must exit 0.
fn ok_json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(&[args, &["--json"]].concat());
    assert_eq!(code, 0, "{args:?}: {out} {err}");
    json(&out)
}

/// Approves the plan discovered last and copies it.
fn approve_and_copy(state: &Path) {
    for step in ["approve", "copy"] {
        let (code, out, err) = run(&[step, "--state", s(state)]);
        assert_eq!(code, 0, "{step}: {out} {err}");
    }
}

/// `dst` holds `src` as rsync with `flags` compares them (`-aH`: modes,
/// owners, symlinks, hard links and mtimes, folders' included; SFTP
/// carries whole seconds, which is what rsync compares), data by
/// checksum, and no temporary is left in it.
fn same_tree(flags: &str, src: &Path, dst: &Path) {
    if let Some(differences) = util::rsync_differences_with(flags, src, dst) {
        assert!(differences.is_empty(), "{differences:#?}");
    }
    assert_eq!(util::temporaries(dst), Vec::<Vec<u8>>::new());
}

#[test]
fn local_to_sftp_and_back_keeps_modes_owners_links_and_raw_names() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, served) = (dir.path().join("src"), dir.path().join("served"));
    posix_source(&src);
    let location = server.location(&served);
    let state = dir.path().join("s.duckdb");
    let first = ok_json(&["migrate", s(&src), &location, "--state", s(&state), "--yes"]);
    assert_eq!(first["copy"]["failed"], 0, "{first}");
    assert_eq!(first["copy"]["skipped"], 0, "{first}");
    assert_eq!(first["verify"]["mismatch"], 0, "{first}");
    // The server's own folder, read by a tool nobody here wrote.
    same_tree("-aH", &src, &served);

    // Right after the copy, nothing to do.
    let second = ok_json(&["discover", s(&src), &location, "--state", s(&state)]);
    assert_eq!(second["to_copy"]["files"], 0, "{second}");
    assert_eq!(second["to_copy"]["folders"], 0, "{second}");
    assert_eq!(second["differs"], 0, "{second}");
    approve_and_copy(&state);

    // A file rewritten (its mtime moved) and one whose mode alone
    // changed: a new discovery finds both, the default approval takes
    // them (treeshift wrote what is there), and they are equal again.
    fs::write(src.join("d1/f001.txt"), b"rewritten").unwrap();
    set_mtime(&src.join("d1/f001.txt"), 1_700_000_900);
    fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o640)).unwrap();
    let third = ok_json(&["discover", s(&src), &location, "--state", s(&state)]);
    assert_eq!(third["pass"], 3, "{third}");
    assert_eq!(third["to_copy"]["files"], 1, "{third}");
    assert_eq!(third["to_copy"]["metadata"], 1, "{third}");
    approve_and_copy(&state);
    same_tree("-aH", &src, &served);

    // And back to a local folder: the same tree, but for the hard link,
    // which SFTP cannot show (a second file with the same data comes back).
    let (back, back_state) = (dir.path().join("back"), dir.path().join("back.duckdb"));
    let returned = ok_json(&[
        "migrate",
        &location,
        s(&back),
        "--state",
        s(&back_state),
        "--yes",
    ]);
    assert_eq!(returned["copy"]["failed"], 0, "{returned}");
    assert_eq!(returned["verify"]["mismatch"], 0, "{returned}");
    same_tree("-a", &src, &back);
    let again = ok_json(&["discover", &location, s(&back), "--state", s(&back_state)]);
    assert_eq!(again["to_copy"]["files"], 0, "{again}");
    assert_eq!(again["differs"], 0, "{again}");
}

#[test]
fn verification_reads_sftp_back_by_folder_listings_and_finds_each_change() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, served) = (dir.path().join("src"), dir.path().join("served"));
    // Six files in each of three folders: 18 files, 20 items below the root.
    make_tree(&src, 2, 1, 6);
    let (location, state) = (server.location(&served), dir.path().join("s.duckdb"));
    let first = ok_json(&["migrate", s(&src), &location, "--state", s(&state), "--yes"]);
    assert_eq!(first["verify"]["verified"], 21, "{first}");
    // Each folder was listed to read its items back, not each item stat'ed.
    let stats = first["calls"]["dst"]["stat"].as_u64().unwrap();
    assert!(stats < 18, "{stats} stats for 18 files: {first}");

    // Four changes on the server, one of each kind a listing must show.
    let grown = served.join("d0/f001.txt");
    let mut data = fs::read(&grown).unwrap();
    data.extend_from_slice(b" and more");
    fs::write(&grown, data).unwrap();
    set_mtime(&grown, 1_600_000_060);
    fs::set_permissions(
        served.join("d0/f002.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::remove_file(served.join("d1/f003.txt")).unwrap();
    set_mtime(&served.join("f004.txt"), 1_500_000_000);

    let (code, out, err) = run(&["verify", "--state", s(&state), "--json"]);
    assert_eq!(code, 4, "a mismatch is exit 4: {out} {err}");
    let verdict = json(&out);
    assert_eq!(verdict["mismatch"], 4, "{verdict}");
    assert_eq!(verdict["verified"], 17, "{verdict}");
    let (code, out, err) = run(&["review", "--state", s(&state), "--status", "mismatch"]);
    assert_eq!(code, 0, "{err}");
    for (path, why) in [
        ("d0/f001.txt", "size "),
        ("d0/f002.txt", "mode 0600 on the destination"),
        ("d1/f003.txt", "missing on the destination"),
        ("f004.txt", "mtime differs"),
    ] {
        let line = out.lines().find(|l| l.contains(path));
        assert!(
            line.is_some_and(|l| l.contains(why)),
            "{path}: {why}: {out}"
        );
    }
}

#[test]
fn a_huge_folder_with_a_few_items_to_verify_is_not_listed_to_its_end() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, served) = (dir.path().join("src"), dir.path().join("served"));
    fs::create_dir_all(src.join("huge")).unwrap();
    for i in 0..10_000 {
        fs::write(src.join(format!("huge/f{i:05}")), i.to_string()).unwrap();
    }
    // The server holds all but four: those four are copied, then
    // verified; their folder's listing is given up on long before its
    // end, and what it did not find is stat'ed.
    util::copy_tree(&src, &served);
    for i in [17, 4_242, 7_777, 9_999] {
        fs::remove_file(served.join(format!("huge/f{i:05}"))).unwrap();
    }
    // The folder as the source has it, so only the four differ.
    set_mtime(&src.join("huge"), 1_700_000_000);
    set_mtime(&served.join("huge"), 1_700_000_000);
    let (location, state) = (server.location(&served), dir.path().join("s.duckdb"));
    let done = ok_json(&["migrate", s(&src), &location, "--state", s(&state), "--yes"]);
    assert_eq!(done["copy"]["copied"], 4, "{done}");
    assert_eq!(done["verify"]["mismatch"], 0, "{done}");
    assert_eq!(
        done["verify"]["verified"], done["verify"]["checked"],
        "{done}"
    );
    same_tree("-a", &src, &served);
}

#[test]
fn a_copy_to_sftp_and_back_killed_at_random_moments_resumes_to_the_same_tree() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, served) = (dir.path().join("src"), dir.path().join("served"));
    make_tree(&src, 3, 2, 4);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for p in ["a.bin", "d1/b.bin", "d2/d0/c.bin"] {
        fs::write(src.join(p), &big).unwrap();
    }
    let location = server.location(&served);
    let mut rng = Rng::from_env();
    let state = dir.path().join("s.duckdb");
    migrate_with_kills(
        s(&src),
        &location,
        &state,
        ["--dst-tps", "300"],
        4,
        &mut rng,
    );
    // A killed write went to a temporary name: no file under its own name
    // is short, and the resumed copy took every temporary away.
    same_tree("-aH", &src, &served);
    let (back, back_state) = (dir.path().join("back"), dir.path().join("b.duckdb"));
    migrate_with_kills(
        &location,
        s(&back),
        &back_state,
        ["--src-tps", "300"],
        4,
        &mut rng,
    );
    same_tree("-aH", &src, &back);
}

#[test]
fn an_sftp_server_that_cannot_be_used_stops_the_run_with_the_reason() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 1, 0, 1);
    let served = dir.path().join("served");
    let state = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let keys = server.keys().to_string_lossy().into_owned();
    let location = server.location(&served);
    let cases = [
        // A key the server does not know.
        (
            location.replace("/user&", "/host&"),
            "Permission denied (publickey",
            1,
        ),
        // A host key nobody said to trust.
        (
            location.replace(&format!("{keys}/known_hosts"), "/dev/null"),
            "Host key verification failed",
            1,
        ),
        // Nothing listening.
        (
            format!(
                "sftp://root@127.0.0.1:{}/x?key={keys}/user",
                util::free_port()
            ),
            "Connection refused",
            1,
        ),
        // A password in the location: refused, and not printed.
        (
            location.replace("root@", "root:pw-canary@"),
            "no password in the location",
            2,
        ),
    ];
    for (i, (bad, said, exit)) in cases.iter().enumerate() {
        let st = state(&format!("{i}.duckdb"));
        let (code, _, err) = run(&["discover", s(&src), bad, "--state", &st]);
        assert_eq!(code, *exit, "{bad}: {err}");
        assert!(err.contains(said), "{bad}: {err}");
        assert!(!err.contains("pw-canary"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!Path::new(&st).exists(), "{bad}: a state file was left");
    }
    assert!(!served.exists());
    // A source root that is not there.
    let (code, _, err) = run(&[
        "discover",
        &server.location(&dir.path().join("nothing")),
        s(&dir.path().join("dst")),
        "--state",
        &state("missing.duckdb"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not found") || err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn a_full_disk_on_the_server_stops_the_copy_and_a_resumed_one_finishes() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("big/b{i}")), vec![i as u8; 700 << 10]).unwrap();
    }
    make_tree(&src.join("small"), 2, 1, 3);
    let served = dir.path().join("served");
    let Some(mount) = util::Tmpfs::mount(&served, "size=2m") else {
        util::missing_prerequisite("a tmpfs mount");
        return;
    };
    // The root is the user's: its mode is not the migration's to set.
    fs::set_permissions(&served, fs::Permissions::from_mode(0o755)).unwrap();
    let (location, state) = (server.location(&served), dir.path().join("s.duckdb"));
    for step in [&["discover", s(&src), &location][..], &["approve"]] {
        let (code, _, err) = run(&[step, &["--state", s(&state)]].concat());
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = run(&["copy", "--state", s(&state)]);
    assert_eq!(code, 1, "a full destination stops the run: {err}");
    assert!(
        err.contains("no_space") && err.contains("disk is full"),
        "{err}"
    );
    assert_eq!(util::temporaries(&served), Vec::<Vec<u8>>::new());
    mount.remount("size=16m");
    let (code, _, err) = run(&["copy", "--state", s(&state)]);
    let (_, failed, _) = run(&["review", "--state", s(&state), "--status", "copy-failed"]);
    assert_eq!(code, 0, "resumed: {err} {failed}");
    same_tree("-aH", &src, &served);
}

#[test]
fn sessions_the_server_drops_mid_copy_are_opened_again_and_the_copy_ends_whole() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, served) = (dir.path().join("src"), dir.path().join("served"));
    make_tree(&src, 3, 2, 6);
    let (location, state) = (server.location(&served), dir.path().join("s.duckdb"));
    for step in [&["discover", s(&src), &location][..], &["approve"]] {
        let (code, _, err) = run(&[step, &["--state", s(&state)]].concat());
        assert_eq!(code, 0, "{err}");
    }
    // Paced so that the copy outlasts the drops.
    let copy = util::command()
        .args(["copy", "--state", s(&state), "--dst-tps", "150", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut dropped = 0;
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(700));
        dropped += server.drop_sessions();
    }
    let out = copy.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(dropped > 0, "no session was open to drop");
    let copied = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(copied["failed"], 0, "{copied}");
    assert_eq!(copied["pending"], 0, "{copied}");
    same_tree("-a", &src, &served);
}
