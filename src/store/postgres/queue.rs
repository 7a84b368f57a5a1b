//! The queue side of the PostgreSQL store: message rows, their recipients
//! and content, leases (see the contract in `super`), attempts.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::Tx;
use crate::store::pseudonym::Pseudonymizer;
use crate::store::{
    AttemptUpdate, MessageInfo, MessageState, NewMessage, QueueId, QueueStats, RecipientInfo,
    RecipientState, StoreError, limits::Counter, now_ms,
};

const INFO_COLUMNS: &str = "seq, id, received_at, account, sender, size, state, attempts, next_attempt, last_error, note, \
     dsn_to";

/// Attempt counts are `integer` in the table; the trait speaks `u32`.
fn attempts_i32(n: u32) -> i32 {
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

fn row_to_info(row: &Row) -> Result<(i64, MessageInfo), StoreError> {
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
async fn with_recipients(
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

/// Claims up to `limit` queued, due messages for `instance` (see the lease
/// contract) and returns them, oldest arrival first.
pub(super) async fn lease_due(
    tx: &Tx<'_>,
    now: i64,
    limit: usize,
    instance: &str,
    lease_secs: f64,
) -> Result<Vec<MessageInfo>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // SKIP LOCKED: rows another instance is claiming (or recording) right
    // now are simply not ours this round; nobody waits.
    let st = tx
        .prepare_cached(&format!(
            "UPDATE messages m
             SET lease_owner = $3, lease_until = now() + make_interval(secs => $4)
             FROM (
                 SELECT seq FROM messages
                 WHERE state = 'queued' AND next_attempt <= $1
                   AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $3)
                 ORDER BY next_attempt, seq
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ) due
             WHERE m.seq = due.seq
             RETURNING {}",
            INFO_COLUMNS
                .split(", ")
                .map(|c| format!("m.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await?;
    let mut rows = tx
        .query(&st, &[&now, &limit, &instance, &lease_secs])
        .await?
        .iter()
        .map(row_to_info)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING follows no ORDER BY.
    rows.sort_by_key(|(seq, info)| (info.next_attempt, *seq));
    with_recipients(tx, rows).await
}

/// Extends the leases `instance` holds on `ids`; returns the ids renewed.
pub(super) async fn renew(
    pool: &Pool,
    instance: &str,
    lease_secs: f64,
    ids: &[QueueId],
) -> Result<Vec<QueueId>, StoreError> {
    let client = pool.get().await?;
    let st = client
        .prepare_cached(
            "UPDATE messages SET lease_until = now() + make_interval(secs => $2)
             WHERE lease_owner = $1 AND id = ANY($3) AND state IN ('queued', 'held')
             RETURNING id",
        )
        .await?;
    client
        .query(&st, &[&instance, &lease_secs, &ids])
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

/// Extends `id`'s lease if this instance still holds it.
pub(super) async fn confirm(
    pool: &Pool,
    instance: &str,
    lease_secs: f64,
    id: &str,
) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let st = client
        .prepare_cached(
            "UPDATE messages SET lease_until = now() + make_interval(secs => $2)
             WHERE id = $3 AND lease_owner = $1 AND lease_until > now() AND state = 'queued'
             RETURNING 1",
        )
        .await?;
    Ok(client
        .query_opt(&st, &[&instance, &lease_secs, &id])
        .await?
        .is_some())
}

/// Gives back every lease of `instance` (graceful shutdown).
pub(super) async fn release_all(pool: &Pool, instance: &str) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
            &[&instance],
        )
        .await?)
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

/// Records one attempt (see [`crate::store::QueueStore::record_attempt`]) and,
/// when nothing is pending, finalises the message: content deleted,
/// recipients pseudonymised, lease gone.
pub(super) async fn apply_attempt(
    tx: &Tx<'_>,
    id: &str,
    update: &AttemptUpdate,
    instance: &str,
    pseudonyms: Option<&Pseudonymizer>,
) -> Result<MessageState, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT seq, state, attempts, lease_owner FROM messages WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&st, &[&id]).await? else {
        return Err(StoreError::NotFound(id.into()));
    };
    let seq: i64 = row.try_get(0)?;
    let state_text: String = row.try_get(1)?;
    let state = MessageState::parse(&state_text).unwrap_or(MessageState::Queued);
    let attempts: i32 = row.try_get(2)?;
    let owner: Option<String> = row.try_get(3)?;
    if !matches!(state, MessageState::Queued | MessageState::Held) {
        return Ok(state);
    }
    // Another instance recorded an attempt since this one read the
    // message, or took the message over after this instance's lease ran
    // out: either way this attempt is not to be recorded.
    if attempts != attempts_i32(update.expected_attempts)
        || owner.as_deref().is_some_and(|o| o != instance)
    {
        return Err(StoreError::Conflict(id.into()));
    }
    if let Some(notice) = &update.bounce_notice {
        insert(tx, notice).await?;
    }
    let (addresses, states, replies): (Vec<&str>, Vec<&str>, Vec<&str>) = update
        .recipients
        .iter()
        .map(|(a, s, r)| (a.as_str(), s.as_str(), r.as_str()))
        .fold((vec![], vec![], vec![]), |(mut a, mut s, mut r), x| {
            a.push(x.0);
            s.push(x.1);
            r.push(x.2);
            (a, s, r)
        });
    let st = tx
        .prepare_cached(
            "UPDATE recipients r SET state = u.state, reply = u.reply
             FROM unnest($2::text[], $3::text[], $4::text[]) AS u(address, state, reply)
             WHERE r.message_seq = $1 AND r.address = u.address",
        )
        .await?;
    tx.execute(&st, &[&seq, &addresses, &states, &replies])
        .await?;
    let count = |want: RecipientState| update.recipients.iter().filter(|r| r.1 == want).count();
    let summary = update
        .error
        .as_deref()
        .or_else(|| update.recipients.first().map(|r| r.2.as_str()));
    let now = now_ms();
    super::log::record_attempt(
        tx,
        seq,
        now,
        (
            count(RecipientState::Delivered),
            count(RecipientState::Pending),
            count(RecipientState::Failed),
        ),
        summary,
    )
    .await?;
    let st = tx
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'failed')
             FROM recipients WHERE message_seq = $1",
        )
        .await?;
    let counts = tx.query_one(&st, &[&seq]).await?;
    let pending: i64 = counts.try_get(0)?;
    match (pending, update.next_attempt) {
        (p, Some(next)) if p > 0 => {
            tx.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt = $1, last_error = $2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE seq = $3",
                &[&next, &update.error, &seq],
            )
            .await?;
            // An admin's hold during the attempt stays in force.
            Ok(state)
        }
        _ => {
            // Nothing pending (or no further attempt): the message is final.
            let failed_now = tx
                .execute(
                    "UPDATE recipients SET state = 'failed', reply = coalesce(reply, $1)
                     WHERE message_seq = $2 AND state = 'pending'",
                    &[&update.error, &seq],
                )
                .await?;
            let failed_before: i64 = counts.try_get(1)?;
            let fin = if failed_before > 0 || failed_now > 0 {
                MessageState::Bounced
            } else {
                MessageState::Delivered
            };
            tx.execute(
                "UPDATE messages SET attempts = attempts + 1, state = $1, last_error = $2,
                     finished_at = $3, lease_owner = NULL, lease_until = NULL
                 WHERE seq = $4",
                &[&fin.as_str(), &update.error, &now, &seq],
            )
            .await?;
            tx.execute("DELETE FROM contents WHERE message_seq = $1", &[&seq])
                .await?;
            if let Some(p) = pseudonyms {
                super::log::pseudonymise(tx, seq, p).await?;
            }
            Ok(fin)
        }
    }
}

/// Counters of one enqueue merged per key and in key order: two
/// transactions touching the same rows lock them in the same order.
pub(super) fn merge_counters<'a>(
    counters: impl Iterator<Item = &'a Counter>,
) -> BTreeMap<&'a str, (i64, i64)> {
    let mut merged: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for c in counters {
        let add = i64::try_from(c.add).unwrap_or(i64::MAX);
        let e = merged.entry(c.key.as_str()).or_insert((c.until, 0));
        e.0 = e.0.max(c.until);
        e.1 = e.1.saturating_add(add);
    }
    merged
}
