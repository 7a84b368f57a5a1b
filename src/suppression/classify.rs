//! What a Mailjet `bounce`/`blocked` event says: about the *address* (put
//! it on the suppression list) or about the *message* (a failed delivery of
//! that message only), and which RFC 3463 status the DSN to the staff
//! member carries (SPEC §6).
//!
//! Mailjet's documentation warns that "all blocked events may not have the
//! same reason and perpetuity": a spam filter refusing a message's content
//! says nothing about the parent's address. [`TABLE`] is the one place
//! this is decided, row by row from Mailjet's documented
//! `error_related_to`/`error` pairs; `[[suppression.mailjet_rule]]` adds or
//! overrides pairs without a release.

use crate::config::MailjetRule;

/// `error_related_to`/`error` pairs Mailjet documents (Event API, "Possible
/// values for errors"), in lowercase. `error: None` is the class's default
/// for errors the table does not know.
struct Row {
    related_to: &'static str,
    error: Option<&'static str>,
    /// For `bounce`: only a hard bounce suppresses (a soft one was a
    /// temporary refusal Mailjet gave up on). `blocked` has no such flag.
    suppress_bounce: bool,
    suppress_blocked: bool,
    /// The DSN's `Status:` (class forced to 5: the delivery failed).
    status: &'static str,
}

const fn row(
    related_to: &'static str,
    error: Option<&'static str>,
    suppress_bounce: bool,
    suppress_blocked: bool,
    status: &'static str,
) -> Row {
    Row {
        related_to,
        error,
        suppress_bounce,
        suppress_blocked,
        status,
    }
}

/// The mapping. Address-level classes (`recipient`, `domain`) suppress on a
/// hard bounce or a block; Mailjet's own `preblocked` (the address bounced
/// before, at Mailjet) suppresses too. Filters (`spam`), template errors
/// (`content`), Mailjet's own trouble (`system`) and its deduplication never
/// suppress: the next message to that address may well arrive.
const TABLE: &[Row] = &[
    row("recipient", Some("user unknown"), true, true, "5.1.1"),
    row("recipient", Some("mailbox inactive"), true, true, "5.2.1"),
    row("recipient", Some("quota exceeded"), true, true, "5.2.2"),
    row("recipient", None, true, true, "5.1.1"),
    row("domain", Some("invalid domain"), true, true, "5.1.2"),
    row("domain", Some("no mail host"), true, true, "5.4.4"),
    row("domain", Some("relay/access denied"), true, true, "5.7.1"),
    // Greylisting is temporary by Mailjet's own words, even if reported hard.
    row("domain", Some("greylisted"), false, false, "5.7.1"),
    row("domain", None, true, true, "5.1.2"),
    row("spam", Some("sender blocked"), false, false, "5.7.1"),
    row("spam", Some("content blocked"), false, false, "5.7.1"),
    row("spam", Some("policy issue"), false, false, "5.7.1"),
    row("spam", None, false, false, "5.7.1"),
    row(
        "content",
        Some("error in template language"),
        false,
        false,
        "5.6.0",
    ),
    row("content", None, false, false, "5.6.0"),
    row("system", Some("system issue"), false, false, "5.3.0"),
    row("system", Some("protocol issue"), false, false, "5.5.0"),
    row("system", Some("connection issue"), false, false, "5.4.0"),
    row("system", None, false, false, "5.3.0"),
    row("mailjet", Some("preblocked"), true, true, "5.1.1"),
    row(
        "mailjet",
        Some("duplicate in campaign"),
        false,
        false,
        "5.7.0",
    ),
    row("mailjet", None, false, false, "5.7.0"),
];

/// What one failure event means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Put the address on the suppression list.
    pub suppress: bool,
    /// The DSN's `Status:`.
    pub status: String,
    /// Which rule decided, for the log and `suppress list`:
    /// `mailjet blocked: recipient/user unknown`.
    pub rule: String,
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Classifies a `bounce` or `blocked` event (`None` for any other kind).
/// Configured rules come first, the one naming the `error` before the one
/// for the whole class; then [`TABLE`]. A class nobody knows is about the
/// message, not the address: suppressing a good address by guesswork costs
/// a parent their mail for a month.
pub fn classify(
    kind: &str,
    hard_bounce: bool,
    related_to: Option<&str>,
    error: Option<&str>,
    rules: &[MailjetRule],
) -> Option<Verdict> {
    let bounce = match kind {
        "bounce" => true,
        "blocked" => false,
        _ => return None,
    };
    let related_to = related_to.map(norm).unwrap_or_default();
    let error = error.map(norm).filter(|e| !e.is_empty());
    let found = TABLE
        .iter()
        .find(|r| r.related_to == related_to && r.error.is_some() && r.error == error.as_deref())
        .or_else(|| {
            TABLE
                .iter()
                .find(|r| r.related_to == related_to && r.error.is_none())
        });
    let status = found.map_or("5.0.0", |r| r.status).to_string();
    let rule = format!(
        "mailjet {kind}: {}/{}",
        if related_to.is_empty() {
            "-"
        } else {
            &related_to
        },
        error.as_deref().unwrap_or("-")
    );
    let configured = rules
        .iter()
        .filter(|r| norm(&r.event) == kind && norm(&r.error_related_to) == related_to)
        .filter(|r| r.hard_bounce.is_none_or(|h| !bounce || h == hard_bounce))
        .filter(|r| {
            r.error
                .as_deref()
                .map(norm)
                .is_none_or(|e| Some(e) == error)
        })
        .max_by_key(|r| (r.error.is_some(), r.hard_bounce.is_some()));
    let suppress = match configured {
        Some(r) => r.suppress,
        None => found.is_some_and(|r| {
            if bounce {
                hard_bounce && r.suppress_bounce
            } else {
                r.suppress_blocked
            }
        }),
    };
    Some(Verdict {
        suppress,
        status,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: &str, hard: bool, related: &str, error: &str) -> Verdict {
        classify(kind, hard, Some(related), Some(error), &[]).expect("a failure event")
    }

    /// Mailjet's documented pairs, both event kinds, with what they do.
    #[test]
    fn documented_pairs() {
        let cases = [
            // (event, hard, related_to, error, suppress, status)
            ("bounce", true, "recipient", "user unknown", true, "5.1.1"),
            (
                "bounce",
                true,
                "recipient",
                "mailbox inactive",
                true,
                "5.2.1",
            ),
            (
                "bounce",
                false,
                "recipient",
                "quota exceeded",
                false,
                "5.2.2",
            ),
            ("bounce", true, "domain", "invalid domain", true, "5.1.2"),
            ("bounce", true, "domain", "no mail host", true, "5.4.4"),
            (
                "bounce",
                true,
                "domain",
                "relay/access denied",
                true,
                "5.7.1",
            ),
            ("bounce", false, "domain", "greylisted", false, "5.7.1"),
            ("bounce", true, "domain", "greylisted", false, "5.7.1"),
            ("bounce", true, "spam", "sender blocked", false, "5.7.1"),
            ("bounce", true, "spam", "content blocked", false, "5.7.1"),
            ("bounce", true, "spam", "policy issue", false, "5.7.1"),
            ("bounce", true, "system", "system issue", false, "5.3.0"),
            ("bounce", true, "system", "protocol issue", false, "5.5.0"),
            ("bounce", true, "system", "connection issue", false, "5.4.0"),
            ("blocked", false, "recipient", "user unknown", true, "5.1.1"),
            ("blocked", false, "domain", "invalid domain", true, "5.1.2"),
            ("blocked", false, "mailjet", "preblocked", true, "5.1.1"),
            (
                "blocked",
                false,
                "mailjet",
                "duplicate in campaign",
                false,
                "5.7.0",
            ),
            ("blocked", false, "spam", "content blocked", false, "5.7.1"),
            (
                "blocked",
                false,
                "content",
                "error in template language",
                false,
                "5.6.0",
            ),
            ("blocked", false, "system", "system issue", false, "5.3.0"),
        ];
        for (kind, hard, related, error, suppress, status) in cases {
            let v = verdict(kind, hard, related, error);
            assert_eq!(v.suppress, suppress, "{kind} {related}/{error}");
            assert_eq!(v.status, status, "{kind} {related}/{error}");
        }
    }

    #[test]
    fn soft_bounces_never_suppress_and_unknown_classes_are_about_the_message() {
        assert!(!verdict("bounce", false, "recipient", "user unknown").suppress);
        let v = verdict("blocked", false, "Recipient", "  User Unknown ");
        assert!(v.suppress, "case and blanks do not matter");
        assert_eq!(v.rule, "mailjet blocked: recipient/user unknown");
        let odd = verdict("blocked", false, "galaxy", "far away");
        assert!(!odd.suppress);
        assert_eq!(odd.status, "5.0.0");
        let bare = classify("bounce", true, None, None, &[]).expect("bounce");
        assert!(!bare.suppress);
        assert_eq!(bare.rule, "mailjet bounce: -/-");
        assert_eq!(classify("sent", false, None, None, &[]), None);
        assert_eq!(classify("spam", false, None, None, &[]), None);
    }

    #[test]
    fn configured_rules_override_the_table() {
        let rule = |event: &str, related: &str, error: Option<&str>, suppress| MailjetRule {
            event: event.into(),
            error_related_to: related.into(),
            error: error.map(Into::into),
            hard_bounce: None,
            suppress,
        };
        let rules = [
            rule("blocked", "mailjet", None, false),
            rule("blocked", "spam", Some("sender blocked"), true),
            rule("blocked", "mailjet", Some("duplicate in campaign"), true),
        ];
        let v = |error: &str, related: &str| {
            classify("blocked", false, Some(related), Some(error), &rules).expect("blocked")
        };
        assert!(!v("preblocked", "mailjet").suppress, "class-wide override");
        assert!(
            v("duplicate in campaign", "mailjet").suppress,
            "the rule naming the error wins over the class"
        );
        assert!(v("sender blocked", "spam").suppress);
        assert!(
            !v("content blocked", "spam").suppress,
            "other errors keep the table"
        );
        assert_eq!(v("preblocked", "mailjet").status, "5.1.1", "status stays");
        let soft = MailjetRule {
            hard_bounce: Some(false),
            ..rule("bounce", "recipient", Some("quota exceeded"), true)
        };
        let rules = [soft];
        assert!(
            classify(
                "bounce",
                false,
                Some("recipient"),
                Some("quota exceeded"),
                &rules
            )
            .expect("bounce")
            .suppress
        );
        assert!(
            !classify(
                "bounce",
                false,
                Some("recipient"),
                Some("user unknown"),
                &rules
            )
            .expect("bounce")
            .suppress
        );
    }
}
