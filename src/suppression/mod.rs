//! Suppression of bounced addresses (SPEC §6).
//!
//! An address goes on the list, with a reason and an expiry
//! (`[suppression] hard_bounce_duration`), when
//! - the upstream refuses it with `5xx 5.1.x` (delivery, [`after_delivery`]);
//! - a delivery status notification reports it `failed` with `5.1.x`
//!   ([`dsn_reader`]): DSNs go to the system address, i.e. the county's mailbox,
//!   not to the gateway; an admin feeds them in with `schleuse suppress
//!   import-dsn FILE…`, or the county's mail server hands them to the
//!   gateway (as any account, `MAIL FROM:<>` allowed) addressed to
//!   `[sender] system_address` only: such a message is a report, not mail,
//!   and is taken in ([`intake`], `250 2.6.0`) instead of relayed;
//! - Mailjet reports a `bounce` or `blocked` event whose error class is
//!   about the address ([`classify`]: never a content filter, a template
//!   error or Mailjet's own trouble), or a `spam` complaint ([`mailjet`],
//!   [`webhook`]);
//! - an admin says so (`schleuse suppress add`).
//!
//! Only `5.1.x` codes about the recipient count (RFC 3463: 0 other, 1 bad
//! mailbox, 2 bad system, 3 bad syntax, 4 ambiguous, 6 moved, 10 null MX);
//! `5.1.7`/`5.1.8` are about the *sender's* address and a full mailbox
//! (`5.2.2`) or a policy refusal (`5.7.x`) is not the address's fault.
//!
//! A later `RCPT TO` for an active entry gets `550 5.1.1` naming the reason
//! and the date ([`refusal`]); expired entries do not count and are purged
//! with the retention round. Entries hold the address in clear (see
//! `crate::store::suppression`); logs never name it.

pub mod classify;
pub mod dsn_reader;
pub mod liveness;
pub mod mailjet;
pub mod webhook;

use std::time::{Duration, UNIX_EPOCH};

use crate::config::Config;
use crate::reply::Reply;
use crate::state::Shared;
use crate::store::suppression::{
    NewRelayEvent, RecipientEffect, SuppressOutcome, Suppression, SuppressionSource, normalise,
};
use crate::store::{Store, StoreError, now_ms};

/// Whether an enhanced status code (`5.1.1`) says the recipient address
/// itself is bad, for good.
pub fn is_address_status(esc: &str) -> bool {
    let mut parts = esc.trim().split('.');
    let (Some("5"), Some("1"), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(detail, "0" | "1" | "2" | "3" | "4" | "6" | "10")
}

/// `"550 5.1.1"` when an SMTP reply is a permanent refusal of the address.
pub fn hard_bounce(reply: &str) -> Option<String> {
    let mut words = reply.split_whitespace();
    let code = words.next()?;
    let esc = words.next()?;
    let permanent =
        code.len() == 3 && code.starts_with('5') && code.bytes().all(|b| b.is_ascii_digit());
    (permanent && is_address_status(esc)).then(|| format!("{code} {esc}"))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An automatic entry, lasting `hard_bounce_duration` from now.
pub fn automatic(
    config: &Config,
    address: &str,
    source: SuppressionSource,
    reason: String,
    detail: Option<String>,
) -> Suppression {
    let now = now_ms();
    Suppression {
        address: normalise(address),
        source,
        reason,
        detail,
        created_at: now,
        expires_at: Some(now.saturating_add(millis(config.suppression.hard_bounce_duration))),
    }
}

/// `2026-11-20` (UTC).
pub fn date(unix_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

/// Text fit for an SMTP reply line: printable ASCII (umlauts spelled
/// out), short.
fn reply_safe(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            ' '..='~' => out.push(c),
            c if c.is_whitespace() || c.is_control() => out.push(' '),
            c => out.push_str(crate::links::format::transliterate(c).unwrap_or("?")),
        }
        if out.len() >= max {
            out.truncate(max);
            out.push_str("...");
            break;
        }
    }
    out.trim().to_string()
}

/// The `550 5.1.1` answer to `RCPT TO` for a suppressed address.
pub fn refusal(address: &str, entry: &Suppression) -> Reply {
    let day = date(entry.created_at);
    let reason = reply_safe(&entry.reason, 80);
    let why = match (entry.source, entry.reason.as_str()) {
        (SuppressionSource::Admin, _) => format!("suppressed by an administrator on {day}"),
        (_, r) if r.starts_with("mailjet:spam") => {
            format!("suppressed after a spam complaint on {day}")
        }
        (_, r) if r.starts_with("mailjet:blocked") => {
            format!("suppressed after the relay blocked it on {day}")
        }
        _ => format!("suppressed after a hard bounce on {day}"),
    };
    Reply::owned(
        550,
        [5, 1, 1],
        format!(
            "<{}>: recipient {why} ({reason}); an admin can lift it with schleuse suppress remove",
            reply_safe(address, 256)
        ),
    )
}

/// Writes one entry; counts and logs it (never naming the address).
pub async fn add(
    store: &dyn Store,
    entry: Suppression,
    context: &str,
) -> Result<SuppressOutcome, StoreError> {
    let (source, reason) = (entry.source, entry.reason.clone());
    let outcome = store.suppress(entry, false).await?;
    if outcome != SuppressOutcome::Kept {
        crate::metrics::suppression_added(source.as_str());
    }
    tracing::info!(source = %source, reason = %reason, outcome = ?outcome, context, "recipient suppressed");
    Ok(outcome)
}

/// After a delivery attempt: every recipient the upstream refused with
/// `5xx 5.1.x` goes on the list. Store errors are logged: the bounce itself
/// is recorded by the caller either way.
pub async fn after_delivery(shared: &Shared, queue_id: &str, failures: &[(String, String)]) {
    let config = shared.config();
    let store = shared.queue.store();
    for (rcpt, reply) in failures {
        let Some(status) = hard_bounce(reply) else {
            continue;
        };
        let entry = automatic(
            &config,
            rcpt,
            SuppressionSource::Upstream,
            format!("upstream {status}"),
            Some(reply.clone()),
        );
        if let Err(e) = add(store.as_ref(), entry, queue_id).await {
            tracing::error!(queue_id, error = %e, "cannot write the suppression list");
        }
    }
}

/// Puts a DSN's hard-bounced recipients on the list; returns the
/// addresses with their status and what happened.
pub async fn apply_dsn(
    store: &dyn Store,
    config: &Config,
    report: &dsn_reader::Report,
    context: &str,
) -> Result<Vec<(String, String, SuppressOutcome)>, StoreError> {
    let mut done = Vec::new();
    for r in report.recipients.iter().filter(|r| r.hard_bounce()) {
        let entry = automatic(
            config,
            &r.address,
            SuppressionSource::Dsn,
            format!("dsn {}", r.status),
            r.diagnostic.clone(),
        );
        let outcome = add(store, entry, context).await?;
        done.push((normalise(&r.address), r.status.clone(), outcome));
    }
    Ok(done)
}

/// What one webhook request did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Events stored for the first time.
    pub new: usize,
    /// Events known already (a retried batch): nothing changed.
    pub repeated: usize,
    /// Elements that were no usable event.
    pub skipped: usize,
    /// New events that put an address on the list (or renewed it).
    pub suppressed: usize,
    /// New events matched to one of our messages.
    pub matched: usize,
    /// New events that moved a recipient of ours on (sent, complained,
    /// bounced, blocked).
    pub changed: usize,
    /// Bounce notices queued for the staff.
    pub notices: usize,
}

/// What `event` does to the recipient of one of our messages, with the
/// DSN to queue if it fails it. `None` when it names no message of ours
/// or is about tracking (open, click, unsub).
async fn effect_of(
    store: &dyn Store,
    config: &Config,
    event: &mailjet::Event,
) -> Result<Option<RecipientEffect>, StoreError> {
    let (Some(id), Some((state, reply))) = (&event.custom_id, event.recipient_state()) else {
        return Ok(None);
    };
    let Some(msg) = store.get(id).await? else {
        return Ok(None);
    };
    let notice = match (&msg.dsn_to, event.verdict(&config.suppression.mailjet_rule)) {
        (Some(to), Some(verdict)) if state.failed_after_handover() => {
            let diagnostic = format!(
                "{}: {}",
                event.kind,
                event.detail.as_deref().unwrap_or("no reason given")
            );
            let failure = crate::dsn::Failure {
                recipient: &event.email,
                diagnostic: &diagnostic,
                expired: false,
                reported: Some(&verdict.status),
            };
            // The content is gone once the message is final: no headers.
            Some(crate::dsn::notice(
                &config.server.hostname,
                &msg,
                to,
                &[failure],
                b"",
            ))
        }
        _ => None,
    };
    Ok(Some(RecipientEffect {
        state,
        reply,
        notice,
    }))
}

/// Stores a batch of Mailjet events. Stops at the first store error (the
/// caller answers so that Mailjet retries; events stored so far are known
/// by then and are not applied twice).
pub async fn ingest(
    store: &dyn Store,
    config: &Config,
    events: Vec<Result<mailjet::Event, mailjet::Skip>>,
) -> Result<Ingested, StoreError> {
    let rules = &config.suppression.mailjet_rule;
    let mut done = Ingested::default();
    for event in events {
        let Ok(event) = event else {
            done.skipped += 1;
            continue;
        };
        let reason = event.suppression_reason(rules);
        let suppress = reason.clone().map(|reason| {
            automatic(
                config,
                &event.email,
                SuppressionSource::Mailjet,
                reason,
                event.detail.clone(),
            )
        });
        let record = NewRelayEvent {
            key: event.key(),
            event: event.kind.clone(),
            at: event.at_ms(now_ms()),
            custom_id: event.custom_id.clone(),
            relay_message_id: event.message_id.clone(),
            recipient: event.email.clone(),
            detail: event.detail.clone(),
            effect: effect_of(store, config, &event).await?,
        };
        let outcome = store.record_relay_event(record, suppress).await?;
        if !outcome.new {
            done.repeated += 1;
            continue;
        }
        done.new += 1;
        done.matched += usize::from(outcome.matched);
        crate::metrics::relay_event(&event.kind);
        let queue_id = event.custom_id.as_deref().unwrap_or("-");
        if let Some(state) = outcome.changed {
            done.changed += 1;
            let rule = event.verdict(rules).map(|v| v.rule);
            tracing::info!(
                queue_id,
                event = %event.kind,
                state = state.as_str(),
                rule = rule.as_deref().unwrap_or("-"),
                "relay reported on a recipient after the hand-over"
            );
        }
        if let Some(dsn) = &outcome.notice {
            done.notices += 1;
            crate::metrics::dsn_sent();
            tracing::info!(queue_id, dsn = %dsn, event = %event.kind, "bounce notice queued");
        }
        if let Some(s) = outcome.suppression {
            if s != SuppressOutcome::Kept {
                crate::metrics::suppression_added(SuppressionSource::Mailjet.as_str());
                done.suppressed += 1;
            }
            tracing::info!(
                source = "mailjet",
                reason = reason.as_deref().unwrap_or_default(),
                outcome = ?s,
                queue_id,
                "recipient suppressed"
            );
        }
    }
    Ok(done)
}

/// A message submitted to the gateway for `[sender] system_address` only
/// that is a DSN: taken in (its hard bounces suppressed), not relayed.
/// `None`: an ordinary message, which goes on as usual. With the null
/// sender (allowed only for this), anything but a DSN is refused.
pub async fn intake(
    shared: &Shared,
    config: &Config,
    sender: &str,
    recipients: &[String],
    body: &[u8],
    session: &str,
) -> Option<Reply> {
    let system = &config.sender.system_address;
    if recipients.is_empty() || !recipients.iter().all(|r| r.eq_ignore_ascii_case(system)) {
        return None;
    }
    let Some(report) = dsn_reader::parse(body) else {
        return sender.is_empty().then(|| {
            Reply::new(
                554,
                [5, 6, 0],
                "Message refused: with the null sender only delivery status reports are taken",
            )
        });
    };
    let context = format!("dsn intake, session {session}");
    match apply_dsn(shared.queue.store().as_ref(), config, &report, &context).await {
        Ok(done) => {
            tracing::info!(
                session,
                recipients = report.recipients.len(),
                suppressed = done.len(),
                "delivery status report taken in, not relayed"
            );
            Some(Reply::owned(
                250,
                [2, 6, 0],
                format!(
                    "Delivery status report taken in: {} address(es) suppressed; not relayed",
                    done.len()
                ),
            ))
        }
        Err(e) => {
            tracing::error!(session, error = %e, "cannot write the suppression list");
            Some(Reply::new(
                451,
                [4, 3, 0],
                "Cannot process the delivery status report right now; try again later",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recipient_address_codes_count() {
        assert_eq!(
            hard_bounce("550 5.1.1 <x@example.org>: mailbox unavailable").as_deref(),
            Some("550 5.1.1")
        );
        assert_eq!(
            hard_bounce("553 5.1.10 null MX").as_deref(),
            Some("553 5.1.10")
        );
        for not in [
            "552 5.2.2 mailbox full",
            "550 5.7.1 policy",
            "451 4.1.1 try later",
            "550 5.1.8 bad sender domain",
            "550 5.1.7 bad sender mailbox",
            "550 mailbox unavailable",
            "",
        ] {
            assert_eq!(hard_bounce(not), None, "{not}");
        }
    }

    #[test]
    fn the_refusal_is_readable() {
        let entry = Suppression {
            address: "weg@example.org".into(),
            source: SuppressionSource::Mailjet,
            reason: "mailjet:bounce".into(),
            detail: Some("internal".into()),
            created_at: 1_795_170_000_000,
            expires_at: None,
        };
        let r = refusal("Weg@Example.org", &entry);
        let mut wire = Vec::new();
        r.write_to(&mut wire);
        let wire = String::from_utf8(wire).expect("ascii");
        assert_eq!(
            wire,
            "550 5.1.1 <Weg@Example.org>: recipient suppressed after a hard bounce on \
             2026-11-20 (mailjet:bounce); an admin can lift it with schleuse suppress remove\r\n"
        );
        let admin = Suppression {
            source: SuppressionSource::Admin,
            reason: "Empfänger\r\nverzogen".into(),
            ..entry
        };
        let text = refusal("weg@example.org", &admin).text.into_owned();
        assert!(text.contains("by an administrator"), "{text}");
        assert!(text.contains("(Empfaenger  verzogen)"), "{text}");
        assert!(text.is_ascii() && !text.contains('\n'));
    }
}
