//! A migration's connections and their secrets. Secrets enter once: from
//! the environment (by the names each service's own tools read) or a
//! secret file, on the first discovery, or with `connection set`. With a
//! key (`TREESHIFT_MASTER_KEY`, or a passphrase) they are sealed into the
//! state file, and every later command opens them from there; without one
//! they are read from the environment on every run, and a note says so.

use crate::cli::KeyArgs;
use crate::usage;
use anyhow::{Context, Result};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use treeshift_core::{Secret, Secrets, Side};
use treeshift_store::{Keyring, OpenMode, Store, StoreError, StoreHandle, StoredConnection};
use treeshift_vault::{DataKey, KeyKind, KeySource, VaultError, WrappedKey};

/// The environment variable of the master key.
pub const MASTER_KEY_ENV: &str = "TREESHIFT_MASTER_KEY";
/// The environment variable of the new master key, for `rekey`.
pub const NEW_MASTER_KEY_ENV: &str = "TREESHIFT_NEW_MASTER_KEY";

/// A wrong, missing or unusable key is the user's to fix: exit code 2.
fn vault_error(e: VaultError) -> anyhow::Error {
    usage(e)
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
    pub fn seal(&self, id: &str, side: Side, secrets: &Secrets) -> Result<Vec<u8>> {
        self.key
            .seal(&self.uid, &label(id, side), secrets)
            .map_err(vault_error)
    }

    pub fn open(&self, row: &StoredConnection) -> Result<Secrets> {
        self.key
            .open(&self.uid, &label(&row.id, row.side), &row.sealed)
            .map_err(vault_error)
    }

    /// A new data key for the migration, wrapped under `source`.
    pub fn create(source: &KeySource, uid: String) -> Result<(Unlocked, Keyring)> {
        let key = DataKey::generate();
        let wrapped = key.wrap(source, &uid).map_err(vault_error)?;
        let keyring = Keyring {
            migration_uid: uid.clone(),
            kek: source.kind().as_str().to_string(),
            wrapped: wrapped.0,
        };
        Ok((Unlocked { uid, key }, keyring))
    }
}

/// The first line of a file, as a passphrase.
pub fn passphrase_from_file(path: &Path) -> Result<KeySource> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))
        .map_err(|e| usage(format!("{e:#}")))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    let line = Secret::new(line.trim_end_matches(['\n', '\r']).to_string());
    KeySource::passphrase(line).map_err(vault_error)
}

/// A line typed on the terminal without echo.
pub fn ask_hidden(prompt: &str) -> Result<Secret> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| usage(format!("no terminal to ask on ({e})")))?;
    let before = tcgetattr(&tty).context("read the terminal's settings")?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Flush, &quiet).context("turn the terminal's echo off")?;
    let _ = write!(tty, "{prompt}");
    let _ = tty.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Flush, &before);
    let _ = writeln!(tty);
    read.context("read from the terminal")?;
    Ok(Secret::new(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// A passphrase asked on the terminal; twice when it is a new one.
pub fn ask_passphrase(what: &str, confirm: bool) -> Result<KeySource> {
    let first = ask_hidden(&format!("{what}: "))?;
    if confirm && ask_hidden(&format!("{what} (again): "))? != first {
        return Err(usage("the two passphrases differ"));
    }
    KeySource::passphrase(first).map_err(vault_error)
}

/// The key-encryption key the user gave: a passphrase file, a passphrase
/// asked for, or the master key in the environment. A passphrase is
/// asked unasked when the secrets are sealed under one and a terminal is
/// there.
pub fn given_key(keys: &KeyArgs, sealed: Option<KeyKind>) -> Result<Option<KeySource>> {
    if let Some(file) = &keys.passphrase_file {
        return passphrase_from_file(file).map(Some);
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if keys.ask_passphrase || (sealed == Some(KeyKind::Passphrase) && terminal) {
        return ask_passphrase("passphrase", sealed.is_none()).map(Some);
    }
    match std::env::var(MASTER_KEY_ENV) {
        Ok(text) if !text.is_empty() => KeySource::master_key(&text, MASTER_KEY_ENV)
            .map(Some)
            .map_err(vault_error),
        _ => Ok(None),
    }
}

/// Opens the data key a state file holds.
pub fn unlock(keyring: &Keyring, keys: &KeyArgs, state: &Path) -> Result<Unlocked> {
    let wrapped = WrappedKey(keyring.wrapped.clone());
    let kind = wrapped.kind().map_err(vault_error)?;
    let Some(source) = given_key(keys, Some(kind))? else {
        let how = match kind {
            KeyKind::MasterKey => format!("set {MASTER_KEY_ENV}"),
            KeyKind::Passphrase => "give --passphrase-file FILE or --ask-passphrase".to_string(),
        };
        return Err(usage(format!(
            "this migration's secrets are sealed in {} under a {kind}, and none was given: {how}",
            state.display()
        )));
    };
    let key = DataKey::unwrap(&wrapped, &source, &keyring.migration_uid).map_err(vault_error)?;
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

/// A location's secrets: from a secret file when one is given, else from
/// the environment.
pub fn gather(location: &str, secret_file: Option<&Path>) -> Result<Secrets> {
    let backend_error = |e: treeshift_backend::BackendError| usage(e);
    let Some(file) = secret_file else {
        let env = |name: &str| std::env::var(name).ok();
        return treeshift_backend::gather_secrets(location, &env).map_err(backend_error);
    };
    let names = treeshift_backend::secret_names(location).map_err(backend_error)?;
    let mut text = zeroize::Zeroizing::new(String::new());
    std::fs::File::open(file)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| {
            usage(format!(
                "cannot read the secret file {}: {e}",
                file.display()
            ))
        })?;
    let mut given: Vec<(String, zeroize::Zeroizing<String>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(usage(format!(
                "{}: line {}: expected NAME=VALUE",
                file.display(),
                n + 1
            )));
        };
        let name = name.trim();
        if !names.contains(&name) || location.starts_with("sftp://") {
            let takes = if location.starts_with("sftp://") {
                "an sftp:// location takes its private key from key=FILE".to_string()
            } else if names.is_empty() {
                "it takes no secrets".to_string()
            } else {
                format!("it takes {}", names.join(", "))
            };
            return Err(usage(format!(
                "{}: line {}: {name} is not a secret of {location} ({takes})",
                file.display(),
                n + 1
            )));
        }
        given.push((name.to_string(), zeroize::Zeroizing::new(value.to_string())));
    }
    let lookup = |name: &str| {
        given
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string())
    };
    treeshift_backend::gather_secrets(location, &lookup).map_err(backend_error)
}

/// One side's stored connection that holds sealed secrets.
fn sealed_row(rows: &[StoredConnection], side: Side) -> Option<&StoredConnection> {
    rows.iter()
        .find(|r| r.side == side && !r.secret_names.is_empty())
}

/// The secrets of both sides of a migration whose state file is open
/// (copy, retry, verify): sealed ones where the file holds them, else the
/// environment's.
pub fn for_existing(handle: &StoreHandle, keys: &KeyArgs) -> Result<[Secrets; 2]> {
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
            _ => gather(location, None)?,
        };
    }
    Ok(out)
}

fn unlock_from(handle: &StoreHandle, keys: &KeyArgs) -> Result<Unlocked> {
    let keyring = handle.keyring()?.ok_or_else(|| {
        anyhow::anyhow!("the state file holds sealed connections but no key record: it was altered")
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

/// Chooses each side's secrets for a discovery: the sealed ones where an
/// existing state file holds some (unless a secret file replaces them),
/// else the secret file's or the environment's.
pub fn for_discovery(
    state: &Path,
    locations: [&str; 2],
    secret_files: [Option<&Path>; 2],
    keys: &KeyArgs,
) -> Result<ForDiscovery> {
    let (keyring, rows) = match Store::open(state, OpenMode::Existing) {
        Ok((store, _)) => {
            let handle = store.handle();
            let read = handle
                .keyring()
                .and_then(|k| Ok((k, handle.connections()?)));
            store.close()?;
            read?
        }
        // Nothing recorded yet: no file, or one that a run killed as it
        // created it left empty; a file that is another program's is
        // refused by the open that follows, in its own words.
        Err(StoreError::Missing(_) | StoreError::NotAStateFile { .. }) => (None, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = ForDiscovery {
        secrets: [Secrets::new(), Secrets::new()],
        given_now: [false; 2],
        unlocked: None,
    };
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        match (sealed_row(&rows, side), secret_files[i], &keyring) {
            (Some(row), None, Some(keyring)) => {
                if out.unlocked.is_none() {
                    out.unlocked = Some(unlock(keyring, keys, state)?);
                }
                out.secrets[i] = out
                    .unlocked
                    .as_ref()
                    .map_or_else(|| Ok(Secrets::new()), |u| u.open(row))?;
            }
            _ => {
                out.secrets[i] = gather(locations[i], secret_files[i])?;
                out.given_now[i] = true;
            }
        }
    }
    Ok(out)
}

/// Records both sides' connections in the opened state file: the secrets
/// given now are sealed (under the migration's data key, made on first
/// use) when a key was given; without one, a note says they were not kept.
pub fn record(handle: &StoreHandle, chosen: ForDiscovery, keys: &KeyArgs) -> Result<()> {
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
                    None => match given_key(keys, None)? {
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
    if !not_kept.is_empty() {
        let sides: Vec<&str> = not_kept
            .iter()
            .map(|s| match s {
                Side::Src => "source",
                Side::Dst => "destination",
            })
            .collect();
        eprintln!(
            "treeshift: note: the {} secrets are read from the environment on every run, not kept: set {MASTER_KEY_ENV} (or give --passphrase-file) to seal them in the state file",
            sides.join(" and ")
        );
    }
    if !save.is_empty() || new_keyring.is_some() {
        handle.save_credentials(new_keyring, save)?;
    }
    Ok(())
}
