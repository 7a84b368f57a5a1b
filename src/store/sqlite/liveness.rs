//! The webhook liveness query of the embedded store (see
//! `crate::suppression::liveness`). Both lookups walk an index
//! (`relay_events_received`, `messages_finished`) and stop at the first row.

use rusqlite::{Connection, OptionalExtension};

use crate::store::StoreError;
use crate::store::suppression::EventSilence;

pub(super) fn silence(conn: &Connection, no_event_since: i64) -> Result<EventSilence, StoreError> {
    let last_event_at: Option<i64> = conn
        .prepare_cached("SELECT max(received_at) FROM relay_events")?
        .query_row([], |r| r.get(0))?;
    let unanswered_since: Option<i64> = conn
        // `+state`: without it SQLite picks `messages_due` (state first)
        // and sorts every delivered message of the log.
        .prepare_cached(
            "SELECT finished_at FROM messages
             WHERE finished_at > ?1 AND +state = 'delivered'
             ORDER BY finished_at LIMIT 1",
        )?
        .query_row([last_event_at.unwrap_or(no_event_since)], |r| r.get(0))
        .optional()?;
    Ok(EventSilence {
        last_event_at,
        unanswered_since,
    })
}
