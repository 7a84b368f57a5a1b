//! Limit counters and AUTH bans in the PostgreSQL store (see
//! `crate::limits` for what is counted, and `super` for the overshoot
//! bound across instances).

use tokio_postgres::Row;

use super::Tx;
use crate::store::StoreError;
use crate::store::limits::{Ban, Counter};

/// Adds to the counters (inside the enqueue transaction), merged per key
/// and in key order so concurrent enqueues cannot deadlock on them.
pub(super) async fn add<'a>(
    tx: &Tx<'_>,
    counters: impl Iterator<Item = &'a Counter>,
) -> Result<(), StoreError> {
    let merged = super::queue::merge_counters(counters);
    if merged.is_empty() {
        return Ok(());
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO limit_counters (key, until, count) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET count = limit_counters.count + excluded.count",
        )
        .await?;
    for (key, (until, add)) in merged {
        tx.execute(&st, &[&key, &until, &add]).await?;
    }
    Ok(())
}

/// The current counts of `keys` (0 for a window with nothing in it or one
/// that has ended), in the order of `keys`.
pub(super) async fn get(tx: &Tx<'_>, keys: &[String], now: i64) -> Result<Vec<u64>, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT k.key, c.count FROM unnest($1::text[]) AS k(key)
             LEFT JOIN limit_counters c ON c.key = k.key AND c.until > $2",
        )
        .await?;
    let mut counts = std::collections::HashMap::new();
    for row in tx.query(&st, &[&keys, &now]).await? {
        let key: String = row.try_get(0)?;
        let n: Option<i64> = row.try_get(1)?;
        counts.insert(key, u64::try_from(n.unwrap_or(0)).unwrap_or(0));
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
    let counters = tx
        .execute(
            "DELETE FROM limit_counters WHERE until <= $1
               AND NOT (key LIKE 'acct-msg-h:%' AND until > $2)",
            &[&now, &now.saturating_sub(keep_hourly.max(0))],
        )
        .await?;
    let bans = tx
        .execute("DELETE FROM bans WHERE until <= $1", &[&now])
        .await?;
    Ok(usize::try_from(counters + bans).unwrap_or(usize::MAX))
}
