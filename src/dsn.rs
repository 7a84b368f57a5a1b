//! Delivery status notifications (RFC 3464, RFC 6522 `multipart/report`).
//!
//! Sent with the null sender to the original envelope sender when
//! recipients fail permanently or expire; never for a message that itself
//! had the null sender (no bounce loops). Only the original *headers* are
//! returned (`text/rfc822-headers`): the content stays in the house.
//!
//! Built for delivery (failed and expired recipients) and for suppression
//! (failures the relay reports after hand-over), so it sits below both.

use mail_builder::headers::date::Date;

use crate::store::{MessageInfo, NewMessage, new_queue_id};

/// One failed recipient.
pub struct Failure<'a> {
    pub recipient: &'a str,
    /// The upstream reply or our own reason, e.g. `550 5.1.1 no such user`.
    pub diagnostic: &'a str,
    /// Gave up after `delivery.max_age` rather than on a permanent reply.
    pub expired: bool,
    /// Reported by the relay after it took the message (a Mailjet event):
    /// the status its error class stands for. The diagnostic is then the
    /// relay's words, not an SMTP reply.
    pub reported: Option<&'a str>,
}

pub struct Report<'a> {
    pub hostname: &'a str,
    pub queue_id: &'a str,
    pub sender: &'a str,
    /// Unix milliseconds.
    pub received_at: i64,
    pub failures: &'a [Failure<'a>],
    /// The original message; only its header block is used. Empty when it
    /// is no longer held (content is deleted once a message is final): the
    /// report then has no third part.
    pub original: &'a [u8],
}

/// The `5.Y.Z` status for a failed recipient: taken from the reply's
/// enhanced code, with the class forced to 5 (RFC 3464 §2.3.4: `failed`
/// goes with a permanent status, even when the last reply was temporary).
fn status_of(f: &Failure<'_>) -> String {
    if f.expired {
        return "5.4.7".into();
    }
    if let Some(status) = f.reported {
        return status.to_string();
    }
    let esc = f.diagnostic.split_whitespace().nth(1).unwrap_or("");
    let parts: Vec<&str> = esc.split('.').collect();
    if parts.len() == 3
        && matches!(parts[0], "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()))
    {
        return format!("5.{}.{}", parts[1], parts[2]);
    }
    "5.0.0".into()
}

fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    &message[..end]
}

/// Keeps reply text on one line and within what a header field allows.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(900)
        .collect()
}

pub fn build(r: &Report<'_>) -> Vec<u8> {
    let boundary = format!("dsn-{}", r.queue_id);
    let now = Date::now().to_rfc822();
    let arrival = Date::new(r.received_at / 1000).to_rfc822();
    let mut list = String::new();
    for f in r.failures {
        list.push_str(&format!(
            "  <{}>\r\n    {}\r\n",
            one_line(f.recipient),
            one_line(f.diagnostic)
        ));
    }
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: Unzustellbar / Undelivered Mail Returned to Sender\r\n\
         Date: {now}\r\n\
         Message-ID: <{id}.dsn@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Ihre Nachricht (Kennung {id}) konnte an folgende Empf\u{e4}nger nicht\r\n\
         zugestellt werden:\r\n\
         \r\n\
         Your message (id {id}) could not be delivered to these recipients:\r\n\
         \r\n\
         {list}\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {host}\r\n\
         X-Schleuse-Queue-ID: {id}\r\n\
         Arrival-Date: {arrival}\r\n",
        host = r.hostname,
        to = one_line(r.sender),
        id = r.queue_id,
    ));
    for f in r.failures {
        out.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\n\
             Action: failed\r\n\
             Status: {}\r\n\
             Diagnostic-Code: {}; {}\r\n",
            one_line(f.recipient),
            status_of(f),
            if f.reported.is_some() {
                "X-Mailjet"
            } else {
                "smtp"
            },
            one_line(f.diagnostic)
        ));
    }
    let mut bytes = out.into_bytes();
    if !r.original.is_empty() {
        bytes.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
        );
        bytes.extend_from_slice(header_block(r.original));
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The DSN as a message to queue: null sender (no bounce loops), to `to`.
pub fn notice(
    hostname: &str,
    msg: &MessageInfo,
    to: &str,
    failures: &[Failure<'_>],
    original: &[u8],
) -> NewMessage {
    let report = build(&Report {
        hostname,
        queue_id: &msg.id,
        sender: to,
        received_at: msg.received_at,
        failures,
        original,
    });
    NewMessage {
        id: new_queue_id(),
        account: msg.account.clone(),
        sender: String::new(),
        recipients: vec![to.to_owned()],
        content: report,
        ..NewMessage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_structure() {
        let failures = [Failure {
            recipient: "bad@example.org",
            diagnostic: "550 5.1.1 no such user",
            expired: false,
            reported: None,
        }];
        let dsn = build(&Report {
            hostname: "gw.test",
            queue_id: "q1",
            sender: "anna@landkreis.example",
            received_at: 0,
            failures: &failures,
            original: b"Subject: Bescheid\r\nFrom: a@landkreis.example\r\n\r\nSECRET BODY\r\n",
        });
        let text = String::from_utf8(dsn).expect("utf8");
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; bad@example.org"));
        assert!(text.contains("Status: 5.1.1"));
        assert!(text.contains("Subject: Bescheid"));
        assert!(!text.contains("SECRET BODY"));
        assert!(!crate::session::wire::has_bare_line_ending(text.as_bytes()));
        let parsed = mail_parser::MessageParser::new()
            .parse(text.as_bytes())
            .expect("parses");
        assert_eq!(parsed.parts.len(), 4);
    }

    #[test]
    fn status_is_always_permanent() {
        let f = |diagnostic, expired| Failure {
            recipient: "r@example.org",
            diagnostic,
            expired,
            reported: None,
        };
        assert_eq!(status_of(&f("550 5.7.1 denied", false)), "5.7.1");
        assert_eq!(status_of(&f("554 transaction failed", false)), "5.0.0");
        assert_eq!(status_of(&f("451 4.4.1 unreachable", false)), "5.4.1");
        assert_eq!(status_of(&f("451 4.4.1 unreachable", true)), "5.4.7");
        let event = Failure {
            reported: Some("5.2.1"),
            ..f("bounce (hard bounce; error: mailbox inactive)", false)
        };
        assert_eq!(status_of(&event), "5.2.1");
    }

    #[test]
    fn a_report_after_the_hand_over_has_no_headers_part() {
        let failures = [Failure {
            recipient: "kind@schule.example",
            diagnostic: "bounce (hard bounce; error_related_to: recipient; error: user unknown)",
            expired: false,
            reported: Some("5.1.1"),
        }];
        let dsn = build(&Report {
            hostname: "gw.test",
            queue_id: "q2",
            sender: "anna@landkreis.example",
            received_at: 0,
            failures: &failures,
            original: b"",
        });
        let text = String::from_utf8(dsn).expect("utf8");
        assert!(text.contains("Status: 5.1.1"), "{text}");
        assert!(
            text.contains("Diagnostic-Code: X-Mailjet; bounce"),
            "{text}"
        );
        assert!(!text.contains("rfc822-headers"));
        let parsed = mail_parser::MessageParser::new()
            .parse(text.as_bytes())
            .expect("parses");
        assert_eq!(parsed.parts.len(), 3);
    }
}
