//! `treeshift serve` on a free loopback port, and requests to it.

use super::{command, s};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `treeshift serve`, killed when dropped.
pub struct ApiServer {
    pub child: Child,
    pub port: u16,
    pub token: Option<String>,
}

impl ApiServer {
    pub fn start(dir: &Path, extra: &[&str], token: Option<&str>) -> ApiServer {
        ApiServer::start_by(command(), dir, extra, token)
    }

    /// Starts `treeshift serve` from `command` (its environment), on a
    /// port the server takes itself (`:0`) and says on its first line: a
    /// port picked here and bound later could meanwhile be taken by
    /// another test's server.
    pub fn start_by(
        mut command: Command,
        dir: &Path,
        extra: &[&str],
        token: Option<&str>,
    ) -> ApiServer {
        let mut child = command
            .args(["serve", "--dir", s(dir), "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (said, port) = std::sync::mpsc::channel();
        // Read to the end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let bound = line
                    .split_once("http://127.0.0.1:")
                    .and_then(|(_, rest)| rest.split('/').next()?.parse::<u16>().ok());
                if let Some(bound) = bound {
                    let _ = said.send(bound);
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not start");
        ApiServer {
            child,
            port,
            token: token.map(str::to_string),
        }
    }

    /// Sends a request; returns the status and the body (JSON, or the raw
    /// text as a JSON string).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, body.as_bytes(), self.token.as_deref())
    }

    pub fn raw(&self, method: &str, path: &str, body: &[u8], token: Option<&str>) -> (u16, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            unchunk(body)
        } else {
            body.to_string()
        };
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, value)
    }

    pub fn get(&self, path: &str) -> Value {
        let (code, v) = self.call("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&body))
    }

    /// Waits for the migration's job to end; returns its status.
    pub fn wait_job(&self, name: &str) -> Value {
        let start = Instant::now();
        loop {
            let status = self.get(&format!("/api/migrations/{name}"));
            if status["job"]["running"] == false {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a job to its end and checks it finished.
    pub fn job(&self, name: &str, op: &str, options: Value) -> Value {
        let (code, v) = self.post(&format!("/api/migrations/{name}/jobs/{op}"), options);
        assert_eq!(code, 202, "{v}");
        let status = self.wait_job(name);
        assert_eq!(status["job"]["outcome"]["state"], "done", "{status}");
        status
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
