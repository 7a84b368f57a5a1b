//! DATA: receive, check, stamp, and make durable before `250`.
//!
//! Only `<CRLF>.<CRLF>` ends the message (smtp-proto's receiver); a message
//! containing a bare CR or LF is refused whole (`550 5.6.0`), so no smuggled
//! second message can ever come out of it. Oversized messages are read to
//! their end and discarded (`552 5.3.4`). The `250` is sent only after the
//! store has committed the message (fsync).

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{Session, wire};
use crate::reply::{self, Reply};
use std::sync::Arc;

use crate::config::{Config, MissingKey, Sending};
use crate::dkim::{DkimError, Signer};
use crate::links::notice::PasswordNotice;
use crate::links::vault::Sealed;
use crate::policy::rules::{self, Verdict};
use crate::privacy::decision::Decision;
use crate::store::{NewMessage, new_queue_id};
use crate::transform::documents::{self, DocumentsError};
use crate::{policy, privacy, transform};

/// Above this size the PII scan runs on the blocking pool.
const PII_INLINE_MAX: usize = 128 * 1024;

async fn pii_decision(body: &[u8], privacy: &crate::config::Privacy) -> Decision {
    if body.len() <= PII_INLINE_MAX {
        return privacy::decision::decide(body, privacy);
    }
    let (raw, privacy) = (body.to_vec(), privacy.clone());
    tokio::task::spawn_blocking(move || privacy::decision::decide(&raw, &privacy))
        .await
        // The blocking pool is shutting down: nothing will be relayed anyway.
        .unwrap_or(Decision::Pass)
}

/// `match.has_attachments`: one MIME scan, off the async workers for
/// large messages.
async fn has_attachments(body: &[u8], cfg: &crate::config::Attachments) -> bool {
    if body.len() <= PII_INLINE_MAX {
        return rules::scan_has_attachments(body, cfg);
    }
    let (raw, cfg) = (body.to_vec(), cfg.clone());
    tokio::task::spawn_blocking(move || rules::scan_has_attachments(&raw, &cfg))
        .await
        .unwrap_or(true)
}

fn subject_of(message: &[u8]) -> String {
    mail_parser::MessageParser::new()
        .parse_headers(message)
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_default()
}

/// The SMTP answer for a message the documents stage could not take.
fn documents_reply(e: &DocumentsError) -> Reply {
    match e {
        DocumentsError::BadExpiry(_) | DocumentsError::EmptyPassword | DocumentsError::Mime(_) => {
            Reply::owned(554, [5, 6, 0], format!("Message refused: {e}"))
        }
        DocumentsError::AttachmentsRefused => {
            Reply::owned(550, [5, 7, 1], format!("Message refused: {e}"))
        }
        DocumentsError::SealedRefused => {
            Reply::owned(554, [5, 7, 1], format!("Message refused: {e}"))
        }
        DocumentsError::Vault(v) if v.is_out_of_space() => reply::NO_SPACE,
        DocumentsError::Vault(_) | DocumentsError::Cancelled => Reply::owned(
            451,
            [4, 3, 0],
            "Cannot store the message's documents right now; please try again later".into(),
        ),
    }
}

/// Above this size, canonicalising and hashing the body takes milliseconds
/// (about 2 ms per MB and signature): do it off the async workers, so other
/// sessions are not stalled behind a large message.
const SIGN_INLINE_MAX: usize = 128 * 1024;

async fn sign(signer: Arc<Signer>, body: Vec<u8>) -> (Vec<u8>, Result<Option<Vec<u8>>, DkimError>) {
    if body.len() <= SIGN_INLINE_MAX {
        let signed = signer.sign(&body);
        return (body, signed);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let signed = signer.sign(&body);
        let _ = tx.send((body, signed));
    });
    match rx.await {
        Ok(done) => done,
        // The blocking pool dropped the job (shutdown): no body to relay.
        Err(_) => (
            Vec::new(),
            Err(DkimError::Sign("the signing task was cancelled".into())),
        ),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) fn data_allowed(&self) -> Result<(), Reply> {
        if self.account.is_none() {
            return Err(reply::AUTH_REQUIRED);
        }
        match &self.envelope {
            None => Err(reply::NEED_MAIL),
            Some(e) if e.recipients.is_empty() => Err(reply::NEED_RCPT),
            Some(_) => Ok(()),
        }
    }

    /// Reads the message after `354` and returns the final reply.
    pub(super) async fn receive_data(&mut self) -> std::io::Result<Reply> {
        let max = usize::try_from(self.config.limits.max_message_size).unwrap_or(usize::MAX);
        let (block, total) = self.data_timeouts();
        // The session's own deadline holds during DATA too.
        let deadline = (Instant::now() + total).min(self.session_end());
        let expected = self.envelope.as_ref().map_or(0, |e| e.declared_size);
        let mut rx = wire::DataIn::new(max, expected);

        let (used, mut done) = rx.ingest(&self.input);
        self.input.drain(..used);
        let mut buf = vec![0u8; 64 * 1024];
        while !done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.envelope = None;
                return Ok(reply::TIMEOUT);
            }
            let n = match tokio::time::timeout(block.min(left), self.stream.read(&mut buf)).await {
                Err(_) => {
                    self.envelope = None;
                    return Ok(reply::TIMEOUT);
                }
                Ok(Ok(0)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "client closed the connection during DATA",
                    ));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
            };
            let (used, finished) = rx.ingest(&buf[..n]);
            done = finished;
            // Commands pipelined after the final dot (e.g. QUIT).
            self.input.extend_from_slice(&buf[used..n]);
        }
        Ok(self.finish_message(rx).await)
    }

    async fn finish_message(&mut self, rx: wire::DataIn) -> Reply {
        let Some(envelope) = self.envelope.take() else {
            return reply::NEED_MAIL;
        };
        let Some(account) = self.account.clone() else {
            return reply::AUTH_REQUIRED;
        };
        if rx.too_big {
            self.log_rejection("data", &reply::TOO_BIG);
            return reply::TOO_BIG;
        }
        let body = rx.body;
        if wire::has_bare_line_ending(&body) {
            self.log_rejection("data", &reply::BARE_LINE_END_DATA);
            return reply::BARE_LINE_END_DATA;
        }
        // A bounce report for the system address is taken in, not relayed.
        if let Some(r) = self.take_in_report(&envelope, &body).await {
            return r;
        }
        if let Err(r) = policy::check_header_from(&account, &body) {
            self.log_rejection("data", &r);
            return r;
        }

        // Relay rules (SPEC §8): category switches, then the first match.
        let scanned = if rules::needs_attachment_scan(&self.config.rules) {
            Some(has_attachments(&body, &self.config.attachments).await)
        } else {
            None
        };
        let decision = rules::evaluate(
            &self.config,
            &rules::Facts {
                account: &account,
                sender: &envelope.sender,
                recipients: &envelope.recipients,
                message: &body,
                has_attachments: scanned,
            },
        );
        let rule_hold = match &decision.verdict {
            Verdict::Refuse(r) => {
                self.log_rejection("rule", r);
                return r.clone();
            }
            Verdict::Hold(why) => Some(why.clone()),
            Verdict::Accept => None,
        };
        let effective = &decision.effective;
        let privacy = effective.privacy(&self.config.privacy);
        // A rule that changes the header edits gets its own config copy
        // (a few microseconds in release builds, measured with 8 rules);
        // otherwise the session's is used as is.
        let rule_config: Option<Config> =
            effective.edits_headers(&self.config.privacy).then(|| {
                let mut c = Config::clone(&self.config);
                c.privacy = privacy.clone().into_owned();
                c
            });
        let config = rule_config.as_ref().unwrap_or(&self.config);

        let pii = pii_decision(&body, &privacy).await;
        if let Decision::Reject { text } = &pii {
            let r = Reply::owned(550, [5, 7, 1], text.clone());
            self.log_rejection("pii", &r);
            return r;
        }

        let id = new_queue_id();
        let ctx = transform::Context {
            config,
            account: &account,
            queue_id: &id,
            stamp: transform::Stamp {
                hostname: &self.config.server.hostname,
                helo: self.helo.as_deref().unwrap_or("unknown"),
                peer: self.origin.peer.ip(),
                tls: self.tls_active,
                authenticated: !self.trusted,
                queue_id: &id,
                mode: self.config.privacy.received_header,
            },
        };
        let control = match documents::control(&body) {
            Ok(c) => c,
            Err(e) => {
                let r = Reply::owned(554, [5, 6, 0], format!("Message refused: {e}"));
                self.log_rejection("documents", &r);
                return r;
            }
        };
        let mut transformed = match transform::apply(&ctx, body) {
            Ok(t) => t,
            Err(e) => {
                let r = Reply::owned(554, [5, 6, 0], format!("Message refused: {e}"));
                self.log_rejection("transform", &r);
                return r;
            }
        };
        effective.prepend_headers(&mut transformed.message);
        let owner = documents::Owner {
            account: &account.name,
            staff_address: &transformed.staff_address,
        };
        let taken = match documents::take_out(
            &self.shared.vault,
            &effective.attachments(&self.config.attachments),
            &owner,
            &control,
            transformed.message,
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                let r = documents_reply(&e);
                if r.code >= 500 {
                    self.log_rejection("documents", &r);
                } else {
                    tracing::error!(session = %self.origin.session_id, error = %e, "cannot store documents");
                    crate::metrics::rejected_stage("documents");
                }
                return r;
            }
        };
        let mut body = taken.message;
        transform::prepend_received(&mut body, &ctx.stamp);
        // Signing is the last change to the message: nothing may follow it.
        let (mut body, signed) = sign(self.shared.dkim(), body).await;
        let sealed = taken.sealed;
        match signed {
            Ok(Some(signature)) => {
                crate::metrics::dkim(true);
                body.reserve_exact(signature.len());
                body.splice(0..0, signature);
            }
            Ok(None) => {
                let domain = crate::dkim::from_domain(&body).unwrap_or_default();
                if self.config.sender.without_dkim_key == MissingKey::Refuse {
                    self.shared.vault.discard(&sealed).await;
                    let r = reply::NO_DKIM_KEY;
                    self.log_rejection("dkim", &r);
                    return r;
                }
                crate::metrics::dkim(false);
                tracing::warn!(
                    session = %self.origin.session_id,
                    queue_id = %id,
                    domain = %domain,
                    "no DKIM key for the From: domain; relaying unsigned"
                );
            }
            Err(e) => {
                tracing::error!(session = %self.origin.session_id, error = %e, "DKIM signing failed");
                self.shared.vault.discard(&sealed).await;
                crate::metrics::rejected(&reply::SIGNING_FAILED);
                return reply::SIGNING_FAILED;
            }
        }
        // The upstream would take a larger message and bounce it later:
        // refuse it now, measured as it would be relayed.
        if body.len() as u64 > self.config.upstream.max_message_size {
            self.shared.vault.discard(&sealed).await;
            let r = reply::too_big_for_upstream(self.config.upstream.max_message_size);
            self.log_rejection("upstream_size", &r);
            return r;
        }
        let dsn_to = transform::dsn_recipient(
            &envelope.sender,
            &self.config.sender.system_address,
            &transformed.staff_address,
        );
        let sender = transformed.envelope_sender.unwrap_or(envelope.sender);
        let mut recipients = envelope.recipients;
        if let Some(copy) = effective
            .copy_to_sender
            .then(|| transformed.staff_address.clone())
            && !recipients.iter().any(|r| r.eq_ignore_ascii_case(&copy))
        {
            recipients.push(copy);
        }
        let size = body.len();
        let rcpts = recipients.len();
        let anomaly = self
            .shared
            .limits
            .anomaly
            .check(
                self.shared.queue.store().as_ref(),
                &self.config.reputation,
                &account.name,
                crate::store::now_ms(),
            )
            .await;
        let held = self.shared.config().sending == Sending::Paused
            || matches!(pii, Decision::Hold { .. })
            || rule_hold.is_some()
            || anomaly.is_some();
        let documents = sealed.len();
        let mut companions = match &taken.generated_password {
            Some(password) => vec![self.password_notice(
                &id,
                &account.name,
                &transformed.staff_address,
                &recipients,
                &sealed,
                password,
                taken.expires_at,
                &body,
            )],
            None => Vec::new(),
        };
        if let Decision::Warn { categories, .. } = &pii {
            companions.push(self.pii_notice(
                &id,
                &account.name,
                &transformed.staff_address,
                categories,
                &body,
            ));
        }
        // For the delivery log: `rule: manual; held: category x paused; pii: iban`.
        let note_parts: Vec<String> = [
            decision.rule.as_ref().map(|r| format!("rule: {r}")),
            rule_hold.map(|why| format!("held: {why}")),
            pii.note(),
            anomaly.as_ref().map(crate::anomaly::Anomaly::note),
        ]
        .into_iter()
        .flatten()
        .collect();
        let note = (!note_parts.is_empty()).then(|| note_parts.join("; "));
        let msg = NewMessage {
            id,
            account: account.name.clone(),
            sender,
            dsn_to,
            recipients,
            content: body,
            held,
            links: sealed.iter().map(|s| s.link.clone()).collect(),
            companions,
            note: note.clone(),
            counters: crate::limits::counters(&account.name, rcpts, crate::store::now_ms()),
        };
        match self.shared.queue.submit(msg).await {
            Ok(id) => {
                crate::metrics::accepted();
                crate::metrics::documents_stored(documents);
                tracing::info!(
                    session = %self.origin.session_id,
                    queue_id = %id,
                    account = %account.name,
                    size,
                    rcpts,
                    documents,
                    held,
                    rule = decision.rule.as_deref().unwrap_or("-"),
                    note = note.as_deref().unwrap_or(""),
                    "accepted"
                );
                Reply::owned(
                    250,
                    [2, 0, 0],
                    format!("Message accepted for delivery; queued as {id}"),
                )
            }
            Err(e) => {
                tracing::error!(session = %self.origin.session_id, error = %e, "cannot store message");
                self.shared.vault.discard(&sealed).await;
                let r = if e.is_out_of_space() {
                    reply::NO_SPACE
                } else {
                    reply::STORAGE_FAILED
                };
                crate::metrics::rejected(&r);
                r
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The generated link password, for the staff member only: committed
    /// with the message, so neither exists without the other.
    #[allow(clippy::too_many_arguments)]
    fn password_notice(
        &self,
        queue_id: &str,
        account: &str,
        staff: &str,
        recipients: &[String],
        sealed: &[Sealed],
        password: &str,
        expires_at: i64,
        message: &[u8],
    ) -> NewMessage {
        let subject = subject_of(message);
        let files: Vec<String> = sealed.iter().map(|s| s.link.file_name.clone()).collect();
        let system = &self.config.sender.system_address;
        let content = PasswordNotice {
            language: self.config.attachments.language,
            from: system,
            to: staff,
            queue_id,
            subject: &subject,
            recipients,
            files: &files,
            password,
            expires_at,
        }
        .render();
        crate::queue::staff_notice(&self.shared.dkim(), system, account, staff, content)
    }

    /// The PII warning for the staff member: committed with the message.
    fn pii_notice(
        &self,
        queue_id: &str,
        account: &str,
        staff: &str,
        categories: &[crate::privacy::pii::Category],
        message: &[u8],
    ) -> NewMessage {
        let system = &self.config.sender.system_address;
        let content = crate::privacy::notice::PiiNotice {
            language: self.config.attachments.language,
            from: system,
            to: staff,
            queue_id,
            subject: &subject_of(message),
            categories,
        }
        .render();
        crate::queue::staff_notice(&self.shared.dkim(), system, account, staff, content)
    }
}
