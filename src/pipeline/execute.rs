//! The step that acts: applies an accepted [`Plan`] to the message.
//!
//! Header transform (with the rule's `[privacy]`), the rule's
//! `add_headers`, documents sealed and replaced by links, `Received:`, and
//! DKIM last: nothing may change the message after it is signed.

use std::sync::Arc;

use super::plan::Plan;
use super::seal::{self, Owner, Sealing};
use crate::accounts::Account;
use crate::blocking;
use crate::config::{Config, MissingKey, Privacy};
use crate::dkim::{DkimError, Signer};
use crate::links::vault::Vault;
use crate::transform::attachments;
use crate::transform::documents::{DocumentsError, Fate};
use crate::transform::{self, Stamp, TransformError, Transformed};

/// What the execute step needs beyond the plan.
pub struct Job<'a> {
    /// The same snapshot the plan was taken from.
    pub config: &'a Config,
    pub account: &'a Account,
    pub queue_id: &'a str,
    pub stamp: Stamp<'a>,
    pub vault: &'a Arc<Vault>,
    pub signer: Arc<Signer>,
}

/// Whether the message went out signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dkim {
    Signed,
    /// No key for the `From:` domain and `without_dkim_key = "relay"`.
    Unsigned {
        domain: String,
    },
}

/// The message ready to commit.
pub struct Executed {
    /// The bytes to queue, as they will be relayed.
    pub message: Vec<u8>,
    /// The sealed documents: commit the guard once the queue has the message.
    pub sealed: Sealing,
    /// A password generated for the links, for the staff member's notice.
    pub generated_password: Option<String>,
    /// When the links expire (Unix milliseconds; 0 without links).
    pub expires_at: i64,
    /// The staff member (notices, `copy_to_sender`, DSNs for the system
    /// sender go there).
    pub staff_address: String,
    /// The envelope sender to relay with, when `From:` is rewritten.
    pub envelope_sender: Option<String>,
    pub dkim: Dkim,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Documents(#[from] DocumentsError),
    #[error("no DKIM key for the From: domain {domain:?}")]
    NoDkimKey { domain: String },
    #[error("DKIM signing failed: {0}")]
    Signing(DkimError),
}

/// Applies `plan` (which must not refuse) to `message`. On an error the
/// documents sealed so far are discarded by their guard.
pub async fn execute(
    plan: &mut Plan,
    job: &Job<'_>,
    message: Vec<u8>,
) -> Result<Executed, ExecuteError> {
    let config = job.config;
    let scan = plan.scan.take();
    let plan = &*plan;
    let privacy = plan.privacy(&config.privacy);
    let ctx = transform::Context {
        sender: &config.sender,
        privacy: &privacy,
        account: job.account,
        queue_id: job.queue_id,
        stamp: job.stamp,
    };
    let cfg = plan.attachment_settings(&config.attachments);
    let (mut taken, transformed) = match (&plan.attachments, scan) {
        // Documents out first, cut by the plan's own scan; then the header.
        (Fate::Link(links), Some(scan)) if documents_first(plan, &privacy, &scan, &message) => {
            let edited = transform::headers::rewrite(&ctx, &message)?;
            let owner = Owner {
                account: &job.account.name,
                staff_address: &edited.staff_address,
            };
            let mut taken =
                seal::seal_and_rewrite(job.vault, &cfg, links, &owner, scan, message).await?;
            let mut transformed =
                transform::finish(&ctx, edited, std::mem::take(&mut taken.message));
            plan.rule
                .effective
                .prepend_headers(&mut transformed.message);
            taken.message = std::mem::take(&mut transformed.message);
            (taken, transformed)
        }
        // The header first, then the documents as the transformed message
        // holds them (scanned again).
        (Fate::Link(links), _) => {
            let mut transformed = transform::apply(&ctx, message)?;
            plan.rule
                .effective
                .prepend_headers(&mut transformed.message);
            let owner = Owner {
                account: &job.account.name,
                staff_address: &transformed.staff_address,
            };
            let message = std::mem::take(&mut transformed.message);
            let taken = seal::take_out(job.vault, &cfg, links, &owner, message).await?;
            (taken, transformed)
        }
        (Fate::Kept | Fate::Clean | Fate::Sealed { .. } | Fate::Refused(_), _) => {
            let mut transformed = transform::apply(&ctx, message)?;
            plan.rule
                .effective
                .prepend_headers(&mut transformed.message);
            let taken = seal::Taken {
                message: std::mem::take(&mut transformed.message),
                sealed: Sealing::new(Arc::clone(job.vault)),
                generated_password: None,
                expires_at: 0,
            };
            (taken, transformed)
        }
    };
    let mut body = std::mem::take(&mut taken.message);
    transform::prepend_received(&mut body, &job.stamp);
    // Signing is the last change to the message: nothing may follow it.
    let (mut body, signed) = sign(Arc::clone(&job.signer), body).await;
    let dkim = match signed {
        Ok(Some(signature)) => {
            body.reserve_exact(signature.len());
            body.splice(0..0, signature);
            Dkim::Signed
        }
        Ok(None) => {
            let domain = crate::dkim::from_domain(&body).unwrap_or_default();
            if config.sender.without_dkim_key == MissingKey::Refuse {
                taken.sealed.discard().await;
                return Err(ExecuteError::NoDkimKey { domain });
            }
            Dkim::Unsigned { domain }
        }
        Err(e) => {
            taken.sealed.discard().await;
            return Err(ExecuteError::Signing(e));
        }
    };
    Ok(Executed {
        message: body,
        sealed: taken.sealed,
        generated_password: taken.generated_password,
        expires_at: taken.expires_at,
        staff_address: transformed.staff_address,
        envelope_sender: transformed.envelope_sender,
        dkim,
    })
}

/// The header step: the transform with the rule's `[privacy]`, then the
/// rule's `add_headers` on top. `rules test` shows its result.
pub fn headers(
    plan: &Plan,
    config: &Config,
    account: &Account,
    queue_id: &str,
    stamp: Stamp<'_>,
    message: Vec<u8>,
) -> Result<Transformed, TransformError> {
    let privacy = plan.privacy(&config.privacy);
    let ctx = transform::Context {
        sender: &config.sender,
        privacy: &privacy,
        account,
        queue_id,
        stamp,
    };
    let mut transformed = transform::apply(&ctx, message)?;
    plan.rule
        .effective
        .prepend_headers(&mut transformed.message);
    Ok(transformed)
}

/// Whether the documents can come out of the message as sent, before the
/// header step, cut by the plan's scan. The result is the same as header
/// first and a new scan when the cuts all lie past the header block (the
/// header step rewrites only that block) and the header step leaves every
/// field the scan reads (`Content-*`, `MIME-Version`) as it is.
pub(super) fn documents_first(
    plan: &Plan,
    privacy: &Privacy,
    scan: &attachments::Plan,
    message: &[u8],
) -> bool {
    let Some(body) = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
    else {
        return false;
    };
    if scan.first_edit() < body {
        return false;
    }
    let mime = |name: &[u8]| {
        name.get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"content-"))
            || name.eq_ignore_ascii_case(b"mime-version")
    };
    if plan
        .rule
        .effective
        .add_headers
        .iter()
        .any(|(n, _)| mime(n.as_bytes()))
    {
        return false;
    }
    message[..body]
        .split(|&b| b == b'\n')
        .filter(|line| !matches!(line.first(), Some(b' ' | b'\t')))
        .filter_map(|line| {
            line.iter()
                .position(|&b| b == b':')
                .map(|c| line[..c].trim_ascii())
        })
        .all(|name| {
            !mime(name) || !transform::headers::removes(privacy, &String::from_utf8_lossy(name))
        })
}

/// Canonicalising and hashing the body takes about 2 ms per MB and
/// signature: large messages are signed on the blocking pool.
async fn sign(signer: Arc<Signer>, body: Vec<u8>) -> (Vec<u8>, Result<Option<Vec<u8>>, DkimError>) {
    blocking::run(body.len(), move || {
        let signed = signer.sign(&body);
        (body, signed)
    })
    .await
    // The blocking pool dropped the job (shutdown): no body to relay.
    .unwrap_or_else(|| {
        (
            Vec::new(),
            Err(DkimError::Sign("the signing task was cancelled".into())),
        )
    })
}
