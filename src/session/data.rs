//! DATA: receive, check, stamp, and make durable before `250`.
//!
//! Only `<CRLF>.<CRLF>` ends the message (smtp-proto's receiver); a message
//! containing a bare CR or LF is refused whole (`550 5.6.0`), so no smuggled
//! second message can ever come out of it. Oversized messages are read to
//! their end and discarded (`552 5.3.4`). The `250` is sent only after the
//! store has committed the message (fsync).
//!
//! What happens to the message in between is [`crate::pipeline`]'s: this
//! file gathers the facts, turns the pipeline's refusals and errors into
//! replies, and commits.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{Envelope, Session, wire};
use crate::reply::{self, Reply};

use crate::accounts::Account;
use crate::config::Sending;
use crate::links::notice::PasswordNotice;
use crate::links::vault::Sealed;
use crate::pipeline::{self, Dkim, ExecuteError, Executed, Notice, Plan, Refusal};
use crate::store::{NewMessage, new_queue_id};
use crate::transform::documents::DocumentsError;
use crate::{blocking, policy, transform};

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

/// The SMTP answer for a plan's refusal (`rules test` prints it too).
pub fn refusal_reply(refusal: &Refusal<'_>) -> Reply {
    match refusal {
        Refusal::Rule(r) => (*r).clone(),
        Refusal::Pii(text) => Reply::owned(550, [5, 7, 1], (*text).to_owned()),
        Refusal::Control(e) | Refusal::Documents(e) => documents_reply(e),
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

        let Some((body, mut plan)) = self.plan(&account, &envelope, body).await else {
            let r = documents_reply(&DocumentsError::Cancelled);
            crate::metrics::rejected(&r);
            return r;
        };
        #[cfg(test)]
        {
            self.last_plan = Some(format!("{plan:#?}"));
        }
        if let Some(refusal) = plan.refusal() {
            let r = refusal_reply(&refusal);
            self.log_rejection(refusal.stage(), &r);
            return r;
        }

        let id = new_queue_id();
        let job = pipeline::Job {
            config: &self.config,
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
            vault: &self.shared.vault,
            signer: self.shared.dkim(),
        };
        let done = match pipeline::execute(&mut plan, &job, body).await {
            Ok(done) => done,
            Err(e) => return self.execute_reply(&e),
        };
        self.commit(&plan, done, envelope, &account, id).await
    }

    /// Queues the executed message with its notices and link rows; the
    /// sealed documents stay only if the queue commits.
    async fn commit(
        &self,
        plan: &Plan,
        done: Executed,
        envelope: Envelope,
        account: &Account,
        id: String,
    ) -> Reply {
        let body = done.message;
        match &done.dkim {
            Dkim::Signed => crate::metrics::dkim(true),
            Dkim::Unsigned { domain } => {
                crate::metrics::dkim(false);
                tracing::warn!(
                    session = %self.origin.session_id,
                    queue_id = %id,
                    domain = %domain,
                    "no DKIM key for the From: domain; relaying unsigned"
                );
            }
        }
        // The upstream would take a larger message and bounce it later:
        // refuse it now, measured as it would be relayed, and its sealed
        // documents with it.
        if body.len() as u64 > self.config.upstream.max_message_size {
            done.sealed.discard().await;
            let r = reply::too_big_for_upstream(self.config.upstream.max_message_size);
            self.log_rejection("upstream_size", &r);
            return r;
        }
        let sealed = done.sealed;
        let dsn_to = transform::dsn_recipient(
            &envelope.sender,
            &self.config.sender.system_address,
            &done.staff_address,
        );
        let sender = done.envelope_sender.unwrap_or(envelope.sender);
        let mut recipients = envelope.recipients;
        if let Some(copy) = plan
            .rule
            .effective
            .copy_to_sender
            .then(|| done.staff_address.clone())
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
        let held =
            self.shared.config().sending == Sending::Paused || plan.holds() || anomaly.is_some();
        let documents = sealed.len();
        let about = About {
            queue_id: &id,
            account: &account.name,
            staff: &done.staff_address,
            sealed: sealed.sealed(),
            password: done.generated_password.as_deref(),
            expires_at: done.expires_at,
        };
        let companions = self.notices(plan, &about, &recipients, &body);
        // For the delivery log: `rule: manual; held: category x paused; pii: iban`.
        let mut note_parts = plan.note_parts();
        note_parts.extend(anomaly.as_ref().map(crate::anomaly::Anomaly::note));
        let note = (!note_parts.is_empty()).then(|| note_parts.join("; "));
        let msg = NewMessage {
            id,
            account: account.name.clone(),
            sender,
            dsn_to,
            recipients,
            content: body,
            held,
            links: sealed.sealed().iter().map(|s| s.link.clone()).collect(),
            companions,
            note: note.clone(),
            counters: crate::limits::counters(&account.name, rcpts, crate::store::now_ms()),
        };
        match self.shared.queue.submit(msg).await {
            Ok(id) => {
                sealed.commit();
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
                    rule = plan.rule.rule.as_deref().unwrap_or("-"),
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
                sealed.discard().await;
                tracing::error!(session = %self.origin.session_id, error = %e, "cannot store message");
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

    /// The plan for this message, taken on the blocking pool when the
    /// message is large. `None`: the pool is shutting down.
    async fn plan(
        &self,
        account: &Account,
        envelope: &Envelope,
        body: Vec<u8>,
    ) -> Option<(Vec<u8>, Plan)> {
        let config = Arc::clone(&self.config);
        let account = account.clone();
        let (sender, recipients) = (envelope.sender.clone(), envelope.recipients.clone());
        blocking::run(body.len(), move || {
            let plan = pipeline::plan(&pipeline::Facts {
                config: &config,
                account: &account,
                sender: &sender,
                recipients: &recipients,
                message: &body,
            });
            (body, plan)
        })
        .await
    }

    /// The reply (and log line) for a message the execute step could not
    /// finish; its sealed documents are already discarded.
    fn execute_reply(&self, e: &ExecuteError) -> Reply {
        match e {
            ExecuteError::Transform(_) => {
                let r = Reply::owned(554, [5, 6, 0], format!("Message refused: {e}"));
                self.log_rejection("transform", &r);
                r
            }
            ExecuteError::Documents(d) => {
                let r = documents_reply(d);
                if r.code >= 500 {
                    self.log_rejection("documents", &r);
                } else {
                    tracing::error!(session = %self.origin.session_id, error = %d, "cannot store documents");
                    crate::metrics::rejected_stage("documents");
                }
                r
            }
            ExecuteError::NoDkimKey { .. } => {
                self.log_rejection("dkim", &reply::NO_DKIM_KEY);
                reply::NO_DKIM_KEY
            }
            ExecuteError::Signing(err) => {
                tracing::error!(session = %self.origin.session_id, error = %err, "DKIM signing failed");
                crate::metrics::rejected(&reply::SIGNING_FAILED);
                reply::SIGNING_FAILED
            }
        }
    }
}

/// What the staff notices of one message tell.
struct About<'a> {
    queue_id: &'a str,
    account: &'a str,
    staff: &'a str,
    sealed: &'a [Sealed],
    /// The links' password, when it was generated.
    password: Option<&'a str>,
    expires_at: i64,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The staff notices the plan asks for, committed with the message.
    fn notices(
        &self,
        plan: &Plan,
        about: &About<'_>,
        recipients: &[String],
        body: &[u8],
    ) -> Vec<NewMessage> {
        let mut out = Vec::new();
        for notice in plan.notices() {
            match notice {
                Notice::Password => {
                    if let Some(password) = about.password {
                        out.push(self.password_notice(
                            about.queue_id,
                            about.account,
                            about.staff,
                            recipients,
                            about.sealed,
                            password,
                            about.expires_at,
                            body,
                        ));
                    }
                }
                Notice::Pii(categories) => out.push(self.pii_notice(
                    about.queue_id,
                    about.account,
                    about.staff,
                    &categories,
                    body,
                )),
            }
        }
        out
    }

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
