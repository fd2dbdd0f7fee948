//! Discovery with its state in PostgreSQL, by the real binary: `discover`
//! and `treeshift worker` processes share one migration, and end with the
//! summary one process gives on a DuckDB file, whatever happens to one of
//! them (SIGKILL included: its folders are leased again once its leases
//! expire).

#[path = "../../treeshift-store-pg/tests/cluster/mod.rs"]
mod cluster;
mod util;

use cluster::Cluster;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
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

/// The summary one process gives with its state in a DuckDB file.
fn on_a_file() -> Value {
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
    summary
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

/// Nothing recorded twice: one node per path and side, one comparison
/// per node.
fn assert_nothing_doubled(url: &str) {
    for side in ["src", "dst"] {
        let doubled = query_i64(
            url,
            &format!(
                "SELECT (SELECT count(*) - count(DISTINCT rel_path) FROM {side}_nodes) + \
                        (SELECT count(*) FROM (SELECT node_id FROM {side}_status_events \
                         WHERE phase = 'compare' GROUP BY node_id HAVING count(*) > 1) x)"
            ),
        );
        assert_eq!(doubled, 0, "{side}: nodes or comparisons recorded twice");
    }
}

#[test]
fn workers_on_other_processes_share_a_discovery_and_end_as_one_process_alone() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let want = on_a_file();
    let url = cluster.database("shared");
    let mut first = spawn(&[
        "discover",
        SRC,
        DST,
        "--state",
        &url,
        "--json",
        "--workers",
        WORKERS,
    ]);
    wait_for(&url, "SELECT count(*) FROM src_leases", &mut first);
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
    let status = command()
        .args(["status", "--state", &url, "--json"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(summary_of(&status, &want), want);
    assert_eq!(status["phase"], "discovered");
}

#[test]
fn a_worker_killed_mid_listing_leaves_its_folders_to_the_others() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let want = on_a_file();
    let url = cluster.database("killed");
    let mut first = spawn(&[
        "discover",
        SRC,
        DST,
        "--state",
        &url,
        "--json",
        "--workers",
        WORKERS,
    ]);
    wait_for(&url, "SELECT count(*) FROM src_leases", &mut first);
    let mut doomed = spawn(&["worker", "--state", &url, "--workers", WORKERS]);
    let holds = format!(
        "SELECT (SELECT count(*) FROM src_leases WHERE holder LIKE '%:{pid}:%' AND NOT done) + \
                (SELECT count(*) FROM dst_leases WHERE holder LIKE '%:{pid}:%' AND NOT done)",
        pid = doomed.id()
    );
    wait_for(&url, &holds, &mut doomed);
    let killed = Command::new("kill")
        .args(["-KILL", &doomed.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = doomed.wait();
    let out = json_of(first);
    assert_eq!(summary_of(&out, &want), want);
    // What the killed worker held was leased again, once its leases
    // expired.
    let taken_over = query_i64(
        &url,
        "SELECT (SELECT count(*) FROM src_leases WHERE epoch > 1) + \
                (SELECT count(*) FROM dst_leases WHERE epoch > 1)",
    );
    assert!(taken_over > 0);
    assert_nothing_doubled(&url);
}
