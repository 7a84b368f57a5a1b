//! `[privacy]` and `[retention]` (SPEC §7): what the relayed message keeps
//! of its origin, what the gateway looks for in it, and how long records
//! stay.

use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceivedHeader {
    Full,
    #[default]
    Minimal,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// `full` names the client's IP; `minimal` only the gateway; `none` adds none.
    pub received_header: ReceivedHeader,
    /// Header fields removed before relay. `X-Foo-*` matches a prefix. The
    /// gateway's own control headers (`X-Schleuse-*`, `X-VIA-*`) are always
    /// removed, listed here or not.
    pub remove_headers: Vec<String>,
    /// Mailjet open/click tracking. Off: `X-Mailjet-TrackOpen: 0` and
    /// `X-Mailjet-TrackClick: 0` are added, since tracking would hand the
    /// recipients' IPs and user agents to the relay.
    pub tracking: bool,
    /// Keep client-supplied `X-Mailjet-*` / `X-MJ-*` headers (dropped by
    /// default: they steer the relay, which is the gateway's job).
    pub allow_mailjet_headers: bool,
    /// How the delivery log keeps recipients once a message is final.
    pub log_recipients: LogRecipients,
    /// What a message whose text looks like it carries personal data
    /// (IBAN, phone, date of birth, address, tax id, health terms) gets.
    pub pii: PiiPolicy,
    /// Where the staff member's own signature starts (not scanned).
    pub signature_marker: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiPolicy {
    Off,
    /// Relay; note the categories in the log.
    Tag,
    /// Relay; tell the staff member which categories were found (never the
    /// data itself).
    Warn,
    /// Accept but hold for an admin (`schleuse queue release`).
    Hold,
    /// Refuse with `550 5.7.1`, naming the categories.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRecipients {
    /// A keyed hash (HMAC, key in `data_dir/log.key`); `gdpr export` can
    /// still find an address, the database alone does not list them.
    Pseudonymised,
    Clear,
}

/// How long records are kept (SPEC §7); a background purge enforces it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Delivery-log entries of final messages (times, account, sizes,
    /// per-recipient status and replies, documents).
    #[serde(deserialize_with = "duration")]
    pub delivery_log: Duration,
    /// The download log, and the tombstones that make expired or revoked
    /// links answer `410` rather than `404`.
    #[serde(deserialize_with = "duration")]
    pub downloads: Duration,
    /// How often the purge runs.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            delivery_log: Duration::from_secs(90 * 86_400),
            downloads: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(3600),
        }
    }
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            received_header: ReceivedHeader::Minimal,
            remove_headers: [
                "X-Originating-IP",
                "X-PHP-Originating-Script",
                "X-Mailer",
                "User-Agent",
            ]
            .map(String::from)
            .to_vec(),
            tracking: false,
            allow_mailjet_headers: false,
            log_recipients: LogRecipients::Pseudonymised,
            pii: PiiPolicy::Warn,
            signature_marker: "-- ".into(),
        }
    }
}

impl Privacy {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        for (i, h) in self.remove_headers.iter().enumerate() {
            let name = h.strip_suffix('*').unwrap_or(h);
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err((
                    format!("privacy.remove_headers[{i}]"),
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        Ok(())
    }
}

impl Retention {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.interval.is_zero() {
            return Err(("retention.interval", "must be longer than zero".into()));
        }
        Ok(())
    }
}
