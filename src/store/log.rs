//! The delivery log's side of the storage seam (SPEC §7 data
//! minimisation): what `gdpr export` shows about one address, what `gdpr
//! erase` removed, and [`LogStore`], how every backend keeps the log.

use serde::Serialize;

use super::links::LinkRecord;
use super::queue::QueueId;
use super::{BoxFuture, StoreError};

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

/// The delivery log (SPEC §7 data minimisation).
pub trait LogStore {
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
}
