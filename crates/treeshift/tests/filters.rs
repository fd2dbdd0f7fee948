//! Filter rules end to end: every excluded node is recorded with the rule
//! that excluded it, nothing excluded is copied, and the rules are part of
//! the state file and of the approval. Each test runs with the state in a
//! DuckDB file, then in PostgreSQL.

mod util;

use std::fs;
use std::path::Path;
use util::{run, s, set_mtime, snapshot};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("json: {e}: {out}"))
}

/// A file of `len` bytes modified at `mtime` (seconds).
fn file(path: &Path, len: usize, mtime: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, vec![b'x'; len]).unwrap();
    set_mtime(path, mtime);
}

const RECENT: u64 = 1_700_000_000; // 2023-11
const OLD: u64 = 1_262_304_000; // 2010-01-01

const RULES: [&str; 14] = [
    "--exclude",
    "*.tmp",
    "--exclude",
    "!keep.tmp",
    "--exclude",
    "cache/",
    "--min-size",
    "20",
    "--max-size",
    "4k",
    "--modified-after",
    "2015-01-01",
    "--skip-hidden",
    "--skip-symlinks",
];

#[test]
fn every_rule_excludes_with_its_reason_and_nothing_excluded_is_copied() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        file(&src.join("keep.txt"), 100, RECENT);
        file(&src.join("small.txt"), 10, RECENT);
        file(&src.join("big.bin"), 5000, RECENT);
        file(&src.join("old.txt"), 100, OLD);
        file(&src.join(".dotfile"), 100, RECENT);
        file(&src.join(".hidden").join("inside.txt"), 100, RECENT);
        file(&src.join("sub").join("scratch.tmp"), 100, RECENT);
        file(&src.join("sub").join("keep.tmp"), 100, RECENT);
        file(&src.join("sub").join("cache").join("c.txt"), 100, RECENT);
        file(&src.join("sub").join("cache.txt"), 100, RECENT); // a file, not the cache/ folder
        std::os::unix::fs::symlink("keep.txt", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");

        let mut args = vec![
            "migrate",
            s(&src),
            s(&dst),
            "--state",
            s(&state),
            "--yes",
            "--json",
        ];
        args.extend(RULES);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let report = json(&out);
        assert_eq!(report["discovery"]["excluded"], 8, "{report}");
        let filters = report["approval"]["filters"].as_array().unwrap();
        assert!(filters.iter().any(|f| f == "min-size 20"), "{filters:?}");

        let (code, out, _) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "excluded",
            "--format",
            "csv",
        ]);
        assert_eq!(code, 0);
        let mut reasons: Vec<(String, String)> = out
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                (cols[3].to_string(), cols[6].to_string())
            })
            .collect();
        reasons.sort();
        let want = [
            (".dotfile", "hidden"),
            (".hidden", "hidden"),
            ("big.bin", "max-size:4096"),
            ("link", "kind:symlink"),
            ("old.txt", "modified-after:2015-01-01T00:00:00Z"),
            ("small.txt", "min-size:20"),
            ("sub/cache", "exclude:cache/"),
            ("sub/scratch.tmp", "exclude:*.tmp"),
        ]
        .map(|(p, r)| (p.to_string(), r.to_string()));
        assert_eq!(reasons, want);

        let copied: Vec<Vec<u8>> = snapshot(&dst).into_keys().collect();
        let expected: Vec<&[u8]> = vec![b"keep.txt", b"sub", b"sub/cache.txt", b"sub/keep.tmp"];
        assert_eq!(copied, expected);
    });
}

#[test]
fn the_rules_belong_to_the_state_file_and_bad_values_are_usage_errors() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        file(&src.join("a.txt"), 100, RECENT);
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let mut args = vec!["discover", s(&src), s(&dst), "--state", s(&state)];
        args.extend(RULES);
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let status = util::status_json(&state);
        assert_eq!(status["filter"]["min_size"], 20, "{status}");
        assert_eq!(status["filter"]["skip_hidden"], true, "{status}");

        // Other rules on the same state file: refused, naming both sets.
        let (code, _, err) = run(&[
            "discover",
            s(&src),
            s(&dst),
            "--state",
            s(&state),
            "--min-size",
            "1",
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("filter rules") && err.contains("min-size 20"),
            "{err}"
        );

        for (flag, value, needle) in [
            ("--min-size", "12q", "unknown unit"),
            ("--modified-after", "7d", "relative"),
            ("--exclude", "a[", "invalid --exclude pattern"),
        ] {
            let other = store.state(dir.path(), "other");
            let (code, _, err) = run(&[
                "discover",
                s(&src),
                s(&dst),
                "--state",
                s(&other),
                flag,
                value,
            ]);
            assert_eq!(code, 2, "{flag} {value}: {err}");
            assert!(err.contains(needle), "{flag} {value}: {err}");
            assert!(!other.exists(), "no state file for a usage error");
        }
    });
}

#[test]
fn names_that_clash_on_a_case_insensitive_destination_are_found_at_discovery() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        file(&src.join("Case.txt"), 10, RECENT);
        file(&src.join("case.txt"), 20, RECENT);
        file(&src.join("Dir").join("a"), 30, RECENT);
        file(&src.join("dir").join("b"), 40, RECENT);
        file(&src.join("other.txt"), 50, RECENT);
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let (code, out, err) = run(&[
            "migrate",
            s(&src),
            s(&dst),
            "--state",
            s(&state),
            "--yes",
            "--dst-case-insensitive",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["discovery"]["excluded"], 2, "{out}");
        let (_, out, _) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "excluded",
            "--format",
            "csv",
        ]);
        let mut rows: Vec<&str> = out.lines().skip(1).collect();
        rows.sort();
        assert_eq!(rows.len(), 2, "{out}");
        assert!(
            rows[0].contains(",case.txt,")
                && rows[0].contains("dst-case-clash")
                && rows[0].contains("Case.txt"),
            "{out}"
        );
        assert!(
            rows[1].contains(",dir,") && rows[1].contains("Dir"),
            "{out}"
        );
        // Only the first of each clash was copied; nothing under the other.
        let copied: Vec<Vec<u8>> = snapshot(&dst).into_keys().collect();
        let expected: Vec<&[u8]> = vec![b"Case.txt", b"Dir", b"Dir/a", b"other.txt"];
        assert_eq!(copied, expected);

        // The rule belongs to the state file; without it nothing clashes.
        let (code, _, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state)]);
        assert_eq!(code, 1);
        assert!(err.contains("destination case rule"), "{err}");
        let plain = store.state(dir.path(), "plain");
        let (code, out, err) = run(&[
            "discover",
            s(&src),
            s(&dir.path().join("d2")),
            "--state",
            s(&plain),
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["excluded"], 0);
    });
}

#[test]
fn a_destination_item_whose_source_is_excluded_takes_the_verdict_not_extra() {
    util::on_every_store(|store| {
        // The size rule excludes the source's small.txt, while the destination's
        // is big enough to pass on its own: it is the excluded item's
        // counterpart, not an extra for the extras policy to act on.
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        file(&src.join("small.txt"), 10, RECENT);
        file(&src.join("keep.txt"), 100, RECENT);
        file(&dst.join("small.txt"), 100, RECENT);
        file(&dst.join("keep.txt"), 100, RECENT);
        file(&dst.join("only-here.txt"), 100, RECENT);
        let state = store.state(dir.path(), "s");
        let (code, out, err) = run(&[
            "discover",
            s(&src),
            s(&dst),
            "--state",
            s(&state),
            "--min-size",
            "20",
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let summary = json(&out);
        assert_eq!(summary["excluded"], 1, "{out}");
        assert_eq!(summary["same"], 1, "{out}");
        assert_eq!(summary["extra"], 1, "{out}");
        let (_, out, _) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "extra",
            "--format",
            "csv",
        ]);
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{out}");
        assert!(rows[0].contains(",only-here.txt,"), "{out}");
    });
}
