//! Logs in the state file, the UDP sink, failures and estimates in
//! `status --json`, end to end through the real binary; each test with
//! the state in a DuckDB file, then in PostgreSQL.

mod util;

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use util::{make_tree, run, s, status_json};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("json: {e}: {out}"))
}

/// A tree with one folder that cannot be listed without root's override
/// capabilities, discovered (and copied) unprivileged with its state at
/// `state`. `None` without setpriv.
fn migrate_with_a_locked_folder(
    dir: &std::path::Path,
    state: &std::path::Path,
    extra: &[&str],
) -> Option<i32> {
    let src = dir.join("src");
    make_tree(&src, 2, 2, 2);
    let locked = src.join("d1");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let dst = dir.join("dst");
    let mut args = vec!["migrate", s(&src), s(&dst), "--state", s(state), "--yes"];
    args.extend(extra);
    let result = util::run_unprivileged(&args);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    let Some((code, _, err)) = result else {
        util::missing_prerequisite("setpriv");
        return None;
    };
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("WARN") && !err.contains('\x1b'),
        "warnings written to a pipe carry no colour codes: {err:?}"
    );
    Some(code)
}

#[test]
fn the_state_file_keeps_the_run_logs_and_status_reports_failures() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let state = store.state(dir.path(), "s");
        let Some(code) = migrate_with_a_locked_folder(dir.path(), &state, &[]) else {
            return;
        };
        assert_eq!(code, 4);

        let (code, out, err) = run(&["logs", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("INFO") && out.contains("round sealed"),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l.contains("WARN")
                && l.contains("could not be listed")
                && l.contains("d1")),
            "{out}"
        );
        // More processes append to the same log (approve ends on a log record,
        // after its last event): one sequence goes on.
        let (code, _, err) = run(&["approve", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(&["retry", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let (code, out, _) = run(&["logs", "--state", s(&state), "--json"]);
        assert_eq!(code, 0);
        let all: Vec<i64> = out
            .lines()
            .map(|l| json(l)["seq"].as_i64().unwrap())
            .collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "one order across runs: {all:?}"
        );
        assert!(out.contains("retry sweep"), "{out}");
        let (code, out, _) = run(&["logs", "--state", s(&state), "--level", "warn", "--json"]);
        assert_eq!(code, 0);
        let lines: Vec<serde_json::Value> = out.lines().map(json).collect();
        assert!(!lines.is_empty());
        assert!(
            lines
                .iter()
                .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
            "{out}"
        );
        let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");

        let status = status_json(&state);
        assert_eq!(
            status["errors"]["by_kind"]["permission_denied"], 1,
            "{status}"
        );
        let latest = &status["errors"]["recent"][0];
        assert_eq!(
            (latest["side"].as_str(), latest["phase"].as_str()),
            (Some("src"), Some("discovery"))
        );
        assert_eq!(latest["path"], "d1");
        let rounds = status["rounds"].as_array().unwrap();
        assert!(rounds.len() >= 2, "{status}");
        for key in [
            "pending_at_start",
            "folders",
            "folders_per_s",
            "nodes_per_s",
            "max_in_flight",
        ] {
            assert!(
                rounds.iter().all(|r| r["metrics"][key].is_number()),
                "{key}: {status}"
            );
        }
        // The latest source round 1 is the retry sweep's: d1 alone.
        let round1 = rounds
            .iter()
            .find(|r| r["side"] == "src" && r["depth"] == 1)
            .unwrap();
        assert_eq!(round1["metrics"]["pending_at_start"], 1, "{round1}");
        assert_eq!(round1["metrics"]["children"], 4, "{round1}");
        // Everything approved was copied: nothing left, whatever the rate.
        assert_eq!(status["estimate"]["files"], 0, "{status}");
    });
}

#[test]
fn the_udp_sink_sends_json_records_at_its_own_level() {
    util::on_every_store(|store| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let addr = receiver.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let extra = ["--log-udp", addr.as_str(), "--log-udp-level", "warn"];
        let state = store.state(dir.path(), "s");
        let Some(code) = migrate_with_a_locked_folder(dir.path(), &state, &extra) else {
            return;
        };
        assert_eq!(code, 4);
        let mut records = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = receiver.recv(&mut buf) {
            records.push(json(std::str::from_utf8(&buf[..n]).unwrap()));
        }
        assert!(
            records
                .iter()
                .any(|r| r["level"] == "WARN" && r["message"].as_str().unwrap().contains("d1")),
            "{records:?}"
        );
        assert!(
            records
                .iter()
                .all(|r| r["level"] == "WARN" || r["level"] == "ERROR"),
            "{records:?}"
        );

        // At info, the rounds are reported too.
        let src = dir.path().join("src");
        let (code, _, err) = run(&[
            "discover",
            s(&src),
            s(&dir.path().join("dst2")),
            "--state",
            s(&store.state(dir.path(), "t")),
            "--log-udp",
            &addr,
            "--log-udp-level",
            "info",
        ]);
        assert_eq!(code, 0, "{err}");
        let mut infos = 0;
        while let Ok(n) = receiver.recv(&mut buf) {
            infos += usize::from(json(std::str::from_utf8(&buf[..n]).unwrap())["level"] == "INFO");
        }
        assert!(infos > 0);
    });
}

#[test]
fn status_estimates_what_discovery_found_to_copy() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 2, 1, 3);
        let state = store.state(dir.path(), "s");
        let (code, out, err) = run(&[
            "discover",
            s(&src),
            s(&dir.path().join("dst")),
            "--state",
            s(&state),
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let found = json(&out);
        let status = status_json(&state);
        let estimate = &status["estimate"];
        assert_eq!(estimate["files"], found["to_copy"]["files"]);
        assert_eq!(estimate["bytes"], found["to_copy"]["bytes"]);
        assert_eq!(estimate["folders"], found["to_copy"]["folders"]);
        assert!(estimate["eta_s"].is_null(), "no copy has run: {estimate}");
        let (code, out, _) = run(&["status", "--state", s(&state)]);
        assert_eq!(code, 0);
        assert!(out.contains("no copy throughput measured yet"), "{out}");
    });
}

/// The state is one DuckDB file that a user can open with a released
/// DuckDB (the test venv's `duckdb` package, 1.4: the file is written in
/// its storage), and what it holds there is what treeshift reported.
#[test]
fn a_released_duckdb_opens_the_state_file() {
    let Some(python) = util::venv_program("python3") else {
        util::missing_prerequisite("the test venv (.ci/run makes it)");
        return;
    };
    let has_duckdb = std::process::Command::new(&python)
        .args(["-c", "import duckdb"])
        .status()
        .unwrap()
        .success();
    if !has_duckdb {
        util::missing_prerequisite("duckdb in the test venv (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("s.duckdb"),
    );
    make_tree(&src, 2, 2, 3);
    fs::create_dir_all(&dst).unwrap();
    let (code, out, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state), "--json"]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let query = "import duckdb, sys; \
                 c = duckdb.connect(sys.argv[1], read_only=True); \
                 n = c.execute('SELECT count(*) FROM src_nodes WHERE kind = 1').fetchone()[0]; \
                 print(duckdb.__version__, n)";
    let said = util::tool(s(&python), &["-c", query, s(&state)]).unwrap();
    let (version, files) = said.trim().split_once(' ').unwrap();
    assert!(version.starts_with("1.4."), "DuckDB {version}");
    assert_eq!(files, summary["src"]["files"].to_string());
}
