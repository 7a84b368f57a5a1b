//! Evaluation: which rule a message meets, why, and the settings in force.

use super::*;

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

/// Whether the documents stage would take anything out of a message with
/// this scan (for `match.has_attachments`). A message that cannot be
/// scanned counts as having attachments: the documents stage would refuse
/// it anyway.
pub fn has_attachments(
    scanned: &Result<
        crate::transform::attachments::Scan,
        crate::transform::attachments::ExtractError,
    >,
) -> bool {
    use crate::transform::attachments::Scan;
    match scanned {
        Ok(Scan::Clean) => false,
        Ok(Scan::Sealed { has_attachments }) => *has_attachments,
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
    pub(super) fn new(config: &Config, account: &Account, rule: Option<&Rule>) -> Effective {
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `parsed`: the header of `message` as `MessageParser::new()` reads it.
    fn read(message: &[u8], parsed: Option<&Message<'_>>) -> Header {
        let mut h = Header {
            fields: Vec::new(),
            from: Vec::new(),
        };
        let Some(parsed) = parsed else {
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

pub(super) fn domain_matches(pattern: &str, domain: &str) -> bool {
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

/// A rule's own `reject_reply`, as the session sends it.
fn reject_reply(r: &RejectReply) -> Reply {
    Reply::owned(r.code, r.esc, r.text.clone())
}

/// Runs the category switches and the rules over one message.
pub fn evaluate(config: &Config, facts: &Facts<'_>) -> Decision {
    let parsed = MessageParser::new().parse_headers(facts.message);
    evaluate_parsed(config, facts, parsed.as_ref())
}

/// [`evaluate`] with the message's header already parsed (by
/// `MessageParser::new().parse_headers`), for a caller that reads it too.
pub fn evaluate_parsed(
    config: &Config,
    facts: &Facts<'_>,
    parsed: Option<&Message<'_>>,
) -> Decision {
    let header = Header::read(facts.message, parsed);
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
                    reject_reply,
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
