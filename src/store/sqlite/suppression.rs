//! The suppression list and the relay's delivery events in the embedded
//! store (see `crate::store::suppression` for what is kept and why).

use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::store::pseudonym::Pseudonymizer;
use crate::store::suppression::{
    ErasedSuppression, EventOutcome, EventSilence, NewRelayEvent, RecipientEffect, RelayEvent,
    SubjectSuppression, SuppressOutcome, Suppression, SuppressionSource, SuppressionStore,
    normalise, upsert_outcome,
};
use crate::store::{BoxFuture, MessageState, RecipientState, StoreError, now_ms};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS suppressions (
    address    TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS suppressions_expiry ON suppressions(expires_at);
CREATE TABLE IF NOT EXISTS relay_events (
    key              TEXT PRIMARY KEY,
    received_at      INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    event            TEXT NOT NULL,
    message_id       TEXT,
    relay_message_id TEXT,
    recipient        TEXT NOT NULL,
    detail           TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relay_events_recipient ON relay_events(recipient);
CREATE INDEX IF NOT EXISTS relay_events_received ON relay_events(received_at);
CREATE INDEX IF NOT EXISTS relay_events_message ON relay_events(message_id);
";

const COLUMNS: &str = "address, source, reason, detail, created_at, expires_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Suppression> {
    let source: String = r.get(1)?;
    Ok(Suppression {
        address: r.get(0)?,
        source: SuppressionSource::parse(&source).unwrap_or(SuppressionSource::Admin),
        reason: r.get(2)?,
        detail: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

fn get(conn: &Connection, address: &str) -> Result<Option<Suppression>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM suppressions WHERE address = ?1"
        ))?
        .query_row([normalise(address)], row)
        .optional()?)
}

/// The active entry for `address`, if any.
pub(super) fn lookup(
    conn: &Connection,
    address: &str,
    now: i64,
) -> Result<Option<Suppression>, StoreError> {
    Ok(get(conn, address)?.filter(|s| s.active_at(now)))
}

/// Active entries, newest first.
pub(super) fn list(conn: &Connection, now: i64) -> Result<Vec<Suppression>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM suppressions
             WHERE expires_at IS NULL OR expires_at > ?1
             ORDER BY created_at DESC, address"
        ))?
        .query_map([now], row)?
        .collect::<Result<_, _>>()?)
}

/// Adds or renews an entry. An automatic entry never shortens an active
/// one (a permanent admin entry stays permanent); `replace` (an admin's
/// explicit add) always writes.
pub(super) fn upsert(
    conn: &Connection,
    entry: &Suppression,
    replace: bool,
    now: i64,
) -> Result<SuppressOutcome, StoreError> {
    let address = normalise(&entry.address);
    let outcome = upsert_outcome(get(conn, &address)?.as_ref(), entry, replace, now);
    if outcome == SuppressOutcome::Kept {
        return Ok(outcome);
    }
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO suppressions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        address,
        entry.source.as_str(),
        entry.reason,
        entry.detail,
        entry.created_at,
        entry.expires_at,
    ])?;
    Ok(outcome)
}

pub(super) fn remove(conn: &Connection, address: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM suppressions WHERE address = ?1",
        [normalise(address)],
    )? > 0)
}

/// Stores a relay event once; applies its suppression and its effect on
/// our message only the first time. `pseudonym` is how the log names the
/// event's recipient once a message is final.
pub(super) fn record_event(
    conn: &Connection,
    event: &NewRelayEvent,
    suppress: Option<&Suppression>,
    pseudonyms: Option<&Pseudonymizer>,
    pseudonym: &str,
    now: i64,
) -> Result<EventOutcome, StoreError> {
    let known = conn
        .prepare_cached("SELECT 1 FROM relay_events WHERE key = ?1")?
        .exists([&event.key])?;
    if known {
        return Ok(EventOutcome::known());
    }
    // Only an id naming one of our messages is kept: the relay account may
    // carry other senders' mail, whose CustomIDs mean nothing here.
    let message_id = match &event.custom_id {
        Some(id) => conn
            .prepare_cached("SELECT id FROM messages WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, String>(0))
            .optional()?,
        None => None,
    };
    let (recipient, detail) = match pseudonyms {
        Some(p) => (
            p.of(&event.recipient),
            event
                .detail
                .as_deref()
                .map(|d| p.scrub(d, event.recipient.trim())),
        ),
        None => (normalise(&event.recipient), event.detail.clone()),
    };
    conn.prepare_cached(
        "INSERT INTO relay_events (key, received_at, at, event, message_id, relay_message_id,
             recipient, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        event.key,
        now,
        event.at,
        event.event,
        message_id,
        event.relay_message_id,
        recipient,
        detail,
    ])?;
    let suppression = match suppress {
        Some(entry) => Some(upsert(conn, entry, false, now)?),
        None => None,
    };
    let (changed, notice) = match (&message_id, &event.effect) {
        (Some(id), Some(effect)) => {
            let reply = match pseudonyms {
                Some(p) => p.scrub(&effect.reply, event.recipient.trim()),
                None => effect.reply.clone(),
            };
            apply_effect(conn, id, &event.recipient, pseudonym, effect, &reply)?
        }
        _ => (None, None),
    };
    Ok(EventOutcome {
        new: true,
        matched: message_id.is_some(),
        suppression,
        changed,
        notice,
    })
}

/// Moves the event's recipient of message `id` to the effect's state if
/// that is a later stage; a failure also makes the message `bounced` and
/// queues the DSN, in this same transaction.
fn apply_effect(
    conn: &Connection,
    id: &str,
    recipient: &str,
    pseudonym: &str,
    effect: &RecipientEffect,
    reply: &str,
) -> Result<(Option<RecipientState>, Option<String>), StoreError> {
    if !RecipientState::Delivered.advances_to(effect.state) {
        // Not a stage after the hand-over: nothing an event may set.
        return Ok((None, None));
    }
    let (seq, message_state) = super::queue::lookup(conn, id)?;
    // While the message is final the log names the recipient by its
    // pseudonym; before (an event overtaking our own record) in clear.
    let rows: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT idx, state FROM recipients
             WHERE message_seq = ?1 AND (lower(address) = ?2 OR address = ?3)",
        )?
        .query_map(params![seq, normalise(recipient), pseudonym], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut changed = None;
    for (idx, state) in rows {
        if !RecipientState::parse(&state).is_some_and(|old| old.advances_to(effect.state)) {
            continue;
        }
        conn.prepare_cached(
            "UPDATE recipients SET state = ?1, reply = ?2 WHERE message_seq = ?3 AND idx = ?4",
        )?
        .execute(params![effect.state.as_str(), reply, seq, idx])?;
        changed = Some(effect.state);
    }
    let mut notice = None;
    if changed.is_some_and(RecipientState::failed_after_handover) {
        if message_state == MessageState::Delivered {
            conn.prepare_cached("UPDATE messages SET state = 'bounced' WHERE seq = ?1")?
                .execute([seq])?;
        }
        if let Some(n) = &effect.notice {
            notice = Some(super::queue::insert_message(conn, n)?);
        }
    }
    Ok((changed, notice))
}

/// Deletes entries that expired and events received before `events_before`.
pub(super) fn purge(
    conn: &Connection,
    now: i64,
    events_before: i64,
) -> Result<(usize, usize), StoreError> {
    let entries = conn.execute(
        "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        [now],
    )?;
    let events = conn.execute(
        "DELETE FROM relay_events WHERE received_at < ?1",
        [events_before],
    )?;
    Ok((entries, events))
}

pub(super) fn subject(
    conn: &Connection,
    address: &str,
    pseudonym: &str,
) -> Result<SubjectSuppression, StoreError> {
    let relay_events = conn
        .prepare_cached(
            "SELECT event, at, received_at, message_id, relay_message_id, recipient, detail
             FROM relay_events WHERE recipient = ?1 OR recipient = ?2 ORDER BY at, received_at",
        )?
        .query_map(params![pseudonym, normalise(address)], |r| {
            Ok(RelayEvent {
                event: r.get(0)?,
                at: r.get(1)?,
                received_at: r.get(2)?,
                message_id: r.get(3)?,
                relay_message_id: r.get(4)?,
                recipient: r.get(5)?,
                detail: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(SubjectSuppression {
        entry: get(conn, address)?,
        relay_events,
    })
}

pub(super) fn erase(
    conn: &Connection,
    address: &str,
    pseudonym: &str,
) -> Result<ErasedSuppression, StoreError> {
    Ok(ErasedSuppression {
        entries: usize::from(remove(conn, address)?),
        relay_events: conn.execute(
            "DELETE FROM relay_events WHERE recipient = ?1 OR recipient = ?2",
            params![pseudonym, normalise(address)],
        )?,
    })
}

impl SuppressionStore for SqliteStore {
    fn suppress(
        &self,
        entry: Suppression,
        replace: bool,
    ) -> BoxFuture<'_, Result<SuppressOutcome, StoreError>> {
        self.write(move |conn| upsert(conn, &entry, replace, now_ms()))
    }

    fn suppressed(
        &self,
        address: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Suppression>, StoreError>> {
        let address = address.to_owned();
        self.read(move |conn| lookup(conn, &address, now_ms))
    }

    fn suppressions(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Suppression>, StoreError>> {
        self.read(move |conn| list(conn, now_ms))
    }

    fn unsuppress(&self, address: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let address = address.to_owned();
        self.write(move |conn| remove(conn, &address))
    }

    fn record_relay_event(
        &self,
        event: NewRelayEvent,
        suppress: Option<Suppression>,
    ) -> BoxFuture<'_, Result<EventOutcome, StoreError>> {
        let pseudonyms =
            (!self.clear_recipients.load(Ordering::Relaxed)).then(|| self.pseudonyms.clone());
        let pseudonym = self.pseudonyms.of(&event.recipient);
        self.write(move |conn| {
            record_event(
                conn,
                &event,
                suppress.as_ref(),
                pseudonyms.as_ref(),
                &pseudonym,
                now_ms(),
            )
        })
    }

    fn purge_suppressions(
        &self,
        now_ms: i64,
        events_before_ms: i64,
    ) -> BoxFuture<'_, Result<(usize, usize), StoreError>> {
        self.write(move |conn| purge(conn, now_ms, events_before_ms))
    }

    fn suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<SubjectSuppression, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.read(move |conn| subject(conn, &address, &pseudonym))
    }

    fn erase_suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<ErasedSuppression, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        self.write(move |conn| erase(conn, &address, &pseudonym))
    }

    fn event_silence(
        &self,
        no_event_since_ms: i64,
    ) -> BoxFuture<'_, Result<EventSilence, StoreError>> {
        self.read(move |conn| super::liveness::silence(conn, no_event_since_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE);
             INSERT INTO messages (id) VALUES ('ourqueueid');",
        )
        .expect("messages");
        c.execute_batch(SCHEMA).expect("schema");
        c
    }

    fn entry(address: &str, expires_at: Option<i64>) -> Suppression {
        Suppression {
            address: address.into(),
            source: SuppressionSource::Upstream,
            reason: "upstream 550 5.1.1".into(),
            detail: None,
            created_at: 1000,
            expires_at,
        }
    }

    #[test]
    fn upsert_never_shortens_and_expiry_lifts() {
        let c = conn();
        let e = entry("Eltern@Example.org", Some(5000));
        assert_eq!(upsert(&c, &e, false, 1000).unwrap(), SuppressOutcome::Added);
        assert!(lookup(&c, "eltern@example.org", 4999).unwrap().is_some());
        assert!(lookup(&c, " <ELTERN@example.org>", 4999).unwrap().is_some());
        assert!(lookup(&c, "eltern@example.org", 5000).unwrap().is_none());
        let shorter = entry("eltern@example.org", Some(3000));
        assert_eq!(
            upsert(&c, &shorter, false, 1000).unwrap(),
            SuppressOutcome::Kept
        );
        let permanent = entry("eltern@example.org", None);
        assert_eq!(
            upsert(&c, &permanent, false, 1000).unwrap(),
            SuppressOutcome::Renewed
        );
        assert_eq!(upsert(&c, &e, false, 1000).unwrap(), SuppressOutcome::Kept);
        assert_eq!(
            upsert(&c, &e, true, 1000).unwrap(),
            SuppressOutcome::Renewed
        );
        assert_eq!(list(&c, 1000).unwrap().len(), 1);
        assert_eq!(purge(&c, 6000, 0).unwrap(), (1, 0));
        assert!(remove(&c, "eltern@example.org").is_ok_and(|r| !r));
    }

    #[test]
    fn events_are_idempotent_and_pseudonymised() {
        let c = conn();
        let p = Pseudonymizer::from_key(&[7; 32]);
        let ev = NewRelayEvent {
            key: "k1".into(),
            event: "bounce".into(),
            at: 1,
            custom_id: Some("ourqueueid".into()),
            relay_message_id: Some("123".into()),
            recipient: "Kind@Example.org".into(),
            detail: Some("recipient: user unknown <kind@example.org>".into()),
            effect: None,
        };
        let s = entry("kind@example.org", Some(10_000));
        let first = record_event(&c, &ev, Some(&s), Some(&p), "", 5).unwrap();
        assert!(first.new && first.matched);
        assert_eq!(first.suppression, Some(SuppressOutcome::Added));
        remove(&c, "kind@example.org").unwrap();
        let again = record_event(&c, &ev, Some(&s), Some(&p), "", 6).unwrap();
        assert!(!again.new && again.suppression.is_none());
        assert!(lookup(&c, "kind@example.org", 7).unwrap().is_none());
        let foreign = NewRelayEvent {
            key: "k2".into(),
            custom_id: Some("someone-else".into()),
            ..ev.clone()
        };
        assert!(
            !record_event(&c, &foreign, None, Some(&p), "", 8)
                .unwrap()
                .matched
        );
        let found = subject(&c, "kind@example.org", &p.of("kind@example.org")).unwrap();
        assert_eq!(found.relay_events.len(), 2);
        let text = format!("{:?}", found.relay_events);
        assert!(!text.to_lowercase().contains("kind@example.org"), "{text}");
        assert_eq!(
            found.relay_events[0].message_id.as_deref(),
            Some("ourqueueid")
        );
        let erased = erase(&c, "kind@example.org", &p.of("kind@example.org")).unwrap();
        assert_eq!((erased.entries, erased.relay_events), (0, 2));
    }
}
