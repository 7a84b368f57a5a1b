//! Message rows of the PostgreSQL store: a message stored with its
//! recipients, content, links and counters, read back as `MessageInfo`,
//! and the admin's changes to it. The queue (`super::queue`), the leases
//! (`super::lease`) and the relay events (`super::suppression`) build on
//! these.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::Tx;
use crate::store::{
    MessageInfo, MessageState, NewMessage, QueueId, QueueStats, RecipientInfo, RecipientState,
    StoreError, now_ms,
};

pub(super) const INFO_COLUMNS: &str = "seq, id, received_at, account, sender, size, state, attempts, next_attempt, last_error, note, \
     dsn_to";

/// Attempt counts are `integer` in the table; the trait speaks `u32`.
pub(super) fn attempts_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Stores a message, its companions and its counters (one transaction).
pub(super) async fn insert(tx: &Tx<'_>, msg: &NewMessage) -> Result<QueueId, StoreError> {
    // Companions may have companions of their own: walk them without
    // async recursion.
    let mut all = vec![msg];
    let mut i = 0;
    while i < all.len() {
        all.extend(all[i].companions.iter());
        i += 1;
    }
    for m in &all {
        insert_one(tx, m).await?;
    }
    super::limits::add(tx, all.iter().flat_map(|m| m.counters.iter())).await?;
    Ok(msg.id.clone())
}

async fn insert_one(tx: &Tx<'_>, msg: &NewMessage) -> Result<(), StoreError> {
    let state = if msg.held {
        MessageState::Held
    } else {
        MessageState::Queued
    };
    let size = i64::try_from(msg.content.len()).unwrap_or(i64::MAX);
    let st = tx
        .prepare_cached(
            "INSERT INTO messages (id, received_at, account, sender, size, state,
                 next_attempt, note, dsn_to)
             VALUES ($1, $2, $3, $4, $5, $6, $2, $7, $8) RETURNING seq",
        )
        .await?;
    let seq: i64 = tx
        .query_one(
            &st,
            &[
                &msg.id,
                &now_ms(),
                &msg.account,
                &msg.sender,
                &size,
                &state.as_str(),
                &msg.note,
                &crate::store::dsn_to_column(msg.dsn_to.as_deref()),
            ],
        )
        .await?
        .try_get(0)?;
    let st = tx
        .prepare_cached(
            "INSERT INTO recipients (message_seq, idx, address, state)
             SELECT $1, (r.n - 1)::integer, r.address, 'pending'
             FROM unnest($2::text[]) WITH ORDINALITY AS r(address, n)",
        )
        .await?;
    tx.execute(&st, &[&seq, &msg.recipients]).await?;
    let st = tx
        .prepare_cached("INSERT INTO contents (message_seq, data) VALUES ($1, $2)")
        .await?;
    tx.execute(&st, &[&seq, &msg.content.as_slice()]).await?;
    for link in &msg.links {
        super::links::insert(tx, &msg.id, link).await?;
    }
    Ok(())
}

pub(super) fn row_to_info(row: &Row) -> Result<(i64, MessageInfo), StoreError> {
    let state: String = row.try_get(6)?;
    let size: i64 = row.try_get(5)?;
    let attempts: i32 = row.try_get(7)?;
    Ok((
        row.try_get(0)?,
        MessageInfo {
            id: row.try_get(1)?,
            received_at: row.try_get(2)?,
            account: row.try_get(3)?,
            sender: row.try_get(4)?,
            size: u64::try_from(size).unwrap_or(0),
            state: MessageState::parse(&state).unwrap_or(MessageState::Queued),
            attempts: u32::try_from(attempts).unwrap_or(0),
            next_attempt: row.try_get(8)?,
            last_error: row.try_get(9)?,
            note: row.try_get(10)?,
            dsn_to: crate::store::dsn_to_of(row.try_get(11)?, &row.try_get::<_, String>(4)?),
            recipients: Vec::new(),
        },
    ))
}

/// Fills in the recipients of `rows` with one query, keeping their order.
pub(super) async fn with_recipients(
    tx: &Tx<'_>,
    rows: Vec<(i64, MessageInfo)>,
) -> Result<Vec<MessageInfo>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    let st = tx
        .prepare_cached(
            "SELECT message_seq, address, state, reply FROM recipients
             WHERE message_seq = ANY($1) ORDER BY message_seq, idx",
        )
        .await?;
    let mut by_seq: HashMap<i64, Vec<RecipientInfo>> = HashMap::new();
    for r in tx.query(&st, &[&seqs]).await? {
        let state: String = r.try_get(2)?;
        by_seq
            .entry(r.try_get(0)?)
            .or_default()
            .push(RecipientInfo {
                address: r.try_get(1)?,
                state: RecipientState::parse(&state).unwrap_or(RecipientState::Pending),
                reply: r.try_get(3)?,
            });
    }
    Ok(rows
        .into_iter()
        .map(|(seq, mut info)| {
            info.recipients = by_seq.remove(&seq).unwrap_or_default();
            info
        })
        .collect())
}

async fn query_infos(
    tx: &Tx<'_>,
    where_clause: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<MessageInfo>, StoreError> {
    let st = tx
        .prepare_cached(&format!(
            "SELECT {INFO_COLUMNS} FROM messages {where_clause}"
        ))
        .await?;
    let rows = tx
        .query(&st, params)
        .await?
        .iter()
        .map(row_to_info)
        .collect::<Result<Vec<_>, _>>()?;
    with_recipients(tx, rows).await
}

/// Whether a message with this id exists (after a commit whose outcome
/// the client did not learn).
pub(super) async fn exists(pool: &Pool, id: &str) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt("SELECT 1 FROM messages WHERE id = $1", &[&id])
        .await?
        .is_some())
}

pub(super) async fn list_open(tx: &Tx<'_>) -> Result<Vec<MessageInfo>, StoreError> {
    query_infos(tx, "WHERE state IN ('queued', 'held') ORDER BY seq", &[]).await
}

pub(super) async fn get(tx: &Tx<'_>, id: &str) -> Result<Option<MessageInfo>, StoreError> {
    Ok(query_infos(tx, "WHERE id = $1", &[&id])
        .await?
        .into_iter()
        .next())
}

/// The row's seq and state, locked until the transaction ends.
async fn lookup(tx: &Tx<'_>, id: &str) -> Result<(i64, MessageState), StoreError> {
    let st = tx
        .prepare_cached("SELECT seq, state FROM messages WHERE id = $1 FOR UPDATE")
        .await?;
    match tx.query_opt(&st, &[&id]).await? {
        Some(row) => {
            let state: String = row.try_get(1)?;
            Ok((
                row.try_get(0)?,
                MessageState::parse(&state).unwrap_or(MessageState::Queued),
            ))
        }
        None => Err(StoreError::NotFound(id.into())),
    }
}

pub(super) async fn set_state(
    tx: &Tx<'_>,
    id: &str,
    from: MessageState,
    to: MessageState,
) -> Result<(), StoreError> {
    let (seq, state) = lookup(tx, id).await?;
    if state != from {
        return Err(StoreError::WrongState {
            id: id.into(),
            state,
            expected: from.as_str(),
        });
    }
    tx.execute(
        "UPDATE messages SET state = $1, next_attempt = $2 WHERE seq = $3",
        &[&to.as_str(), &now_ms(), &seq],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete(tx: &Tx<'_>, id: &str) -> Result<(), StoreError> {
    let (seq, state) = lookup(tx, id).await?;
    if !matches!(state, MessageState::Queued | MessageState::Held) {
        return Err(StoreError::WrongState {
            id: id.into(),
            state,
            expected: "queued or held",
        });
    }
    tx.execute("DELETE FROM messages WHERE seq = $1", &[&seq])
        .await?;
    Ok(())
}

/// Puts the next attempt off without counting one, and gives the lease
/// back; nothing happens when the message moved on meanwhile.
pub(super) async fn postpone(
    tx: &Tx<'_>,
    id: &str,
    expected_attempts: u32,
    until: i64,
    instance: &str,
) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached(
            "UPDATE messages SET next_attempt = $1, lease_owner = NULL, lease_until = NULL
             WHERE id = $2 AND state = 'queued' AND attempts = $3
               AND (lease_owner IS NULL OR lease_owner = $4)",
        )
        .await?;
    tx.execute(
        &st,
        &[&until, &id, &attempts_i32(expected_attempts), &instance],
    )
    .await?;
    Ok(())
}

pub(super) async fn stats(tx: &Tx<'_>) -> Result<QueueStats, StoreError> {
    let mut stats = QueueStats::default();
    let st = tx
        .prepare_cached(
            "SELECT state, count(*) FROM messages WHERE state IN ('queued', 'held')
             GROUP BY state",
        )
        .await?;
    for row in tx.query(&st, &[]).await? {
        let state: String = row.try_get(0)?;
        let n = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
        match MessageState::parse(&state) {
            Some(MessageState::Queued) => stats.queued = n,
            Some(MessageState::Held) => stats.held = n,
            _ => {}
        }
    }
    let st = tx
        .prepare_cached("SELECT min(received_at) FROM messages WHERE state = 'queued'")
        .await?;
    stats.oldest_queued_at = tx.query_one(&st, &[]).await?.try_get(0)?;
    Ok(stats)
}
