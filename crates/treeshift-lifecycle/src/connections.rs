//! Showing and changing a migration's connections: the list (secrets'
//! names only), one side's secrets replaced, one secret replaced, and the
//! migration's key changed.

use crate::credentials::{self, Keys, Unlocked};
use crate::error::{Result, input};
use crate::state::StateHandle;
use serde::Serialize;
use std::collections::BTreeMap;
use treeshift_core::{Secret, Secrets, Side};
use treeshift_store::StoredConnection;
use treeshift_vault::KeySource;

/// What stands for a secret's value in a listing.
const MASKED: &str = "********";

/// A connection as shown: what it is and where, its secrets' names with
/// their values masked.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionView {
    /// Its stable id.
    pub id: String,
    /// `src` or `dst`.
    pub side: Side,
    /// The backend kind.
    pub kind: String,
    /// The location (it holds no secret).
    pub location: String,
    /// Each sealed secret's name, with a mask for its value.
    pub secrets: BTreeMap<String, &'static str>,
    /// Whether its kind of storage takes secrets at all.
    #[serde(skip)]
    pub takes_secrets: bool,
    /// When it was last set (UTC).
    pub updated_at: String,
}

/// The migration's connections.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionsView {
    /// What wraps the data key (`master-key`, `passphrase`), if anything
    /// is sealed.
    pub sealed_under: Option<String>,
    /// Source first.
    pub connections: Vec<ConnectionView>,
}

/// The list of connections.
pub fn list(h: &StateHandle) -> Result<ConnectionsView> {
    let connections = h
        .connections()?
        .into_iter()
        .map(|r| ConnectionView {
            takes_secrets: treeshift_backend::secret_names(&r.location)
                .is_ok_and(|n| !n.is_empty()),
            secrets: r.secret_names.into_iter().map(|n| (n, MASKED)).collect(),
            id: r.id,
            side: r.side,
            kind: r.kind,
            location: r.location,
            updated_at: r.updated_at,
        })
        .collect();
    Ok(ConnectionsView {
        sealed_under: h.keyring()?.map(|k| k.kek),
        connections,
    })
}

/// Seals `secrets` as `side`'s connection, replacing what it held; makes
/// the migration's data key on first use (which needs a key).
fn seal_side(
    h: &StateHandle,
    side: Side,
    location: &str,
    secrets: &Secrets,
    keys: &dyn Keys,
) -> Result<()> {
    let (unlocked, new_keyring) = match h.keyring()? {
        Some(k) => (credentials::unlock(&k, keys, h.path())?, None),
        None => {
            let source = keys.key(None)?.ok_or_else(|| {
                input(format!(
                    "sealing secrets needs a key: {}",
                    keys.how_to_give(treeshift_vault::KeyKind::MasterKey)
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

fn location_of(h: &StateHandle, side: Side) -> Result<String> {
    let spec = h.migration()?;
    Ok(match side {
        Side::Src => spec.src,
        Side::Dst => spec.dst,
    })
}

fn takes(location: &str) -> Result<&'static [&'static str]> {
    treeshift_backend::secret_names(location).map_err(input)
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Replaces all of one side's secrets with those from `source` (a secret
/// file, or the environment); returns their names.
pub fn set(
    h: &StateHandle,
    side: Side,
    source: &credentials::SecretSource,
    keys: &dyn Keys,
) -> Result<Vec<String>> {
    let location = location_of(h, side)?;
    let secrets = credentials::gather(&location, source)?;
    if secrets.is_empty() {
        let from = source.describe();
        return Err(input(format!(
            "no secret for {location} in {from} (it takes {})",
            listed(takes(&location)?)
        )));
    }
    seal_side(h, side, &location, &secrets, keys)?;
    Ok(secrets.names().map(str::to_string).collect())
}

/// Replaces (or adds) one secret of one side.
pub fn set_secret(
    h: &StateHandle,
    side: Side,
    name: &str,
    value: Secret,
    keys: &dyn Keys,
) -> Result<()> {
    let location = location_of(h, side)?;
    let names = takes(&location)?;
    if !names.contains(&name) {
        return Err(input(format!(
            "{name} is not a secret of {location} (it takes {})",
            listed(names)
        )));
    }
    let mut secrets = match h.connections()?.into_iter().find(|r| r.side == side) {
        Some(row) if !row.secret_names.is_empty() => {
            let keyring = h.keyring()?.ok_or_else(|| {
                input("the state file holds sealed connections but no key record: it was altered")
            })?;
            credentials::unlock(&keyring, keys, h.path())?.open(&row)?
        }
        _ => Secrets::new(),
    };
    secrets.insert(name, value);
    seal_side(h, side, &location, &secrets, keys)
}

/// Makes a new data key, seals every connection again under it and wraps
/// it under `new_key`, in one transaction. Returns the connections
/// sealed again.
pub fn rekey(h: &StateHandle, keys: &dyn Keys, new_key: &KeySource) -> Result<usize> {
    let keyring = h.keyring()?.ok_or_else(|| {
        input(format!(
            "nothing is sealed in {}: there is no key to change",
            h.path().display()
        ))
    })?;
    let old = credentials::unlock(&keyring, keys, h.path())?;
    let (new, new_keyring) = Unlocked::create(new_key, keyring.migration_uid.clone())?;
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
    Ok(count)
}
