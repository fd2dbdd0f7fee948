//! Whether the process that holds a lease still lives. Each process holds
//! a session lock named after it (its holder) on its heartbeat's
//! connection for as long as it lives: the database lets go of it the
//! moment that connection ends, as it does when the process is killed.
//! A process waiting on leases others hold tries each holder's lock: one
//! it can take belongs to a process that is gone, whose leases are then
//! ended at once instead of running out. So a run killed with SIGKILL and
//! started again goes on without waiting for its old leases to expire.
//!
//! A database that restarted cut every connection, so every lock is free
//! until each heartbeat connects again (it notices at its next beat). So
//! a holder whose lock is free is gone only if it took its lock since the
//! database started (`holders` says when: it lost it since), or if the
//! database has been up longer than a beat and a reconnection. Should a
//! living process's heartbeat connection alone be cut, the leases taken
//! from it are fenced as any expired lease is.

use crate::PgStore;
use crate::error::Context;
use crate::state_store::LEASED;
use postgres::Client;
use std::time::{Duration, Instant};
use treeshift_state::StoreError;

/// The lock that says `holder` lives, as SQL on the parameter `$1`.
const HOLDER_LOCK: &str = "hashtextextended($1, 0)";

/// How often a waiting process looks for holders that are gone.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Takes the lock that says `holder` lives, on `client` (the heartbeat's
/// connection), kept until that connection ends.
pub(crate) fn hold_alive(client: &mut Client, holder: &str) -> Result<(), postgres::Error> {
    client.execute(
        &format!("SELECT pg_advisory_lock({HOLDER_LOCK})"),
        &[&holder],
    )?;
    client.execute(
        "INSERT INTO holders VALUES ($1, clock_timestamp()) \
         ON CONFLICT (holder) DO UPDATE SET locked_at = excluded.locked_at",
        &[&holder],
    )?;
    Ok(())
}

/// How long after the database started a holder that took its lock
/// before may still be connecting again: a heartbeat's beat (a third of
/// `lease_time`) and a moment.
fn reconnecting(lease_time: Duration) -> Duration {
    lease_time / 3 + Duration::from_secs(2)
}

impl PgStore {
    /// Ends at once the leases of processes that are gone (see the
    /// module's comment); returns how many such processes held some.
    /// Called by a process waiting on leases others hold, once every
    /// [`REAP_EVERY`] at most.
    pub(crate) fn reap_gone_holders(&self) -> Result<usize, StoreError> {
        {
            let mut last = self.reaped_at.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < REAP_EVERY) {
                return Ok(0);
            }
            *last = Some(Instant::now());
        }
        let open = LEASED
            .iter()
            .map(|t| {
                format!(
                    "SELECT holder FROM {t} WHERE NOT done AND holder IS NOT NULL \
                     AND expires_at > clock_timestamp()"
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ");
        self.run(|client| {
            let holders: Vec<String> = client
                .query(
                    &format!(
                        "SELECT DISTINCT h.holder FROM ({open}) h \
                         LEFT JOIN holders a ON a.holder = h.holder WHERE h.holder <> $1 \
                         AND (a.locked_at >= pg_postmaster_start_time() \
                              OR pg_postmaster_start_time() < clock_timestamp() - $2 * interval '1 millisecond')"
                    ),
                    &[
                        &self.holder(),
                        &(reconnecting(self.lease_time).as_secs_f64() * 1000.0),
                    ],
                )
                .context("read who holds leases")?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut gone = 0;
            for holder in holders {
                let free: bool = client
                    .query_one(
                        &format!("SELECT pg_try_advisory_lock({HOLDER_LOCK})"),
                        &[&holder],
                    )
                    .context("see whether a process lives")?
                    .get(0);
                if !free {
                    continue;
                }
                client
                    .execute(&format!("SELECT pg_advisory_unlock({HOLDER_LOCK})"), &[&holder])
                    .context("see whether a process lives")?;
                let mut tx = client.transaction().context("end a gone process's leases")?;
                for table in LEASED {
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET expires_at = clock_timestamp() \
                             WHERE holder = $1 AND NOT done"
                        ),
                        &[&holder],
                    )
                    .context("end a gone process's leases")?;
                }
                tx.execute("DELETE FROM holders WHERE holder = $1", &[&holder])
                    .context("end a gone process's leases")?;
                tx.commit().context("end a gone process's leases")?;
                tracing::info!(process = %holder, "the leases of a process that is gone were ended");
                gone += 1;
            }
            Ok(gone)
        })
    }
}

impl PgStore {
    /// Gives back the leases this process holds in `table` (among the
    /// rows `scope`, SQL on the row) that it does not know of (`known`
    /// says which it does): those of a lease whose reply was lost with
    /// the connection, taken again by the retried lease. The heartbeat
    /// would renew them for as long as this process lives, and the others
    /// leave a living process's leases alone; so a process that finds
    /// nothing left to lease gives them back before it ends its step.
    /// Returns how many it gave back.
    pub(crate) fn release_unknown(
        &self,
        table: &str,
        scope: &str,
        known: impl Fn(i64) -> bool,
    ) -> Result<usize, StoreError> {
        self.run(|client| {
            let unknown: Vec<i64> = client
                .query(
                    &format!(
                        "SELECT node_id FROM {table} WHERE holder = $1 AND NOT done AND {scope}"
                    ),
                    &[&self.holder()],
                )
                .context("read the leases this process holds")?
                .iter()
                .map(|r| r.get(0))
                .filter(|id| !known(*id))
                .collect();
            if unknown.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &format!(
                        "UPDATE {table} SET holder = NULL, expires_at = NULL \
                         WHERE node_id = ANY($2) AND holder = $1 AND NOT done"
                    ),
                    &[&self.holder(), &unknown],
                )
                .context("give back leases whose reply was lost")?;
            tracing::info!(
                leases = unknown.len(),
                "leases whose reply was lost were given back"
            );
            Ok(unknown.len())
        })
    }
}
