//! The link tables of the embedded store (see `crate::store::links`).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::store::guesses::{self, GuessPolicy, GuessRow};
use crate::store::{
    BoxFuture, DownloadNotice, LinkRecord, LinkState, LinkStore, NewLink, StoreError, now_ms,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS links (
    id                TEXT PRIMARY KEY,
    token_hash        TEXT NOT NULL UNIQUE,
    message_id        TEXT NOT NULL,
    account           TEXT NOT NULL,
    file_name         TEXT NOT NULL,
    content_type      TEXT NOT NULL,
    size              INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    salt              BLOB,
    protected         INTEGER NOT NULL,
    notify_to         TEXT,
    downloads         INTEGER NOT NULL DEFAULT 0,
    first_download_at INTEGER,
    state             TEXT NOT NULL,
    ended_at          INTEGER
);
CREATE INDEX IF NOT EXISTS links_state ON links(state, expires_at);
CREATE TABLE IF NOT EXISTS downloads (
    link_id TEXT NOT NULL,
    at      INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    ip      TEXT
);
CREATE INDEX IF NOT EXISTS downloads_at ON downloads(at);
CREATE TABLE IF NOT EXISTS link_guesses (
    key     TEXT PRIMARY KEY,
    count   INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS link_guesses_expires ON link_guesses(expires);
";

pub(super) fn insert(
    conn: &Connection,
    message_id: &str,
    link: &NewLink,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO links (id, token_hash, message_id, account, file_name, content_type,
             size, created_at, expires_at, salt, protected, notify_to, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'active')",
    )?
    .execute(params![
        link.id,
        link.token_hash,
        message_id,
        link.account,
        link.file_name,
        link.content_type,
        link.size as i64,
        link.created_at,
        link.expires_at,
        link.salt,
        link.protected,
        link.notify_to,
    ])?;
    Ok(())
}

const COLUMNS: &str = "id, message_id, account, file_name, content_type, size, created_at,
    expires_at, protected, downloads, first_download_at, state, salt";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRecord> {
    let state: String = r.get(11)?;
    Ok(LinkRecord {
        id: r.get(0)?,
        message_id: r.get(1)?,
        account: r.get(2)?,
        file_name: r.get(3)?,
        content_type: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        protected: r.get(8)?,
        downloads: r.get::<_, i64>(9)? as u64,
        first_download_at: r.get(10)?,
        // An unknown state is treated as the safe one: nothing opens.
        state: LinkState::parse(&state).unwrap_or(LinkState::Revoked),
        salt: r.get::<_, Option<Vec<u8>>>(12)?.unwrap_or_default(),
    })
}

pub(super) fn by_token(
    conn: &Connection,
    token_hash: &str,
) -> Result<Option<LinkRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM links WHERE token_hash = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([token_hash], row)
        .optional()?)
}

pub(super) fn list(conn: &Connection, all: bool) -> Result<Vec<LinkRecord>, StoreError> {
    let filter = if all { "" } else { "WHERE state = 'active'" };
    let sql = format!("SELECT {COLUMNS} FROM links {filter} ORDER BY created_at DESC, id");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map([], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Wipes everything of an active link but what the `410` page and the
/// download log need.
const TOMBSTONE: &str = "file_name = '', content_type = '', salt = NULL, notify_to = NULL";

pub(super) fn revoke(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE links SET state = 'revoked', ended_at = ?2, {TOMBSTONE}
         WHERE id = ?1 AND state = 'active'"
    );
    if conn.execute(&sql, params![id, now_ms()])? == 1 {
        return Ok(());
    }
    let state: Option<String> = conn
        .query_row("SELECT state FROM links WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    match state {
        None => Err(StoreError::LinkNotFound(id.into())),
        // Revoking an expired or revoked link again is already done.
        Some(_) => Ok(()),
    }
}

pub(super) fn revoke_for_message(conn: &Connection, message_id: &str) -> Result<usize, StoreError> {
    let sql = format!(
        "UPDATE links SET state = 'revoked', ended_at = ?2, {TOMBSTONE}
         WHERE message_id = ?1 AND state = 'active'"
    );
    Ok(conn.execute(&sql, params![message_id, now_ms()])?)
}

pub(super) fn expire(conn: &Connection, now: i64) -> Result<Vec<String>, StoreError> {
    let ids = conn
        .prepare_cached("SELECT id FROM links WHERE state = 'active' AND expires_at <= ?1")?
        .query_map([now], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let sql = format!(
        "UPDATE links SET state = 'expired', ended_at = ?1, {TOMBSTONE}
         WHERE state = 'active' AND expires_at <= ?1"
    );
    conn.execute(&sql, [now])?;
    Ok(ids)
}

pub(super) fn active_ids(conn: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM links WHERE state = 'active'")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn record_download(
    conn: &Connection,
    link_id: &str,
    outcome: &str,
    ip: Option<&str>,
) -> Result<Option<DownloadNotice>, StoreError> {
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO downloads (link_id, at, outcome, ip) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![link_id, now, outcome, ip])?;
    if outcome != "downloaded" {
        return Ok(None);
    }
    // The notice is due on the first download only, of an active link
    // that asked for one.
    let notice = conn
        .query_row(
            "SELECT message_id, account, file_name, notify_to FROM links
             WHERE id = ?1 AND state = 'active' AND first_download_at IS NULL
               AND notify_to IS NOT NULL",
            [link_id],
            |r| {
                Ok(DownloadNotice {
                    link_id: link_id.to_owned(),
                    message_id: r.get(0)?,
                    account: r.get(1)?,
                    file_name: r.get(2)?,
                    notify_to: r.get(3)?,
                })
            },
        )
        .optional()?;
    conn.execute(
        "UPDATE links SET downloads = downloads + 1,
             first_download_at = coalesce(first_download_at, ?2)
         WHERE id = ?1",
        params![link_id, now],
    )?;
    Ok(notice)
}

pub(super) fn purge(conn: &Connection, before: i64) -> Result<usize, StoreError> {
    let tombstones = conn.execute(
        "DELETE FROM links WHERE state != 'active' AND ended_at < ?1",
        [before],
    )?;
    let log = conn.execute("DELETE FROM downloads WHERE at < ?1", [before])?;
    Ok(tombstones + log)
}

/// [`guesses::take`] on the budgets of `keys`, inside the writer's
/// transaction (so attempts never interleave).
pub(super) fn take_guess(
    conn: &Connection,
    keys: &[String; 3],
    policy: &GuessPolicy,
    now: i64,
) -> Result<Result<(), Duration>, StoreError> {
    Ok(
        match guesses::take(read_guesses(conn, keys)?, now, policy) {
            Ok(rows) => Ok(write_guesses(conn, keys, &rows)?),
            Err(wait) => Err(wait),
        },
    )
}

pub(super) fn give_back_guess(
    conn: &Connection,
    keys: &[String; 3],
    policy: &GuessPolicy,
) -> Result<(), StoreError> {
    let rows = guesses::give_back(read_guesses(conn, keys)?, policy);
    write_guesses(conn, keys, &rows)
}

fn read_guesses(conn: &Connection, keys: &[String; 3]) -> Result<[GuessRow; 3], StoreError> {
    let mut read =
        conn.prepare_cached("SELECT count, at, expires FROM link_guesses WHERE key = ?1")?;
    let mut rows = [GuessRow::default(); 3];
    for (row, key) in rows.iter_mut().zip(keys) {
        let found = read
            .query_row([key], |r| {
                Ok(GuessRow {
                    count: r.get(0)?,
                    at: r.get(1)?,
                    expires: r.get(2)?,
                })
            })
            .optional()?;
        *row = found.unwrap_or_default();
    }
    Ok(rows)
}

fn write_guesses(
    conn: &Connection,
    keys: &[String; 3],
    rows: &[GuessRow; 3],
) -> Result<(), StoreError> {
    let mut write = conn.prepare_cached(
        "INSERT INTO link_guesses (key, count, at, expires) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key) DO UPDATE SET
           count = excluded.count, at = excluded.at, expires = excluded.expires",
    )?;
    for (row, key) in rows.iter().zip(keys) {
        write.execute(params![key, row.count, row.at, row.expires])?;
    }
    Ok(())
}

pub(super) fn purge_guesses(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM link_guesses WHERE expires <= ?1", [now])?)
}

impl LinkStore for SqliteStore {
    fn link_by_token(
        &self,
        token_hash: &str,
    ) -> BoxFuture<'_, Result<Option<LinkRecord>, StoreError>> {
        let hash = token_hash.to_owned();
        self.read(move |conn| by_token(conn, &hash))
    }

    fn links(&self, all: bool) -> BoxFuture<'_, Result<Vec<LinkRecord>, StoreError>> {
        self.read(move |conn| list(conn, all))
    }

    fn revoke_link(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| revoke(conn, &id))
    }

    fn expire_links(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.write(move |conn| expire(conn, now_ms))
    }

    fn active_link_ids(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.read(active_ids)
    }

    fn record_download(
        &self,
        link_id: &str,
        outcome: &'static str,
        ip: Option<String>,
    ) -> BoxFuture<'_, Result<Option<DownloadNotice>, StoreError>> {
        let id = link_id.to_owned();
        self.write(move |conn| record_download(conn, &id, outcome, ip.as_deref()))
    }

    fn purge_links(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| purge(conn, before_ms))
    }

    fn take_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: GuessPolicy,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Result<(), std::time::Duration>, StoreError>> {
        let keys = guesses::keys(link_id, &self.pseudonyms.of(client));
        self.write(move |conn| take_guess(conn, &keys, &policy, now_ms))
    }

    fn give_back_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let keys = guesses::keys(link_id, &self.pseudonyms.of(client));
        self.write(move |conn| give_back_guess(conn, &keys, &policy))
    }

    fn purge_guesses(&self, now_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| purge_guesses(conn, now_ms))
    }
}
