//! A run stopped on request (SIGINT, SIGTERM) stops with exit code 130
//! after recording what was in flight, and the next run ends exactly where
//! an uninterrupted one does: the same discovery, the same destination
//! tree, verified. With the state in a DuckDB file, then in PostgreSQL.

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{command, run, s};

/// Slow enough (each listing and read waits) that a signal lands mid-run.
const TREE: &str = "sim:seed=11,depth=2,fanout=4,files=12,latency_us=20000";

fn spawn(args: &[&str]) -> Child {
    command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `signal` to `child` once `ready` holds (or after 20 s), and
/// returns its exit code and stderr.
fn signal_when(mut child: Child, signal: &str, ready: impl Fn() -> bool) -> (i32, String) {
    let start = Instant::now();
    while !ready() && start.elapsed() < Duration::from_secs(20) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files_in(dir: &Path) -> usize {
    walk(dir).filter(|p| p.is_file()).count()
}

fn walk(dir: &Path) -> Box<dyn Iterator<Item = std::path::PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Box::new(std::iter::empty());
    };
    Box::new(entries.flatten().flat_map(|e| {
        let p = e.path();
        let below = if p.is_dir() {
            walk(&p)
        } else {
            Box::new(std::iter::empty())
        };
        std::iter::once(p).chain(below)
    }))
}

#[test]
fn a_discovery_and_a_copy_stopped_by_a_signal_resume_to_the_uninterrupted_result() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let (reference, stopped) = (store.state(dir.path(), "ref"), store.state(dir.path(), "s"));
        let (ref_dst, dst) = (dir.path().join("ref-dst"), dir.path().join("dst"));
        let migrate = |state: &Path, to: &Path| {
            let (code, out, err) = run(&[
                "migrate",
                TREE,
                s(to),
                "--state",
                s(state),
                "--yes",
                "--checksum",
            ]);
            assert_eq!(code, 0, "{out} {err}");
        };
        migrate(&reference, &ref_dst);

        // Discovery: stopped once its first round is sealed.
        let discover = [
            "discover",
            TREE,
            s(&dst),
            "--state",
            s(&stopped),
            "--workers",
            "2",
        ];
        let child = spawn(&discover);
        let state = stopped.clone();
        let (code, err) = signal_when(child, "-INT", || util::state_made(&state));
        assert_eq!(code, 130, "{err}");
        assert!(err.contains("stopped on request"), "{err}");
        let (code, _, err) = run(&discover);
        assert_eq!(code, 0, "{err}");

        // Copy: stopped once some files are in place.
        let (code, _, err) = run(&["approve", "--state", s(&stopped)]);
        assert_eq!(code, 0, "{err}");
        let copy = ["copy", "--state", s(&stopped), "--workers", "2"];
        let child = spawn(&copy);
        let (code, err) = signal_when(child, "-TERM", || files_in(&dst) >= 10);
        assert_eq!(code, 130, "{err}");
        assert!(files_in(&dst) < files_in(&ref_dst), "the copy had finished");
        let (code, _, err) = run(&copy);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run(&["verify", "--state", s(&stopped), "--checksum"]);
        assert_eq!(code, 0, "{out} {err}");
        assert_eq!(
            util::rsync_differences_with("-a", &ref_dst, &dst),
            Some(vec![])
        );
        // The same plan, copy and verify: what depends on the destination's
        // path, the moment and the speed aside.
        let strip = |state: &Path| {
            let mut v = util::status_json(state);
            let o = v.as_object_mut().unwrap();
            for key in ["phase", "rounds", "dst_location", "estimate"] {
                o.remove(key);
            }
            let approval = o["approval"].as_object_mut().unwrap();
            approval.remove("approved_at");
            approval.remove("plan_hash"); // it covers the destination's location
            v
        };
        assert_eq!(strip(&stopped), strip(&reference));
        assert_eq!(util::all_items(&stopped), util::all_items(&reference));
    });
}
