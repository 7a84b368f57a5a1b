//! MAIL FROM and RCPT TO: who may send, as whom, to how many.
//!
//! No open relay: without AUTH (or a trusted network) both get `530 5.7.0`.
//! The envelope sender must match the account's `allowed_senders` (`553
//! 5.7.1`); `SIZE=` above `limits.max_message_size` gets `552 5.3.4`; the
//! recipient over `limits.max_recipients_per_message` gets `452 4.5.3`
//! (RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction).
//! A recipient on the suppression list gets `550 5.1.1` with the reason
//! (`super::suppression_list`). Account quotas and the client IP's message rate
//! are checked at MAIL, recipients per day at RCPT (`450 4.7.1` with a
//! retry hint; see `crate::limits`).
//!
//! An address is relayed exactly as received, or refused: non-ASCII only
//! after `SMTPUTF8` on MAIL (`553 5.6.7`, RFC 6531 §3.5), invalid UTF-8 and
//! what smtp-proto would hand on changed (unquoted) get `501 5.1.7`/`5.1.3`.

use smtp_proto::{MailFrom, RcptTo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Envelope, Session, wire};
use crate::accounts::Account;
use crate::config::Sending;
use crate::limits::{self, Kind, Quotas};
use crate::policy;
use crate::reply::{self, Reply};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The account's hourly and daily message quotas, then the client IP's
    /// message rate (`crate::limits`).
    async fn mail_limits(&mut self, account: &Account) -> Result<(), Reply> {
        let now = crate::store::now_ms();
        let quotas = Quotas::of(&self.config.limits, account);
        let checks: Vec<(Kind, u32)> = [
            (Kind::MessagesHour, quotas.messages_per_hour),
            (Kind::MessagesDay, quotas.messages_per_day),
        ]
        .into_iter()
        .filter(|(_, limit)| *limit > 0)
        .collect();
        if !checks.is_empty() {
            let keys = checks
                .iter()
                .map(|(k, _)| k.key(&account.name, now).0)
                .collect();
            match self.shared.queue.store().counters(keys, now).await {
                Ok(counts) => {
                    for ((kind, limit), count) in checks.into_iter().zip(counts) {
                        if count >= u64::from(limit) {
                            let r = limits::quota_reply(&account.name, kind, limit, now);
                            self.log_rejection("account_quota", &r);
                            return Err(r);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the account's counters"),
            }
        }
        let ip = self.origin.peer.ip();
        if let Err(wait) = self.shared.limits.ip_message(&self.config.limits, ip) {
            let per_minute = self.config.limits.ip_messages_per_minute;
            let r = limits::ip_rate_reply(ip, per_minute, wait, now);
            self.log_rejection("ip_rate", &r);
            return Err(r);
        }
        Ok(())
    }

    /// The account's recipients per day, counting those already accepted
    /// in this transaction (`have`).
    async fn rcpt_quota(&mut self, have: u64) -> Result<(), Reply> {
        let Some(account) = self.account.clone() else {
            return Ok(());
        };
        let limit = Quotas::of(&self.config.limits, &account).recipients_per_day;
        if limit == 0 {
            return Ok(());
        }
        let now = crate::store::now_ms();
        let key = Kind::RecipientsDay.key(&account.name, now).0;
        match self.shared.queue.store().counters(vec![key], now).await {
            Ok(counts) if counts.first().copied().unwrap_or(0) + have >= u64::from(limit) => {
                let r = limits::quota_reply(&account.name, Kind::RecipientsDay, limit, now);
                self.log_rejection("account_quota", &r);
                Err(r)
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the account's counters");
                Ok(())
            }
        }
    }

    pub(super) async fn mail(&mut self, from: MailFrom<String>) -> Reply {
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
        let smtputf8 = from.flags & wire::MAIL_SMTPUTF8 != 0;
        if let Err(r) = check_address(&from.address, smtputf8, Role::Sender) {
            self.log_rejection("mail", &r);
            return r;
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
        let account = account.clone();
        if let Err(r) = self.mail_limits(&account).await {
            return r;
        }
        self.envelope = Some(Envelope {
            sender: from.address,
            smtputf8,
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
        if let Err(r) = check_address(&to.address, envelope.smtputf8, Role::Recipient) {
            return r;
        }
        if !crate::config::plausible_recipient(&to.address) {
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
        let have = envelope.recipients.len() as u64;
        if let Err(r) = self.rcpt_quota(have).await {
            return r;
        }
        if let Some(r) = self.rcpt_refused(&to.address, null_sender).await {
            return r;
        }
        if let Some(envelope) = &mut self.envelope {
            envelope.recipients.push(to.address);
        }
        reply::RCPT_OK
    }
}

#[derive(Clone, Copy)]
enum Role {
    Sender,
    Recipient,
}

/// Refuses an address that could not be relayed as the client meant it.
/// smtp-proto strips the quotes of a quoted local part (`"a b"@x` comes as
/// `a b@x`), so what is left must need none: no space, quote, backslash,
/// control character or second `@`. Without `SMTPUTF8`, ASCII only.
fn check_address(address: &str, smtputf8: bool, role: Role) -> Result<(), Reply> {
    let (unsupported, needs_utf8) = match role {
        Role::Sender => (reply::SENDER_UNSUPPORTED, reply::SENDER_NEEDS_SMTPUTF8),
        Role::Recipient => (reply::RCPT_UNSUPPORTED, reply::RCPT_NEEDS_SMTPUTF8),
    };
    let odd = |c: char| c.is_control() || matches!(c, ' ' | '"' | '\\');
    if address.chars().any(odd) || address.matches('@').count() > 1 {
        return Err(unsupported);
    }
    if !smtputf8 && !address.is_ascii() {
        return Err(needs_utf8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pass_unchanged_or_not_at_all() {
        assert!(check_address("a.b+c@example.org", false, Role::Sender).is_ok());
        assert!(check_address("", false, Role::Sender).is_ok());
        assert!(check_address("pär@example.org", true, Role::Recipient).is_ok());
        let r = check_address("pär@example.org", false, Role::Recipient).unwrap_err();
        assert_eq!((r.code, r.esc), (553, [5, 6, 7]));
        for bad in [
            "a b@x.org",
            "a@b@x.org",
            "a\"b@x.org",
            "a\u{1b}[31m@x.org",
            "a\0@x.org",
        ] {
            let r = check_address(bad, true, Role::Sender).unwrap_err();
            assert_eq!((r.code, r.esc), (501, [5, 1, 7]), "{bad:?}");
        }
    }
}
