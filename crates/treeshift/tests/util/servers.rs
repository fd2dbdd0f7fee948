//! Storage servers the remote-storage tests start on 127.0.0.1, each
//! binding a port of its own choosing and stopped by its PID on drop.

use super::{missing_prerequisite, s};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Azure storage emulator's account and its published key (the same
/// in every copy of Azurite: not a secret).
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The WebDAV test server's user and password (basic authentication).
pub const WEBDAV_USER: &str = "treeshift";
pub const WEBDAV_PASSWORD: &str = "treeshift-test-dav";

/// A server a test started on 127.0.0.1, stopped (by its PID) on drop.
pub struct Server {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (the OS picks it; it is free again once
/// this returns, and a server started right after takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program of the test venv (`TREESHIFT_TEST_VENV`, which `.ci/run`
/// makes; `/var/tmp/treeshift-venv` by default), if it is there.
pub fn venv_program(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("TREESHIFT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treeshift-venv"));
    let path = venv.join("bin").join(name);
    path.exists().then_some(path)
}

/// Starts `tests/servers/stores.py` with `args` in the test venv and reads the
/// port it bound (it binds its own, so nothing can take the port between a
/// pick and a bind). `None`, after reporting the missing prerequisite (a
/// failure under CI), when the venv lacks the program `needs`.
fn start_store_script(args: &[&str], needs: &str) -> Option<Server> {
    start_store_script_said(args, needs).map(|(server, _)| server)
}

/// What a server started by `stores.py` goes on to print, line by line.
pub type Said = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// [`start_store_script`], and what the server prints after its port.
fn start_store_script_said(args: &[&str], needs: &str) -> Option<(Server, Said)> {
    if venv_program(needs).is_none() {
        missing_prerequisite(&format!("{needs} (.ci/run installs it in the test venv)"));
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/stores.py");
    let mut child = Command::new(venv_program("python3").unwrap())
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start tests/servers/stores.py");
    let mut said = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(Ok(port))) = said.next().map(|line| line.map(|l| l.trim().parse())) else {
        let status = child.wait();
        panic!("stores.py {args:?} did not start: {status:?}");
    };
    Some((Server { child, port }, said))
}

/// An S3 server (moto) on a loopback port with the bucket `bkt`; `None`
/// when moto is not installed (see `start_store_script`).
pub fn s3_server() -> Option<Server> {
    start_store_script(&["moto"], "moto_server")
}

/// An S3 server (moto) whose bucket `bkt` holds `count` one-byte objects
/// `prefix/k000000`, `prefix/k000001`, ..., made in its memory.
pub fn s3_server_holding(prefix: &str, count: u32) -> Option<Server> {
    start_store_script(
        &["moto", "--objects", &format!("{prefix}:{count}")],
        "moto_server",
    )
}

/// A proxy in front of the S3 server `upstream` that passes every request
/// on and reports it: the number of list requests so far, counted as they
/// pass.
pub fn s3_counting_proxy(
    upstream: &Server,
) -> Option<(Server, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (server, said) = start_store_script_said(
        &["proxy", &upstream.port.to_string(), "--log"],
        "moto_server",
    )?;
    let lists = std::sync::Arc::new(AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&lists);
    std::thread::spawn(move || {
        for line in said.map_while(Result::ok) {
            if line.starts_with("GET ") && line.contains("delimiter=") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    Some((server, lists))
}

/// A GCS server (gcp-storage-emulator, in memory) on a loopback port with
/// the bucket `bkt`; `None` when it is not installed (see
/// `start_store_script`).
pub fn gcs_server() -> Option<Server> {
    start_store_script(&["gcs"], "gcp-storage-emulator")
}

/// A WebDAV server (wsgidav, with a property store in memory) serving the
/// folder `root`, with basic authentication; `None` when it is not
/// installed (see `start_store_script`).
pub fn webdav_server(root: &Path) -> Option<Server> {
    std::fs::create_dir_all(root).unwrap();
    start_store_script(
        &[
            "webdav",
            root.to_str().unwrap(),
            "--user",
            WEBDAV_USER,
            "--password",
            WEBDAV_PASSWORD,
        ],
        "wsgidav",
    )
}

/// A proxy in front of the S3 server `upstream` that answers every
/// `fail_every`th request with a throttling or server error (503 SlowDown,
/// 500, 429 with Retry-After) instead of passing it on; on `port` when
/// given (to come back where a killed one was).
pub fn s3_proxy(upstream: &Server, port: Option<u16>, fail_every: u32) -> Option<Server> {
    start_store_script(
        &[
            "proxy",
            &upstream.port.to_string(),
            "--port",
            &port.unwrap_or(0).to_string(),
            "--fail-every",
            &fail_every.to_string(),
        ],
        "moto_server",
    )
}

impl Server {
    /// The location of `prefix` in the bucket of this S3 server.
    pub fn s3(&self, prefix: &str) -> String {
        format!("s3://bkt/{prefix}?endpoint=http://127.0.0.1:{}", self.port)
    }

    /// What rclone (which reads the mtime treeshift writes into an
    /// object's metadata, as it writes its own) finds between a local
    /// folder and `prefix` on this server: `rclone check` (sizes, and
    /// hashes where the store has them) and the files a `sync --dry-run`
    /// would still send (sizes and mtimes). Empty when they are equal.
    pub fn rclone_differences(&self, local: &Path, prefix: &str) -> Option<Vec<String>> {
        let remote = format!("t:bkt/{prefix}");
        let rclone = |args: &[&str]| {
            Command::new("rclone")
                .args(args)
                .env("RCLONE_CONFIG_T_TYPE", "s3")
                .env("RCLONE_CONFIG_T_PROVIDER", "Other")
                .env(
                    "RCLONE_CONFIG_T_ENDPOINT",
                    format!("http://127.0.0.1:{}", self.port),
                )
                .env("RCLONE_CONFIG_T_ACCESS_KEY_ID", "treeshift-test")
                .env("RCLONE_CONFIG_T_SECRET_ACCESS_KEY", "treeshift-test-secret")
                .env("RCLONE_CONFIG_T_FORCE_PATH_STYLE", "true")
                .env("RCLONE_CONFIG", "/dev/null")
                // rclone 1.60 cannot reach S3 with it set (TOOLING-NOTES).
                .env_remove("AWS_CA_BUNDLE")
                .output()
        };
        let Ok(check) = rclone(&["check", "--one-way", s(local), &remote]) else {
            missing_prerequisite("rclone (apt-get install rclone)");
            return None;
        };
        let mut found = Vec::new();
        let said = String::from_utf8_lossy(&check.stderr).into_owned();
        if !check.status.success() {
            found.push(format!("rclone check: {said}"));
        }
        let sync = rclone(&["sync", "--dry-run", "-v", s(local), &remote]).unwrap();
        let said = String::from_utf8_lossy(&sync.stderr);
        assert!(sync.status.success(), "rclone sync --dry-run: {said}");
        found.extend(
            said.lines()
                .filter(|l| l.contains("Skipped copy") || l.contains("Skipped update"))
                .map(str::to_string),
        );
        Some(found)
    }
}

/// Azurite's blob service on a loopback port it picks, holding the
/// container `bkt`; `None`, after reporting the missing prerequisite (a
/// failure under CI), when Azurite is not installed.
pub fn azure_server() -> Option<Server> {
    let npm = std::env::var_os("TREESHIFT_TEST_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/treeshift-npm"));
    let azurite = npm.join("node_modules/.bin/azurite-blob");
    if !azurite.exists() || venv_program("python3").is_none() {
        missing_prerequisite("azurite-blob (.ci/run installs azurite with npm) and the test venv");
        return None;
    }
    let mut child = Command::new(azurite)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--inMemoryPersistence",
        ])
        // Telemetry would try to reach an outside host.
        .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start azurite-blob");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("azurite-blob did not start: {status:?}");
        };
        if let Some((_, port)) = line.split_once("listens on http://127.0.0.1:") {
            break port.trim().parse().unwrap();
        }
    };
    // Whatever else it says goes nowhere, without filling a pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let server = Server { child, port };
    let made = Command::new(venv_program("python3").unwrap())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/stores.py"))
        .args(["azure-container", &port.to_string(), "bkt"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "could not make the container: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    Some(server)
}

impl Server {
    /// The location of `prefix` in the bucket of this GCS emulator (which
    /// checks no signature: requests go unsigned).
    pub fn gcs(&self, prefix: &str) -> String {
        format!(
            "gcs://bkt/{prefix}?endpoint=http://127.0.0.1:{}&anonymous=true",
            self.port
        )
    }

    /// The location of `prefix` on this WebDAV server.
    pub fn webdav(&self, prefix: &str) -> String {
        format!(
            "webdav://127.0.0.1:{}/{prefix}?user={WEBDAV_USER}",
            self.port
        )
    }

    /// The location of `prefix` in the container of this Azurite server.
    pub fn azblob(&self, prefix: &str) -> String {
        format!(
            "azblob://bkt/{prefix}?endpoint=http://127.0.0.1:{}/{AZURE_ACCOUNT}",
            self.port
        )
    }
}

/// OpenSSH's server on a loopback port, its SFTP the internal one, with a
/// host key and a user key made for it: the client is the system `ssh`,
/// told to offer that key and trust that host key only.
pub struct SshServer {
    server: Server,
    dir: tempfile::TempDir,
}

/// Starts an [`SshServer`] for root; `None`, after reporting the missing
/// prerequisite (a failure under CI), when OpenSSH is not installed.
pub fn sftp_server() -> Option<SshServer> {
    let sshd = Path::new("/usr/sbin/sshd");
    let have = |tool: &str| Command::new(tool).arg("-V").output().is_ok();
    if !sshd.exists() || !have("ssh") || Command::new("ssh-keygen").arg("-?").output().is_err() {
        missing_prerequisite("sshd, ssh and ssh-keygen (apt-get install openssh-server)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for key in ["host", "user"] {
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.path().join(key))
            .output()
            .unwrap();
        assert!(made.status.success(), "ssh-keygen: {made:?}");
    }
    std::fs::copy(dir.path().join("user.pub"), dir.path().join("authorized")).unwrap();
    // sshd wants its privilege separation folder.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    let d = s(dir.path());
    std::fs::write(
        dir.path().join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\n\
             AuthorizedKeysFile {d}/authorized\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nUsePAM yes\nPidFile none\n\
             Subsystem sftp internal-sftp\n"
        ),
    )
    .unwrap();
    let host_key = std::fs::read_to_string(dir.path().join("host.pub")).unwrap();
    std::fs::write(
        dir.path().join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_key}"),
    )
    .unwrap();
    let mut child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.path().join("sshd_config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sshd");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("sshd did not start: {status:?}");
        };
        if line.contains("Server listening on 127.0.0.1") {
            break;
        }
    }
    // Its log (a line per session) goes nowhere, without filling a pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Some(SshServer {
        server: Server { child, port },
        dir,
    })
}

impl SshServer {
    /// The location of the local folder `path`, as this server serves it.
    pub fn location(&self, path: &Path) -> String {
        format!(
            "sftp://root@127.0.0.1:{}{}?key={}/user&known_hosts={}/known_hosts",
            self.server.port,
            s(path),
            s(self.dir.path()),
            s(self.dir.path())
        )
    }

    /// Drops every session the server has open, as a server restarted or a
    /// network gone away would: each process below the listener is killed
    /// (the listener itself goes on taking connections). How many.
    pub fn drop_sessions(&self) -> usize {
        let below = descendants(self.server.child.id());
        for pid in &below {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        below.len()
    }

    /// The folder holding the keys (`user`, `host`) and `known_hosts`.
    pub fn keys(&self) -> &Path {
        self.dir.path()
    }
}

/// Every process below `pid` (from /proc: each one's parent).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // After the command's closing parenthesis: state, then parent.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((p, ppid.parse().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}
