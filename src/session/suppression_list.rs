//! The session's side of the suppression list (`crate::suppression`):
//! refused recipients at RCPT, and delivery status reports for the system
//! address taken in at DATA instead of relayed.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Envelope, Session};
use crate::reply::Reply;

/// The null sender is allowed only for reports to the system address.
const NULL_SENDER_RCPT: Reply = Reply::new(
    550,
    [5, 7, 1],
    "The null sender is accepted only for delivery status reports to the system address",
);

/// A store that cannot answer: like Postfix with a failing lookup table.
const LOOKUP_FAILED: Reply = Reply::new(
    451,
    [4, 3, 0],
    "Temporary failure checking the recipient; try again later",
);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Why `address` may not be a recipient of this transaction, if so.
    pub(super) async fn rcpt_refused(&self, address: &str, null_sender: bool) -> Option<Reply> {
        if null_sender && !address.eq_ignore_ascii_case(&self.config.sender.system_address) {
            self.log_rejection("rcpt", &NULL_SENDER_RCPT);
            return Some(NULL_SENDER_RCPT);
        }
        let store = self.shared.queue.store();
        match store.suppressed(address, crate::store::now_ms()).await {
            Ok(None) => None,
            Ok(Some(entry)) => {
                crate::metrics::rcpt_suppressed();
                tracing::info!(
                    session = %self.origin.session_id,
                    account = self.account.as_ref().map(|a| a.name.as_str()).unwrap_or("-"),
                    stage = "rcpt",
                    source = %entry.source,
                    reason = %entry.reason,
                    "refused: recipient suppressed"
                );
                Some(crate::suppression::refusal(address, &entry))
            }
            Err(e) => {
                tracing::error!(session = %self.origin.session_id, error = %e, "cannot read the suppression list");
                Some(LOOKUP_FAILED)
            }
        }
    }

    /// A DSN for the system address: its hard bounces are suppressed and it
    /// is answered here, not queued. `None` for any other message.
    pub(super) async fn take_in_report(&self, envelope: &Envelope, body: &[u8]) -> Option<Reply> {
        crate::suppression::intake(
            &self.shared,
            &self.config,
            &envelope.sender,
            &envelope.recipients,
            body,
            &self.origin.session_id,
        )
        .await
    }
}
