//! Approval, copy and verification with the migration's state in
//! PostgreSQL, by the real binary: each gives what it gives with the state
//! in a DuckDB file (plans, copies, verifications and reviews alike, and
//! the same destination, which rsync finds nothing to change in); a copy
//! killed with SIGKILL resumes to the uninterrupted result; and one
//! process at a time copies a migration.

mod util;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use util::cluster::Cluster;
use util::{command, copy_tree, make_tree, run, s, set_mtime, snapshot, temporaries};

/// A source and a destination that disagree in every way a plan acts on:
/// files missing, newer and older on either side, a file where a folder
/// is and the reverse, a mode alone that differs, hard links, a symlink,
/// and extras. Every mtime is set, so a `cp -a` of it is the same pair.
fn disagreeing_pair(root: &Path) -> (PathBuf, PathBuf) {
    let (src, dst) = (root.join("src"), root.join("dst"));
    make_tree(&src, 2, 2, 3);
    make_tree(&dst.join("d1"), 2, 1, 3);
    fs::create_dir_all(src.join("y")).unwrap();
    fs::create_dir_all(dst.join("x")).unwrap();
    let write = |p: PathBuf, data: &[u8], mtime: u64| {
        fs::write(&p, data).unwrap();
        set_mtime(&p, mtime);
    };
    write(src.join("a.txt"), b"src a, newer", 1_700_000_000);
    write(dst.join("a.txt"), b"dst a", 1_600_000_000);
    write(src.join("b.txt"), b"src b, older", 1_500_000_000);
    write(dst.join("b.txt"), b"dst b", 1_600_000_000);
    write(src.join("x"), b"src x is a file", 1_600_000_000);
    write(
        dst.join("x").join("inner"),
        b"dst x is a folder",
        1_600_000_000,
    );
    write(
        src.join("y").join("child"),
        b"src y is a folder",
        1_600_000_000,
    );
    write(dst.join("y"), b"dst y is a file", 1_600_000_000);
    write(dst.join("extra.txt"), b"only here", 1_600_000_000);
    // The same data and time, another mode: only metadata differs.
    fs::set_permissions(dst.join("d1/f000.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(src.join("d0/f001.txt"), src.join("d0/hard")).unwrap();
    fs::hard_link(src.join("d0/f001.txt"), src.join("d1/hard")).unwrap();
    std::os::unix::fs::symlink("../a.txt", src.join("d0/link")).unwrap();
    for (tree, folders) in [
        (&src, ["", "d0", "d1", "y"]),
        (&dst, ["", "d1", "x", "d1/d0"]),
    ] {
        for folder in folders {
            set_mtime(&tree.join(folder), 1_650_000_000);
        }
    }
    (src, dst)
}

/// `args` run to success; the JSON it prints, without what differs from
/// one run (or one store) to another by nature: the plan's hash (it
/// covers node ids), when it was approved, timings and calls.
fn json_run(args: &[&str]) -> Value {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    let mut value: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    if let Some(fields) = value.as_object_mut() {
        for key in ["plan_hash", "approved_at", "timing", "calls", "elapsed_s"] {
            fields.remove(key);
        }
    }
    value
}

/// Everything the review lists in `status`, as CSV.
fn review(state: &str, status: &str) -> String {
    let (code, out, err) = run(&[
        "review", "--state", state, "--status", status, "--format", "csv",
    ]);
    assert_eq!(code, 0, "review {status}: {err}");
    out
}

/// What a whole migration of `src` to `dst` under `policy` (and
/// `extras`) gives with its state at `state`: each step's output, and the
/// reviews of the plan's outcome.
fn migration(src: &Path, dst: &Path, state: &str, policy: &str, extras: &str) -> Vec<Value> {
    let mut steps = vec![json_run(&[
        "discover",
        s(src),
        s(dst),
        "--state",
        state,
        "--json",
    ])];
    steps.push(json_run(&[
        "approve", "--state", state, "--policy", policy, "--extras", extras, "--json",
    ]));
    steps.push(json_run(&["copy", "--state", state, "--json"]));
    steps.push(json_run(&[
        "verify",
        "--state",
        state,
        "--checksum",
        "--json",
    ]));
    for status in ["copied", "skipped", "copy-failed", "mismatch", "all"] {
        steps.push(Value::String(review(state, status)));
    }
    steps
}

/// What `rsync -a -H -c -n -i` would still change from `src` to `dst`
/// (extras stay: no `--delete`).
fn rsync_changes(src: &Path, dst: &Path) -> Option<Vec<String>> {
    let out = util::tool(
        "rsync",
        &[
            "-a",
            "-H",
            "-c",
            "-n",
            "-i",
            &format!("{}/", s(src)),
            &format!("{}/", s(dst)),
        ],
    )?;
    Some(out.lines().map(str::to_string).collect())
}

#[test]
fn every_policy_plans_copies_and_verifies_as_on_a_file() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    for (policy, extras) in [
        ("skip", "leave"),
        ("overwrite", "leave"),
        ("newer", "leave"),
        ("rename", "quarantine"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = disagreeing_pair(&dir.path().join("file"));
        copy_tree(&dir.path().join("file"), &dir.path().join("pg"));
        let on_file = migration(&src, &dst, s(&dir.path().join("m.duckdb")), policy, extras);
        let url = cluster.database(policy);
        let (pg_src, pg_dst) = (dir.path().join("pg/src"), dir.path().join("pg/dst"));
        let on_pg = migration(&pg_src, &pg_dst, &url, policy, extras);
        assert_eq!(on_pg.len(), on_file.len());
        for (pg, file) in on_pg.iter().zip(&on_file) {
            // The locations differ; nothing else does.
            let pg = pg.to_string().replace("/pg/", "/file/");
            assert_eq!(pg, file.to_string(), "{policy}");
        }
        assert!(
            on_file[2]["copied"].as_u64() > Some(5),
            "{policy}: {}",
            on_file[2]
        );
        assert_eq!(snapshot(&pg_dst), snapshot(&dst), "{policy}");
        if policy == "overwrite" {
            // rsync agrees: nothing left to change, times, modes and
            // hard links included.
            let Some(changes) = rsync_changes(&pg_src, &pg_dst) else {
                return;
            };
            assert!(changes.is_empty(), "rsync would change: {changes:#?}");
        }
        // Status reads the copy and the verification on both alike.
        let status = |state: &str| {
            let v = json_run(&["status", "--state", state, "--json"]);
            [
                v["copy"].clone(),
                v["verify"].clone(),
                v["estimate"]["files"].clone(),
            ]
        };
        assert_eq!(
            status(&url),
            status(s(&dir.path().join("m.duckdb"))),
            "{policy}"
        );
    }
}

/// A source slow to read (each file waits), so a copy is still running
/// when the test acts on it.
const SLOW_SRC: &str = "sim:seed=9,depth=2,fanout=3,files=20,sizes=mixed,latency_us=40000";

/// Leases of 2 s: a killed process's items wait that long for the others.
const LEASE: [&str; 2] = ["--lease-time", "2"];

fn spawn(args: &[&str]) -> Child {
    command()
        .args(LEASE)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What `sql` counts in the database at `url`.
fn count(url: &str, sql: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.query_one(sql, &[]).unwrap().get(0)
}

/// How many copy events of status `copied` the database at `url` holds.
fn copied_events(url: &str) -> i64 {
    count(
        url,
        "SELECT count(*) FROM src_status_events WHERE phase = 'copy' AND status = 'copied'",
    )
}

/// Waits (30 s at most) until `done` holds; `running` must not end first.
fn wait_until(running: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(running.try_wait().unwrap().is_none(), "ended before {what}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `SLOW_SRC` discovered and its plan approved for a copy into `dst`,
/// with its state in a new database, beside the uninterrupted result: one
/// process's migration of it into `want_dst` on a DuckDB file (`want`, its
/// JSON).
struct SlowCopy {
    url: String,
    dst: PathBuf,
    want_dst: PathBuf,
    want: Value,
    // Dropped last: the server, then the folders.
    _cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl SlowCopy {
    /// On a database `name`; `None` where the test is skipped.
    fn approved(name: &str) -> Option<SlowCopy> {
        let cluster = Cluster::start()?;
        let dir = tempfile::tempdir().unwrap();
        let want_dst = dir.path().join("want");
        let want = json_run(&[
            "migrate",
            SLOW_SRC,
            s(&want_dst),
            "--state",
            s(&dir.path().join("alone.duckdb")),
            "--yes",
            "--json",
            "--workers",
            "2",
        ]);
        let dst = dir.path().join("dst");
        let url = cluster.database(name);
        json_run(&["discover", SLOW_SRC, s(&dst), "--state", &url, "--json"]);
        json_run(&["approve", "--state", &url, "--json"]);
        Some(SlowCopy {
            url,
            dst,
            want_dst,
            want,
            _cluster: cluster,
            _dir: dir,
        })
    }

    /// The items the plan copies.
    fn items(&self) -> i64 {
        self.want["copy"]["copied"].as_i64().unwrap()
    }

    /// The copy left `dst` as the uninterrupted run left `want_dst`, each
    /// item copied once (no `copied` event twice), nothing temporary
    /// behind, and a checksum verification finds every item as copied.
    fn assert_copied_as_alone(&self) {
        let (url, dst) = (self.url.as_str(), self.dst.as_path());
        assert_eq!(
            copied_events(url),
            self.items(),
            "one copied event per item"
        );
        assert_eq!(snapshot(dst), snapshot(&self.want_dst));
        assert!(temporaries(dst).is_empty(), "{:?}", temporaries(dst));
        let verified = json_run(&["verify", "--state", url, "--checksum", "--json"]);
        assert_eq!(verified["verified"], verified["checked"], "{verified}");
        assert_eq!(verified["checked"].as_i64(), Some(self.items()));
    }
}

#[test]
fn a_copy_killed_mid_run_resumes_to_the_uninterrupted_result() {
    let Some(slow) = SlowCopy::approved("killed") else {
        return;
    };
    let (url, want) = (slow.url.as_str(), &slow.want);
    let mut copying = spawn(&["copy", "--state", url, "--workers", "2"]);
    wait_until(&mut copying, "10 items copied", || copied_events(url) >= 10);
    // A verification waits for no copy: it is refused while one runs,
    // and says who copies.
    let (code, _, err) = run(&["verify", "--state", url]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is copying or verifying this migration"),
        "{err}"
    );
    copying.kill().unwrap();
    copying.wait().unwrap();
    let partly = copied_events(url);
    let items = want["copy"]["copied"].as_i64();
    assert!(partly > 0 && Some(partly) < items, "{partly}");
    // Once the killed process's leases run out, its items are copied.
    let resumed = json_run(&[LEASE[0], LEASE[1], "copy", "--state", url, "--json"]);
    assert_eq!(resumed["failed"], 0, "{resumed}");
    assert_eq!(resumed["copied"], want["copy"]["copied"], "{resumed}");
    slow.assert_copied_as_alone();
}

#[test]
fn workers_copy_beside_a_copy_and_take_over_the_items_of_one_killed() {
    let Some(slow) = SlowCopy::approved("shared") else {
        return;
    };
    let (url, want) = (slow.url.as_str(), &slow.want);
    let first = spawn(&["copy", "--state", url, "--workers", "2", "--json"]);
    let mut victim = spawn(&["worker", "--state", url, "--workers", "2", "--json"]);
    let victim_holds = format!("holder LIKE '%:{}:%'", victim.id());
    let other = spawn(&["worker", "--state", url, "--workers", "2", "--json"]);
    // Status lists the processes copying and what they hold.
    wait_until(&mut victim, "status listing a process copying", || {
        let status = json_run(&["status", "--state", url, "--json"]);
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["side"] == "copy" && w["held"].as_u64() > Some(0))
    });
    // Killed while it holds items it has not finished: stopped first, so
    // that what it holds cannot change between the look and the kill (it
    // could finish its last items and take none yet, CI saw it once).
    let holds = format!("SELECT count(*) FROM copy_todo WHERE NOT done AND {victim_holds}");
    let pid = victim.id().to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    loop {
        wait_until(&mut victim, "the victim holding items", || {
            count(url, &holds) > 0
        });
        signal("-STOP");
        if count(url, &holds) > 0 {
            break;
        }
        signal("-CONT");
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    for process in [first, other] {
        let out = process.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let copied = if json["copy"].is_null() {
            &json
        } else {
            &json["copy"]
        };
        assert_eq!(
            copied["copied"],
            want["copy"]["copied"],
            "{}",
            serde_json::to_string(&json).unwrap()
        );
    }
    // Each living process copied items, and the victim's were taken over
    // under a later lease.
    let holders = count(
        url,
        &format!("SELECT count(DISTINCT holder) FROM copy_todo WHERE done AND NOT {victim_holds}"),
    );
    assert_eq!(holders, 2, "living processes that copied");
    let taken_over = count(
        url,
        "SELECT count(*) FROM copy_todo WHERE done AND epoch > 1",
    );
    assert!(taken_over > 0);
    slow.assert_copied_as_alone();
}

#[test]
fn a_failed_copy_is_retried_alone() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 2, 1, 3);
    let secret = src.join("secret");
    fs::write(&secret, b"s").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let dst = dir.path().join("dst");
    let url = cluster.database("retried");
    json_run(&["discover", s(&src), s(&dst), "--state", &url, "--json"]);
    json_run(&["approve", "--state", &url, "--json"]);
    let copied = util::run_unprivileged(&["copy", "--state", &url, "--json"]);
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let Some((code, out, err)) = copied else {
        util::missing_prerequisite("setpriv");
        return;
    };
    assert_eq!(code, 4, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["failed"], 1, "{summary}");
    let failed = review(&url, "copy-failed");
    assert!(
        failed.contains("secret") && failed.contains("permission_denied"),
        "{failed}"
    );
    // The cause fixed, a retry sweep of the copy copies that item alone.
    use std::os::unix::fs::MetadataExt;
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let before = inode(&dst.join("d0/f001.txt"));
    let swept = json_run(&["retry", "--state", &url, "--phase", "copy", "--json"]);
    assert_eq!(swept["copy"]["requeued"], 1, "{swept}");
    assert_eq!(swept["copy"]["failed"], 0, "{swept}");
    assert_eq!(snapshot(&dst), snapshot(&src));
    assert_eq!(inode(&dst.join("d0/f001.txt")), before, "not rewritten");
    assert_eq!(
        review(&url, "copy-failed").lines().count(),
        1,
        "the header alone"
    );
}

#[test]
fn workers_started_at_once_share_one_copy() {
    let Some(slow) = SlowCopy::approved("at_once") else {
        return;
    };
    let (url, want) = (slow.url.as_str(), &slow.want);
    // No `copy`: the workers begin the copy together, each finding the
    // others beginning it.
    let workers: Vec<Child> = (0..3)
        .map(|_| spawn(&["worker", "--state", url, "--workers", "2", "--json"]))
        .collect();
    for worker in workers {
        let out = worker.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["copy"]["copied"], want["copy"]["copied"], "{err}");
    }
    assert_eq!(
        count(
            url,
            "SELECT count(DISTINCT holder) FROM copy_todo WHERE done"
        ),
        3,
        "every worker copied"
    );
    slow.assert_copied_as_alone();
}

#[test]
fn a_retry_sweep_lists_failed_folders_again_as_on_a_file() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // A source folder and, in another migration, a destination folder
    // that could not be listed; the cause fixed, a retry sweep lists them
    // again, walks what is below, compares and copies it.
    for locked_side in ["src", "dst"] {
        let mut reports = Vec::new();
        for store in ["file", "pg"] {
            let dir = tempfile::tempdir().unwrap();
            let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
            make_tree(&src, 3, 2, 3);
            if locked_side == "dst" {
                copy_tree(&src, &dst);
                fs::remove_file(dst.join("d1/d0/f002.txt")).unwrap();
            }
            let locked = match locked_side {
                "src" => src.join("d1"),
                _ => dst.join("d1"),
            };
            fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
            let state = match store {
                "file" => s(&dir.path().join("m.duckdb")).to_string(),
                _ => cluster.database(&format!("retry_{locked_side}")),
            };
            let migrate = [
                "migrate",
                s(&src),
                s(&dst),
                "--state",
                &state,
                "--yes",
                "--json",
            ];
            let Some((code, _, err)) = util::run_locked_out(&locked, &migrate) else {
                return;
            };
            assert_eq!(code, 4, "{store}: {err}");
            assert!(review(&state, "failed").contains("permission_denied"));
            let mut report = json_run(&["retry", "--state", &state, "--json"]);
            report["discovery"]["summary"]
                .as_object_mut()
                .unwrap()
                .retain(|k, _| k != "timing");
            assert_eq!(snapshot(&dst), snapshot(&src), "{locked_side} {store}");
            assert_eq!(
                review(&state, "failed").lines().count(),
                1,
                "the header alone"
            );
            reports.push(report);
        }
        assert_eq!(
            reports[0], reports[1],
            "{locked_side}: the file's, then PostgreSQL's"
        );
        let requeued = &reports[1]["discovery"]["requeued"][locked_side];
        assert_eq!(requeued, 1, "{}", reports[1]);
    }
}

#[test]
fn migrate_with_workers_beside_it_verifies_once_they_end() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let want_dst = dir.path().join("want");
    let alone = s(&dir.path().join("alone.duckdb")).to_string();
    let want = json_run(&[
        "migrate",
        SLOW_SRC,
        s(&want_dst),
        "--state",
        &alone,
        "--yes",
        "--json",
    ]);
    let dst = dir.path().join("dst");
    let url = cluster.database("migrated");
    let mut migrating = spawn(&[
        "migrate",
        SLOW_SRC,
        s(&dst),
        "--state",
        &url,
        "--yes",
        "--checksum",
        "--json",
    ]);
    // Workers join once the migration is made: they list, then copy.
    wait_until(&mut migrating, "the migration made", || {
        count(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'src_leases'",
        ) > 0
    });
    let workers: Vec<Child> = (0..2)
        .map(|_| spawn(&["worker", "--state", &url, "--workers", "2", "--json"]))
        .collect();
    let out = migrating.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The verification waited for the workers' last items.
    assert_eq!(result["copy"]["copied"], want["copy"]["copied"], "{result}");
    assert_eq!(
        result["verify"]["verified"], want["copy"]["copied"],
        "{result}"
    );
    for worker in workers {
        let out = worker.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(Some(copied_events(&url)), want["copy"]["copied"].as_i64());
    assert_eq!(snapshot(&dst), snapshot(&want_dst));
}

#[test]
fn a_verification_after_the_copy_waits_for_the_copying_processes_to_end() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    make_tree(&src, 2, 1, 3);
    let url = cluster.database("verified");
    json_run(&[
        "migrate",
        s(&src),
        s(&dst),
        "--state",
        &url,
        "--yes",
        "--json",
    ]);
    // A process still holding the copying processes' lock (shared, as
    // each does until it ends), its copy finished.
    let mut ending = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    ending
        .execute("SELECT pg_advisory_lock_shared(7365731)", &[])
        .unwrap();
    let mut verifying = spawn(&["verify", "--state", &url, "--json"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(verifying.try_wait().unwrap().is_none(), "it waits");
    drop(ending);
    let out = verifying.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified["verified"], verified["checked"], "{verified}");
}

/// The same changes, made to the trees under `root` (a source and a
/// destination a first pass copied): on the source a file new, one
/// longer, one with another mode, and a folder gone with its files; on
/// the destination a file someone else changed. Every time is set.
fn change_both_trees(root: &Path) {
    let (src, dst) = (root.join("src"), root.join("dst"));
    let write = |p: PathBuf, data: &[u8], mtime: u64| {
        fs::write(&p, data).unwrap();
        set_mtime(&p, mtime);
    };
    write(src.join("d0/new.txt"), b"new", 1_700_000_000);
    write(
        src.join("d1/f000.txt"),
        b"longer than before",
        1_700_000_000,
    );
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir_all(src.join("d1/d0")).unwrap();
    write(dst.join("b.txt"), b"someone else's", 1_600_000_000);
    for folder in ["d0", "d1"] {
        set_mtime(&src.join(folder), 1_700_000_100);
    }
}

#[test]
fn delta_passes_find_and_copy_what_changed_as_on_a_file() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = disagreeing_pair(&dir.path().join("file"));
    copy_tree(&dir.path().join("file"), &dir.path().join("pg"));
    let (pg_src, pg_dst) = (dir.path().join("pg/src"), dir.path().join("pg/dst"));
    let file = dir.path().join("m.duckdb");
    let url = cluster.database("passes");
    migration(&src, &dst, s(&file), "overwrite", "leave");
    migration(&pg_src, &pg_dst, &url, "overwrite", "leave");
    for tree in ["file", "pg"] {
        change_both_trees(&dir.path().join(tree));
    }

    // Each pass, step by step, gives on PostgreSQL what it gives on a
    // file: the discovery, what changed, the comparison, the plan, the
    // copy and its verification.
    let pass = |src: &Path, dst: &Path, state: &str| {
        let mut steps = vec![json_run(&[
            "discover",
            s(src),
            s(dst),
            "--state",
            state,
            "--json",
        ])];
        let (code, out, err) = run(&["review", "--state", state, "--changes", "--format", "csv"]);
        assert_eq!(code, 0, "{err}");
        steps.push(Value::String(out));
        steps.push(Value::String(review(state, "all")));
        steps.push(json_run(&[
            "approve",
            "--state",
            state,
            "--policy",
            "overwrite",
            "--extras",
            "quarantine",
            "--json",
        ]));
        steps.push(json_run(&["copy", "--state", state, "--json"]));
        steps.push(json_run(&[
            "verify",
            "--state",
            state,
            "--checksum",
            "--json",
        ]));
        steps
    };
    let mut passes = Vec::new();
    for _ in 2..=3 {
        let on_file = pass(&src, &dst, s(&file));
        let on_pg = pass(&pg_src, &pg_dst, &url);
        for (pg, file) in on_pg.iter().zip(&on_file) {
            let pg = pg.to_string().replace("/pg/", "/file/");
            assert_eq!(pg, file.to_string());
        }
        passes.push(on_pg);
    }
    let (second, third) = (&passes[0], &passes[1]);
    assert_eq!(second[0]["pass"], 2, "{}", second[0]);
    assert_eq!(
        second[0]["changes"],
        serde_json::json!({"new": 1, "modified": 2, "deleted": 1}),
        "{}",
        second[0]
    );
    // A deleted folder is one change, at its top.
    let changes = second[1].as_str().unwrap();
    assert!(changes.contains("src,deleted,folder,d1/d0,"), "{changes}");
    assert!(
        changes.contains("src,modified,file,a.txt,")
            && changes.contains("mode 0644 before, 0600 now"),
        "{changes}"
    );
    // Updates the previous pass made are outdated, someone else's change
    // differs.
    let compared = second[2].as_str().unwrap();
    assert!(
        compared.contains("src,outdated,file,d1/f000.txt,"),
        "{compared}"
    );
    assert!(compared.contains("src,differs,file,b.txt,"), "{compared}");
    assert_eq!(second[4]["failed"], 0, "{}", second[4]);
    assert_eq!(second[5]["mismatch"], 0, "{}", second[5]);
    // What the source deleted went into the pass's quarantine.
    assert!(
        pg_dst
            .join(".treeshift-quarantine/pass-2/d1/d0/f000.txt")
            .exists()
    );
    // Nothing changed since: the third pass finds nothing to do.
    assert_eq!(third[0]["pass"], 3);
    assert_eq!(
        third[0]["changes"],
        serde_json::json!({"new": 0, "modified": 0, "deleted": 0})
    );
    assert_eq!(third[0]["to_copy"]["files"], 0, "{}", third[0]);
    assert_eq!(snapshot(&pg_dst), snapshot(&dst));
    let Some(changes) = rsync_changes(&pg_src, &pg_dst) else {
        return;
    };
    assert!(changes.is_empty(), "rsync would change: {changes:#?}");
}

/// A process killed while it filled a table anew (the folders to date,
/// the items to verify) leaves its statement running in the database (its
/// session lock went with its idle connection): the next process waits
/// for that statement to end, then makes the table anew, instead of
/// colliding with its rows. An open transaction stands in for the
/// statement: it holds the statement's `lock` and a row of `table` the
/// next run of `then` will want (`row`, a query of that row's columns).
fn waits_for_a_killed_statement(steps: &[&str], lock: i64, table: &str, row: &str, then: &str) {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    make_tree(&src, 2, 1, 3);
    let url = cluster.database("stopped");
    for step in steps {
        let mut args = vec![*step];
        if *step == "discover" {
            args.extend([s(&src), s(&dst)]);
        }
        args.extend(["--state", &url]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    let mut stopped = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut statement = stopped.transaction().unwrap();
    statement
        .execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .unwrap();
    statement
        .execute(&format!("INSERT INTO {table} {row}"), &[])
        .unwrap();
    let mut next = spawn(&[then, "--state", &url, "--json"]);
    wait_until(&mut next, "the next run waiting for it", || {
        count(
            &url,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        ) > 0
    });
    statement.commit().unwrap();
    let out = next.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{then}: {err}");
}

#[test]
fn a_copy_waits_for_a_killed_process_still_finding_the_folders_to_date() {
    waits_for_a_killed_statement(
        &["discover", "approve"],
        7365735,
        "folder_dates (node_id, depth, rel_path, all_meta)",
        "SELECT id, depth, rel_path, true FROM src_nodes WHERE kind = 0 AND depth = 1 LIMIT 1",
        "copy",
    );
}

#[test]
fn a_verification_waits_for_a_killed_one_still_listing_what_to_verify() {
    waits_for_a_killed_statement(
        &["discover", "approve", "copy"],
        7365736,
        "verify_todo (node_id, depth, kind, rel_path, size)",
        "SELECT id, depth, kind, rel_path, size FROM src_nodes WHERE kind = 1 LIMIT 1",
        "verify",
    );
}

/// A database of schema version 5 (before listings' MD5s) is brought to
/// the current version when opened: its node tables, the previous pass's
/// included, gain the column, and the migration goes on where it was.
#[test]
fn a_database_of_schema_5_gains_the_listings_md5s_and_goes_on() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    make_tree(&src, 2, 1, 3);
    let url = cluster.database("schema5");
    let discover = || {
        let (code, out, err) = run(&["discover", s(&src), s(&dst), "--state", &url, "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let (code, _, err) = run(&["migrate", s(&src), s(&dst), "--state", &url, "--yes"]);
    assert_eq!(code, 0, "{err}");
    // The second pass keeps the first's source tree.
    assert_eq!(discover()["pass"], 2);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "ALTER TABLE src_nodes DROP COLUMN md5; ALTER TABLE dst_nodes DROP COLUMN md5; \
             ALTER TABLE previous_src_nodes DROP COLUMN md5; \
             UPDATE meta SET value = '5' WHERE key = 'schema_version'",
        )
        .unwrap();
    fs::write(src.join("new"), b"new").unwrap();
    for step in ["approve", "copy"] {
        let (code, _, err) = run(&[step, "--state", &url]);
        assert_eq!(code, 0, "{step}: {err}");
    }
    let found = discover();
    assert_eq!(found["pass"], 3, "{found}");
    assert_eq!(
        (&found["missing"], &found["changes"]["new"]),
        (&1.into(), &1.into()),
        "{found}"
    );
    let columns = count(
        &url,
        "SELECT count(*) FROM information_schema.columns \
         WHERE column_name = 'md5' AND table_name IN ('src_nodes', 'dst_nodes', 'previous_src_nodes')",
    );
    // Opening checks the version it leaves: this build's.
    assert_eq!(columns, 3);
}
