//! Helpers shared by the end-to-end tests: run the real binary, build trees.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_treeshift"))
}

/// Runs `treeshift ARGS` to completion.
pub fn treeshift(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run treeshift")
}

/// Runs and returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = treeshift(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `status --json` of a state file, parsed.
pub fn status_json(state: &Path) -> serde_json::Value {
    let (code, out, err) = run(&["status", "--state", s(state), "--json"]);
    assert!(code == 0 || code == 4, "status failed ({code}): {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status json: {e}: {out}"))
}

/// Every reviewed item of every status, as sorted CSV lines.
pub fn all_items(state: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for status in [
        "missing", "same", "differs", "conflict", "extra", "excluded", "failed",
    ] {
        let out = treeshift(&[
            "review",
            "--state",
            s(state),
            "--status",
            status,
            "--format",
            "csv",
        ]);
        assert!(
            out.status.success(),
            "review {status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        lines.extend(text.lines().skip(1).map(|l| format!("{status}|{l}")));
    }
    lines.sort();
    lines
}

/// A path as a `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// A small deterministic pseudo-random generator (splitmix64) so the tests
/// need no extra crate; the seed is printed for reproduction.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock unless TREESHIFT_TEST_SEED is set.
    pub fn from_env() -> Rng {
        let seed = std::env::var("TREESHIFT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("TREESHIFT_TEST_SEED={seed}");
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes a local tree: `folders` folders spread over a few levels, each
/// with `files` small files with fixed mtimes.
pub fn make_tree(root: &Path, fanout: usize, depth: usize, files: usize) {
    fn fill(dir: &Path, fanout: usize, depth: usize, files: usize, tag: &str) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..files {
            let p = dir.join(format!("f{i:03}.txt"));
            std::fs::write(&p, format!("{tag}/{i}").repeat(i % 7 + 1)).unwrap();
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(1_600_000_000 + i as u64 * 60);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        if depth > 0 {
            for j in 0..fanout {
                fill(
                    &dir.join(format!("d{j}")),
                    fanout,
                    depth - 1,
                    files,
                    &format!("{tag}/{j}"),
                );
            }
        }
    }
    fill(root, fanout, depth, files, "");
}
