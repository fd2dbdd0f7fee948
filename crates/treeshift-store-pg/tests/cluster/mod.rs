//! A throwaway PostgreSQL cluster on a free 127.0.0.1 port, made by
//! `initdb` in a temporary folder and run as the `postgres` user (the
//! server refuses root), stopped by its PID when dropped. Without
//! PostgreSQL's binaries a test is skipped, and fails when `CI` is set.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    server: Option<Child>,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The newest PostgreSQL's binaries (Debian keeps them off `PATH`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort_by_key(|b| {
        b.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// A command run as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--clear-groups",
        "--",
    ])
    .arg(program);
    c
}

fn missing(what: &str) -> Option<Cluster> {
    if std::env::var_os("CI").is_some() {
        panic!("missing prerequisite under CI: {what}");
    }
    eprintln!("skipped: {what}");
    None
}

impl Cluster {
    /// Starts a cluster; `None` (the test is skipped) where PostgreSQL is
    /// not installed, outside CI.
    pub fn start() -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            return missing("PostgreSQL (apt postgresql-15)");
        };
        let dir = tempfile::Builder::new()
            .prefix("treeshift-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "chown the cluster's folder to postgres");
        let out = as_postgres(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = Cluster {
            server: None,
            port,
            bin,
            dir,
        };
        cluster.start_again();
        Some(cluster)
    }

    /// Starts the server (again, after [`Cluster::stop`]) and waits until
    /// it takes connections.
    pub fn start_again(&mut self) {
        let server = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(server);
        self.wait_ready();
    }

    /// Stops the server (a fast shutdown: sessions are cut).
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill")
                .args(["-INT", &server.id().to_string()])
                .status();
            let _ = server.wait();
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                panic!("postgres exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A location for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its location.
    pub fn database(&self, db: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        self.url(db)
    }
}

/// Fails if discovery recorded anything twice in the migration at `url`:
/// a node per path and side, a comparison per node.
// Only the tests that discover use it.
#[allow(dead_code)]
pub fn assert_nothing_doubled(url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    for side in ["src", "dst"] {
        let doubled: i64 = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) - count(DISTINCT rel_path) FROM {side}_nodes) + \
                            (SELECT count(*) FROM (SELECT node_id FROM {side}_status_events \
                             WHERE phase = 'compare' GROUP BY node_id HAVING count(*) > 1) x)"
                ),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(doubled, 0, "{side}: nodes or comparisons recorded twice");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
