//! Approval, copy and verify, end to end through the real binary; each
//! test runs with the state in a DuckDB file, then in PostgreSQL.

mod util;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use util::{make_tree, run, s, set_mtime, snapshot, status_json, temporaries};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("json: {e}: {out}"))
}

fn discover_and_approve(src: &Path, dst: &Path, state: &Path, policy: &str) {
    let (code, _, err) = run(&["discover", s(src), s(dst), "--state", s(state)]);
    assert_eq!(code, 0, "discover: {err}");
    let (code, _, err) = run(&["approve", "--state", s(state), "--policy", policy]);
    assert_eq!(code, 0, "approve: {err}");
}

/// `migrate --yes --checksum`, which must succeed; its JSON result.
fn migrate_with_checksums(src: &str, dst: &Path, state: &Path) -> serde_json::Value {
    let (code, out, err) = run(&[
        "migrate",
        src,
        s(dst),
        "--state",
        s(state),
        "--yes",
        "--checksum",
        "--json",
    ]);
    assert_eq!(code, 0, "migrate: {err}");
    json(&out)
}

/// A fresh discovery of `src` against `dst` (in a new state file).
fn rediscover(src: &Path, dst: &Path, state: &Path) -> serde_json::Value {
    let (code, out, err) = run(&["discover", s(src), s(dst), "--state", s(state), "--json"]);
    assert_eq!(code, 0, "rediscover: {err}");
    json(&out)
}

#[test]
fn migrate_copies_odd_names_links_and_modes_and_leaves_nothing_to_copy() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 3, 2, 5);
        let odd: [&[u8]; 4] = [b"new\nline", b"bad\xff\xfe", &[b'x'; 255], b" spaced "];
        for name in odd {
            fs::write(src.join("d1").join(std::ffi::OsStr::from_bytes(name)), name).unwrap();
        }
        std::os::unix::fs::symlink("../f000.txt", src.join("d0").join("link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("dangling")).unwrap();
        let fifo = src.join("pipe");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        fs::set_permissions(src.join("f001.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(src.join("f002.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let result = migrate_with_checksums(s(&src), &dst, &state);
        assert_eq!(result["copy"]["failed"], 0);
        assert_eq!(result["copy"]["changed"], 0);
        assert_eq!(result["copy"]["skipped"], 1, "the fifo is not copied");
        assert_eq!(result["verify"]["mismatch"], 0);
        assert_eq!(result["verify"]["verified"], result["verify"]["checked"]);
        let mut want = snapshot(&src);
        want.remove(b"pipe".as_slice());
        assert_eq!(snapshot(&dst), want, "content, size, mtime and links");
        for f in ["f001.txt", "f002.txt"] {
            let mode =
                |root: &Path| fs::metadata(root.join(f)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode(&dst), mode(&src), "{f} keeps its permission bits");
        }
        let again = rediscover(&src, &dst, &store.state(dir.path(), "again"));
        assert_eq!(again["to_copy"]["files"], 0);
        assert_eq!(again["to_copy"]["folders"], 0);
        assert_eq!(again["differs"], 0);
        assert_eq!(again["missing"], 1, "only the fifo");
        let status = status_json(&state);
        assert_eq!(status["phase"], "verified");
        assert_eq!(status["copy"]["pending"], 0);
    });
}

#[test]
fn sim_source_copies_and_verifies_content_and_a_corruption_is_found() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = "sim:seed=5,depth=2,fanout=3,files=8,sizes=mixed,symlinks=1";
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let result = migrate_with_checksums(src, &dst, &state);
        assert_eq!(
            result["copy"]["bytes_copied"],
            result["discovery"]["to_copy"]["bytes"]
        );
        assert_eq!(result["verify"]["verified"], result["verify"]["checked"]);
        // Same size and mtime, other bytes: only a checksum finds it.
        let victim = dst.join("d00").join("f0003.dat");
        let mut data = fs::read(&victim).unwrap();
        assert!(!data.is_empty());
        data[0] ^= 0xff;
        util::rewrite_keeping_mtime(&victim, &data);
        let (code, _, err) = run(&["verify", "--state", s(&state)]);
        assert_eq!(code, 0, "metadata still matches: {err}");
        let (code, out, _) = run(&["verify", "--state", s(&state), "--checksum", "--json"]);
        assert_eq!(code, 4, "a mismatch is exit 4");
        assert_eq!(json(&out)["mismatch"], 1);
        let (code, out, _) = run(&["review", "--state", s(&state), "--status", "mismatch"]);
        assert_eq!(code, 0);
        assert!(
            out.contains("d00/f0003.dat") && out.contains("content differs"),
            "{out}"
        );
    });
}

#[test]
fn copy_without_an_approval_exits_3_and_writes_nothing() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 1, 3);
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let (code, _, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("approve"), "{err}");
        assert!(!dst.exists(), "nothing written before approval");
        let (code, _, err) = run(&["migrate", s(&src), s(&dst), "--state", s(&state)]);
        assert_eq!(
            code, 3,
            "migrate without --yes stops after discovery: {err}"
        );
        assert!(!dst.exists());
        let (code, _, err) = run(&["approve", "--state", s(&state), "--policy", "bogus"]);
        assert_eq!(code, 2, "{err}");
    });
}

#[test]
fn items_that_changed_since_discovery_are_reported_not_copied() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 1, 4);
        let dst = dir.path().join("dst");
        fs::create_dir_all(dst.join("d0")).unwrap();
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state, "skip");
        // After approval: one source file grows, one vanishes, one becomes a
        // folder, and something appears on the destination where the plan
        // creates a file.
        fs::write(src.join("f001.txt"), b"grown since discovery").unwrap();
        fs::remove_file(src.join("d1").join("f002.txt")).unwrap();
        fs::remove_file(src.join("d1").join("f003.txt")).unwrap();
        fs::create_dir(src.join("d1").join("f003.txt")).unwrap();
        fs::write(dst.join("d0").join("f003.txt"), b"someone else's").unwrap();
        // An identical file appearing is not ours either (on a case-insensitive
        // store, it could be another source name's copy).
        let twin = dst.join("d0").join("f000.txt");
        fs::copy(src.join("d0").join("f000.txt"), &twin).unwrap();
        set_mtime(&twin, 1_600_000_000);
        let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
        assert_eq!(code, 4, "changed items make exit 4: {err}");
        let summary = json(&out);
        assert_eq!(summary["changed"], 5, "{summary}");
        assert_eq!(summary["failed"], 0);
        assert!(!dst.join("f001.txt").exists(), "not copied blindly");
        assert_eq!(
            fs::read(dst.join("d0").join("f003.txt")).unwrap(),
            b"someone else's",
            "destination data untouched"
        );
        let (_, out, _) = run(&["review", "--state", s(&state), "--status", "changed"]);
        for needle in [
            "f001.txt",
            "d1/f002.txt",
            "d0/f003.txt",
            "vanished",
            "appeared",
            "now a folder (a file at discovery)",
            "d0/f000.txt",
            "of the same size and mtime appeared",
        ] {
            assert!(out.contains(needle), "{needle} in {out}");
        }
        assert!(temporaries(&dst).is_empty());
    });
}

#[test]
fn a_file_that_appears_where_a_folder_goes_is_left_alone() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("newdir")).unwrap();
        fs::write(src.join("newdir").join("x"), b"x").unwrap();
        let dst = dir.path().join("dst");
        fs::create_dir_all(&dst).unwrap();
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state, "skip");
        fs::write(dst.join("newdir"), b"someone else's").unwrap();
        set_mtime(&dst.join("newdir"), 1_000_000_000);
        let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
        assert_eq!(code, 4, "{err}");
        // The folder, and the file that would go in it: its way is no folder.
        let copied = json(&out);
        assert_eq!(
            (copied["changed"].as_u64(), copied["failed"].as_u64()),
            (Some(2), Some(0)),
            "{out}"
        );
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(dst.join("newdir")).unwrap();
        assert_eq!(fs::read(dst.join("newdir")).unwrap(), b"someone else's");
        assert_eq!(meta.mtime(), 1_000_000_000, "its mtime is not the folder's");
    });
}

/// Source and destination with one of each disagreement: a newer and an
/// older differing file, a file where dst has a folder, a folder where dst
/// has a file.
fn disagreeing_trees(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (root.join("src"), root.join("dst"));
    fs::create_dir_all(src.join("y")).unwrap();
    fs::create_dir_all(dst.join("x")).unwrap();
    fs::write(src.join("a.txt"), b"src a, newer").unwrap();
    set_mtime(&src.join("a.txt"), 1_700_000_000);
    fs::write(dst.join("a.txt"), b"dst a").unwrap();
    set_mtime(&dst.join("a.txt"), 1_600_000_000);
    fs::write(src.join("b.txt"), b"src b, older").unwrap();
    set_mtime(&src.join("b.txt"), 1_500_000_000);
    fs::write(dst.join("b.txt"), b"dst b").unwrap();
    set_mtime(&dst.join("b.txt"), 1_600_000_000);
    fs::write(src.join("x"), b"src x is a file").unwrap();
    fs::write(dst.join("x").join("inner"), b"dst x is a folder").unwrap();
    fs::write(src.join("y").join("child"), b"src y is a folder").unwrap();
    fs::write(dst.join("y"), b"dst y is a file").unwrap();
    (src, dst)
}

#[test]
fn the_policy_decides_what_happens_to_differing_items() {
    util::on_every_store(|store| {
        for policy in ["skip", "overwrite", "newer", "rename"] {
            let dir = tempfile::tempdir().unwrap();
            let (src, dst) = disagreeing_trees(dir.path());
            let state = store.state(dir.path(), "s");
            discover_and_approve(&src, &dst, &state, policy);
            let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
            assert_eq!(code, 0, "{policy}: {err}");
            let summary = json(&out);
            let read = |p: &str| fs::read(dst.join(p)).unwrap();
            match policy {
                "skip" => {
                    assert_eq!(read("a.txt"), b"dst a");
                    assert_eq!(read("b.txt"), b"dst b");
                    assert!(dst.join("x").is_dir() && dst.join("y").is_file());
                    assert_eq!(summary["skipped"], 5, "a, b, x, y and y/child: {summary}");
                }
                "overwrite" => {
                    assert_eq!(read("a.txt"), b"src a, newer");
                    assert_eq!(read("b.txt"), b"src b, older");
                    assert_eq!(read("x"), b"src x is a file");
                    assert_eq!(read("y/child"), b"src y is a folder");
                }
                "newer" => {
                    assert_eq!(read("a.txt"), b"src a, newer");
                    assert_eq!(read("b.txt"), b"dst b", "the destination's is newer");
                    assert!(dst.join("x").is_dir() && dst.join("y").is_file());
                }
                "rename" => {
                    assert_eq!(read("a.txt"), b"src a, newer");
                    assert_eq!(read("a.txt.treeshift-old"), b"dst a");
                    assert_eq!(read("b.txt.treeshift-old"), b"dst b");
                    assert_eq!(read("x"), b"src x is a file");
                    assert_eq!(read("x.treeshift-old/inner"), b"dst x is a folder");
                    assert_eq!(read("y.treeshift-old"), b"dst y is a file");
                    assert_eq!(read("y/child"), b"src y is a folder");
                }
                _ => unreachable!(),
            }
            if matches!(policy, "overwrite" | "rename") {
                let again = rediscover(&src, &dst, &store.state(dir.path(), "again"));
                assert_eq!(again["to_copy"]["files"], 0, "{policy}: {again}");
                assert_eq!(again["conflict"], 0, "{policy}");
                assert_eq!(again["differs"], 0, "{policy}");
            }
        }
    });
}

#[test]
fn an_unreadable_source_file_fails_with_its_reason_and_a_retry_copies_it_alone() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 1, 3);
        fs::write(src.join("secret"), b"s").unwrap();
        fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state, "skip");
        let Some((code, out, err)) =
            util::run_unprivileged(&["copy", "--state", s(&state), "--json"])
        else {
            util::missing_prerequisite("setpriv");
            return;
        };
        fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(code, 4, "{err}");
        assert_eq!(json(&out)["failed"], 1);
        let (_, out, _) = run(&["review", "--state", s(&state), "--status", "copy-failed"]);
        assert!(
            out.contains("secret") && out.contains("permission_denied"),
            "{out}"
        );
        let mut want = snapshot(&src);
        want.remove(b"secret".as_slice());
        assert_eq!(snapshot(&dst), want);
        assert!(temporaries(&dst).is_empty());

        // The cause is fixed (permissions restored above): a retry sweep
        // copies that one item and rewrites nothing else.
        use std::os::unix::fs::MetadataExt;
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        let before = inode(&dst.join("d0").join("f001.txt"));
        let (code, out, err) = run(&["retry", "--state", s(&state), "--path", "d0", "--json"]);
        assert_eq!(code, 4, "nothing failed under d0, the failure stays: {err}");
        assert_eq!(json(&out)["copy"]["requeued"], 0);
        let (code, out, err) = run(&["retry", "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        let summary = &json(&out)["copy"];
        assert_eq!(
            (summary["requeued"].as_u64(), summary["failed"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(snapshot(&dst), snapshot(&src));
        assert_eq!(
            inode(&dst.join("d0").join("f001.txt")),
            before,
            "not rewritten"
        );
        let (_, out, _) = run(&["review", "--state", s(&state), "--status", "copy-failed"]);
        assert_eq!(out.lines().count(), 1, "only the header: {out}");
    });
}

#[test]
fn a_full_destination_stops_the_copy_which_resumes_once_there_is_room() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("big")).unwrap();
        for i in 0..6 {
            fs::write(
                src.join("big").join(format!("b{i}")),
                vec![i as u8; 700 << 10],
            )
            .unwrap();
        }
        make_tree(&src.join("small"), 2, 1, 3);
        let dst = dir.path().join("dst");
        let Some(mount) = util::Tmpfs::mount(&dst, "size=2m") else {
            util::missing_prerequisite("a tmpfs mount");
            return;
        };
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state, "skip");
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 1, "a full destination stops the run: {err}");
        assert!(
            err.contains("no_space") || err.contains("No space"),
            "{err}"
        );
        let status = status_json(&state);
        assert_eq!(status["copy"]["failed"], 0, "not recorded as item failures");
        assert!(
            status["copy"]["pending"].as_u64().unwrap()
                + status["copy"]["copying"].as_u64().unwrap()
                > 0
        );
        assert!(temporaries(&dst).is_empty(), "partial data removed");
        mount.remount("size=16m");
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 0, "resumed: {err}");
        assert_eq!(snapshot(&dst), snapshot(&src));
        assert!(temporaries(&dst).is_empty());
    });
}

#[test]
fn a_read_only_destination_stops_the_copy_cleanly() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 1, 3);
        let dst = dir.path().join("dst");
        let Some(mount) = util::Tmpfs::mount(&dst, "size=1m") else {
            util::missing_prerequisite("a tmpfs mount");
            return;
        };
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state, "skip");
        mount.remount("ro");
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("read_only") || err.contains("Read-only"),
            "{err}"
        );
        assert_eq!(status_json(&state)["copy"]["failed"], 0);
        mount.remount("rw");
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(snapshot(&dst), snapshot(&src));
    });
}

#[test]
fn an_unreadable_source_folder_fails_and_a_retry_walks_and_copies_its_subtree_alone() {
    util::on_every_store(|store| {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 3, 2, 3);
        let locked = src.join("d1");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let args = [
            "migrate",
            s(&src),
            s(&dst),
            "--state",
            s(&state),
            "--yes",
            "--json",
        ];
        let Some((code, out, err)) = util::run_locked_out(&locked, &args) else {
            return;
        };
        assert_eq!(code, 4, "{err}");
        assert_eq!(json(&out)["discovery"]["failed"], 1);
        let (_, out, _) = run(&["review", "--state", s(&state), "--status", "failed"]);
        assert!(
            out.contains("d1") && out.contains("permission_denied"),
            "{out}"
        );
        // Everything else arrived; d1 was created, empty.
        let mut want = snapshot(&src);
        let subtree = want.keys().filter(|k| k.starts_with(b"d1/")).count() as u64;
        want.retain(|k, _| !k.starts_with(b"d1/"));
        assert_eq!(snapshot(&dst), want);

        // The cause is fixed (permissions restored): the sweep lists d1 alone,
        // walks its subtree, and copies exactly that.
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        let untouched = inode(&dst.join("d0").join("f001.txt"));
        let (code, out, err) = run(&["retry", "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        let report = json(&out);
        assert_eq!(report["discovery"]["requeued"]["src"], 1, "{report}");
        assert_eq!(report["discovery"]["summary"]["failed"], 0, "{report}");
        assert_eq!(report["copy"]["approval_extended"], subtree, "{report}");
        assert_eq!(report["copy"]["failed"], 0, "{report}");
        // Touched: d1 and its 3 folders listed, its 12 files read, and the
        // extended attributes of the 4 folders read to set them; nothing
        // listed on the destination (d1 was missing there, so is its subtree).
        assert_eq!(report["calls"]["src"]["list"], 4, "{report}");
        assert_eq!(report["calls"]["src"]["read"], 12 + 4, "{report}");
        assert_eq!(report["calls"]["dst"]["list"], 0, "{report}");
        // Written: 3 folders created, 12 files written, and the metadata of
        // the 4 folders written into (d1 and its 3); no other folder.
        assert_eq!(report["calls"]["dst"]["write"], 3 + 12 + 4, "{report}");
        assert_eq!(snapshot(&dst), snapshot(&src));
        assert_eq!(inode(&dst.join("d0").join("f001.txt")), untouched);
        let (code, out, _) = run(&["review", "--state", s(&state), "--status", "failed"]);
        assert_eq!(
            (code, out.lines().count()),
            (0, 1),
            "only the header: {out}"
        );
        // The listing's attempts are on record: failed once, listed on the second.
        assert_eq!(status_json(&state)["failed"], 0);
        let again = rediscover(&src, &dst, &store.state(dir.path(), "again"));
        assert_eq!(again["to_copy"]["files"], 0, "{again}");
    });
}

#[test]
fn an_unreadable_destination_folder_is_compared_after_a_retry() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 2, 3);
        let dst = dir.path().join("dst");
        util::copy_tree(&src, &dst);
        fs::remove_file(dst.join("d1").join("d0").join("f002.txt")).unwrap();
        // The removal moved the folder's mtime; put the source's back, so the
        // file is the one difference whichever second the test runs in.
        let folder_mtime = fs::metadata(src.join("d1").join("d0"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        util::set_mtime(&dst.join("d1").join("d0"), folder_mtime);
        let locked = dst.join("d1");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let state = store.state(dir.path(), "s");
        let args = ["discover", s(&src), s(&dst), "--state", s(&state), "--json"];
        let Some((code, out, err)) = util::run_locked_out(&locked, &args) else {
            return;
        };
        assert_eq!(code, 4, "{err}");
        let found = json(&out);
        assert_eq!(
            (found["failed"].as_u64(), found["missing"].as_u64()),
            (Some(1), Some(0))
        );
        let (code, _, err) = run(&["approve", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");

        let (code, out, err) = run(&["retry", "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        let report = json(&out);
        assert_eq!(report["discovery"]["requeued"]["dst"], 1, "{report}");
        assert_eq!(report["discovery"]["summary"]["missing"], 1, "{report}");
        assert_eq!(report["copy"]["approval_extended"], 1, "{report}");
        assert_eq!(snapshot(&dst), snapshot(&src));
    });
}

#[test]
fn a_delta_pass_finds_what_changed_and_copies_only_that() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 3, 2, 3);
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let first = migrate_with_checksums(s(&src), &dst, &state);
        assert_eq!(first["discovery"]["pass"], 1);

        // The source moves on: one file new, one modified, one file and one
        // folder (with its subtree) deleted.
        fs::write(src.join("d0").join("new.txt"), b"new").unwrap();
        let modified = src.join("d1").join("f000.txt");
        fs::write(&modified, b"longer than before").unwrap();
        set_mtime(&modified, 1_700_000_000);
        fs::remove_file(src.join("d0").join("f001.txt")).unwrap();
        fs::remove_dir_all(src.join("d2")).unwrap();
        // The folders whose entries changed get a later mtime (within the
        // second the tree was made, the clock may not show it).
        set_mtime(&src.join("d0"), 1_700_000_100);
        set_mtime(&src, 1_700_000_200);
        use std::os::unix::fs::MetadataExt;
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        let untouched = inode(&dst.join("d1").join("f001.txt"));

        let (code, out, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("pass 2"), "{err}");
        let second = json(&out);
        assert_eq!(second["pass"], 2);
        assert_eq!(
            second["changes"],
            serde_json::json!({"new": 1, "modified": 1, "deleted": 2}),
            "{second}"
        );
        assert_eq!(second["to_copy"]["files"], 2, "{second}");
        let (code, out, _) = run(&[
            "review",
            "--state",
            s(&state),
            "--changes",
            "--format",
            "csv",
        ]);
        assert_eq!(code, 0);
        let mut changes: Vec<String> = out
            .lines()
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                format!("{} {}", c[1], c[3])
            })
            .collect();
        changes.sort();
        assert_eq!(
            changes,
            [
                "deleted d0/f001.txt",
                "deleted d2",
                "modified d1/f000.txt",
                "new d0/new.txt"
            ]
        );

        // Copy exactly that; what the source deleted stays on the destination
        // (extra), since treeshift never deletes without being told to.
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 3, "the new plan needs an approval: {err}");
        let (code, _, err) = run(&["approve", "--state", s(&state), "--policy", "overwrite"]);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        let copied = json(&out);
        // The two files, and the mtimes of the two folders whose entries the
        // source changed (d0, and the root that lost d2).
        assert_eq!(
            (copied["planned"].as_u64(), copied["copied"].as_u64()),
            (Some(4), Some(4))
        );
        assert_eq!(copied["bytes_planned"], 3 + 18, "{copied}");
        assert_eq!(inode(&dst.join("d1").join("f001.txt")), untouched);
        let (want, got) = (snapshot(&src), snapshot(&dst));
        for (path, node) in &want {
            assert_eq!(
                got.get(path),
                Some(node),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        let extra: Vec<&[u8]> = got
            .keys()
            .filter(|k| !want.contains_key(*k) && !k.starts_with(b"d2/"))
            .map(|k| k.as_slice())
            .collect();
        assert_eq!(extra, [b"d0/f001.txt".as_slice(), b"d2"]);

        // Nothing changed since: the next pass finds nothing to copy.
        let (code, out, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        let third = json(&out);
        assert_eq!(third["pass"], 3);
        assert_eq!(
            third["changes"],
            serde_json::json!({"new": 0, "modified": 0, "deleted": 0})
        );
        assert_eq!(third["to_copy"]["files"], 0);
    });
}

#[test]
fn extras_stay_unless_an_approval_moves_them_into_quarantine() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 1, 2);
        let dst = dir.path().join("dst");
        util::copy_tree(&src, &dst);
        fs::write(dst.join("old.log"), b"log").unwrap();
        fs::create_dir(dst.join("d0").join("stale")).unwrap();
        fs::write(dst.join("d0").join("stale").join("x"), b"x").unwrap();
        fs::write(dst.join("d1").join("gone.txt"), b"gone").unwrap();
        let before = snapshot(&dst);

        // The default leaves them where they are.
        let kept = store.state(dir.path(), "kept");
        discover_and_approve(&src, &dst, &kept, "skip");
        let (code, out, _) = run(&[
            "review",
            "--state",
            s(&kept),
            "--status",
            "extra",
            "--format",
            "csv",
        ]);
        assert_eq!((code, out.lines().count()), (0, 4), "3 extras: {out}");
        let (code, _, err) = run(&["copy", "--state", s(&kept)]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(snapshot(&dst), before);

        // Approved explicitly: moved, with their contents, never deleted.
        let moved = store.state(dir.path(), "moved");
        let (code, _, err) = run(&["discover", s(&src), s(&dst), "--state", s(&moved)]);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run(&[
            "approve",
            "--state",
            s(&moved),
            "--extras",
            "quarantine",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["quarantines"], 3);
        let (code, _, err) = run(&["copy", "--state", s(&moved)]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(&["verify", "--state", s(&moved)]);
        assert_eq!(code, 0, "{err}");
        let after = snapshot(&dst);
        let q = ".treeshift-quarantine/pass-1/";
        for extra in ["old.log", "d0/stale", "d0/stale/x", "d1/gone.txt"] {
            let (was, now) = (
                extra.as_bytes().to_vec(),
                format!("{q}{extra}").into_bytes(),
            );
            assert!(!after.contains_key(&was), "{extra} moved away");
            assert_eq!(
                after.get(&now),
                before.get(&was),
                "{extra} kept in quarantine"
            );
        }
        let mut rest = after.clone();
        rest.retain(|k, _| !k.starts_with(b".treeshift-quarantine"));
        assert_eq!(rest, snapshot(&src));
        // The quarantine folder is ours: a new discovery does not call it extra.
        let again = rediscover(&src, &dst, &store.state(dir.path(), "again"));
        assert_eq!(
            (again["extra"].as_u64(), again["to_copy"]["files"].as_u64()),
            (Some(0), Some(0))
        );
    });
}
