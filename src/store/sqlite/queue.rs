//! The queue side of the embedded store: message rows, their recipients
//! and content, attempts, and the admin's actions on them.

use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, limits, links, log};
use crate::store::pseudonym::Pseudonymizer;
use crate::store::{
    AttemptUpdate, BoxFuture, MessageInfo, MessageState, NewMessage, QueueId, QueueStats,
    QueueStore, RecipientInfo, RecipientState, StoreError, now_ms,
};

pub(super) fn insert_message(conn: &Connection, msg: &NewMessage) -> Result<QueueId, StoreError> {
    let now = now_ms();
    let state = if msg.held {
        MessageState::Held
    } else {
        MessageState::Queued
    };
    conn.prepare_cached(
        "INSERT INTO messages (id, received_at, account, sender, size, state, next_attempt, note,
             dsn_to)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?2, ?7, ?8)",
    )?
    .execute(params![
        msg.id,
        now,
        msg.account,
        msg.sender,
        msg.content.len() as i64,
        state.as_str(),
        msg.note,
        crate::store::dsn_to_column(msg.dsn_to.as_deref()),
    ])?;
    let seq = conn.last_insert_rowid();
    let mut rcpt = conn.prepare_cached(
        "INSERT INTO recipients (message_seq, idx, address, state) VALUES (?1, ?2, ?3, 'pending')",
    )?;
    for (i, r) in msg.recipients.iter().enumerate() {
        rcpt.execute(params![seq, i as i64, r])?;
    }
    // Reserve the space, then write through the incremental blob API:
    // binding the bytes as a parameter would make SQLite take a private
    // copy of the whole message first.
    conn.prepare_cached("INSERT INTO contents (message_seq, data) VALUES (?1, zeroblob(?2))")?
        .execute(params![seq, msg.content.len() as i64])?;
    let mut blob = conn.blob_open(rusqlite::MAIN_DB, "contents", "data", seq, false)?;
    blob.write_at(&msg.content, 0)?;
    for link in &msg.links {
        links::insert(conn, &msg.id, link)?;
    }
    for companion in &msg.companions {
        insert_message(conn, companion)?;
    }
    limits::add(conn, &msg.counters)?;
    Ok(msg.id.clone())
}

const INFO_COLUMNS: &str = "seq, id, received_at, account, sender, size, state, attempts, next_attempt, last_error, note, \
     dsn_to";

fn row_to_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, MessageInfo)> {
    let state: String = row.get(6)?;
    Ok((
        row.get(0)?,
        MessageInfo {
            id: row.get(1)?,
            received_at: row.get(2)?,
            account: row.get(3)?,
            sender: row.get(4)?,
            size: row.get::<_, i64>(5)? as u64,
            state: MessageState::parse(&state).unwrap_or(MessageState::Queued),
            attempts: row.get::<_, i64>(7)? as u32,
            next_attempt: row.get(8)?,
            last_error: row.get(9)?,
            note: row.get(10)?,
            dsn_to: crate::store::dsn_to_of(row.get(11)?, &row.get::<_, String>(4)?),
            recipients: Vec::new(),
        },
    ))
}

fn with_recipients(
    conn: &Connection,
    rows: Vec<(i64, MessageInfo)>,
) -> Result<Vec<MessageInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT address, state, reply FROM recipients WHERE message_seq = ?1 ORDER BY idx",
    )?;
    rows.into_iter()
        .map(|(seq, mut info)| {
            info.recipients = stmt
                .query_map([seq], |r| {
                    let state: String = r.get(1)?;
                    Ok(RecipientInfo {
                        address: r.get(0)?,
                        state: RecipientState::parse(&state).unwrap_or(RecipientState::Pending),
                        reply: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(info)
        })
        .collect()
}

fn query_infos(
    conn: &Connection,
    where_clause: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MessageInfo>, StoreError> {
    let sql = format!("SELECT {INFO_COLUMNS} FROM messages {where_clause}");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params, row_to_info)?
        .collect::<Result<Vec<_>, _>>()?;
    with_recipients(conn, rows)
}

pub(super) fn lookup(conn: &Connection, id: &str) -> Result<(i64, MessageState), StoreError> {
    let row: Option<(i64, String)> = conn
        .query_row("SELECT seq, state FROM messages WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match row {
        Some((seq, state)) => Ok((
            seq,
            MessageState::parse(&state).unwrap_or(MessageState::Queued),
        )),
        None => Err(StoreError::NotFound(id.into())),
    }
}

fn set_state(
    conn: &Connection,
    id: &str,
    from: MessageState,
    to: MessageState,
) -> Result<(), StoreError> {
    let (seq, state) = lookup(conn, id)?;
    if state != from {
        return Err(StoreError::WrongState {
            id: id.into(),
            state,
            expected: from.as_str(),
        });
    }
    conn.execute(
        "UPDATE messages SET state = ?1, next_attempt = ?2 WHERE seq = ?3",
        params![to.as_str(), now_ms(), seq],
    )?;
    Ok(())
}

fn apply_attempt(
    conn: &Connection,
    id: &str,
    update: &AttemptUpdate,
    pseudonyms: Option<&Pseudonymizer>,
) -> Result<MessageState, StoreError> {
    let (seq, state) = lookup(conn, id)?;
    if !matches!(state, MessageState::Queued | MessageState::Held) {
        return Ok(state);
    }
    let attempts: i64 =
        conn.query_row("SELECT attempts FROM messages WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })?;
    if attempts != i64::from(update.expected_attempts) {
        return Err(StoreError::Conflict(id.into()));
    }
    if let Some(notice) = &update.bounce_notice {
        insert_message(conn, notice)?;
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE recipients SET state = ?1, reply = ?2 WHERE message_seq = ?3 AND address = ?4",
    )?;
    for (address, rstate, reply) in &update.recipients {
        stmt.execute(params![rstate.as_str(), reply, seq, address])?;
    }
    let count = |want: RecipientState| update.recipients.iter().filter(|r| r.1 == want).count();
    let summary = update
        .error
        .as_deref()
        .or_else(|| update.recipients.first().map(|r| r.2.as_str()));
    log::record_attempt(
        conn,
        seq,
        now_ms(),
        (
            count(RecipientState::Delivered),
            count(RecipientState::Pending),
            count(RecipientState::Failed),
        ),
        summary,
    )?;
    let pending: i64 = conn.query_row(
        "SELECT count(*) FROM recipients WHERE message_seq = ?1 AND state = 'pending'",
        [seq],
        |r| r.get(0),
    )?;
    let now = now_ms();
    let new_state = match (pending, update.next_attempt) {
        (p, Some(next)) if p > 0 => {
            conn.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt = ?1, last_error = ?2
                 WHERE seq = ?3",
                params![next, update.error, seq],
            )?;
            // An admin's hold during the attempt stays in force.
            state
        }
        _ => {
            // Nothing pending (or no further attempt): the message is final.
            conn.execute(
                "UPDATE recipients SET state = 'failed', reply = coalesce(reply, ?1)
                 WHERE message_seq = ?2 AND state = 'pending'",
                params![update.error, seq],
            )?;
            let failed: i64 = conn.query_row(
                "SELECT count(*) FROM recipients WHERE message_seq = ?1 AND state = 'failed'",
                [seq],
                |r| r.get(0),
            )?;
            let fin = if failed > 0 {
                MessageState::Bounced
            } else {
                MessageState::Delivered
            };
            conn.execute(
                "UPDATE messages SET attempts = attempts + 1, state = ?1, last_error = ?2,
                 finished_at = ?3 WHERE seq = ?4",
                params![fin.as_str(), update.error, now, seq],
            )?;
            conn.execute("DELETE FROM contents WHERE message_seq = ?1", [seq])?;
            if let Some(p) = pseudonyms {
                log::pseudonymise(conn, seq, p)?;
            }
            fin
        }
    };
    Ok(new_state)
}

impl QueueStore for SqliteStore {
    fn enqueue(&self, msg: NewMessage) -> BoxFuture<'_, Result<QueueId, StoreError>> {
        self.write(move |conn| insert_message(conn, &msg))
    }

    fn due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>> {
        self.read(move |conn| {
            query_infos(
                conn,
                "WHERE state = 'queued' AND next_attempt <= ?1 ORDER BY next_attempt, seq LIMIT ?2",
                params![now_ms, limit as i64],
            )
        })
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT min(next_attempt) FROM messages WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )?)
        })
    }

    fn content(&self, id: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let id = id.to_owned();
        self.read(move |conn| {
            // Read through the incremental blob API straight into one
            // buffer: a column read would first assemble SQLite's own copy
            // of a 25 MB value, then copy it again.
            let row: Option<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT c.message_seq, length(c.data) FROM contents c
                     JOIN messages m ON m.seq = c.message_seq WHERE m.id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((rowid, len)) = row else {
                return Ok(None);
            };
            let mut blob = conn.blob_open(rusqlite::MAIN_DB, "contents", "data", rowid, true)?;
            let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            std::io::Read::read_to_end(&mut blob, &mut data).map_err(StoreError::ContentRead)?;
            Ok(Some(data))
        })
    }

    fn record_attempt(
        &self,
        id: &str,
        update: AttemptUpdate,
    ) -> BoxFuture<'_, Result<MessageState, StoreError>> {
        let id = id.to_owned();
        let pseudonyms =
            (!self.clear_recipients.load(Ordering::Relaxed)).then(|| self.pseudonyms.clone());
        self.write(move |conn| apply_attempt(conn, &id, &update, pseudonyms.as_ref()))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>> {
        self.read(|conn| query_infos(conn, "WHERE state IN ('queued', 'held') ORDER BY seq", []))
    }

    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<MessageInfo>, StoreError>> {
        let id = id.to_owned();
        self.read(move |conn| Ok(query_infos(conn, "WHERE id = ?1", [id])?.into_iter().next()))
    }

    fn hold(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| set_state(conn, &id, MessageState::Queued, MessageState::Held))
    }

    fn release(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| set_state(conn, &id, MessageState::Held, MessageState::Queued))
    }

    fn retry(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| set_state(conn, &id, MessageState::Queued, MessageState::Queued))
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| {
            let (seq, state) = lookup(conn, &id)?;
            if !matches!(state, MessageState::Queued | MessageState::Held) {
                return Err(StoreError::WrongState {
                    id,
                    state,
                    expected: "queued or held",
                });
            }
            conn.execute("DELETE FROM messages WHERE seq = ?1", [seq])?;
            // Its documents were never sent: their links go with it (the
            // purge deletes the files of links that are no longer active).
            links::revoke_for_message(conn, &id)?;
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(|conn| {
            Ok(conn.execute(
                "UPDATE messages SET next_attempt = ?1 WHERE state = 'queued'",
                [now_ms()],
            )?)
        })
    }

    fn postpone(
        &self,
        id: &str,
        expected_attempts: u32,
        until_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE messages SET next_attempt = ?1
                 WHERE id = ?2 AND state = 'queued' AND attempts = ?3",
            )?
            .execute(rusqlite::params![until_ms, id, expected_attempts])?;
            Ok(())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Through the writer thread like an enqueue, so a stuck writer, a
        // lock held elsewhere or a file that cannot be written all show.
        self.write(|conn| {
            conn.prepare_cached("INSERT OR REPLACE INTO ping (id, at) VALUES (1, ?1)")?
                .execute([now_ms()])?;
            Ok(())
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>> {
        // Both queries use the (state, …) index: the cost follows the
        // queue's size, not the delivery log's.
        self.read(|conn| {
            let mut stats = QueueStats::default();
            let mut counts = conn.prepare_cached(
                "SELECT state, count(*) FROM messages WHERE state IN ('queued', 'held')
                 GROUP BY state",
            )?;
            let rows =
                counts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                match MessageState::parse(&state) {
                    Some(MessageState::Queued) => stats.queued = n,
                    Some(MessageState::Held) => stats.held = n,
                    _ => {}
                }
            }
            stats.oldest_queued_at = conn
                .prepare_cached("SELECT min(received_at) FROM messages WHERE state = 'queued'")?
                .query_row([], |r| r.get(0))?;
            Ok(stats)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::msg;

    #[tokio::test]
    async fn attempt_lifecycle_deletes_content_when_final() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let id = store.enqueue(msg(1)).await.expect("enqueue");
        let due = store.due(now_ms() + 1, 10).await.expect("due");
        assert_eq!(due.len(), 1);

        // First recipient delivered, second deferred.
        let state = store
            .record_attempt(
                &id,
                AttemptUpdate {
                    expected_attempts: 0,
                    recipients: vec![(
                        "r1@example.org".into(),
                        RecipientState::Delivered,
                        "250 ok".into(),
                    )],
                    next_attempt: Some(now_ms() + 60_000),
                    error: Some("451 later".into()),
                    bounce_notice: None,
                },
            )
            .await
            .expect("attempt");
        assert_eq!(state, MessageState::Queued);
        assert!(store.due(now_ms(), 10).await.expect("due").is_empty());
        store.retry(&id).await.expect("retry");
        assert_eq!(store.due(now_ms() + 1, 10).await.expect("due").len(), 1);

        let state = store
            .record_attempt(
                &id,
                AttemptUpdate {
                    expected_attempts: 1,
                    recipients: vec![(
                        "x@example.org".into(),
                        RecipientState::Failed,
                        "550 5.1.1 no".into(),
                    )],
                    next_attempt: None,
                    error: None,
                    bounce_notice: None,
                },
            )
            .await
            .expect("attempt");
        assert_eq!(state, MessageState::Bounced);
        assert!(store.content(&id).await.expect("content").is_none());
        assert!(store.list().await.expect("list").is_empty());
        let info = store.get(&id).await.expect("get").expect("exists");
        assert_eq!(info.attempts, 2);
        assert_eq!(info.recipients[0].state, RecipientState::Delivered);
        assert_eq!(info.recipients[1].state, RecipientState::Failed);
    }

    #[tokio::test]
    async fn hold_release_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let id = store.enqueue(msg(1)).await.expect("enqueue");
        store.hold(&id).await.expect("hold");
        assert!(store.due(now_ms() + 1, 10).await.expect("due").is_empty());
        assert!(matches!(
            store.hold(&id).await,
            Err(StoreError::WrongState { .. })
        ));
        store.release(&id).await.expect("release");
        assert_eq!(store.due(now_ms() + 1, 10).await.expect("due").len(), 1);
        store.delete(&id).await.expect("delete");
        assert!(store.get(&id).await.expect("get").is_none());
        assert!(matches!(
            store.delete("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
