//! kill -9 at random moments, then resume: the final state must equal an
//! uninterrupted run's (same summary, same items, nothing duplicated or lost;
//! for copies, the same destination tree and no temporary left). Each
//! test runs with the state in a DuckDB file, then in PostgreSQL.

mod util;

use std::time::Instant;
use util::{Rng, make_tree, run, s, same_end_state, snapshot, status_json, temporaries};

#[test]
fn sim_discovery_survives_random_kills() {
    util::on_every_store(|store| {
        let mut rng = Rng::from_env();
        let dir = tempfile::tempdir().unwrap();
        let base = "seed=21,depth=3,fanout=5,files=12,latency_us=6000";
        let src = format!("sim:{base},fail_perm=0.03");
        let dst = format!("sim:{base},mutate=4,extra=10");
        let reference = store.state(dir.path(), "reference");
        let args = |state: &std::path::Path| {
            vec![
                "discover".to_string(),
                src.clone(),
                dst.clone(),
                "--state".into(),
                s(state).into(),
                "--workers".into(),
                "3".into(),
            ]
        };
        let t0 = Instant::now();
        let ref_args = args(&reference);
        let ref_args: Vec<&str> = ref_args.iter().map(String::as_str).collect();
        assert_eq!(util::run_with_kills(&ref_args, 0..1, &mut rng, 0).kills, 0);
        let full_ms = t0.elapsed().as_millis() as u64;
        let mut total_kills = 0;
        // At least 3 rounds, and more (up to 8) until 9 kills have landed:
        // a loaded machine finishes some runs before their kill moment.
        for round in 0..8 {
            if round >= 3 && total_kills >= 9 {
                break;
            }
            let state = store.state(dir.path(), &format!("killed-{round}"));
            let a = args(&state);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            // Seals in slices of 50 nodes, each committed on its own, so kills
            // also land between the slices of one seal.
            let sliced = || {
                let mut command = util::command();
                command.env("TREESHIFT_SEAL_SLICE", "50");
                command
            };
            total_kills += util::run_with_kills_by(sliced, &a, 0..full_ms / 2, &mut rng, 8).kills;
            same_end_state(&reference, &state);
        }
        eprintln!("sim: {total_kills} kills, full run {full_ms} ms");
        assert!(total_kills >= 9, "too few kills landed: {total_kills}");
    });
}

#[test]
fn local_discovery_survives_random_kills() {
    util::on_every_store(|store| {
        let mut rng = Rng::from_env();
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        make_tree(&src, 4, 3, 12);
        make_tree(&dst, 3, 3, 9);
        std::fs::write(dst.join("d0").join("extra.bin"), b"x").unwrap();
        let reference = store.state(dir.path(), "reference");
        let t0 = Instant::now();
        assert_eq!(
            util::run_with_kills(
                &["discover", s(&src), s(&dst), "--state", s(&reference)],
                0..1,
                &mut rng,
                0
            )
            .kills,
            0
        );
        let full_ms = (t0.elapsed().as_millis() as u64).max(20);
        let mut total_kills = 0;
        // At least 3 rounds, and more (up to 8) until 6 kills have landed:
        // a loaded machine finishes some runs before their kill moment.
        for round in 0..8 {
            if round >= 3 && total_kills >= 6 {
                break;
            }
            let state = store.state(dir.path(), &format!("killed-{round}"));
            total_kills += util::run_with_kills(
                &[
                    "discover",
                    s(&src),
                    s(&dst),
                    "--state",
                    s(&state),
                    "--workers",
                    "2",
                ],
                0..full_ms / 2,
                &mut rng,
                8,
            )
            .kills;
            same_end_state(&reference, &state);
        }
        eprintln!("local: {total_kills} kills, full run {full_ms} ms");
        assert!(total_kills >= 6, "too few kills landed: {total_kills}");
    });
}

#[test]
fn copy_survives_random_kills() {
    util::on_every_store(|store| {
        let mut rng = Rng::from_env();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        make_tree(&src, 4, 3, 12);
        // Some larger files, so kills also land in the middle of data.
        for i in 0..24u64 {
            let size = (256 << 10) + rng.below(3 << 20) as usize;
            std::fs::write(
                src.join(format!("d{}", i % 4)).join(format!("big{i}")),
                vec![i as u8; size],
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("d0/f001.txt", src.join("link")).unwrap();
        let prepare = |name: &str| {
            let dst = dir.path().join(format!("{name}-dst"));
            let state = store.state(dir.path(), name);
            let (code, _, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state)]);
            assert_eq!(code, 0, "{err}");
            let (code, _, err) = run(&["approve", "--state", s(&state)]);
            assert_eq!(code, 0, "{err}");
            (dst, state)
        };
        let (ref_dst, ref_state) = prepare("reference");
        let t0 = Instant::now();
        assert_eq!(
            util::run_with_kills(&["copy", "--state", s(&ref_state)], 0..1, &mut rng, 0).kills,
            0
        );
        let full_ms = (t0.elapsed().as_millis() as u64).max(20);
        let want = snapshot(&src);
        assert_eq!(snapshot(&ref_dst), want);
        let mut total_kills = 0;
        // At least 3 rounds, and more (up to 8) until 8 kills have landed:
        // a loaded machine finishes some runs before their kill moment.
        for round in 0..8 {
            if round >= 3 && total_kills >= 8 {
                break;
            }
            let (dst, state) = prepare(&format!("killed-{round}"));
            // A resumed copy has less left to do, so kills come early.
            total_kills += util::run_with_kills(
                &["copy", "--state", s(&state), "--workers", "3"],
                0..full_ms / 3,
                &mut rng,
                12,
            )
            .kills;
            assert_eq!(snapshot(&dst), want, "round {round}: the same tree");
            assert!(
                temporaries(&dst).is_empty(),
                "round {round}: temporaries left"
            );
            let (got, reference) = (status_json(&state), status_json(&ref_state));
            assert_eq!(
                got["copy"], reference["copy"],
                "round {round}: same copy summary"
            );
            let (code, out, err) = run(&["verify", "--state", s(&state), "--checksum", "--json"]);
            assert_eq!(code, 0, "round {round}: {out} {err}");
        }
        eprintln!("copy: {total_kills} kills, full run {full_ms} ms");
        assert!(total_kills >= 8, "too few kills landed: {total_kills}");
    });
}
