//! The SMTP submission dialogue (RFC 5321, 3207, 4954, 2920; SPEC §5).
//!
//! One [`Session`] per connection, generic over the stream so the same code
//! runs on plain TCP and inside TLS. The session owns the bytes: it frames
//! lines, hands each command to its handler (`auth`, `envelope`, `data`),
//! and writes the [`Reply`] values they return. Replies are batched and
//! flushed when the client's pipelined input is used up (RFC 2920).
//!
//! STARTTLS (RFC 3207): the session returns [`Outcome::StartTls`]; the
//! listener performs the handshake and starts a fresh session on the TLS
//! stream. Bytes the client pipelined after `STARTTLS` are dropped with the
//! old session (CVE-2011-0411 class).
//!
//! Deadlines (SPEC §5; Postfix's `smtpd_per_record_deadline` is the
//! model): each command line must be complete within `timeouts.command`
//! of the session starting to wait for it, however slowly its bytes come;
//! a session that has not logged in is closed `timeouts.auth` after
//! connect, and every session `timeouts.session` after connect, each with
//! a `421 4.4.2`. Writing a reply is bounded too, so a client that never
//! reads cannot hold its slot. A not-logged-in session may also be shed
//! by the listener to make room for a newcomer (`421 4.7.0`).
//!
//! Config keys: `[limits]`, `[timeouts]`, `listener.*`, `sending`.

mod auth;
mod data;
mod deadline;
mod envelope;
mod suppression_list;
#[cfg(test)]
mod tests;
pub mod wire;

pub use data::refusal_reply;
pub use deadline::SessionLimits;
// The replies moved to `crate::reply` (policy, limits and metrics use them
// too); this path stays for callers not changed yet.
pub use crate::reply;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::accounts::Account;
use crate::config::{Config, ListenerTls};
use crate::reply::Reply;
use crate::state::Shared;
use crate::state::connections::Slot;
use deadline::Cut;

/// How long a failed AUTH waits before its `535` (like Dovecot's
/// `auth_failure_delay`). Per-IP bans after repeated failures are the
/// limits stage's job.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// What the listener needs to know about where a session runs.
#[derive(Debug, Clone)]
pub struct Origin {
    pub peer: SocketAddr,
    pub listener_tls: ListenerTls,
    /// The account trusted-network clients act as, when the peer is in one.
    pub trusted_account: Option<String>,
    /// Short id for log correlation.
    pub session_id: String,
}

/// How a session ended.
pub enum Outcome {
    Closed,
    /// The client asked for STARTTLS and got `220`: upgrade the stream.
    StartTls,
}

/// The transaction in progress (between MAIL and the end of DATA).
#[derive(Debug, Default)]
struct Envelope {
    sender: String,
    /// MAIL carried `SMTPUTF8`: non-ASCII addresses are allowed.
    smtputf8: bool,
    recipients: Vec<String>,
    /// The client's `SIZE=` declaration (0 if none).
    declared_size: usize,
}

/// A pending SASL exchange waiting for the client's next line.
enum SaslState {
    Plain,
    LoginUser,
    LoginPass { user: String },
}

pub struct Session<S> {
    stream: S,
    shared: Arc<Shared>,
    /// Snapshot taken at connect: a reload applies to new sessions.
    config: Arc<Config>,
    origin: Origin,
    tls_active: bool,
    helo: Option<String>,
    account: Option<Account>,
    /// True when `account` came from a trusted network, not from AUTH.
    trusted: bool,
    envelope: Option<Envelope>,
    sasl: Option<SaslState>,
    input: Vec<u8>,
    output: Vec<u8>,
    errors: u32,
    /// Set after an over-long line: skip input up to the next LF.
    discarding_line: bool,
    limits: SessionLimits,
    /// When the command line being waited for must be complete.
    line_deadline: Option<Instant>,
    /// The last plan DATA acted on, printed, for the test that holds it
    /// against `rules test`'s.
    #[cfg(test)]
    last_plan: Option<String>,
}

/// What handling one line asks the loop to do next.
enum Next {
    Continue,
    Data,
    StartTls,
    Close,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub fn new(stream: S, shared: Arc<Shared>, origin: Origin, tls_active: bool) -> Self {
        let config = shared.config();
        let (account, trusted) = match &origin.trusted_account {
            Some(name) => (shared.accounts().get(name).cloned(), true),
            None => (None, false),
        };
        Session {
            stream,
            shared,
            config,
            origin,
            tls_active,
            helo: None,
            account,
            trusted,
            envelope: None,
            sasl: None,
            input: Vec::with_capacity(1024),
            output: Vec::with_capacity(512),
            errors: 0,
            discarding_line: false,
            limits: SessionLimits {
                slot: Slot::default(),
                connected: Instant::now(),
            },
            line_deadline: None,
            #[cfg(test)]
            last_plan: None,
        }
    }

    /// The last plan DATA acted on (`{:#?}`), if any.
    #[cfg(test)]
    pub(crate) fn last_plan(&self) -> Option<&str> {
        self.last_plan.as_deref()
    }

    /// Places the session among the live connections (the listener's
    /// caps); without it the session is counted nowhere and its deadlines
    /// run from its creation.
    pub fn with_limits(mut self, limits: SessionLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Runs the dialogue. `greet` is false after STARTTLS (no second 220).
    pub async fn run(&mut self, greet: bool) -> Outcome {
        if greet && let Some(r) = self.ban().await {
            tracing::info!(session = %self.origin.session_id, client = %self.origin.peer.ip(), "banned client refused");
            crate::metrics::banned_connection();
            r.write_to(&mut self.output);
            let _ = self.flush().await;
            return Outcome::Closed;
        }
        if greet {
            let greeting = format!("220 {} ESMTP ready\r\n", self.config.server.hostname);
            self.output.extend_from_slice(greeting.as_bytes());
        }
        match self.dialogue().await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::debug!(session = %self.origin.session_id, error = %e, "connection ended");
                Outcome::Closed
            }
        }
    }

    async fn dialogue(&mut self) -> std::io::Result<Outcome> {
        let mut shutdown = self.shared.shutdown_signal();
        let slot = self.limits.slot.clone();
        loop {
            // Handle every complete line already buffered (pipelining).
            while let Some(end) = wire::next_line_end(&self.input) {
                let line: Vec<u8> = self.input.drain(..=end).collect();
                // The next line gets its own `timeouts.command`.
                self.line_deadline = None;
                if std::mem::take(&mut self.discarding_line) {
                    continue;
                }
                let next = match wire::check_line(&line) {
                    wire::Line::Ok(body) => self.handle_line(body).await,
                    // Where this line "really" ends is ambiguous, and so is
                    // everything after it: answer once and hang up, so no
                    // smuggled command is ever interpreted.
                    wire::Line::BareLineEnding => {
                        self.log_rejection("command", &reply::BARE_LINE_END_CMD);
                        self.reply(reply::BARE_LINE_END_CMD);
                        Next::Close
                    }
                    wire::Line::TooLong => self.reply(reply::LINE_TOO_LONG),
                };
                match next {
                    Next::Continue => {}
                    Next::Close => {
                        self.flush().await?;
                        return Ok(Outcome::Closed);
                    }
                    Next::StartTls => {
                        self.flush().await?;
                        // Whatever the client sent after STARTTLS is dropped.
                        self.input.clear();
                        return Ok(Outcome::StartTls);
                    }
                    Next::Data => {
                        self.flush().await?;
                        let r = self.receive_data().await?;
                        self.line_deadline = None;
                        let close = r.closes();
                        self.reply(r);
                        if close {
                            self.flush().await?;
                            return Ok(Outcome::Closed);
                        }
                    }
                }
            }
            // An over-long line is answered once, when it passes the limit;
            // the rest of it, up to its line end, is dropped unanswered. Its
            // `timeouts.command` still runs, which bounds the junk taken.
            if self.discarding_line {
                self.input.clear();
            } else if self.input.len() > wire::MAX_LINE {
                self.input.clear();
                self.discarding_line = true;
                if let Next::Close = self.reply(reply::LINE_TOO_LONG) {
                    self.flush().await?;
                    return Ok(Outcome::Closed);
                }
            }
            self.flush().await?;

            let (deadline, cut) = self.next_deadline();
            let login_pending = self.needs_login();
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), self.stream.read_buf(&mut self.input)) => r.map_err(|_| cut),
                _ = shutdown.changed() => {
                    self.reply(reply::SHUTTING_DOWN);
                    self.flush().await?;
                    return Ok(Outcome::Closed);
                }
                _ = slot.shed(), if login_pending => Err(Cut::Shed),
            };
            let cut = match read {
                Ok(Ok(0)) => return Ok(Outcome::Closed),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(cut) => cut,
            };
            self.cut_off(cut).await?;
            return Ok(Outcome::Closed);
        }
    }

    /// Queues a reply; counts errors and asks to close after too many.
    fn reply(&mut self, r: Reply) -> Next {
        r.write_to(&mut self.output);
        if r.closes() {
            return Next::Close;
        }
        if r.is_permanent() {
            self.errors += 1;
            if self.errors >= self.config.limits.max_errors_per_session {
                reply::TOO_MANY_ERRORS.write_to(&mut self.output);
                tracing::info!(session = %self.origin.session_id, "too many errors, closing");
                return Next::Close;
            }
        }
        Next::Continue
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let deadline = self.write_deadline();
        let write = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout_at(deadline.into(), write).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client did not take the reply in time",
                ));
            }
        }
        self.output.clear();
        Ok(())
    }

    async fn handle_line(&mut self, line: &[u8]) -> Next {
        if self.sasl.is_some() {
            let r = self.sasl_response(line).await;
            return self.auth_reply(r).await;
        }
        let request = match wire::parse_command(line) {
            Ok(r) => r,
            Err(e) => return self.reply(parse_error_reply(e)),
        };
        match request {
            Request::Ehlo { host } => self.ehlo(host),
            Request::Helo { host } => {
                self.helo = Some(host);
                self.envelope = None;
                let text = self.config.server.hostname.clone();
                self.reply(Reply::owned(250, [2, 0, 0], text))
            }
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                let r = self.auth(mechanism, initial_response).await;
                self.auth_reply(r).await
            }
            Request::Mail { from } => {
                let r = self.mail(from).await;
                self.reply(r)
            }
            Request::Rcpt { to } => {
                let r = self.rcpt(to).await;
                self.reply(r)
            }
            Request::Data => match self.data_allowed() {
                Ok(()) => {
                    self.reply(reply::START_DATA);
                    Next::Data
                }
                Err(r) => self.reply(r),
            },
            Request::Rset => {
                self.envelope = None;
                self.reply(reply::RESET)
            }
            Request::Noop { .. } => self.reply(reply::OK),
            Request::Quit => {
                self.reply(reply::BYE);
                Next::Close
            }
            Request::Vrfy { .. } => self.reply(reply::VRFY),
            Request::Help { .. } => self.reply(reply::HELP),
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Bdat { .. }
            | Request::Burl { .. } => self.reply(reply::NOT_IMPLEMENTED),
        }
    }

    /// A failed login is answered only after [`AUTH_FAILURE_DELAY`]: it
    /// costs a guessing client seconds per try and an honest one nothing.
    async fn auth_reply(&mut self, r: Reply) -> Next {
        if r == reply::AUTH_FAILED {
            tokio::time::sleep(AUTH_FAILURE_DELAY).await;
        }
        self.reply(r)
    }

    fn starttls_offered(&self) -> bool {
        self.origin.listener_tls == ListenerTls::Starttls
            && !self.tls_active
            && self.shared.has_tls()
    }

    fn ehlo(&mut self, host: String) -> Next {
        self.helo = Some(host);
        self.envelope = None;
        let mut caps = wire::EXT_PIPELINING
            | wire::EXT_8BIT_MIME
            | wire::EXT_SMTP_UTF8
            | wire::EXT_SIZE
            | wire::EXT_ENHANCED_STATUS_CODES;
        if self.starttls_offered() {
            caps |= wire::EXT_START_TLS;
        }
        let mut mechanisms = 0;
        if self.auth_allowed() && self.account.is_none() {
            caps |= wire::EXT_AUTH;
            mechanisms = wire::AUTH_PLAIN | wire::AUTH_LOGIN;
        }
        let size = usize::try_from(self.config.limits.max_message_size).unwrap_or(usize::MAX);
        let bytes = wire::ehlo_reply(&self.config.server.hostname, caps, mechanisms, size);
        self.output.extend_from_slice(&bytes);
        Next::Continue
    }

    fn starttls(&mut self) -> Next {
        if self.tls_active {
            return self.reply(reply::TLS_ACTIVE);
        }
        if self.origin.listener_tls != ListenerTls::Starttls {
            return self.reply(reply::NO_STARTTLS);
        }
        if !self.shared.has_tls() {
            return self.reply(reply::TLS_UNAVAILABLE);
        }
        self.reply(reply::READY_TLS);
        Next::StartTls
    }

    /// AUTH needs TLS, except on a plain-text listener (loopback only).
    fn auth_allowed(&self) -> bool {
        self.tls_active || self.origin.listener_tls == ListenerTls::None
    }

    /// Logs a refused MAIL, RCPT or message, and counts it by reason.
    fn log_rejection(&self, stage: &'static str, r: &Reply) {
        if matches!(
            stage,
            "documents" | "pii" | "rule" | "ip_rate" | "account_quota"
        ) {
            crate::metrics::rejected_stage(stage);
        } else {
            crate::metrics::rejected(r);
        }
        tracing::info!(
            session = %self.origin.session_id,
            account = self.account.as_ref().map(|a| a.name.as_str()).unwrap_or("-"),
            stage,
            reply = %r.log_text(),
            "refused"
        );
    }

    /// The `421 4.7.0` for this client if its IP is banned. A store that
    /// cannot be read lets the client in (and says so in the log).
    async fn ban(&self) -> Option<Reply> {
        let ip = self.origin.peer.ip();
        let now = crate::store::now_ms();
        match self.shared.queue.store().banned(&ip.to_string(), now).await {
            Ok(ban) => ban.map(|b| crate::limits::banned_reply(ip, b.until, now)),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the ban list");
                None
            }
        }
    }

    fn data_timeouts(&self) -> (Duration, Duration) {
        (
            self.config.timeouts.data_block,
            self.config.timeouts.data_total,
        )
    }
}

fn parse_error_reply(e: wire::BadCommand) -> Reply {
    use wire::ParseError as E;
    let e = match e {
        wire::BadCommand::Syntax(e) => e,
        wire::BadCommand::SenderNotUtf8 => return reply::SENDER_NOT_UTF8,
        wire::BadCommand::RecipientNotUtf8 => return reply::RCPT_NOT_UTF8,
    };
    match e {
        E::UnknownCommand => reply::UNKNOWN_COMMAND,
        E::InvalidSenderAddress => reply::BAD_SENDER,
        E::InvalidRecipientAddress => reply::BAD_RCPT,
        E::SyntaxError { syntax } => {
            Reply::owned(501, [5, 5, 4], format!("Syntax error, expected: {syntax}"))
        }
        E::InvalidParameter { param } => Reply::owned(
            501,
            [5, 5, 4],
            format!("Invalid value for parameter {param}"),
        ),
        E::UnsupportedParameter { .. } => Reply::new(555, [5, 5, 4], "Unsupported parameter"),
        E::ResponseTooLong => reply::LINE_TOO_LONG,
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => {
            Reply::new(501, [5, 5, 4], "Syntax error")
        }
    }
}
