//! What a migration records beside its trees: its phase, its flags, its
//! connections and wrapped data key (opaque bytes sealed by
//! `treeshift-vault`: the store never sees a secret in clear), and its
//! log records.

use crate::PgStore;
use crate::error::Context;
use postgres::GenericClient;
use treeshift_core::{Phase, Side};
use treeshift_state::{
    Keyring, LogEntry, LogRecord, StoreError, StoredConnection, log_levels_down_to,
};

impl PgStore {
    /// Records the migration's lifecycle phase.
    pub fn set_phase(&self, phase: Phase) -> Result<(), StoreError> {
        self.run(|client| record_phase(client, phase))
    }

    /// The migration's current phase.
    pub fn phase(&self) -> Result<Phase, StoreError> {
        let text: String = self.run(|client| {
            Ok(client
                .query_one("SELECT phase FROM migrations WHERE id = 1", &[])
                .context("read the phase")?
                .get(0))
        })?;
        text.parse().map_err(|why: String| self.not_ours(why))
    }

    /// Raises the flag `key` (idempotent).
    pub fn set_flag(&self, key: &str) -> Result<(), StoreError> {
        self.run(|client| {
            client
                .execute(
                    "INSERT INTO meta VALUES ($1, 'true') \
                     ON CONFLICT (key) DO UPDATE SET value = 'true'",
                    &[&key],
                )
                .context("record a flag")
        })?;
        Ok(())
    }

    /// Whether the flag `key` was raised.
    pub fn flag(&self, key: &str) -> Result<bool, StoreError> {
        self.run(|client| {
            Ok(client
                .query_opt(
                    "SELECT 1 FROM meta WHERE key = $1 AND value = 'true'",
                    &[&key],
                )
                .context("read a flag")?
                .is_some())
        })
    }

    /// The wrapped data key, if the migration has sealed any secret.
    pub fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        self.run(|client| {
            let row = client
                .query_opt("SELECT migration_uid, kek, wrapped FROM keyring", &[])
                .context("read the keyring")?;
            Ok(row.map(|r| Keyring {
                migration_uid: r.get(0),
                kek: r.get(1),
                wrapped: r.get(2),
            }))
        })
    }

    /// The migration's recorded connections (source first).
    pub fn connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        let rows = self.run(|client| {
            client
                .query(
                    "SELECT id, side, kind, location, secret_names, sealed, \
                       to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                     FROM connections ORDER BY side DESC",
                    &[],
                )
                .context("read the connections")
        })?;
        Ok(rows
            .iter()
            .map(|r| StoredConnection {
                id: r.get(0),
                side: if r.get::<_, String>(1) == "dst" {
                    Side::Dst
                } else {
                    Side::Src
                },
                kind: r.get(2),
                location: r.get(3),
                secret_names: r.get(4),
                sealed: r.get(5),
                updated_at: r.get(6),
            })
            .collect())
    }

    /// Replaces the keyring (when given) and the connections of the sides
    /// given, in one transaction: a re-key or a new secret lands whole or
    /// not at all.
    pub fn save_credentials(
        &self,
        keyring: Option<&Keyring>,
        connections: &[StoredConnection],
    ) -> Result<(), StoreError> {
        self.run(|client| {
            let mut tx = client
                .transaction()
                .context("begin saving the connections")?;
            if let Some(k) = keyring {
                tx.execute("DELETE FROM keyring", &[])
                    .context("replace the keyring")?;
                tx.execute(
                    "INSERT INTO keyring VALUES ($1, $2, $3, now())",
                    &[&k.migration_uid, &k.kek, &k.wrapped],
                )
                .context("replace the keyring")?;
            }
            for c in connections {
                let side = c.side.as_str();
                tx.execute("DELETE FROM connections WHERE side = $1", &[&side])
                    .context("replace a connection")?;
                tx.execute(
                    "INSERT INTO connections VALUES ($1, $2, $3, $4, $5, $6, now())",
                    &[
                        &c.id,
                        &side,
                        &c.kind,
                        &c.location,
                        &c.secret_names,
                        &c.sealed,
                    ],
                )
                .context("replace a connection")?;
            }
            tx.commit().context("save the connections")
        })
    }

    /// Appends log records, in one statement.
    pub fn append_logs(&self, records: &[LogRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let at: Vec<i64> = records.iter().map(|r| r.at_micros).collect();
        let level: Vec<&str> = records.iter().map(|r| r.level).collect();
        let target: Vec<&str> = records.iter().map(|r| r.target.as_str()).collect();
        let message: Vec<&str> = records.iter().map(|r| r.message.as_str()).collect();
        self.run(|client| {
            client
                .execute(
                    "INSERT INTO logs (recorded_at, level, target, message) \
                     SELECT to_timestamp(a / 1e6), l, t, m \
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS r(a, l, t, m)",
                    &[&at, &level, &target, &message],
                )
                .context("append log records")
        })?;
        Ok(())
    }

    /// Up to `limit` log records after sequence number `after`, at `level`
    /// (`ERROR` ... `TRACE`) or more severe, oldest first.
    pub fn logs(&self, after: i64, level: &str, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let levels = log_levels_down_to(level);
        let rows = self.run(|client| {
            client
                .query(
                    "SELECT seq, \
                       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                       level, target, message \
                     FROM logs WHERE seq > $1 AND level = ANY($2) ORDER BY seq LIMIT $3",
                    &[&after, &levels, &(limit as i64)],
                )
                .context("read logs")
        })?;
        Ok(rows
            .iter()
            .map(|r| LogEntry {
                seq: r.get(0),
                at: r.get(1),
                level: r.get(2),
                target: r.get(3),
                message: r.get(4),
            })
            .collect())
    }
}

/// Records the phase, on `client` (a connection, or a transaction it is
/// part of).
pub(crate) fn record_phase(
    client: &mut impl GenericClient,
    phase: Phase,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE migrations SET phase = $1, updated_at = now() WHERE id = 1",
            &[&phase.as_str()],
        )
        .context("set the phase")?;
    Ok(())
}
