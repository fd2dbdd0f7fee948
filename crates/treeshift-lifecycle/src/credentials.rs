//! A migration's connections and their secrets. Secrets enter once: from
//! the environment (by the names each service's own tools read) or a
//! secret file, on the first discovery, or with `connection set`. With a
//! key (`TREESHIFT_MASTER_KEY`, or a passphrase) they are sealed into the
//! state file, and every later command opens them from there; without one
//! they are read from the environment on every run, and a note says so.

use crate::error::{Result, input};
use crate::state::StateHandle;
use std::io::Read;
use std::path::Path;
use treeshift_core::{Secrets, Side};
use treeshift_store::{Keyring, StoredConnection};
use treeshift_vault::{DataKey, KeyKind, KeySource, WrappedKey};

/// Where the key that opens (or seals) a migration's secrets comes from:
/// the CLI reads an environment variable, a file or a terminal; a server
/// its own configuration.
pub trait Keys: Send + Sync {
    /// The key-encryption key the user gave, if any. `sealed` is how the
    /// state file's data key is wrapped, or `None` when a new one is made.
    fn key(&self, sealed: Option<KeyKind>) -> Result<Option<KeySource>>;

    /// How to give a key of `kind` (for the error that says none was).
    fn how_to_give(&self, kind: KeyKind) -> String;
}

/// The migration's data key, opened (or made) for this command.
pub struct Unlocked {
    uid: String,
    key: DataKey,
}

/// What a sealed blob is bound to: its connection's id and side.
fn label(id: &str, side: Side) -> String {
    format!("{side}:{id}")
}

impl Unlocked {
    /// `secrets` sealed as the connection `id` of `side`.
    pub fn seal(&self, id: &str, side: Side, secrets: &Secrets) -> Result<Vec<u8>> {
        Ok(self.key.seal(&self.uid, &label(id, side), secrets)?)
    }

    /// The secrets a stored connection holds.
    pub fn open(&self, row: &StoredConnection) -> Result<Secrets> {
        Ok(self
            .key
            .open(&self.uid, &label(&row.id, row.side), &row.sealed)?)
    }

    /// A new data key for the migration, wrapped under `source`.
    pub fn create(source: &KeySource, uid: String) -> Result<(Unlocked, Keyring)> {
        let key = DataKey::generate();
        let wrapped = key.wrap(source, &uid)?;
        let keyring = Keyring {
            migration_uid: uid.clone(),
            kek: source.kind().as_str().to_string(),
            wrapped: wrapped.0,
        };
        Ok((Unlocked { uid, key }, keyring))
    }
}

/// Opens the data key a state file holds.
pub fn unlock(keyring: &Keyring, keys: &dyn Keys, state: &Path) -> Result<Unlocked> {
    let wrapped = WrappedKey(keyring.wrapped.clone());
    let kind = wrapped.kind()?;
    let Some(source) = keys.key(Some(kind))? else {
        return Err(input(format!(
            "this migration's secrets are sealed in {} under a {kind}, and none was given: {}",
            state.display(),
            keys.how_to_give(kind)
        )));
    };
    let key = DataKey::unwrap(&wrapped, &source, &keyring.migration_uid)?;
    Ok(Unlocked {
        uid: keyring.migration_uid.clone(),
        key,
    })
}

/// The backend kind a location names, as the connections table shows it.
pub fn kind_of(location: &str) -> &str {
    if let Some((scheme, _)) = location.split_once("://") {
        return scheme;
    }
    if location.starts_with("sim:") {
        "sim"
    } else {
        "local"
    }
}

/// Where one side's secrets come from when they are given.
#[derive(Clone, Debug, Default)]
pub enum SecretSource {
    /// The environment, by the names the service's own tools read.
    #[default]
    Environment,
    /// A secret file of NAME=VALUE lines.
    File(std::path::PathBuf),
    /// Given by name and value (a request to the server).
    Given(Vec<(String, treeshift_core::Secret)>),
}

impl SecretSource {
    /// Whether secrets were given explicitly (not left to the environment).
    pub fn is_given(&self) -> bool {
        !matches!(self, SecretSource::Environment)
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            SecretSource::Environment => "the environment".to_string(),
            SecretSource::File(file) => file.display().to_string(),
            SecretSource::Given(_) => "the request".to_string(),
        }
    }
}

/// Why `name` is not a secret `location` takes, if it is not.
fn not_taken(location: &str, names: &[&str], name: &str) -> Option<String> {
    if names.contains(&name) && !location.starts_with("sftp://") {
        return None;
    }
    let takes = if location.starts_with("sftp://") {
        "an sftp:// location takes its private key from key=FILE".to_string()
    } else if names.is_empty() {
        "it takes no secrets".to_string()
    } else {
        format!("it takes {}", names.join(", "))
    };
    Some(format!("{name} is not a secret of {location} ({takes})"))
}

/// A location's secrets, from where `source` says.
pub fn gather(location: &str, source: &SecretSource) -> Result<Secrets> {
    let backend_error = input;
    let names = treeshift_backend::secret_names(location).map_err(backend_error)?;
    let given: Vec<(String, zeroize::Zeroizing<String>)> = match source {
        SecretSource::Environment => {
            let env = |name: &str| std::env::var(name).ok();
            return treeshift_backend::gather_secrets(location, &env).map_err(backend_error);
        }
        SecretSource::File(file) => read_secret_file(file, location, names)?,
        SecretSource::Given(pairs) => {
            let mut given = Vec::new();
            for (name, value) in pairs {
                if let Some(why) = not_taken(location, names, name) {
                    return Err(input(why));
                }
                given.push((
                    name.clone(),
                    zeroize::Zeroizing::new(value.expose().to_string()),
                ));
            }
            given
        }
    };
    let lookup = |name: &str| {
        given
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string())
    };
    treeshift_backend::gather_secrets(location, &lookup).map_err(backend_error)
}

/// The NAME=VALUE lines of a secret file, each name one `location` takes.
fn read_secret_file(
    file: &Path,
    location: &str,
    names: &[&str],
) -> Result<Vec<(String, zeroize::Zeroizing<String>)>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::fs::File::open(file)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| {
            input(format!(
                "cannot read the secret file {}: {e}",
                file.display()
            ))
        })?;
    let mut given = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(input(format!(
                "{}: line {}: expected NAME=VALUE",
                file.display(),
                n + 1
            )));
        };
        let name = name.trim();
        if let Some(why) = not_taken(location, names, name) {
            return Err(input(format!("{}: line {}: {why}", file.display(), n + 1)));
        }
        given.push((name.to_string(), zeroize::Zeroizing::new(value.to_string())));
    }
    Ok(given)
}

/// One side's stored connection that holds sealed secrets.
fn sealed_row(rows: &[StoredConnection], side: Side) -> Option<&StoredConnection> {
    rows.iter()
        .find(|r| r.side == side && !r.secret_names.is_empty())
}

/// The secrets of both sides of a migration whose state file is open
/// (copy, retry, verify): sealed ones where the file holds them, else the
/// environment's.
pub fn for_existing(handle: &StateHandle, keys: &dyn Keys) -> Result<[Secrets; 2]> {
    let spec = handle.migration()?;
    let rows = handle.connections()?;
    let unlocked = match rows.iter().any(|r| !r.secret_names.is_empty()) {
        true => Some(unlock_from(handle, keys)?),
        false => None,
    };
    let mut out = [Secrets::new(), Secrets::new()];
    for (i, (side, location)) in [(Side::Src, &spec.src), (Side::Dst, &spec.dst)]
        .into_iter()
        .enumerate()
    {
        out[i] = match (sealed_row(&rows, side), &unlocked) {
            (Some(row), Some(u)) => u.open(row)?,
            _ => gather(location, &SecretSource::Environment)?,
        };
    }
    Ok(out)
}

fn unlock_from(handle: &StateHandle, keys: &dyn Keys) -> Result<Unlocked> {
    let keyring = handle.keyring()?.ok_or_else(|| {
        input("the state file holds sealed connections but no key record: it was altered")
    })?;
    unlock(&keyring, keys, handle.path())
}

/// The secrets a discovery opens its backends with, chosen before the
/// state file is open for it.
pub struct ForDiscovery {
    /// By side, source first.
    pub secrets: [Secrets; 2],
    /// By side: given now (the environment or a secret file), to be sealed.
    given_now: [bool; 2],
    unlocked: Option<Unlocked>,
}

/// Chooses each side's secrets for a discovery: the sealed ones where the
/// state file (`existing`, when there is one) holds some (unless a secret
/// file replaces them), else the secret file's or the environment's.
pub fn for_discovery(
    state: &Path,
    existing: Option<&StateHandle>,
    locations: [&str; 2],
    sources: [&SecretSource; 2],
    keys: &dyn Keys,
) -> Result<ForDiscovery> {
    let (keyring, rows) = match existing {
        Some(handle) => (handle.keyring()?, handle.connections()?),
        None => (None, Vec::new()),
    };
    let mut out = ForDiscovery {
        secrets: [Secrets::new(), Secrets::new()],
        given_now: [false; 2],
        unlocked: None,
    };
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        match (sealed_row(&rows, side), sources[i], &keyring) {
            (Some(row), SecretSource::Environment, Some(keyring)) => {
                if out.unlocked.is_none() {
                    out.unlocked = Some(unlock(keyring, keys, state)?);
                }
                out.secrets[i] = out
                    .unlocked
                    .as_ref()
                    .map_or_else(|| Ok(Secrets::new()), |u| u.open(row))?;
            }
            _ => {
                out.secrets[i] = gather(locations[i], sources[i])?;
                out.given_now[i] = true;
            }
        }
    }
    Ok(out)
}

/// Records both sides' connections in the opened state file: the secrets
/// given now are sealed (under the migration's data key, made on first
/// use) when a key was given. Returns the sides whose secrets were not
/// kept, for want of a key (they are read from the environment each run).
pub fn record(handle: &StateHandle, chosen: ForDiscovery, keys: &dyn Keys) -> Result<Vec<Side>> {
    let spec = handle.migration()?;
    let rows = handle.connections()?;
    let mut keyring = handle.keyring()?;
    let mut new_keyring = None;
    let mut unlocked = chosen.unlocked;
    let mut save = Vec::new();
    let mut not_kept = Vec::new();
    for (i, (side, location)) in [(Side::Src, &spec.src), (Side::Dst, &spec.dst)]
        .into_iter()
        .enumerate()
    {
        let existing = rows.iter().find(|r| r.side == side);
        if !chosen.given_now[i] && existing.is_some() {
            continue;
        }
        let secrets = &chosen.secrets[i];
        let id = existing.map_or_else(treeshift_vault::new_connection_id, |r| r.id.clone());
        let mut row = StoredConnection {
            id,
            side,
            kind: kind_of(location).to_string(),
            location: location.clone(),
            secret_names: Vec::new(),
            sealed: Vec::new(),
            updated_at: String::new(),
        };
        if !secrets.is_empty() {
            if unlocked.is_none() {
                unlocked = match keyring.take() {
                    Some(k) => Some(unlock(&k, keys, handle.path())?),
                    None => match keys.key(None)? {
                        Some(source) => {
                            let (u, k) =
                                Unlocked::create(&source, treeshift_vault::new_migration_uid())?;
                            new_keyring = Some(k);
                            Some(u)
                        }
                        None => None,
                    },
                };
            }
            match &unlocked {
                Some(u) => {
                    row.secret_names = secrets.names().map(str::to_string).collect();
                    row.sealed = u.seal(&row.id, side, secrets)?;
                }
                None => {
                    not_kept.push(side);
                    if existing.is_some() {
                        continue;
                    }
                }
            }
        } else if existing.is_some_and(|r| !r.secret_names.is_empty()) {
            // An empty secret file does not wipe what was sealed.
            continue;
        }
        save.push(row);
    }
    if !save.is_empty() || new_keyring.is_some() {
        handle.save_credentials(new_keyring, save)?;
    }
    Ok(not_kept)
}
