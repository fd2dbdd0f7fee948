//! One SFTP session: the system `ssh` client run with `-s sftp`, requests
//! written to its stdin by any thread, replies read from its stdout by one
//! thread and handed to whoever waits for that request id. Many requests
//! are in flight at once (listings, reads and writes of many workers, and
//! many parts of one file), which is what a slow link needs.
//!
//! The system client is used on purpose: the user's `~/.ssh/config`,
//! agent, keys and `known_hosts` apply as they do to `ssh`, `rsync` and
//! `scp`. It runs in batch mode, so it never waits at a prompt. When
//! treeshift dies, even by SIGKILL, the client reads the end of its stdin
//! and leaves; there is no master connection to outlive it.

use super::protocol::{self, Attrs, Reply, Request};
use crate::traffic::{Counters, Pace};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// How an SFTP request failed.
#[derive(Debug)]
pub enum Fail {
    /// The server answered with this status.
    Status { code: u32, message: String },
    /// The session is gone (the connection dropped, `ssh` failed); what
    /// `ssh` said last.
    Lost(String),
    /// The server answered something that is not SFTP, or not this.
    Protocol(&'static str),
}

/// What the server offers beyond version 3.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extensions {
    /// `posix-rename@openssh.com`: a rename that replaces, atomically.
    pub posix_rename: bool,
    /// `hardlink@openssh.com`.
    pub hardlink: bool,
    /// `fsync@openssh.com`.
    pub fsync: bool,
    /// `lsetstat@openssh.com`: metadata set on a symlink itself.
    pub lsetstat: bool,
    /// `statvfs@openssh.com`: free space (tells a full disk from another
    /// failure, which v3 reports alike).
    pub statvfs: bool,
    /// `limits@openssh.com`: the largest read and write the server takes.
    pub limits: bool,
}

/// How to reach the server: what `ssh` is told.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// A private key file (`-i`, and only it is offered).
    pub key: Option<String>,
    /// A known-hosts file instead of the user's.
    pub known_hosts: Option<String>,
}

impl Target {
    fn command(&self) -> Command {
        let mut ssh = Command::new("ssh");
        // Never ask anything (a password prompt would wait forever), keep
        // one connection per session, give up on a host that does not
        // answer, and notice a link that went dead.
        ssh.args(["-o", "BatchMode=yes", "-o", "ControlMaster=no"])
            .args(["-o", "ControlPath=none", "-o", "ConnectTimeout=15"])
            .args([
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
            ])
            .args(["-o", "LogLevel=ERROR"]);
        if let Some(port) = self.port {
            ssh.arg("-p").arg(port.to_string());
        }
        if let Some(key) = &self.key {
            ssh.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(file) = &self.known_hosts {
            ssh.arg("-o").arg(format!("UserKnownHostsFile={file}"));
        }
        if let Some(user) = &self.user {
            ssh.arg("-l").arg(user);
        }
        // `--` so that a host name cannot be taken for an option.
        ssh.args(["-s", "--", &self.host, "sftp"]);
        ssh
    }
}

/// What every session of a backend sends, counted and paced as one.
#[derive(Default)]
pub struct Traffic {
    pub pace: Option<Pace>,
    pub counts: Counters,
}

/// Replies awaited, by request id.
#[derive(Default)]
struct Waiting {
    replies: HashMap<u32, SyncSender<Reply>>,
    /// Set once the session is gone: why.
    lost: Option<String>,
}

/// What the reply thread and the requesting threads share.
#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// The last of what `ssh` wrote to stderr.
    said: Mutex<String>,
}

impl Shared {
    fn lost_reason(&self) -> String {
        let waiting = self.waiting.lock().unwrap();
        waiting
            .lost
            .clone()
            .unwrap_or_else(|| "the SFTP session ended".into())
    }
}

/// A live SFTP session.
pub struct Session {
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    traffic: Arc<Traffic>,
    pub extensions: Extensions,
    /// Bytes per read or write request.
    pub chunk: u32,
}

/// A request sent, its reply not yet taken.
pub struct Pending {
    reply: Receiver<Reply>,
    shared: Arc<Shared>,
}

impl Pending {
    /// Waits for the reply.
    pub fn wait(self) -> Result<Reply, Fail> {
        self.reply
            .recv()
            .map_err(|_| Fail::Lost(self.shared.lost_reason()))
    }
}

/// The most of `ssh`'s stderr kept for messages.
const SAID_MAX: usize = 2048;

/// Bytes per read or write where the server names no limit (what every
/// server takes, by the draft).
const DEFAULT_CHUNK: u32 = 32 << 10;
/// The most bytes per request, whatever the server allows: more buys
/// nothing once many requests are in flight.
const MAX_CHUNK: u32 = 255 << 10;

impl Session {
    /// Starts `ssh`, and SFTP over it.
    pub fn connect(target: &Target, traffic: Arc<Traffic>) -> Result<Session, Fail> {
        let mut child = target
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Fail::Lost(format!("cannot run ssh: {e}")))?;
        let shared = Arc::new(Shared::default());
        let stderr = child.stderr.take().unwrap();
        let said_by = Arc::clone(&shared);
        let said_thread = std::thread::spawn(move || keep_said(stderr, &said_by));
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let version = (|| {
            stdin.write_all(&Request::new(protocol::INIT, 0).u32(3).finish())?;
            stdin.flush()?;
            read_packet(&mut stdout)
        })();
        let body = match version {
            Ok(body) => body,
            Err(e) => {
                // ssh failed (refused, unknown host key, no route): what it
                // said is the reason, once it has said all of it.
                let _ = child.kill();
                let _ = child.wait();
                let _ = said_thread.join();
                let said = shared.said.lock().unwrap().trim().to_string();
                return Err(Fail::Lost(if said.is_empty() {
                    format!("ssh ended before SFTP started ({e})")
                } else {
                    said
                }));
            }
        };
        let (_, offered) = protocol::parse_version(&body).map_err(|e| Fail::Protocol(e.0))?;
        let has = |name: &str| offered.iter().any(|n| n == name);
        let extensions = Extensions {
            posix_rename: has("posix-rename@openssh.com"),
            hardlink: has("hardlink@openssh.com"),
            fsync: has("fsync@openssh.com"),
            lsetstat: has("lsetstat@openssh.com"),
            statvfs: has("statvfs@openssh.com"),
            limits: has("limits@openssh.com"),
        };
        let replies_to = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("treeshift-sftp".into())
            .spawn(move || dispatch(stdout, &replies_to))
            .map_err(|e| Fail::Lost(format!("cannot start a thread: {e}")))?;
        let mut session = Session {
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            shared,
            next_id: AtomicU32::new(1),
            traffic,
            extensions,
            chunk: DEFAULT_CHUNK,
        };
        if extensions.limits {
            session.chunk = session.limits()?;
        }
        Ok(session)
    }

    /// The read and write size the server's limits allow.
    fn limits(&self) -> Result<u32, Fail> {
        let body = self.extended("limits@openssh.com", |r| r)?;
        let field = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                body.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let (read, write) = (field(1), field(2));
        let least = match (read, write) {
            (Some(r), Some(w)) if r > 0 && w > 0 => r.min(w),
            _ => return Ok(DEFAULT_CHUNK),
        };
        Ok(least.min(u64::from(MAX_CHUNK)) as u32)
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.waiting.lock().unwrap().replies.len()
    }

    /// True once the session is gone: a new one is needed.
    pub fn is_lost(&self) -> bool {
        self.shared.waiting.lock().unwrap().lost.is_some()
    }

    /// Sends a request of type `kind`, its fields added by `fields`.
    pub fn send(&self, kind: u8, fields: impl FnOnce(Request) -> Request) -> Result<Pending, Fail> {
        if let Some(pace) = &self.traffic.pace {
            self.traffic.counts.waited(pace.wait());
        }
        self.traffic.counts.sent.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let packet = fields(Request::new(kind, id)).finish();
        let (tx, rx) = sync_channel(1);
        {
            let mut waiting = self.shared.waiting.lock().unwrap();
            if let Some(why) = &waiting.lost {
                return Err(Fail::Lost(why.clone()));
            }
            waiting.replies.insert(id, tx);
        }
        let mut stdin = self.stdin.lock().unwrap();
        if let Err(e) = stdin.write_all(&packet).and_then(|()| stdin.flush()) {
            let mut waiting = self.shared.waiting.lock().unwrap();
            waiting.replies.remove(&id);
            let why = waiting
                .lost
                .get_or_insert_with(|| format!("the SFTP session ended ({e})"));
            return Err(Fail::Lost(why.clone()));
        }
        Ok(Pending {
            reply: rx,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Sends a request and waits for its reply.
    pub fn call(&self, kind: u8, fields: impl FnOnce(Request) -> Request) -> Result<Reply, Fail> {
        self.send(kind, fields)?.wait()
    }

    /// A request answered by a status: `Ok` when it is OK.
    pub fn status(&self, kind: u8, fields: impl FnOnce(Request) -> Request) -> Result<(), Fail> {
        expect_ok(self.call(kind, fields)?)
    }

    /// A request answered by a handle (open, opendir).
    pub fn handle(
        &self,
        kind: u8,
        fields: impl FnOnce(Request) -> Request,
    ) -> Result<Vec<u8>, Fail> {
        match self.call(kind, fields)? {
            Reply::Handle(handle) => Ok(handle),
            other => Err(unexpected(other)),
        }
    }

    /// A request answered by attributes (stat, lstat, fstat).
    pub fn attrs(&self, kind: u8, fields: impl FnOnce(Request) -> Request) -> Result<Attrs, Fail> {
        match self.call(kind, fields)? {
            Reply::Attrs(attrs) => Ok(attrs),
            other => Err(unexpected(other)),
        }
    }

    /// An extension's request, answered by a status or its own reply
    /// (whose bytes are returned; none for a status).
    pub fn extended(
        &self,
        name: &str,
        fields: impl FnOnce(Request) -> Request,
    ) -> Result<Vec<u8>, Fail> {
        match self.call(protocol::EXTENDED, |r| fields(r.bytes(name.as_bytes())))? {
            Reply::Extended(body) => Ok(body),
            other => expect_ok(other).map(|()| Vec::new()),
        }
    }

    /// Closes a handle without waiting for the answer (nothing is left to
    /// do about a failed close of a handle read from).
    pub fn close_later(&self, handle: &[u8]) {
        let _ = self.send(protocol::CLOSE, |r| r.bytes(handle));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `Ok` for an OK status, the failure for any other reply.
pub fn expect_ok(reply: Reply) -> Result<(), Fail> {
    match reply {
        Reply::Status {
            code: protocol::OK, ..
        } => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// A reply that is not what the request calls for: a failure status, or
/// a server that does not follow the protocol.
pub fn unexpected(reply: Reply) -> Fail {
    match reply {
        Reply::Status { code, message } => Fail::Status { code, message },
        _ => Fail::Protocol("a reply of the wrong type"),
    }
}

/// Reads one packet's body.
fn read_packet(from: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 4];
    from.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len == 0 || len > protocol::MAX_PACKET {
        return Err(std::io::Error::other(format!(
            "a packet of {len} bytes: the remote side does not speak SFTP \
             (does its shell print something at login?)"
        )));
    }
    let mut body = vec![0; len as usize];
    from.read_exact(&mut body)?;
    Ok(body)
}

/// The reply thread: hands each reply to its waiter until the stream ends,
/// then fails every waiter with the reason.
fn dispatch(mut stdout: impl Read, shared: &Shared) {
    let why = loop {
        let body = match read_packet(&mut stdout) {
            Ok(body) => body,
            Err(e) => break e.to_string(),
        };
        let (id, reply) = match protocol::parse_reply(&body) {
            Ok(parsed) => parsed,
            Err(e) => break format!("the server sent a malformed packet: {}", e.0),
        };
        let waiter = shared.waiting.lock().unwrap().replies.remove(&id);
        // A waiter that gave up (a read cut short) has dropped its end.
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    };
    // What ssh says as it ends says more than a closed pipe.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let said = shared.said.lock().unwrap().trim().to_string();
    let mut waiting = shared.waiting.lock().unwrap();
    waiting.lost.get_or_insert_with(|| {
        if said.is_empty() {
            format!("the SFTP session ended ({why})")
        } else {
            format!("the SFTP session ended: {said}")
        }
    });
    waiting.replies.clear();
}

/// Keeps the last of what `ssh` writes to stderr.
fn keep_said(mut stderr: impl Read, shared: &Shared) {
    let mut buf = [0; 1024];
    while let Ok(n @ 1..) = stderr.read(&mut buf) {
        let mut said = shared.said.lock().unwrap();
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
        if said.len() > SAID_MAX {
            let cut = said.len() - SAID_MAX;
            let cut = (cut..said.len())
                .find(|&i| said.is_char_boundary(i))
                .unwrap_or(said.len());
            said.drain(..cut);
        }
    }
}
