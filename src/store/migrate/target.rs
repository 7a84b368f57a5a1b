//! The new PostgreSQL store, filled in one transaction.
//!
//! Opened like the gateway opens it ([`PostgresStore::open`]: schema
//! migrations applied, a pseudonym key created if there is none), then
//! written through one pooled connection. Each batch of rows is one
//! `INSERT … SELECT … FROM unnest($1, $2, …)`: one round trip per
//! [`BATCH`](super::BATCH) rows instead of one per row. `WITH ORDINALITY …
//! ORDER BY` makes the identity columns (`messages.seq`, `attempts.id`,
//! `downloads.id`) count up in the old order.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::source::{
    AttemptRow, BanRow, CounterRow, DownloadRow, LinkRow, MessageRow, Page, RecipientRow,
    RelayEventRow, Snapshot, SuppressionRow,
};
use super::{BATCH, Event, LOCK_WAIT, MigrateError};
use crate::config::Config;
use crate::store::StoreError;
use crate::store::postgres::{PSEUDONYM_KEY, PgOptions, PostgresStore};

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Target(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for MigrateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        MigrateError::Target(e.into())
    }
}

pub(super) struct Target {
    store: PostgresStore,
}

/// What went in, for the summary.
#[derive(Debug, Default)]
pub(super) struct Filled {
    pub messages: u64,
    pub queued: u64,
    pub held: u64,
    pub links: u64,
}

impl Target {
    pub async fn open(config: &Config) -> Result<Target, MigrateError> {
        let store = PostgresStore::open(&PgOptions {
            url: super::plan::store_url(config)?,
            // One connection writes; the lease renewal task needs none
            // (nothing is leased).
            pool_size: 2,
            lease_time: config.store.lease_time,
            ca_file: config.store.ca_file.clone(),
            instance: None,
        })
        .await?;
        Ok(Target { store })
    }

    /// Refuses a target that holds anything of its own (see the module
    /// docs of `super` for why these tables).
    pub async fn check_empty(&self) -> Result<(), MigrateError> {
        let client = self.store.pool().get().await?;
        refuse_unless_empty(&**client).await
    }

    /// Copies every row of `src` and the pseudonym key, all in one
    /// transaction.
    pub async fn fill(
        &self,
        src: &Snapshot,
        key: Option<&[u8]>,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Filled, MigrateError> {
        let mut client = self.store.pool().get().await?;
        let tx = client.transaction().await?;
        let filled = match fill(&tx, src, key, progress).await {
            Ok(filled) => filled,
            // Said as they are: nothing was written before them.
            Err(e @ (MigrateError::NotEmpty { .. } | MigrateError::TargetBusy)) => return Err(e),
            Err(e) => return Err(MigrateError::RolledBack(Box::new(e))),
        };
        tx.commit()
            .await
            .map_err(|e| MigrateError::Commit(StoreError::from(e)))?;
        Ok(filled)
    }
}

async fn refuse_unless_empty(client: &impl GenericClient) -> Result<(), MigrateError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM links),
                    (SELECT count(*) FROM relay_events)",
            &[],
        )
        .await?;
    let (messages, links, events): (i64, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if messages + links + events > 0 {
        return Err(MigrateError::NotEmpty {
            messages,
            links,
            events,
        });
    }
    Ok(())
}

async fn fill(
    tx: &Transaction<'_>,
    src: &Snapshot,
    key: Option<&[u8]>,
    progress: &mut dyn FnMut(Event),
) -> Result<Filled, MigrateError> {
    // Writers (a gateway started too early) wait for the commit, and are
    // waited for at most LOCK_WAIT; readers go on.
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        .await?;
    if let Err(e) = tx
        .batch_execute("LOCK TABLE messages, links, relay_events IN EXCLUSIVE MODE")
        .await
    {
        return Err(if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            MigrateError::TargetBusy
        } else {
            e.into()
        });
    }
    // Checked again under the lock: something may have arrived since.
    refuse_unless_empty(&**tx).await?;

    let mut filled = copy_messages(tx, src, progress).await?;

    let (links, _) = copy::<LinkRow>(tx, src).await?;
    let active = src.count("links", Some("state = 'active'"))?;
    filled.links = links;
    done(progress, "links", format!("{links} ({active} active)"));
    let (downloads, _) = copy::<DownloadRow>(tx, src).await?;
    done(progress, "downloads", downloads.to_string());
    let (suppressions, added) = copy::<SuppressionRow>(tx, src).await?;
    done(
        progress,
        "suppressions",
        with_kept(suppressions, added, "already on the new list, kept"),
    );
    let (events, _) = copy::<RelayEventRow>(tx, src).await?;
    done(progress, "relay events", events.to_string());
    let (counters, _) = copy::<CounterRow>(tx, src).await?;
    done(
        progress,
        "limit counters",
        format!("{counters} (in shard 0)"),
    );
    let (bans, _) = copy::<BanRow>(tx, src).await?;
    done(progress, "bans", bans.to_string());

    let text = match key {
        Some(key) => {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&PSEUDONYM_KEY, &key],
            )
            .await?;
            "carried over (it replaces the new store's, so gdpr export finds the old log)"
        }
        None => "none in the old data directory; the new store keeps its own",
    };
    done(progress, "pseudonym key", text.into());
    src.still_alone()?;
    Ok(filled)
}

fn done(progress: &mut dyn FnMut(Event), step: &'static str, text: String) {
    progress(Event::Done { step, text });
}

/// `read`, and how many of them the target already had.
fn with_kept(read: u64, added: u64, why: &str) -> String {
    match read.saturating_sub(added) {
        0 => read.to_string(),
        kept => format!("{read} ({kept} {why})"),
    }
}

fn int(what: &'static str, value: i64) -> Result<i32, MigrateError> {
    i32::try_from(value).map_err(|_| MigrateError::OutOfRange { what, value })
}

/// Messages with their recipients, attempts and contents, batch by batch:
/// the batch's recipients and attempts are those of its `seq` range (a
/// keyset page holds every `seq` of its range).
async fn copy_messages(
    tx: &Transaction<'_>,
    src: &Snapshot,
    progress: &mut dyn FnMut(Event),
) -> Result<Filled, MigrateError> {
    let counts = src.message_counts()?;
    let (mut messages, mut recipients, mut attempts) = (0u64, 0u64, 0u64);
    let (mut contents, mut bytes, mut dangling) = (0u64, 0u64, 0u64);
    let mut after = None;
    loop {
        let batch = src.messages_after(after, BATCH)?;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            break;
        };
        let (lo, hi) = (first.seq, last.seq);
        after = Some(hi);
        let seqs = insert_messages(tx, &batch).await?;
        let rows = src.recipients_between(lo, hi)?;
        let before = rows.len() as u64;
        let n = insert_recipients(tx, &rows, &seqs).await?;
        recipients += n;
        dangling += before - n;
        let rows = src.attempts_between(lo, hi)?;
        let before = rows.len() as u64;
        let n = insert_attempts(tx, &rows, &seqs).await?;
        attempts += n;
        dangling += before - n;
        // One message's bytes at a time: a queue can hold many MB.
        for seq in src.contents_between(lo, hi)? {
            let (Some(data), Some(new)) = (src.content(seq)?, seqs.get(&seq)) else {
                continue;
            };
            tx.execute(
                "INSERT INTO contents (message_seq, data) VALUES ($1, $2)",
                &[new, &data],
            )
            .await?;
            contents += 1;
            bytes += data.len() as u64;
        }
        messages += batch.len() as u64;
        if messages % (BATCH as u64 * 10) == 0 && messages < counts.total {
            progress(Event::Running {
                step: "messages",
                done: messages,
                total: counts.total,
            });
        }
    }
    done(
        progress,
        "messages",
        format!(
            "{messages} ({} queued, {} held)",
            counts.queued, counts.held
        ),
    );
    done(progress, "recipients", recipients.to_string());
    done(progress, "attempts", attempts.to_string());
    let mut text = format!("{contents} ({bytes} bytes, of the queued and held messages)");
    if dangling > 0 {
        text.push_str(&format!(
            "; {dangling} recipient or attempt row(s) without a message left out"
        ));
    }
    done(progress, "message contents", text);
    Ok(Filled {
        messages,
        queued: counts.queued,
        held: counts.held,
        links: 0,
    })
}

/// Inserts a batch of messages; returns their new `seq` by old `seq`.
async fn insert_messages(
    tx: &Transaction<'_>,
    batch: &[MessageRow],
) -> Result<HashMap<i64, i64>, MigrateError> {
    let mut attempts = Vec::with_capacity(batch.len());
    for m in batch {
        attempts.push(int("attempt count", m.attempts)?);
    }
    let col = |f: fn(&MessageRow) -> String| batch.iter().map(f).collect::<Vec<_>>();
    let ids = col(|m| m.id.clone());
    let accounts = col(|m| m.account.clone());
    let senders = col(|m| m.sender.clone());
    let states = col(|m| m.state.clone());
    let received: Vec<i64> = batch.iter().map(|m| m.received_at).collect();
    let sizes: Vec<i64> = batch.iter().map(|m| m.size).collect();
    let next: Vec<i64> = batch.iter().map(|m| m.next_attempt).collect();
    let errors: Vec<Option<String>> = batch.iter().map(|m| m.last_error.clone()).collect();
    let finished: Vec<Option<i64>> = batch.iter().map(|m| m.finished_at).collect();
    let notes: Vec<Option<String>> = batch.iter().map(|m| m.note.clone()).collect();
    let dsn_to: Vec<Option<String>> = batch.iter().map(|m| m.dsn_to.clone()).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO messages (id, received_at, account, sender, size, state, attempts,
                 next_attempt, last_error, finished_at, note, dsn_to)
             SELECT id, received_at, account, sender, size, state, attempts, next_attempt,
                    last_error, finished_at, note, dsn_to
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                         $6::text[], $7::integer[], $8::bigint[], $9::text[], $10::bigint[],
                         $11::text[], $12::text[])
                  WITH ORDINALITY AS u(id, received_at, account, sender, size, state, attempts,
                                       next_attempt, last_error, finished_at, note, dsn_to, ord)
             ORDER BY ord
             RETURNING id, seq",
        )
        .await?;
    let rows = tx
        .query(
            &st,
            &[
                &ids, &received, &accounts, &senders, &sizes, &states, &attempts, &next, &errors,
                &finished, &notes, &dsn_to,
            ],
        )
        .await?;
    let mut by_id = HashMap::with_capacity(rows.len());
    for row in rows {
        by_id.insert(row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)?);
    }
    Ok(batch
        .iter()
        .filter_map(|m| Some((m.seq, *by_id.get(&m.id)?)))
        .collect())
}

/// Inserts the rows whose message is in `seqs`; returns how many.
async fn insert_recipients(
    tx: &Transaction<'_>,
    rows: &[RecipientRow],
    seqs: &HashMap<i64, i64>,
) -> Result<u64, MigrateError> {
    let (mut message, mut idx, mut address, mut state, mut reply) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let Some(seq) = seqs.get(&r.message_seq) else {
            continue;
        };
        message.push(*seq);
        idx.push(int("recipient index", r.idx)?);
        address.push(r.address.as_str());
        state.push(r.state.as_str());
        reply.push(r.reply.as_deref());
    }
    if message.is_empty() {
        return Ok(0);
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO recipients (message_seq, idx, address, state, reply)
             SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[],
                                  $5::text[])",
        )
        .await?;
    Ok(tx
        .execute(&st, &[&message, &idx, &address, &state, &reply])
        .await?)
}

/// Inserts the attempts whose message is in `seqs`, in their order;
/// returns how many.
async fn insert_attempts(
    tx: &Transaction<'_>,
    rows: &[AttemptRow],
    seqs: &HashMap<i64, i64>,
) -> Result<u64, MigrateError> {
    let (mut message, mut at, mut reply) = (Vec::new(), Vec::new(), Vec::new());
    let (mut delivered, mut deferred, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let Some(seq) = seqs.get(&r.message_seq) else {
            continue;
        };
        message.push(*seq);
        at.push(r.at);
        delivered.push(int("attempt's delivered count", r.delivered)?);
        deferred.push(int("attempt's deferred count", r.deferred)?);
        failed.push(int("attempt's failed count", r.failed)?);
        reply.push(r.reply.as_deref());
    }
    if message.is_empty() {
        return Ok(0);
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO attempts (message_seq, at, delivered, deferred, failed, reply)
             SELECT message_seq, at, delivered, deferred, failed, reply
             FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::integer[],
                         $5::integer[], $6::text[])
                  WITH ORDINALITY AS u(message_seq, at, delivered, deferred, failed, reply, ord)
             ORDER BY ord",
        )
        .await?;
    Ok(tx
        .execute(
            &st,
            &[&message, &at, &delivered, &deferred, &failed, &reply],
        )
        .await?)
}

/// A table whose rows go over one for one.
trait Sink: Page {
    /// Inserts a batch; returns how many rows were added (fewer when the
    /// target already had some of them and keeps its own).
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError>;
}

/// Copies every row of `T`; returns how many were read and how many added.
async fn copy<T: Sink>(tx: &Transaction<'_>, src: &Snapshot) -> Result<(u64, u64), MigrateError> {
    let (mut read, mut added) = (0u64, 0u64);
    let mut after: Option<T::Key> = None;
    loop {
        let (rows, last) = src.page::<T>(after.as_ref(), BATCH)?;
        if rows.is_empty() {
            break;
        }
        read += rows.len() as u64;
        added += T::insert(tx, &rows).await?;
        after = last;
    }
    Ok((read, added))
}

impl Sink for LinkRow {
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError> {
        let text = |f: fn(&LinkRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
        let long = |f: fn(&LinkRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        let maybe = |f: fn(&LinkRow) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
        let st = tx
            .prepare_cached(
                "INSERT INTO links (id, token_hash, message_id, account, file_name, content_type,
                     size, created_at, expires_at, salt, protected, notify_to, downloads,
                     first_download_at, state, ended_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bytea[],
                     $11::boolean[], $12::text[], $13::bigint[], $14::bigint[], $15::text[],
                     $16::bigint[])",
            )
            .await?;
        let salts: Vec<Option<&[u8]>> = rows.iter().map(|r| r.salt.as_deref()).collect();
        let protected: Vec<bool> = rows.iter().map(|r| r.protected).collect();
        let notify: Vec<Option<&str>> = rows.iter().map(|r| r.notify_to.as_deref()).collect();
        Ok(tx
            .execute(
                &st,
                &[
                    &text(|r| &r.id),
                    &text(|r| &r.token_hash),
                    &text(|r| &r.message_id),
                    &text(|r| &r.account),
                    &text(|r| &r.file_name),
                    &text(|r| &r.content_type),
                    &long(|r| r.size),
                    &long(|r| r.created_at),
                    &long(|r| r.expires_at),
                    &salts,
                    &protected,
                    &notify,
                    &long(|r| r.downloads),
                    &maybe(|r| r.first_download_at),
                    &text(|r| &r.state),
                    &maybe(|r| r.ended_at),
                ],
            )
            .await?)
    }
}

impl Sink for DownloadRow {
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError> {
        let st = tx
            .prepare_cached(
                "INSERT INTO downloads (link_id, at, outcome, ip)
                 SELECT link_id, at, outcome, ip
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
                      WITH ORDINALITY AS u(link_id, at, outcome, ip, ord)
                 ORDER BY ord",
            )
            .await?;
        let link: Vec<&str> = rows.iter().map(|r| r.link_id.as_str()).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.at).collect();
        let outcome: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
        let ip: Vec<Option<&str>> = rows.iter().map(|r| r.ip.as_deref()).collect();
        Ok(tx.execute(&st, &[&link, &at, &outcome, &ip]).await?)
    }
}

impl Sink for SuppressionRow {
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError> {
        // An entry an admin already made on the new side stays as made.
        let st = tx
            .prepare_cached(
                "INSERT INTO suppressions (address, source, reason, detail, created_at,
                     expires_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                     $5::bigint[], $6::bigint[])
                 ON CONFLICT (address) DO NOTHING",
            )
            .await?;
        let address: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        let source: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
        let reason: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        let detail: Vec<Option<&str>> = rows.iter().map(|r| r.detail.as_deref()).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
        let expires: Vec<Option<i64>> = rows.iter().map(|r| r.expires_at).collect();
        Ok(tx
            .execute(
                &st,
                &[&address, &source, &reason, &detail, &created, &expires],
            )
            .await?)
    }
}

impl Sink for RelayEventRow {
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError> {
        let st = tx
            .prepare_cached(
                "INSERT INTO relay_events (key, received_at, at, event, message_id,
                     relay_message_id, recipient, detail)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                     $5::text[], $6::text[], $7::text[], $8::text[])",
            )
            .await?;
        let key: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let received: Vec<i64> = rows.iter().map(|r| r.received_at).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.at).collect();
        let event: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        let message: Vec<Option<&str>> = rows.iter().map(|r| r.message_id.as_deref()).collect();
        let relay: Vec<Option<&str>> = rows.iter().map(|r| r.relay_message_id.as_deref()).collect();
        let recipient: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
        let detail: Vec<Option<&str>> = rows.iter().map(|r| r.detail.as_deref()).collect();
        Ok(tx
            .execute(
                &st,
                &[
                    &key, &received, &at, &event, &message, &relay, &recipient, &detail,
                ],
            )
            .await?)
    }
}

impl Sink for CounterRow {
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError> {
        // Shard 0 of each key; a count the new instances already made adds
        // up, as it would have on one machine.
        let st = tx
            .prepare_cached(
                "INSERT INTO limit_counters (key, shard, until, count)
                 SELECT key, 0, until, count
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(key, until, count)
                 ON CONFLICT (key, shard) DO UPDATE SET
                     count = limit_counters.count + excluded.count,
                     until = greatest(limit_counters.until, excluded.until)",
            )
            .await?;
        let key: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let until: Vec<i64> = rows.iter().map(|r| r.until).collect();
        let count: Vec<i64> = rows.iter().map(|r| r.count).collect();
        Ok(tx.execute(&st, &[&key, &until, &count]).await?)
    }
}

impl Sink for BanRow {
    async fn insert(tx: &Transaction<'_>, rows: &[Self]) -> Result<u64, MigrateError> {
        // The same rule as a new ban on an IP that has one: the longer
        // lasts.
        let st = tx
            .prepare_cached(
                "INSERT INTO bans (ip, created_at, until, reason)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])
                 ON CONFLICT (ip) DO UPDATE SET until = greatest(bans.until, excluded.until)",
            )
            .await?;
        let ip: Vec<&str> = rows.iter().map(|r| r.ip.as_str()).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
        let until: Vec<i64> = rows.iter().map(|r| r.until).collect();
        let reason: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        Ok(tx.execute(&st, &[&ip, &created, &until, &reason]).await?)
    }
}
