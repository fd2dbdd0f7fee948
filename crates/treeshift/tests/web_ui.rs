//! The web UI in a real browser: headless Chromium, driven by Playwright
//! (`web_ui/drive.cjs`), against the real binary's `treeshift serve`. The
//! browser creates a migration, discovers it, opens a folder from the
//! treemap by keyboard, searches, approves the plan it shows, copies and
//! verifies; the page has no errors, every control a label, and nothing
//! wider than a phone. This test then checks what the clicks did through
//! the API and with rsync.

mod util;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use util::api::ApiServer;
use util::{make_tree, missing_prerequisite, s, tool};

/// Chromium, Node.js and playwright-core, or `None` after reporting the
/// missing one (a failure under CI).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("TREESHIFT_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let npm = std::env::var_os("TREESHIFT_TEST_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treeshift-npm"));
    let playwright = npm.join("node_modules/playwright-core");
    let node = Command::new("node").arg("--version").output().is_ok();
    if !chromium.exists() || !playwright.exists() || !node {
        missing_prerequisite(
            "chromium, node and playwright-core (.ci/run installs them with apt and npm)",
        );
        return None;
    }
    Some((chromium, playwright))
}

fn drive(args: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web_ui/drive.cjs");
    let out = Command::new("node")
        .arg(script)
        .arg(args.to_string())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("the script's JSON line")
}

#[test]
fn a_migration_runs_end_to_end_in_the_browser() {
    let Some((chromium, playwright)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, states, shots) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("states"),
        dir.path().join("shots"),
    );
    make_tree(&src, 3, 2, 6);
    std::fs::write(src.join("d1/left-out.skip"), b"excluded").unwrap();
    std::fs::create_dir_all(&states).unwrap();
    std::fs::create_dir_all(&shots).unwrap();
    let server = ApiServer::start(&states, &[], None);
    let token = "a-token-for-the-browser";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let token_states = dir.path().join("token-states");
    std::fs::create_dir_all(&token_states).unwrap();
    let guarded = ApiServer::start(
        &token_states,
        &["--token-file", s(&token_file)],
        Some(token),
    );

    let seen = drive(&json!({
        "playwright": playwright,
        "chromium": chromium,
        "url": format!("http://127.0.0.1:{}", server.port),
        "token_url": format!("http://127.0.0.1:{}", guarded.port),
        "token": token,
        "name": "web",
        "src": s(&src),
        "dst": s(&dst),
        "search": "f002",
        "shots": s(&shots),
    }));

    // The treemap showed the three top folders; Enter opened one of them.
    assert_eq!(seen["treemap_folders"], 3, "{seen}");
    assert!(
        ["d0", "d1", "d2"].contains(&seen["opened"].as_str().unwrap()),
        "{seen}"
    );
    // The search found f002.txt in each of the 13 folders.
    let paths = seen["search_paths"].as_array().unwrap();
    assert_eq!(paths.len(), 13, "{seen}");
    assert!(
        paths
            .iter()
            .all(|p| p.as_str().unwrap().ends_with("f002.txt"))
    );
    assert_eq!(seen["token_ok"], true);

    // What the clicks did, through the API: the exclusion typed in the
    // form, the approval of the plan the page showed, a full copy, a clean
    // verify with content compared.
    let status = server.get("/api/migrations/web");
    assert_eq!(status["excluded"], 1, "{status}");
    assert_eq!(
        status["approval"]["plan_hash"], seen["plan_hash"],
        "{status}"
    );
    assert_eq!(status["approval"]["approved_by"], "web-test", "{status}");
    assert_eq!(
        status["copy"]["copied"], status["copy"]["planned"],
        "{status}"
    );
    assert_eq!(status["copy"]["failed"], 0, "{status}");
    assert_eq!(status["verify"]["checksum"], true, "{status}");
    assert_eq!(status["verify"]["mismatch"], 0, "{status}");
    assert_eq!(
        seen["plan_files"],
        status["src"]["files"]
            .as_u64()
            .map(|n| (n - 1).to_string())
            .unwrap()
    );
    assert_eq!(seen["mismatch"], "0");
    // And by a tool nobody here wrote: the destination is the source,
    // but for the excluded file.
    let Some(differences) = tool(
        "rsync",
        &[
            "-a",
            "-c",
            "-n",
            "-i",
            "--delete",
            "--exclude=*.skip",
            &format!("{}/", s(&src)),
            &format!("{}/", s(&dst)),
        ],
    ) else {
        return;
    };
    assert_eq!(differences.trim(), "", "rsync would still change these");
    assert!(!dst.join("d1/left-out.skip").exists());
    for shot in ["overview", "explore", "approve", "copy", "phone"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}
