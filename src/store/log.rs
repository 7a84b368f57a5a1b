//! The delivery log's side of the storage seam (SPEC §7 data
//! minimisation): what `gdpr export` shows about one address, what `gdpr
//! erase` removed, and [`LogStore`], how every backend keeps the log.

use serde::Serialize;

use super::links::{LinkRecord, LinkState};
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

/// What is left to do with a message once the data subject's recipient
/// entry on it is gone (`gdpr erase`); see [`Erased::recipient_deleted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterErase {
    /// Nobody else was on it: the message goes.
    DeleteMessage,
    /// Kept for the others: the address (or its pseudonym) may still be
    /// quoted in upstream replies, and is replaced there.
    ScrubMessage,
}

impl Erased {
    /// A link of a message to the subject was deleted, with `downloads`
    /// download-log entries: an active one counts as revoked (the caller
    /// deletes its document).
    pub fn link_deleted(&mut self, link: &LinkRecord, downloads: usize) {
        if link.state == LinkState::Active {
            self.links_revoked.push(link.id.clone());
        }
        self.downloads += downloads;
    }

    /// The subject's recipient entry on message `id` (in `state`) was
    /// deleted, and `others_left` says whether other recipients remain:
    /// counts what went or stays, and says what becomes of the message.
    pub fn recipient_deleted(&mut self, id: QueueId, state: &str, others_left: bool) -> AfterErase {
        self.recipients += 1;
        let queued = state == "queued" || state == "held";
        if others_left {
            if queued {
                // Still due to others; its header block still names this
                // address, which the caller reports.
                self.queued_kept.push(id);
            }
            AfterErase::ScrubMessage
        } else {
            if queued {
                self.queued_deleted.push(id);
            } else {
                self.log_entries += 1;
            }
            AfterErase::DeleteMessage
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: &str, state: LinkState) -> LinkRecord {
        LinkRecord {
            id: id.into(),
            message_id: "m".into(),
            account: "via".into(),
            file_name: String::new(),
            content_type: String::new(),
            size: 0,
            created_at: 0,
            expires_at: 0,
            protected: false,
            downloads: 0,
            first_download_at: None,
            state,
            salt: Vec::new(),
        }
    }

    #[test]
    fn erase_counts_what_went_and_what_stays() {
        let mut e = Erased::default();
        e.link_deleted(&link("a", LinkState::Active), 2);
        e.link_deleted(&link("b", LinkState::Expired), 1);
        assert_eq!(
            (e.links_revoked.clone(), e.downloads),
            (vec!["a".into()], 3)
        );
        let fates = [
            e.recipient_deleted("q1".into(), "queued", false),
            e.recipient_deleted("h1".into(), "held", true),
            e.recipient_deleted("d1".into(), "delivered", false),
            e.recipient_deleted("b1".into(), "bounced", true),
        ];
        use AfterErase::{DeleteMessage, ScrubMessage};
        assert_eq!(
            fates,
            [DeleteMessage, ScrubMessage, DeleteMessage, ScrubMessage]
        );
        assert_eq!(e.recipients, 4);
        assert_eq!(e.queued_deleted, ["q1"]);
        assert_eq!(e.queued_kept, ["h1"]);
        assert_eq!(e.log_entries, 1);
    }
}
