//! Documents out, links in: each document is sealed in the vault (file
//! written and fsync'd before the message is committed), and the message
//! is rewritten with the link block in their place.

use std::sync::Arc;

use crate::blocking;
use crate::config::Attachments;
use crate::links::notice::generate_password;
use crate::links::vault::{Plain, SealOptions, Sealed, Vault};
use crate::store::now_ms;
use crate::transform::attachments::{self, Scan};
use crate::transform::documents::{self, Control, DocumentsError, Fate, Links, Password};
use crate::transform::linkblock::{Block, Entry};

/// The documents sealed for one message. Until [`Sealing::commit`] (the
/// queue has committed the message and its link rows) they are unused:
/// dropping the guard discards their files, so no path can forget to.
pub struct Sealing {
    vault: Arc<Vault>,
    sealed: Vec<Sealed>,
}

impl Sealing {
    pub fn new(vault: Arc<Vault>) -> Sealing {
        Sealing {
            vault,
            sealed: Vec::new(),
        }
    }

    pub fn sealed(&self) -> &[Sealed] {
        &self.sealed
    }

    pub fn len(&self) -> usize {
        self.sealed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty()
    }

    /// The message is committed: its documents stay.
    pub fn commit(mut self) {
        self.sealed.clear();
    }

    /// The message is refused: its documents go now, before the reply, so a
    /// refused message leaves nothing behind. (Dropping the guard discards
    /// too, but in a task that may run after the reply.)
    pub async fn discard(mut self) {
        let sealed = std::mem::take(&mut self.sealed);
        self.vault.discard(&sealed).await;
    }
}

impl Drop for Sealing {
    fn drop(&mut self) {
        if self.sealed.is_empty() {
            return;
        }
        let sealed = std::mem::take(&mut self.sealed);
        let vault = Arc::clone(&self.vault);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { vault.discard(&sealed).await });
            }
            // Only when the runtime is gone: the vault's purge removes
            // files without a row (orphans) later.
            Err(_) => {
                tracing::warn!(
                    documents = sealed.len(),
                    "unused documents left for the purge"
                );
            }
        }
    }
}

/// The message with links instead of documents.
pub(super) struct Taken {
    pub message: Vec<u8>,
    pub sealed: Sealing,
    /// Generated under `link_password = "required"`: the caller sends it
    /// to the staff member.
    pub generated_password: Option<String>,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// Who the documents belong to.
pub(super) struct Owner<'a> {
    pub account: &'a str,
    /// The staff member (notices go here, never to the recipients).
    pub staff_address: &'a str,
}

/// Seals the documents `links` lists and rewrites the message around them,
/// when the plan's own scan cannot be used: `message` is the transformed
/// message, scanned again for the positions to cut.
pub(super) async fn take_out(
    vault: &Arc<Vault>,
    cfg: &Attachments,
    links: &Links,
    owner: &Owner<'_>,
    message: Vec<u8>,
) -> Result<Taken, DocumentsError> {
    let opts = documents::extract_options(cfg);
    let (message, scanned) = blocking::run(message.len(), move || {
        let scanned = attachments::scan(&message, &opts);
        (message, scanned)
    })
    .await
    .ok_or(DocumentsError::Cancelled)?;
    let plan = match scanned.map_err(|e| DocumentsError::Mime(e.to_string()))? {
        Scan::Extract(plan) => plan,
        // The plan saw documents in the message as sent; a header
        // transform that changes the MIME structure (a rule removing
        // `Content-Type:`) is taken as the message now reads.
        other => {
            if let Fate::Refused(e) = documents::fate(cfg, &Control::default(), &Ok(other)) {
                return Err(e);
            }
            return Ok(Taken {
                message,
                sealed: Sealing::new(Arc::clone(vault)),
                generated_password: None,
                expires_at: 0,
            });
        }
    };
    seal_and_rewrite(vault, cfg, links, owner, plan, message).await
}

/// Seals the documents of `plan` (a scan of `message`) and rewrites the
/// message around them.
pub(super) async fn seal_and_rewrite(
    vault: &Arc<Vault>,
    cfg: &Attachments,
    links: &Links,
    owner: &Owner<'_>,
    mut plan: attachments::Plan,
    message: Vec<u8>,
) -> Result<Taken, DocumentsError> {
    let expires_at =
        now_ms().saturating_add(i64::try_from(links.expiry.as_millis()).unwrap_or(i64::MAX));
    let (password, generated) = match &links.password {
        Password::Off | Password::None => (None, false),
        Password::App(p) => (Some(p.clone()), false),
        Password::Generate => (Some(generate_password()), true),
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
    let docs = std::mem::take(&mut plan.documents);
    let mut sealed = Sealing::new(Arc::clone(vault));
    for doc in docs {
        let plain = Plain {
            file_name: doc.file_name,
            content_type: doc.content_type,
            data: doc.data,
        };
        match vault.seal(plain, &seal).await {
            Ok(s) => sealed.sealed.push(s),
            Err(e) => {
                sealed.discard().await;
                return Err(e.into());
            }
        }
    }
    let block = Block {
        language: cfg.language,
        entries: sealed
            .sealed()
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
    let rewritten = blocking::run(message.len(), move || {
        attachments::rewrite(&message, &plan, &block)
    })
    .await;
    let message = match rewritten {
        Some(Ok(message)) => message,
        Some(Err(e)) => {
            sealed.discard().await;
            return Err(DocumentsError::Mime(e.to_string()));
        }
        None => {
            sealed.discard().await;
            return Err(DocumentsError::Cancelled);
        }
    };
    Ok(Taken {
        message,
        sealed,
        generated_password: password.filter(|_| generated),
        expires_at,
    })
}
