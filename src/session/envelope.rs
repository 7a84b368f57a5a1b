//! MAIL FROM and RCPT TO: who may send, as whom, to how many.
//!
//! No open relay: without AUTH (or a trusted network) both get `530 5.7.0`.
//! The envelope sender must match the account's `allowed_senders` (`553
//! 5.7.1`); `SIZE=` above `limits.max_message_size` gets `552 5.3.4`; the
//! recipient over `limits.max_recipients_per_message` gets `452 4.5.3`
//! (RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction).
//! A recipient on the suppression list gets `550 5.1.1` with the reason
//! (`super::suppression`).

use smtp_proto::{MailFrom, RcptTo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply::{self, Reply};
use super::{Envelope, Session};
use crate::config::Sending;
use crate::policy;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) fn mail(&mut self, from: MailFrom<String>) -> Reply {
        if self.helo.is_none() {
            return reply::NEED_EHLO;
        }
        let Some(account) = &self.account else {
            let r = reply::AUTH_REQUIRED;
            self.log_rejection("mail", &r);
            return r;
        };
        if self.envelope.is_some() {
            return reply::NESTED_MAIL;
        }
        if self.shared.config().sending == Sending::Disabled {
            crate::metrics::rejected(&reply::SENDING_DISABLED);
            return reply::SENDING_DISABLED;
        }
        if from.size as u64 > self.config.limits.max_message_size {
            let r = reply::TOO_BIG;
            self.log_rejection("mail", &r);
            return r;
        }
        // The null sender only for reports to the system address (checked
        // at RCPT, taken in at DATA; see `crate::suppression::intake`).
        if !from.address.is_empty()
            && let Err(r) = policy::check_envelope_sender(account, &from.address)
        {
            self.log_rejection("mail", &r);
            return r;
        }
        self.envelope = Some(Envelope {
            sender: from.address,
            recipients: Vec::new(),
            declared_size: from.size,
        });
        reply::SENDER_OK
    }

    pub(super) async fn rcpt(&mut self, to: RcptTo<String>) -> Reply {
        if self.account.is_none() {
            return reply::AUTH_REQUIRED;
        }
        let max = self.config.limits.max_recipients_per_message;
        let Some(envelope) = &mut self.envelope else {
            return reply::NEED_MAIL;
        };
        if !policy::plausible_recipient(&to.address) {
            return reply::BAD_RCPT;
        }
        if envelope
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&to.address))
        {
            return reply::RCPT_OK;
        }
        if envelope.recipients.len() >= max {
            let r = reply::TOO_MANY_RCPTS;
            self.log_rejection("rcpt", &r);
            return r;
        }
        let null_sender = envelope.sender.is_empty();
        if let Some(r) = self.rcpt_refused(&to.address, null_sender).await {
            return r;
        }
        if let Some(envelope) = &mut self.envelope {
            envelope.recipients.push(to.address);
        }
        reply::RCPT_OK
    }
}
