//! Secrets sealed in the state file: given once, they never appear in the
//! state file, its WAL, the logs or any command's output; a killed
//! migration resumes with only `TREESHIFT_MASTER_KEY` in its environment;
//! a missing, wrong or re-keyed key, an altered sealed blob and a blob
//! moved to another row each stop the command with a clear error (exit 2).
//! The SFTP key's and the unkeyed tests run with the state in PostgreSQL
//! too, where `pg_dump` of the database must not hold a secret.

mod util;

use base64::Engine;
use std::borrow::BorrowMut;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use treeshift_store::{OpenMode, StateStore, Store};
use util::{Rng, bare, bin, make_tree, run_with_kills_by, s, s3_server, sftp_server};

/// A fresh random master key, as `head -c 32 /dev/urandom | base64` makes.
fn master_key(rng: &mut Rng) -> String {
    let bytes: Vec<u8> = (0..4).flat_map(|_| rng.next().to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Everything commands printed, to search for secrets at the end.
#[derive(Default)]
struct Seen(String);

impl Seen {
    /// Runs `c` with `args`; returns (exit code, stdout + stderr).
    fn run(&mut self, mut c: impl BorrowMut<Command>, args: &[&str]) -> (i32, String) {
        let out = c.borrow_mut().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.0.push_str(&text);
        (out.status.code().unwrap_or(-1), text)
    }
}

/// Asserts that no secret's bytes are in any file named, nor in `text`.
fn assert_absent(secrets: &[&str], files: &[&Path], text: &str) {
    for file in files {
        if let Ok(bytes) = std::fs::read(file) {
            assert_not_in(secrets, &bytes, &file.display().to_string());
        }
    }
    assert_not_in(secrets, text.as_bytes(), "the output");
}

fn assert_not_in(secrets: &[&str], bytes: &[u8], what: &str) {
    for secret in secrets {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "a secret in {what}");
    }
}

/// Asserts that no secret's bytes are in the migration's state at
/// `state` (a state file and its WAL, or everything `pg_dump` reads of
/// the database), nor in `text`.
fn assert_absent_from_state(secrets: &[&str], state: &Path, text: &str) {
    if !treeshift_lifecycle::state::is_database(state) {
        return assert_absent(secrets, &[state, &wal(state)], text);
    }
    let dump = Command::new(util::cluster::bin_dir().unwrap().join("pg_dump"))
        .args(["--dbname", s(state)])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dump.stdout.len() > 1000, "an empty dump");
    assert_not_in(secrets, &dump.stdout, "the database");
    assert_not_in(secrets, text.as_bytes(), "the output");
}

fn wal(state: &Path) -> std::path::PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".wal");
    p.into()
}

/// Replaces the sealed blobs of the state file's connections with what
/// `edit` makes of them (source row first).
fn edit_sealed(state: &Path, edit: impl FnOnce(&mut Vec<treeshift_store::StoredConnection>)) {
    let (store, _) = Store::open(state, OpenMode::Existing).unwrap();
    let h = store.handle();
    let mut rows = h.connections().unwrap();
    edit(&mut rows);
    h.save_credentials(None, rows).unwrap();
    store.close().unwrap();
}

#[test]
fn s3_secrets_sealed_once_never_leave_and_a_killed_run_resumes_with_the_key_alone() {
    let Some(server) = s3_server() else {
        return;
    };
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let (src, state) = (dir.path().join("src"), dir.path().join("s.duckdb"));
    make_tree(&src, 3, 2, 6);
    let key_id = format!("TSKEYID{:016X}", rng.next());
    let secret = format!("tsSecret/{:016x}+{:016x}", rng.next(), rng.next());
    let (k1, k2) = (master_key(&mut rng), master_key(&mut rng));
    let dst = server.s3("sealed");
    let mut seen = Seen::default();
    let with_key = |k: &str| bare(dir.path(), &[("TREESHIFT_MASTER_KEY", k)]);

    // The first discovery takes the keys from the environment and seals
    // them; it is killed once its first commits are in the WAL.
    let mut first = with_key(&k1)
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .args([
            "discover",
            s(&src),
            &dst,
            "--state",
            s(&state),
            "--dst-tps",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !wal(&state).exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(killed, "the discovery ended before it was killed");
    assert!(wal(&state).exists(), "no WAL to look into");
    assert_absent(&[&key_id, &secret], &[&state, &wal(&state)], "");

    // Resumed with nothing but the master key.
    let (code, out) = seen.run(
        with_key(&k1),
        &["discover", s(&src), &dst, "--state", s(&state)],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = seen.run(bare(dir.path(), &[]), &["approve", "--state", s(&state)]);
    assert_eq!(code, 0, "{out}");
    // Without the key: a clear refusal, even with keys in the environment.
    let (code, out) = seen.run(
        bare(
            dir.path(),
            &[("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")],
        ),
        &["copy", "--state", s(&state)],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("set TREESHIFT_MASTER_KEY"), "{out}");

    // Re-keyed: the old key no longer opens the file; the copy, killed at
    // random moments, resumes with the new one alone.
    let (code, out) = seen.run(
        with_key(&k1).env("TREESHIFT_NEW_MASTER_KEY", &k2),
        &["rekey", "--state", s(&state)],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = seen.run(with_key(&k1), &["copy", "--state", s(&state)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not open"), "{out}");
    let k2_copy = k2.clone();
    let copy = ["copy", "--state", s(&state), "--dst-tps", "40"];
    let killed = run_with_kills_by(|| with_key(&k2_copy), &copy, 100..700, &mut rng, 2);
    assert!(killed.kills >= 1, "{killed:?}");
    seen.0.push_str(&killed.stderr);

    // A rotated secret replaces the sealed one.
    let rotated = format!("tsRotated{:016x}", rng.next());
    let mut set = with_key(&k2)
        .args([
            "connection",
            "set-secret",
            "--state",
            s(&state),
            "--side",
            "dst",
        ])
        .arg("AWS_SECRET_ACCESS_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    set.stdin
        .take()
        .unwrap()
        .write_all(rotated.as_bytes())
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, out) = seen.run(
        with_key(&k2),
        &["verify", "--state", s(&state), "--checksum"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(server.rclone_differences(&src, "sealed"), Some(vec![]));

    // What the user sees: names, never values.
    let (code, out) = seen.run(
        bare(dir.path(), &[]),
        &["connections", "--state", s(&state), "--json"],
    );
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["sealed_under"], "master-key");
    let dst_row = &listed["connections"][1];
    assert_eq!(dst_row["side"], "dst");
    assert_eq!(dst_row["secrets"]["AWS_SECRET_ACCESS_KEY"], "********");
    for args in [
        &["logs", "--state", s(&state), "--level", "trace"][..],
        &["status", "--state", s(&state), "--json"],
        &["review", "--state", s(&state), "--status", "all"],
    ] {
        let (code, out) = seen.run(bare(dir.path(), &[]), args);
        assert!(code == 0 || code == 4, "{args:?}: {out}");
    }
    let files = [state.as_path(), &wal(&state)];
    assert_absent(&[&key_id, &secret, &rotated, &k1, &k2], &files, &seen.0);

    // An altered sealed blob, then a blob moved to the other side's row.
    let original = Store::open(&state, OpenMode::Existing).map(|(store, _)| {
        let rows = store.handle().connections().unwrap();
        store.close().unwrap();
        rows
    });
    let original = original.unwrap();
    edit_sealed(&state, |rows| *rows[1].sealed.last_mut().unwrap() ^= 1);
    let (code, out) = seen.run(with_key(&k2), &["verify", "--state", s(&state)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("were altered"), "{out}");
    edit_sealed(&state, |rows| {
        rows[0].sealed = original[1].sealed.clone();
        rows[0].secret_names = original[1].secret_names.clone();
        rows[1] = original[1].clone();
    });
    let (code, out) = seen.run(with_key(&k2), &["verify", "--state", s(&state)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("do not open"), "{out}");
}

#[test]
fn an_sftp_private_key_sealed_then_deleted_still_opens_the_server_after_kills() {
    util::on_every_store(|store| {
        let Some(server) = sftp_server() else {
            return;
        };
        let mut rng = Rng::from_env();
        let dir = tempfile::tempdir().unwrap();
        let (src, out_dir, state) = (
            dir.path().join("src"),
            dir.path().join("out"),
            store.state(dir.path(), "s"),
        );
        make_tree(&src, 3, 2, 6);
        std::fs::create_dir(&out_dir).unwrap();
        // A key file of the migration's own, deleted once sealed.
        let key_file = dir.path().join("id");
        std::fs::copy(server.keys().join("user"), &key_file).unwrap();
        let key_text = std::fs::read_to_string(&key_file).unwrap();
        let key_line = key_text.lines().nth(1).unwrap().to_string();
        let dst = server.location(&out_dir).replace(
            &format!("key={}/user", s(server.keys())),
            &format!("key={}", s(&key_file)),
        );
        assert!(dst.contains(s(&key_file)), "{dst}");
        let k = master_key(&mut rng);
        let with_key = || bare(dir.path(), &[("TREESHIFT_MASTER_KEY", &k)]);
        let mut seen = Seen::default();

        let (code, out) = seen.run(
            with_key(),
            &["discover", s(&src), &dst, "--state", s(&state)],
        );
        assert_eq!(code, 0, "{out}");
        std::fs::remove_file(&key_file).unwrap();
        let (code, out) = seen.run(with_key(), &["approve", "--state", s(&state)]);
        assert_eq!(code, 0, "{out}");
        let copy = ["copy", "--state", s(&state), "--dst-tps", "40"];
        let killed = run_with_kills_by(with_key, &copy, 100..700, &mut rng, 2);
        assert!(killed.kills >= 1, "{killed:?}");
        seen.0.push_str(&killed.stderr);
        let (code, out) = seen.run(with_key(), &["verify", "--state", s(&state), "--checksum"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            util::rsync_differences_with("-a", &src, &out_dir),
            Some(vec![])
        );

        // Sealed under a passphrase instead: a wrong one, or the old master
        // key, is refused; the right one opens.
        let pass = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{text}\n")).unwrap();
            p
        };
        let (right, wrong) = (pass("right", "correct horse"), pass("wrong", "wrong horse"));
        let (code, out) = seen.run(
            with_key(),
            &[
                "rekey",
                "--state",
                s(&state),
                "--new-passphrase-file",
                s(&right),
            ],
        );
        assert_eq!(code, 0, "{out}");
        let verify = ["verify", "--state", s(&state), "--passphrase-file"];
        let (code, out) = seen.run(bare(dir.path(), &[]), &[&verify[..], &[s(&wrong)]].concat());
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("passphrase does not open"), "{out}");
        let (code, out) = seen.run(with_key(), &["verify", "--state", s(&state)]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("--passphrase-file"), "{out}");
        let (code, out) = seen.run(bare(dir.path(), &[]), &[&verify[..], &[s(&right)]].concat());
        assert_eq!(code, 0, "{out}");
        assert_absent_from_state(&[&key_line, &k], &state, &seen.0);
    });
}

#[test]
fn without_a_key_secrets_are_not_kept_and_the_note_says_how_to_keep_them() {
    util::on_every_store(|store| {
        let Some(server) = s3_server() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (src, state) = (dir.path().join("src"), store.state(dir.path(), "s"));
        make_tree(&src, 1, 0, 2);
        let creds = [
            ("AWS_ACCESS_KEY_ID", "treeshift-test"),
            ("AWS_SECRET_ACCESS_KEY", "treeshift-test-secret"),
        ];
        let mut seen = Seen::default();
        let dst = server.s3("unsealed");
        let (code, out) = seen.run(
            bare(dir.path(), &creds),
            &["discover", s(&src), &dst, "--state", s(&state)],
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("not kept: set TREESHIFT_MASTER_KEY"), "{out}");
        let (code, out) = seen.run(
            bare(dir.path(), &[]),
            &["connections", "--state", s(&state)],
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("none kept") && out.contains("nothing sealed"),
            "{out}"
        );
        // Later commands read the environment, as before.
        let (code, out) = seen.run(bare(dir.path(), &[]), &["approve", "--state", s(&state)]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = seen.run(bare(dir.path(), &creds), &["copy", "--state", s(&state)]);
        assert_eq!(code, 0, "{out}");
        // Sealing needs a key, and a secret file names only what the service
        // takes.
        let file = dir.path().join("secrets.env");
        std::fs::write(
            &file,
            "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=tsFileSecret1\n",
        )
        .unwrap();
        let set = [
            "connection",
            "set",
            "--state",
            s(&state),
            "--side",
            "dst",
            "--secret-file",
            s(&file),
        ];
        let (code, out) = seen.run(bare(dir.path(), &[]), &set);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("needs a key"), "{out}");
        let k = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let (code, out) = seen.run(bare(dir.path(), &[("TREESHIFT_MASTER_KEY", k)]), &set);
        assert_eq!(code, 0, "{out}");
        std::fs::write(&file, "AWS_SECRET_KEY=x\n").unwrap();
        let (code, out) = seen.run(bare(dir.path(), &[("TREESHIFT_MASTER_KEY", k)]), &set);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("AWS_SECRET_KEY is not a secret of"), "{out}");
        let (code, out) = seen.run(
            bare(dir.path(), &[("TREESHIFT_MASTER_KEY", "short")]),
            &["verify", "--state", s(&state)],
        );
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("TREESHIFT_MASTER_KEY is not a key"), "{out}");
        let (code, out) = seen.run(
            bare(dir.path(), &[("TREESHIFT_MASTER_KEY", k)]),
            &["verify", "--state", s(&state)],
        );
        assert_eq!(code, 0, "{out}");
        assert_absent_from_state(&["tsFileSecret1"], &state, &seen.0);
    });
}

/// Runs `args` on a terminal of its own (util-linux's `script`), typing
/// each answer when a passphrase is asked for; returns the exit code and
/// what the terminal showed. `None` if `script` is missing.
fn on_a_terminal(home: &Path, args: &[&str], answers: &[&str]) -> Option<(i32, String)> {
    use std::io::{Read, Write};
    if Command::new("script").arg("--version").output().is_err() {
        util::missing_prerequisite("script (apt-get install bsdutils)");
        return None;
    }
    let quoted: Vec<String> = std::iter::once(s(&bin()).to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut child = Command::new("script")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("SHELL", "/bin/sh")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (mut shown, mut buf, mut answered) = (String::new(), [0u8; 4096], 0);
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        shown.push_str(&String::from_utf8_lossy(&buf[..n]));
        let asked = shown.matches("passphrase: ").count() + shown.matches("(again): ").count();
        while answered < answers.len() && answered < asked {
            stdin
                .write_all(format!("{}\n", answers[answered]).as_bytes())
                .unwrap();
            answered += 1;
        }
    }
    drop(stdin);
    let code = child.wait().unwrap().code().unwrap_or(-1);
    Some((code, shown))
}

#[test]
fn a_passphrase_is_asked_on_the_terminal_without_echo() {
    let Some(server) = sftp_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, out_dir, state) = (
        dir.path().join("src"),
        dir.path().join("out"),
        dir.path().join("s.duckdb"),
    );
    make_tree(&src, 1, 0, 3);
    std::fs::create_dir(&out_dir).unwrap();
    let dst = server.location(&out_dir);
    let pass = format!("tsPass{:x}", Rng::from_env().next());
    let home = dir.path();
    let discover = ["discover", s(&src), &dst, "--state", s(&state)];
    let Some((code, shown)) = on_a_terminal(
        home,
        &[&discover[..], &["--ask-passphrase"]].concat(),
        &[&pass, &pass],
    ) else {
        return;
    };
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("passphrase (again): "), "{shown}");
    let (code, out) = Seen::default().run(bare(home, &[]), &["approve", "--state", s(&state)]);
    assert_eq!(code, 0, "{out}");
    // Sealed under a passphrase, and on a terminal: asked unasked.
    let copy = ["copy", "--state", s(&state)];
    let (code, wrong) = on_a_terminal(home, &copy, &["not it"]).unwrap();
    assert_eq!(code, 2, "{wrong}");
    assert!(wrong.contains("passphrase does not open"), "{wrong}");
    let (code, right) = on_a_terminal(home, &copy, &[&pass]).unwrap();
    assert_eq!(code, 0, "{right}");
    assert_eq!(
        util::rsync_differences_with("-a", &src, &out_dir),
        Some(vec![])
    );
    for shown in [&shown, &wrong, &right] {
        assert!(
            !shown.contains(&pass) && !shown.contains("not it"),
            "echoed: {shown}"
        );
    }
}
