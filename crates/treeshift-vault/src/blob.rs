//! The byte layouts of the records this crate writes.

use crate::VaultError;
use treeshift_core::{Secret, Secrets};
use zeroize::Zeroizing;

/// Reads a record front to back; running short is a damaged record.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], VaultError> {
        if self.bytes.len() < n {
            return Err(VaultError::Corrupt("the record is cut short".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn magic(&mut self, magic: &[u8; 4]) -> Result<(), VaultError> {
        if self.take(4)? != magic {
            return Err(VaultError::Corrupt(
                "not a treeshift credentials record (or of a newer format)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn byte(&mut self) -> Result<u8, VaultError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, VaultError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], VaultError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub(crate) fn rest_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Secrets as bytes to seal: for each, the name's and the value's lengths
/// (u32, little-endian) and bytes.
pub(crate) fn encode_secrets(secrets: &Secrets) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (name, value) in secrets.iter() {
        for part in [name.as_bytes(), value.expose().as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

pub(crate) fn decode_secrets(bytes: &[u8]) -> Result<Secrets, VaultError> {
    let mut r = Reader::new(bytes);
    let mut secrets = Secrets::new();
    let text = |r: &mut Reader<'_>| -> Result<String, VaultError> {
        let len = r.u32()? as usize;
        String::from_utf8(r.take(len)?.to_vec())
            .map_err(|_| VaultError::Corrupt("a secret that is not UTF-8".into()))
    };
    while r.rest_len() > 0 {
        let name = text(&mut r)?;
        let value = Secret::new(text(&mut r)?);
        secrets.insert(name, value);
    }
    Ok(secrets)
}
