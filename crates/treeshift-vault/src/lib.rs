//! Sealed credentials. A migration has one random data key; each of its
//! connections' secrets is sealed (XChaCha20-Poly1305) under a key derived
//! from it with HKDF-SHA256, and the associated data names the migration
//! and the connection, so a sealed blob moved to another row or file does
//! not open. The data key itself is only ever stored wrapped, under a
//! key-encryption key that comes from outside the state file: a 32-byte
//! master key (`TREESHIFT_MASTER_KEY`) or a passphrase stretched with
//! Argon2id.
//!
//! Nothing here touches storage: the store keeps the blobs this crate
//! makes, the binary decides where keys come from.

mod blob;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use blob::Reader;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload, rand_core::RngCore};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use treeshift_core::{Secret, Secrets};
use zeroize::Zeroizing;

/// Bytes of every key here.
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const SALT_LEN: usize = 16;

/// The first bytes of a wrapped data key and of a sealed connection, with
/// the format's version.
const WRAPPED_MAGIC: &[u8; 4] = b"TSK1";
const SEALED_MAGIC: &[u8; 4] = b"TSC1";

/// Domain separation: each use of a key or a ciphertext names what it is.
const KEK_INFO: &[u8] = b"treeshift key-encryption key v1";
const DATA_KEY_AD: &[u8] = b"treeshift data key v1\0";
const CONNECTION_KEY_INFO: &[u8] = b"treeshift connection key v1\0";
const CONNECTION_AD: &[u8] = b"treeshift connection v1\0";

/// Argon2id's cost for a passphrase: 64 MiB, three passes, one lane
/// (RFC 9106's second recommendation, with one lane as this runs once per
/// command).
const PASSPHRASE_COST: (u32, u32, u32) = (64 * 1024, 3, 1);
/// The most a state file may ask of Argon2id: a file altered to ask for
/// terabytes is refused instead of obeyed.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_PASSES: u32 = 64;
const MAX_LANES: u32 = 64;

/// What went wrong. None of these carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// `TREESHIFT_MASTER_KEY` (or a file holding one) is not 32 bytes of
    /// base64.
    #[error(
        "{source_name} is not a key: {why} (expected 32 random bytes in base64, as `head -c 32 /dev/urandom | base64` makes)"
    )]
    BadMasterKey {
        /// Where the key came from.
        source_name: String,
        /// What is wrong with it.
        why: String,
    },
    /// An empty passphrase.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// The data key is wrapped under the other kind of key.
    #[error(
        "this state file's credentials are sealed under a {sealed}, and a {given} was given: give {hint}"
    )]
    OtherKind {
        /// How the data key is wrapped.
        sealed: KeyKind,
        /// What was given.
        given: KeyKind,
        /// How to give the right one.
        hint: &'static str,
    },
    /// The key given does not unwrap the data key.
    #[error(
        "the {0} does not open this state file's credentials (a wrong key, or the file's key record was altered)"
    )]
    WrongKey(KeyKind),
    /// A sealed connection did not open under its key and associated data.
    #[error(
        "the sealed credentials of connection {0} do not open: they were altered, or belong to another connection or state file"
    )]
    Tampered(String),
    /// A blob that is not one this crate wrote.
    #[error("a damaged credentials record: {0}")]
    Corrupt(String),
}

/// Where a key-encryption key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// 32 random bytes (`TREESHIFT_MASTER_KEY`).
    MasterKey,
    /// A passphrase, through Argon2id.
    Passphrase,
}

impl KeyKind {
    /// As stored and shown: `master-key` or `passphrase`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::MasterKey => "master-key",
            KeyKind::Passphrase => "passphrase",
        }
    }

    fn code(self) -> u8 {
        match self {
            KeyKind::MasterKey => 1,
            KeyKind::Passphrase => 2,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::MasterKey => "master key",
            KeyKind::Passphrase => "passphrase",
        })
    }
}

/// A key-encryption key's source, as the user gave it.
pub enum KeySource {
    /// A master key's 32 bytes.
    MasterKey(Zeroizing<[u8; KEY_LEN]>),
    /// A passphrase.
    Passphrase(Secret),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySource({})", self.kind())
    }
}

impl KeySource {
    /// A master key from its base64 text; `source_name` names where it came
    /// from in an error.
    pub fn master_key(base64_text: &str, source_name: &str) -> Result<KeySource, VaultError> {
        let bad = |why: String| VaultError::BadMasterKey {
            source_name: source_name.to_string(),
            why,
        };
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(base64_text.trim())
                .map_err(|_| bad("not base64".into()))?,
        );
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("{} bytes", bytes.len())))?;
        Ok(KeySource::MasterKey(Zeroizing::new(key)))
    }

    /// A passphrase (not empty).
    pub fn passphrase(passphrase: Secret) -> Result<KeySource, VaultError> {
        if passphrase.expose().is_empty() {
            return Err(VaultError::EmptyPassphrase);
        }
        Ok(KeySource::Passphrase(passphrase))
    }

    /// Which kind of key this is.
    pub fn kind(&self) -> KeyKind {
        match self {
            KeySource::MasterKey(_) => KeyKind::MasterKey,
            KeySource::Passphrase(_) => KeyKind::Passphrase,
        }
    }

    /// The key-encryption key, under the parameters a wrapped key's header
    /// gives (a salt and Argon2id's cost, for a passphrase).
    fn kek(&self, header: &Header) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        match (self, header) {
            (KeySource::MasterKey(master), Header::MasterKey) => {
                Hkdf::<Sha256>::new(None, master.as_slice())
                    .expand(KEK_INFO, kek.as_mut_slice())
                    .map_err(|e| VaultError::Corrupt(e.to_string()))?;
            }
            (KeySource::Passphrase(pass), Header::Passphrase { cost, salt }) => {
                let (m, t, p) = *cost;
                let params = Params::new(m, t, p, Some(KEY_LEN))
                    .map_err(|e| VaultError::Corrupt(format!("Argon2id parameters: {e}")))?;
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(pass.expose().as_bytes(), salt, kek.as_mut_slice())
                    .map_err(|e| VaultError::Corrupt(format!("Argon2id: {e}")))?;
            }
            (given, header) => {
                let sealed = header.kind();
                return Err(VaultError::OtherKind {
                    sealed,
                    given: given.kind(),
                    hint: match sealed {
                        KeyKind::MasterKey => "TREESHIFT_MASTER_KEY",
                        KeyKind::Passphrase => "--passphrase-file FILE, or type it at the prompt",
                    },
                });
            }
        }
        Ok(kek)
    }
}

/// How a wrapped data key's key-encryption key is made.
enum Header {
    MasterKey,
    Passphrase {
        cost: (u32, u32, u32),
        salt: [u8; SALT_LEN],
    },
}

impl Header {
    fn kind(&self) -> KeyKind {
        match self {
            Header::MasterKey => KeyKind::MasterKey,
            Header::Passphrase { .. } => KeyKind::Passphrase,
        }
    }

    fn new(kind: KeyKind) -> Header {
        match kind {
            KeyKind::MasterKey => Header::MasterKey,
            KeyKind::Passphrase => {
                let mut salt = [0u8; SALT_LEN];
                OsRng.fill_bytes(&mut salt);
                Header::Passphrase {
                    cost: PASSPHRASE_COST,
                    salt,
                }
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(WRAPPED_MAGIC);
        out.push(self.kind().code());
        if let Header::Passphrase { cost, salt } = self {
            for n in [cost.0, cost.1, cost.2] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(salt);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Header, VaultError> {
        r.magic(WRAPPED_MAGIC)?;
        match r.byte()? {
            1 => Ok(Header::MasterKey),
            2 => {
                let cost = (r.u32()?, r.u32()?, r.u32()?);
                if cost.0 > MAX_MEMORY_KIB || cost.1 > MAX_PASSES || cost.2 > MAX_LANES {
                    return Err(VaultError::Corrupt(format!(
                        "Argon2id parameters out of range: m={} KiB, t={}, p={}",
                        cost.0, cost.1, cost.2
                    )));
                }
                let salt = r.array::<SALT_LEN>()?;
                Ok(Header::Passphrase { cost, salt })
            }
            other => Err(VaultError::Corrupt(format!("unknown key kind {other}"))),
        }
    }
}

/// A data key wrapped under a key-encryption key, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey(pub Vec<u8>);

impl WrappedKey {
    /// The kind of key that unwraps it.
    pub fn kind(&self) -> Result<KeyKind, VaultError> {
        Ok(Header::decode(&mut Reader::new(&self.0))?.kind())
    }
}

/// A migration's data key: 32 random bytes, zeroed on drop.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// A new random migration id (hex), named in every associated data.
pub fn new_migration_uid() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random connection id (hex).
pub fn new_connection_id() -> String {
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("conn-{hex}")
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> DataKey {
        DataKey(Zeroizing::new(
            XChaCha20Poly1305::generate_key(&mut OsRng).into(),
        ))
    }

    /// The data key wrapped under `source`'s key-encryption key, bound to
    /// the migration.
    pub fn wrap(&self, source: &KeySource, migration: &str) -> Result<WrappedKey, VaultError> {
        let header = Header::new(source.kind());
        let kek = source.kek(&header)?;
        let mut out = Vec::new();
        header.encode(&mut out);
        let ad = [DATA_KEY_AD, migration.as_bytes(), &out].concat();
        seal_into(&kek, &ad, self.0.as_slice(), &mut out)?;
        Ok(WrappedKey(out))
    }

    /// Unwraps a data key with `source`.
    pub fn unwrap(
        wrapped: &WrappedKey,
        source: &KeySource,
        migration: &str,
    ) -> Result<DataKey, VaultError> {
        let mut r = Reader::new(&wrapped.0);
        let header = Header::decode(&mut r)?;
        let kek = source.kek(&header)?;
        let header_len = wrapped.0.len() - r.rest_len();
        let ad = [DATA_KEY_AD, migration.as_bytes(), &wrapped.0[..header_len]].concat();
        let nonce = r.array::<NONCE_LEN>()?;
        let plain =
            open(&kek, &ad, &nonce, r.rest()).map_err(|_| VaultError::WrongKey(source.kind()))?;
        let key: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Corrupt("a data key of the wrong length".into()))?;
        Ok(DataKey(Zeroizing::new(key)))
    }

    /// The key of one connection.
    fn connection_key(
        &self,
        migration: &str,
        connection: &str,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        Hkdf::<Sha256>::new(Some(migration.as_bytes()), self.0.as_slice())
            .expand(
                &[CONNECTION_KEY_INFO, connection.as_bytes()].concat(),
                key.as_mut_slice(),
            )
            .map_err(|e| VaultError::Corrupt(e.to_string()))?;
        Ok(key)
    }

    /// A connection's secrets, sealed.
    pub fn seal(
        &self,
        migration: &str,
        connection: &str,
        secrets: &Secrets,
    ) -> Result<Vec<u8>, VaultError> {
        let key = self.connection_key(migration, connection)?;
        let mut out = SEALED_MAGIC.to_vec();
        seal_into(
            &key,
            &connection_ad(migration, connection),
            &blob::encode_secrets(secrets),
            &mut out,
        )?;
        Ok(out)
    }

    /// A connection's secrets, opened.
    pub fn open(
        &self,
        migration: &str,
        connection: &str,
        sealed: &[u8],
    ) -> Result<Secrets, VaultError> {
        let key = self.connection_key(migration, connection)?;
        let mut r = Reader::new(sealed);
        r.magic(SEALED_MAGIC)?;
        let nonce = r.array::<NONCE_LEN>()?;
        let plain = open(
            &key,
            &connection_ad(migration, connection),
            &nonce,
            r.rest(),
        )
        .map_err(|_| VaultError::Tampered(connection.to_string()))?;
        blob::decode_secrets(&plain)
    }
}

fn connection_ad(migration: &str, connection: &str) -> Vec<u8> {
    [
        CONNECTION_AD,
        migration.as_bytes(),
        b"\0",
        connection.as_bytes(),
    ]
    .concat()
}

/// Appends a random nonce and the ciphertext of `plain` to `out`.
fn seal_into(
    key: &[u8; KEY_LEN],
    ad: &[u8],
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), VaultError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plain,
                aad: ad,
            },
        )
        .map_err(|_| VaultError::Corrupt("encryption failed".into()))?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(())
}

/// Opens a ciphertext; fails when it does not authenticate.
fn open(
    key: &[u8; KEY_LEN],
    ad: &[u8],
    nonce: &[u8; NONCE_LEN],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, chacha20poly1305::Error> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: ad,
            },
        )
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests;
