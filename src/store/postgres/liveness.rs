//! The webhook liveness query of the PostgreSQL store (see
//! `crate::suppression::liveness`): every instance sees the events that
//! reached any of them. Both lookups walk an index (`relay_events_received`,
//! `messages_finished`) and stop at the first row.

use super::Tx;
use crate::store::StoreError;
use crate::store::suppression::EventSilence;

pub(super) async fn silence(tx: &Tx<'_>, no_event_since: i64) -> Result<EventSilence, StoreError> {
    let last_event_at: Option<i64> = tx
        .query_one("SELECT max(received_at) FROM relay_events", &[])
        .await?
        .try_get(0)?;
    let after = last_event_at.unwrap_or(no_event_since);
    let unanswered_since: Option<i64> = match tx
        .query_opt(
            "SELECT finished_at FROM messages
             WHERE finished_at > $1 AND state = 'delivered'
             ORDER BY finished_at LIMIT 1",
            &[&after],
        )
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    Ok(EventSilence {
        last_event_at,
        unanswered_since,
    })
}
