//! The storage seam (SPEC §11): everything the gateway must not lose.
//!
//! [`Store`] is the one interface the queue, the delivery workers and the
//! admin commands use. The embedded default is [`sqlite::SqliteStore`] (one
//! database file in WAL mode under `data_dir`); [`postgres::PostgresStore`]
//! serves several active instances from one PostgreSQL database. [`open`]
//! picks the one `[store] backend` names.
//!
//! Contract every backend keeps:
//! - [`Store::enqueue`] returns only once the message is durable (fsync'd):
//!   the SMTP `250` depends on it.
//! - Concurrent enqueues are committed together (group commit), so durability
//!   costs one fsync per batch, not per message.
//! - Message content is deleted as soon as a message reaches a final state
//!   (delivered or bounced); the metadata row stays for the delivery log.
//! - `tests/store_suite.rs` runs the same tests against every backend.

pub mod documents;
pub mod guesses;
pub mod limits;
pub mod links;
pub mod migrate;
pub mod objects;
pub mod postgres;
pub mod private;
pub mod pseudonym;
pub mod sqlite;
pub mod suppression;

pub use links::{DownloadNotice, LinkRecord, LinkState, NewLink};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opaque queue id: random, no personal data (it travels as `X-MJ-CustomID`).
pub type QueueId = String;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot create {path}: {cause}")]
    Io {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read message content: {0}")]
    ContentRead(std::io::Error),
    #[error("no queued message with id {0}")]
    NotFound(String),
    #[error("no link with id {0}")]
    LinkNotFound(String),
    #[error("message {id} is {state}, not {expected}")]
    WrongState {
        id: String,
        state: MessageState,
        expected: &'static str,
    },
    #[error("message {0} was changed by another attempt")]
    Conflict(String),
    #[error("commit failed: {0}")]
    Commit(String),
    /// The disk (or the database's quota) is full: nothing was written.
    #[error("no space left to store: {0}")]
    NoSpace(String),
    #[error("the store has shut down")]
    Closed,
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::PgError),
}

impl StoreError {
    /// Whether the store failed for want of space (SMTP's `452 4.3.1`
    /// rather than a generic temporary failure).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::NoSpace(_) => true,
            StoreError::Db(e) => sqlite_out_of_space(e),
            StoreError::Io { cause, .. } | StoreError::ContentRead(cause) => io_out_of_space(cause),
            StoreError::Postgres(e) => e.is_out_of_space(),
            _ => false,
        }
    }
}

/// `SQLITE_FULL`: the disk or the file-size limit is reached.
pub fn sqlite_out_of_space(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
}

/// `ENOSPC` (no space) or `EDQUOT` (quota exceeded).
pub fn io_out_of_space(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for its next delivery attempt.
    Queued,
    /// Kept until an admin releases it.
    Held,
    Delivered,
    /// At least one recipient failed permanently; nothing is pending.
    Bounced,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Held => "held",
            MessageState::Delivered => "delivered",
            MessageState::Bounced => "bounced",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => MessageState::Queued,
            "held" => MessageState::Held,
            "delivered" => MessageState::Delivered,
            "bounced" => MessageState::Bounced,
            _ => return None,
        })
    }
}

impl std::fmt::Display for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Pending,
    /// The upstream took it (`250`).
    Delivered,
    /// The upstream refused it for good, or it expired.
    Failed,
    /// The relay reported handing it to the recipient's server (`sent`).
    Sent,
    /// The recipient marked it as spam (`spam` event).
    Complained,
    /// The relay reported a bounce after taking it (`bounce` event).
    Bounced,
    /// The relay blocked it after taking it (`blocked` event).
    Blocked,
}

impl RecipientState {
    pub const ALL: [RecipientState; 7] = [
        RecipientState::Pending,
        RecipientState::Delivered,
        RecipientState::Failed,
        RecipientState::Sent,
        RecipientState::Complained,
        RecipientState::Bounced,
        RecipientState::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
            RecipientState::Sent => "sent",
            RecipientState::Complained => "complained",
            RecipientState::Bounced => "bounced",
            RecipientState::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Where a state stands after the hand-over, for the relay's events:
    /// only a later stage replaces an earlier one, so a `sent` arriving
    /// after a `bounce` (events come out of order) changes nothing. `None`
    /// for states the relay's events never touch (not handed over).
    pub fn after_handover_rank(self) -> Option<u8> {
        match self {
            RecipientState::Delivered => Some(0),
            RecipientState::Sent => Some(1),
            RecipientState::Complained => Some(2),
            RecipientState::Bounced | RecipientState::Blocked => Some(3),
            RecipientState::Pending | RecipientState::Failed => None,
        }
    }

    /// The relay failed it after the hand-over.
    pub fn failed_after_handover(self) -> bool {
        matches!(self, RecipientState::Bounced | RecipientState::Blocked)
    }
}

/// A message accepted by a session, about to become durable.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// Chosen by the caller (it appears in the `Received:` header).
    pub id: QueueId,
    pub account: String,
    /// Envelope sender as relayed; empty for the null sender (DSNs).
    pub sender: String,
    /// Where delivery status notifications go: the envelope sender as the
    /// app submitted it (the relayed one may be the rewritten system
    /// address), or the staff member when that was the system address
    /// itself. `None`: no DSN (null sender).
    pub dsn_to: Option<String>,
    pub recipients: Vec<String>,
    /// The final message bytes, CRLF line endings, as they will be relayed.
    pub content: Vec<u8>,
    /// Held for an admin instead of queued (`sending = "paused"`).
    pub held: bool,
    /// The documents taken out of this message: committed with it, so a
    /// link exists exactly when its message does.
    pub links: Vec<NewLink>,
    /// Messages that belong to this one and must be stored with it in the
    /// same transaction (the link-password notice to the staff member).
    pub companions: Vec<NewMessage>,
    /// An internal note for the delivery log (e.g. the PII categories
    /// found); never message content.
    pub note: Option<String>,
    /// Limit counters this message adds to (`crate::limits`), in the same
    /// transaction: an accepted message always counts.
    pub counters: Vec<limits::Counter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecipientInfo {
    pub address: String,
    pub state: RecipientState,
    /// Last upstream reply for this recipient.
    pub reply: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageInfo {
    pub id: QueueId,
    /// Unix milliseconds.
    pub received_at: i64,
    pub account: String,
    pub sender: String,
    /// Where DSNs go (see [`NewMessage::dsn_to`]); messages stored before
    /// this was kept fall back to the relayed sender.
    pub dsn_to: Option<String>,
    pub size: u64,
    pub state: MessageState,
    pub attempts: u32,
    /// Unix milliseconds.
    pub next_attempt: i64,
    pub last_error: Option<String>,
    /// The delivery log's internal note (e.g. `pii: iban`).
    pub note: Option<String>,
    pub recipients: Vec<RecipientInfo>,
}

/// The outcome of one delivery attempt, written in one transaction.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    /// The attempt count the worker saw: a different one in the store means
    /// someone else recorded an attempt meanwhile, and this one is refused.
    pub expected_attempts: u32,
    /// New state and reply per recipient address (only those attempted).
    pub recipients: Vec<(String, RecipientState, String)>,
    /// When to try the still-pending recipients again; `None` when nothing is
    /// pending any more (the message becomes final and its content is deleted).
    pub next_attempt: Option<i64>,
    pub error: Option<String>,
    /// The bounce notice (DSN) for the recipients that failed: queued in the
    /// same transaction, so it exists exactly when this attempt is recorded
    /// (not when the attempt is refused because another instance took the
    /// message over, nor twice after a crash).
    pub bounce_notice: Option<NewMessage>,
}

/// How full the queue is, for the `queue_*` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting for a delivery attempt.
    pub queued: u64,
    /// Messages kept for an admin.
    pub held: u64,
    /// Arrival (Unix milliseconds) of the oldest queued message; held ones
    /// are left out, they wait for a person, not for delivery.
    pub oldest_queued_at: Option<i64>,
}

/// One delivery attempt of a message, as the log keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectAttempt {
    pub at: i64,
    pub delivered: u32,
    pub deferred: u32,
    pub failed: u32,
    pub reply: Option<String>,
}

/// One message to the data subject (`gdpr export`).
#[derive(Debug, Clone, Serialize)]
pub struct SubjectMessage {
    pub id: QueueId,
    pub received_at: i64,
    pub finished_at: Option<i64>,
    pub account: String,
    pub size: u64,
    pub state: String,
    pub note: Option<String>,
    /// This recipient's state and last upstream reply.
    pub recipient_state: String,
    pub reply: Option<String>,
    pub attempts: Vec<SubjectAttempt>,
    /// Documents sent with the message (links), in any state.
    pub documents: Vec<LinkRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubjectDownload {
    pub link_id: String,
    pub at: i64,
    pub outcome: String,
}

/// Everything the store holds about one address (SPEC §7, Art. 15).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubjectRecords {
    pub address: String,
    /// How the delivery log names the address once messages are final.
    pub pseudonym: String,
    pub messages: Vec<SubjectMessage>,
    pub downloads: Vec<SubjectDownload>,
}

/// What `gdpr erase` removed (SPEC §7, Art. 17).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Erased {
    /// Recipient entries deleted (log and queue).
    pub recipients: usize,
    /// Final messages whose whole log entry went (no other recipient).
    pub log_entries: usize,
    /// Queued or held messages deleted because this was their only recipient.
    pub queued_deleted: Vec<QueueId>,
    /// Queued messages still due to other recipients (their header block
    /// still names the address until they are delivered and deleted).
    pub queued_kept: Vec<QueueId>,
    /// Active links revoked; the caller deletes their documents.
    pub links_revoked: Vec<String>,
    pub downloads: usize,
}

/// How [`NewMessage::dsn_to`] is stored: `''` for "no DSN", so that `NULL`
/// keeps meaning "stored before the column existed".
pub fn dsn_to_column(dsn_to: Option<&str>) -> &str {
    dsn_to.unwrap_or("")
}

/// [`MessageInfo::dsn_to`] from the stored column: rows from before it
/// existed fall back to the relayed sender, as DSNs went then.
pub fn dsn_to_of(column: Option<String>, sender: &str) -> Option<String> {
    match column {
        Some(to) => (!to.is_empty()).then_some(to),
        None => (!sender.is_empty()).then(|| sender.to_owned()),
    }
}

/// The storage interface; see the module docs for the contract.
pub trait Store: Send + Sync + 'static {
    /// Stores a message durably and returns its id.
    fn enqueue(&self, msg: NewMessage) -> BoxFuture<'_, Result<QueueId, StoreError>>;

    /// Queued messages whose next attempt is due, the longest due first
    /// (then by arrival), so retries cannot starve newer messages.
    fn due(&self, now_ms: i64, limit: usize)
    -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>>;

    /// The earliest `next_attempt` of any queued message.
    fn next_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// The message bytes, while the message is not final.
    fn content(&self, id: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;

    /// Records a delivery attempt; finalises the message when nothing is pending.
    fn record_attempt(
        &self,
        id: &str,
        update: AttemptUpdate,
    ) -> BoxFuture<'_, Result<MessageState, StoreError>>;

    /// Messages not yet final (queued or held), oldest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<MessageInfo>, StoreError>>;

    /// One message, final or not.
    fn get(&self, id: &str) -> BoxFuture<'_, Result<Option<MessageInfo>, StoreError>>;

    /// Admin actions (`schleuse queue …`).
    fn hold(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    fn release(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes a queued message due now.
    fn retry(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Removes a message that is not final, content and all; its links are
    /// revoked (nobody received them).
    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes every queued message due now; returns how many.
    fn flush(&self) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Puts a queued message's next attempt off to `until_ms` without
    /// counting an attempt (a rate cap held all of it back). Nothing happens
    /// when the message is no longer queued or was attempted since
    /// (`expected_attempts`).
    fn postpone(
        &self,
        id: &str,
        expected_attempts: u32,
        until_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Right before a message is handed to the upstream: whether this
    /// instance still holds it (a shared store's lease, renewed here), so a
    /// message another instance took over is not sent twice. A store
    /// without leases always says yes.
    fn confirm_lease(&self, _id: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    /// At shutdown, after delivery stopped: gives back whatever this
    /// instance still holds, so other instances need not wait for leases to
    /// run out.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// A tiny durable write through the same path as [`Store::enqueue`]:
    /// `Ok` means a message handed over now could be stored (`/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Counts of the messages not yet final, for monitoring.
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>>;

    // Document links (SPEC §7). Rows are written by `enqueue` with their
    // message; see [`links`] for what a row holds before and after expiry.

    /// The link whose token hashes to `token_hash`, in any state.
    fn link_by_token(
        &self,
        token_hash: &str,
    ) -> BoxFuture<'_, Result<Option<LinkRecord>, StoreError>>;

    /// Links for `schleuse links list`, newest first; expired and revoked
    /// ones only when `all`.
    fn links(&self, all: bool) -> BoxFuture<'_, Result<Vec<LinkRecord>, StoreError>>;

    /// Revokes an active link at once: its metadata is wiped and it answers
    /// `410` from now on. The caller deletes the document file.
    fn revoke_link(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks every active link past its expiry as expired (metadata wiped)
    /// and returns their ids, whose files the caller deletes.
    fn expire_links(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Ids of the links whose documents must still exist (active ones).
    fn active_link_ids(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Appends to the download log. On the first successful download of a
    /// link that asked for it, returns what the staff member's notice needs.
    fn record_download(
        &self,
        link_id: &str,
        outcome: &'static str,
        ip: Option<String>,
    ) -> BoxFuture<'_, Result<Option<DownloadNotice>, StoreError>>;

    /// Deletes what is left of expired and revoked links (the tombstones
    /// that answer `410`) and download-log entries older than `before_ms`;
    /// returns how many rows went.
    fn purge_links(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Takes one attempt at a link's password from `client` (its address
    /// key: IPv4 address or IPv6 /64, stored pseudonymised) before the
    /// password is tried, in one transaction; `Ok(Err(wait))` when a budget
    /// is spent (then nothing is taken). See [`guesses`].
    fn take_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: guesses::GuessPolicy,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Result<(), std::time::Duration>, StoreError>>;

    /// Hands back an attempt taken by [`Store::take_guess`]: the password
    /// was right, or could not be tried.
    fn give_back_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: guesses::GuessPolicy,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes guess budgets that no longer limit anything.
    fn purge_guesses(&self, now_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>>;

    // The delivery log (SPEC §7 data minimisation).

    /// `true` keeps recipients in clear in the log (`log_recipients =
    /// "clear"`); `false` (the default) pseudonymises them when a message
    /// becomes final.
    fn set_clear_recipients(&self, clear: bool);

    /// Deletes final messages' log entries that finished before `before_ms`.
    fn purge_log(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// When the oldest log or download record was written.
    fn oldest_record(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// Everything held about an address (`gdpr export`).
    fn subject_records(&self, address: &str) -> BoxFuture<'_, Result<SubjectRecords, StoreError>>;

    /// Deletes everything held about an address (`gdpr erase`).
    fn erase_subject(&self, address: &str) -> BoxFuture<'_, Result<Erased, StoreError>>;

    // The suppression list and relay events (SPEC §6); see [`suppression`].

    /// Adds or renews an entry; an automatic one never shortens an active
    /// entry, `replace` (an admin's add) always writes.
    fn suppress(
        &self,
        entry: suppression::Suppression,
        replace: bool,
    ) -> BoxFuture<'_, Result<suppression::SuppressOutcome, StoreError>>;

    /// The entry for `address` if it is active at `now_ms` (the RCPT check).
    fn suppressed(
        &self,
        address: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<suppression::Suppression>, StoreError>>;

    /// Active entries, newest first.
    fn suppressions(
        &self,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<suppression::Suppression>, StoreError>>;

    /// Removes an entry; `false` if there was none.
    fn unsuppress(&self, address: &str) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Stores a relay event unless its key is known, and only then applies
    /// `suppress`, in one transaction (the relay retries whole batches).
    fn record_relay_event(
        &self,
        event: suppression::NewRelayEvent,
        suppress: Option<suppression::Suppression>,
    ) -> BoxFuture<'_, Result<suppression::EventOutcome, StoreError>>;

    /// Deletes expired entries and relay events received before
    /// `events_before_ms`; returns how many of each went.
    fn purge_suppressions(
        &self,
        now_ms: i64,
        events_before_ms: i64,
    ) -> BoxFuture<'_, Result<(usize, usize), StoreError>>;

    /// The entry and relay events about an address (`gdpr export`).
    fn suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<suppression::SubjectSuppression, StoreError>>;

    /// Deletes them (`gdpr erase`).
    fn erase_suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<suppression::ErasedSuppression, StoreError>>;

    /// The newest relay event and the first delivery since; with no event
    /// at all, deliveries from `no_event_since_ms` on count (mail written to
    /// the outbox before going live is no sign of a dead webhook).
    fn event_silence(
        &self,
        no_event_since_ms: i64,
    ) -> BoxFuture<'_, Result<suppression::EventSilence, StoreError>>;

    // Limits and AUTH bans (SPEC §6); see `crate::limits`.

    /// The counts of fixed-window counters, in the order of `keys` (0 for
    /// none or an ended window).
    fn counters(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreError>>;

    /// Adds a ban (or lengthens an active one for the same IP).
    fn ban(&self, ban: limits::Ban) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The active ban of `ip`, if any.
    fn banned(
        &self,
        ip: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<limits::Ban>, StoreError>>;

    /// Active bans, longest-lasting first.
    fn bans(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<limits::Ban>, StoreError>>;

    /// Lifts a ban; `false` if there was none.
    fn unban(&self, ip: &str) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Deletes ended counter windows and bans; returns how many rows went.
    /// Hourly message counters are kept `keep_hourly_ms` after their end
    /// (the anomaly hold's baseline, `crate::anomaly`).
    fn purge_limits(
        &self,
        now_ms: i64,
        keep_hourly_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;
}

/// Opens the store `[store] backend` names (creating or migrating its
/// schema): the one constructor the gateway and the admin commands use.
pub async fn open(config: &crate::config::Config) -> Result<Arc<dyn Store>, StoreError> {
    use crate::config::StoreBackend;
    match config.store.backend {
        StoreBackend::Embedded => {
            let store = sqlite::SqliteStore::open(&config.server.data_dir)?;
            tracing::info!(
                db = %store.path().display(),
                "queue store opened (SQLite, WAL, fsync per commit)"
            );
            Ok(Arc::new(store))
        }
        StoreBackend::Postgres => {
            let url = config
                .store
                .url()
                .map_err(|e| postgres::PgError::Url(e.to_string()))?;
            let store = postgres::PostgresStore::open(&postgres::PgOptions {
                url,
                pool_size: config.store.pool_size,
                lease_time: config.store.lease_time,
                ca_file: config.store.ca_file.clone(),
                instance: None,
            })
            .await?;
            tracing::info!(
                instance = %store.instance(),
                lease_time = ?config.store.lease_time,
                "queue store opened (PostgreSQL, synchronous_commit on)"
            );
            Ok(Arc::new(store))
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh random queue id (80 bits, lowercase base32 without padding).
pub fn new_queue_id() -> QueueId {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..32)] as char)
        .collect()
}
