//! The queue side of the PostgreSQL store: [`QueueStore`] over the message
//! rows (`super::messages`) and the leases (`super::lease`), and the
//! recording of delivery attempts.

use super::{PostgresStore, Tx, lease, links, messages};
use crate::store::pseudonym::Pseudonymizer;
use crate::store::{
    AttemptUpdate, BoxFuture, MessageInfo, MessageState, NewMessage, QueueId, QueueStats,
    QueueStore, RecipientState, StoreError, now_ms,
};

impl QueueStore for PostgresStore {
    fn enqueue(&self, msg: NewMessage) -> BoxFuture<'_, Result<QueueId, StoreError>> {
        Box::pin(async move {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let id = messages::insert(&tx, &msg).await?;
            match tx.commit().await {
                Ok(()) => Ok(id),
                // The connection broke during COMMIT: the server may have
                // committed. Answering 451 then would make the client send
                // it again, and the caller would delete the documents of a
                // message that is queued; ask on another connection.
                Err(e) => match messages::exists(&self.pool, &id).await {
                    Ok(true) => {
                        tracing::warn!(queue_id = %id, error = %e, "store: COMMIT reported an error but the message is stored");
                        Ok(id)
                    }
                    Ok(false) => Err(e.into()),
                    Err(check) => {
                        tracing::error!(queue_id = %id, error = %e, check = %check, "store: outcome of COMMIT unknown");
                        Err(e.into())
                    }
                },
            }
        })
    }

    fn confirm_lease(&self, id: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let mine = lease::confirm(&self.pool, &self.instance, self.lease_secs, &id).await?;
            if !mine {
                self.forget_lease(&id);
            }
            Ok(mine)
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.renewal.abort();
            let n = lease::release_all(&self.pool, &self.instance).await?;
            self.leases().held.clear();
            if n > 0 {
                tracing::info!(leases = n, "store: leases given back for other instances");
            }
            Ok(())
        })
    }

    fn due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>> {
        Box::pin(async move {
            let due: Vec<MessageInfo> = in_tx!(self.pool, |tx| {
                lease::lease_due(&tx, now_ms, limit, &self.instance, self.lease_secs).await?
            })?;
            let mut leases = self.leases();
            for m in &due {
                leases.take(m.id.clone());
            }
            drop(leases);
            Ok(due)
        })
    }

    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let st = client
                .prepare_cached("SELECT min(next_attempt) FROM messages WHERE state = 'queued'")
                .await?;
            Ok(client.query_one(&st, &[]).await?.try_get(0)?)
        })
    }

    fn content(&self, id: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let client = self.pool.get().await?;
            let st = client
                .prepare_cached(
                    "SELECT c.data FROM contents c JOIN messages m ON m.seq = c.message_seq
                     WHERE m.id = $1",
                )
                .await?;
            match client.query_opt(&st, &[&id]).await? {
                Some(row) => Ok(Some(row.try_get(0)?)),
                None => Ok(None),
            }
        })
    }

    fn record_attempt(
        &self,
        id: &str,
        update: AttemptUpdate,
    ) -> BoxFuture<'_, Result<MessageState, StoreError>> {
        let id = id.to_owned();
        let pseudonyms = self.pseudonyms_if_hidden();
        Box::pin(async move {
            let result = async {
                in_tx!(self.pool, |tx| {
                    apply_attempt(&tx, &id, &update, &self.instance, pseudonyms.as_ref()).await?
                })
            }
            .await;
            // Recorded or refused, this instance is done with the attempt;
            // a deferred message gets a new lease from the next due().
            if !matches!(result, Err(StoreError::Postgres(_))) {
                self.forget_lease(&id);
            }
            result
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| messages::list_open(&tx).await?) })
    }

    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<MessageInfo>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move { in_tx!(self.pool, |tx| messages::get(&tx, &id).await?) })
    }

    fn hold(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                messages::set_state(&tx, &id, MessageState::Queued, MessageState::Held).await?
            })
        })
    }

    fn release(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                messages::set_state(&tx, &id, MessageState::Held, MessageState::Queued).await?
            })
        })
    }

    fn retry(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                messages::set_state(&tx, &id, MessageState::Queued, MessageState::Queued).await?
            })
        })
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let result = async {
                in_tx!(self.pool, |tx| {
                    messages::delete(&tx, &id).await?;
                    // Its documents were never sent: their links go with it
                    // (the purge deletes the files of links no longer active).
                    links::revoke_for_message(&tx, &id).await?;
                })
            }
            .await;
            if result.is_ok() {
                self.forget_lease(&id);
            }
            result
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                let n = tx
                    .execute(
                        "UPDATE messages SET next_attempt = $1 WHERE state = 'queued'",
                        &[&now_ms()],
                    )
                    .await?;
                usize::try_from(n).unwrap_or(usize::MAX)
            })
        })
    }

    fn postpone(
        &self,
        id: &str,
        expected_attempts: u32,
        until_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let result = async {
                in_tx!(self.pool, |tx| {
                    messages::postpone(&tx, &id, expected_attempts, until_ms, &self.instance)
                        .await?
                })
            }
            .await;
            if result.is_ok() {
                self.forget_lease(&id);
            }
            result
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // A real commit, like an enqueue's: a read-only or full database,
        // a lost connection or a stuck WAL flush all show.
        Box::pin(async move {
            in_tx!(self.pool, |tx| {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO ping (id, at) VALUES (1, $1)
                         ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    )
                    .await?;
                tx.execute(&st, &[&now_ms()]).await?;
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>> {
        Box::pin(async move { in_tx!(self.pool, |tx| messages::stats(&tx).await?) })
    }
}

/// Records one attempt (see [`QueueStore::record_attempt`]) and,
/// when nothing is pending, finalises the message: content deleted,
/// recipients pseudonymised, lease gone.
async fn apply_attempt(
    tx: &Tx<'_>,
    id: &str,
    update: &AttemptUpdate,
    instance: &str,
    pseudonyms: Option<&Pseudonymizer>,
) -> Result<MessageState, StoreError> {
    let st = tx
        .prepare_cached(
            "SELECT seq, state, attempts, lease_owner FROM messages WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&st, &[&id]).await? else {
        return Err(StoreError::NotFound(id.into()));
    };
    let seq: i64 = row.try_get(0)?;
    let state_text: String = row.try_get(1)?;
    let state = MessageState::parse(&state_text).unwrap_or(MessageState::Queued);
    let attempts: i32 = row.try_get(2)?;
    let owner: Option<String> = row.try_get(3)?;
    if !matches!(state, MessageState::Queued | MessageState::Held) {
        return Ok(state);
    }
    // Another instance recorded an attempt since this one read the
    // message, or took the message over after this instance's lease ran
    // out: either way this attempt is not to be recorded.
    if attempts != messages::attempts_i32(update.expected_attempts)
        || owner.as_deref().is_some_and(|o| o != instance)
    {
        return Err(StoreError::Conflict(id.into()));
    }
    if let Some(notice) = &update.bounce_notice {
        messages::insert(tx, notice).await?;
    }
    let (addresses, states, replies): (Vec<&str>, Vec<&str>, Vec<&str>) = update
        .recipients
        .iter()
        .map(|(a, s, r)| (a.as_str(), s.as_str(), r.as_str()))
        .fold((vec![], vec![], vec![]), |(mut a, mut s, mut r), x| {
            a.push(x.0);
            s.push(x.1);
            r.push(x.2);
            (a, s, r)
        });
    let st = tx
        .prepare_cached(
            "UPDATE recipients r SET state = u.state, reply = u.reply
             FROM unnest($2::text[], $3::text[], $4::text[]) AS u(address, state, reply)
             WHERE r.message_seq = $1 AND r.address = u.address",
        )
        .await?;
    tx.execute(&st, &[&seq, &addresses, &states, &replies])
        .await?;
    let count = |want: RecipientState| update.recipients.iter().filter(|r| r.1 == want).count();
    let summary = update
        .error
        .as_deref()
        .or_else(|| update.recipients.first().map(|r| r.2.as_str()));
    let now = now_ms();
    super::log::record_attempt(
        tx,
        seq,
        now,
        (
            count(RecipientState::Delivered),
            count(RecipientState::Pending),
            count(RecipientState::Failed),
        ),
        summary,
    )
    .await?;
    let st = tx
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'failed')
             FROM recipients WHERE message_seq = $1",
        )
        .await?;
    let counts = tx.query_one(&st, &[&seq]).await?;
    let pending: i64 = counts.try_get(0)?;
    match (pending, update.next_attempt) {
        (p, Some(next)) if p > 0 => {
            tx.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt = $1, last_error = $2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE seq = $3",
                &[&next, &update.error, &seq],
            )
            .await?;
            // An admin's hold during the attempt stays in force.
            Ok(state)
        }
        _ => {
            // Nothing pending (or no further attempt): the message is final.
            let failed_now = tx
                .execute(
                    "UPDATE recipients SET state = 'failed', reply = coalesce(reply, $1)
                     WHERE message_seq = $2 AND state = 'pending'",
                    &[&update.error, &seq],
                )
                .await?;
            let failed_before: i64 = counts.try_get(1)?;
            let fin = if failed_before > 0 || failed_now > 0 {
                MessageState::Bounced
            } else {
                MessageState::Delivered
            };
            tx.execute(
                "UPDATE messages SET attempts = attempts + 1, state = $1, last_error = $2,
                     finished_at = $3, lease_owner = NULL, lease_until = NULL
                 WHERE seq = $4",
                &[&fin.as_str(), &update.error, &now, &seq],
            )
            .await?;
            tx.execute("DELETE FROM contents WHERE message_seq = $1", &[&seq])
                .await?;
            if let Some(p) = pseudonyms {
                super::log::pseudonymise(tx, seq, p).await?;
            }
            Ok(fin)
        }
    }
}
