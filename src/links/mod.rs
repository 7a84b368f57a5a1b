//! The link service and its encrypted document store (SPEC §7).
//!
//! Attachments never leave the county by mail: the transform takes them out
//! of the message ([`crate::transform::attachments`]), [`vault`] encrypts
//! each one under a key derived from its link token (and password), and
//! [`service`] serves `GET /d/<token>` to the recipient.
//!
//! What the server keeps per document: a SHA-256 hash of the token (to find
//! the row), a random salt, the ciphertext, and the metadata an admin needs
//! (`schleuse links list`). The token itself and the key are never stored,
//! so a copy of the data directory or a backup reveals no document.
//!
//! - [`crypto`]: token, key derivation, chunked AES-256-GCM.
//! - [`vault`]: seals new documents and opens them for the service.
//! - [`service`] / [`page`]: the HTTP side (axum), pages in German or English.

mod client;
pub mod crypto;
pub mod format;
pub mod notice;
pub mod page;
mod response;
pub mod service;
pub mod vault;

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::store::BoxFuture;
use crate::store::guesses::GuessPolicy;

/// The tracing target of the link service's lines (service and client).
const LOG_TARGET: &str = "schleuse::links";

/// What the link page may show about a document before it is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkView {
    /// Public id (admin commands, logs); not a secret, opens nothing.
    pub id: String,
    pub file_name: String,
    pub content_type: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub protected: bool,
}

/// The answer to "what is behind this token?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Active(LinkView),
    /// Expired or revoked: the page says so with `410 Gone`. The id is kept
    /// for the download log.
    Gone {
        id: String,
    },
    Unknown,
}

/// The outcome of an attempt to download.
#[derive(Debug)]
pub enum Opened {
    Document {
        view: LinkView,
        data: Vec<u8>,
    },
    /// The password does not open the document (or none was given for a
    /// protected one).
    WrongPassword {
        view: LinkView,
    },
    Gone {
        id: String,
    },
    Unknown,
}

/// What the download log records per attempt (SPEC §7: time, link,
/// outcome; the client address only when configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadOutcome {
    Downloaded,
    WrongPassword,
    RateLimited,
    Gone,
}

impl DownloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadOutcome::Downloaded => "downloaded",
            DownloadOutcome::WrongPassword => "wrong_password",
            DownloadOutcome::RateLimited => "rate_limited",
            DownloadOutcome::Gone => "gone",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("document store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("document file {id}: {cause}")]
    File { id: String, cause: std::io::Error },
    #[error("document {0} is damaged (authentication failed after the first chunk)")]
    Damaged(String),
    /// Too many password checks are waiting (`crate::argon2_pool`).
    #[error("too many password checks are waiting")]
    Busy,
}

impl VaultError {
    /// Whether storing failed for want of space (`452 4.3.1` at DATA).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            VaultError::Store(e) => e.is_out_of_space(),
            VaultError::File { cause, .. } => crate::store::io_out_of_space(cause),
            VaultError::Damaged(_) | VaultError::Busy => false,
        }
    }
}

/// The documents as the link service sees them. [`vault::Vault`] is the real
/// one; the service's tests use a small in-memory one.
pub trait Documents: Send + Sync + 'static {
    /// Finds the document behind a token, without opening it.
    fn lookup(&self, token: &str) -> BoxFuture<'_, Result<Lookup, VaultError>>;
    /// Decrypts the document. For a protected one, `password` must be right.
    fn open(
        &self,
        token: &str,
        password: Option<&str>,
    ) -> BoxFuture<'_, Result<Opened, VaultError>>;
    /// Takes one attempt at the link's password from `client` (its address
    /// key, see `crate::store::guesses`) before the password is tried;
    /// `Ok(Err(wait))` when a budget is spent.
    fn take_guess(
        &self,
        link_id: &str,
        client: IpAddr,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<Result<(), Duration>, VaultError>>;
    /// Hands back an attempt taken by [`Documents::take_guess`].
    fn give_back_guess(
        &self,
        link_id: &str,
        client: IpAddr,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<(), VaultError>>;
    /// Writes one download-log entry; `ip` is `Some` only when the config
    /// asks for client addresses to be logged. The first successful download
    /// may send the staff member a notice (per rule).
    fn record(
        &self,
        link_id: &str,
        outcome: DownloadOutcome,
        ip: Option<IpAddr>,
    ) -> BoxFuture<'_, Result<(), VaultError>>;
}
