//! A discovery killed in the middle of a huge listing (one S3 prefix of
//! 50,000 keys) lists on from where it stood: the resumed run asks for
//! fewer pages than a whole listing, counted by a proxy in front of the
//! server, and ends with exactly what an uninterrupted run finds.

mod util;

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use util::s;

/// Keys under the listed prefix: 50 pages of S3's 1,000.
const KEYS: u32 = 50_000;

#[test]
fn a_discovery_killed_inside_a_huge_listing_lists_on_from_where_it_stood() {
    let Some(s3) = util::s3_server_holding("big", KEYS) else {
        return;
    };
    let Some((proxy, lists)) = util::s3_counting_proxy(&s3) else {
        return;
    };
    util::on_every_store(|store| {
        lists.store(0, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let location = proxy.s3("big");
        let dst = dir.path().join("dst");
        let discover = |state: &std::path::Path| {
            let mut command = util::command();
            command.args([
                "discover",
                &location,
                s(&dst),
                "--state",
                s(state),
                "--json",
            ]);
            command
        };

        // An uninterrupted discovery: what the resumed one must end with, and
        // the pages of a whole listing.
        let whole = store.state(dir.path(), "whole");
        let out = discover(&whole).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let whole_pages = lists.swap(0, Ordering::SeqCst);
        assert!(
            whole_pages >= 50,
            "a whole listing took {whole_pages} pages"
        );

        // Killed once half the pages went by (the store commits what it was
        // sent at least every half second, with where the listing stood).
        let state = store.state(dir.path(), "s");
        let mut child = discover(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while lists.load(Ordering::SeqCst) < whole_pages / 2 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the discovery ended before it could be killed"
            );
            assert!(started.elapsed() < Duration::from_secs(300), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let before_kill = lists.swap(0, Ordering::SeqCst);

        let out = discover(&state).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let resumed_pages = lists.load(Ordering::SeqCst);
        eprintln!(
            "whole: {whole_pages} pages; killed after {before_kill}; resumed: {resumed_pages}"
        );
        assert!(
            resumed_pages + whole_pages / 4 <= whole_pages,
            "the resumed run listed {resumed_pages} pages of {whole_pages}: it started over"
        );

        // The same outcome as the uninterrupted run: every key once.
        let (status, whole_status) = (util::status_json(&state), util::status_json(&whole));
        assert_eq!(status["src"]["files"], u64::from(KEYS), "{status}");
        for count in ["missing", "failed", "invalid_name"] {
            assert_eq!(status[count], whole_status[count], "{count}: {status}");
        }
        assert_eq!(util::all_items(&state), util::all_items(&whole));
    });
}
