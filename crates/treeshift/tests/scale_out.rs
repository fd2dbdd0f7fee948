//! Discovery with its state in PostgreSQL, by the real binary: `discover`
//! and `treeshift worker` processes share one migration, and end with the
//! summary one process gives on a DuckDB file, whatever happens to one of
//! them (SIGKILL included: its folders are leased again at once, its
//! leases ending with it).

mod util;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::cluster::{Cluster, assert_nothing_doubled};
use util::{command, s};

/// Slow enough (each listing waits, few at once) that the processes
/// overlap.
const SRC: &str = "sim:seed=5,depth=3,fanout=5,files=4,latency_us=100000";
const DST: &str = "sim:seed=5,depth=3,fanout=5,files=4,latency_us=100000,\
                   mutate=5,del_dirs=15,del_files=20,modify=10,extra=15";

/// Folders each process lists at once.
const WORKERS: &str = "4";

fn spawn(args: &[&str]) -> Child {
    command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and returns its JSON output; fails on an exit
/// status other than 0.
fn json_of(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// The discovery summary in a run's or a status's JSON output: the keys
/// of `like`, a summary (`discover --json` prints it flattened, with the
/// calls and the timing beside).
fn summary_of(out: &Value, like: &Value) -> Value {
    let keys = like.as_object().unwrap().keys();
    Value::Object(keys.map(|k| (k.clone(), out[k].clone())).collect())
}

/// The review of everything that needs a look, as CSV.
fn review_all(state: &str) -> String {
    let out = command()
        .args([
            "review", "--state", state, "--status", "all", "--format", "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What one process gives with its state in a DuckDB file: the summary,
/// the review of everything that needs a look, and what the copy would
/// cost (the status's estimate).
fn on_a_file() -> (Value, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("m.duckdb");
    let run = spawn(&[
        "discover",
        SRC,
        DST,
        "--state",
        s(&state),
        "--json",
        "--workers",
        WORKERS,
    ]);
    let mut summary = json_of(run);
    let fields = summary.as_object_mut().unwrap();
    fields.remove("calls");
    fields.remove("timing");
    // The trees differ in every way the comparison finds.
    for status in ["missing", "same", "differs", "extra"] {
        assert!(summary[status].as_u64().unwrap() > 0, "{status}: {summary}");
    }
    let estimate = status_of(s(&state))["estimate"].clone();
    (summary, review_all(s(&state)), estimate)
}

/// `discover` with its state in the database at `url`.
fn discover_on(url: &str) -> Child {
    spawn(&[
        "discover",
        SRC,
        DST,
        "--state",
        url,
        "--json",
        "--workers",
        WORKERS,
    ])
}

fn query_i64(url: &str, sql: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.query_one(sql, &[]).unwrap().get(0)
}

/// Waits (20 s at most) until `sql` answers more than 0 on `url`;
/// `running` must not have ended meanwhile.
fn wait_for(url: &str, sql: &str, running: &mut Child) {
    let start = Instant::now();
    loop {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        // Before discover created them, the tables are not there.
        if client
            .query_one(sql, &[])
            .is_ok_and(|row| row.get::<_, i64>(0) > 0)
        {
            return;
        }
        assert!(running.try_wait().unwrap().is_none(), "the run ended first");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited for: {sql}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A query of how many open folders, of either side, `process` holds.
fn folders_held_by(process: &Child) -> String {
    format!(
        "SELECT (SELECT count(*) FROM src_leases WHERE holder LIKE '%:{pid}:%' AND NOT done) + \
                (SELECT count(*) FROM dst_leases WHERE holder LIKE '%:{pid}:%' AND NOT done)",
        pid = process.id()
    )
}

/// `discover` started on a new database `name`, once it made the
/// migration there (the workers join it then): the database's location
/// and the process.
fn discovering(cluster: &Cluster, name: &str) -> (String, Child) {
    let url = cluster.database(name);
    let mut first = discover_on(&url);
    wait_for(&url, "SELECT count(*) FROM src_leases", &mut first);
    (url, first)
}

/// `status --json` of the migration at `state`.
fn status_of(state: &str) -> Value {
    let status = command()
        .args(["status", "--state", state, "--json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    serde_json::from_slice(&status.stdout).unwrap()
}

#[test]
fn workers_on_other_processes_share_a_discovery_and_end_as_one_process_alone() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (want, want_review, want_estimate) = on_a_file();
    let (url, first) = discovering(&cluster, "shared");
    let workers: Vec<Child> = (0..2)
        .map(|_| spawn(&["worker", "--state", &url, "--json", "--workers", WORKERS]))
        .collect();
    let mut listed = Vec::new();
    for run in std::iter::once(first).chain(workers) {
        let out = json_of(run);
        assert_eq!(summary_of(&out, &want), want);
        let lists = |side: &str| out["calls"][side]["list"].as_u64().unwrap_or(0);
        listed.push(lists("src") + lists("dst"));
    }
    assert!(
        listed.iter().all(|&n| n > 0),
        "every process listed folders: {listed:?}"
    );
    assert_nothing_doubled(&url);
    // The status of a migration on PostgreSQL reads as a file's does.
    let status = status_of(&url);
    assert_eq!(summary_of(&status, &want), want);
    assert_eq!(status["phase"], "discovered");
    assert!(want_estimate["files"].as_u64() > Some(0), "{want_estimate}");
    assert_eq!(status["estimate"], want_estimate);
    // And so does its review, item by item.
    assert!(want_review.lines().count() > 100);
    assert_eq!(review_all(&url), want_review);
}

#[test]
fn workers_of_one_side_each_list_only_their_tree() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (want, _, _) = on_a_file();
    let (url, first) = discovering(&cluster, "sides");
    let near_src = spawn(&["worker", "--state", &url, "--side", "src", "--json"]);
    let near_dst = spawn(&["worker", "--state", &url, "--side", "dst", "--json"]);
    let lists = |out: &Value, side: &str| out["calls"][side]["list"].as_u64().unwrap_or(0);
    let src_only = json_of(near_src);
    assert!(
        lists(&src_only, "src") > 0 && lists(&src_only, "dst") == 0,
        "{src_only}"
    );
    // The destination's worker trails the source as the database says it
    // stands (it lists no source round itself), and ends with discovery.
    let dst_only = json_of(near_dst);
    assert!(
        lists(&dst_only, "dst") > 0 && lists(&dst_only, "src") == 0,
        "{dst_only}"
    );
    assert_eq!(summary_of(&dst_only, &want), want);
    assert_eq!(summary_of(&json_of(first), &want), want);
    assert_nothing_doubled(&url);
}

#[test]
fn a_worker_killed_mid_listing_leaves_its_folders_to_the_others() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (want, _, _) = on_a_file();
    let (url, first) = discovering(&cluster, "killed");
    // Leases of 2 s: the others take its folders over soon after.
    let mut doomed = spawn(&[
        "--lease-time",
        "2",
        "worker",
        "--state",
        &url,
        "--workers",
        WORKERS,
    ]);
    let holds = folders_held_by(&doomed);
    wait_for(&url, &holds, &mut doomed);
    // Status shows what the worker holds.
    let status = status_of(&url);
    let dead = format!(":{}:", doomed.id());
    let killed = Command::new("kill")
        .args(["-KILL", &doomed.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = doomed.wait();
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["holder"].as_str().unwrap().contains(&dead) && w["held"].as_u64() > Some(0)),
        "{}",
        status["workers"]
    );
    let out = json_of(first);
    assert_eq!(summary_of(&out, &want), want);
    // What the killed worker held was leased again.
    let taken_over = query_i64(
        &url,
        "SELECT (SELECT count(*) FROM src_leases WHERE epoch > 1) + \
                (SELECT count(*) FROM dst_leases WHERE epoch > 1)",
    );
    assert!(taken_over > 0);
    assert_nothing_doubled(&url);
}

#[test]
fn a_worker_paused_past_its_leases_drops_what_it_listed_under_them_and_goes_on() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (want, _, _) = on_a_file();
    let (url, first) = discovering(&cluster, "paused");
    let mut paused = spawn(&[
        "--lease-time",
        "2",
        "worker",
        "--state",
        &url,
        "--json",
        "--workers",
        WORKERS,
    ]);
    let pid = paused.id();
    let held = folders_held_by(&paused);
    wait_for(&url, &held, &mut paused);
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // Stopped as a process is when its host stalls: its heartbeat stops
    // with it, but its connections stay open (it is not gone).
    signal("-STOP");
    std::thread::sleep(Duration::from_millis(200));
    assert!(query_i64(&url, &held) > 0, "it held no lease when stopped");
    // Its leases run out and the discovery takes its folders over.
    let deadline = Instant::now() + Duration::from_secs(60);
    while query_i64(&url, &held) > 0 {
        assert!(
            Instant::now() < deadline,
            "its folders were not leased again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal("-CONT");
    let out = paused.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // What it was listing when stopped is the later leases' to record.
    assert!(stderr.contains("leased again"), "{stderr}");
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary_of(&out, &want), want);
    assert_eq!(summary_of(&json_of(first), &want), want);
    assert_nothing_doubled(&url);
}

#[test]
fn a_discovery_killed_and_started_again_takes_its_leases_back_at_once() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (want, _, _) = on_a_file();
    let url = cluster.database("resumed");
    // Leases of an hour: the run started again can only end if the
    // killed run's leases ended with it.
    let discover = || {
        spawn(&[
            "--lease-time",
            "3600",
            "discover",
            SRC,
            DST,
            "--state",
            &url,
            "--json",
            "--workers",
            WORKERS,
        ])
    };
    let mut doomed = discover();
    let holds = format!(
        "SELECT count(*) FROM src_leases WHERE holder LIKE '%:{}:%' AND NOT done",
        doomed.id()
    );
    wait_for(&url, &holds, &mut doomed);
    let killed = Command::new("kill")
        .args(["-KILL", &doomed.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = doomed.wait();
    let mut again = discover();
    let deadline = Instant::now() + Duration::from_secs(120);
    while again.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the run started again waits for the killed run's leases"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(summary_of(&json_of(again), &want), want);
    // The killed run's folders were leased again, under a later epoch.
    assert!(query_i64(&url, "SELECT count(*) FROM src_leases WHERE epoch > 1") > 0);
    assert_nothing_doubled(&url);
}

#[test]
fn postgresql_restarted_mid_discovery_is_waited_for_and_the_result_is_the_same() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let (want, _, _) = on_a_file();
    let (url, first) = discovering(&cluster, "restarted");
    let mut second = spawn(&["worker", "--state", &url, "--json", "--workers", WORKERS]);
    // Stopped (a fast shutdown: sessions cut) once both sides are under
    // way, and started again a moment later: every operation in between
    // fails to connect and waits.
    wait_for(&url, "SELECT count(*) FROM dst_leases", &mut second);
    cluster.stop();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_again();
    let mut waited = 0;
    for run in [first, second] {
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        waited += usize::from(stderr.contains("cannot be reached"));
        let out: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary_of(&out, &want), want);
    }
    assert!(waited > 0, "no process noticed the server gone");
    assert_nothing_doubled(&url);
}
