//! What a copy to or from remote storage will cost, shown by `status` and
//! `approve` before it runs, is the requests it then sends: counted by
//! the transport against each store's real server on 127.0.0.1, for a
//! first copy (folders, small and empty files, a file in several parts),
//! a second pass that replaces two files, and a copy back.

mod util;

use std::fs;
use std::path::Path;
use util::{run, s, set_mtime};

fn json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The requests `status` and `approve` say the copy will send to `side`,
/// which must agree; then those the copy sent.
fn estimated_then_sent(state: &Path, src: &str, dst: &str, side: &str) -> (u64, u64) {
    let (code, _, err) = run(&["discover", src, dst, "--state", s(state)]);
    assert_eq!(code, 0, "{err}");
    let total = |cost: &serde_json::Value| -> u64 {
        let requests = cost[side].as_object().unwrap_or_else(|| panic!("{cost}"));
        requests.values().map(|n| n.as_u64().unwrap()).sum()
    };
    let status = json(&["status", "--state", s(state), "--json"]);
    let estimated = total(&status["cost"]);
    let approved = json(&["approve", "--state", s(state), "--json"]);
    assert_eq!(total(&approved["cost"]), estimated, "{approved}");
    let copied = json(&["copy", "--state", s(state), "--json"]);
    let requests = &copied["calls"][side]["requests"];
    assert_eq!(
        requests["retried"], 0,
        "a retry is not in the estimate: {copied}"
    );
    (estimated, requests["sent"].as_u64().unwrap())
}

fn cost_is_what_is_sent(location: &str, dir: &Path) {
    let src = dir.join("src");
    for folder in ["a/b", "empty", "c"] {
        fs::create_dir_all(src.join(folder)).unwrap();
    }
    for (i, name) in ["a/f1", "a/f2", "c/g1", "c/g2"].iter().enumerate() {
        fs::write(src.join(name), format!("file {i}")).unwrap();
    }
    fs::write(src.join("zero"), b"").unwrap();
    // Past one 8 MiB part: a multipart upload where the store has them.
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 247) as u8).collect();
    fs::write(src.join("a/b/big"), big).unwrap();
    let state = dir.join("s.duckdb");

    let (estimated, sent) = estimated_then_sent(&state, s(&src), location, "dst");
    assert_eq!(sent, estimated, "{location}: the first copy");
    assert!(sent > 6, "{sent}");

    // A file rewritten, another only touched: both replaced.
    fs::write(src.join("a/f1"), b"rewritten").unwrap();
    set_mtime(&src.join("c/g1"), 1_700_000_000);
    let (estimated, sent) = estimated_then_sent(&state, s(&src), location, "dst");
    assert_eq!(sent, estimated, "{location}: the second pass");

    let (back, back_state) = (dir.join("back"), dir.join("back.duckdb"));
    let (estimated, sent) = estimated_then_sent(&back_state, location, s(&back), "src");
    assert_eq!(sent, estimated, "{location}: the copy back");
}

#[test]
fn the_cost_of_a_copy_with_s3_is_the_requests_it_sends() {
    let Some(server) = util::s3_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    cost_is_what_is_sent(&server.s3("cost"), dir.path());
}

/// A part size given with the location is the one uploads are sent in,
/// and the one the estimate counts.
#[test]
fn a_part_size_given_is_what_uploads_and_the_estimate_use() {
    let Some(server) = util::s3_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Two parts of the default 8 MiB, three of 5 MiB.
    let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 241) as u8).collect();
    fs::write(src.join("big"), &data).unwrap();
    let location = server.s3("parts") + "&part_size=5M";
    let state = dir.path().join("s.duckdb");
    let (code, _, err) = run(&["discover", s(&src), &location, "--state", s(&state)]);
    assert_eq!(code, 0, "{err}");
    let status = json(&["status", "--state", s(&state), "--json"]);
    assert_eq!(status["cost"]["dst"]["parts"], 3, "{status}");
    let (estimated, sent) = estimated_then_sent(&state, s(&src), &location, "dst");
    assert_eq!(sent, estimated);
    if let Some(differences) = server.rclone_differences(&src, "parts") {
        assert!(differences.is_empty(), "{differences:#?}");
    }
}

#[test]
fn the_cost_of_a_copy_with_azure_is_the_requests_it_sends() {
    let Some(server) = util::azure_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    cost_is_what_is_sent(&server.azblob("cost"), dir.path());
}

#[test]
fn the_cost_of_a_copy_with_gcs_is_the_requests_it_sends() {
    let Some(server) = util::gcs_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    cost_is_what_is_sent(&server.gcs("cost"), dir.path());
}

#[test]
fn the_cost_of_a_copy_with_webdav_is_the_requests_it_sends() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = util::webdav_server(&dir.path().join("served")) else {
        return;
    };
    cost_is_what_is_sent(&server.webdav("cost"), dir.path());
}

#[test]
fn a_local_copy_shows_no_remote_cost() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    let state = dir.path().join("s.duckdb");
    let (code, _, err) = run(&[
        "discover",
        s(&src),
        s(&dir.path().join("dst")),
        "--state",
        s(&state),
    ]);
    assert_eq!(code, 0, "{err}");
    let status = json(&["status", "--state", s(&state), "--json"]);
    assert!(status["cost"].is_null(), "{status}");
    let (_, text, _) = run(&["status", "--state", s(&state)]);
    assert!(!text.contains("cost of the copy"), "{text}");
}
