//! The delivery log side of the embedded store: attempt history,
//! pseudonymisation when a message becomes final, retention, and the data
//! subject's records (`gdpr export` / `gdpr erase`).

use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::store::pseudonym::Pseudonymizer;
use crate::store::{
    AfterErase, BoxFuture, Erased, LinkRecord, LogStore, StoreError, SubjectAttempt,
    SubjectDownload, SubjectMessage, SubjectRecords,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS attempts (
    message_seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    delivered   INTEGER NOT NULL,
    deferred    INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    reply       TEXT
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts(message_seq);
CREATE INDEX IF NOT EXISTS messages_finished ON messages(finished_at);
";

pub(super) fn record_attempt(
    conn: &Connection,
    seq: i64,
    at: i64,
    counts: (usize, usize, usize),
    reply: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO attempts (message_seq, at, delivered, deferred, failed, reply)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        seq,
        at,
        counts.0 as i64,
        counts.1 as i64,
        counts.2 as i64,
        reply
    ])?;
    Ok(())
}

/// Replaces a final message's recipient addresses by their pseudonyms,
/// also where upstream replies quote them.
pub(super) fn pseudonymise(
    conn: &Connection,
    seq: i64,
    p: &Pseudonymizer,
) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, Option<String>)> = conn
        .prepare_cached("SELECT idx, address, reply FROM recipients WHERE message_seq = ?1")?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let addresses: Vec<&str> = rows.iter().map(|(_, a, _)| a.as_str()).collect();
    let scrub = |text: &str| {
        addresses
            .iter()
            .filter(|a| !a.starts_with(crate::store::pseudonym::PREFIX))
            .fold(text.to_owned(), |t, a| p.scrub(&t, a))
    };
    let mut update = conn.prepare_cached(
        "UPDATE recipients SET address = ?1, reply = ?2 WHERE message_seq = ?3 AND idx = ?4",
    )?;
    for (idx, address, reply) in &rows {
        if address.starts_with(crate::store::pseudonym::PREFIX) {
            continue;
        }
        update.execute(params![
            p.of(address),
            reply.as_deref().map(scrub),
            seq,
            idx
        ])?;
    }
    let error: Option<String> = conn.query_row(
        "SELECT last_error FROM messages WHERE seq = ?1",
        [seq],
        |r| r.get(0),
    )?;
    if let Some(e) = error {
        conn.execute(
            "UPDATE messages SET last_error = ?1 WHERE seq = ?2",
            params![scrub(&e), seq],
        )?;
    }
    let replies: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT rowid, reply FROM attempts WHERE message_seq = ?1 AND reply IS NOT NULL",
        )?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (rowid, reply) in replies {
        conn.execute(
            "UPDATE attempts SET reply = ?1 WHERE rowid = ?2",
            params![scrub(&reply), rowid],
        )?;
    }
    Ok(())
}

/// Deletes final messages (with recipients and attempts) that finished
/// before `before`.
pub(super) fn purge(conn: &Connection, before: i64) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?1",
        [before],
    )?)
}

/// When the oldest record still held was written: the oldest final
/// message's end, or the oldest download-log entry.
pub(super) fn oldest(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let messages: Option<i64> = conn.query_row(
        "SELECT min(finished_at) FROM messages WHERE finished_at IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    let downloads: Option<i64> =
        conn.query_row("SELECT min(at) FROM downloads", [], |r| r.get(0))?;
    Ok(match (messages, downloads) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// One recipient row: message seq, index, state, last reply.
type RecipientRow = (i64, i64, String, Option<String>);

/// Recipient rows that are this person: the address in clear (while the
/// message is queued, or with `log_recipients = "clear"`) or its pseudonym.
fn matching_rows(
    conn: &Connection,
    address: &str,
    pseudonym: &str,
) -> Result<Vec<RecipientRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT message_seq, idx, state, reply FROM recipients
             WHERE lower(address) = lower(?1) OR address = ?2
             ORDER BY message_seq",
        )?
        .query_map(params![address.trim(), pseudonym], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?)
}

fn links_of(conn: &Connection, message_id: &str) -> Result<Vec<LinkRecord>, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT token_hash FROM links WHERE message_id = ?1 ORDER BY created_at")?
        .query_map([message_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .filter_map(|h| super::links::by_token(conn, h).transpose())
        .collect()
}

pub(super) fn subject(
    conn: &Connection,
    address: &str,
    pseudonym: &str,
) -> Result<SubjectRecords, StoreError> {
    let mut out = SubjectRecords {
        address: address.trim().to_owned(),
        pseudonym: pseudonym.to_owned(),
        ..SubjectRecords::default()
    };
    for (seq, _idx, state, reply) in matching_rows(conn, address, pseudonym)? {
        let row = conn
            .query_row(
                "SELECT id, received_at, finished_at, account, size, state, note FROM messages
                 WHERE seq = ?1",
                [seq],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, received_at, finished_at, account, size, message_state, note)) = row else {
            continue;
        };
        let attempts = conn
            .prepare_cached(
                "SELECT at, delivered, deferred, failed, reply FROM attempts
                 WHERE message_seq = ?1 ORDER BY at",
            )?
            .query_map([seq], |r| {
                Ok(SubjectAttempt {
                    at: r.get(0)?,
                    delivered: r.get::<_, i64>(1)? as u32,
                    deferred: r.get::<_, i64>(2)? as u32,
                    failed: r.get::<_, i64>(3)? as u32,
                    reply: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let documents = links_of(conn, &id)?;
        for d in &documents {
            let downloads: Vec<SubjectDownload> = conn
                .prepare_cached("SELECT at, outcome FROM downloads WHERE link_id = ?1 ORDER BY at")?
                .query_map([&d.id], |r| {
                    Ok(SubjectDownload {
                        link_id: d.id.clone(),
                        at: r.get(0)?,
                        outcome: r.get(1)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            out.downloads.extend(downloads);
        }
        out.messages.push(SubjectMessage {
            id,
            received_at,
            finished_at,
            account,
            size: size as u64,
            state: message_state,
            note,
            recipient_state: state,
            reply,
            attempts,
            documents,
        });
    }
    Ok(out)
}

pub(super) fn erase(
    conn: &Connection,
    address: &str,
    pseudonym: &str,
) -> Result<Erased, StoreError> {
    let mut erased = Erased::default();
    for (seq, idx, _state, _reply) in matching_rows(conn, address, pseudonym)? {
        let Some((id, state)) = conn
            .query_row(
                "SELECT id, state FROM messages WHERE seq = ?1",
                [seq],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?
        else {
            continue;
        };
        // As the message has it (case and all), for the scrub below.
        let stored: String = conn.query_row(
            "SELECT address FROM recipients WHERE message_seq = ?1 AND idx = ?2",
            params![seq, idx],
            |r| r.get(0),
        )?;
        conn.execute(
            "DELETE FROM recipients WHERE message_seq = ?1 AND idx = ?2",
            params![seq, idx],
        )?;
        // The documents of a message to this person are about them as
        // often as not: they go, for every recipient of that message.
        for link in links_of(conn, &id)? {
            let downloads = conn.execute("DELETE FROM downloads WHERE link_id = ?1", [&link.id])?;
            conn.execute("DELETE FROM links WHERE id = ?1", [&link.id])?;
            erased.link_deleted(&link, downloads);
        }
        let left: i64 = conn.query_row(
            "SELECT count(*) FROM recipients WHERE message_seq = ?1",
            [seq],
            |r| r.get(0),
        )?;
        match erased.recipient_deleted(id, &state, left > 0) {
            AfterErase::ScrubMessage => {
                for who in [stored.as_str(), address, pseudonym] {
                    conn.execute(
                        "UPDATE messages SET last_error = replace(last_error, ?2, '[erased]')
                         WHERE seq = ?1",
                        params![seq, who],
                    )?;
                    conn.execute(
                        "UPDATE attempts SET reply = replace(reply, ?2, '[erased]')
                         WHERE message_seq = ?1",
                        params![seq, who],
                    )?;
                }
            }
            AfterErase::DeleteMessage => {
                conn.execute("DELETE FROM messages WHERE seq = ?1", [seq])?;
            }
        }
    }
    Ok(erased)
}

impl LogStore for SqliteStore {
    fn set_clear_recipients(&self, clear: bool) {
        self.clear_recipients.store(clear, Ordering::Relaxed);
    }

    fn purge_log(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.write(move |conn| purge(conn, before_ms))
    }

    fn oldest_record(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        self.read(oldest)
    }

    fn subject_records(&self, address: &str) -> BoxFuture<'_, Result<SubjectRecords, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.read(move |conn| subject(conn, &address, &pseudonym))
    }

    fn erase_subject(&self, address: &str) -> BoxFuture<'_, Result<Erased, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.write(move |conn| erase(conn, &address, &pseudonym))
    }
}
