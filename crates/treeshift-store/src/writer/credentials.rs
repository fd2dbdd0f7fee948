//! The migration's connections and its wrapped data key. The store keeps
//! what `treeshift-vault` sealed as opaque bytes: it never sees a secret or
//! a key in clear.

use super::Writer;
use crate::error::Context;
use crate::{Keyring, StoreError, StoredConnection};
use duckdb::params;
use treeshift_core::Side;

/// Created on open when missing, so older state files gain them without a
/// new schema version. Each holds at most one row (per side).
pub(crate) const CREDENTIAL_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS keyring (
    migration_uid VARCHAR NOT NULL, kek VARCHAR NOT NULL, wrapped BLOB NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS connections (
    id VARCHAR NOT NULL, side VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    location VARCHAR NOT NULL, secret_names VARCHAR NOT NULL, sealed BLOB NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
"#;

impl Writer {
    pub(crate) fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT migration_uid, kek, wrapped FROM keyring")
            .context("read the keyring")?;
        let mut rows = stmt
            .query_map([], |r| {
                Ok(Keyring {
                    migration_uid: r.get(0)?,
                    kek: r.get(1)?,
                    wrapped: r.get(2)?,
                })
            })
            .context("read the keyring")?;
        rows.next().transpose().context("read the keyring")
    }

    pub(crate) fn connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, side, kind, location, secret_names, sealed, \
                        strftime(updated_at, '%Y-%m-%dT%H:%M:%SZ') \
                 FROM connections ORDER BY side DESC",
            )
            .context("read the connections")?;
        let rows = stmt
            .query_map([], |r| {
                let side: String = r.get(1)?;
                let names: String = r.get(4)?;
                Ok(StoredConnection {
                    id: r.get(0)?,
                    side: if side == "dst" { Side::Dst } else { Side::Src },
                    kind: r.get(2)?,
                    location: r.get(3)?,
                    secret_names: names
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect(),
                    sealed: r.get(5)?,
                    updated_at: r.get(6)?,
                })
            })
            .context("read the connections")?;
        rows.collect::<Result<_, _>>()
            .context("read the connections")
    }

    /// Replaces the keyring (when given) and the connections of the sides
    /// given, in one transaction: a re-key or a new secret lands whole or
    /// not at all.
    pub(crate) fn save_credentials(
        &mut self,
        keyring: Option<&Keyring>,
        connections: &[StoredConnection],
    ) -> Result<(), StoreError> {
        self.in_transaction("save the connections", |conn| {
            if let Some(k) = keyring {
                conn.execute("DELETE FROM keyring", [])?;
                conn.execute(
                    "INSERT INTO keyring VALUES (?, ?, ?, now())",
                    params![k.migration_uid, k.kek, k.wrapped],
                )?;
            }
            for c in connections {
                let side = c.side.as_str();
                conn.execute("DELETE FROM connections WHERE side = ?", params![side])?;
                conn.execute(
                    "INSERT INTO connections VALUES (?, ?, ?, ?, ?, ?, now())",
                    params![
                        c.id,
                        side,
                        c.kind,
                        c.location,
                        c.secret_names.join(","),
                        c.sealed
                    ],
                )?;
            }
            Ok(())
        })
    }
}
