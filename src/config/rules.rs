//! `[[rule]]` and `[categories]`: the syntax of the relay rules (SPEC §8),
//! i.e. the types the entries parse into and, in [`check`], what is refused
//! at load. What a rule does to a message (matching, the settings in force,
//! the verdict) is `crate::policy::rules`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{AttachmentMode, LinkPassword, PiiPolicy, SignedPolicy, parse_duration, parse_size};

mod check;

pub use check::check;

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
        Raw::Text(s) => parse_size(&s).map(Some).map_err(de::Error::custom),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw = String::deserialize(d)?;
    parse_duration(&raw).map(Some).map_err(de::Error::custom)
}

fn opt_reply<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RejectReply>, D::Error> {
    let raw = String::deserialize(d)?;
    RejectReply::parse(&raw)
        .map(Some)
        .map_err(de::Error::custom)
}

impl Match {
    /// No conditions: the rule matches every message.
    pub fn is_empty(&self) -> bool {
        self.account.is_none()
            && self.header.is_empty()
            && self.sender.is_none()
            && self.recipient_domain.is_none()
            && self.min_size.is_none()
            && self.max_size.is_none()
            && self.has_attachments.is_none()
    }
}
