//! What the store keeps for the suppression list (SPEC §6) and the relay's
//! delivery events (the Mailjet Event API).
//!
//! **The list holds addresses in clear**, unlike the delivery log. It must
//! answer an admin's "why does this address bounce, since when, until
//! when" (`schleuse suppress list`), which a keyed hash cannot; an entry is
//! about one address only, says nothing about what was sent, and expires
//! (`[suppression] hard_bounce_duration`), and expired entries are purged.
//! `gdpr export` shows the entry and `gdpr erase` deletes it. Addresses are
//! kept lowercased (mailbox matching is case-insensitive in practice, as for
//! the log's pseudonyms).
//!
//! **Relay events** are delivery-log records: the recipient is pseudonymised
//! like the log's recipients (clear only with `log_recipients = "clear"`),
//! the message is joined by our queue id (`X-MJ-CustomID`), and they are
//! purged with `[retention] delivery_log`. No IP address, user agent, clicked
//! URL or location from open/click events is ever stored. Each event has a
//! key (a hash of type, time, relay message id and address): the relay
//! retries whole batches, and an event whose key is known is not applied
//! again.

use serde::Serialize;

use super::{BoxFuture, StoreError};

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SuppressionSource {
    /// The upstream refused the recipient with `5xx 5.1.x`.
    Upstream,
    /// A delivery status notification reported `5.1.x` (imported or sent
    /// to the system address through the gateway).
    Dsn,
    /// A Mailjet event (`bounce` with `hard_bounce`, `blocked`, `spam`).
    Mailjet,
    /// `schleuse suppress add`.
    Admin,
}

impl SuppressionSource {
    pub const ALL: [SuppressionSource; 4] = [
        SuppressionSource::Upstream,
        SuppressionSource::Dsn,
        SuppressionSource::Mailjet,
        SuppressionSource::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionSource::Upstream => "upstream",
            SuppressionSource::Dsn => "dsn",
            SuppressionSource::Mailjet => "mailjet",
            SuppressionSource::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for SuppressionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    /// Lowercased, trimmed.
    pub address: String,
    pub source: SuppressionSource,
    /// Short and readable; it appears in the `550` reply: `upstream 550
    /// 5.1.1`, `dsn 5.1.1`, `mailjet:bounce`, `mailjet:blocked`,
    /// `mailjet:spam`, or the admin's text.
    pub reason: String,
    /// The full diagnostic (upstream reply, DSN `Diagnostic-Code`, the
    /// relay's error), for admins only.
    pub detail: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `None`: until an admin removes it.
    pub expires_at: Option<i64>,
}

impl Suppression {
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.expires_at.is_none_or(|t| t > now_ms)
    }
}

/// The normal form of an address on the list.
pub fn normalise(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase()
}

/// What [`SuppressionStore::suppress`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SuppressOutcome {
    /// A new entry (or one replacing an expired one).
    Added,
    /// An active entry got the new reason and a later (or no) expiry.
    Renewed,
    /// An active entry that lasts longer stays as it is.
    Kept,
}

/// What writing `entry` over the address's current entry `old` does at
/// `now`: an automatic entry never shortens an active one (a permanent
/// admin entry stays permanent); `replace` (an admin's explicit add) always
/// writes. [`SuppressOutcome::Kept`]: nothing is to be written.
pub fn upsert_outcome(
    old: Option<&Suppression>,
    entry: &Suppression,
    replace: bool,
    now: i64,
) -> SuppressOutcome {
    match old {
        Some(old) if old.active_at(now) => {
            let longer = match (old.expires_at, entry.expires_at) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(a), Some(b)) => b > a,
            };
            if replace || longer {
                SuppressOutcome::Renewed
            } else {
                SuppressOutcome::Kept
            }
        }
        _ => SuppressOutcome::Added,
    }
}

/// One delivery event reported by the relay, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewRelayEvent {
    /// Idempotency key: the same event delivered again has the same key.
    pub key: String,
    /// `bounce`, `blocked`, `spam`, `sent`, `open`, ... as the relay names it.
    pub event: String,
    /// When it happened (Unix milliseconds; the relay's time).
    pub at: i64,
    /// The relay's `CustomID`: our queue id when the message was ours.
    pub custom_id: Option<String>,
    /// The relay's own message id.
    pub relay_message_id: Option<String>,
    /// The recipient, in clear: the store pseudonymises it.
    pub recipient: String,
    /// What the relay said (error, error_related_to, ...); never tracking
    /// data. Addresses in it are pseudonymised like the recipient.
    pub detail: Option<String>,
    /// What the event does to the recipient when it names one of our
    /// messages (`sent`, `spam`, `bounce`, `blocked`).
    pub effect: Option<RecipientEffect>,
}

/// A relay event's change to one recipient of one of our messages. Only a
/// later stage replaces an earlier one
/// ([`crate::store::RecipientState::advances_to`]), so repeated and
/// out-of-order events change nothing twice.
#[derive(Debug, Clone)]
pub struct RecipientEffect {
    pub state: crate::store::RecipientState,
    /// The recipient's new last reply (addresses in it are pseudonymised
    /// once the message is final, like the rest of the log).
    pub reply: String,
    /// The DSN to the staff member, queued in the same transaction exactly
    /// when this event turns the recipient into bounced/blocked: once per
    /// message and recipient however often the relay repeats the event.
    pub notice: Option<crate::store::NewMessage>,
}

/// A relay event as the log keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayEvent {
    pub event: String,
    /// Unix milliseconds: when it happened, and when it reached us.
    pub at: i64,
    pub received_at: i64,
    /// Our queue id, when the event's `CustomID` named one of our messages.
    pub message_id: Option<String>,
    pub relay_message_id: Option<String>,
    /// Pseudonym (or the address, with `log_recipients = "clear"`).
    pub recipient: String,
    pub detail: Option<String>,
}

/// What [`SuppressionStore::record_relay_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    /// False when the event was known already (a retried batch): nothing
    /// was changed.
    pub new: bool,
    /// Whether the event matched one of our messages.
    pub matched: bool,
    /// The suppression it caused, if it asked for one and was new.
    pub suppression: Option<SuppressOutcome>,
    /// The recipient's new state, when the event changed it.
    pub changed: Option<crate::store::RecipientState>,
    /// The DSN queued with the change.
    pub notice: Option<crate::store::QueueId>,
}

impl EventOutcome {
    /// A retried event: nothing was changed.
    pub fn known() -> EventOutcome {
        EventOutcome {
            new: false,
            matched: false,
            suppression: None,
            changed: None,
            notice: None,
        }
    }
}

/// The suppression side of one data subject (`gdpr export`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubjectSuppression {
    /// The list's entry, also an expired one not yet purged.
    pub entry: Option<Suppression>,
    pub relay_events: Vec<RelayEvent>,
}

/// What `gdpr erase` removed here.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ErasedSuppression {
    pub entries: usize,
    pub relay_events: usize,
}

/// Whether relayed mail is answered by events (the webhook liveness alert,
/// `crate::suppression::liveness`), as one store sees it for every
/// instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSilence {
    /// When the newest relay event was received (Unix ms).
    pub last_event_at: Option<i64>,
    /// When the earliest message delivered after that event finished: mail
    /// relayed since which nothing was heard.
    pub unanswered_since: Option<i64>,
}

/// The suppression list and relay events (SPEC §6); see the module docs.
pub trait SuppressionStore {
    /// Adds or renews an entry; an automatic one never shortens an active
    /// entry, `replace` (an admin's add) always writes.
    fn suppress(
        &self,
        entry: Suppression,
        replace: bool,
    ) -> BoxFuture<'_, Result<SuppressOutcome, StoreError>>;

    /// The entry for `address` if it is active at `now_ms` (the RCPT check).
    fn suppressed(
        &self,
        address: &str,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Suppression>, StoreError>>;

    /// Active entries, newest first.
    fn suppressions(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Suppression>, StoreError>>;

    /// Removes an entry; `false` if there was none.
    fn unsuppress(&self, address: &str) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Stores a relay event unless its key is known, and only then applies
    /// `suppress`, in one transaction (the relay retries whole batches).
    fn record_relay_event(
        &self,
        event: NewRelayEvent,
        suppress: Option<Suppression>,
    ) -> BoxFuture<'_, Result<EventOutcome, StoreError>>;

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
    ) -> BoxFuture<'_, Result<SubjectSuppression, StoreError>>;

    /// Deletes them (`gdpr erase`).
    fn erase_suppression_subject(
        &self,
        address: &str,
    ) -> BoxFuture<'_, Result<ErasedSuppression, StoreError>>;

    /// The newest relay event and the first delivery since; with no event
    /// at all, deliveries from `no_event_since_ms` on count (mail written to
    /// the outbox before going live is no sign of a dead webhook).
    fn event_silence(
        &self,
        no_event_since_ms: i64,
    ) -> BoxFuture<'_, Result<EventSilence, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires_at: Option<i64>) -> Suppression {
        Suppression {
            address: "eltern@example.org".into(),
            source: SuppressionSource::Upstream,
            reason: "upstream 550 5.1.1".into(),
            detail: None,
            created_at: 1000,
            expires_at,
        }
    }

    #[test]
    fn an_active_entry_is_never_shortened_unless_replaced() {
        use SuppressOutcome::{Added, Kept, Renewed};
        let until_5000 = entry(Some(5000));
        let permanent = entry(None);
        let cases = [
            (None, Some(3000), false, Added),
            (Some(&until_5000), Some(3000), false, Kept),
            (Some(&until_5000), Some(6000), false, Renewed),
            (Some(&until_5000), None, false, Renewed),
            (Some(&until_5000), Some(3000), true, Renewed),
            (Some(&permanent), Some(9000), false, Kept),
            (Some(&permanent), None, false, Kept),
            (Some(&permanent), Some(9000), true, Renewed),
        ];
        for (old, expires_at, replace, want) in cases {
            let got = upsert_outcome(old, &entry(expires_at), replace, 1000);
            assert_eq!(got, want, "{old:?} {expires_at:?} {replace}");
        }
        assert_eq!(
            upsert_outcome(Some(&until_5000), &entry(Some(3000)), false, 5000),
            Added,
            "an expired entry is replaced"
        );
    }
}
