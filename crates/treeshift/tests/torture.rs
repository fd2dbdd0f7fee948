//! The reliability suite: random kills, injected faults, hostile names and
//! exhausted resources, each ending in a row of figures (items lost,
//! duplicated, partial files left, panics). Quick mode runs with the other
//! tests; the long mode is for a person:
//!
//! ```sh
//! cargo test --release --workspace --test torture -- --nocapture             # quick
//! TREESHIFT_TORTURE=long cargo test --release --workspace --test torture -- --nocapture
//! cargo test --release --workspace --test torture torture::crash_copy -- --ignored --nocapture
//! ```
//!
//! Every kill is a SIGKILL at a random moment (seeded: TREESHIFT_TEST_SEED
//! reproduces a run), followed by running the same command again; the end
//! state must equal an uninterrupted run's.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;
use util::cluster::Cluster;
use util::{Rng, Store, Tmpfs, all_items, make_tree, s, snapshot, status_json, temporaries};

/// The figures of one scenario.
#[derive(Debug, Default)]
struct Row {
    scenario: String,
    runs: u32,
    kills: u32,
    faults: u32,
    lost: u64,
    duplicated: u64,
    partial: u64,
    panics: u32,
    /// Why it failed, or a note (skipped scenarios say why).
    note: String,
    skipped: bool,
}

impl Row {
    fn new(scenario: impl Into<String>) -> Row {
        Row {
            scenario: scenario.into(),
            ..Row::default()
        }
    }

    fn ok(&self) -> bool {
        self.note_is_failure().is_none()
            && self.lost == 0
            && self.duplicated == 0
            && self.partial == 0
            && self.panics == 0
    }

    fn note_is_failure(&self) -> Option<&str> {
        self.note.strip_prefix("FAILED: ")
    }

    /// Runs treeshift once, counting the run and any panic.
    fn run(&mut self, args: &[&str]) -> (i32, String, String) {
        self.runs += 1;
        let (code, out, err) = util::run(args);
        self.panics += u32::from(err.contains("panicked"));
        (code, out, err)
    }

    /// Like `run`, without root's power to ignore permissions.
    fn run_unprivileged(&mut self, args: &[&str]) -> Option<(i32, String, String)> {
        let (code, out, err) = util::run_unprivileged(args)?;
        self.runs += 1;
        self.panics += u32::from(err.contains("panicked"));
        Some((code, out, err))
    }

    /// Runs `args` with up to `max_kills` random kills in `window` ms.
    fn run_killed(
        &mut self,
        args: &[&str],
        window: std::ops::Range<u64>,
        rng: &mut Rng,
        max_kills: u32,
    ) {
        let k = util::run_with_kills(args, window, rng, max_kills);
        self.runs += k.runs;
        self.kills += k.kills;
        self.panics += k.panics;
    }

    /// Adds the differences between two trees: paths missing from `got` or
    /// with other content are lost; temporaries are partial files.
    fn compare_trees(&mut self, want: &Path, got: &Path) {
        self.compare_snapshots(&snapshot(want), got);
    }

    fn compare_snapshots(&mut self, want: &BTreeMap<Vec<u8>, util::Node>, got: &Path) {
        let have = snapshot(got);
        self.lost += want.iter().filter(|(k, v)| have.get(*k) != Some(v)).count() as u64;
        self.partial += temporaries(got).len() as u64;
    }

    /// Adds the differences between two state files' items.
    fn compare_items(&mut self, reference: &Path, resumed: &Path) {
        let (want, got) = (all_items(reference), all_items(resumed));
        let unique: std::collections::BTreeSet<&String> = got.iter().collect();
        self.duplicated += (got.len() - unique.len()) as u64;
        self.lost += want.iter().filter(|w| !unique.contains(w)).count() as u64;
        // Extra items that are not duplicates are state that should not be.
        self.duplicated += unique.iter().filter(|g| !want.contains(g)).count() as u64;
    }

    /// A prerequisite is missing: a failure under CI (it must never pass
    /// silently there), a skipped scenario elsewhere.
    fn missing(mut self, what: &str) -> Row {
        if util::in_ci() {
            self.note = format!("FAILED: missing prerequisite under CI: {what}");
        } else {
            self.skipped = true;
            self.note = format!("{what} missing");
        }
        self
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok && self.note_is_failure().is_none() {
            self.note = format!("FAILED: {}", what());
        }
    }
}

/// How hard to push.
struct Mode {
    long: bool,
    rng: Rng,
}

impl Mode {
    /// Kill rounds per crash scenario.
    fn rounds(&self) -> u32 {
        if self.long { 5 } else { 2 }
    }
}

/// Status JSON without what depends on timing.
fn stable_status(state: &Path) -> serde_json::Value {
    let mut v = status_json(state);
    let o = v.as_object_mut().unwrap();
    for key in ["phase", "rounds", "estimate"] {
        o.remove(key);
    }
    if let Some(recent) = o["errors"]["recent"].as_array_mut() {
        for e in recent {
            e.as_object_mut().unwrap().remove("at");
        }
    }
    v
}

fn args_of(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn elapsed_ms(t0: Instant) -> u64 {
    (t0.elapsed().as_millis() as u64).max(20)
}

fn crash_discover(
    mode: &mut Mode,
    scenario: String,
    (src, dst): (&str, &str),
    dir: &Path,
    store: &Store,
) -> Row {
    let mut row = Row::new(scenario);
    let args = |state: &Path| {
        vec![
            "discover".to_string(),
            src.into(),
            dst.into(),
            "--state".into(),
            s(state).into(),
            "--workers".into(),
            "3".into(),
        ]
    };
    let reference = store.state(dir, "reference");
    let t0 = Instant::now();
    row.run_killed(&args_of(&args(&reference)), 0..1, &mut mode.rng, 0);
    let full = elapsed_ms(t0);
    for round in 0..mode.rounds() {
        let state = store.state(dir, &format!("killed-{round}"));
        row.run_killed(&args_of(&args(&state)), 0..full / 2, &mut mode.rng, 5);
        // The last moments of a run: the final seal and DuckDB's checkpoint
        // on close.
        let late = store.state(dir, &format!("late-{round}"));
        row.run_killed(
            &args_of(&args(&late)),
            full * 8 / 10..full + full / 10,
            &mut mode.rng,
            2,
        );
        for resumed in [&state, &late] {
            row.compare_items(&reference, resumed);
            let same = stable_status(resumed) == stable_status(&reference);
            row.check(same, || format!("round {round}: the summary differs"));
        }
    }
    row
}

fn crash_discover_sim(mode: &mut Mode, dir: &Path) -> Row {
    crash_discover_sim_on(mode, dir, &Store::File)
}

fn crash_discover_sim_on(mode: &mut Mode, dir: &Path, store: &Store) -> Row {
    let base = "seed=21,depth=3,fanout=5,files=12,latency_us=4000";
    crash_discover(
        mode,
        title("crash: discover, sim", store),
        (
            &format!("sim:{base},fail_perm=0.03,fail_transient=0.05"),
            &format!("sim:{base},mutate=4,extra=10"),
        ),
        dir,
        store,
    )
}

fn crash_discover_local(mode: &mut Mode, dir: &Path) -> Row {
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    make_tree(&src, 4, 3, 12);
    make_tree(&dst, 3, 3, 9);
    fs::write(dst.join("d0").join("extra.bin"), b"x").unwrap();
    crash_discover(
        mode,
        "crash: discover, local".into(),
        (s(&src), s(&dst)),
        dir,
        &Store::File,
    )
}

/// A local source with some large files (kills land mid-data too).
fn source_with_big_files(src: &Path, rng: &mut Rng) {
    make_tree(src, 4, 3, 8);
    for i in 0..16u64 {
        let size = (256 << 10) + rng.below(3 << 20) as usize;
        fs::write(
            src.join(format!("d{}", i % 4)).join(format!("big{i}")),
            vec![i as u8; size],
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("d0/f001.txt", src.join("link")).unwrap();
    // A file with three names in three folders, and one with holes.
    for (i, name) in ["d1/big-also", "d2/big-again"].into_iter().enumerate() {
        fs::hard_link(src.join("d0/big0"), src.join(name)).unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    let sparse = fs::File::create(src.join("d3").join("sparse")).unwrap();
    sparse.set_len(24 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &[5u8; 8192], 9 << 20).unwrap();
}

fn discover_and_approve(row: &mut Row, src: &Path, dst: &Path, state: &Path) {
    let (code, _, err) = row.run(&["discover", s(src), s(dst), "--state", s(state)]);
    row.check(code == 0, || format!("discover: {err}"));
    let (code, _, err) = row.run(&["approve", "--state", s(state)]);
    row.check(code == 0, || format!("approve: {err}"));
}

fn crash_copy(mode: &mut Mode, dir: &Path) -> Row {
    crash_copy_on(mode, dir, &Store::File)
}

fn crash_copy_on(mode: &mut Mode, dir: &Path, store: &Store) -> Row {
    let mut row = Row::new(title("crash: copy, local", store));
    let src = dir.join("src");
    source_with_big_files(&src, &mut mode.rng);
    let (ref_dst, ref_state) = (dir.join("ref-dst"), store.state(dir, "ref"));
    discover_and_approve(&mut row, &src, &ref_dst, &ref_state);
    let t0 = Instant::now();
    row.run_killed(&["copy", "--state", s(&ref_state)], 0..1, &mut mode.rng, 0);
    let full = elapsed_ms(t0);
    for round in 0..mode.rounds() {
        let (dst, state) = (
            dir.join(format!("dst-{round}")),
            store.state(dir, &format!("s-{round}")),
        );
        discover_and_approve(&mut row, &src, &dst, &state);
        row.run_killed(
            &["copy", "--state", s(&state), "--workers", "3"],
            0..full / 2,
            &mut mode.rng,
            6,
        );
        row.compare_trees(&src, &dst);
        // What content alone cannot show: links, holes, modes, owners.
        match util::rsync_differences(&src, &dst) {
            Some(left) => row.check(left.is_empty(), || {
                format!("round {round}: rsync: {left:?}")
            }),
            None => return row.missing("rsync"),
        }
        let same = status_json(&state)["copy"] == status_json(&ref_state)["copy"];
        row.check(same, || format!("round {round}: the copy summary differs"));
        let (code, out, _) = row.run(&["verify", "--state", s(&state), "--checksum", "--json"]);
        let mismatch = serde_json::from_str::<serde_json::Value>(&out)
            .map_or(0, |v| v["mismatch"].as_u64().unwrap_or(0));
        row.partial += mismatch;
        row.check(code == 0, || format!("round {round}: verify exit {code}"));
    }
    row
}

fn crash_verify(mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("crash: verify --checksum");
    let src = dir.join("src");
    source_with_big_files(&src, &mut mode.rng);
    let (dst, state) = (dir.join("dst"), dir.join("s.duckdb"));
    let (code, _, err) = row.run(&["migrate", s(&src), s(&dst), "--state", s(&state), "--yes"]);
    row.check(code == 0, || format!("migrate: {err}"));
    let reference = status_json(&state)["verify"].clone();
    let t0 = Instant::now();
    row.run_killed(
        &["verify", "--state", s(&state), "--checksum"],
        0..1,
        &mut mode.rng,
        0,
    );
    let full = elapsed_ms(t0);
    for _ in 0..mode.rounds() {
        row.run_killed(
            &["verify", "--state", s(&state), "--checksum"],
            0..full,
            &mut mode.rng,
            4,
        );
        let got = status_json(&state)["verify"].clone();
        row.check(
            got["mismatch"] == 0 && got["checked"] == reference["checked"],
            || format!("verify summary {got} vs {reference}"),
        );
    }
    row.compare_trees(&src, &dst);
    row
}

fn crash_retry(mode: &mut Mode, dir: &Path) -> Row {
    crash_retry_on(mode, dir, &Store::File)
}

fn crash_retry_on(mode: &mut Mode, dir: &Path, store: &Store) -> Row {
    let mut row = Row::new(title("crash: retry (discovery + copy)", store));
    let src = dir.join("src");
    source_with_big_files(&src, &mut mode.rng);
    let locked = [src.join("d2"), src.join("d0").join("big0")];
    for round in 0..mode.rounds() {
        let (dst, state) = (
            dir.join(format!("dst-{round}")),
            store.state(dir, &format!("s-{round}")),
        );
        for p in &locked {
            fs::set_permissions(p, fs::Permissions::from_mode(0o000)).unwrap();
        }
        row.faults += locked.len() as u32;
        let first =
            row.run_unprivileged(&["migrate", s(&src), s(&dst), "--state", s(&state), "--yes"]);
        fs::set_permissions(&locked[0], fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&locked[1], fs::Permissions::from_mode(0o644)).unwrap();
        let Some((code, _, err)) = first else {
            return row.missing("setpriv");
        };
        row.check(code == 4, || {
            format!("the locked run should fail items: {code} {err}")
        });
        row.run_killed(&["retry", "--state", s(&state)], 0..1500, &mut mode.rng, 5);
        row.compare_trees(&src, &dst);
        let status = status_json(&state);
        row.check(
            status["failed"] == 0
                && status["copy"]["failed"] == 0
                && status["copy"]["pending"] == 0,
            || format!("after the retry: {status}"),
        );
        // The fix changed d2's mode after discovery recorded it: a delta
        // pass carries that over, and then rsync finds nothing at all.
        let delta = row.run(&["migrate", s(&src), s(&dst), "--state", s(&state), "--yes"]);
        row.check(delta.0 == 0, || {
            format!("round {round}: delta pass: {delta:?}")
        });
        match util::rsync_differences(&src, &dst) {
            Some(left) => row.check(left.is_empty(), || {
                format!("round {round}: rsync: {left:?}")
            }),
            None => return row.missing("rsync"),
        }
    }
    row
}

fn crash_delta(mode: &mut Mode, dir: &Path) -> Row {
    crash_delta_on(mode, dir, &Store::File)
}

fn crash_delta_on(mode: &mut Mode, dir: &Path, store: &Store) -> Row {
    let mut row = Row::new(title("crash: delta pass", store));
    let src = dir.join("src");
    make_tree(&src, 4, 3, 8);
    let pass1 = |row: &mut Row, name: &str| {
        let (dst, state) = (dir.join(format!("{name}-dst")), store.state(dir, name));
        let (code, _, err) = row.run(&["migrate", s(&src), s(&dst), "--state", s(&state), "--yes"]);
        row.check(code == 0, || format!("pass 1: {err}"));
        (dst, state)
    };
    let mut pairs: Vec<_> = (0..mode.rounds())
        .map(|r| pass1(&mut row, &format!("k{r}")))
        .collect();
    let (ref_dst, ref_state) = pass1(&mut row, "ref");
    // The source moves on.
    fs::write(src.join("d1").join("new.txt"), b"new").unwrap();
    fs::write(src.join("d2").join("f000.txt"), b"changed content").unwrap();
    fs::remove_dir_all(src.join("d3")).unwrap();
    let t0 = Instant::now();
    row.run_killed(
        &["discover", s(&src), s(&ref_dst), "--state", s(&ref_state)],
        0..1,
        &mut mode.rng,
        0,
    );
    let full = elapsed_ms(t0);
    for (dst, state) in pairs.drain(..) {
        row.run_killed(
            &["discover", s(&src), s(&dst), "--state", s(&state)],
            0..full,
            &mut mode.rng,
            5,
        );
        row.compare_items(&ref_state, &state);
        let (a, b) = (stable_status(&state), stable_status(&ref_state));
        row.check(a["changes"] == b["changes"] && a["pass"] == 2, || {
            format!("changes {} vs {}", a["changes"], b["changes"])
        });
        let (code, out, _) = row.run(&[
            "review",
            "--state",
            s(&state),
            "--changes",
            "--format",
            "csv",
        ]);
        let (_, want, _) = row.run(&[
            "review",
            "--state",
            s(&ref_state),
            "--changes",
            "--format",
            "csv",
        ]);
        row.check(code == 0 && out == want, || {
            format!("review --changes: {out} vs {want}")
        });
    }
    row
}

fn concurrent_processes(_mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("two processes, one state file");
    let state = dir.join("s.duckdb");
    let slow = "sim:seed=3,depth=3,fanout=6,files=10,latency_us=20000";
    let mut first = std::process::Command::new(util::bin())
        .args(["discover", slow, slow, "--state", s(&state)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    row.runs += 1;
    // Wait until the first process holds the file.
    let t0 = Instant::now();
    while !state.exists() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    for args in [
        vec!["discover", slow, slow, "--state", s(&state)],
        vec!["status", "--state", s(&state)],
        vec!["copy", "--state", s(&state)],
    ] {
        let (code, _, err) = row.run(&args);
        row.check(
            code == 1
                && err.contains("another treeshift process is using it")
                && err.contains(s(&state)),
            || format!("{}: exit {code}: {err}", args[0]),
        );
    }
    let _ = first.kill();
    let _ = first.wait();
    row.kills += 1;
    let (code, _, err) = row.run(&["discover", slow, slow, "--state", s(&state)]);
    row.check(code == 0, || format!("resume after the holder died: {err}"));
    row
}

fn faults_during_copy(_mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("faults: source changes around the copy");
    let src = dir.join("src");
    make_tree(&src, 2, 1, 4);
    let big = src.join("growing.bin");
    fs::write(&big, vec![7u8; 48 << 20]).unwrap();
    let (dst, state) = (dir.join("dst"), dir.join("s.duckdb"));
    discover_and_approve(&mut row, &src, &dst, &state);
    // Between discovery and copy: appended, truncated, deleted, replaced by
    // a folder, made unreadable.
    let d0 = src.join("d0");
    fs::OpenOptions::new()
        .append(true)
        .open(d0.join("f000.txt"))
        .unwrap();
    std::io::Write::write_all(
        &mut fs::OpenOptions::new()
            .append(true)
            .open(d0.join("f001.txt"))
            .unwrap(),
        b"more",
    )
    .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(d0.join("f002.txt"))
        .unwrap()
        .set_len(1)
        .unwrap();
    fs::remove_file(d0.join("f003.txt")).unwrap();
    fs::remove_file(src.join("d1").join("f000.txt")).unwrap();
    fs::create_dir(src.join("d1").join("f000.txt")).unwrap();
    fs::set_permissions(
        src.join("d1").join("f001.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    row.faults += 5;
    // During the copy: the big file keeps growing.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (stop, big) = (stop.clone(), big.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&big).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::io::Write::write_all(&mut f, b"x").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    row.faults += 1;
    let copied = row.run_unprivileged(&["copy", "--state", s(&state), "--json"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.join().unwrap();
    fs::set_permissions(
        src.join("d1").join("f001.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let Some((code, out, err)) = copied else {
        return row.missing("setpriv");
    };
    row.check(code == 4, || {
        format!("copy should report items: {code} {err}")
    });
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    // f001 appended, f002 truncated, f003 deleted, d1/f000 now a folder,
    // growing.bin changing while read: changed; d1/f001 unreadable: failed.
    row.check(summary["changed"] == 5 && summary["failed"] == 1, || {
        format!("copy summary {summary}")
    });
    // Nothing recorded as copied may differ from what discovery planned.
    let (code, out, _) = row.run(&["verify", "--state", s(&state), "--json"]);
    let verify: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    row.partial += verify["mismatch"].as_u64().unwrap_or(0);
    row.check(code == 0, || format!("verify {verify}"));
    for path in [
        "growing.bin",
        "d0/f001.txt",
        "d0/f002.txt",
        "d0/f003.txt",
        "d1/f000.txt",
    ] {
        // Created nowhere: none of them was at the destination before.
        row.partial += u64::from(dst.join(path).exists());
    }
    row.partial += temporaries(&dst).len() as u64;
    row
}

/// Every name in the corpus, as raw bytes.
fn hostile_names() -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = [
        &b"new\nline"[..],
        b"tab\there",
        b" leading",
        b"trailing ",
        b"...",
        b"..a",
        b".. ",
        b"-rf",
        b"*?[",
        b"back\\slash",
        b"quote\"'",
        b"bad\xff\xfeutf8",
        b"\x01control",
        "caf\u{e9}".as_bytes(),   // NFC
        "cafe\u{301}".as_bytes(), // NFD twin
        b"Case",
        b"case",
        b".treeshift-7.tmp",
    ]
    .iter()
    .map(|n| n.to_vec())
    .collect();
    names.push(vec![b'L'; 255]);
    names.push("\u{1F600}".repeat(63).into_bytes()); // 252 bytes of 4-byte chars
    names
}

fn hostile_tree(mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("names: hostile corpus, local");
    let root = dir.join("area");
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    let names = hostile_names();
    for name in &names {
        let p = src.join(std::ffi::OsStr::from_bytes(name));
        fs::write(&p, name).unwrap();
        let folder = src.join(std::ffi::OsStr::from_bytes(
            &[b"dir-", &name[..name.len().min(200)]].concat(),
        ));
        fs::create_dir(&folder).unwrap();
        fs::write(folder.join(std::ffi::OsStr::from_bytes(name)), b"inner").unwrap();
    }
    // Deep nesting: a path well past PATH_MAX (4096 bytes).
    let segment = "d".repeat(200);
    let deep_levels = if mode.long { 40 } else { 24 };
    fs::create_dir(src.join("deep")).unwrap();
    make_deep(&src.join("deep"), &segment, deep_levels);
    let dst = root.join("dst");
    let state = dir.join("s.duckdb");
    let (code, out, err) = row.run(&[
        "migrate",
        s(&src),
        s(&dst),
        "--state",
        s(&state),
        "--yes",
        "--checksum",
        "--json",
    ]);
    row.check(code == 0 || code == 4, || format!("migrate: {code} {err}"));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    // Nothing may fail: every name and the deep path can be held here.
    let (_, failed, _) = row.run(&[
        "review",
        "--state",
        s(&state),
        "--status",
        "failed",
        "--format",
        "csv",
    ]);
    let (_, copy_failed, _) = row.run(&[
        "review",
        "--state",
        s(&state),
        "--status",
        "copy-failed",
        "--format",
        "csv",
    ]);
    let reported = (failed.lines().count() + copy_failed.lines().count()).saturating_sub(2);
    // Down to a depth whose paths stay under PATH_MAX, everything arrives.
    let want = util::snapshot_within(&src, SHALLOW);
    let have = util::snapshot_within(&dst, SHALLOW);
    row.lost += want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .count() as u64;
    // The deep file arrives too: the local backend walks past PATH_MAX.
    let deep_arrived = deep_file_exists(&dst.join("deep"), &segment, deep_levels);
    row.lost += u64::from(!deep_arrived);
    row.check(reported == 0, || {
        format!("{reported} items reported failed")
    });
    // Nothing escapes the destination root.
    let around: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    row.check(around.len() == 2, || {
        format!("something escaped next to dst: {around:?}")
    });
    // A source name shaped like our temporaries is not one of them.
    row.partial += util::temporaries_within(&dst, SHALLOW)
        .iter()
        .filter(|p| !p.ends_with(b".treeshift-7.tmp"))
        .count() as u64;
    row.note = format!(
        "{} names and a {}-byte path, all copied and verified",
        names.len() * 2,
        deep_levels * 201
    );
    row.check(report["verify"]["mismatch"] == 0, || {
        "verify mismatch".into()
    });
    row
}

/// How deep the hostile trees are compared file by file (paths stay
/// below PATH_MAX).
const SHALLOW: usize = 12;

/// Whether the file at the bottom of `make_deep`'s folders exists under
/// `top` (walked with `openat`, one name at a time).
fn deep_file_exists(top: &Path, segment: &str, levels: usize) -> bool {
    use rustix::fs::{AtFlags, Mode, OFlags, openat, statat};
    let flags = OFlags::DIRECTORY | OFlags::RDONLY;
    let Ok(mut dir) = rustix::fs::open(top, flags, Mode::empty()) else {
        return false;
    };
    for _ in 0..levels {
        match openat(&dir, segment, flags, Mode::empty()) {
            Ok(next) => dir = next,
            Err(_) => return false,
        }
    }
    statat(&dir, "file", AtFlags::empty()).is_ok()
}

/// Creates `levels` nested folders named `segment` under `top`, with a file
/// at the bottom, one `mkdirat` at a time: no path handed to the kernel
/// exceeds PATH_MAX, though the whole one does.
fn make_deep(top: &Path, segment: &str, levels: usize) {
    use rustix::fs::{Mode, OFlags, mkdirat, openat};
    let flags = OFlags::DIRECTORY | OFlags::RDONLY;
    let mut dir = rustix::fs::open(top, flags, Mode::empty()).unwrap();
    for _ in 0..levels {
        mkdirat(&dir, segment, Mode::from_raw_mode(0o755)).unwrap();
        dir = openat(&dir, segment, flags, Mode::empty()).unwrap();
    }
    let file = openat(
        &dir,
        "file",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&file, b"bottom").unwrap();
}

fn many_in_one_folder(mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("names: one huge folder, local");
    let n = if mode.long { 1_000_000 } else { 20_000 };
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..n {
        fs::File::create(src.join(format!("{i:07}"))).unwrap();
    }
    let (dst, state) = (dir.join("dst"), dir.join("s.duckdb"));
    let (code, out, err) = row.run(&[
        "migrate",
        s(&src),
        s(&dst),
        "--state",
        s(&state),
        "--yes",
        "--json",
    ]);
    row.check(code == 0, || format!("migrate: {err}"));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    row.check(report["copy"]["copied"] == n, || {
        format!("copied {}", report["copy"]["copied"])
    });
    let have = fs::read_dir(&dst).map(|d| d.count()).unwrap_or(0) as u64;
    row.lost += (n as u64).saturating_sub(have);
    row.duplicated += (have).saturating_sub(n as u64);
    row.note = format!("{n} files in one folder");
    row
}

/// Folders of both trees swapped for symlinks to outside canary folders
/// (same names, sizes and mtimes, secret content) and back, while copy,
/// verify, retry and a quarantine run: nothing may leave the roots.
fn swapped_folders(mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("races: folders swapped for symlinks");
    let rounds = if mode.long { 20 } else { 2 };
    let race = util::swap_race(dir, rounds, mode.rng.next());
    row.runs += race.runs;
    // Each swap of a folder for a symlink is a fault injected.
    row.faults += race.swaps.min(u64::from(u32::MAX)) as u32;
    row.check(race.bad_exits.is_empty(), || {
        format!("{:?}", race.bad_exits)
    });
    row.check(race.canaries_touched.is_empty(), || {
        format!("canaries touched: {:?}", race.canaries_touched)
    });
    row.check(race.leaks.is_empty(), || {
        format!("secret leaked into {:?}", race.leaks)
    });
    row.check(race.swaps > 0, || "no swap happened".into());
    row
}

fn case_insensitive_destination(_mode: &mut Mode, _dir: &Path) -> Row {
    let mut row = Row::new("names: case clash, case-insensitive dst");
    row.skipped = true;
    row.note = "no case-insensitive file system here (the kernel lacks CONFIG_UNICODE: no casefold on tmpfs or ext4); discovery's --dst-case-insensitive is tested in tests/filters.rs".into();
    row
}

fn destination_full(mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("resources: destination full");
    let src = dir.join("src");
    source_with_big_files(&src, &mut mode.rng);
    let dst = dir.join("dst");
    let Some(fs_dst) = Tmpfs::mount(&dst, "size=4m") else {
        return row.missing("a tmpfs mount");
    };
    let state = dir.join("s.duckdb");
    discover_and_approve(&mut row, &src, &dst, &state);
    let (code, _, err) = row.run(&["copy", "--state", s(&state)]);
    row.faults += 1;
    row.check(code == 1 && err.contains("no_space"), || {
        format!("full: exit {code}: {err}")
    });
    row.partial += temporaries(&dst).len() as u64;
    fs_dst.remount("size=256m");
    let (code, _, err) = row.run(&["copy", "--state", s(&state)]);
    row.check(code == 0, || format!("resume: {err}"));
    row.compare_trees(&src, &dst);
    drop(fs_dst);
    row
}

/// A state file's disk fills up: the run stops with a clear error, and once
/// there is room, the next run ends as one that never stopped. The sizes
/// put the failure in a WAL write (the smaller) or in a checkpoint (the
/// larger); a failed commit must never be followed by a checkpoint (which
/// lost rows here before, mostly on a loaded machine), so each size runs
/// more than once.
fn state_disk_full(mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("resources: state file's disk full");
    let base = "seed=8,depth=3,fanout=8,files=40";
    let (src, dst) = (format!("sim:{base}"), format!("sim:{base},mutate=2"));
    let reference = dir.join("reference.duckdb");
    let (code, _, err) = row.run(&["discover", &src, &dst, "--state", s(&reference)]);
    row.check(code == 0, || format!("reference: {err}"));
    let want = stable_status(&reference);
    let sizes: &[&str] = if mode.long {
        &["600k", "1m", "2m", "3m", "5m"]
    } else {
        &["1m", "3m"]
    };
    for (i, size) in sizes
        .iter()
        .flat_map(|size| std::iter::repeat_n(size, mode.rounds() as usize))
        .enumerate()
    {
        let area = dir.join(format!("state-area-{i}"));
        let Some(fs_state) = Tmpfs::mount(&area, &format!("size={size}")) else {
            return row.missing("a tmpfs mount");
        };
        let state = area.join("s.duckdb");
        let (code, _, err) = row.run(&["discover", &src, &dst, "--state", s(&state)]);
        row.faults += 1;
        let clear = err.contains(s(&state)) && err.matches("No space left").count() == 1;
        row.check(code == 1 && clear, || {
            format!("state disk of {size} full: exit {code}: {err}")
        });
        fs_state.remount("size=256m");
        let (code, _, err) = row.run(&["discover", &src, &dst, "--state", s(&state)]);
        row.check(code == 0, || format!("resume after {size}: {err}"));
        row.compare_items(&reference, &state);
        row.check(stable_status(&state) == want, || {
            format!("the summary after a full disk of {size} differs")
        });
    }
    row
}

fn corrupt_state(_mode: &mut Mode, dir: &Path) -> Row {
    let mut row = Row::new("resources: corrupt or truncated state");
    let src = dir.join("src");
    make_tree(&src, 2, 2, 3);
    for (i, damage) in ["truncate", "scribble", "empty"].iter().enumerate() {
        let dst = dir.join(format!("dst-{i}"));
        let state = dir.join(format!("s-{i}.duckdb"));
        discover_and_approve(&mut row, &src, &dst, &state);
        let len = fs::metadata(&state).unwrap().len();
        match *damage {
            "truncate" => fs::OpenOptions::new()
                .write(true)
                .open(&state)
                .unwrap()
                .set_len(len / 3)
                .unwrap(),
            "scribble" => {
                let mut bytes = fs::read(&state).unwrap();
                for b in bytes.iter_mut().skip(4096).step_by(7) {
                    *b ^= 0x5a;
                }
                fs::write(&state, bytes).unwrap();
            }
            _ => fs::write(&state, b"").unwrap(),
        }
        row.faults += 1;
        let (code, _, err) = row.run(&["copy", "--state", s(&state)]);
        row.check(code == 1 && err.contains(s(&state)), || {
            format!("{damage}: exit {code}: {err}")
        });
        row.check(!dst.exists(), || {
            format!("{damage}: the destination was written to")
        });
    }
    row
}

/// A scenario's name, with the store it ran on where that is not a
/// DuckDB file.
fn title(scenario: &str, store: &Store) -> String {
    match store {
        Store::File => scenario.to_string(),
        Store::Postgres(_) => format!("{scenario}, PostgreSQL"),
    }
}

/// Runs `scenario` with its states in PostgreSQL, on a cluster of its own.
fn on_postgres(name: &str, scenario: impl FnOnce(&Store) -> Row) -> Row {
    match Cluster::start() {
        Some(cluster) => scenario(&Store::Postgres(cluster)),
        // Outside CI only: under CI a missing PostgreSQL fails the start.
        None => Row::new(format!("{name}, PostgreSQL")).missing("PostgreSQL (apt postgresql-15)"),
    }
}

fn crash_discover_sim_postgres(mode: &mut Mode, dir: &Path) -> Row {
    on_postgres("crash: discover, sim", |store| {
        crash_discover_sim_on(mode, dir, store)
    })
}

fn crash_copy_postgres(mode: &mut Mode, dir: &Path) -> Row {
    on_postgres("crash: copy, local", |store| {
        crash_copy_on(mode, dir, store)
    })
}

fn crash_retry_postgres(mode: &mut Mode, dir: &Path) -> Row {
    on_postgres("crash: retry (discovery + copy)", |store| {
        crash_retry_on(mode, dir, store)
    })
}

fn crash_delta_postgres(mode: &mut Mode, dir: &Path) -> Row {
    on_postgres("crash: delta pass", |store| {
        crash_delta_on(mode, dir, store)
    })
}

type Scenario = fn(&mut Mode, &Path) -> Row;

/// The scenarios: run one after another by [`torture`], and each alone
/// (`torture::NAME`, ignored in the suite since `torture` runs it):
///
/// ```sh
/// cargo test --release --test torture torture::crash_copy -- --ignored --nocapture
/// ```
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[Scenario] = &[$($name),*];

        mod torture {
            $(
                #[test]
                #[ignore = "part of the `torture` test; run it alone with --ignored"]
                fn $name() {
                    super::run_alone(super::$name);
                }
            )*
        }
    };
}

scenarios!(
    crash_discover_sim,
    crash_discover_local,
    crash_copy,
    crash_retry,
    crash_verify,
    crash_delta,
    crash_discover_sim_postgres,
    crash_copy_postgres,
    crash_retry_postgres,
    crash_delta_postgres,
    concurrent_processes,
    faults_during_copy,
    hostile_tree,
    swapped_folders,
    many_in_one_folder,
    case_insensitive_destination,
    destination_full,
    state_disk_full,
    corrupt_state,
);

fn mode() -> Mode {
    Mode {
        long: std::env::var("TREESHIFT_TORTURE").is_ok_and(|v| v == "long"),
        rng: Rng::from_env(),
    }
}

/// Runs one scenario and prints its row; fails as the whole suite would.
fn run_alone(scenario: Scenario) {
    let mut mode = mode();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut row = scenario(&mut mode, dir.path());
    if row.note.is_empty() {
        row.note = format!("{:.1} s", started.elapsed().as_secs_f64());
    }
    print_table(std::slice::from_ref(&row), mode.long);
    assert!(row.skipped || row.ok(), "{}: {}", row.scenario, row.note);
}

#[test]
fn torture() {
    let mut mode = mode();
    let long = mode.long;
    let mut rows = Vec::new();
    for &scenario in SCENARIOS {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scenario(&mut mode, dir.path())
        }));
        let mut row = outcome.unwrap_or_else(|e| {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let mut row = Row::new("(scenario panicked)");
            row.note = format!("FAILED: {why}");
            row
        });
        if row.note.is_empty() {
            row.note = format!("{:.1} s", started.elapsed().as_secs_f64());
        }
        rows.push(row);
    }
    print_table(&rows, long);
    let kills: u32 = rows.iter().map(|r| r.kills).sum();
    assert!(
        kills >= if long { 100 } else { 20 },
        "only {kills} kills landed"
    );
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| !r.skipped && !r.ok())
        .map(|r| r.scenario.as_str())
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
}

fn print_table(rows: &[Row], long: bool) {
    println!("\ntorture ({} mode)", if long { "long" } else { "quick" });
    println!(
        "| {:<42} | {:>4} | {:>5} | {:>6} | {:>4} | {:>4} | {:>7} | {:>6} | {:<7} | note",
        "scenario", "runs", "kills", "faults", "lost", "dup", "partial", "panics", "result"
    );
    println!("|{}|", ["-"; 10].map(|_| "---").join("|"));
    for r in rows {
        let result = if r.skipped {
            "skipped"
        } else if r.ok() {
            "ok"
        } else {
            "FAILED"
        };
        println!(
            "| {:<42} | {:>4} | {:>5} | {:>6} | {:>4} | {:>4} | {:>7} | {:>6} | {:<7} | {}",
            r.scenario,
            r.runs,
            r.kills,
            r.faults,
            r.lost,
            r.duplicated,
            r.partial,
            r.panics,
            result,
            r.note
        );
    }
    let sum = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    println!(
        "| {:<42} | {:>4} | {:>5} | {:>6} | {:>4} | {:>4} | {:>7} | {:>6} |",
        "total",
        sum(|r| u64::from(r.runs)),
        sum(|r| u64::from(r.kills)),
        sum(|r| u64::from(r.faults)),
        sum(|r| r.lost),
        sum(|r| r.duplicated),
        sum(|r| r.partial),
        sum(|r| u64::from(r.panics)),
    );
}
