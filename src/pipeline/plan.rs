//! The pure step: every decision about one message, taken from the facts.

use std::borrow::Cow;

use mail_parser::MessageParser;

use crate::accounts::Account;
use crate::config::{Attachments, Config, Privacy};
use crate::policy::rules::{self, Verdict};
use crate::privacy::decision::{self as pii_policy, Decision as PiiDecision};
use crate::privacy::pii::Category;
use crate::reply::Reply;
use crate::transform::attachments::{self, Scan};
use crate::transform::documents::{self, Control, DocumentsError, Fate, Password};

/// What the plan is taken from.
pub struct Facts<'a> {
    /// The configuration in force for the whole run (one snapshot).
    pub config: &'a Config,
    pub account: &'a Account,
    /// The envelope sender (`MAIL FROM`).
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The message as the client sent it (CRLF, header and body).
    pub message: &'a [u8],
}

/// Every decision about one message.
#[derive(Debug)]
pub struct Plan {
    /// The rules: which matched, why, the settings in force, the verdict.
    pub rule: rules::Decision,
    /// The PII check under the rule's `pii`.
    pub pii: PiiDecision,
    /// The app's control headers (`X-Schleuse-Link-*`).
    pub control: Result<Control, DocumentsError>,
    /// What happens to the documents.
    pub attachments: Fate,
    /// The scan behind [`Fate::Link`], with the documents' bytes: the
    /// execute step seals and cuts by it instead of scanning again.
    pub(super) scan: Option<attachments::Plan>,
}

/// Why a plan refuses the message, in the order the checks run (the first
/// one is what the client gets).
#[derive(Debug, thiserror::Error)]
pub enum Refusal<'a> {
    /// The rule refuses, with its own reply.
    #[error("refused by a rule: {}", .0.log_text())]
    Rule(&'a Reply),
    /// `pii = "reject"`, with the text the client gets.
    #[error("{0}")]
    Pii(&'a str),
    /// A control header cannot be read.
    #[error("{0}")]
    Control(&'a DocumentsError),
    /// The documents cannot be taken as the settings say.
    #[error("{0}")]
    Documents(&'a DocumentsError),
}

impl Refusal<'_> {
    /// The stage name for logs and metrics.
    pub fn stage(&self) -> &'static str {
        match self {
            Refusal::Rule(_) => "rule",
            Refusal::Pii(_) => "pii",
            Refusal::Control(_) | Refusal::Documents(_) => "documents",
        }
    }
}

/// A mail to the staff member that is committed with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The link password generated at sealing time.
    Password,
    /// `pii = "warn"`: the categories found.
    Pii(Vec<Category>),
}

/// Takes every decision about the message. Pure and CPU-bound (rules, one
/// MIME scan, one PII scan): the caller runs it through
/// [`crate::blocking`] for large messages.
pub fn plan(facts: &Facts<'_>) -> Plan {
    let config = facts.config;
    // One MIME scan serves `match.has_attachments` and the documents stage
    // (the rules change the mode, not what the scan finds).
    let needs_scan = rules::needs_attachment_scan(&config.rules);
    let mut scanned = needs_scan.then(|| documents::scan(facts.message, &config.attachments));
    // One header parse serves the rules and the control headers.
    let header = MessageParser::new().parse_headers(facts.message);
    let rule = rules::evaluate_parsed(
        config,
        &rules::Facts {
            account: facts.account,
            sender: facts.sender,
            recipients: facts.recipients,
            message: facts.message,
            has_attachments: scanned.as_ref().map(rules::has_attachments),
        },
        header.as_ref(),
    );
    let privacy = rule.effective.privacy(&config.privacy);
    let pii = pii_policy::decide(facts.message, &privacy);
    let control = documents::control_of(header.as_ref());
    let cfg = rule.effective.attachments(&config.attachments);
    let attachments = if cfg.mode == crate::config::AttachmentMode::Keep {
        Fate::Kept
    } else {
        let scanned =
            scanned.get_or_insert_with(|| documents::scan(facts.message, &config.attachments));
        let none = Control::default();
        documents::fate(&cfg, control.as_ref().unwrap_or(&none), scanned)
    };
    let scan = match (&attachments, scanned) {
        (Fate::Link(_), Some(Ok(Scan::Extract(found)))) => Some(found),
        _ => None,
    };
    Plan {
        rule,
        pii,
        control,
        attachments,
        scan,
    }
}

impl Plan {
    /// Every reason to refuse the message, first the one the client gets.
    pub fn refusals(&self) -> Vec<Refusal<'_>> {
        let mut out = Vec::new();
        if let Verdict::Refuse(reply) = &self.rule.verdict {
            out.push(Refusal::Rule(reply));
        }
        if let PiiDecision::Reject { text } = &self.pii {
            out.push(Refusal::Pii(text));
        }
        if let Err(e) = &self.control {
            out.push(Refusal::Control(e));
        }
        if let Fate::Refused(e) = &self.attachments {
            out.push(Refusal::Documents(e));
        }
        out
    }

    /// Why the message is refused, if it is.
    pub fn refusal(&self) -> Option<Refusal<'_>> {
        self.refusals().into_iter().next()
    }

    /// Why the rule holds the message for an admin, if it does.
    pub fn rule_hold(&self) -> Option<&str> {
        match &self.rule.verdict {
            Verdict::Hold(why) => Some(why),
            Verdict::Accept | Verdict::Refuse(_) => None,
        }
    }

    /// Whether the plan holds the message (the running config's
    /// `sending = "paused"` and the anomaly check may hold it too).
    pub fn holds(&self) -> bool {
        self.rule_hold().is_some() || matches!(self.pii, PiiDecision::Hold { .. })
    }

    /// The staff notices committed with the message, in this order.
    pub fn notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Fate::Link(links) = &self.attachments
            && links.password == Password::Generate
        {
            out.push(Notice::Password);
        }
        if let PiiDecision::Warn { categories, .. } = &self.pii {
            out.push(Notice::Pii(categories.clone()));
        }
        out
    }

    /// The delivery log's note parts the plan gives: `rule: manual`,
    /// `held: category x paused`, `pii: iban`.
    pub fn note_parts(&self) -> Vec<String> {
        [
            self.rule.rule.as_ref().map(|r| format!("rule: {r}")),
            self.rule_hold().map(|why| format!("held: {why}")),
            self.pii.note(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `[privacy]` as the rule has it (a copy only when the rule changes it).
    pub fn privacy<'a>(&self, global: &'a Privacy) -> Cow<'a, Privacy> {
        self.rule.effective.privacy(global)
    }

    /// `[attachments]` as the rule has it.
    pub fn attachment_settings<'a>(&self, global: &'a Attachments) -> Cow<'a, Attachments> {
        self.rule.effective.attachments(global)
    }
}
