//! Reading delivery status notifications (RFC 3464, RFC 6522
//! `multipart/report; report-type=delivery-status`; RFC 6533's
//! `message/global-delivery-status` too).
//!
//! Only the machine-readable part counts: each per-recipient block's
//! `Final-Recipient` (or `Original-Recipient`), `Action`, `Status` and
//! `Diagnostic-Code`. The human text, which differs by MTA and language, is
//! never guessed at. A message without such a part is not a DSN.

use mail_parser::{MessageParser, MimeHeaders};

/// One per-recipient block of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub address: String,
    /// `failed`, `delayed`, `delivered`, `relayed`, `expanded` (lowercase).
    pub action: String,
    /// `5.1.1`
    pub status: String,
    pub diagnostic: Option<String>,
}

impl RecipientStatus {
    /// Failed for good, because of the address itself (`5.1.x`).
    pub fn hard_bounce(&self) -> bool {
        self.action == "failed" && super::is_address_status(&self.status)
    }
}

/// What a DSN reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub reporting_mta: Option<String>,
    pub recipients: Vec<RecipientStatus>,
}

/// The report in `message`, or `None` when it is not a DSN.
pub fn parse(message: &[u8]) -> Option<Report> {
    let parsed = MessageParser::new().parse(message)?;
    let part = parsed.parts.iter().find(|p| {
        p.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("delivery-status")
                        || s.eq_ignore_ascii_case("global-delivery-status")
                })
        })
    })?;
    Some(parse_fields(&String::from_utf8_lossy(part.contents())))
}

/// The field groups of a `message/delivery-status` body: header-style
/// fields, unfolded, groups separated by blank lines.
fn groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = current.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `rfc822; <a@b>` → `a@b`.
fn typed_address(value: &str) -> String {
    let addr = value.split_once(';').map_or(value, |(_, a)| a).trim();
    addr.trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

fn parse_fields(text: &str) -> Report {
    let mut report = Report::default();
    for group in groups(text) {
        let field = |name: &str| {
            group
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(mta) = field("reporting-mta") {
            report
                .reporting_mta
                .get_or_insert_with(|| typed_address(mta));
        }
        let Some(recipient) = field("final-recipient").or_else(|| field("original-recipient"))
        else {
            continue;
        };
        let address = typed_address(recipient);
        if address.is_empty() {
            continue;
        }
        let first_word = |v: Option<&str>| {
            v.and_then(|v| v.split_whitespace().next())
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        report.recipients.push(RecipientStatus {
            address,
            action: first_word(field("action")),
            status: first_word(field("status")),
            diagnostic: field("diagnostic-code")
                .map(|d| d.split_once(';').map_or(d, |(_, t)| t).trim().to_string())
                .filter(|d| !d.is_empty()),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX_DSN: &str = "From: MAILER-DAEMON@mx.landkreis.example (Mail Delivery System)\r\n\
To: via@landkreis.example\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"B1\"\r\n\
\r\n\
--B1\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not\r\n\
be delivered to one or more recipients.\r\n\
\r\n\
--B1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.landkreis.example\r\n\
Arrival-Date: Fri, 20 Nov 2026 10:00:00 +0100 (CET)\r\n\
\r\n\
Final-Recipient: rfc822; Weg@Example.org\r\n\
Original-Recipient: rfc822;weg@example.org\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.org\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <weg@example.org>: Recipient address\r\n\
\t rejected: User unknown in virtual mailbox table\r\n\
\r\n\
Final-Recipient: rfc822; voll@example.org\r\n\
Action: failed\r\n\
Status: 5.2.2\r\n\
Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\
\r\n\
Final-Recipient: rfc822; spaeter@example.org\r\n\
Action: delayed\r\n\
Status: 4.4.1\r\n\
\r\n\
Final-Recipient: rfc822; absender@example.org\r\n\
Action: failed\r\n\
Status: 5.1.8\r\n\
\r\n\
--B1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: via@landkreis.example\r\n\
Subject: Bescheid\r\n\
\r\n\
--B1--\r\n";

    #[test]
    fn reads_the_per_recipient_blocks() {
        let report = parse(POSTFIX_DSN.as_bytes()).expect("a DSN");
        assert_eq!(
            report.reporting_mta.as_deref(),
            Some("mx.landkreis.example")
        );
        assert_eq!(report.recipients.len(), 4);
        let weg = &report.recipients[0];
        assert_eq!(weg.address, "Weg@Example.org");
        assert_eq!(
            (weg.action.as_str(), weg.status.as_str()),
            ("failed", "5.1.1")
        );
        assert!(
            weg.diagnostic
                .as_deref()
                .is_some_and(|d| d.starts_with("550 5.1.1") && d.contains("User unknown")),
            "{:?}",
            weg.diagnostic
        );
        let hard: Vec<&str> = report
            .recipients
            .iter()
            .filter(|r| r.hard_bounce())
            .map(|r| r.address.as_str())
            .collect();
        // Mailbox full is not about the address; delayed is not final;
        // 5.1.8 is about the *sender's* address.
        assert_eq!(hard, ["Weg@Example.org"]);
    }

    #[test]
    fn our_own_dsn_is_read_back() {
        let failures = [crate::dsn::Failure {
            recipient: "nobody@example.org",
            diagnostic: "550 5.1.1 no such user",
            expired: false,
            reported: None,
        }];
        let dsn = crate::dsn::build(&crate::dsn::Report {
            hostname: "gw.test",
            queue_id: "q1",
            sender: "anna@landkreis.example",
            received_at: 0,
            failures: &failures,
            original: b"Subject: x\r\n\r\nbody\r\n",
        });
        let report = parse(&dsn).expect("a DSN");
        assert_eq!(report.recipients.len(), 1);
        assert!(report.recipients[0].hard_bounce());
        assert_eq!(report.recipients[0].address, "nobody@example.org");
    }

    #[test]
    fn ordinary_mail_is_not_a_dsn() {
        let plain = b"From: a@example.org\r\nSubject: Final-Recipient: x\r\n\r\n\
            Final-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n";
        assert_eq!(parse(plain), None);
        assert_eq!(parse(b""), None);
        let report_without_blocks =
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
            --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n--b--\r\n";
        let r = parse(report_without_blocks).expect("a DSN, if an empty one");
        assert!(r.recipients.is_empty());
    }
}
