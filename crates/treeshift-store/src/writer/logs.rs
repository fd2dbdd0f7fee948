//! The `logs` table: log records arrive in batches from the binary's
//! tracing layer and are appended with the next flush; readers page through
//! them by sequence number.

use super::{Db, Writer};
use crate::error::Context;
use crate::{LogEntry, LogRecord, StoreError, log_levels_down_to};
use duckdb::params;

impl Writer {
    /// Buffers `records`; they are committed with the next batch.
    pub(crate) fn buffer_logs(&mut self, records: Vec<LogRecord>) {
        let n = records.len();
        for record in records {
            let seq = self.take_seq();
            self.buf.logs.push((seq, record));
        }
        self.note_rows(n);
    }
}

impl Db {
    /// Up to `limit` records after sequence number `after`, at `level` or
    /// more severe, oldest first.
    pub(crate) fn logs(
        &self,
        after: i64,
        level: &str,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let levels = log_levels_down_to(level)
            .iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT seq, strftime(recorded_at, '%Y-%m-%dT%H:%M:%S.%gZ'), level, target, message \
                 FROM logs WHERE seq > ? AND level IN ({levels}) ORDER BY seq LIMIT ?"
            ))
            .context("read logs")?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(LogEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    level: r.get(2)?,
                    target: r.get(3)?,
                    message: r.get(4)?,
                })
            })
            .context("read logs")?;
        rows.collect::<Result<_, _>>().context("read logs")
    }
}
