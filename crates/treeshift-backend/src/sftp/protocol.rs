//! The SFTP wire format, version 3 (draft-ietf-secsh-filexfer-02, which
//! OpenSSH and most servers speak), with OpenSSH's extensions: packets in,
//! packets out, nothing else.
//!
//! Names are raw bytes end to end. That is why treeshift speaks SFTP
//! itself: the crates that do (and OpenDAL's service over them) decode
//! every name in a folder's listing as UTF-8, so one Latin-1 name fails
//! the whole folder.

/// Request types.
pub const INIT: u8 = 1;
pub const OPEN: u8 = 3;
pub const CLOSE: u8 = 4;
pub const READ: u8 = 5;
pub const WRITE: u8 = 6;
pub const LSTAT: u8 = 7;
pub const FSTAT: u8 = 8;
pub const SETSTAT: u8 = 9;
pub const FSETSTAT: u8 = 10;
pub const OPENDIR: u8 = 11;
pub const READDIR: u8 = 12;
pub const REMOVE: u8 = 13;
pub const MKDIR: u8 = 14;
pub const RMDIR: u8 = 15;
pub const STAT: u8 = 17;
pub const RENAME: u8 = 18;
pub const READLINK: u8 = 19;
pub const SYMLINK: u8 = 20;
pub const EXTENDED: u8 = 200;

/// Reply types.
const VERSION: u8 = 2;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;
const ATTRS: u8 = 105;
const EXTENDED_REPLY: u8 = 201;

/// Open flags.
pub const OPEN_READ: u32 = 0x01;
pub const OPEN_WRITE: u32 = 0x02;
pub const OPEN_CREATE: u32 = 0x08;
pub const OPEN_TRUNCATE: u32 = 0x10;

/// Status codes.
pub const OK: u32 = 0;
pub const EOF: u32 = 1;
pub const NO_SUCH_FILE: u32 = 2;
pub const PERMISSION_DENIED: u32 = 3;
pub const NO_CONNECTION: u32 = 6;
pub const CONNECTION_LOST: u32 = 7;
pub const OP_UNSUPPORTED: u32 = 8;

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// The largest packet read from a server (OpenSSH's own limit is 256 KiB):
/// a bigger length means the stream is not SFTP (a shell's greeting on
/// stdout, say), not a packet to allocate for.
pub const MAX_PACKET: u32 = 1 << 20;

/// What a server says about an item (each field where it says it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub owner: Option<(u32, u32)>,
    /// The whole `st_mode`: file type bits and permissions.
    pub mode: Option<u32>,
    /// Access and modification times, whole seconds (all v3 carries).
    pub times: Option<(u32, u32)>,
}

/// One item of a folder listing.
#[derive(Debug)]
pub struct NameEntry {
    pub name: Vec<u8>,
    pub attrs: Attrs,
}

/// A server's reply to one request.
#[derive(Debug)]
pub enum Reply {
    Status { code: u32, message: String },
    Handle(Vec<u8>),
    Data(Vec<u8>),
    Name(Vec<NameEntry>),
    Attrs(Attrs),
    Extended(Vec<u8>),
}

/// A packet that does not parse.
#[derive(Debug)]
pub struct Malformed(pub &'static str);

/// Builds one request's bytes: length, type, id, then the fields.
pub struct Request(Vec<u8>);

impl Request {
    pub fn new(kind: u8, id: u32) -> Request {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&[0; 4]);
        bytes.push(kind);
        if kind != INIT {
            bytes.extend_from_slice(&id.to_be_bytes());
        }
        Request(bytes)
    }

    pub fn u32(mut self, v: u32) -> Request {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Request {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(mut self, v: &[u8]) -> Request {
        self = self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }

    pub fn attrs(mut self, a: &Attrs) -> Request {
        let flags = a.size.map_or(0, |_| ATTR_SIZE)
            | a.owner.map_or(0, |_| ATTR_UIDGID)
            | a.mode.map_or(0, |_| ATTR_PERMISSIONS)
            | a.times.map_or(0, |_| ATTR_ACMODTIME);
        self = self.u32(flags);
        if let Some(size) = a.size {
            self = self.u64(size);
        }
        if let Some((uid, gid)) = a.owner {
            self = self.u32(uid).u32(gid);
        }
        if let Some(mode) = a.mode {
            self = self.u32(mode);
        }
        if let Some((atime, mtime)) = a.times {
            self = self.u32(atime).u32(mtime);
        }
        self
    }

    /// The finished packet, its length filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// Reads the fields of one packet's body in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("a packet ends inside a field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn attrs(&mut self) -> Result<Attrs, Malformed> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.owner = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.mode = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            for _ in 0..self.u32()? {
                self.bytes()?;
                self.bytes()?;
            }
        }
        Ok(a)
    }
}

/// Parses the server's first packet (after the length): its version and
/// the names of the extensions it offers.
pub fn parse_version(body: &[u8]) -> Result<(u32, Vec<String>), Malformed> {
    let mut f = Fields(body);
    if f.u8()? != VERSION {
        return Err(Malformed("the first packet is not SSH_FXP_VERSION"));
    }
    let version = f.u32()?;
    let mut extensions = Vec::new();
    while !f.0.is_empty() {
        extensions.push(String::from_utf8_lossy(f.bytes()?).into_owned());
        f.bytes()?; // its version
    }
    Ok((version, extensions))
}

/// Parses one reply packet (after the length) into its request id and
/// what it says.
pub fn parse_reply(body: &[u8]) -> Result<(u32, Reply), Malformed> {
    let mut f = Fields(body);
    let kind = f.u8()?;
    let id = f.u32()?;
    let reply = match kind {
        STATUS => {
            let code = f.u32()?;
            // Servers before v3 may end the packet after the code.
            let message = f.bytes().map(String::from_utf8_lossy).unwrap_or_default();
            Reply::Status {
                code,
                message: message.into_owned(),
            }
        }
        HANDLE => Reply::Handle(f.bytes()?.to_vec()),
        DATA => Reply::Data(f.bytes()?.to_vec()),
        NAME => {
            let count = f.u32()?;
            let mut entries = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                let name = f.bytes()?.to_vec();
                f.bytes()?; // the `ls -l` line, for people
                entries.push(NameEntry {
                    name,
                    attrs: f.attrs()?,
                });
            }
            Reply::Name(entries)
        }
        ATTRS => Reply::Attrs(f.attrs()?),
        EXTENDED_REPLY => Reply::Extended(f.0.to_vec()),
        _ => return Err(Malformed("an unknown reply type")),
    };
    Ok((id, reply))
}

/// `statvfs@openssh.com`'s reply: the blocks free to an unprivileged user,
/// times the fragment size (bytes a write may still take).
pub fn parse_statvfs_available(body: &[u8]) -> Result<u64, Malformed> {
    let mut f = Fields(body);
    let _bsize = f.u64()?;
    let frsize = f.u64()?;
    let _blocks = f.u64()?;
    let _bfree = f.u64()?;
    let bavail = f.u64()?;
    Ok(bavail.saturating_mul(frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(packet: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(packet[..4].try_into().unwrap()) as usize;
        assert_eq!(len, packet.len() - 4);
        &packet[4..]
    }

    #[test]
    fn a_listing_keeps_names_as_bytes() {
        let attrs = Attrs {
            size: Some(5),
            owner: Some((1000, 100)),
            mode: Some(0o100644),
            times: Some((1, 1_700_000_000)),
        };
        // A reply is built like a request: type, id, fields.
        let packet = Request::new(NAME, 7)
            .u32(2)
            .bytes(b"caf\xe9")
            .bytes(b"-rw-r--r-- ...")
            .attrs(&attrs)
            .bytes(b"dir")
            .bytes(b"")
            .attrs(&Attrs::default())
            .finish();
        let (id, reply) = parse_reply(body(&packet)).unwrap();
        assert_eq!(id, 7);
        let Reply::Name(entries) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(entries[0].name, b"caf\xe9");
        assert_eq!(entries[0].attrs, attrs);
        assert_eq!(entries[1].name, b"dir");
        assert_eq!(entries[1].attrs, Attrs::default());
    }

    #[test]
    fn short_and_unknown_packets_are_malformed() {
        assert!(parse_reply(&[STATUS, 0, 0]).is_err());
        assert!(parse_reply(&[99, 0, 0, 0, 1]).is_err());
        let truncated = Request::new(HANDLE, 1).u32(10).bytes(b"ab").finish();
        assert!(parse_reply(&body(&truncated)[..9]).is_err());
        let (_, status) = parse_reply(&[STATUS, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap();
        assert!(matches!(status, Reply::Status { code: 2, .. }));
    }

    #[test]
    fn the_version_names_extensions() {
        let packet = Request::new(VERSION, 0)
            .bytes(b"posix-rename@openssh.com")
            .bytes(b"1")
            .finish();
        // VERSION has the version where requests have an id.
        let (version, ext) = parse_version(body(&packet)).unwrap();
        assert_eq!(version, 0);
        assert_eq!(ext, vec!["posix-rename@openssh.com".to_string()]);
    }
}
