//! The delivery log side of the PostgreSQL store: attempt history,
//! pseudonymisation when a message becomes final, retention, and the data
//! subject's records (`gdpr export` / `gdpr erase`). Same rules as the
//! embedded store's `sqlite/log.rs`.

use std::sync::atomic::Ordering;

use super::{PostgresStore, Tx};
use crate::store::pseudonym::{PREFIX, Pseudonymizer};
use crate::store::{
    AfterErase, BoxFuture, Erased, LogStore, StoreError, SubjectAttempt, SubjectDownload,
    SubjectMessage, SubjectRecords,
};

fn i32_of(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) async fn record_attempt(
    tx: &Tx<'_>,
    seq: i64,
    at: i64,
    counts: (usize, usize, usize),
    reply: Option<&str>,
) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached(
            "INSERT INTO attempts (message_seq, at, delivered, deferred, failed, reply)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &seq,
            &at,
            &i32_of(counts.0),
            &i32_of(counts.1),
            &i32_of(counts.2),
            &reply,
        ],
    )
    .await?;
    Ok(())
}

/// Replaces a final message's recipient addresses by their pseudonyms,
/// also where upstream replies and the last error quote them.
pub(super) async fn pseudonymise(
    tx: &Tx<'_>,
    seq: i64,
    p: &Pseudonymizer,
) -> Result<(), StoreError> {
    let st = tx
        .prepare_cached("SELECT idx, address, reply FROM recipients WHERE message_seq = $1")
        .await?;
    let mut rows: Vec<(i32, String, Option<String>)> = Vec::new();
    for r in tx.query(&st, &[&seq]).await? {
        rows.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
    }
    let addresses: Vec<&str> = rows
        .iter()
        .map(|(_, a, _)| a.as_str())
        .filter(|a| !a.starts_with(PREFIX))
        .collect();
    let scrub = |text: &str| {
        addresses
            .iter()
            .fold(text.to_owned(), |t, a| p.scrub(&t, a))
    };
    let st = tx
        .prepare_cached(
            "UPDATE recipients SET address = $1, reply = $2 WHERE message_seq = $3 AND idx = $4",
        )
        .await?;
    for (idx, address, reply) in &rows {
        if address.starts_with(PREFIX) {
            continue;
        }
        let reply = reply.as_deref().map(scrub);
        tx.execute(&st, &[&p.of(address), &reply, &seq, idx])
            .await?;
    }
    let error: Option<String> = tx
        .query_one("SELECT last_error FROM messages WHERE seq = $1", &[&seq])
        .await?
        .try_get(0)?;
    if let Some(e) = error {
        tx.execute(
            "UPDATE messages SET last_error = $1 WHERE seq = $2",
            &[&scrub(&e), &seq],
        )
        .await?;
    }
    let replies = tx
        .query(
            "SELECT id, reply FROM attempts WHERE message_seq = $1 AND reply IS NOT NULL",
            &[&seq],
        )
        .await?;
    for r in replies {
        let id: i64 = r.try_get(0)?;
        let reply: String = r.try_get(1)?;
        tx.execute(
            "UPDATE attempts SET reply = $1 WHERE id = $2",
            &[&scrub(&reply), &id],
        )
        .await?;
    }
    Ok(())
}

/// Deletes final messages (recipients and attempts cascade) that finished
/// before `before`.
pub(super) async fn purge(tx: &Tx<'_>, before: i64) -> Result<usize, StoreError> {
    let n = tx
        .execute(
            "DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < $1",
            &[&before],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// When the oldest record still held was written: the oldest final
/// message's end, or the oldest download-log entry.
pub(super) async fn oldest(tx: &Tx<'_>) -> Result<Option<i64>, StoreError> {
    let row = tx
        .query_one(
            "SELECT (SELECT min(finished_at) FROM messages WHERE finished_at IS NOT NULL),
                    (SELECT min(at) FROM downloads)",
            &[],
        )
        .await?;
    let messages: Option<i64> = row.try_get(0)?;
    let downloads: Option<i64> = row.try_get(1)?;
    Ok(match (messages, downloads) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// One recipient row: message seq, index, state, last reply.
type RecipientRow = (i64, i32, String, Option<String>);

/// Recipient rows that are this person: the address in clear (while the
/// message is queued, or with `log_recipients = "clear"`) or its pseudonym
/// (lowercase already, so the `lower(address)` index serves both).
async fn matching_rows(
    tx: &Tx<'_>,
    address: &str,
    pseudonym: &str,
) -> Result<Vec<RecipientRow>, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT message_seq, idx, state, reply FROM recipients
             WHERE lower(address) = lower($1) OR lower(address) = $2
             ORDER BY message_seq, idx",
        )
        .await?;
    tx.query(&st, &[&address.trim(), &pseudonym])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

pub(super) async fn subject(
    tx: &Tx<'_>,
    address: &str,
    pseudonym: &str,
) -> Result<SubjectRecords, StoreError> {
    let mut out = SubjectRecords {
        address: address.trim().to_owned(),
        pseudonym: pseudonym.to_owned(),
        ..SubjectRecords::default()
    };
    for (seq, _idx, state, reply) in matching_rows(tx, address, pseudonym).await? {
        let Some(m) = tx
            .query_opt(
                "SELECT id, received_at, finished_at, account, size, state, note FROM messages
                 WHERE seq = $1",
                &[&seq],
            )
            .await?
        else {
            continue;
        };
        let id: String = m.try_get(0)?;
        let mut attempts = Vec::new();
        for r in tx
            .query(
                "SELECT at, delivered, deferred, failed, reply FROM attempts
                 WHERE message_seq = $1 ORDER BY at, id",
                &[&seq],
            )
            .await?
        {
            attempts.push(SubjectAttempt {
                at: r.try_get(0)?,
                delivered: u32::try_from(r.try_get::<_, i32>(1)?).unwrap_or(0),
                deferred: u32::try_from(r.try_get::<_, i32>(2)?).unwrap_or(0),
                failed: u32::try_from(r.try_get::<_, i32>(3)?).unwrap_or(0),
                reply: r.try_get(4)?,
            });
        }
        let documents = super::links::of_message(tx, &id).await?;
        for d in &documents {
            for r in tx
                .query(
                    "SELECT at, outcome FROM downloads WHERE link_id = $1 ORDER BY at, id",
                    &[&d.id],
                )
                .await?
            {
                out.downloads.push(SubjectDownload {
                    link_id: d.id.clone(),
                    at: r.try_get(0)?,
                    outcome: r.try_get(1)?,
                });
            }
        }
        out.messages.push(SubjectMessage {
            id,
            received_at: m.try_get(1)?,
            finished_at: m.try_get(2)?,
            account: m.try_get(3)?,
            size: u64::try_from(m.try_get::<_, i64>(4)?).unwrap_or(0),
            state: m.try_get(5)?,
            note: m.try_get(6)?,
            recipient_state: state,
            reply,
            attempts,
            documents,
        });
    }
    Ok(out)
}

pub(super) async fn erase(
    tx: &Tx<'_>,
    address: &str,
    pseudonym: &str,
) -> Result<Erased, StoreError> {
    let mut erased = Erased::default();
    for (seq, idx, _state, _reply) in matching_rows(tx, address, pseudonym).await? {
        let Some(m) = tx
            .query_opt(
                "SELECT id, state FROM messages WHERE seq = $1 FOR UPDATE",
                &[&seq],
            )
            .await?
        else {
            continue;
        };
        let id: String = m.try_get(0)?;
        let state: String = m.try_get(1)?;
        // As the message has it (case and all), for the scrub below.
        let stored: String = tx
            .query_one(
                "SELECT address FROM recipients WHERE message_seq = $1 AND idx = $2",
                &[&seq, &idx],
            )
            .await?
            .try_get(0)?;
        tx.execute(
            "DELETE FROM recipients WHERE message_seq = $1 AND idx = $2",
            &[&seq, &idx],
        )
        .await?;
        // The documents of a message to this person are about them as
        // often as not: they go, for every recipient of that message.
        for link in super::links::of_message(tx, &id).await? {
            let n = tx
                .execute("DELETE FROM downloads WHERE link_id = $1", &[&link.id])
                .await?;
            tx.execute("DELETE FROM links WHERE id = $1", &[&link.id])
                .await?;
            erased.link_deleted(&link, usize::try_from(n).unwrap_or(usize::MAX));
        }
        let left: i64 = tx
            .query_one(
                "SELECT count(*) FROM recipients WHERE message_seq = $1",
                &[&seq],
            )
            .await?
            .try_get(0)?;
        match erased.recipient_deleted(id, &state, left > 0) {
            AfterErase::ScrubMessage => {
                for who in [stored.as_str(), address, pseudonym] {
                    tx.execute(
                        "UPDATE messages SET last_error = replace(last_error, $2, '[erased]')
                         WHERE seq = $1",
                        &[&seq, &who],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE attempts SET reply = replace(reply, $2, '[erased]')
                         WHERE message_seq = $1",
                        &[&seq, &who],
                    )
                    .await?;
                }
            }
            AfterErase::DeleteMessage => {
                tx.execute("DELETE FROM messages WHERE seq = $1", &[&seq])
                    .await?;
            }
        }
    }
    Ok(erased)
}

impl LogStore for PostgresStore {
    fn set_clear_recipients(&self, clear: bool) {
        self.clear_recipients.store(clear, Ordering::Relaxed);
    }

    fn purge_log(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| purge(&tx, before_ms).await?) })
    }

    fn oldest_record(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| oldest(&tx).await?) })
    }

    fn subject_records(&self, address: &str) -> BoxFuture<'_, Result<SubjectRecords, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        Box::pin(async move { in_tx!(self.pool, |tx| subject(&tx, &address, &pseudonym).await?) })
    }

    fn erase_subject(&self, address: &str) -> BoxFuture<'_, Result<Erased, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        Box::pin(async move {
            let erased: Erased =
                in_tx!(self.pool, |tx| { erase(&tx, &address, &pseudonym).await? })?;
            for id in &erased.queued_deleted {
                self.forget_lease(id);
            }
            Ok(erased)
        })
    }
}
