//! Remote storage to remote storage, through treeshift alone: a tree goes
//! local → SFTP → S3 → Azure Blob → local, each step a `migrate` checked
//! by `verify --checksum` (every byte read back from both sides) and by a
//! second discovery with nothing to copy; the S3 → Azure copy is killed at
//! random moments and resumed. What comes back equals the first tree
//! (rsync: data and mtimes).

mod util;

use std::fs;
use std::path::Path;
use util::{Rng, make_tree, migrate_with_kills, run, s};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Migrates `src` to `dst` on `state` (or, with `kills`, discovers,
/// approves and copies killing the copy at random moments), then checks
/// every copied file byte for byte on both sides and that a second
/// discovery finds nothing to copy.
fn step(src: &str, dst: &str, state: &Path, kills: Option<&mut Rng>) {
    match kills {
        Some(rng) => migrate_with_kills(src, dst, state, ["--dst-tps", "40"], 3, rng),
        None => {
            let (code, out, err) = run(&["migrate", src, dst, "--state", s(state), "--yes"]);
            assert_eq!(code, 0, "{src} -> {dst}: {out} {err}");
        }
    }
    let (code, out, err) = run(&["verify", "--state", s(state), "--checksum", "--json"]);
    assert_eq!(code, 0, "{src} -> {dst}: {out} {err}");
    let verified = json(&out);
    assert_eq!(verified["mismatch"], 0, "{verified}");
    assert!(verified["checked"].as_u64().unwrap() > 0, "{verified}");
    let (code, out, err) = run(&["discover", src, dst, "--state", s(state), "--json"]);
    assert_eq!(code, 0, "{err}");
    let again = json(&out);
    assert_eq!(again["to_copy"]["files"], 0, "{src} -> {dst}: {again}");
    assert_eq!(again["differs"], 0, "{src} -> {dst}: {again}");
}

#[test]
fn a_tree_goes_through_sftp_s3_and_azure_and_comes_back_whole() {
    let (Some(sftp), Some(s3), Some(azure)) =
        (util::sftp_server(), util::s3_server(), util::azure_server())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 3, 2, 4);
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("d1/big.bin"), big).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::create_dir_all(src.join("hollow/inner")).unwrap();
    let state = |n: &str| dir.path().join(n);
    let on_sftp = sftp.location(&dir.path().join("served"));
    // Each store keeps empty folders as markers.
    let markers = "&folder_markers=true";
    let (on_s3, on_azure) = (s3.s3("pairs") + markers, azure.azblob("pairs") + markers);

    step(s(&src), &on_sftp, &state("1.duckdb"), None);
    step(&on_sftp, &on_s3, &state("2.duckdb"), None);
    step(
        &on_s3,
        &on_azure,
        &state("3.duckdb"),
        Some(&mut Rng::from_env()),
    );
    let back = dir.path().join("back");
    step(&on_azure, s(&back), &state("4.duckdb"), None);

    // What came back is the first tree, read by a tool nobody here wrote:
    // data by checksum, files' mtimes (each store kept them in metadata),
    // empty folders.
    let out = util::tool(
        "rsync",
        &[
            "-r",
            "-c",
            "-t",
            "--omit-dir-times",
            "-n",
            "-i",
            "--delete",
            &format!("{}/", s(&src)),
            &format!("{}/", s(&back)),
        ],
    );
    if let Some(out) = out {
        assert!(out.trim().is_empty(), "{out}");
    }
    assert!(back.join("hollow/inner").is_dir());
}

/// From one object store to another, an object treeshift did not write
/// (here put there by another migration, with a state of its own) is
/// compared by the MD5 both listings give: S3's single-part ETag, Azure's
/// and GCS's Content-MD5. One rewritten at the same size differs with the
/// two hashes as its reason; one alike is the same, and nothing is read
/// to tell them apart. The copy then sends exactly those, and a second
/// discovery finds nothing to do.
#[test]
fn objects_put_there_before_compare_by_the_md5_both_listings_give() {
    let (Some(s3), Some(azure), Some(gcs)) =
        (util::s3_server(), util::azure_server(), util::gcs_server())
    else {
        return;
    };
    let runs = std::sync::atomic::AtomicUsize::new(0);
    util::on_every_store(|store| {
        let n = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::tempdir().unwrap();
        let (src, seed) = (dir.path().join("src"), dir.path().join("seed"));
        for (root, files) in [
            (
                &src,
                [("alike", "one\n"), ("rewritten", "before"), ("new", "n")],
            ),
            (
                &seed,
                [("alike", "one\n"), ("rewritten", "BEFORE"), ("", "")],
            ),
        ] {
            fs::create_dir_all(root.join("d")).unwrap();
            for (name, data) in files.iter().filter(|(name, _)| !name.is_empty()) {
                fs::write(root.join("d").join(name), data).unwrap();
            }
        }
        let state = |name: &str| store.state(dir.path(), name);
        let on_s3 = s3.s3(&format!("md5-src-{n}"));
        step(s(&src), &on_s3, &state("to-s3"), None);
        for (i, dst) in [
            s3.s3(&format!("md5-dst-{n}")),
            azure.azblob(&format!("md5-dst-{n}")),
            gcs.gcs(&format!("md5-dst-{n}")),
        ]
        .iter()
        .enumerate()
        {
            step(s(&seed), dst, &state(&format!("seed-{i}")), None);
            let state = state(&format!("pair-{i}"));
            let (code, out, err) = run(&["discover", &on_s3, dst, "--state", s(&state), "--json"]);
            assert_eq!(code, 0, "{err}");
            let found = json(&out);
            assert_eq!(
                (&found["same"], &found["differs"], &found["missing"]),
                (&2.into(), &1.into(), &1.into()),
                "{dst}: {found}"
            );
            // Neither side's objects were read or asked for one by one
            // (a stat each is the roots').
            for side in ["src", "dst"] {
                let calls = &found["calls"][side];
                assert_eq!(calls["read"], 0, "{found}");
                assert!(calls["stat"].as_u64().unwrap() <= 2, "{found}");
            }
            let differs = util::review_csv(&state, "differs");
            let (before, upper) = (md5_hex(b"before"), md5_hex(b"BEFORE"));
            assert!(
                differs.iter().any(|row| row.contains("d/rewritten")
                    && row.contains(&format!("content MD5 {before} on src, {upper} on dst"))),
                "{dst}: {differs:?}"
            );
            let (code, _, err) = run(&["approve", "--state", s(&state), "--policy", "overwrite"]);
            assert_eq!(code, 0, "{err}");
            let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(json(&out)["copied"], 2, "{dst}: {out}");
            let (code, out, err) = run(&["discover", &on_s3, dst, "--state", s(&state), "--json"]);
            assert_eq!(code, 0, "{err}");
            let again = json(&out);
            assert_eq!(again["to_copy"]["files"], 0, "{dst}: {again}");
            assert_eq!(again["differs"], 0, "{dst}: {again}");
        }
    });
}

/// The MD5 of `data` in hex, from the system's `md5sum`.
fn md5_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum (coreutils)");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}
