//! Confinement: nothing is read from outside the source root or written
//! outside the destination root, whatever is swapped during a run. A
//! folder swapped for a symlink is a change to report, never a way out.

mod util;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use util::{
    CANARY_SECRET, Rng, files_containing, on_every_store, review_csv, run, s, set_mtime, snapshot,
    status_json, swap_race,
};

fn discover_and_approve(src: &Path, dst: &Path, state: &Path) {
    let (code, _, err) = run(&["discover", s(src), s(dst), "--state", s(state)]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["approve", "--state", s(state)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_destination_folder_swapped_for_a_symlink_before_the_copy_is_not_written_through() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, outside) = (
            dir.path().join("src"),
            dir.path().join("dst"),
            dir.path().join("outside"),
        );
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/g"), b"g data").unwrap();
        fs::write(src.join("a/b/f"), b"f data").unwrap();
        fs::create_dir_all(dst.join("a")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), b"not yours").unwrap();
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state);

        // Discovery saw dst/a as a folder; now it leads outside.
        fs::remove_dir(dst.join("a")).unwrap();
        symlink(&outside, dst.join("a")).unwrap();
        let before = snapshot(&outside);
        let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
        assert_eq!(code, 4, "changed items: {out} {err}");
        assert_eq!(snapshot(&outside), before, "nothing written outside");
        let changed = review_csv(&state, "changed");
        assert_eq!(changed.len(), 3, "a/b, a/b/f and a/g: {changed:?}");
        assert!(
            changed
                .iter()
                .all(|l| l.contains("destination: a symlink is in the way")),
            "{changed:?}"
        );
        // A new pass sees the symlink as what it is.
        let (code, _, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let conflict = review_csv(&state, "conflict");
        assert!(
            conflict
                .iter()
                .any(|l| l.contains("folder on src, symlink on dst")),
            "{conflict:?}"
        );
    });
}

#[test]
fn a_source_folder_swapped_for_a_symlink_to_a_private_folder_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, private) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("private"),
    );
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(&private).unwrap();
    let public = vec![b'p'; CANARY_SECRET.len()];
    fs::write(src.join("a/f"), &public).unwrap();
    fs::write(private.join("f"), CANARY_SECRET).unwrap();
    fs::set_permissions(private.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    for f in [src.join("a/f"), private.join("f")] {
        set_mtime(&f, 1_700_000_000);
    }
    let state = dir.path().join("s.duckdb");
    discover_and_approve(&src, &dst, &state);

    // Same name, size and mtime behind the link: only confinement tells.
    fs::rename(src.join("a"), dir.path().join("a.moved")).unwrap();
    symlink(&private, src.join("a")).unwrap();
    let (code, _, err) = run(&["copy", "--state", s(&state)]);
    assert_eq!(code, 4, "{err}");
    assert!(!dst.join("a/f").exists());
    let changed = review_csv(&state, "changed");
    assert!(
        changed.len() == 1 && changed[0].contains("source: a symlink is in the way"),
        "{changed:?}"
    );
    assert!(files_containing(&dst, CANARY_SECRET).is_empty());
    assert!(files_containing(&state, CANARY_SECRET).is_empty());
}

#[test]
fn a_source_file_replaced_by_a_link_to_a_root_only_file_is_never_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    // Like /etc/shadow: owned by root, mode 600, the same size and mtime
    // as the file discovery saw.
    let shadow = dir.path().join("shadow");
    fs::write(&shadow, CANARY_SECRET).unwrap();
    fs::set_permissions(&shadow, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src.join("f"), vec![b'x'; CANARY_SECRET.len()]).unwrap();
    for f in [&shadow, &src.join("f")] {
        set_mtime(f, 1_700_000_000);
    }
    let state = dir.path().join("s.duckdb");
    discover_and_approve(&src, &dst, &state);
    fs::remove_file(src.join("f")).unwrap();
    symlink(&shadow, src.join("f")).unwrap();
    let (code, _, err) = run(&["copy", "--state", s(&state)]);
    assert_eq!(code, 4, "{err}");
    let changed = review_csv(&state, "changed");
    assert!(
        changed.len() == 1 && changed[0].contains("source: now a symlink"),
        "{changed:?}"
    );
    // Neither a retry nor a verification reads it either.
    for args in [
        vec!["retry", "--state", s(&state)],
        vec!["verify", "--state", s(&state), "--checksum"],
    ] {
        let (code, _, err) = run(&args);
        assert!(code == 0 || code == 4, "{args:?}: {err}");
    }
    assert!(!dst.join("f").exists());
    assert!(files_containing(&dst, CANARY_SECRET).is_empty());
    assert!(files_containing(&state, CANARY_SECRET).is_empty());
}

#[test]
fn names_that_cannot_be_paths_are_invalid_name_items_and_never_used() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("nest").join("dst");
        let state = store.state(dir.path(), "s");
        let source = "sim:seed=3,depth=1,fanout=2,files=2,bad_names=1";
        let (code, out, err) = run(&[
            "migrate",
            source,
            s(&dst),
            "--state",
            s(&state),
            "--yes",
            "--json",
        ]);
        assert_eq!(
            code, 4,
            "invalid names are reported by the exit code: {err}"
        );
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        // Six bad names in the root and in each of its two folders.
        assert_eq!(summary["discovery"]["invalid_name"], 18, "{summary}");
        let items = review_csv(&state, "invalid-name");
        assert_eq!(items.len(), 18, "{items:?}");
        for needle in ["an empty name", "'..'", "holding '/'", "NUL byte", "'.'"] {
            assert!(
                items.iter().any(|l| l.contains(needle)),
                "{needle}: {items:?}"
            );
        }
        // Only the plain names were written, and only inside the destination.
        let written: Vec<String> = snapshot(&dst)
            .into_keys()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        assert_eq!(written.len(), 2 + 2 + 2 * 2, "{written:?}");
        let mut beside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with("s.duckdb"))
            .collect();
        beside.sort();
        assert_eq!(beside, ["nest"]);
        assert_eq!(fs::read_dir(dir.path().join("nest")).unwrap().count(), 1);
        assert_eq!(status_json(&state)["invalid_name"], 18);
    });
}

#[test]
fn swaps_during_copy_verify_retry_and_quarantine_never_leave_the_roots() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Rng::from_env().next();
    let race = swap_race(dir.path(), 3, seed);
    assert!(race.swaps > 0, "the race ran: {race:?}");
    assert!(race.bad_exits.is_empty(), "{:?}", race.bad_exits);
    assert!(
        race.canaries_touched.is_empty(),
        "{:?}",
        race.canaries_touched
    );
    assert!(race.leaks.is_empty(), "{:?}", race.leaks);
}

#[test]
fn a_folder_put_in_the_place_of_the_one_discovery_saw_is_a_change() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        // a/f and b/f: same name, size and mtime, other content.
        for (folder, data) in [("a", b"from a"), ("b", b"from b")] {
            fs::create_dir_all(src.join(folder)).unwrap();
            fs::write(src.join(folder).join("f"), data).unwrap();
            set_mtime(&src.join(folder).join("f"), 1_700_000_000);
        }
        // The destination has a folder x that discovery sees.
        fs::create_dir_all(src.join("x")).unwrap();
        fs::write(src.join("x/g"), b"g").unwrap();
        fs::create_dir_all(dst.join("x")).unwrap();
        let state = store.state(dir.path(), "s");
        discover_and_approve(&src, &dst, &state);

        // On the source, b takes a's place; on the destination, a new x
        // takes the place of the one discovery saw.
        fs::rename(src.join("a"), dir.path().join("a.old")).unwrap();
        fs::rename(src.join("b"), src.join("a")).unwrap();
        fs::rename(dst.join("x"), dir.path().join("x.old")).unwrap();
        fs::create_dir(dst.join("x")).unwrap();
        let (code, _, err) = run(&["copy", "--state", s(&state)]);
        assert_eq!(code, 4, "{err}");
        let changed = review_csv(&state, "changed");
        assert!(
            changed
                .iter()
                .any(|l| l.contains(",a/f,")
                    && l.contains("source: a is not the folder discovery saw")),
            "{changed:?}"
        );
        assert!(
            changed.iter().any(|l| l.contains(",x/g,")
                && l.contains("destination: x is not the folder discovery saw")),
            "{changed:?}"
        );
        assert!(!dst.join("a/f").exists(), "b's file is not copied as a's");
        assert!(!dst.join("x/g").exists());
        assert_eq!(fs::read_dir(dir.path().join("x.old")).unwrap().count(), 0);
    });
}
