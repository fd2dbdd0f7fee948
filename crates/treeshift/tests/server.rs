//! The HTTP API end to end, against the real binary (`treeshift serve`)
//! on a free loopback port: create, discover, review page by page,
//! approve exactly the plan shown, copy, verify; two migrations at once;
//! progress as server-sent events; a server killed mid-discovery and
//! started again shows the run as interrupted and resumes it to the same
//! result; and each guard (loopback without a token, the token, names
//! that would be paths, a symlinked state file, body size, JSON errors).

mod util;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use util::api::ApiServer;
use util::{Store, command, on_every_store, run, s};

fn create(server: &ApiServer, name: &str, src: &str, dst: &Path) {
    let (code, v) = server.post(
        "/api/migrations",
        json!({ "name": name, "src": src, "dst": s(dst) }),
    );
    assert_eq!(code, 201, "{v}");
}

/// Creates migration `name` with its state on `store`: the server's own
/// file, or a database of `store`'s.
fn create_on(server: &ApiServer, store: &Store, dir: &Path, name: &str, src: &str, dst: &Path) {
    let mut body = json!({ "name": name, "src": src, "dst": s(dst) });
    if let Store::Postgres(_) = store {
        body["state"] = json!(s(&store.state(dir, name)));
    }
    let (code, v) = server.post("/api/migrations", body);
    assert_eq!(code, 201, "{v}");
}

#[test]
fn a_migration_runs_end_to_end_through_the_api_two_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    std::fs::create_dir(&states).unwrap();
    let server = ApiServer::start(&states, &[], None);
    let (dst_a, dst_b) = (dir.path().join("a"), dir.path().join("b"));
    let src_a = "sim:seed=3,depth=2,fanout=3,files=20";
    create(&server, "a", src_a, &dst_a);
    create(
        &server,
        "b",
        "sim:seed=4,depth=3,fanout=3,files=5,latency_us=2000",
        &dst_b,
    );
    let (code, v) = server.post(
        "/api/migrations",
        json!({ "name": "a", "src": src_a, "dst": s(&dst_a) }),
    );
    assert_eq!(code, 409, "{v}");

    // Both discover at once.
    for name in ["a", "b"] {
        let (code, v) = server.post(&format!("/api/migrations/{name}/jobs/discover"), json!({}));
        assert_eq!(code, 202, "{v}");
    }
    let (code, v) = server.post("/api/migrations/b/jobs/copy", json!({}));
    assert_eq!(code, 409, "a second job while one runs: {v}");
    let a = server.wait_job("a");
    let b = server.wait_job("b");
    for status in [&a, &b] {
        assert_eq!(status["job"]["outcome"]["state"], "done", "{status}");
        assert_eq!(status["phase"], "discovered", "{status}");
        assert_eq!(status["failed"], 0);
    }
    // The job's counts over time: taken at its start and at its end, the
    // last one what the job counted in all.
    // Every node under the root was found once by the job's count.
    let src = &a["src"];
    let nodes: u64 = ["folders", "files", "symlinks", "special"]
        .iter()
        .map(|k| src[k].as_u64().unwrap())
        .sum();
    assert_eq!(a["job"]["progress"]["src_nodes_found"], nodes, "{a}");
    let history = server.get("/api/migrations/a/history");
    assert_eq!(history["op"], "discover", "{history}");
    let samples = history["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{history}");
    assert_eq!(samples[0]["src_folders_listed"], 0, "{history}");
    assert_eq!(
        samples.last().unwrap()["src_folders_listed"],
        a["job"]["progress"]["src_folders_listed"],
        "{history}"
    );
    let (code, v) = server.call("GET", "/api/migrations/nothing-ran/history", None);
    assert_eq!(code, 404, "{v}");
    let listed = server.get("/api/migrations");
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // Review, page by page: every missing item once, in order.
    let missing = a["missing"].as_u64().unwrap();
    let mut paths: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let cursor = after
            .as_deref()
            .map_or(String::new(), |c| format!("&after={c}"));
        let page = server.get(&format!(
            "/api/migrations/a/review?status=missing&limit=7{cursor}"
        ));
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            paths.push(item["path"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(paths.len() as u64, missing);
    assert!(pages as u64 >= missing / 7, "{pages} pages");
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), paths.len(), "an item on two pages");
    let under = server.get("/api/migrations/a/review?status=missing&prefix=d00&limit=5000");
    let under: Vec<&str> = under["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(
        !under.is_empty() && under.iter().all(|p| *p == "d00" || p.starts_with("d00/")),
        "{under:?}"
    );

    // Narrowed by size and by a name, and browsed by folder: each
    // top folder's missing bytes below it add up to all that is missing.
    let big = server.get("/api/migrations/a/review?status=missing&min_size=4000&limit=5000");
    let big = big["items"].as_array().unwrap();
    assert!(!big.is_empty() && big.iter().all(|i| i["size"].as_u64().unwrap() >= 4000));
    let named = server.get("/api/migrations/a/review?status=missing&search=F0001&limit=5000");
    let named = named["items"].as_array().unwrap();
    assert!(!named.is_empty(), "search is case-blind");
    assert!(
        named
            .iter()
            .all(|i| i["path"].as_str().unwrap().contains("f0001"))
    );
    let root = server.get("/api/migrations/a/browse");
    let children = root["children"].as_array().unwrap();
    assert_eq!(children.len(), 3 + 20, "{root}");
    let below_missing: u64 = children
        .iter()
        .flat_map(|c| c["below"].as_array().unwrap())
        .filter(|b| b["status"] == "missing")
        .map(|b| b["bytes"].as_u64().unwrap())
        .sum();
    let own_files: u64 = children
        .iter()
        .filter(|c| c["kind"] == "file")
        .map(|c| c["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        below_missing + own_files,
        a["to_copy"]["bytes"].as_u64().unwrap()
    );
    let page = server.get("/api/migrations/a/browse?path=d00&limit=4");
    let next = page["next"].as_str().unwrap().to_string();
    let rest = server.get(&format!(
        "/api/migrations/a/browse?path=d00&after={next}&limit=100"
    ));
    let count = |v: &Value| v["children"].as_array().unwrap().len();
    assert_eq!(count(&page) + count(&rest), 3 + 20, "{page} {rest}");

    // Approval names the plan it approves.
    let plan = server.get("/api/migrations/a/plan?policy=skip");
    let hash = plan["plan_hash"].as_str().unwrap().to_string();
    // Every missing item, and the destination's root (it does not exist).
    let items = plan["items"].as_u64().unwrap();
    assert_eq!(items, missing + 1, "{plan}");
    let (code, v) = server.post(
        "/api/migrations/a/approve",
        json!({ "policy": "skip", "plan_hash": "0123" }),
    );
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("0123"), "{v}");
    let (code, v) = server.post(
        "/api/migrations/a/approve",
        json!({ "policy": "skip", "plan_hash": hash }),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["plan_hash"], hash.as_str());

    let copied = server.job("a", "copy", json!({ "workers": 4 }));
    assert_eq!(copied["copy"]["failed"], 0, "{copied}");
    assert_eq!(copied["copy"]["copied"], items);
    let verified = server.job("a", "verify", json!({ "checksum": true }));
    assert_eq!(verified["verify"]["verified"], items, "{verified}");
    assert_eq!(verified["verify"]["mismatch"], 0);
    assert_eq!(verified["phase"], "verified");

    // Progress as events: a finished job says so at once.
    let (code, events) = server.call("GET", "/api/migrations/a/events", None);
    assert_eq!(code, 200);
    let events = events.as_str().unwrap_or_default().to_string();
    assert!(
        events.contains("event: done") && events.contains("\"verify\""),
        "{events}"
    );
    // The log records as events: the stream stays open for new ones, so
    // read what is there and hang up.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"GET /api/migrations/a/logs/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        // The engine's records reach the table through the log layer, up
        // to a second after the server's own: wait for both kinds.
        let text = String::from_utf8_lossy(&seen);
        if text.contains("verify job done") && text.contains("plan approved by=api") {
            break;
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains("event: log") && seen.contains("plan approved by=api"),
        "{seen}"
    );
    assert!(seen.contains("verify job done"), "{seen}");
    let logs = server.get("/api/migrations/a/logs?limit=1000");
    assert!(
        logs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("plan approved")),
        "{logs}"
    );
    // The engine's own records are each migration's, though both ran at
    // once: one "round sealed" per round each sealed, none of the other's.
    for name in ["a", "b"] {
        let status = server.get(&format!("/api/migrations/{name}"));
        let rounds = status["src_rounds"]["sealed"].as_u64().unwrap()
            + status["dst_rounds"]["sealed"].as_u64().unwrap();
        let logs = server.get(&format!("/api/migrations/{name}/logs?limit=5000"));
        let sealed = logs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["message"].as_str().unwrap().starts_with("round sealed"))
            .count() as u64;
        assert_eq!(sealed, rounds, "{name}: {logs}");
    }
}

#[test]
fn a_server_killed_mid_discovery_shows_it_interrupted_and_resumes_it() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let states = dir.path().join("states");
        std::fs::create_dir(&states).unwrap();
        let src = "sim:seed=9,depth=3,fanout=4,files=8,latency_us=15000";
        let dst = dir.path().join("dst");
        // The reference: the same discovery by the CLI, uninterrupted.
        let reference = store.state(dir.path(), "ref");
        let (code, out, err) = run(&["discover", src, s(&dst), "--state", s(&reference), "--json"]);
        assert_eq!(code, 0, "{err}");
        let want: Value = serde_json::from_str(&out).unwrap();

        let mut server = ApiServer::start(&states, &[], None);
        create_on(&server, store, dir.path(), "k", src, &dst);
        let (code, v) = server.post("/api/migrations/k/jobs/discover", json!({ "workers": 2 }));
        assert_eq!(code, 202, "{v}");
        // Events while it runs, then a kill -9 once some folders are listed.
        let start = Instant::now();
        loop {
            let status = server.get("/api/migrations/k");
            if status["job"]["progress"]["src_folders_listed"]
                .as_u64()
                .unwrap()
                >= 5
            {
                break;
            }
            assert!(
                status["job"]["running"] == true,
                "finished before the kill: {status}"
            );
            assert!(start.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(10));
        }
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        drop(server);

        let server = ApiServer::start(&states, &[], None);
        let status = server.get("/api/migrations/k");
        assert_eq!(status["interrupted"], true, "{status}");
        assert_eq!(status["phase"], "discovering");
        let listed = server.get("/api/migrations");
        assert_eq!(listed[0]["interrupted"], true, "{listed}");
        // Stopped on request, then started again.
        let (code, v) = server.post("/api/migrations/k/jobs/discover", json!({ "workers": 2 }));
        assert_eq!(code, 202, "{v}");
        let (code, v) = server.post("/api/migrations/k/stop", json!({}));
        assert_eq!(code, 202, "{v}");
        let stopped = server.wait_job("k");
        assert_eq!(stopped["job"]["outcome"]["state"], "stopped", "{stopped}");
        let (code, v) = server.post("/api/migrations/k/jobs/discover", json!({ "workers": 2 }));
        assert_eq!(code, 202, "{v}");
        // Its progress as events, until it ends.
        let (code, events) = server.call("GET", "/api/migrations/k/events", None);
        assert_eq!(code, 200);
        let events = events.as_str().unwrap_or_default().to_string();
        assert!(events.contains("event: progress"), "{events}");
        assert!(events.contains("event: done"), "{events}");
        let done = server.wait_job("k");
        assert_eq!(done["job"]["outcome"]["state"], "done", "{done}");
        for key in [
            "missing", "same", "differs", "extra", "failed", "src", "dst", "to_copy",
        ] {
            assert_eq!(done[key], want[key], "{key}: {done}");
        }
    });
}

#[test]
fn the_guards_hold() {
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    std::fs::create_dir(&states).unwrap();

    // Anything but loopback needs a token.
    let out = command()
        .args(["serve", "--dir", s(&states), "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));

    let token = "t0ken-of-the-test-0123456789";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let server = ApiServer::start(&states, &["--token-file", s(&token_file)], Some(token));
    let (code, v) = server.raw("GET", "/api/migrations", b"", None);
    assert_eq!(code, 401, "{v}");
    assert!(v["error"].is_string(), "errors are JSON: {v}");
    let (code, _) = server.raw(
        "GET",
        "/api/migrations",
        b"",
        Some("t0ken-of-the-test-0123456788"),
    );
    assert_eq!(code, 401);
    assert_eq!(server.get("/api/migrations"), json!([]));

    // A name is one plain file name, never a path.
    let outside: PathBuf = dir.path().join("outside.duckdb");
    std::fs::write(&outside, b"not a state file").unwrap();
    for path in [
        "/api/migrations/..%2Foutside",
        "/api/migrations/%2Fetc%2Fpasswd",
        "/api/migrations/.hidden",
        "/api/migrations/a%00b",
        "/api/migrations/..",
    ] {
        let (code, v) = server.call("GET", path, None);
        assert!(code == 400 || code == 404, "{path}: {code} {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (code, v) = server.post(
        "/api/migrations",
        json!({ "name": "../x", "src": "sim:seed=1", "dst": s(&dir.path().join("d")) }),
    );
    assert_eq!(code, 400, "{v}");
    assert!(!dir.path().join("x.duckdb").exists());
    // A symlinked state file is not followed.
    std::os::unix::fs::symlink(&outside, states.join("evil.duckdb")).unwrap();
    let (code, v) = server.call("GET", "/api/migrations/evil", None);
    assert_eq!(code, 403, "{v}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"not a state file");
    // Bodies are limited; unknown fields and routes are refused, as JSON.
    let big = vec![b' '; 100 * 1024];
    let (code, _) = server.raw("POST", "/api/migrations", &big, Some(token));
    assert_eq!(code, 413);
    let (code, v) = server.post(
        "/api/migrations",
        json!({ "name": "y", "src": "a", "dst": "b", "nope": 1 }),
    );
    assert_eq!(code, 422, "{v}");
    let (code, v) = server.call("GET", "/api/nothing", None);
    assert_eq!(code, 404);
    assert!(v["error"].is_string(), "{v}");
    let (code, v) = server.call("GET", "/api/migrations/none", None);
    assert_eq!(code, 404, "{v}");
    let (_, v) = server.call("GET", "/api/migrations", None);
    assert!(!v.to_string().contains("access-control"), "no CORS");
}

#[test]
fn sealed_secrets_from_the_environment_or_the_request_need_the_key_alone() {
    let Some(s3) = util::s3_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    std::fs::create_dir(&states).unwrap();
    let src = dir.path().join("src");
    util::make_tree(&src, 2, 1, 3);
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let secret = "tsServerSecret0123";
    // The first server has the keys in its environment, and a master key.
    let mut first = command();
    first
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("TREESHIFT_MASTER_KEY", key);
    let server = ApiServer::start_by(first, &states, &[], None);
    let dst = s3.s3("sealed-by-server");
    let (code, v) = server.post(
        "/api/migrations",
        json!({ "name": "s3", "src": s(&src), "dst": dst }),
    );
    assert_eq!(code, 201, "{v}");
    drop(server);
    let state = std::fs::read(states.join("s3.duckdb")).unwrap();
    assert!(!state.windows(secret.len()).any(|w| w == secret.as_bytes()));

    // The next has the master key and nothing else.
    let bare = util::bare(dir.path(), &[("TREESHIFT_MASTER_KEY", key)]);
    let server = ApiServer::start_by(bare, &states, &[], None);
    let discovered = server.job("s3", "discover", json!({}));
    assert_eq!(discovered["failed"], 0, "{discovered}");
    let plan = server.get("/api/migrations/s3/plan?policy=skip");
    let (code, v) = server.post(
        "/api/migrations/s3/approve",
        json!({ "policy": "skip", "plan_hash": plan["plan_hash"] }),
    );
    assert_eq!(code, 200, "{v}");
    let copied = server.job("s3", "copy", json!({}));
    assert_eq!(copied["copy"]["failed"], 0, "{copied}");
    assert_eq!(
        s3.rclone_differences(&src, "sealed-by-server"),
        Some(vec![])
    );

    // Secrets given in the request, to this server with the key alone:
    // a name the service does not take is refused; the others are sealed
    // and used, and never stored in clear.
    let given = "tsGivenInTheRequest789";
    let create = |name: &str, secrets: Value| {
        server.post(
            "/api/migrations",
            json!({ "name": name, "src": s(&src), "dst": s3.s3(name), "secrets": { "dst": secrets } }),
        )
    };
    let (code, v) = create("wrong", json!({ "NOT_AN_AWS_NAME": "x" }));
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("NOT_AN_AWS_NAME is not a secret"),
        "{v}"
    );
    let (code, v) = create(
        "given",
        json!({ "AWS_ACCESS_KEY_ID": "tsGivenKeyId", "AWS_SECRET_ACCESS_KEY": given }),
    );
    assert_eq!(code, 201, "{v}");
    server.job("given", "discover", json!({}));
    let plan = server.get("/api/migrations/given/plan");
    let (code, v) = server.post(
        "/api/migrations/given/approve",
        json!({ "plan_hash": plan["plan_hash"] }),
    );
    assert_eq!(code, 200, "{v}");
    let copied = server.job("given", "copy", json!({}));
    assert_eq!(copied["copy"]["failed"], 0, "{copied}");
    assert_eq!(s3.rclone_differences(&src, "given"), Some(vec![]));
    drop(server);
    let state = std::fs::read(states.join("given.duckdb")).unwrap();
    assert!(!state.windows(given.len()).any(|w| w == given.as_bytes()));

    // A server with no key refuses secrets in a request: it could not
    // keep them.
    let keyless = ApiServer::start_by(util::bare(dir.path(), &[]), &states, &[], None);
    let (code, v) = keyless.post(
        "/api/migrations",
        json!({ "name": "keyless", "src": s(&src), "dst": s3.s3("keyless"),
                "secrets": { "dst": { "AWS_SECRET_ACCESS_KEY": given } } }),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no key"), "{v}");
    assert!(!states.join("keyless.duckdb").exists());
}

/// Validates each answer against the named schema of the API's own
/// description (`tests/openapi/validate.py`, jsonschema in the test venv).
fn validate_against_openapi(spec: &Value, checks: Vec<(&str, Value)>) {
    let Some(python) = util::venv_program("python3") else {
        util::missing_prerequisite("the test venv (.ci/run makes it)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/validate.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({ "spec": spec, "checks": checks });
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "answers that do not match the description:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_openapi_description_matches_what_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, states) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("states"),
    );
    util::make_tree(&src, 2, 2, 3);
    std::fs::create_dir_all(&states).unwrap();
    let server = ApiServer::start(&states, &[], None);
    let spec = server.get("/api/openapi.json");
    assert_eq!(spec["openapi"], "3.1.0", "{spec}");
    // Every route is described, and nothing else.
    let mut paths: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/api/migrations",
            "/api/migrations/{name}",
            "/api/migrations/{name}/approve",
            "/api/migrations/{name}/browse",
            "/api/migrations/{name}/events",
            "/api/migrations/{name}/history",
            "/api/migrations/{name}/jobs/{op}",
            "/api/migrations/{name}/logs",
            "/api/migrations/{name}/logs/events",
            "/api/migrations/{name}/plan",
            "/api/migrations/{name}/review",
            "/api/migrations/{name}/stop",
            "/api/openapi.json",
        ]
    );

    let (code, created) = server.post(
        "/api/migrations",
        json!({ "name": "m", "src": s(&src), "dst": s(&dst), "filter": { "excludes": ["*.none"] } }),
    );
    assert_eq!(code, 201, "{created}");
    let (code, started) = server.post("/api/migrations/m/jobs/discover", json!({ "workers": 2 }));
    assert_eq!(code, 202, "{started}");
    let discovered = server.wait_job("m");
    let plan = server.get("/api/migrations/m/plan?policy=overwrite");
    let review = server.get("/api/migrations/m/review?status=missing&limit=3");
    let browse = server.get("/api/migrations/m/browse?path=d0");
    let (code, approved) = server.post(
        "/api/migrations/m/approve",
        json!({ "policy": "overwrite", "plan_hash": plan["plan_hash"] }),
    );
    assert_eq!(code, 200, "{approved}");
    let copied = server.job("m", "copy", json!({}));
    let (code, not_found) = server.call("GET", "/api/migrations/none", None);
    assert_eq!(code, 404, "{not_found}");
    validate_against_openapi(
        &spec,
        vec![
            ("Created", created),
            ("JobView", started),
            ("StatusView", discovered),
            ("PlanPreview", plan),
            ("ReviewPage", review),
            ("BrowsePage", browse),
            ("ApprovalReport", approved),
            ("StatusView", copied),
            ("JobHistory", server.get("/api/migrations/m/history")),
            ("LogsPage", server.get("/api/migrations/m/logs")),
            ("ErrorBody", not_found),
        ],
    );
    // A list is an array of Listed.
    let list = server.get("/api/migrations");
    validate_against_openapi(
        &spec,
        list.as_array()
            .unwrap()
            .iter()
            .map(|l| ("Listed", l.clone()))
            .collect(),
    );
}

#[test]
fn an_idle_migration_is_closed_so_the_cli_can_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    std::fs::create_dir(&states).unwrap();
    let src = "sim:seed=5,depth=2,fanout=2,files=3";
    // A server that keeps files open while in use: the CLI is refused.
    let keeping = ApiServer::start(&states, &[], None);
    create(&keeping, "kept", src, &dir.path().join("kept"));
    keeping.job("kept", "discover", json!({}));
    let (code, _, err) = run(&["status", "--state", s(&states.join("kept.duckdb"))]);
    assert_ne!(code, 0, "the server holds the file: {err}");
    assert!(err.contains("is using it"), "{err}");
    drop(keeping);

    // One that closes them after a second unused.
    let server = ApiServer::start(&states, &["--idle-close", "1"], None);
    create(&server, "m", src, &dir.path().join("m"));
    let discovered = server.job("m", "discover", json!({}));
    let start = Instant::now();
    loop {
        let (code, out, err) = run(&["status", "--state", s(&states.join("m.duckdb")), "--json"]);
        if code == 0 {
            let cli: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(cli["missing"], discovered["missing"], "{out}");
            break;
        }
        assert!(err.contains("is using it"), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never closed: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The next request opens it again.
    let again = server.get("/api/migrations/m");
    assert_eq!(again["missing"], discovered["missing"], "{again}");
}

#[test]
fn review_pages_of_each_status_are_exactly_the_review() {
    // A destination with each status in it: files missing (a deleted
    // folder), differing (rewritten), extra; the rest the same.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, states) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("states"),
    );
    util::make_tree(&src, 3, 3, 4);
    util::copy_tree(&src, &dst);
    std::fs::remove_dir_all(dst.join("d1/d2")).unwrap();
    for rewritten in ["d0/f001.txt", "d2/d0/d1/f003.txt", "f000.txt"] {
        std::fs::write(dst.join(rewritten), b"another content, longer").unwrap();
    }
    std::fs::write(dst.join("d2/extra.txt"), b"only here").unwrap();
    std::fs::create_dir_all(&states).unwrap();
    let server = ApiServer::start(&states, &[], None);
    create(&server, "m", s(&src), &dst);
    server.job("m", "discover", json!({}));
    let state = states.join("m.duckdb");
    let statuses = ["missing", "differs", "same", "extra"];
    let mut paged = Vec::new();
    for status in statuses {
        // Pages of 3: the first windows hold few or none of a sparse
        // status, so a page also takes its rest from the full query.
        let mut paths = Vec::new();
        let mut cursor = String::new();
        for pages in 0.. {
            // Far more pages than the tree's nodes need: a cursor that
            // does not move on.
            assert!(
                pages < 200,
                "{status}: paging never ends ({} rows)",
                paths.len()
            );
            let page = server.get(&format!(
                "/api/migrations/m/review?status={status}&limit=3{cursor}"
            ));
            for item in page["items"].as_array().unwrap() {
                assert_eq!(item["status"], status, "{page}");
                paths.push(item["path"].as_str().unwrap().to_string());
            }
            match page["next"].as_str() {
                Some(next) => cursor = format!("&after={next}"),
                None => break,
            }
        }
        assert!(!paths.is_empty(), "{status}: nothing paged");
        paged.push(paths);
    }
    // The CLI's review, by its own query, once the server has let go.
    drop(server);
    for (status, paths) in statuses.iter().zip(paged) {
        let (code, out, err) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            status,
            "--format",
            "csv",
        ]);
        assert_eq!(code, 0, "{err}");
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = header.iter().position(|h| *h == "path").unwrap();
        let listed: Vec<String> = lines
            .map(|l| l.split(',').nth(at).unwrap().to_string())
            .collect();
        assert_eq!(paths, listed, "{status}");
    }
}
