//! One worker of a discovery shared through the PostgreSQL store, for
//! `bench/pg_workers.sh`: a tree of `DEPTH` levels below the root, each
//! folder holding `FANOUT` folders and `FANOUT` files, whose every listing
//! takes `LIST_MS` milliseconds (a latency-bound store). Run it in any
//! number of processes at once against one database: each leases folders
//! of the current round, "lists" them, records their children and
//! completes them, then waits for the round to be done by everyone
//! before the next. Prints how many folders this process listed.
//!
//!     lease_workers URL DEPTH FANOUT LIST_MS

use std::time::Duration;
use treeshift_core::{Entry, Kind, Side};
use treeshift_state::{ChildRecord, MigrationSpec, OpenMode};
use treeshift_store_pg::PgStore;

const LEASE: Duration = Duration::from_secs(30);
const BATCH: usize = 4;

fn arg(n: usize) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: lease_workers URL DEPTH FANOUT LIST_MS");
            std::process::exit(2)
        })
}

fn main() {
    let url = std::env::args().nth(1).unwrap_or_default();
    let (depth, fanout, list_ms) = (arg(2) as u32, arg(3) as usize, arg(4));
    let spec = MigrationSpec {
        src: format!("sim:depth={depth},fanout={fanout}"),
        dst: "/nowhere".into(),
        filter: Default::default(),
        dst_case_insensitive: false,
        keep: Default::default(),
    };
    let (store, _) = PgStore::open(&url, OpenMode::CreateOrResume(Box::new(spec))).expect("open");
    store
        .record_roots(&Entry::new(Vec::new(), Kind::Folder, 0, None), None)
        .expect("root");
    let mut listed = 0u64;
    for round in 0..=depth {
        store.begin_round(Side::Src, round).expect("round");
        loop {
            let batch = store.lease(Side::Src, round, BATCH, LEASE).expect("lease");
            if batch.is_empty() {
                // Others still list this round's last folders.
                if store.round_open(Side::Src, round).expect("count") == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            for lease in batch {
                std::thread::sleep(Duration::from_millis(list_ms));
                let children: Vec<ChildRecord> = if round < depth {
                    (0..fanout)
                        .flat_map(|i| {
                            [
                                Entry::new(format!("d{i}").into_bytes(), Kind::Folder, 0, None),
                                Entry::new(format!("f{i}").into_bytes(), Kind::File, 100, Some(0)),
                            ]
                        })
                        .map(|entry| ChildRecord {
                            entry,
                            left_out: None,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                store
                    .record_children(Side::Src, &lease, children, None, LEASE)
                    .expect("children");
                store.folder_listed(Side::Src, &lease, 1).expect("listed");
                listed += 1;
            }
        }
    }
    println!("{listed}");
}
