//! Durable limit counters and AUTH bans in the embedded store (see
//! `crate::limits` for what is counted and why).

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::store::limits::{Ban, Counter, LimitStore};
use crate::store::{BoxFuture, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS limit_counters (
    key   TEXT PRIMARY KEY,
    until INTEGER NOT NULL,
    count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS limit_counters_until ON limit_counters(until);
CREATE TABLE IF NOT EXISTS bans (
    ip         TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    until      INTEGER NOT NULL,
    reason     TEXT NOT NULL
) WITHOUT ROWID;
";

/// Adds to the counters (inside the enqueue transaction).
pub(super) fn add(conn: &Connection, counters: &[Counter]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO limit_counters (key, until, count) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET count = count + excluded.count",
    )?;
    for c in counters {
        stmt.execute(params![c.key, c.until, c.add as i64])?;
    }
    Ok(())
}

/// The current counts of `keys` (0 for a window with nothing in it or one
/// that has ended).
pub(super) fn get(conn: &Connection, keys: &[String], now: i64) -> Result<Vec<u64>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT count FROM limit_counters WHERE key = ?1 AND until > ?2")?;
    keys.iter()
        .map(|k| {
            let n: Option<i64> = stmt.query_row(params![k, now], |r| r.get(0)).optional()?;
            Ok(n.unwrap_or(0).max(0) as u64)
        })
        .collect()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ban> {
    Ok(Ban {
        ip: r.get(0)?,
        created_at: r.get(1)?,
        until: r.get(2)?,
        reason: r.get(3)?,
    })
}

/// Adds a ban, or lengthens an active one.
pub(super) fn ban(conn: &Connection, ban: &Ban) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO bans (ip, created_at, until, reason) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(ip) DO UPDATE SET
           created_at = excluded.created_at, until = MAX(until, excluded.until),
           reason = excluded.reason",
    )?
    .execute(params![ban.ip, ban.created_at, ban.until, ban.reason])?;
    Ok(())
}

pub(super) fn banned(conn: &Connection, ip: &str, now: i64) -> Result<Option<Ban>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT ip, created_at, until, reason FROM bans WHERE ip = ?1 AND until > ?2",
        )?
        .query_row(params![ip, now], row)
        .optional()?)
}

pub(super) fn list(conn: &Connection, now: i64) -> Result<Vec<Ban>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT ip, created_at, until, reason FROM bans WHERE until > ?1 ORDER BY until DESC",
        )?
        .query_map([now], row)?
        .collect::<Result<_, _>>()?)
}

pub(super) fn unban(conn: &Connection, ip: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM bans WHERE ip = ?1", [ip])? > 0)
}

/// Deletes ended counter windows and bans; returns how many rows went.
/// Hourly message buckets (`acct-msg-h:`) are kept `keep_hourly` ms after
/// their end (the anomaly baseline).
pub(super) fn purge(conn: &Connection, now: i64, keep_hourly: i64) -> Result<usize, StoreError> {
    let counters = conn.execute(
        "DELETE FROM limit_counters WHERE until <= ?1
           AND NOT (key LIKE 'acct-msg-h:%' AND until > ?2)",
        params![now, now.saturating_sub(keep_hourly.max(0))],
    )?;
    let bans = conn.execute("DELETE FROM bans WHERE until <= ?1", [now])?;
    Ok(counters + bans)
}

impl LimitStore for SqliteStore {
    fn counters(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        self.read(move |conn| get(conn, &keys, now_ms))
    }

    fn ban(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(move |conn| self::ban(conn, &ban))
    }

    fn banned(&self, ip: &str, now_ms: i64) -> BoxFuture<'_, Result<Option<Ban>, StoreError>> {
        let ip = ip.to_owned();
        self.read(move |conn| banned(conn, &ip, now_ms))
    }

    fn bans(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Ban>, StoreError>> {
        self.read(move |conn| list(conn, now_ms))
    }

    fn unban(&self, ip: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let ip = ip.to_owned();
        self.write(move |conn| unban(conn, &ip))
    }

    fn purge_limits(
        &self,
        now_ms: i64,
        keep_hourly_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| purge(conn, now_ms, keep_hourly_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_keeps_hourly_message_buckets_for_the_baseline() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let c = |key: &str, until| Counter {
            key: key.into(),
            until,
            add: 1,
        };
        add(
            &conn,
            &[c("acct-msg-h:via:1", 1_000), c("acct-msg-d:via:0", 1_000)],
        )
        .unwrap();
        assert_eq!(purge(&conn, 2_000, 5_000).unwrap(), 1, "the daily one");
        let keys = ["acct-msg-h:via:1".to_string()];
        assert_eq!(get(&conn, &keys, i64::MIN).unwrap(), vec![1]);
        assert_eq!(get(&conn, &keys, 2_000).unwrap(), vec![0], "ended");
        assert_eq!(purge(&conn, 7_000, 5_000).unwrap(), 1, "after the baseline");
    }
}
