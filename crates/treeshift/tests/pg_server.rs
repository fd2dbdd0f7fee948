//! The HTTP API with a migration's state in PostgreSQL, against the real
//! binary (`treeshift serve`): a migration created with a database for
//! its state runs through the API as one with a state file beside it
//! (the same statuses, review pages, browsing, plan, copy and
//! verification), is found again by a restarted server, and a state
//! that is not a database, or one out of reach, is refused and leaves
//! nothing behind.

mod util;

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use util::api::ApiServer;
use util::cluster::Cluster;
use util::{s, snapshot};

const SRC: &str = "sim:seed=5,depth=2,fanout=3,files=12";

/// Every page of `query` on `name`'s review, seven items at a time.
fn review_pages(server: &ApiServer, name: &str, query: &str) -> Vec<Value> {
    let (mut items, mut after) = (Vec::new(), String::new());
    loop {
        let page = server.get(&format!(
            "/api/migrations/{name}/review?{query}&limit=7{after}"
        ));
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return items,
        }
    }
}

/// A status without what differs between two migrations by nature: the
/// destination's location, timings and the approval's time.
fn comparable(mut status: Value) -> Value {
    let fields = status.as_object_mut().unwrap();
    for key in ["dst_location", "rounds", "job", "approval"] {
        fields.remove(key);
    }
    status
}

#[test]
fn a_migration_with_its_state_in_postgresql_runs_through_the_api_as_one_on_a_file() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    std::fs::create_dir(&states).unwrap();
    let (dst_pg, dst_file) = (dir.path().join("pg"), dir.path().join("file"));
    let url = cluster.database("served");
    let mut server = ApiServer::start(&states, &[], None);
    for (name, dst, state) in [("pg", &dst_pg, Some(&url)), ("file", &dst_file, None)] {
        let mut body = json!({ "name": name, "src": SRC, "dst": s(dst) });
        if let Some(url) = state {
            body["state"] = json!(url);
        }
        let (code, v) = server.post("/api/migrations", body);
        assert_eq!(code, 201, "{v}");
    }
    // The database is named by a file only the server's user reads.
    let named = std::fs::metadata(states.join("pg.postgres")).unwrap();
    assert_eq!(named.permissions().mode() & 0o777, 0o600);
    assert!(!states.join("pg.duckdb").exists());

    for name in ["pg", "file"] {
        server.job(name, "discover", json!({}));
    }
    let status = |server: &ApiServer, name: &str| server.get(&format!("/api/migrations/{name}"));
    let on_pg = status(&server, "pg");
    assert_eq!(on_pg["phase"], "discovered", "{on_pg}");
    assert_eq!(comparable(on_pg), comparable(status(&server, "file")));
    for query in [
        "status=missing",
        "status=missing&search=F0001",
        "status=all&prefix=d01",
    ] {
        let pages = review_pages(&server, "pg", query);
        assert!(!pages.is_empty(), "{query}");
        assert_eq!(pages, review_pages(&server, "file", query), "{query}");
    }
    for folder in ["", "?path=d01", "?path=d01&limit=2"] {
        assert_eq!(
            server.get(&format!("/api/migrations/pg/browse{folder}")),
            server.get(&format!("/api/migrations/file/browse{folder}")),
            "{folder}"
        );
    }

    // A restarted server finds it again by its file.
    drop(server);
    server = ApiServer::start(&states, &[], None);
    let listed = server.get("/api/migrations");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["file", "pg"], "{listed}");

    // Approval names the plan; copy and verify as on the file.
    for name in ["pg", "file"] {
        let plan = server.get(&format!("/api/migrations/{name}/plan?policy=skip"));
        let (code, v) = server.post(
            &format!("/api/migrations/{name}/approve"),
            json!({ "policy": "skip", "plan_hash": plan["plan_hash"] }),
        );
        assert_eq!(code, 200, "{v}");
        let copied = server.job(name, "copy", json!({ "workers": 4 }));
        assert_eq!(copied["copy"]["failed"], 0, "{copied}");
        let verified = server.job(name, "verify", json!({ "checksum": true }));
        assert_eq!(verified["phase"], "verified", "{verified}");
    }
    assert_eq!(
        comparable(status(&server, "pg")),
        comparable(status(&server, "file"))
    );
    assert_eq!(snapshot(&dst_pg), snapshot(&dst_file));
}

#[test]
fn a_state_that_is_not_a_reachable_database_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    std::fs::create_dir(&states).unwrap();
    let server = ApiServer::start(&states, &[], None);
    let dst = dir.path().join("dst");
    let create = |name: &str, state: &str| {
        server.post(
            "/api/migrations",
            json!({ "name": name, "src": SRC, "dst": s(&dst), "state": state }),
        )
    };
    let (code, v) = create("elsewhere", "/etc/passwd");
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("postgres://"), "{v}");
    // Nothing listens on port 1.
    let (code, v) = create(
        "away",
        "postgres://treeshift@127.0.0.1:1/none?connect_timeout=2",
    );
    assert!(code >= 400, "{code} {v}");
    assert!(
        !v.to_string().contains("Traceback") && v["error"].is_string(),
        "{v}"
    );
    assert_eq!(std::fs::read_dir(&states).unwrap().count(), 0);
    assert!(!Path::new(&dst).exists());
    let listed = server.get("/api/migrations");
    assert_eq!(listed, json!([]));
}
