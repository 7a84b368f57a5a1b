//! The upstream relay (SPEC §9) through `mail-send`.
//!
//! STARTTLS or implicit TLS with AUTH and a verified certificate (public
//! roots plus `upstream.ca_file`); plain text only for a loopback upstream.
//! One connection carries many transactions in sequence. The transaction is
//! driven command by command so every recipient gets its own result.

use std::net::IpAddr;
use std::time::Duration;

use mail_send::SmtpClient;
use mail_send::SmtpClientBuilder;
use mail_send::smtp::message::Parameters;
use smtp_proto::Response;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::{Config, UpstreamTls};
use crate::tls;

/// The result for one recipient of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    Delivered(String),
    /// 4xx or a connection problem: try again later.
    Temporary(String),
    /// 5xx: bounce.
    Permanent(String),
}

impl RcptResult {
    pub fn text(&self) -> &str {
        match self {
            RcptResult::Delivered(t) | RcptResult::Temporary(t) | RcptResult::Permanent(t) => t,
        }
    }
}

/// Where in the conversation a reply came from; the account-wide refusal
/// check (`super::account`) needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Greeting, EHLO, STARTTLS or AUTH.
    Connect,
    MailFrom,
    Rcpt,
    /// The reply after the message body.
    Data,
    /// Not an upstream reply: the gateway's own text for a connection that
    /// failed or could not be made.
    Local,
}

/// The connection broke during a transaction.
#[derive(Debug)]
pub struct SendError {
    pub error: mail_send::Error,
    /// True if it broke before DATA, so the upstream cannot have taken the
    /// message and trying again at once cannot duplicate it.
    pub before_data: bool,
}

/// Time for the upload on top of the per-command timeout: a 25 MB message
/// must not time out on a slow line (at least 128 KiB/s is assumed).
fn data_timeout(base: Duration, size: usize) -> Duration {
    base + Duration::from_secs((size / (128 * 1024)) as u64)
}

/// The body as mail-send must get it: it appends `\r\n.\r\n` itself, and it
/// dot-stuffs only after a line break, so a leading dot is stuffed here.
/// (Unstuffed, a first line "." would end the upstream's DATA early and
/// turn the rest of the message into commands.)
pub fn wire_body(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    if body.first() == Some(&b'.') {
        let mut stuffed = Vec::with_capacity(body.len() + 1);
        stuffed.push(b'.');
        stuffed.extend_from_slice(body);
        std::borrow::Cow::Owned(stuffed)
    } else {
        std::borrow::Cow::Borrowed(body)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Smtp(#[from] mail_send::Error),
    #[error("upstream TLS setup: {0}")]
    Tls(#[from] tls::TlsError),
}

/// An open upstream connection, plain (loopback only) or TLS.
pub enum Upstream {
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
    Plain(SmtpClient<TcpStream>),
}

/// Opens a connection, from `local_ip` when an egress address is given.
pub async fn connect(config: &Config, local_ip: Option<IpAddr>) -> Result<Upstream, RelayError> {
    let up = &config.upstream;
    let connector = tls::client_connector(up.ca_file.as_deref())?;
    let mut builder =
        SmtpClientBuilder::new_with_tls_connector(up.host.clone(), up.port, connector)
            .implicit_tls(up.tls == UpstreamTls::Implicit)
            .helo_host(config.server.hostname.clone())
            .timeout(up.timeout);
    if let Some(ip) = local_ip {
        builder = builder.local_ip(ip);
    }
    if let (Some(user), Some(pass)) = (&up.username, &up.password) {
        builder = builder.credentials((user.clone(), pass.clone()));
    }
    // Commands and the message body go out in several small writes: without
    // TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to every message.
    Ok(match up.tls {
        UpstreamTls::None => {
            let client = builder.connect_plain().await?;
            let _ = client.stream.set_nodelay(true);
            Upstream::Plain(client)
        }
        UpstreamTls::Starttls | UpstreamTls::Implicit => {
            let client = builder.connect().await?;
            let _ = client.stream.get_ref().0.set_nodelay(true);
            Upstream::Tls(Box::new(client))
        }
    })
}

impl Upstream {
    /// Runs one transaction. `Err` means the connection is unusable (drop it);
    /// replies, even refusals, are `Ok` results per recipient, each with the
    /// stage it came from.
    pub async fn send(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Vec<(String, RcptResult, Stage)>, SendError> {
        match self {
            Upstream::Tls(c) => transaction(c.as_mut(), sender, recipients, message).await,
            Upstream::Plain(c) => transaction(c, sender, recipients, message).await,
        }
    }

    pub async fn quit(self) {
        let wait = Duration::from_secs(5);
        let _ = match self {
            Upstream::Tls(c) => tokio::time::timeout(wait, (*c).quit()).await,
            Upstream::Plain(c) => tokio::time::timeout(wait, c.quit()).await,
        };
    }
}

pub fn reply_text(r: &Response<String>) -> String {
    let [a, b, c] = r.esc;
    let text = r.message.replace(['\r', '\n'], " ");
    if a == 0 {
        format!("{} {}", r.code, text.trim())
    } else {
        format!("{} {a}.{b}.{c} {}", r.code, text.trim())
    }
}

fn classify(r: &Response<String>) -> RcptResult {
    let text = reply_text(r);
    match r.code {
        200..=299 => RcptResult::Delivered(text),
        500..=599 => RcptResult::Permanent(text),
        _ => RcptResult::Temporary(text),
    }
}

/// A 421 means the upstream is closing: results stand, but drop the client.
pub fn closes_connection(results: &[(String, RcptResult, Stage)]) -> bool {
    results
        .iter()
        .any(|(_, r, _)| matches!(r, RcptResult::Temporary(t) if t.starts_with("421")))
}

async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    sender: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<Vec<(String, RcptResult, Stage)>, SendError> {
    let early = |error| SendError {
        error,
        before_data: true,
    };
    let mut mail_params = Parameters::new();
    if message.iter().any(|&b| b >= 0x80) {
        mail_params.add(("BODY", "8BITMIME"));
    }
    if !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii()) {
        mail_params.add("SMTPUTF8");
    }
    let all = |result: RcptResult| -> Vec<(String, RcptResult, Stage)> {
        recipients
            .iter()
            .map(|r| (r.clone(), result.clone(), Stage::MailFrom))
            .collect()
    };
    match client.mail_from(sender, &mail_params).await {
        Ok(()) => {}
        Err(mail_send::Error::UnexpectedReply(r)) => {
            let _ = client.rset().await;
            return Ok(all(classify(&r)));
        }
        Err(e) => return Err(early(e)),
    }
    let mut results = Vec::with_capacity(recipients.len());
    let mut accepted = Vec::with_capacity(recipients.len());
    let none = Parameters::new();
    for rcpt in recipients {
        match client.rcpt_to(rcpt, &none).await {
            Ok(()) => accepted.push(rcpt.clone()),
            Err(mail_send::Error::UnexpectedReply(r)) => {
                results.push((rcpt.clone(), classify(&r), Stage::Rcpt))
            }
            Err(e) => return Err(early(e)),
        }
    }
    if accepted.is_empty() {
        let _ = client.rset().await;
        return Ok(results);
    }
    let body = wire_body(message);
    let base = client.timeout;
    client.timeout = data_timeout(base, body.len());
    let sent = client.data(body.as_ref()).await;
    client.timeout = base;
    let outcome = match sent {
        Ok(r) => classify(&r),
        Err(mail_send::Error::UnexpectedReply(r)) => classify(&r),
        Err(error) => {
            return Err(SendError {
                error,
                before_data: false,
            });
        }
    };
    results.extend(
        accepted
            .into_iter()
            .map(|r| (r, outcome.clone(), Stage::Data)),
    );
    Ok(results)
}

/// The upstream's reply when [`connect`] failed because it refused us (a
/// `4xx`/`5xx` to the greeting, EHLO, STARTTLS or AUTH) rather than
/// because it could not be reached. `421` is left out: it says "busy,
/// closing", which is the circuit breaker's business.
pub fn refusal(e: &RelayError) -> Option<String> {
    match e {
        RelayError::Smtp(
            mail_send::Error::UnexpectedReply(r) | mail_send::Error::AuthenticationFailed(r),
        ) if (400..=599).contains(&r.code) && r.code != 421 => Some(reply_text(r)),
        _ => None,
    }
}

/// What a message-less probe found (`super::account`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Every step answered `2xx`.
    Accepted,
    /// The upstream answered a step with `4xx`/`5xx`.
    Refused { stage: Stage, reply: String },
    /// No answer: unreachable, TLS, timeout, a broken connection.
    Failed(String),
}

/// Connects (greeting, TLS, AUTH), then `MAIL FROM`, `RCPT TO` and `RSET`:
/// tests whether the upstream takes mail again without sending any.
pub async fn probe(config: &Config, local_ip: Option<IpAddr>, sender: &str, rcpt: &str) -> Probe {
    let upstream = match connect(config, local_ip).await {
        Ok(u) => u,
        Err(e) => {
            return match refusal(&e) {
                Some(reply) => Probe::Refused {
                    stage: Stage::Connect,
                    reply,
                },
                None => Probe::Failed(e.to_string()),
            };
        }
    };
    let mut upstream = upstream;
    let found = match &mut upstream {
        Upstream::Tls(c) => probe_steps(c.as_mut(), sender, rcpt).await,
        Upstream::Plain(c) => probe_steps(c, sender, rcpt).await,
    };
    upstream.quit().await;
    found
}

async fn probe_steps<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    sender: &str,
    rcpt: &str,
) -> Probe {
    let none = Parameters::new();
    let refused = |stage, e| match e {
        mail_send::Error::UnexpectedReply(r) => Probe::Refused {
            stage,
            reply: reply_text(&r),
        },
        e => Probe::Failed(e.to_string()),
    };
    if let Err(e) = client.mail_from(sender, &none).await {
        return refused(Stage::MailFrom, e);
    }
    let found = match client.rcpt_to(rcpt, &none).await {
        Ok(()) => Probe::Accepted,
        Err(e) => refused(Stage::Rcpt, e),
    };
    let _ = client.rset().await;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dot_is_stuffed_and_final_crlf_dropped() {
        assert_eq!(
            wire_body(b".\r\nMAIL FROM:<x@y>\r\n").as_ref(),
            b"..\r\nMAIL FROM:<x@y>"
        );
        assert_eq!(
            wire_body(b"Subject: x\r\n\r\nhi\r\n").as_ref(),
            b"Subject: x\r\n\r\nhi"
        );
        assert_eq!(wire_body(b"").as_ref(), b"");
    }

    #[test]
    fn upload_time_grows_with_size() {
        let base = Duration::from_secs(60);
        assert_eq!(data_timeout(base, 10_000), base);
        assert_eq!(
            data_timeout(base, 25 << 20),
            base + Duration::from_secs(200)
        );
    }
}
