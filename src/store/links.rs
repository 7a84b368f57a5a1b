//! What the store keeps about a document link.
//!
//! An active row holds what the link page shows and what an admin needs
//! (file name, size, times, downloads), the salt for the key derivation and
//! the token's hash; never the token, the password or the key. Expiry and
//! revocation turn the row into a tombstone: file name, type, salt and the
//! notice address are wiped, the document file is deleted (with the salt
//! gone, any leftover copy of it is undecryptable), and only the id, the
//! token hash, the times and the state stay, so the link answers
//! `410 Gone` instead of `404` until the tombstone is purged.

use serde::Serialize;

use super::guesses::GuessPolicy;
use super::{BoxFuture, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Active,
    Expired,
    Revoked,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Active => "active",
            LinkState::Expired => "expired",
            LinkState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => LinkState::Active,
            "expired" => LinkState::Expired,
            "revoked" => LinkState::Revoked,
            _ => return None,
        })
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link created with its message (see `NewMessage::links`).
#[derive(Debug, Clone)]
pub struct NewLink {
    /// Public id (admin commands, logs): random, opens nothing.
    pub id: String,
    pub token_hash: String,
    pub account: String,
    pub file_name: String,
    pub content_type: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub salt: Vec<u8>,
    pub protected: bool,
    /// Where the first-download notice goes (the staff member), if asked.
    pub notify_to: Option<String>,
}

/// A stored link, in any state.
#[derive(Debug, Clone, Serialize)]
pub struct LinkRecord {
    pub id: String,
    /// The queue id of the message that carried the link.
    pub message_id: String,
    pub account: String,
    /// Empty once expired or revoked.
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub created_at: i64,
    pub expires_at: i64,
    pub protected: bool,
    pub downloads: u64,
    pub first_download_at: Option<i64>,
    pub state: LinkState,
    #[serde(skip)]
    pub salt: Vec<u8>,
}

/// What the first-download notice to the staff member needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadNotice {
    pub link_id: String,
    pub message_id: String,
    pub account: String,
    pub file_name: String,
    pub notify_to: String,
}

/// A fresh public link id (60 bits, lowercase base32): short enough to type
/// in `schleuse links revoke`, unrelated to the token.
pub fn new_link_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..32)] as char)
        .collect()
}

/// Document links (SPEC §7). Rows are written by
/// [`crate::store::QueueStore::enqueue`] with their message; see the module
/// docs for what a row holds before and after expiry.
pub trait LinkStore {
    /// The link whose token hashes to `token_hash`, in any state.
    fn link_by_token(
        &self,
        token_hash: &str,
    ) -> BoxFuture<'_, Result<Option<LinkRecord>, StoreError>>;

    /// Links for `schleuse links list`, newest first; expired and revoked
    /// ones only when `all`.
    fn links(&self, all: bool) -> BoxFuture<'_, Result<Vec<LinkRecord>, StoreError>>;

    /// Revokes an active link at once: its metadata is wiped and it answers
    /// `410` from now on. The caller deletes the document file.
    fn revoke_link(&self, id: &str) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks every active link past its expiry as expired (metadata wiped)
    /// and returns their ids, whose files the caller deletes.
    fn expire_links(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Ids of the links whose documents must still exist (active ones).
    fn active_link_ids(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Appends to the download log. On the first successful download of a
    /// link that asked for it, returns what the staff member's notice needs.
    fn record_download(
        &self,
        link_id: &str,
        outcome: &'static str,
        ip: Option<String>,
    ) -> BoxFuture<'_, Result<Option<DownloadNotice>, StoreError>>;

    /// Deletes what is left of expired and revoked links (the tombstones
    /// that answer `410`) and download-log entries older than `before_ms`;
    /// returns how many rows went.
    fn purge_links(&self, before_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Takes one attempt at a link's password from `client` (its address
    /// key: IPv4 address or IPv6 /64, stored pseudonymised) before the
    /// password is tried, in one transaction; `Ok(Err(wait))` when a budget
    /// is spent (then nothing is taken). See [`super::guesses`].
    fn take_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: GuessPolicy,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Result<(), std::time::Duration>, StoreError>>;

    /// Hands back an attempt taken by [`LinkStore::take_guess`]: the password
    /// was right, or could not be tried.
    fn give_back_guess(
        &self,
        link_id: &str,
        client: &str,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes guess budgets that no longer limit anything.
    fn purge_guesses(&self, now_ms: i64) -> BoxFuture<'_, Result<usize, StoreError>>;
}
