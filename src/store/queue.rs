//! The queue's side of the storage seam: a message as a session hands it
//! over ([`NewMessage`]), as the store reports it ([`MessageInfo`]), the
//! outcome of one delivery attempt ([`AttemptUpdate`]), and [`QueueStore`],
//! what every backend does with them.

use serde::Serialize;

use super::limits;
use super::links::NewLink;
use super::{BoxFuture, StoreError};

/// Opaque queue id: random, no personal data (it travels as `X-MJ-CustomID`).
pub type QueueId = String;

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
    fn after_handover_rank(self) -> Option<u8> {
        match self {
            RecipientState::Delivered => Some(0),
            RecipientState::Sent => Some(1),
            RecipientState::Complained => Some(2),
            RecipientState::Bounced | RecipientState::Blocked => Some(3),
            RecipientState::Pending | RecipientState::Failed => None,
        }
    }

    /// Whether a relay event may move a recipient from `self` (as stored)
    /// to `to`: both after the hand-over, and `to` a later stage.
    pub fn advances_to(self, to: RecipientState) -> bool {
        match (self.after_handover_rank(), to.after_handover_rank()) {
            (Some(from), Some(to)) => to > from,
            _ => false,
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

/// A fresh random queue id (80 bits, lowercase base32 without padding).
pub fn new_queue_id() -> QueueId {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..32)] as char)
        .collect()
}

/// The queue (see the module docs of `crate::store` for the contract).
pub trait QueueStore {
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

    /// A tiny durable write through the same path as [`QueueStore::enqueue`]:
    /// `Ok` means a message handed over now could be stored (`/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Counts of the messages not yet final, for monitoring.
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::RecipientState::*;

    #[test]
    fn relay_events_only_move_a_recipient_forward() {
        assert!(Delivered.advances_to(Sent));
        assert!(Sent.advances_to(Bounced));
        assert!(Complained.advances_to(Blocked));
        assert!(!Bounced.advances_to(Sent), "a late `sent` undoes nothing");
        assert!(!Bounced.advances_to(Blocked), "the first failure stays");
        assert!(!Pending.advances_to(Bounced), "not handed over yet");
        assert!(!Failed.advances_to(Sent));
        assert!(!Delivered.advances_to(Pending));
    }
}
