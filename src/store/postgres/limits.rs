//! Limit counters and AUTH bans in the PostgreSQL store (see
//! `crate::limits` for what is counted, and `super` for the overshoot
//! bound across instances).

use std::collections::BTreeMap;

use tokio_postgres::Row;

use super::{PostgresStore, Tx};
use crate::store::limits::{Ban, Counter, LimitStore};
use crate::store::{BoxFuture, StoreError};

/// How many rows one counter is spread over (see
/// `migrations/postgres/V2__sharded_limit_counters.sql`). More shards mean
/// fewer enqueues of one account waiting for each other's commit; a read
/// sums them, so it costs a few more index entries.
const SHARDS: i16 = 16;

/// Adds to the counters (inside the enqueue transaction), merged per key
/// and in key order so concurrent enqueues cannot deadlock on them. All of
/// a transaction's counters go to one shard, picked at random.
pub(super) async fn add<'a>(
    tx: &Tx<'_>,
    counters: impl Iterator<Item = &'a Counter>,
) -> Result<(), StoreError> {
    let merged = merge_counters(counters);
    if merged.is_empty() {
        return Ok(());
    }
    let shard: i16 = rand::random_range(0..SHARDS);
    let st = tx
        .prepare_cached(
            "INSERT INTO limit_counters (key, shard, until, count) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key, shard) DO UPDATE SET count = limit_counters.count + excluded.count",
        )
        .await?;
    for (key, (until, add)) in merged {
        tx.execute(&st, &[&key, &shard, &until, &add]).await?;
    }
    Ok(())
}

/// The current counts of `keys` (0 for a window with nothing in it or one
/// that has ended), in the order of `keys`.
pub(super) async fn get(tx: &Tx<'_>, keys: &[String], now: i64) -> Result<Vec<u64>, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT c.key, sum(c.count)::bigint FROM limit_counters c
             WHERE c.key = ANY($1::text[]) AND c.until > $2 GROUP BY c.key",
        )
        .await?;
    let mut counts = std::collections::HashMap::new();
    for row in tx.query(&st, &[&keys, &now]).await? {
        let key: String = row.try_get(0)?;
        let n: i64 = row.try_get(1)?;
        counts.insert(key, u64::try_from(n).unwrap_or(0));
    }
    Ok(keys
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0))
        .collect())
}

fn row(r: &Row) -> Result<Ban, StoreError> {
    Ok(Ban {
        ip: r.try_get(0)?,
        created_at: r.try_get(1)?,
        until: r.try_get(2)?,
        reason: r.try_get(3)?,
    })
}

/// Adds a ban, or lengthens an active one.
pub(super) async fn ban(tx: &Tx<'_>, ban: &Ban) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached(
            "INSERT INTO bans (ip, created_at, until, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT (ip) DO UPDATE SET
               created_at = excluded.created_at, until = greatest(bans.until, excluded.until),
               reason = excluded.reason",
        )
        .await?;
    tx.execute(&st, &[&ban.ip, &ban.created_at, &ban.until, &ban.reason])
        .await?;
    Ok(())
}

pub(super) async fn banned(tx: &Tx<'_>, ip: &str, now: i64) -> Result<Option<Ban>, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT ip, created_at, until, reason FROM bans WHERE ip = $1 AND until > $2",
        )
        .await?;
    tx.query_opt(&st, &[&ip, &now])
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

pub(super) async fn list(tx: &Tx<'_>, now: i64) -> Result<Vec<Ban>, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT ip, created_at, until, reason FROM bans WHERE until > $1
             ORDER BY until DESC, ip",
        )
        .await?;
    tx.query(&st, &[&now]).await?.iter().map(row).collect()
}

pub(super) async fn unban(tx: &Tx<'_>, ip: &str) -> Result<bool, StoreError> {
    Ok(tx.execute("DELETE FROM bans WHERE ip = $1", &[&ip]).await? > 0)
}

/// Deletes ended counter windows and bans; returns how many rows went.
/// Hourly message buckets (`acct-msg-h:`) are kept `keep_hourly` ms after
/// their end (the anomaly baseline).
pub(super) async fn purge(tx: &Tx<'_>, now: i64, keep_hourly: i64) -> Result<usize, StoreError> {
    // Counted per counter, not per shard row, like the embedded store.
    let counters: i64 = tx
        .query_one(
            "WITH gone AS (
                 DELETE FROM limit_counters WHERE until <= $1
                   AND NOT (key LIKE 'acct-msg-h:%' AND until > $2)
                 RETURNING key
             ) SELECT count(DISTINCT key) FROM gone",
            &[&now, &now.saturating_sub(keep_hourly.max(0))],
        )
        .await?
        .try_get(0)?;
    let bans = tx
        .execute("DELETE FROM bans WHERE until <= $1", &[&now])
        .await?;
    let counters = u64::try_from(counters).unwrap_or(0);
    Ok(usize::try_from(counters + bans).unwrap_or(usize::MAX))
}

impl LimitStore for PostgresStore {
    fn counters(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| get(&tx, &keys, now_ms).await?) })
    }

    fn ban(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| self::ban(&tx, &ban).await?) })
    }

    fn banned(&self, ip: &str, now_ms: i64) -> BoxFuture<'_, Result<Option<Ban>, StoreError>> {
        let ip = ip.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| banned(&tx, &ip, now_ms).await?) })
    }

    fn bans(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Ban>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| list(&tx, now_ms).await?) })
    }

    fn unban(&self, ip: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let ip = ip.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| unban(&tx, &ip).await?) })
    }

    fn purge_limits(
        &self,
        now_ms: i64,
        keep_hourly_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                purge(&tx, now_ms, keep_hourly_ms).await?
            })
        })
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
