//! Bad input gets a clear message or a recorded item, never a panic.

mod util;

use std::fs;
use util::cluster::Cluster;
use util::{make_tree, on_every_store, run, s, status_json};

fn assert_clean_error(code: i32, err: &str, want_code: i32, needle: &str) {
    assert_eq!(code, want_code, "stderr: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

#[test]
fn source_root_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.duckdb");
    let (code, _, err) = run(&[
        "discover",
        s(&dir.path().join("nope")),
        s(dir.path()),
        "--state",
        s(&state),
    ]);
    assert_clean_error(code, &err, 1, "does not exist");
    assert!(err.contains("source root"), "{err}");
}

#[test]
fn root_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    let state = dir.path().join("s.duckdb");
    let (code, _, err) = run(&["discover", s(&file), s(dir.path()), "--state", s(&state)]);
    assert_clean_error(code, &err, 1, "is a file, not a folder");
}

#[test]
fn state_of_another_migration_is_refused() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let state = store.state(dir.path(), "s");
        let (code, _, err) = run(&[
            "discover",
            "sim:depth=1,files=2",
            "sim:depth=1,files=3",
            "--state",
            s(&state),
        ]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(&[
            "discover",
            "sim:depth=1,files=2",
            "sim:depth=1,files=4",
            "--state",
            s(&state),
        ]);
        assert_clean_error(code, &err, 1, "belongs to another migration");
        assert!(err.contains("destination"), "{err}");
        let (code, _, err) = run(&[
            "discover",
            "sim:depth=1,files=2",
            "sim:depth=1,files=3",
            "--state",
            s(&state),
            "--exclude",
            "*.tmp",
        ]);
        assert_clean_error(code, &err, 1, "filter rules");
    });
}

#[test]
fn a_state_database_of_another_program_absent_or_unreachable_is_refused() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let discover = |state: &str| run(&["discover", "sim:depth=1", s(&dst), "--state", state]);

    // A database another program uses: nothing of it is touched.
    let foreign = cluster.database("other_program");
    let mut client = postgres::Client::connect(&foreign, postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)")
        .unwrap();
    let (code, _, err) = discover(&foreign);
    assert_clean_error(code, &err, 1, "tables of another program");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "no table added beside the other program's");
    // Its own table named as one of treeshift's.
    client
        .batch_execute("CREATE TABLE meta (key text, value text)")
        .unwrap();
    let (code, _, err) = discover(&foreign);
    assert_clean_error(code, &err, 1, "not treeshift's");

    // A database with no migration: what reads one says so; discover
    // makes one there.
    let empty = cluster.database("empty");
    let (code, _, err) = run(&["status", "--state", &empty]);
    assert_clean_error(code, &err, 1, "holds no treeshift migration");
    assert!(
        !util::state_made(std::path::Path::new(&empty)),
        "status made nothing"
    );

    // A database, a user or a server that is not there, with a password
    // in the address: each a clear message that never shows the password.
    let port = empty.rsplit_once(':').unwrap().1.split('/').next().unwrap();
    for (state, says) in [
        (
            format!("postgres://postgres:hunter2@127.0.0.1:{port}/absent"),
            "does not exist",
        ),
        (
            format!("postgres://nobody:hunter2@127.0.0.1:{port}/empty"),
            "nobody",
        ),
        (
            "postgres://postgres:hunter2@127.0.0.1:1/empty".to_string(),
            "cannot open state",
        ),
    ] {
        for command in [
            &["status", "--state", &state][..],
            &["review", "--state", &state],
        ] {
            let (code, _, err) = run(command);
            assert_clean_error(code, &err, 1, says);
            assert!(!err.contains("hunter2"), "the password shown: {err}");
        }
        let (code, _, err) = discover(&state);
        assert_clean_error(code, &err, 1, says);
        assert!(!err.contains("hunter2"), "the password shown: {err}");
    }
    assert_eq!(
        fs::read_dir(&dst).unwrap().count(),
        0,
        "nothing written to dst"
    );
}

#[test]
fn corrupt_truncated_or_missing_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.duckdb");
    fs::write(
        &garbage,
        b"this is not a database at all, just some bytes".repeat(100),
    )
    .unwrap();
    let (code, _, err) = run(&["status", "--state", s(&garbage)]);
    assert_clean_error(code, &err, 1, "cannot open state file");
    assert!(err.contains("garbage.duckdb"), "{err}");
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (code, _, err) = run(&["discover", "sim:depth=1", s(&dst), "--state", s(&garbage)]);
    assert_clean_error(code, &err, 1, "cannot open state file");
    assert_eq!(
        fs::read_dir(&dst).unwrap().count(),
        0,
        "nothing written to dst"
    );

    // A real state file cut in half.
    let good = dir.path().join("good.duckdb");
    let (code, _, err) = run(&[
        "discover",
        "sim:depth=2,fanout=4,files=30",
        "sim:depth=2,fanout=4,files=30,mutate=1",
        "--state",
        s(&good),
    ]);
    assert_eq!(code, 0, "{err}");
    let bytes = fs::read(&good).unwrap();
    let cut = dir.path().join("cut.duckdb");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = run(&["status", "--state", s(&cut)]);
    assert_eq!(code, 1, "a truncated file must not read as fine: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("cut.duckdb"), "{err}");

    let (code, _, err) = run(&["status", "--state", s(&dir.path().join("absent.duckdb"))]);
    assert_clean_error(code, &err, 1, "does not exist");
    let (code, _, err) = run(&["status", "--state", s(dir.path())]);
    assert_clean_error(code, &err, 1, "it is a folder");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.duckdb");
    let (code, _, err) = run(&[
        "discover",
        "sim:depth=x",
        s(dir.path()),
        "--state",
        s(&state),
    ]);
    assert_clean_error(code, &err, 2, "depth");
    let (code, _, err) = run(&[
        "discover",
        "sim:",
        s(dir.path()),
        "--state",
        s(&state),
        "--exclude",
        "a[",
    ]);
    assert_clean_error(code, &err, 2, "invalid --exclude pattern");
    let (code, _, err) = run(&[
        "discover",
        "ftp://host/x",
        s(dir.path()),
        "--state",
        s(&state),
    ]);
    assert_clean_error(code, &err, 2, "not available");
    let (code, _, err) = run(&[
        "discover",
        "s3://bucket/x?endpiont=http://127.0.0.1:1",
        s(dir.path()),
        "--state",
        s(&state),
    ]);
    assert_clean_error(code, &err, 2, "unknown option 'endpiont'");
    let (code, _, err) = run(&["review", "--state", s(&state), "--status", "bogus"]);
    assert_clean_error(code, &err, 2, "unknown status");
    let (code, _, _) = run(&["discover"]);
    assert_eq!(code, 2);
    assert!(!state.exists(), "no state file for rejected input");
}

#[test]
fn unreadable_folder_is_failed_with_reason_and_siblings_continue() {
    // Root ignores permissions; drop the capabilities that let it.
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        util::missing_prerequisite("setpriv");
        return;
    }
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 3, 1, 4);
        fs::create_dir(src.join("locked")).unwrap();
        fs::write(src.join("locked").join("secret"), b"s").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        let dst = dir.path().join("dst");
        let state = store.state(dir.path(), "s");
        let out = std::process::Command::new("setpriv")
            .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(util::bin())
            .args(["discover", s(&src), s(&dst), "--state", s(&state), "--json"])
            .output()
            .unwrap();
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(4),
            "exit 4 = finished with failed items: {err}"
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["failed"], 1);
        assert_eq!(summary["src"]["files"], 4 + 3 * 4, "siblings were listed");
        let (code, text, _) = run(&["review", "--state", s(&state), "--status", "failed"]);
        assert_eq!(code, 0);
        assert!(
            text.contains("locked") && text.contains("permission_denied"),
            "{text}"
        );
        assert_eq!(status_json(&state)["failed"], 1);
    });
}

#[test]
fn hostile_names_review_in_every_format() {
    on_every_store(|store| {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        for n in [
            b"new\nline".as_slice(),
            b"bad\xff\xfe",
            &[b'L'; 255],
            b"comma,\"quote\"",
        ] {
            fs::write(src.join(OsStr::from_bytes(n)), b"x").unwrap();
        }
        let state = store.state(dir.path(), "s");
        let (code, _, err) = run(&[
            "discover",
            s(&src),
            s(&dir.path().join("dst")),
            "--state",
            s(&state),
        ]);
        assert_eq!(code, 0, "{err}");
        let (_, table, _) = run(&["review", "--state", s(&state), "--status", "missing"]);
        assert!(
            table.contains("new\\nline") && table.contains("bad\\xff\\xfe"),
            "{table}"
        );
        assert_eq!(
            table.lines().count(),
            5,
            "header + one line per item: {table}"
        );
        let (_, json, _) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "missing",
            "--format",
            "json",
        ]);
        let rows: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().any(|r| r["path"] == "new\nline"));
        assert!(rows.iter().any(|r| r["path_hex"] == "626164fffe"));
        let out = util::treeshift(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "missing",
            "--format",
            "csv",
        ]);
        let mut reader = csv::ReaderBuilder::new().from_reader(out.stdout.as_slice());
        let paths: Vec<Vec<u8>> = reader
            .byte_records()
            .map(|r| r.unwrap()[3].to_vec())
            .collect();
        assert!(paths.contains(&b"bad\xff\xfe".to_vec()) && paths.contains(&b"new\nline".to_vec()));
        assert!(paths.contains(&b"comma,\"quote\"".to_vec()));
    });
}

#[test]
fn a_second_process_on_the_same_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.duckdb");
    let mut first = std::process::Command::new(util::bin())
        .args([
            "discover",
            "sim:depth=3,fanout=6,latency_us=20000",
            "sim:depth=3,fanout=6,mutate=1",
            "--state",
            s(&state),
            "--workers",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first process created the file and holds it.
    let t0 = std::time::Instant::now();
    while !state.exists() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (code, _, err) = run(&[
        "discover",
        "sim:depth=3,fanout=6,latency_us=20000",
        "sim:depth=3,fanout=6,mutate=1",
        "--state",
        s(&state),
    ]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_clean_error(code, &err, 1, "another treeshift process is using it");
}
