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

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Does `name` (or, for `Prefix-*`, any name with that prefix) hit a
/// protected field?
fn protected(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    PROTECTED.iter().copied().find(|p| {
        let p = p.to_ascii_lowercase();
        match (p.strip_suffix('*'), lower.strip_suffix('*')) {
            (Some(pp), _) => lower.starts_with(pp),
            (None, Some(np)) => p.starts_with(np),
            (None, None) => p == lower,
        }
    })
}

fn valid_domain(d: &str) -> bool {
    let literal = d.len() > 2 && d.starts_with('[') && d.ends_with(']');
    literal
        || (!d.is_empty()
            && !d.starts_with(['.', '-'])
            && !d.ends_with('.')
            && !d.contains("..")
            && d.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_')))
}

/// `*`, `domain` or `*.domain`.
fn check_domain_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let d = p.strip_prefix("*.").unwrap_or(p);
    if d.contains('*') {
        return Err(format!(
            "{p:?}: a wildcard may only be \"*\" or a leading \"*.\" (\"*.schule.example\")"
        ));
    }
    if !valid_domain(d) {
        return Err(format!("{p:?} is not a domain like \"schule.example\""));
    }
    Ok(())
}

/// `*`, `*@domain`, `*@*.domain` or `local@domain`.
fn check_sender_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let Some((local, domain)) = p.rsplit_once('@') else {
        return Err(format!(
            "{p:?} is not an address or a pattern like \"*@landkreis.example\""
        ));
    };
    if local.is_empty() || (local.contains('*') && local != "*") || local.contains(' ') {
        return Err(format!(
            "{p:?}: the part before @ must be an address's or \"*\""
        ));
    }
    check_domain_pattern(domain).map_err(|e| format!("{p:?}: {e}"))?;
    if domain == "*" {
        return Err(format!("{p:?}: write \"*\" for any sender"));
    }
    Ok(())
}

/// Checks the rules and switches; the error is (key, reason).
pub fn check(
    rules: &[Rule],
    categories: &Categories,
    global: &Attachments,
) -> Result<(), (String, String)> {
    if !is_field_name(&categories.header) {
        return Err((
            "categories.header".into(),
            format!("{:?} is not a header name", categories.header),
        ));
    }
    for (list, key) in [
        (&categories.disabled, "disabled"),
        (&categories.paused, "paused"),
    ] {
        for (i, c) in list.iter().enumerate() {
            if c.trim().is_empty() || c.contains(['\r', '\n']) {
                return Err((
                    format!("categories.{key}[{i}]"),
                    "must be a category name".into(),
                ));
            }
        }
    }
    if let Some(c) = categories.disabled.iter().find(|c| {
        categories
            .paused
            .iter()
            .any(|p| p.trim().eq_ignore_ascii_case(c.trim()))
    }) {
        return Err((
            "categories.paused".into(),
            format!("{c:?} is also disabled"),
        ));
    }
    let mut catch_all: Option<(usize, &str)> = None;
    for (i, rule) in rules.iter().enumerate() {
        let key = |k: &str| format!("rule[{i}].{k}");
        if let Some((j, name)) = catch_all {
            return Err((
                format!("rule[{i}]"),
                format!(
                    "can never match: rule[{j}] {name:?} before it has no conditions and matches everything"
                ),
            ));
        }
        let name = rule.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err((
                key("name"),
                format!(
                    "{:?}: letters, digits, '-', '_' and '.' only (at most 64)",
                    rule.name
                ),
            ));
        }
        if rules[..i]
            .iter()
            .any(|r| r.name.trim().eq_ignore_ascii_case(name))
        {
            return Err((key("name"), format!("{name:?} is used by an earlier rule")));
        }
        if let Some(m) = &rule.when {
            check_match(m).map_err(|(k, r)| (key(&format!("match.{k}")), r))?;
        }
        if rule.when.as_ref().is_none_or(Match::is_empty) {
            catch_all = Some((i, name));
        }
        if rule.reject_reply.is_some() && rule.action != Some(Action::Reject) {
            return Err((
                key("reject_reply"),
                "is only used with action = \"reject\"".into(),
            ));
        }
        if rule.max_recipients == Some(0) {
            return Err((key("max_recipients"), "must be at least 1".into()));
        }
        if rule.max_expiry.is_some_and(|d| d.is_zero()) {
            return Err((key("max_expiry"), "must be longer than zero".into()));
        }
        if rule.attachments == Some(AttachmentMode::Link) && global.mode != AttachmentMode::Link {
            return Err((
                key("attachments"),
                "\"link\" needs the link service, which runs only with [attachments] mode = \"link\"".into(),
            ));
        }
        for (n, v) in &rule.add_headers {
            let k = key(&format!("add_headers.{n}"));
            if !is_field_name(n) || n.contains('*') {
                return Err((k, format!("{n:?} is not a header name")));
            }
            if let Some(p) = protected(n) {
                return Err((
                    k,
                    format!("{p} is set by the message or the gateway, not by a rule"),
                ));
            }
            if v.trim().is_empty()
                || v.len() > 900
                || !v.bytes().all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
            {
                return Err((
                    k,
                    "the value must be one line of printable ASCII (no CR/LF; RFC 2047-encode other text), at most 900 characters".into(),
                ));
            }
        }
        for (j, h) in rule.remove_headers.iter().enumerate() {
            let k = key(&format!("remove_headers[{j}]"));
            let bare = h.strip_suffix('*').unwrap_or(h);
            if !is_field_name(bare) || bare.contains('*') {
                return Err((
                    k,
                    format!("{h:?} is not a header name (a trailing * matches a prefix)"),
                ));
            }
            if let Some(p) = protected(h) {
                return Err((k, format!("{p} cannot be removed by a rule")));
            }
        }
    }
    Ok(())
}

impl Match {
    fn is_empty(&self) -> bool {
        self.account.is_none()
            && self.header.is_empty()
            && self.sender.is_none()
            && self.recipient_domain.is_none()
            && self.min_size.is_none()
            && self.max_size.is_none()
            && self.has_attachments.is_none()
    }
}

fn check_match(m: &Match) -> Result<(), (String, String)> {
    let nonempty = |list: &List, key: &str| -> Result<(), (String, String)> {
        if list.0.is_empty() {
            return Err((
                key.into(),
                "an empty list matches nothing; leave the condition out instead".into(),
            ));
        }
        Ok(())
    };
    if let Some(a) = &m.account {
        nonempty(a, "account")?;
        if let Some(i) = a.0.iter().position(|n| n.trim().is_empty()) {
            return Err((format!("account[{i}]"), "must be an account name".into()));
        }
    }
    for (name, values) in &m.header {
        let key = format!("header.{name}");
        if !is_field_name(name) || name.contains('*') {
            return Err((key, format!("{name:?} is not a header name")));
        }
        nonempty(values, &key)?;
        for v in &values.0 {
            if v.trim().is_empty()
                || v.contains(['\r', '\n'])
                || (v.contains('*') && v.trim() != "*")
            {
                return Err((key, format!("{v:?}: a value, or \"*\" alone for any value")));
            }
        }
    }
    if let Some(s) = &m.sender {
        nonempty(s, "sender")?;
        for (i, p) in s.0.iter().enumerate() {
            check_sender_pattern(p.trim()).map_err(|e| (format!("sender[{i}]"), e))?;
        }
    }
    if let Some(d) = &m.recipient_domain {
        nonempty(d, "recipient_domain")?;
        for (i, p) in d.0.iter().enumerate() {
            check_domain_pattern(p.trim()).map_err(|e| (format!("recipient_domain[{i}]"), e))?;
        }
    }
    if let (Some(min), Some(max)) = (m.min_size, m.max_size)
        && min > max
    {
        return Err((
            "max_size".into(),
            "must not be smaller than min_size".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Evaluation

/// What the rules look at in one message.
pub struct Facts<'a> {
    pub account: &'a Account,
    /// The envelope sender (`MAIL FROM`).
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The message as received (header and body).
    pub message: &'a [u8],
    /// Whether the documents stage would take anything out; `None` when
    /// not known ([`needs_attachment_scan`] says when it must be).
    pub has_attachments: Option<bool>,
}

/// Whether any rule (or switch) looks at `has_attachments`, which costs
/// one MIME scan of the message.
pub fn needs_attachment_scan(rules: &[Rule]) -> bool {
    rules
        .iter()
        .any(|r| r.when.as_ref().is_some_and(|m| m.has_attachments.is_some()))
}

/// Whether the documents stage would take anything out of `message` (for
/// `match.has_attachments`). A message that cannot be scanned counts as
/// having attachments: the documents stage would refuse it anyway.
pub fn scan_has_attachments(message: &[u8], cfg: &Attachments) -> bool {
    use crate::transform::attachments::{ExtractOptions, Scan, scan};
    let opts = ExtractOptions {
        inline_image_max: usize::try_from(cfg.inline_image_max).unwrap_or(usize::MAX),
    };
    match scan(message, &opts) {
        Ok(Scan::Clean) => false,
        Ok(Scan::Sealed { has_attachments }) => has_attachments,
        Ok(Scan::Extract(_)) | Err(_) => true,
    }
}

/// The settings in force for one message: the matching rule's, else the
/// global ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub action: Action,
    pub reject_reply: Option<RejectReply>,
    pub attachments: AttachmentMode,
    pub link_password: LinkPassword,
    pub max_expiry: Duration,
    pub signed: SignedPolicy,
    pub pii: PiiPolicy,
    pub max_recipients: usize,
    /// Rule, else the account's `copy_to_sender`, else `[sender]`'s.
    pub copy_to_sender: bool,
    pub tracking: bool,
    pub add_headers: Vec<(String, String)>,
    /// The rule's, on top of `[privacy] remove_headers`.
    pub remove_headers: Vec<String>,
}

impl Effective {
    fn new(config: &Config, account: &Account, rule: Option<&Rule>) -> Effective {
        let a = &config.attachments;
        Effective {
            action: rule.and_then(|r| r.action).unwrap_or(Action::Accept),
            reject_reply: rule.and_then(|r| r.reject_reply.clone()),
            attachments: rule.and_then(|r| r.attachments).unwrap_or(a.mode),
            link_password: rule.and_then(|r| r.link_password).unwrap_or(a.password),
            max_expiry: rule.and_then(|r| r.max_expiry).unwrap_or(a.max_expiry),
            signed: rule.and_then(|r| r.signed).unwrap_or(a.signed),
            pii: rule.and_then(|r| r.pii).unwrap_or(config.privacy.pii),
            max_recipients: rule
                .and_then(|r| r.max_recipients)
                .unwrap_or(config.limits.max_recipients_per_message),
            copy_to_sender: rule
                .and_then(|r| r.copy_to_sender)
                .or(account.copy_to_sender)
                .unwrap_or(config.sender.copy_to_sender),
            tracking: rule
                .and_then(|r| r.tracking)
                .unwrap_or(config.privacy.tracking),
            add_headers: rule
                .map(|r| {
                    r.add_headers
                        .iter()
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            remove_headers: rule.map(|r| r.remove_headers.clone()).unwrap_or_default(),
        }
    }

    /// `[attachments]` with this message's mode, password policy, maximum
    /// expiry (the default expiry shortened to it) and signed policy.
    pub fn attachments<'a>(&self, global: &'a Attachments) -> Cow<'a, Attachments> {
        let expiry = global.expiry.min(self.max_expiry);
        if self.attachments == global.mode
            && self.link_password == global.password
            && self.max_expiry == global.max_expiry
            && self.signed == global.signed
            && expiry == global.expiry
        {
            return Cow::Borrowed(global);
        }
        let mut a = global.clone();
        a.mode = self.attachments;
        a.password = self.link_password;
        a.max_expiry = self.max_expiry;
        a.expiry = expiry;
        a.signed = self.signed;
        Cow::Owned(a)
    }

    /// `[privacy]` with this message's PII policy, tracking and removals
    /// (a field in `add_headers` is removed from the client's header first).
    pub fn privacy<'a>(&self, global: &'a Privacy) -> Cow<'a, Privacy> {
        if self.pii == global.pii && !self.edits_headers(global) {
            return Cow::Borrowed(global);
        }
        let mut p = global.clone();
        p.pii = self.pii;
        p.tracking = self.tracking;
        p.remove_headers.extend(self.remove_headers.iter().cloned());
        p.remove_headers
            .extend(self.add_headers.iter().map(|(n, _)| n.clone()));
        Cow::Owned(p)
    }

    /// Whether the header transform needs settings other than `global`'s.
    pub fn edits_headers(&self, global: &Privacy) -> bool {
        self.tracking != global.tracking
            || !self.remove_headers.is_empty()
            || !self.add_headers.is_empty()
    }

    /// Puts `add_headers` on top of the (transformed) message.
    pub fn prepend_headers(&self, message: &mut Vec<u8>) {
        if self.add_headers.is_empty() {
            return;
        }
        let mut top = Vec::new();
        for (n, v) in &self.add_headers {
            top.extend_from_slice(n.as_bytes());
            top.extend_from_slice(b": ");
            top.extend_from_slice(v.trim().as_bytes());
            top.extend_from_slice(b"\r\n");
        }
        message.splice(0..0, top);
    }

    /// One `key  value` line per setting (for `rules test`).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let lower = |s: String| s.to_ascii_lowercase();
        let mut out = vec![
            ("action", self.action.to_string()),
            ("attachments", lower(format!("{:?}", self.attachments))),
            ("link_password", lower(format!("{:?}", self.link_password))),
            (
                "max_expiry",
                humantime::format_duration(self.max_expiry).to_string(),
            ),
            ("signed", lower(format!("{:?}", self.signed))),
            ("pii", lower(format!("{:?}", self.pii))),
            ("max_recipients", self.max_recipients.to_string()),
            ("copy_to_sender", self.copy_to_sender.to_string()),
            ("tracking", self.tracking.to_string()),
        ];
        if let Some(r) = &self.reject_reply {
            out.insert(1, ("reject_reply", r.to_string()));
        }
        let added: Vec<String> = self
            .add_headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        out.push((
            "add_headers",
            if added.is_empty() {
                "-".into()
            } else {
                added.join("; ")
            },
        ));
        out.push((
            "remove_headers",
            if self.remove_headers.is_empty() {
                "- (only [privacy] remove_headers)".into()
            } else {
                format!(
                    "{} (and [privacy] remove_headers)",
                    self.remove_headers.join(", ")
                )
            },
        ));
        out
    }
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accepted and held; why.
    Hold(String),
    Refuse(Reply),
}

/// The outcome of the rules for one message.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The matching rule's name; `None`: no rule matched, the globals apply.
    pub rule: Option<String>,
    /// Why, one line each: every rule tried (with its first failing
    /// condition, or what matched), switches that applied.
    pub reasons: Vec<String>,
    pub effective: Effective,
    pub verdict: Verdict,
}

/// The message's header fields, as read once for all rules.
struct Header {
    /// (name, unfolded trimmed raw value)
    fields: Vec<(String, String)>,
    from: Vec<String>,
}

impl Header {
    fn read(message: &[u8]) -> Header {
        let mut h = Header {
            fields: Vec::new(),
            from: Vec::new(),
        };
        let Some(parsed) = MessageParser::new().parse_headers(message) else {
            return h;
        };
        for f in parsed.headers() {
            let (s, e) = (f.offset_start as usize, f.offset_end as usize);
            let raw = message.get(s..e).unwrap_or_default();
            let value: String = String::from_utf8_lossy(raw)
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if f.name == HeaderName::From
                && let HeaderValue::Address(a) = &f.value
            {
                h.from
                    .extend(a.iter().filter_map(|x| x.address()).map(str::to_owned));
            }
            h.fields.push((f.name.as_str().to_owned(), value));
        }
        h
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn domain_matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            domain.len() > parent.len() + 1
                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
        }
        None => domain.eq_ignore_ascii_case(pattern),
    }
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `m` holds: `Ok(what matched)`, or `Err(the first condition
/// that does not)`.
fn test(m: &Match, facts: &Facts<'_>, header: &Header) -> Result<Vec<String>, String> {
    let mut why = Vec::new();
    if let Some(accounts) = &m.account {
        let name = &facts.account.name;
        if !accounts.0.iter().any(|a| a.trim() == name) {
            return Err(format!("account {name:?} is not {accounts}"));
        }
        why.push(format!("account {name:?}"));
    }
    for (field, wanted) in &m.header {
        let values: Vec<&str> = header.values(field).collect();
        let hit = values.iter().find(|v| {
            wanted
                .0
                .iter()
                .any(|w| w.trim() == "*" || w.trim().eq_ignore_ascii_case(v))
        });
        match hit {
            Some(v) => why.push(format!("{field}: {v:?}")),
            None if values.is_empty() => {
                return Err(format!("no {field} header (wanted {wanted})"));
            }
            None => {
                return Err(format!(
                    "{field} is {}, not {wanted}",
                    values
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    if let Some(patterns) = &m.sender {
        let candidates =
            std::iter::once(facts.sender).chain(header.from.iter().map(String::as_str));
        let mut hit = None;
        for c in candidates {
            if let Some(p) = patterns.0.iter().find(|p| sender_matches(p, c)) {
                hit = Some((c, p));
                break;
            }
        }
        match hit {
            Some((c, p)) => why.push(format!("sender {c:?} matches {p:?}")),
            None => {
                return Err(format!(
                    "neither the envelope sender {:?} nor From: {} matches {patterns}",
                    facts.sender,
                    if header.from.is_empty() {
                        "(none)".into()
                    } else {
                        quoted(&header.from)
                    }
                ));
            }
        }
    }
    if let Some(domains) = &m.recipient_domain {
        for r in facts.recipients {
            let domain = r.rsplit_once('@').map_or("", |(_, d)| d);
            if !domains.0.iter().any(|p| domain_matches(p, domain)) {
                return Err(format!("recipient domain {domain:?} is not in {domains}"));
            }
        }
        why.push(format!("every recipient domain is in {domains}"));
    }
    let size = facts.message.len() as u64;
    if let Some(min) = m.min_size {
        if size < min {
            return Err(format!("size {size} bytes is below min_size {min}"));
        }
        why.push(format!("size {size} >= min_size {min}"));
    }
    if let Some(max) = m.max_size {
        if size > max {
            return Err(format!("size {size} bytes is above max_size {max}"));
        }
        why.push(format!("size {size} <= max_size {max}"));
    }
    if let Some(wanted) = m.has_attachments {
        // Unknown only if the caller skipped the scan; then the condition
        // cannot be shown to hold.
        let Some(has) = facts.has_attachments else {
            return Err("whether it has attachments is not known".into());
        };
        if has != wanted {
            return Err(if has {
                "the message has attachments".into()
            } else {
                "the message has no attachments".into()
            });
        }
        why.push(if has {
            "it has attachments".into()
        } else {
            "it has no attachments".into()
        });
    }
    Ok(why)
}

/// Runs the category switches and the rules over one message.
pub fn evaluate(config: &Config, facts: &Facts<'_>) -> Decision {
    let header = Header::read(facts.message);
    let mut reasons = Vec::new();
    let mut matched: Option<&Rule> = None;
    for (i, rule) in config.rules.iter().enumerate() {
        let outcome = match &rule.when {
            None => Ok(vec!["no conditions".to_owned()]),
            Some(m) if m.is_empty() => Ok(vec!["no conditions".to_owned()]),
            Some(m) => test(m, facts, &header),
        };
        match outcome {
            Ok(why) => {
                reasons.push(format!(
                    "rule[{i}] {:?} matches: {}",
                    rule.name,
                    why.join("; ")
                ));
                matched = Some(rule);
                break;
            }
            Err(why) => reasons.push(format!("rule[{i}] {:?} does not match: {why}", rule.name)),
        }
    }
    if matched.is_none() {
        reasons.push(if config.rules.is_empty() {
            "no rules configured: the global settings apply".into()
        } else {
            "no rule matches: the global settings apply".into()
        });
    }
    let effective = Effective::new(config, facts.account, matched);
    let rule_name = matched.map(|r| r.name.clone());
    let label = rule_name.as_deref().unwrap_or("(none)");

    let cats = &config.categories;
    let category = header.values(&cats.header).next().map(str::to_owned);
    let listed = |list: &[String]| {
        category
            .as_deref()
            .is_some_and(|c| list.iter().any(|x| x.trim().eq_ignore_ascii_case(c)))
    };
    let mut verdict = Verdict::Accept;
    if let Some(c) = &category {
        if listed(&cats.disabled) {
            reasons.push(format!(
                "category {c:?} is switched off ([categories] disabled)"
            ));
            verdict = Verdict::Refuse(Reply::owned(
                550,
                [5, 7, 1],
                format!("Mail of category \"{c}\" is switched off"),
            ));
        } else if listed(&cats.paused) {
            reasons.push(format!(
                "category {c:?} is paused ([categories] paused): held"
            ));
            verdict = Verdict::Hold(format!("category {c} paused"));
        }
    }
    if !matches!(verdict, Verdict::Refuse(_)) {
        match effective.action {
            Action::Reject => {
                let reply = effective.reject_reply.as_ref().map_or_else(
                    || Reply::owned(550, [5, 7, 1], format!("Refused by relay rule {label}")),
                    RejectReply::reply,
                );
                reasons.push(format!("rule {label:?}: action = \"reject\""));
                verdict = Verdict::Refuse(reply);
            }
            _ if facts.recipients.len() > effective.max_recipients => {
                reasons.push(format!(
                    "{} recipients, rule {label:?} allows {}",
                    facts.recipients.len(),
                    effective.max_recipients
                ));
                verdict = Verdict::Refuse(Reply::owned(
                    550,
                    [5, 5, 3],
                    format!(
                        "Too many recipients for rule {label} (max {})",
                        effective.max_recipients
                    ),
                ));
            }
            Action::Hold if verdict == Verdict::Accept => {
                reasons.push(format!("rule {label:?}: action = \"hold\""));
                verdict = Verdict::Hold(format!("rule {label}"));
            }
            _ => {}
        }
    }
    Decision {
        rule: rule_name,
        reasons,
        effective,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn config(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path).map_err(|e| e.to_string())
    }

    const VIA: &str = r#"
[categories]
disabled = ["workflow"]
paused = ["school-notice"]

[[rule]]
name = "login-pin"
match.header."X-VIA-Category" = "login-pin"
attachments = "reject"
max_recipients = 1

[[rule]]
name = "internal"
match.recipient_domain = ["landkreis.example", "*.schule.example"]
tracking = true
add_headers = { "X-Internal" = "yes" }

[[rule]]
name = "manual"
match.header."x-via-category" = ["manual", "Handarbeit"]
match.account = ["app", "via"]
link_password = "required"
max_expiry = "7d"
pii = "warn"
copy_to_sender = true

[[rule]]
name = "big"
match.min_size = "1KB"
match.sender = "*@*.landkreis.example"
action = "hold"

[[rule]]
name = "pdf"
match.has_attachments = true
action = "reject"
reject_reply = "550 5.7.1 No documents from this app"

[[rule]]
name = "default"
"#;

    fn account(name: &str) -> Account {
        Account {
            name: name.into(),
            allowed_senders: vec!["*".into()],
            ..Account::default()
        }
    }

    fn decide(
        c: &Config,
        who: &str,
        sender: &str,
        rcpts: &[&str],
        msg: &str,
        att: bool,
    ) -> Decision {
        let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let acc = account(who);
        evaluate(
            c,
            &Facts {
                account: &acc,
                sender,
                recipients: &rcpts,
                message: msg.as_bytes(),
                has_attachments: Some(att),
            },
        )
    }

    fn msg(category: &str) -> String {
        format!(
            "From: Anna <anna@landkreis.example>\r\nX-VIA-Category:  {category}\r\nSubject: s\r\n\r\nhi\r\n"
        )
    }

    #[test]
    fn first_match_decides_and_says_why() {
        let c = config(VIA).expect("valid");
        let d = decide(
            &c,
            "app",
            "app@landkreis.example",
            &["p@example.org"],
            &msg("login-pin"),
            false,
        );
        assert_eq!(d.rule.as_deref(), Some("login-pin"));
        assert_eq!(d.effective.attachments, AttachmentMode::Reject);
        assert_eq!(d.effective.max_recipients, 1);
        assert_eq!(d.verdict, Verdict::Accept);
        assert!(
            d.reasons[0].contains("X-VIA-Category: \"login-pin\""),
            "{:?}",
            d.reasons
        );

        let d = decide(
            &c,
            "app",
            "a@landkreis.example",
            &["p@example.org", "q@example.org"],
            &msg("LOGIN-PIN"),
            false,
        );
        let Verdict::Refuse(r) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!((r.code, r.esc), (550, [5, 5, 3]));
        assert_eq!(r.text, "Too many recipients for rule login-pin (max 1)");

        let d = decide(
            &c,
            "via",
            "a@landkreis.example",
            &["p@example.org"],
            &msg("Handarbeit"),
            false,
        );
        assert_eq!(d.rule.as_deref(), Some("manual"));
        assert!(
            d.reasons[0].contains("is \"Handarbeit\", not [login-pin]"),
            "{:?}",
            d.reasons
        );
        assert!(
            d.reasons[1].contains("recipient domain \"example.org\" is not in"),
            "{:?}",
            d.reasons
        );
        let e = &d.effective;
        assert_eq!(
            (e.link_password, e.pii, e.copy_to_sender),
            (LinkPassword::Required, PiiPolicy::Warn, true)
        );
        assert_eq!(e.max_expiry, Duration::from_secs(7 * 86_400));
        let a = e.attachments(&c.attachments);
        assert_eq!(
            a.expiry,
            Duration::from_secs(7 * 86_400),
            "default expiry shortened to the maximum"
        );
        assert_eq!(a.password, LinkPassword::Required);

        // The account condition fails: on to the next rules.
        let d = decide(
            &c,
            "other",
            "a@landkreis.example",
            &["p@example.org"],
            &msg("manual"),
            false,
        );
        assert_eq!(d.rule.as_deref(), Some("default"));
        assert!(
            d.reasons[2].contains("account \"other\" is not [app, via]"),
            "{:?}",
            d.reasons
        );
        assert_eq!(
            d.effective,
            Effective::new(&c, &account("other"), None),
            "default rule sets nothing"
        );
    }

    #[test]
    fn recipient_domains_must_all_match() {
        let c = config(VIA).expect("valid");
        let m = msg("x");
        let d = decide(
            &c,
            "app",
            "a@b.example",
            &["a@landkreis.example", "b@gs-nord.schule.example"],
            &m,
            false,
        );
        assert_eq!(d.rule.as_deref(), Some("internal"));
        assert!(d.effective.tracking);
        assert!(d.effective.edits_headers(&c.privacy));
        let p = d.effective.privacy(&c.privacy);
        assert!(p.remove_headers.iter().any(|h| h == "X-Internal"));
        let d = decide(
            &c,
            "app",
            "a@b.example",
            &["a@landkreis.example", "p@example.org"],
            &m,
            false,
        );
        assert_ne!(d.rule.as_deref(), Some("internal"));
        // "*.schule.example" is for subdomains, not the domain itself.
        let d = decide(&c, "app", "a@b.example", &["a@schule.example"], &m, false);
        assert_ne!(d.rule.as_deref(), Some("internal"));
        assert!(domain_matches("*.schule.example", "A.Schule.Example"));
        assert!(!domain_matches("*.schule.example", "xschule.example"));
        assert!(domain_matches("*", "anything.example"));
    }

    #[test]
    fn sender_size_and_attachments() {
        let c = config(VIA).expect("valid");
        let mut big = msg("x");
        big.push_str(&"x".repeat(2000));
        // The envelope sender does not match, From: does not either.
        let d = decide(
            &c,
            "app",
            "a@landkreis.example",
            &["p@example.org"],
            &big,
            false,
        );
        assert_eq!(d.rule.as_deref(), Some("default"));
        assert!(
            d.reasons[3].contains("neither the envelope sender"),
            "{:?}",
            d.reasons
        );
        let d = decide(
            &c,
            "app",
            "a@amt.landkreis.example",
            &["p@example.org"],
            &big,
            false,
        );
        assert_eq!(d.rule.as_deref(), Some("big"));
        assert_eq!(d.verdict, Verdict::Hold("rule big".into()));
        let d = decide(
            &c,
            "app",
            "a@amt.landkreis.example",
            &["p@example.org"],
            &msg("x"),
            true,
        );
        assert!(
            d.reasons[3].contains("below min_size 1024"),
            "{:?}",
            d.reasons
        );
        assert_eq!(d.rule.as_deref(), Some("pdf"));
        let Verdict::Refuse(r) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(r.log_text(), "550 5.7.1 No documents from this app");
        assert!(needs_attachment_scan(&c.rules));
    }

    #[test]
    fn category_switches() {
        let c = config(VIA).expect("valid");
        let d = decide(
            &c,
            "app",
            "a@x.example",
            &["p@example.org"],
            &msg("Workflow"),
            false,
        );
        let Verdict::Refuse(r) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(
            r.log_text(),
            "550 5.7.1 Mail of category \"Workflow\" is switched off"
        );
        let d = decide(
            &c,
            "app",
            "a@x.example",
            &["p@example.org"],
            &msg("school-notice"),
            false,
        );
        assert!(matches!(d.verdict, Verdict::Hold(_)), "{d:?}");
        let d = decide(
            &c,
            "app",
            "a@x.example",
            &["p@example.org"],
            "From: a@x.example\r\n\r\nhi\r\n",
            false,
        );
        assert_eq!(d.verdict, Verdict::Accept);
    }

    #[test]
    fn no_rules_means_globals() {
        let c = config("").expect("valid");
        let d = decide(
            &c,
            "app",
            "a@x.example",
            &["p@example.org"],
            &msg("manual"),
            false,
        );
        assert_eq!(d.rule, None);
        assert_eq!(d.verdict, Verdict::Accept);
        assert!(matches!(
            d.effective.attachments(&c.attachments),
            Cow::Borrowed(_)
        ));
        assert!(matches!(d.effective.privacy(&c.privacy), Cow::Borrowed(_)));
        let c = config("[[rule]]\nname = \"stop\"\naction = \"reject\"\n").expect("valid");
        let d = decide(
            &c,
            "app",
            "a@x.example",
            &["p@example.org"],
            &msg("manual"),
            false,
        );
        let Verdict::Refuse(r) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(r.log_text(), "550 5.7.1 Refused by relay rule stop");
    }

    #[test]
    fn reject_replies() {
        let ok = RejectReply::parse("451 4.7.1 Try again later").expect("ok");
        assert_eq!(
            (ok.code, ok.esc, ok.text.as_str()),
            (451, [4, 7, 1], "Try again later")
        );
        for bad in [
            "250 2.0.0 fine",
            "550 4.7.1 mixed",
            "550 5.7 short",
            "550 Refused",
            "550 5.7.1",
            "55 5.7.1 x",
            "550 5.7.1 Gr\u{fc}\u{df}e",
        ] {
            assert!(RejectReply::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\naction = \"reject\"\nreject_reply = \"550 Refused\"\n",
                "rule[0].reject_reply",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = \"x\"\n[[rule]]\nname = \"b\"\nreject_reply = \"550 5.7.1 x\"\n",
                "rule[1].reject_reply",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.recipient_domain = [\"sch*le.example\"]\n",
                "rule[0].match.recipient_domain[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.recipient_domain = \"*.*.example\"\n",
                "rule[0].match.recipient_domain[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.sender = \"a*@x.example\"\n",
                "rule[0].match.sender[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.sender = \"*@*\"\n",
                "rule[0].match.sender[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.acount = \"x\"\n",
                "rule[0].match",
            ),
            ("[[rule]]\nname = \"a\"\npii = \"loud\"\n", "rule[0].pii"),
            (
                "[[rule]]\nname = \"a\"\nmax_expiry = \"soon\"\n",
                "rule[0].max_expiry",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.min_size = \"2MB\"\nmatch.max_size = \"1MB\"\n",
                "rule[0].match.max_size",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = []\n",
                "rule[0].match.account",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = 3\n",
                "rule[0].match.account",
            ),
            (
                "[[rule]]\nname = \"a\"\nadd_headers = { \"X-A\" = \"b\\r\\nBcc: x@y\" }\n",
                "rule[0].add_headers.X-A",
            ),
            (
                "[[rule]]\nname = \"a\"\nadd_headers = { \"Bcc\" = \"x@y\" }\n",
                "rule[0].add_headers.Bcc",
            ),
            (
                "[[rule]]\nname = \"a\"\nremove_headers = [\"Content-Type\"]\n",
                "rule[0].remove_headers[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nremove_headers = [\"X-Bad Name\"]\n",
                "rule[0].remove_headers[0]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmax_recipients = 0\n",
                "rule[0].max_recipients",
            ),
            ("[[rule]]\nname = \"a b\"\n", "rule[0].name"),
            (
                "[[rule]]\nname = \"a\"\nmatch.account = \"x\"\n[[rule]]\nname = \"A\"\n",
                "rule[1].name",
            ),
            (
                "[[rule]]\nname = \"all\"\n[[rule]]\nname = \"b\"\n",
                "rule[1]",
            ),
            (
                "[[rule]]\nname = \"a\"\nmatch.header.\"X-VIA-Category\" = \"lo*\"\n",
                "rule[0].match.header.X-VIA-Category",
            ),
            (
                "[attachments]\nmode = \"keep\"\n[[rule]]\nname = \"a\"\nattachments = \"link\"\n",
                "rule[0].attachments",
            ),
            (
                "[categories]\ndisabled = [\"a\"]\npaused = [\"A\"]\n",
                "categories.paused",
            ),
            ("[categories]\nenabled = [\"a\"]\n", "categories"),
        ];
        for (text, key) in cases {
            let err = config(text).expect_err(text);
            assert!(
                err.contains(&format!("{key}:")) || err.contains(&format!("{key}.")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn prepend_and_describe() {
        let c = config(VIA).expect("valid");
        let d = decide(
            &c,
            "app",
            "a@b.example",
            &["a@landkreis.example"],
            &msg("x"),
            false,
        );
        let mut m = b"From: a\r\n\r\nhi\r\n".to_vec();
        d.effective.prepend_headers(&mut m);
        assert_eq!(m, b"X-Internal: yes\r\nFrom: a\r\n\r\nhi\r\n");
        let lines = d.effective.describe();
        assert!(lines.contains(&("tracking", "true".into())), "{lines:?}");
        assert!(protected("content-*").is_some() && protected("X-Mailjet-*").is_some());
        assert!(protected("X-Mailer").is_none());
    }
}
