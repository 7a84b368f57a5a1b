//! Stage: documents out, links in (SPEC §7, `[attachments]`).
//!
//! [`attachments`](super::attachments) finds the documents and rewrites the
//! message around them; this stage decides what the policy says ([`fate`]:
//! pass, refuse, or which documents become links with which expiry and
//! password). Sealing them in the vault is `crate::pipeline`'s execute step.
//!
//! The app steers a message with two control headers, both removed before
//! relay with every `X-Schleuse-*` field: `X-Schleuse-Link-Password` (the
//! documents' password) and `X-Schleuse-Link-Expiry` (`7d`: shorter than
//! the default, never longer than `max_expiry`).

use std::time::Duration;

use mail_parser::{HeaderValue, Message, MessageParser};

use super::attachments::{self, ExtractError, ExtractOptions, Scan};
use crate::config::{AttachmentMode, Attachments, LinkPassword, SignedPolicy};
use crate::links::VaultError;

const PASSWORD_HEADER: &str = "X-Schleuse-Link-Password";
const EXPIRY_HEADER: &str = "X-Schleuse-Link-Expiry";

/// What the app asked for in its control headers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Control {
    pub password: Option<String>,
    pub expiry: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentsError {
    #[error("{EXPIRY_HEADER}: {0}")]
    BadExpiry(String),
    #[error("{PASSWORD_HEADER} must not be empty")]
    EmptyPassword,
    #[error("attachments are not accepted here; link documents instead")]
    AttachmentsRefused,
    #[error("signed or encrypted messages with attachments cannot be changed and are refused")]
    SealedRefused,
    #[error("the message structure cannot be processed: {0}")]
    Mime(String),
    #[error("cannot store the documents: {0}")]
    Vault(#[from] VaultError),
    #[error("the document task was cancelled")]
    Cancelled,
}

/// Reads the control headers from the message as the client sent it.
pub fn control(message: &[u8]) -> Result<Control, DocumentsError> {
    control_of(MessageParser::new().parse_headers(message).as_ref())
}

/// [`control`] from the header as `MessageParser::new()` parsed it.
pub fn control_of(parsed: Option<&Message<'_>>) -> Result<Control, DocumentsError> {
    let Some(parsed) = parsed else {
        return Ok(Control::default());
    };
    let mut control = Control::default();
    for h in parsed.headers() {
        let text = match &h.value {
            HeaderValue::Text(t) => t.trim().to_owned(),
            HeaderValue::TextList(l) => l.join(",").trim().to_owned(),
            HeaderValue::Empty => String::new(),
            _ => continue,
        };
        let name = h.name.as_str();
        if name.eq_ignore_ascii_case(PASSWORD_HEADER) {
            if text.is_empty() {
                return Err(DocumentsError::EmptyPassword);
            }
            control.password = Some(text);
        } else if name.eq_ignore_ascii_case(EXPIRY_HEADER) {
            let d = crate::config::parse_duration(&text).map_err(DocumentsError::BadExpiry)?;
            if d.is_zero() {
                return Err(DocumentsError::BadExpiry("must be longer than zero".into()));
            }
            control.expiry = Some(d);
        }
    }
    Ok(control)
}

/// How the documents would be taken out, before anything is sealed: the
/// scan's findings read against the settings in force. Pure, so the DATA
/// path and `rules test` take the same decision from the same function.
#[derive(Debug)]
pub enum Fate {
    /// `attachments = keep`: the MIME structure is not even looked at.
    Kept,
    /// Nothing to take out.
    Clean,
    /// Signed or encrypted: relayed unchanged (`signed = "pass"`, or
    /// nothing in it would have been taken out).
    Sealed { has_attachments: bool },
    /// These documents become links.
    Link(Links),
    /// The message is refused with this.
    Refused(DocumentsError),
}

/// What `attachments = "link"` does with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub documents: Vec<DocumentInfo>,
    /// How long the links live: the app's `X-Schleuse-Link-Expiry`, at
    /// most `max_expiry`, else the default.
    pub expiry: Duration,
    pub password: Password,
}

/// A document as listed by the scan (its bytes stay with the scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentInfo {
    pub file_name: String,
    pub content_type: String,
    pub size: usize,
}

/// The `link_password` matrix for one message.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// `link_password = "off"`: no password, even if the app sent one.
    Off,
    /// No password (`optional`, and the app sent none).
    None,
    /// The app's `X-Schleuse-Link-Password`.
    App(String),
    /// `required` and the app sent none: one is generated at sealing time
    /// and sent to the staff member only.
    Generate,
}

impl std::fmt::Debug for Password {
    // The app's password is a secret: a plan printed for debugging must
    // not show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Password::Off => "Off",
            Password::None => "None",
            Password::App(_) => "App(..)",
            Password::Generate => "Generate",
        })
    }
}

/// The scan options the settings give.
pub fn extract_options(cfg: &Attachments) -> ExtractOptions {
    ExtractOptions {
        inline_image_max: usize::try_from(cfg.inline_image_max).unwrap_or(usize::MAX),
    }
}

/// The MIME scan of a message, with the settings' options. CPU-bound; the
/// caller runs it through [`crate::blocking`].
pub fn scan(message: &[u8], cfg: &Attachments) -> Result<Scan, ExtractError> {
    attachments::scan(message, &extract_options(cfg))
}

/// What happens to the documents of a message with this scan, under the
/// settings in force (`cfg`, the rule's) and the app's control headers.
pub fn fate(cfg: &Attachments, control: &Control, scanned: &Result<Scan, ExtractError>) -> Fate {
    if cfg.mode == AttachmentMode::Keep {
        return Fate::Kept;
    }
    let plan = match scanned {
        Err(e) => return Fate::Refused(DocumentsError::Mime(e.to_string())),
        Ok(Scan::Clean) => return Fate::Clean,
        Ok(Scan::Sealed { has_attachments }) => {
            if *has_attachments && cfg.signed == SignedPolicy::Reject {
                return Fate::Refused(DocumentsError::SealedRefused);
            }
            return Fate::Sealed {
                has_attachments: *has_attachments,
            };
        }
        Ok(Scan::Extract(plan)) => plan,
    };
    if cfg.mode == AttachmentMode::Reject {
        return Fate::Refused(DocumentsError::AttachmentsRefused);
    }
    let expiry = control
        .expiry
        .map_or(cfg.expiry, |asked| asked.min(cfg.max_expiry));
    let password = match (cfg.password, &control.password) {
        (LinkPassword::Off, _) => Password::Off,
        (_, Some(p)) => Password::App(p.clone()),
        (LinkPassword::Optional, None) => Password::None,
        (LinkPassword::Required, None) => Password::Generate,
    };
    Fate::Link(Links {
        documents: plan
            .documents
            .iter()
            .map(|d| DocumentInfo {
                file_name: d.file_name.clone(),
                content_type: d.content_type.clone(),
                size: d.data.len(),
            })
            .collect(),
        expiry,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_headers_are_read_and_checked() {
        let m = b"From: a@b\r\nX-Schleuse-Link-Password: Sommer 2026\r\nx-schleuse-link-expiry: 7d\r\n\r\nhi\r\n";
        let c = control(m).expect("ok");
        assert_eq!(c.password.as_deref(), Some("Sommer 2026"));
        assert_eq!(c.expiry, Some(Duration::from_secs(7 * 86_400)));
        let bad = b"From: a@b\r\nX-Schleuse-Link-Expiry: soon\r\n\r\nhi\r\n";
        assert!(matches!(control(bad), Err(DocumentsError::BadExpiry(_))));
        let empty = b"From: a@b\r\nX-Schleuse-Link-Password:  \r\n\r\nhi\r\n";
        assert!(matches!(control(empty), Err(DocumentsError::EmptyPassword)));
        assert_eq!(
            control(b"From: a@b\r\n\r\nhi\r\n").expect("ok"),
            Control::default()
        );
    }
}
