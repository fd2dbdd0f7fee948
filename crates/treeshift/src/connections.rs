//! The commands that show and change a migration's connections:
//! `connections`, `connection set`, `connection set-secret`, `rekey`.

use crate::cli::{ConnectionSetArgs, ConnectionsArgs, KeyArgs, RekeyArgs, SetSecretArgs, SideArg};
use crate::credentials::{self, NEW_MASTER_KEY_ENV, Unlocked};
use crate::{Exit, usage, with_store};
use anyhow::Result;
use std::io::{IsTerminal, Read};
use treeshift_core::{Secret, Secrets, Side};
use treeshift_store::{OpenMode, StoreHandle, StoredConnection};
use treeshift_vault::KeySource;

fn side(arg: SideArg) -> Side {
    match arg {
        SideArg::Src => Side::Src,
        SideArg::Dst => Side::Dst,
    }
}

/// `connections`: each side's connection, its secrets' names only.
pub fn list(args: ConnectionsArgs) -> Result<Exit> {
    let (rows, keyring, spec) = with_store(&args.state, OpenMode::Existing, |h| {
        Ok((h.connections()?, h.keyring()?, h.migration()?))
    })?;
    let key = keyring.as_ref().map(|k| k.kek.clone());
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "side": r.side.as_str(),
                    "kind": r.kind,
                    "location": r.location,
                    "secrets": r.secret_names.iter()
                        .map(|n| (n.clone(), serde_json::Value::from("********")))
                        .collect::<serde_json::Map<_, _>>(),
                    "updated_at": r.updated_at,
                })
            })
            .collect();
        let value = serde_json::json!({ "sealed_under": key, "connections": list });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(Exit::Done);
    }
    if rows.is_empty() {
        println!("no connection recorded (the migration reads its secrets from the environment)");
        println!("source:      {}", spec.src);
        println!("destination: {}", spec.dst);
        return Ok(Exit::Done);
    }
    for r in &rows {
        println!("{} {} ({}) {}", r.side, r.id, r.kind, r.location);
        let takes = treeshift_backend::secret_names(&r.location).is_ok_and(|n| !n.is_empty());
        match (r.secret_names.is_empty(), takes) {
            (true, true) => {
                println!("    secrets: none kept (read from the environment on every run)")
            }
            (true, false) => println!("    secrets: none (it takes none)"),
            _ => {}
        }
        for name in &r.secret_names {
            println!("    {name}=********");
        }
        println!("    updated: {}", r.updated_at);
    }
    match key {
        Some(kind) => println!("sealed under a {}", kind.replace('-', " ")),
        None => println!("nothing sealed"),
    }
    Ok(Exit::Done)
}

/// Seals `secrets` as `side`'s connection, replacing what it held; makes
/// the migration's data key on first use (which needs a key).
fn seal_side(
    h: &StoreHandle,
    side: Side,
    location: &str,
    secrets: &Secrets,
    keys: &KeyArgs,
) -> Result<()> {
    let (unlocked, new_keyring) = match h.keyring()? {
        Some(k) => (credentials::unlock(&k, keys, h.path())?, None),
        None => {
            let source = credentials::given_key(keys, None)?.ok_or_else(|| {
                usage(format!(
                    "sealing secrets needs a key: set {} or give --passphrase-file FILE",
                    credentials::MASTER_KEY_ENV
                ))
            })?;
            let (u, k) = Unlocked::create(&source, treeshift_vault::new_migration_uid())?;
            (u, Some(k))
        }
    };
    let existing = h.connections()?.into_iter().find(|r| r.side == side);
    let id = existing.map_or_else(treeshift_vault::new_connection_id, |r| r.id);
    let row = StoredConnection {
        kind: credentials::kind_of(location).to_string(),
        location: location.to_string(),
        secret_names: secrets.names().map(str::to_string).collect(),
        sealed: unlocked.seal(&id, side, secrets)?,
        id,
        side,
        updated_at: String::new(),
    };
    h.save_credentials(new_keyring, vec![row])?;
    Ok(())
}

fn location_of(h: &StoreHandle, side: Side) -> Result<String> {
    let spec = h.migration()?;
    Ok(match side {
        Side::Src => spec.src,
        Side::Dst => spec.dst,
    })
}

/// `connection set`: all of one side's secrets, from a file or the
/// environment.
pub fn set(args: ConnectionSetArgs, keys: &KeyArgs) -> Result<Exit> {
    let side = side(args.side);
    with_store(&args.state, OpenMode::Existing, |h| {
        let location = location_of(h, side)?;
        let secrets = credentials::gather(&location, args.secret_file.as_deref())?;
        if secrets.is_empty() {
            let names = treeshift_backend::secret_names(&location).map_err(usage)?;
            let from = match &args.secret_file {
                Some(f) => f.display().to_string(),
                None => "the environment".to_string(),
            };
            return Err(usage(format!(
                "no secret for {location} in {from} (it takes {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        seal_side(h, side, &location, &secrets, keys)?;
        let names: Vec<&str> = secrets.names().collect();
        println!("{side}: sealed {}", names.join(", "));
        Ok(Exit::Done)
    })
}

/// `connection set-secret NAME`: one secret, its value read from stdin.
pub fn set_secret(args: SetSecretArgs, keys: &KeyArgs) -> Result<Exit> {
    let side = side(args.side);
    with_store(&args.state, OpenMode::Existing, |h| {
        let location = location_of(h, side)?;
        let names = treeshift_backend::secret_names(&location).map_err(usage)?;
        if !names.contains(&args.name.as_str()) {
            return Err(usage(format!(
                "{} is not a secret of {location} (it takes {})",
                args.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        let value = read_value(&args.name)?;
        let mut secrets = match h.connections()?.into_iter().find(|r| r.side == side) {
            Some(row) if !row.secret_names.is_empty() => {
                let keyring = h.keyring()?.ok_or_else(|| {
                    anyhow::anyhow!("the state file holds sealed connections but no key record")
                })?;
                credentials::unlock(&keyring, keys, h.path())?.open(&row)?
            }
            _ => Secrets::new(),
        };
        secrets.insert(args.name.clone(), value);
        seal_side(h, side, &location, &secrets, keys)?;
        println!("{side}: sealed {}", args.name);
        Ok(Exit::Done)
    })
}

/// A secret's value from stdin: asked without echo on a terminal, else
/// all of stdin without its last line ending.
fn read_value(name: &str) -> Result<Secret> {
    if std::io::stdin().is_terminal() {
        return credentials::ask_hidden(&format!("{name}: "));
    }
    let mut value = String::new();
    std::io::stdin().read_to_string(&mut value)?;
    let value = Secret::new(value);
    let trimmed = value.expose().trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(usage(format!("no value for {name} on stdin")));
    }
    Ok(Secret::new(trimmed.to_string()))
}

/// `rekey`: a new data key, every connection sealed again under it, and
/// it wrapped under the new key-encryption key, in one transaction.
pub fn rekey(args: RekeyArgs, keys: &KeyArgs) -> Result<Exit> {
    let new_source = if let Some(file) = &args.new_master_key_file {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
            usage(format!(
                "cannot read the new master key file {}: {e}",
                file.display()
            ))
        })?);
        KeySource::master_key(&text, &file.display().to_string()).map_err(usage)?
    } else if let Some(file) = &args.new_passphrase_file {
        credentials::passphrase_from_file(file)?
    } else if args.ask_new_passphrase {
        credentials::ask_passphrase("new passphrase", true)?
    } else {
        match std::env::var(NEW_MASTER_KEY_ENV) {
            Ok(text) if !text.is_empty() => {
                KeySource::master_key(&text, NEW_MASTER_KEY_ENV).map_err(usage)?
            }
            _ => {
                return Err(usage(format!(
                    "no new key: set {NEW_MASTER_KEY_ENV}, or give --new-master-key-file, --new-passphrase-file or --ask-new-passphrase"
                )));
            }
        }
    };
    with_store(&args.state, OpenMode::Existing, |h| {
        let keyring = h.keyring()?.ok_or_else(|| {
            usage(format!(
                "nothing is sealed in {}: there is no key to change",
                args.state.display()
            ))
        })?;
        let old = credentials::unlock(&keyring, keys, h.path())?;
        let (new, new_keyring) = Unlocked::create(&new_source, keyring.migration_uid.clone())?;
        let mut rows = Vec::new();
        for mut row in h.connections()? {
            if row.secret_names.is_empty() {
                continue;
            }
            let secrets = old.open(&row)?;
            row.sealed = new.seal(&row.id, row.side, &secrets)?;
            rows.push(row);
        }
        let count = rows.len();
        h.save_credentials(Some(new_keyring), rows)?;
        println!(
            "sealed {count} connection(s) under a new data key, wrapped under the new {}",
            new_source.kind()
        );
        Ok(Exit::Done)
    })
}
