//! The suppression list and the relay's delivery events in the PostgreSQL
//! store (see `crate::store::suppression` for what is kept and why).

use tokio_postgres::Row;

use super::{PostgresStore, Tx, messages};
use crate::store::pseudonym::Pseudonymizer;
use crate::store::suppression::{
    ErasedSuppression, EventOutcome, EventSilence, NewRelayEvent, RecipientEffect, RelayEvent,
    SubjectSuppression, SuppressOutcome, Suppression, SuppressionSource, SuppressionStore,
    normalise, upsert_outcome,
};
use crate::store::{BoxFuture, MessageState, RecipientState, StoreError, now_ms};

const COLUMNS: &str = "address, source, reason, detail, created_at, expires_at";

fn row(r: &Row) -> Result<Suppression, StoreError> {
    let source: String = r.try_get(1)?;
    Ok(Suppression {
        address: r.try_get(0)?,
        source: SuppressionSource::parse(&source).unwrap_or(SuppressionSource::Admin),
        reason: r.try_get(2)?,
        detail: r.try_get(3)?,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
    })
}

/// The entry for `address` in any state; `lock` keeps it for this
/// transaction (an upsert decides on what it read).
async fn get(tx: &Tx<'_>, address: &str, lock: bool) -> Result<Option<Suppression>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM suppressions WHERE address = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let st = tx.prepare_cached(&sql).await?;
    tx.query_opt(&st, &[&normalise(address)])
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

/// The active entry for `address`, if any.
pub(super) async fn lookup(
    tx: &Tx<'_>,
    address: &str,
    now: i64,
) -> Result<Option<Suppression>, StoreError> {
    Ok(get(tx, address, false).await?.filter(|s| s.active_at(now)))
}

/// Active entries, newest first.
pub(super) async fn list(tx: &Tx<'_>, now: i64) -> Result<Vec<Suppression>, StoreError> {
    let st = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM suppressions
             WHERE expires_at IS NULL OR expires_at > $1
             ORDER BY created_at DESC, address"
        ))
        .await?;
    tx.query(&st, &[&now]).await?.iter().map(row).collect()
}

/// Adds or renews an entry. An automatic entry never shortens an active
/// one (a permanent admin entry stays permanent); `replace` (an admin's
/// explicit add) always writes.
pub(super) async fn upsert(
    tx: &Tx<'_>,
    entry: &Suppression,
    replace: bool,
    now: i64,
) -> Result<SuppressOutcome, StoreError> {
    let address = normalise(&entry.address);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &address,
        &entry.source.as_str(),
        &entry.reason,
        &entry.detail,
        &entry.created_at,
        &entry.expires_at,
    ];
    // A new address needs no decision; inserting first also gives two
    // instances suppressing the same new address one row to wait on.
    let st = tx
        .prepare_cached(&format!(
            "INSERT INTO suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (address) DO NOTHING"
        ))
        .await?;
    if tx.execute(&st, &params).await? == 1 {
        return Ok(SuppressOutcome::Added);
    }
    let old = get(tx, &address, true).await?;
    let outcome = upsert_outcome(old.as_ref(), entry, replace, now);
    if outcome == SuppressOutcome::Kept {
        return Ok(outcome);
    }
    let st = tx
        .prepare_cached(&format!(
            "INSERT INTO suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (address) DO UPDATE SET source = excluded.source,
               reason = excluded.reason, detail = excluded.detail,
               created_at = excluded.created_at, expires_at = excluded.expires_at"
        ))
        .await?;
    tx.execute(&st, &params).await?;
    Ok(outcome)
}

pub(super) async fn remove(tx: &Tx<'_>, address: &str) -> Result<bool, StoreError> {
    Ok(tx
        .execute(
            "DELETE FROM suppressions WHERE address = $1",
            &[&normalise(address)],
        )
        .await?
        > 0)
}

/// Stores a relay event once; applies its suppression and its effect on
/// our message only the first time. `pseudonym` is how the log names the
/// event's recipient once a message is final.
pub(super) async fn record_event(
    tx: &Tx<'_>,
    event: &NewRelayEvent,
    suppress: Option<&Suppression>,
    pseudonyms: Option<&Pseudonymizer>,
    pseudonym: &str,
    now: i64,
) -> Result<EventOutcome, StoreError> {
    // Only an id naming one of our messages is kept: the relay account may
    // carry other senders' mail, whose CustomIDs mean nothing here.
    let message_id: Option<String> = match &event.custom_id {
        Some(id) => tx
            .query_opt("SELECT id FROM messages WHERE id = $1", &[id])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?,
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
    // The key decides atomically: a batch retried while the first delivery
    // of it is still being stored (by this or another instance) waits on
    // the key and then finds it taken.
    let st = tx
        .prepare_cached(
            "INSERT INTO relay_events (key, received_at, at, event, message_id,
                 relay_message_id, recipient, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (key) DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(
            &st,
            &[
                &event.key,
                &now,
                &event.at,
                &event.event,
                &message_id,
                &event.relay_message_id,
                &recipient,
                &detail,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(EventOutcome::known());
    }
    let suppression = match suppress {
        Some(entry) => Some(upsert(tx, entry, false, now).await?),
        None => None,
    };
    let (changed, notice) = match (&message_id, &event.effect) {
        (Some(id), Some(effect)) => {
            let reply = match pseudonyms {
                Some(p) => p.scrub(&effect.reply, event.recipient.trim()),
                None => effect.reply.clone(),
            };
            apply_effect(tx, id, &event.recipient, pseudonym, effect, &reply).await?
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
/// queues the DSN, in this same transaction. The message row is locked
/// first: two instances taking two events for one message apply them one
/// after the other, so only one of them queues the DSN.
async fn apply_effect(
    tx: &Tx<'_>,
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
    let Some(row) = tx
        .query_opt(
            "SELECT seq, state FROM messages WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Ok((None, None));
    };
    let seq: i64 = row.try_get(0)?;
    let message_state: String = row.try_get(1)?;
    // While the message is final the log names the recipient by its
    // pseudonym; before (an event overtaking our own record) in clear.
    let rows = tx
        .query(
            "SELECT idx, state FROM recipients
             WHERE message_seq = $1 AND (lower(address) = $2 OR address = $3)",
            &[&seq, &normalise(recipient), &pseudonym],
        )
        .await?;
    let mut changed = None;
    for r in rows {
        let idx: i32 = r.try_get(0)?;
        let state: String = r.try_get(1)?;
        if !RecipientState::parse(&state).is_some_and(|old| old.advances_to(effect.state)) {
            continue;
        }
        tx.execute(
            "UPDATE recipients SET state = $1, reply = $2 WHERE message_seq = $3 AND idx = $4",
            &[&effect.state.as_str(), &reply, &seq, &idx],
        )
        .await?;
        changed = Some(effect.state);
    }
    let mut notice = None;
    if changed.is_some_and(RecipientState::failed_after_handover) {
        if MessageState::parse(&message_state) == Some(MessageState::Delivered) {
            tx.execute(
                "UPDATE messages SET state = 'bounced' WHERE seq = $1",
                &[&seq],
            )
            .await?;
        }
        if let Some(n) = &effect.notice {
            notice = Some(messages::insert(tx, n).await?);
        }
    }
    Ok((changed, notice))
}

/// Deletes entries that expired and events received before `events_before`.
pub(super) async fn purge(
    tx: &Tx<'_>,
    now: i64,
    events_before: i64,
) -> Result<(usize, usize), StoreError> {
    let entries = tx
        .execute(
            "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= $1",
            &[&now],
        )
        .await?;
    let events = tx
        .execute(
            "DELETE FROM relay_events WHERE received_at < $1",
            &[&events_before],
        )
        .await?;
    Ok((
        usize::try_from(entries).unwrap_or(usize::MAX),
        usize::try_from(events).unwrap_or(usize::MAX),
    ))
}

pub(super) async fn subject(
    tx: &Tx<'_>,
    address: &str,
    pseudonym: &str,
) -> Result<SubjectSuppression, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT event, at, received_at, message_id, relay_message_id, recipient, detail
             FROM relay_events WHERE recipient = $1 OR recipient = $2
             ORDER BY at, received_at, key",
        )
        .await?;
    let relay_events = tx
        .query(&st, &[&pseudonym, &normalise(address)])
        .await?
        .iter()
        .map(|r| {
            Ok(RelayEvent {
                event: r.try_get(0)?,
                at: r.try_get(1)?,
                received_at: r.try_get(2)?,
                message_id: r.try_get(3)?,
                relay_message_id: r.try_get(4)?,
                recipient: r.try_get(5)?,
                detail: r.try_get(6)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(SubjectSuppression {
        entry: get(tx, address, false).await?,
        relay_events,
    })
}

pub(super) async fn erase(
    tx: &Tx<'_>,
    address: &str,
    pseudonym: &str,
) -> Result<ErasedSuppression, StoreError> {
    let entries = usize::from(remove(tx, address).await?);
    let events = tx
        .execute(
            "DELETE FROM relay_events WHERE recipient = $1 OR recipient = $2",
            &[&pseudonym, &normalise(address)],
        )
        .await?;
    Ok(ErasedSuppression {
        entries,
        relay_events: usize::try_from(events).unwrap_or(usize::MAX),
    })
}

impl SuppressionStore for PostgresStore {
    fn suppress(
        &self,
        entry: Suppression,
        replace: bool,
    ) -> BoxFuture<'_, Result<SuppressOutcome, StoreError>> {
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                upsert(&tx, &entry, replace, now_ms()).await?
            })
        })
    }

    fn suppressed(
        &self,
        address: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Suppression>, StoreError>> {
        let address = address.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| lookup(&tx, &address, now_ms).await?) })
    }

    fn suppressions(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Suppression>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| list(&tx, now_ms).await?) })
    }

    fn unsuppress(&self, address: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let address = address.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| remove(&tx, &address).await?) })
    }

    fn record_relay_event(
        &self,
        event: NewRelayEvent,
        suppress: Option<Suppression>,
    ) -> BoxFuture<'_, Result<EventOutcome, StoreError>> {
        let pseudonyms = self.pseudonyms_if_hidden();
        let pseudonym = self.pseudonyms.of(&event.recipient);
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                record_event(
                    &tx,
                    &event,
                    suppress.as_ref(),
                    pseudonyms.as_ref(),
                    &pseudonym,
                    now_ms(),
                )
                .await?
            })
        })
    }

    fn purge_suppressions(
        &self,
        now_ms: i64,
        events_before_ms: i64,
    ) -> BoxFuture<'_, Result<(usize, usize), StoreError>> {
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                purge(&tx, now_ms, events_before_ms).await?
            })
        })
    }

    fn suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<SubjectSuppression, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                subject(&tx, &address, &pseudonym).await?
            })
        })
    }

    fn erase_suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<ErasedSuppression, StoreError>> {
        let address = address.to_owned();
        let pseudonym = self.pseudonyms.of(&address);
        Box::pin(async move { in_tx!(self.pool, |tx| { erase(&tx, &address, &pseudonym).await? }) })
    }

    fn event_silence(
        &self,
        no_event_since_ms: i64,
    ) -> BoxFuture<'_, Result<EventSilence, StoreError>> {
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                super::liveness::silence(&tx, no_event_since_ms).await?
            })
        })
    }
}
