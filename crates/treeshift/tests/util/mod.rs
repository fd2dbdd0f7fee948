//! Helpers shared by the end-to-end tests: run the real binary, build trees.

#![allow(dead_code)]

pub mod api;
mod servers;

pub use servers::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_treeshift"))
}

/// Runs `treeshift ARGS` to completion.
pub fn treeshift(args: &[&str]) -> Output {
    command().args(args).output().expect("run treeshift")
}

/// The binary, with the credentials of the test storage servers
/// (requests are signed as for a real store).
pub fn command() -> Command {
    with_test_credentials(Command::new(bin()))
}

/// `command`, given the credentials of the test storage servers.
pub fn with_test_credentials(mut command: Command) -> Command {
    command
        .env("AWS_ACCESS_KEY_ID", "treeshift-test")
        .env("AWS_SECRET_ACCESS_KEY", "treeshift-test-secret")
        .env("AZURE_STORAGE_ACCOUNT_NAME", AZURE_ACCOUNT)
        .env("AZURE_STORAGE_ACCOUNT_KEY", AZURE_KEY)
        .env("WEBDAV_PASSWORD", WEBDAV_PASSWORD);
    command
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
        "missing",
        "outdated",
        "same",
        "differs",
        "conflict",
        "extra",
        "excluded",
        "invalid-name",
        "failed",
    ] {
        lines.extend(
            review_csv(state, status)
                .into_iter()
                .map(|l| format!("{status}|{l}")),
        );
    }
    lines.sort();
    lines
}

/// Returns true if and only if the tests run under CI (`CI` is set).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A prerequisite of a test is missing (a mount, `setpriv`, a tool). Under
/// CI that fails the test, so a missing prerequisite never passes silently;
/// elsewhere the test is reported as skipped, with the reason.
pub fn missing_prerequisite(what: &str) {
    assert!(!in_ci(), "missing prerequisite under CI: {what}");
    eprintln!("skipped: {what}");
}

/// `review --status S --format csv`, without its header line.
pub fn review_csv(state: &Path, status: &str) -> Vec<String> {
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
    text.lines().skip(1).map(str::to_string).collect()
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
            set_mtime(&p, 1_600_000_000 + i as u64 * 60);
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

/// `cp -a src dst`: a destination that is a finished copy of the source.
pub fn copy_tree(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .args(["-a", s(src), s(dst)])
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}

/// One node of a tree snapshot: kind, size, mtime (whole seconds), and
/// content (a file's bytes hashed, a symlink's target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub size: u64,
    pub mtime_s: i64,
    pub content: Vec<u8>,
}

/// Every node under `root` by relative path (raw bytes), for comparing
/// trees by content, size and mtime. Folder mtimes are left out (a copy
/// restores them, but an interrupted one may not have yet). Fifos and
/// sockets are listed as `special` without content.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<Vec<u8>, Node> {
    snapshot_within(root, usize::MAX)
}

/// Like `snapshot`, but only `max_depth` levels deep (so paths can stay
/// below PATH_MAX in a tree that goes deeper).
pub fn snapshot_within(root: &Path, max_depth: usize) -> std::collections::BTreeMap<Vec<u8>, Node> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = meta.file_type();
            let (kind, content, size, mtime_s) = if ft.is_dir() {
                if depth + 1 < max_depth {
                    stack.push((path.clone(), depth + 1));
                }
                ("folder", Vec::new(), 0, 0)
            } else if ft.is_file() {
                let data = std::fs::read(&path).unwrap();
                let digest = fnv(&data).to_le_bytes().to_vec();
                ("file", digest, meta.len(), meta.mtime())
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                (
                    "symlink",
                    target.as_os_str().as_bytes().to_vec(),
                    meta.len(),
                    meta.mtime(),
                )
            } else {
                ("special", Vec::new(), 0, 0)
            };
            out.insert(
                rel,
                Node {
                    kind,
                    size,
                    mtime_s,
                    content,
                },
            );
        }
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Paths under `root` that look like a copy's temporary files.
pub fn temporaries(root: &Path) -> Vec<Vec<u8>> {
    temporaries_within(root, usize::MAX)
}

/// Like `temporaries`, only `max_depth` levels deep.
pub fn temporaries_within(root: &Path, max_depth: usize) -> Vec<Vec<u8>> {
    snapshot_within(root, max_depth)
        .into_keys()
        .filter(|p| {
            let name = p.rsplit(|&b| b == b'/').next().unwrap_or(p);
            name.starts_with(b".treeshift-") && name.ends_with(b".tmp")
        })
        .collect()
}

/// A tmpfs mounted for a test, unmounted on drop. `None` if this machine
/// does not let the test mount one (not root, or no CAP_SYS_ADMIN).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs", s(at)])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    pub fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}"), s(&self.0)])
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// What a series of killed runs amounted to.
#[derive(Clone, Debug, Default)]
pub struct Killed {
    /// Runs ended by SIGKILL.
    pub kills: u32,
    /// Runs started (the kills and the last, finished one).
    pub runs: u32,
    /// Runs whose stderr shows a panic.
    pub panics: u32,
    /// What the last run, which finished, wrote on stderr.
    pub stderr: String,
}

/// Runs treeshift with `args` again and again, killing it (SIGKILL) after a
/// random delay drawn from `window` (milliseconds), at most `max_kills`
/// times, until a run ends by itself. That run must exit 0 or 4.
pub fn run_with_kills(
    args: &[&str],
    window: std::ops::Range<u64>,
    rng: &mut Rng,
    max_kills: u32,
) -> Killed {
    run_with_kills_by(command, args, window, rng, max_kills)
}

/// `run_with_kills`, each run a command `make` gives (its environment).
pub fn run_with_kills_by(
    make: impl Fn() -> Command,
    args: &[&str],
    window: std::ops::Range<u64>,
    rng: &mut Rng,
    max_kills: u32,
) -> Killed {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut done = Killed::default();
    loop {
        done.runs += 1;
        let mut child = make()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if done.kills < max_kills {
            let span = window.end.saturating_sub(window.start).max(1);
            let delay = Duration::from_millis(window.start + rng.below(span));
            let start = Instant::now();
            while start.elapsed() < delay {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                done.kills += 1;
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        done.stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        done.panics += u32::from(done.stderr.contains("panicked"));
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(4),
            "resumed run failed: {code:?} {}",
            done.stderr
        );
        return done;
    }
}

/// Discovers and approves `src` to `dst`, then copies, killing the copy
/// `kills` times at random moments before letting it finish, and
/// verifies. The copy is paced (`pace`: `["--dst-tps", "50"]`, say), so
/// that each run lasts well past the moment it is killed however fast the
/// server: it is killed at least once.
pub fn migrate_with_kills(
    src: &str,
    dst: &str,
    state: &Path,
    pace: [&str; 2],
    kills: u32,
    rng: &mut Rng,
) {
    let (code, _, err) = run(&["discover", src, dst, "--state", s(state)]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["approve", "--state", s(state)]);
    assert_eq!(code, 0, "{err}");
    let copy = ["copy", "--state", s(state), pace[0], pace[1]];
    let killed = run_with_kills(&copy, 100..700, rng, kills);
    eprintln!("{src} -> {dst}: {killed:?}");
    assert!(
        killed.kills >= 1,
        "the copy ended before any kill: {killed:?}"
    );
    assert_eq!(killed.panics, 0);
    let (code, out, err) = run(&["verify", "--state", s(state), "--json"]);
    assert_eq!(code, 0, "{out} {err}");
}

/// Runs the binary with the capabilities that let root ignore file
/// permissions dropped. `None` if `setpriv` is missing.
pub fn run_unprivileged(args: &[&str]) -> Option<(i32, String, String)> {
    Command::new("setpriv").arg("--version").output().ok()?;
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
        .arg(bin())
        .args(args)
        .output()
        .unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs `treeshift ARGS` without the capabilities that let root ignore
/// permissions, then opens `locked` again (mode 755); `None` if `setpriv`
/// is missing (a failure under CI).
pub fn run_locked_out(locked: &Path, args: &[&str]) -> Option<(i32, String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let result = run_unprivileged(args);
    std::fs::set_permissions(locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    if result.is_none() {
        missing_prerequisite("setpriv");
    }
    result
}

/// Writes `data` over the file at `p` and gives it back its mtime: other
/// bytes that only a checksum can tell.
pub fn rewrite_keeping_mtime(p: &Path, data: &[u8]) {
    let mtime = std::fs::metadata(p).unwrap().modified().unwrap();
    std::fs::write(p, data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// Sets the mtime of a file or folder (seconds since the epoch).
pub fn set_mtime(p: &Path, secs: u64) {
    std::fs::File::open(p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// Swaps folders with symlinks to outside folders and back, over and over,
/// from a thread of its own, until stopped: the race a migration running
/// as root on a tree other people can write to must survive. Each swap is
/// one `renameat2(RENAME_EXCHANGE)`, so the path is always either the real
/// folder or the symlink.
pub struct Swapper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    /// Starts swapping each `(folder, outside)` pair: `folder` becomes a
    /// symlink to `outside` for a moment, then the folder again.
    pub fn start(pairs: &[(PathBuf, PathBuf)], seed: u64) -> Swapper {
        use std::sync::atomic::Ordering;
        let links: Vec<(PathBuf, PathBuf)> = pairs
            .iter()
            .enumerate()
            .map(|(i, (folder, outside))| {
                let link = folder.with_file_name(format!(".swap-{i}"));
                std::os::unix::fs::symlink(outside, &link).unwrap();
                (folder.clone(), link)
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let (folder, link) = &links[rng.below(links.len() as u64) as usize];
                exchange(folder, link);
                std::thread::sleep(std::time::Duration::from_micros(rng.below(2000)));
                exchange(folder, link);
                swaps += 1;
                std::thread::sleep(std::time::Duration::from_micros(rng.below(500)));
            }
            for (_, link) in &links {
                std::fs::remove_file(link).unwrap();
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops swapping, leaves every folder in place and removes the
    /// symlinks; returns how many swaps were made.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn exchange(a: &Path, b: &Path) {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).expect("renameat2(RENAME_EXCHANGE)");
}

/// Files under `root` (symlinks not followed) whose bytes contain
/// `needle`, and `root` itself if it is a file that does.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let holds = |p: &Path| {
        std::fs::read(p).is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
    };
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    if meta.is_file() {
        return if holds(root) {
            vec![root.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() && holds(&path) => found.push(path),
                _ => {}
            }
        }
    }
    found
}

/// What a race of folder swaps against a migration came to.
#[derive(Debug, Default)]
pub struct Race {
    /// Swaps made while treeshift ran.
    pub swaps: u64,
    /// treeshift runs.
    pub runs: u32,
    /// Runs whose stderr shows a panic, or that exited other than 0 or 4.
    pub bad_exits: Vec<String>,
    /// Outside folders whose content changed.
    pub canaries_touched: Vec<String>,
    /// Files of the destination or the state file holding a canary's secret.
    pub leaks: Vec<String>,
}

/// The secret every canary file holds: it must never appear anywhere a
/// migration writes.
pub const CANARY_SECRET: &[u8] = b"CANARY-SECRET-0e5c9a71";

/// Builds a source under `dir`, then `rounds` times: a half-copied
/// destination with canary folders beside it, discovery and an approval
/// that moves extras into quarantine, and then `copy`, `verify --checksum`,
/// `retry` and `copy` again while a thread swaps source and destination
/// folders with symlinks to the canaries and back. The canaries hold the
/// same names, sizes and mtimes as the folders they stand in for, and
/// secret content, so only confinement keeps a copy out of them.
pub fn swap_race(dir: &Path, rounds: u32, seed: u64) -> Race {
    let src = dir.join("src");
    // Files big enough to hold the whole secret once overwritten, and
    // enough of them that the copy takes a while.
    for top in 0..3 {
        for sub in ["", "d0", "d1"] {
            let folder = src.join(format!("d{top}")).join(sub);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..30u64 {
                let p = folder.join(format!("f{i}.txt"));
                let data = format!("public {top}/{sub}/{i} ").repeat(8 + i as usize);
                std::fs::write(&p, data).unwrap();
                set_mtime(&p, 1_600_000_000 + i * 60);
            }
        }
    }
    let canary_src = [
        (src.join("d1"), dir.join("canary-src-d1")),
        (src.join("d2").join("d0"), dir.join("canary-src-d2-d0")),
    ];
    for (real, canary) in &canary_src {
        make_canary(real, canary);
    }
    let mut race = Race::default();
    let mut rng = Rng(seed);
    for round in 0..rounds {
        race_round(
            dir,
            &dir.join(format!("round-{round}")),
            &canary_src,
            &mut rng,
            &mut race,
        );
    }
    race
}

fn race_round(
    dir: &Path,
    here: &Path,
    canary_src: &[(PathBuf, PathBuf)],
    rng: &mut Rng,
    race: &mut Race,
) {
    let src = dir.join("src");
    let (dst, state) = (here.join("dst"), here.join("s.duckdb"));
    std::fs::create_dir_all(&dst).unwrap();
    copy_tree(&src.join("d0"), &dst.join("d0"));
    std::fs::create_dir(dst.join("d1")).unwrap();
    for i in 0..3 {
        std::fs::write(dst.join("d0").join(format!("x{i}.extra")), b"extra").unwrap();
        std::fs::write(dst.join("d1").join(format!("y{i}.extra")), b"extra").unwrap();
    }
    let mut canaries = canary_src.to_vec();
    for name in ["d0", "d1"] {
        let canary = here.join(format!("canary-dst-{name}"));
        make_canary(&dst.join(name), &canary);
        canaries.push((dst.join(name), canary));
    }
    let before: Vec<_> = canaries.iter().map(|(_, c)| snapshot(c)).collect();
    let run = |race: &mut Race, args: &[&str]| {
        race.runs += 1;
        let (code, _, err) = run(args);
        if err.contains("panicked") || !(code == 0 || code == 4) {
            race.bad_exits.push(format!("{args:?}: {code}: {err}"));
        }
    };
    run(race, &["discover", s(&src), s(&dst), "--state", s(&state)]);
    run(
        race,
        &["approve", "--state", s(&state), "--extras", "quarantine"],
    );
    let swapper = Swapper::start(&canaries, rng.next());
    run(race, &["copy", "--state", s(&state), "--workers", "4"]);
    run(race, &["verify", "--state", s(&state), "--checksum"]);
    run(race, &["retry", "--state", s(&state)]);
    run(race, &["copy", "--state", s(&state)]);
    race.swaps += swapper.stop();
    for ((_, canary), want) in canaries.iter().zip(&before) {
        if &snapshot(canary) != want {
            race.canaries_touched.push(canary.display().to_string());
        }
    }
    for place in [
        dst.clone(),
        state.clone(),
        state.with_extension("duckdb.wal"),
    ] {
        for leak in files_containing(&place, CANARY_SECRET) {
            race.leaks.push(leak.display().to_string());
        }
    }
}

/// A copy of `real` at `canary` with every file's content replaced by the
/// secret, at the same size and mtime.
fn make_canary(real: &Path, canary: &Path) {
    use std::os::unix::ffi::OsStrExt;
    copy_tree(real, canary);
    for (rel, node) in snapshot(canary) {
        if node.kind == "file" {
            let p = canary.join(std::ffi::OsStr::from_bytes(&rel));
            let secret: Vec<u8> = CANARY_SECRET
                .iter()
                .copied()
                .cycle()
                .take(node.size as usize)
                .collect();
            std::fs::write(&p, &secret).unwrap();
            set_mtime(&p, node.mtime_s as u64);
        }
    }
}

/// Runs a tool the test needs; `None` (after reporting it, which fails
/// under CI) when it is not installed.
pub fn tool(name: &str, args: &[&str]) -> Option<String> {
    match Command::new(name).args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{name} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(_) => {
            missing_prerequisite(&format!("{name} (apt-get install rsync acl)"));
            None
        }
    }
}

/// What rsync would still change to make `dst` equal `src`: one line per
/// item, empty when they are equal.
pub fn rsync_differences(src: &Path, dst: &Path) -> Option<Vec<String>> {
    rsync_differences_with("-aHAX", src, dst)
}

/// Like [`rsync_differences`], comparing what `flags` say (`-a`, `-aH`,
/// ...) and data by checksum.
pub fn rsync_differences_with(flags: &str, src: &Path, dst: &Path) -> Option<Vec<String>> {
    let out = tool(
        "rsync",
        &[
            flags,
            "-c",
            "-n",
            "-i",
            "--delete",
            &format!("{}/", s(src)),
            &format!("{}/", s(dst)),
        ],
    )?;
    Some(out.lines().map(str::to_string).collect())
}

/// Asserts that a resumed run ended where an uninterrupted one did: the
/// same status (but for what depends on timing: the phase name, per-round
/// metrics, when failures happened) and the same items.
pub fn same_end_state(reference: &Path, resumed: &Path) {
    // What depends on the run's timing: its phase name, per-round metrics,
    // and when failures happened.
    let strip = |mut v: serde_json::Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("phase");
        o.remove("rounds");
        for e in o["errors"]["recent"].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("at");
        }
        v
    };
    assert_eq!(strip(status_json(resumed)), strip(status_json(reference)));
    let (want, got) = (all_items(reference), all_items(resumed));
    assert_eq!(got.len(), want.len(), "item count");
    assert_eq!(got, want);
}

/// The binary with an empty environment but for PATH, a HOME of its own
/// (no ~/.aws, no ~/.ssh) and `vars`.
pub fn bare(home: &Path, vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// A throwaway PostgreSQL cluster (see its module).
#[path = "../../../treeshift-store-pg/tests/cluster/mod.rs"]
pub mod cluster;

/// Where an end-to-end test keeps its migrations' state.
pub enum Store {
    /// A DuckDB file in the test's folder.
    File,
    /// A database of its own on a cluster the test started.
    Postgres(cluster::Cluster),
}

impl Store {
    /// A new state named `name` for a migration of the test: a state
    /// file `name.duckdb` in `dir`, or a new database.
    pub fn state(&self, dir: &Path, name: &str) -> PathBuf {
        static DATABASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        match self {
            Store::File => dir.join(format!("{name}.duckdb")),
            Store::Postgres(cluster) => {
                let n = DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                PathBuf::from(cluster.database(&format!("m{n}")))
            }
        }
    }
}

/// Whether the migration's state at `state` has been made: the state
/// file exists, or the database holds the migration.
pub fn state_made(state: &Path) -> bool {
    if !treeshift_lifecycle::state::is_database(state) {
        return state.exists();
    }
    let Ok(mut client) = postgres::Client::connect(s(state), postgres::NoTls) else {
        return false;
    };
    client
        .query_one("SELECT to_regclass('migrations') IS NOT NULL", &[])
        .is_ok_and(|row| row.get::<_, bool>(0))
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::File => "a DuckDB file",
            Store::Postgres(_) => "PostgreSQL",
        })
    }
}

/// Runs `test` with the state on each store: a DuckDB file, then
/// PostgreSQL (a cluster of the test's own; without PostgreSQL's
/// binaries that run is skipped, and fails under CI). A failure says
/// which store it was on.
pub fn on_every_store(test: impl Fn(&Store)) {
    let stores = [
        Some(Store::File),
        cluster::Cluster::start().map(Store::Postgres),
    ];
    for store in stores.into_iter().flatten() {
        struct Says<'a>(&'a Store);
        impl Drop for Says<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    eprintln!("(with the state on {})", self.0);
                }
            }
        }
        let _says = Says(&store);
        test(&store);
    }
}
