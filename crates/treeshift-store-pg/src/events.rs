//! Status events appended in bulk: one binary `COPY` per batch.

use crate::error::Context;
use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use treeshift_core::Side;
use treeshift_state::StoreError;

/// One status event of a node.
pub(crate) struct Event<'a> {
    pub(crate) node_id: i64,
    pub(crate) depth: i32,
    pub(crate) status: &'a str,
    pub(crate) reason: Option<&'a str>,
    pub(crate) attempt: i32,
}

/// Appends `events` of `phase` to `side`'s events, in their order, in one
/// binary COPY (none if there are none).
pub(crate) fn append_events<'a>(
    tx: &mut Transaction<'_>,
    side: Side,
    phase: &str,
    events: impl IntoIterator<Item = Event<'a>>,
) -> Result<(), StoreError> {
    let mut events = events.into_iter().peekable();
    if events.peek().is_none() {
        return Ok(());
    }
    let sink = tx
        .copy_in(&format!(
            "COPY {side}_status_events (node_id, depth, phase, status, reason, attempt) \
             FROM STDIN BINARY"
        ))
        .context("append status events")?;
    let types = [
        Type::INT8,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
    ];
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    for e in events {
        let values: [&(dyn ToSql + Sync); 6] = [
            &e.node_id, &e.depth, &phase, &e.status, &e.reason, &e.attempt,
        ];
        writer.write(&values).context("append a status event")?;
    }
    writer.finish().context("append status events")?;
    Ok(())
}
