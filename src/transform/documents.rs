//! Stage: documents out, links in (SPEC §7, `[attachments]`).
//!
//! [`attachments`](super::attachments) finds the documents and rewrites the
//! message around them; this stage decides what the policy says, seals each
//! document in the [`Vault`] (file written and fsync'd before the message is
//! committed) and hands back the rows to commit with the message.
//!
//! The app steers a message with two control headers, both removed before
//! relay with every `X-Schleuse-*` field: `X-Schleuse-Link-Password` (the
//! documents' password) and `X-Schleuse-Link-Expiry` (`7d`: shorter than
//! the default, never longer than `max_expiry`).

use std::time::Duration;

use mail_parser::{HeaderValue, MessageParser};

use super::attachments::{self, ExtractOptions, Scan};
use super::linkblock::{Block, Entry};
use crate::config::{AttachmentMode, Attachments, LinkPassword, SignedPolicy};
use crate::links::VaultError;
use crate::links::notice::generate_password;
use crate::links::vault::{Plain, SealOptions, Sealed, Vault};
use crate::store::now_ms;

const PASSWORD_HEADER: &str = "X-Schleuse-Link-Password";
const EXPIRY_HEADER: &str = "X-Schleuse-Link-Expiry";

/// Above this size the MIME scan runs on the blocking pool, so one large
/// message does not stall the other sessions on the same worker.
const SCAN_INLINE_MAX: usize = 128 * 1024;

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
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
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

/// Who the documents belong to.
pub struct Owner<'a> {
    pub account: &'a str,
    /// The staff member (notices go here, never to the recipients).
    pub staff_address: &'a str,
}

/// The message with links instead of documents.
pub struct Taken {
    pub message: Vec<u8>,
    /// Rows to commit with the message; empty when nothing was taken out.
    pub sealed: Vec<Sealed>,
    /// A password generated under `password = "required"`: the caller
    /// sends it to the staff member.
    pub generated_password: Option<String>,
    /// Unix milliseconds.
    pub expires_at: i64,
}

impl Taken {
    fn unchanged(message: Vec<u8>) -> Taken {
        Taken {
            message,
            sealed: Vec::new(),
            generated_password: None,
            expires_at: 0,
        }
    }

    pub fn file_names(&self) -> Vec<String> {
        self.sealed
            .iter()
            .map(|s| s.link.file_name.clone())
            .collect()
    }
}

async fn scan(message: Vec<u8>, opts: ExtractOptions) -> Result<(Vec<u8>, Scan), DocumentsError> {
    if message.len() <= SCAN_INLINE_MAX {
        let scanned =
            attachments::scan(&message, &opts).map_err(|e| DocumentsError::Mime(e.to_string()))?;
        return Ok((message, scanned));
    }
    tokio::task::spawn_blocking(move || {
        let scanned = attachments::scan(&message, &opts);
        (message, scanned)
    })
    .await
    .map_err(|_| DocumentsError::Cancelled)
    .and_then(|(m, s)| Ok((m, s.map_err(|e| DocumentsError::Mime(e.to_string()))?)))
}

pub async fn take_out(
    vault: &Vault,
    cfg: &Attachments,
    owner: &Owner<'_>,
    control: &Control,
    message: Vec<u8>,
) -> Result<Taken, DocumentsError> {
    if cfg.mode == AttachmentMode::Keep {
        return Ok(Taken::unchanged(message));
    }
    let opts = ExtractOptions {
        inline_image_max: usize::try_from(cfg.inline_image_max).unwrap_or(usize::MAX),
    };
    let (message, scanned) = scan(message, opts).await?;
    let plan = match scanned {
        Scan::Clean => return Ok(Taken::unchanged(message)),
        Scan::Sealed { has_attachments } => {
            if has_attachments && cfg.signed == SignedPolicy::Reject {
                return Err(DocumentsError::SealedRefused);
            }
            return Ok(Taken::unchanged(message));
        }
        Scan::Extract(plan) => plan,
    };
    if cfg.mode == AttachmentMode::Reject {
        return Err(DocumentsError::AttachmentsRefused);
    }

    let expiry = control
        .expiry
        .map_or(cfg.expiry, |asked| asked.min(cfg.max_expiry));
    let expires_at = now_ms().saturating_add(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX));
    let (password, generated) = match (cfg.password, &control.password) {
        (LinkPassword::Off, _) => (None, false),
        (_, Some(p)) => (Some(p.clone()), false),
        (LinkPassword::Optional, None) => (None, false),
        (LinkPassword::Required, None) => (Some(generate_password()), true),
    };
    let seal = SealOptions {
        account: owner.account.to_owned(),
        password: password.clone(),
        expires_at,
        notify_to: cfg
            .notify_first_download
            .then(|| owner.staff_address.to_owned()),
    };

    // The rewrite needs only the positions: the documents' bytes move on
    // into the vault without a copy.
    let mut plan = plan;
    let documents = std::mem::take(&mut plan.documents);
    let mut sealed = Vec::with_capacity(documents.len());
    for doc in documents {
        let plain = Plain {
            file_name: doc.file_name,
            content_type: doc.content_type,
            data: doc.data,
        };
        match vault.seal(plain, &seal).await {
            Ok(s) => sealed.push(s),
            Err(e) => {
                vault.discard(&sealed).await;
                return Err(e.into());
            }
        }
    }
    let block = Block {
        language: cfg.language,
        entries: sealed
            .iter()
            .map(|s| Entry {
                file_name: s.link.file_name.clone(),
                size: s.link.size,
                url: cfg.link_url(&s.token),
                expires_at,
                protected: s.link.protected,
            })
            .collect(),
    };
    let rewritten = if message.len() <= SCAN_INLINE_MAX {
        attachments::rewrite(&message, &plan, &block)
    } else {
        tokio::task::spawn_blocking(move || attachments::rewrite(&message, &plan, &block))
            .await
            .map_err(|_| DocumentsError::Cancelled)?
    };
    match rewritten {
        Ok(message) => Ok(Taken {
            message,
            sealed,
            generated_password: password.filter(|_| generated),
            expires_at,
        }),
        Err(e) => {
            vault.discard(&sealed).await;
            Err(DocumentsError::Mime(e.to_string()))
        }
    }
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
