//! A round's seal compares and counts its nodes in slices of ids, so that a
//! round of millions of nodes fits the store's memory. Cut into slices of
//! two nodes, a seal must leave every item, count and reason exactly as
//! one slice does, on a tree with every kind of verdict, and in a second
//! pass (where the previous pass's source decides what is outdated).

mod util;

use std::fs;
use std::path::Path;
use std::process::Command;
use util::{copy_tree, make_tree, s, same_end_state, set_mtime};

/// `treeshift ARGS` with `TREESHIFT_SEAL_SLICE` set to `slice` (none: the
/// default), asserting success; returns stderr.
fn treeshift(slice: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(util::bin());
    command.args(args);
    if let Some(slice) = slice {
        command
            .env("TREESHIFT_SEAL_SLICE", slice)
            .env("RUST_LOG", "treeshift_store=debug");
    }
    let out = command.output().expect("run treeshift");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    set_mtime(path, 1_650_000_000);
}

/// The source, and a destination that differs from it in every way a
/// comparison tells apart.
fn trees(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, dst) = (root.join("src"), root.join("dst"));
    make_tree(&src, 3, 2, 6);
    write(&src.join("d0/a.skip"), b"excluded on both sides");
    write(&src.join("d1/d2/b.skip"), b"excluded");
    copy_tree(&src, &dst);
    // A folder missing on the destination (its children: parent missing).
    fs::remove_dir_all(dst.join("d1/d0")).unwrap();
    // A folder that is a file on the destination (a conflict).
    fs::remove_dir_all(dst.join("d2/d1")).unwrap();
    write(&dst.join("d2/d1"), b"a file where the source has a folder");
    // Data that differs, and metadata alone.
    write(&dst.join("d0/f001.txt"), b"changed on the destination");
    let mut perms = fs::metadata(dst.join("d1/f002.txt")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(dst.join("d1/f002.txt"), perms).unwrap();
    // Extras at every depth, a folder of them included.
    write(&dst.join("extra.txt"), b"x");
    write(&dst.join("d0/extra.txt"), b"x");
    write(&dst.join("d0/d1/extra.txt"), b"x");
    write(&dst.join("only-here/inside.txt"), b"x");
    (src, dst)
}

/// Runs `f` with `tree` moved to `dst`, the destination both state files
/// name (a state file keeps its destination's path), then moves it back.
fn at<R>(dst: &Path, tree: &Path, f: impl FnOnce() -> R) -> R {
    fs::rename(tree, dst).unwrap();
    let r = f();
    fs::rename(dst, tree).unwrap();
    r
}

#[test]
fn a_seal_in_slices_ends_as_one_seal_does() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = trees(dir.path());
    let (tree_whole, tree_sliced) = (dir.path().join("dst-whole"), dir.path().join("dst-sliced"));
    copy_tree(&dst, &tree_sliced);
    fs::rename(&dst, &tree_whole).unwrap();
    let (whole, sliced) = (
        dir.path().join("whole.duckdb"),
        dir.path().join("sliced.duckdb"),
    );
    let discover = |slice, state: &Path| {
        let args = [
            "discover",
            s(&src),
            s(&dst),
            "--state",
            s(state),
            "--exclude",
            "*.skip",
        ];
        treeshift(slice, &args)
    };

    at(&dst, &tree_whole, || discover(None, &whole));
    let log = at(&dst, &tree_sliced, || discover(Some("2"), &sliced));
    // It was cut: the deepest round holds 54 source files and 9 folders.
    assert!(
        log.lines().any(|l| l.contains("seal: compared in slices")
            && l.contains("src_slices=")
            && !l.contains("src_slices=1 ")
            && !l.contains("src_slices=0 ")),
        "no seal in several slices: {log}"
    );
    same_end_state(&whole, &sliced);

    // Copy what the default approval copies, change the source, and
    // discover again: a second pass, where an item the destination holds
    // as the first pass's source left it is outdated, not differing.
    for (slice, state, tree) in [
        (None, &whole, &tree_whole),
        (Some("2"), &sliced, &tree_sliced),
    ] {
        at(&dst, tree, || {
            treeshift(slice, &["approve", "--state", s(state)]);
            treeshift(slice, &["copy", "--state", s(state)]);
        });
    }
    write(&src.join("d1/d1/f003.txt"), b"the source changed");
    write(&src.join("d0/new.txt"), b"new in the source");
    fs::remove_file(src.join("d2/f000.txt")).unwrap();
    at(&dst, &tree_whole, || discover(None, &whole));
    at(&dst, &tree_sliced, || discover(Some("2"), &sliced));
    same_end_state(&whole, &sliced);
    let items = util::all_items(&sliced);
    assert!(
        items
            .iter()
            .any(|l| l.starts_with("outdated|") && l.contains(",d1/d1/f003.txt,")),
        "the changed file is not outdated: {items:?}"
    );
}
