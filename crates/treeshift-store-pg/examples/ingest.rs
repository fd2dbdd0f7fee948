//! How fast a store takes a listing's rows: one folder of `ROWS` files
//! recorded in pages of 2,048 (as a huge folder's listing arrives), then
//! completed. Run by `bench/pg_ingest.sh`, against PostgreSQL (a
//! `postgres://` location) and DuckDB (a file path).
//!
//!     ingest LOCATION ROWS

use std::time::{Duration, Instant};
use treeshift_core::{Entry, Kind, Side};
use treeshift_state::{ChildRecord, MigrationSpec, OpenMode, StateStore};

const PAGE: usize = 2048;

fn page(from: usize, to: usize) -> Vec<ChildRecord> {
    (from..to)
        .map(|i| ChildRecord {
            entry: Entry::new(
                format!("file-{i:09}.dat").into_bytes(),
                Kind::File,
                4096 + i as u64,
                Some(1_600_000_000_000_000_000 + i as i64),
            ),
            left_out: None,
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(location), Some(rows)) = (args.get(1), args.get(2).and_then(|r| r.parse().ok()))
    else {
        eprintln!("usage: ingest LOCATION ROWS");
        std::process::exit(2);
    };
    let spec = MigrationSpec {
        src: "sim:bench".into(),
        dst: "/nowhere".into(),
        filter: Default::default(),
        dst_case_insensitive: false,
        keep: Default::default(),
    };
    let mode = OpenMode::CreateOrResume(Box::new(spec));
    let root = Entry::new(Vec::new(), Kind::Folder, 0, None);
    let elapsed = if location.starts_with("postgres://") {
        postgres(location, mode, &root, rows)
    } else {
        duckdb(location, mode, &root, rows)
    };
    let store = if location.starts_with("postgres://") {
        "postgresql"
    } else {
        "duckdb"
    };
    println!(
        "{store} {rows} {:.3} {:.0}",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
}

fn postgres(url: &str, mode: OpenMode, root: &Entry, rows: usize) -> Duration {
    let long = Duration::from_secs(600);
    let (store, _) = treeshift_store_pg::PgStore::open(url, mode).expect("open");
    store.record_roots(root, None).expect("root");
    store.begin_round(Side::Src, 0).expect("round");
    let lease = store.lease(Side::Src, 0, 1, long).expect("lease").remove(0);
    let started = Instant::now();
    for from in (0..rows).step_by(PAGE) {
        let to = (from + PAGE).min(rows);
        store
            .record_children(Side::Src, &lease, page(from, to), None, long)
            .expect("children");
    }
    store.folder_listed(Side::Src, &lease, 1).expect("listed");
    started.elapsed()
}

fn duckdb(path: &str, mode: OpenMode, root: &Entry, rows: usize) -> Duration {
    let (store, _) = treeshift_store::Store::open(std::path::Path::new(path), mode).expect("open");
    let h = store.handle();
    h.record_roots(root.clone(), None).expect("roots");
    h.begin_round(Side::Src, 0).expect("round");
    let task = h.pull(Side::Src, i64::MIN, 1).expect("pull").remove(0);
    let started = Instant::now();
    for from in (0..rows).step_by(PAGE) {
        let to = (from + PAGE).min(rows);
        h.record_children(Side::Src, &task, page(from, to), None)
            .expect("children");
    }
    h.folder_listed(Side::Src, &task, 1).expect("listed");
    h.flush().expect("commit");
    let elapsed = started.elapsed();
    store.close().expect("close");
    elapsed
}
