//! The link tables of the PostgreSQL store (see `crate::store::links` for
//! what a row holds before and after expiry).

use std::time::Duration;

use tokio_postgres::Row;

use super::{PostgresStore, Tx};
use crate::store::guesses::{self, GuessPolicy, GuessRow};
use crate::store::{
    BoxFuture, DownloadNotice, LinkRecord, LinkState, LinkStore, NewLink, StoreError, now_ms,
};

pub(super) async fn insert(
    tx: &Tx<'_>,
    message_id: &str,
    link: &NewLink,
) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached(
            "INSERT INTO links (id, token_hash, message_id, account, file_name, content_type,
                 size, created_at, expires_at, salt, protected, notify_to, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active')",
        )
        .await?;
    let size = i64::try_from(link.size).unwrap_or(i64::MAX);
    tx.execute(
        &st,
        &[
            &link.id,
            &link.token_hash,
            &message_id,
            &link.account,
            &link.file_name,
            &link.content_type,
            &size,
            &link.created_at,
            &link.expires_at,
            &link.salt,
            &link.protected,
            &link.notify_to,
        ],
    )
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, message_id, account, file_name, content_type, size, created_at,
    expires_at, protected, downloads, first_download_at, state, salt";

fn row(r: &Row) -> Result<LinkRecord, StoreError> {
    let state: String = r.try_get(11)?;
    Ok(LinkRecord {
        id: r.try_get(0)?,
        message_id: r.try_get(1)?,
        account: r.try_get(2)?,
        file_name: r.try_get(3)?,
        content_type: r.try_get(4)?,
        size: u64::try_from(r.try_get::<_, i64>(5)?).unwrap_or(0),
        created_at: r.try_get(6)?,
        expires_at: r.try_get(7)?,
        protected: r.try_get(8)?,
        downloads: u64::try_from(r.try_get::<_, i64>(9)?).unwrap_or(0),
        first_download_at: r.try_get(10)?,
        // An unknown state is treated as the safe one: nothing opens.
        state: LinkState::parse(&state).unwrap_or(LinkState::Revoked),
        salt: r.try_get::<_, Option<Vec<u8>>>(12)?.unwrap_or_default(),
    })
}

pub(super) async fn by_token(
    tx: &Tx<'_>,
    token_hash: &str,
) -> Result<Option<LinkRecord>, StoreError> {
    let st = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM links WHERE token_hash = $1"
        ))
        .await?;
    tx.query_opt(&st, &[&token_hash])
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

pub(super) async fn list(tx: &Tx<'_>, all: bool) -> Result<Vec<LinkRecord>, StoreError> {
    let filter = if all { "" } else { "WHERE state = 'active'" };
    let st = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM links {filter} ORDER BY created_at DESC, id"
        ))
        .await?;
    tx.query(&st, &[]).await?.iter().map(row).collect()
}

/// Links of one message, oldest first, in any state.
pub(super) async fn of_message(
    tx: &Tx<'_>,
    message_id: &str,
) -> Result<Vec<LinkRecord>, StoreError> {
    let st = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM links WHERE message_id = $1 ORDER BY created_at, id"
        ))
        .await?;
    tx.query(&st, &[&message_id])
        .await?
        .iter()
        .map(row)
        .collect()
}

/// Wipes everything of an active link but what the `410` page and the
/// download log need.
const TOMBSTONE: &str = "file_name = '', content_type = '', salt = NULL, notify_to = NULL";

pub(super) async fn revoke(tx: &Tx<'_>, id: &str) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE links SET state = 'revoked', ended_at = $2, {TOMBSTONE}
         WHERE id = $1 AND state = 'active'"
    );
    if tx.execute(&sql, &[&id, &now_ms()]).await? == 1 {
        return Ok(());
    }
    let exists = tx
        .query_opt("SELECT 1 FROM links WHERE id = $1", &[&id])
        .await?
        .is_some();
    if exists {
        // Revoking an expired or revoked link again is already done.
        Ok(())
    } else {
        Err(StoreError::LinkNotFound(id.into()))
    }
}

pub(super) async fn revoke_for_message(tx: &Tx<'_>, message_id: &str) -> Result<u64, StoreError> {
    let sql = format!(
        "UPDATE links SET state = 'revoked', ended_at = $2, {TOMBSTONE}
         WHERE message_id = $1 AND state = 'active'"
    );
    Ok(tx.execute(&sql, &[&message_id, &now_ms()]).await?)
}

pub(super) async fn expire(tx: &Tx<'_>, now: i64) -> Result<Vec<String>, StoreError> {
    // One statement: an instance expiring at the same time gets the other
    // rows (or none), never the same id twice.
    let sql = format!(
        "UPDATE links SET state = 'expired', ended_at = $1, {TOMBSTONE}
         WHERE state = 'active' AND expires_at <= $1 RETURNING id"
    );
    tx.query(&sql, &[&now])
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

pub(super) async fn active_ids(tx: &Tx<'_>) -> Result<Vec<String>, StoreError> {
    tx.query("SELECT id FROM links WHERE state = 'active'", &[])
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

pub(super) async fn record_download(
    tx: &Tx<'_>,
    link_id: &str,
    outcome: &str,
    ip: Option<&str>,
) -> Result<Option<DownloadNotice>, StoreError> {
    let now = now_ms();
    let st = tx
        .prepare_cached("INSERT INTO downloads (link_id, at, outcome, ip) VALUES ($1, $2, $3, $4)")
        .await?;
    tx.execute(&st, &[&link_id, &now, &outcome, &ip]).await?;
    if outcome != "downloaded" {
        return Ok(None);
    }
    // The row lock makes "first" hold across instances: a second download
    // at the same moment waits here and then sees first_download_at set.
    let st = tx
        .prepare_cached(
            "SELECT message_id, account, file_name, notify_to, state, first_download_at
             FROM links WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let Some(r) = tx.query_opt(&st, &[&link_id]).await? else {
        return Ok(None);
    };
    let state: String = r.try_get(4)?;
    let first: Option<i64> = r.try_get(5)?;
    let notify_to: Option<String> = r.try_get(3)?;
    // The notice is due on the first download only, of an active link
    // that asked for one.
    let notice = match notify_to {
        Some(to) if state == LinkState::Active.as_str() && first.is_none() => {
            Some(DownloadNotice {
                link_id: link_id.to_owned(),
                message_id: r.try_get(0)?,
                account: r.try_get(1)?,
                file_name: r.try_get(2)?,
                notify_to: to,
            })
        }
        _ => None,
    };
    tx.execute(
        "UPDATE links SET downloads = downloads + 1,
             first_download_at = coalesce(first_download_at, $2)
         WHERE id = $1",
        &[&link_id, &now],
    )
    .await?;
    Ok(notice)
}

pub(super) async fn purge(tx: &Tx<'_>, before: i64) -> Result<usize, StoreError> {
    let tombstones = tx
        .execute(
            "DELETE FROM links WHERE state <> 'active' AND ended_at < $1",
            &[&before],
        )
        .await?;
    let log = tx
        .execute("DELETE FROM downloads WHERE at < $1", &[&before])
        .await?;
    Ok(usize::try_from(tombstones + log).unwrap_or(usize::MAX))
}

/// [`guesses::take`] on the budgets of `keys`, their rows locked for the
/// transaction so that parallel attempts (other instances too) queue.
pub(super) async fn take_guess(
    tx: &Tx<'_>,
    keys: &[String; 3],
    policy: &GuessPolicy,
    now: i64,
) -> Result<Result<(), Duration>, StoreError> {
    Ok(
        match guesses::take(lock_guesses(tx, keys).await?, now, policy) {
            Ok(rows) => Ok(write_guesses(tx, keys, &rows).await?),
            Err(wait) => Err(wait),
        },
    )
}

pub(super) async fn give_back_guess(
    tx: &Tx<'_>,
    keys: &[String; 3],
    policy: &GuessPolicy,
) -> Result<(), StoreError> {
    let rows = guesses::give_back(lock_guesses(tx, keys).await?, policy);
    write_guesses(tx, keys, &rows).await
}

/// Creates missing rows (as empty budgets), then locks all three, both in
/// key order, so two attempts never wait for each other in a circle.
async fn lock_guesses(tx: &Tx<'_>, keys: &[String; 3]) -> Result<[GuessRow; 3], StoreError> {
    let keys = keys.to_vec();
    tx.execute(
        "INSERT INTO link_guesses (key, count, at, expires)
         SELECT k, 0, 0, 0 FROM unnest($1::text[]) AS k ORDER BY k
         ON CONFLICT (key) DO NOTHING",
        &[&keys],
    )
    .await?;
    let found = tx
        .query(
            "SELECT key, count, at, expires FROM link_guesses
             WHERE key = ANY($1) ORDER BY key FOR UPDATE",
            &[&keys],
        )
        .await?;
    let mut rows = [GuessRow::default(); 3];
    for r in found {
        let key: String = r.try_get(0)?;
        if let Some(i) = keys.iter().position(|k| *k == key) {
            rows[i] = GuessRow {
                count: r.try_get(1)?,
                at: r.try_get(2)?,
                expires: r.try_get(3)?,
            };
        }
    }
    Ok(rows)
}

async fn write_guesses(
    tx: &Tx<'_>,
    keys: &[String; 3],
    rows: &[GuessRow; 3],
) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached("UPDATE link_guesses SET count = $2, at = $3, expires = $4 WHERE key = $1")
        .await?;
    for (row, key) in rows.iter().zip(keys) {
        tx.execute(&st, &[key, &row.count, &row.at, &row.expires])
            .await?;
    }
    Ok(())
}

pub(super) async fn purge_guesses(tx: &Tx<'_>, now: i64) -> Result<usize, StoreError> {
    let n = tx
        .execute("DELETE FROM link_guesses WHERE expires <= $1", &[&now])
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

impl LinkStore for PostgresStore {
    fn link_by_token(
        &self,
        token_hash: &str,
    ) -> BoxFuture<'_, Result<Option<LinkRecord>, StoreError>> {
        let hash = token_hash.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| by_token(&tx, &hash).await?) })
    }

    fn links(&self, all: bool) -> BoxFuture<'_, Result<Vec<LinkRecord>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| list(&tx, all).await?) })
    }

    fn revoke_link(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| revoke(&tx, &id).await?) })
    }

    fn expire_links(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| expire(&tx, now_ms).await?) })
    }

    fn active_link_ids(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| active_ids(&tx).await?) })
    }

    fn record_download(
        &self,
        link_id: &str,
        outcome: &'static str,
        ip: Option<String>,
    ) -> BoxFuture<'_, Result<Option<DownloadNotice>, StoreError>> {
        let id = link_id.to_owned();
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                record_download(&tx, &id, outcome, ip.as_deref()).await?
            })
        })
    }

    fn purge_links(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| purge(&tx, before_ms).await?) })
    }

    fn take_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: GuessPolicy,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Result<(), std::time::Duration>, StoreError>> {
        let keys = guesses::keys(link_id, &self.pseudonyms.of(client));
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                take_guess(&tx, &keys, &policy, now_ms).await?
            })
        })
    }

    fn give_back_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let keys = guesses::keys(link_id, &self.pseudonyms.of(client));
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                give_back_guess(&tx, &keys, &policy).await?
            })
        })
    }

    fn purge_guesses(&self, now_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| purge_guesses(&tx, now_ms).await?) })
    }
}
