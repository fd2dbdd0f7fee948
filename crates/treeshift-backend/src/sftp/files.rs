//! A file's data over SFTP, with many requests in flight: one request per
//! chunk would wait one round trip per chunk.

use super::protocol::{self, Reply};
use super::session::{Fail, Pending, Session, expect_ok, unexpected};
use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

/// Requests in flight per file, each of one chunk.
const DEPTH: usize = 32;

/// Reads an open remote file from its start, as a stream.
pub struct RemoteRead {
    session: Arc<Session>,
    handle: Vec<u8>,
    /// The size the file had when opened: reads are sent ahead up to it,
    /// and past it one at a time (which finds the end, or what was added).
    size: u64,
    /// Reads sent and not yet taken: offset, length, reply.
    in_flight: VecDeque<(u64, u32, Pending)>,
    /// The offset of the next read to send.
    next: u64,
    /// Data received and not yet given out.
    data: Vec<u8>,
    at: usize,
    /// The server said end of file.
    ended: bool,
}

impl RemoteRead {
    pub fn new(session: Arc<Session>, handle: Vec<u8>, size: u64) -> RemoteRead {
        RemoteRead {
            session,
            handle,
            size,
            in_flight: VecDeque::new(),
            next: 0,
            data: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    fn fill(&mut self) -> Result<(), Fail> {
        let chunk = self.session.chunk;
        while self.in_flight.len() < DEPTH && (self.next < self.size || self.in_flight.is_empty()) {
            let offset = self.next;
            let pending = self.session.send(protocol::READ, |r| {
                r.bytes(&self.handle).u64(offset).u32(chunk)
            })?;
            self.in_flight.push_back((offset, chunk, pending));
            self.next += u64::from(chunk);
        }
        Ok(())
    }

    /// Takes the next chunk into `data`; false at the end of the file.
    fn next_chunk(&mut self) -> Result<bool, Fail> {
        if self.ended {
            return Ok(false);
        }
        self.fill()?;
        let (offset, asked, pending) = self.in_flight.pop_front().unwrap();
        match pending.wait()? {
            Reply::Data(data) if !data.is_empty() => {
                if data.len() < asked as usize {
                    // A short read (a server may cut one): what was sent
                    // after it asked for the wrong offsets. Ask again from
                    // here; the replies to the others are dropped.
                    self.in_flight.clear();
                    self.next = offset + data.len() as u64;
                }
                self.data = data;
                self.at = 0;
                Ok(true)
            }
            Reply::Data(_)
            | Reply::Status {
                code: protocol::EOF,
                ..
            } => {
                self.ended = true;
                self.in_flight.clear();
                Ok(false)
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.data.len() {
            if !self.next_chunk().map_err(io_error)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for RemoteRead {
    fn drop(&mut self) {
        self.session.close_later(&self.handle);
    }
}

/// What stopped a write of a file's data.
pub enum WriteFail {
    /// Reading the source failed.
    Source(std::io::Error),
    /// The server refused, or the session ended.
    Remote(Fail),
}

/// Sends everything `source` gives to the open remote file from its
/// start: the bytes sent, and the last writes, still unanswered (the
/// caller sends what follows behind them and then waits for all).
pub fn write_from(
    session: &Session,
    handle: &[u8],
    source: &mut dyn Read,
) -> Result<(u64, VecDeque<Pending>), WriteFail> {
    let mut in_flight = VecDeque::new();
    let mut offset = 0u64;
    let mut buf = vec![0; session.chunk as usize];
    loop {
        let n = crate::read_full(source, &mut buf).map_err(WriteFail::Source)?;
        if n == 0 {
            break;
        }
        if in_flight.len() == DEPTH {
            let oldest: Pending = in_flight.pop_front().unwrap();
            oldest
                .wait()
                .and_then(expect_ok)
                .map_err(WriteFail::Remote)?;
        }
        let pending = session
            .send(protocol::WRITE, |r| {
                r.bytes(handle).u64(offset).bytes(&buf[..n])
            })
            .map_err(WriteFail::Remote)?;
        in_flight.push_back(pending);
        offset += n as u64;
    }
    Ok((offset, in_flight))
}

/// An SFTP failure as the I/O error a reader gives: a session that ended
/// is a connection reset (worth another try), a refusal is not.
pub fn io_error(fail: Fail) -> std::io::Error {
    match fail {
        Fail::Lost(why) => std::io::Error::new(std::io::ErrorKind::ConnectionReset, why),
        Fail::Status { code, message } => std::io::Error::other(format!(
            "the SFTP server refused a read: {message} (status {code})"
        )),
        Fail::Protocol(what) => std::io::Error::other(format!("SFTP: {what}")),
    }
}
