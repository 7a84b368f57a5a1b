//! Relay rules (SPEC §8): ordered `[[rule]]` entries; the first whose
//! conditions all hold decides, and what it leaves unset comes from the
//! global sections (`[attachments]`, `[privacy]`, `[sender]`, `[limits]`).
//!
//! Conditions (`match.*`, all given ones must hold; no `match` = always):
//! - `account`: the submitting account's name, one or a list.
//! - `header."Name"`: a field the app sets (`X-VIA-Category`), one value or
//!   a list, compared case-insensitively with the field's trimmed value;
//!   `"*"` means "present, any value". Any occurrence of the field counts.
//! - `sender`: the envelope sender or any `From:` address, as the client
//!   sent them, against `*`, `*@domain`, `*@*.domain` or an address.
//! - `recipient_domain`: **every** recipient's domain must be listed
//!   (`domain`, `*.domain` for its subdomains, `*`), so a rule meant for
//!   internal mail is not triggered by mixing in one internal address.
//! - `min_size`, `max_size`: the message as received, inclusive.
//! - `has_attachments`: whether the documents stage would find anything to
//!   take out (one extra MIME scan per message, only when a rule asks).
//!
//! Per-category switches (`[categories]`) come before the rules: mail whose
//! category header names a `disabled` category is refused with
//! `550 5.7.1 Mail of category "X" is switched off`; a `paused` one is
//! accepted and held.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mail_parser::{HeaderName, HeaderValue, MessageParser};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::accounts::{Account, sender_matches};
use crate::config::{
    AttachmentMode, Attachments, Config, LinkPassword, PiiPolicy, Privacy, SignedPolicy,
};
use crate::session::reply::Reply;

/// A string or a list of strings (`account = "via"`, `account = ["a", "b"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<List, E> {
                Ok(List(vec![s.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(List(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

/// `match`: every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub account: Option<List>,
    /// Field name → accepted values.
    #[serde(default)]
    pub header: BTreeMap<String, List>,
    #[serde(default)]
    pub sender: Option<List>,
    #[serde(default)]
    pub recipient_domain: Option<List>,
    #[serde(default, deserialize_with = "opt_size")]
    pub min_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_size: Option<u64>,
    #[serde(default)]
    pub has_attachments: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    /// Accept and queue, but deliver only after `schleuse queue release`.
    Hold,
    /// Refuse at the end of DATA with `reject_reply`.
    Reject,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "accept",
            Action::Hold => "hold",
            Action::Reject => "reject",
        })
    }
}

/// `reject_reply = "550 5.7.1 Login PINs go to one recipient only"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectReply {
    pub code: u16,
    pub esc: [u8; 3],
    pub text: String,
}

impl RejectReply {
    pub fn parse(raw: &str) -> Result<RejectReply, String> {
        let bad = |why: &str| {
            format!(
                "{raw:?}: {why}; write it like \"550 5.7.1 Login PINs go to one recipient only\""
            )
        };
        let mut words = raw.trim().splitn(3, ' ');
        let code: u16 = words
            .next()
            .filter(|c| c.len() == 3)
            .and_then(|c| c.parse().ok())
            .filter(|c| (400..600).contains(c))
            .ok_or_else(|| bad("the code must be 4xx (temporary) or 5xx (permanent)"))?;
        let esc_text = words
            .next()
            .ok_or_else(|| bad("an enhanced status code like 5.7.1 is missing"))?;
        let parts: Vec<Option<u8>> = esc_text.split('.').map(|p| p.parse().ok()).collect();
        let esc = match parts.as_slice() {
            [Some(a), Some(b), Some(c)] if u16::from(*a) == code / 100 => [*a, *b, *c],
            _ => {
                return Err(bad(&format!(
                    "the enhanced status code must be {}.x.y, matching the reply code",
                    code / 100
                )));
            }
        };
        let text = words.next().unwrap_or("").trim().to_owned();
        if text.is_empty() {
            return Err(bad("the reply needs a text"));
        }
        if !text.bytes().all(|b| (b' '..=b'~').contains(&b)) || text.len() > 400 {
            return Err(bad(
                "the text must be printable ASCII (SMTP replies are ASCII), at most 400 characters",
            ));
        }
        Ok(RejectReply { code, esc, text })
    }

    pub fn reply(&self) -> Reply {
        Reply::owned(self.code, self.esc, self.text.clone())
    }
}

impl fmt::Display for RejectReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.esc;
        write!(f, "{} {a}.{b}.{c} {}", self.code, self.text)
    }
}

/// One `[[rule]]`. Every setting is optional: unset means the global one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub when: Option<Match>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default, deserialize_with = "opt_reply")]
    pub reject_reply: Option<RejectReply>,
    #[serde(default)]
    pub attachments: Option<AttachmentMode>,
    #[serde(default)]
    pub link_password: Option<LinkPassword>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_expiry: Option<Duration>,
    #[serde(default)]
    pub signed: Option<SignedPolicy>,
    #[serde(default)]
    pub pii: Option<PiiPolicy>,
    #[serde(default)]
    pub max_recipients: Option<usize>,
    #[serde(default)]
    pub copy_to_sender: Option<bool>,
    #[serde(default)]
    pub tracking: Option<bool>,
    /// Set on relayed mail (a field of that name from the client goes).
    #[serde(default)]
    pub add_headers: BTreeMap<String, String>,
    /// Removed before relay, besides `[privacy] remove_headers`.
    #[serde(default)]
    pub remove_headers: Vec<String>,
}

/// `[categories]`: the "can be deactivated" switches per mail category.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Categories {
    /// The field that names a message's category.
    pub header: String,
    /// Refused with `550 5.7.1 Mail of category "X" is switched off`.
    pub disabled: Vec<String>,
    /// Accepted and held until released.
    pub paused: Vec<String>,
}

impl Default for Categories {
    fn default() -> Self {
        Categories {
            header: "X-VIA-Category".into(),
            disabled: Vec::new(),
            paused: Vec::new(),
        }
    }
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(Some(n)),
        Raw::Text(s) => crate::config::parse_size(&s)
            .map(Some)
            .map_err(de::Error::custom),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw = String::deserialize(d)?;
    crate::config::parse_duration(&raw)
        .map(Some)
        .map_err(de::Error::custom)
}

fn opt_reply<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RejectReply>, D::Error> {
    let raw = String::deserialize(d)?;
    RejectReply::parse(&raw)
        .map(Some)
        .map_err(de::Error::custom)
}

// ---------------------------------------------------------------------------
// Validation

/// Fields a rule may neither add nor remove: the message's structure, what
/// DKIM signs, and what the gateway itself sets (use `tracking` for the
/// Mailjet tracking fields).
const PROTECTED: [&str; 17] = [
    "From",
    "Sender",
    "To",
    "Cc",
    "Bcc",
    "Reply-To",
    "Date",
    "Message-ID",
    "Subject",
    "MIME-Version",
    "Content-*",
    "Received",
    "Return-Path",
    "DKIM-Signature",
    "X-MJ-CustomID",
    "X-Mailjet-TrackOpen",
    "X-Mailjet-TrackClick",
];

mod check;
mod evaluate;
#[cfg(test)]
mod tests;

pub use check::check;
pub use evaluate::*;
