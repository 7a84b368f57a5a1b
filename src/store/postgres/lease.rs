//! The leases of the PostgreSQL store (see the contract in `super`):
//! claiming due messages for this instance, renewing what it holds in the
//! background, confirming a lease before a message is handed upstream, and
//! giving them all back at shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::{Tx, messages};
use crate::store::{MessageInfo, QueueId, StoreError};

/// The leases to renew, each with the generation it was (re)taken in: the
/// renewal task drops only what it saw itself, so a lease given back and
/// taken again while a renewal round runs is not lost with the old one.
#[derive(Default)]
pub(super) struct Leases {
    pub(super) held: HashMap<QueueId, u64>,
    next: u64,
}

impl Leases {
    pub(super) fn take(&mut self, id: QueueId) {
        self.next += 1;
        self.held.insert(id, self.next);
    }
}

/// Renews this instance's leases every `lease_time / 3` until aborted.
pub(super) async fn renew_leases(
    pool: Pool,
    instance: String,
    lease_secs: f64,
    leases: Arc<Mutex<Leases>>,
) {
    let period = Duration::from_secs_f64(lease_secs / 3.0);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let seen: HashMap<QueueId, u64> = leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .clone();
        if seen.is_empty() {
            continue;
        }
        let ids: Vec<QueueId> = seen.keys().cloned().collect();
        match renew(&pool, &instance, lease_secs, &ids).await {
            Ok(renewed) => {
                // What was not renewed is final, deleted or someone else's
                // now: stop trying, unless it was taken again meanwhile.
                let renewed: HashSet<QueueId> = renewed.into_iter().collect();
                leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .held
                    .retain(|id, generation| {
                        renewed.contains(id) || seen.get(id) != Some(generation)
                    });
            }
            Err(e) => {
                tracing::warn!(error = %e, leases = ids.len(), "store: cannot renew leases");
            }
        }
    }
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
            messages::INFO_COLUMNS
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
        .map(messages::row_to_info)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING follows no ORDER BY.
    rows.sort_by_key(|(seq, info)| (info.next_attempt, *seq));
    messages::with_recipients(tx, rows).await
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
