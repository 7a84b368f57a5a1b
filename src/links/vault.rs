//! The vault: seals new documents and opens them for the link service.
//!
//! Sealing happens in the session, before the message is committed: the
//! document file is written (fsync'd) first, and its row goes into the
//! store in the same transaction as the message (`NewMessage::links`).
//! Opening needs the token (and password) from the request: without them
//! the stored bytes are noise.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::crypto::{self, CryptoError, DocumentKey, PasswordKey};
use super::{DownloadOutcome, LinkView, Lookup, Opened, VaultError};
use crate::argon2_pool::{self, PoolError};
use crate::store::document_files::{DocumentError, DocumentFiles};
use crate::store::guesses::GuessPolicy;
use crate::store::links::new_link_id;
use crate::store::{BoxFuture, DownloadNotice, LinkRecord, LinkState, NewLink, Store, now_ms};

/// One document to seal.
pub struct Plain {
    pub file_name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Who a sealed document belongs to and how long it lives.
#[derive(Debug, Clone)]
pub struct SealOptions {
    pub account: String,
    pub password: Option<String>,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub notify_to: Option<String>,
}

/// A sealed document: the row to commit with the message, and the token
/// for the link (which exists nowhere else once the message is relayed).
pub struct Sealed {
    pub link: NewLink,
    pub token: String,
}

/// Hands the first-download notice to whoever sends it (the server's
/// queue); the vault does not know how mail is made.
pub type NoticeHook = Arc<dyn Fn(DownloadNotice) + Send + Sync>;

pub struct Vault {
    store: Arc<dyn Store>,
    files: Arc<dyn DocumentFiles>,
    notice: Option<NoticeHook>,
}

/// What a purge run removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    pub expired: usize,
    pub orphans: usize,
    pub tombstones: usize,
}

/// A document file with no row this old is a leftover of a crash between
/// writing the file and committing the message: the session that wrote it
/// answered the client with an error long ago.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

fn file_error(id: &str, e: DocumentError) -> VaultError {
    let cause = match e {
        DocumentError::Io { cause, .. } => cause,
        other => std::io::Error::other(other.to_string()),
    };
    VaultError::File {
        id: id.to_owned(),
        cause,
    }
}

fn crypto_error(id: &str, e: CryptoError) -> VaultError {
    VaultError::File {
        id: id.to_owned(),
        cause: std::io::Error::other(e.to_string()),
    }
}

/// The argon2 half of a document key, on the bounded pool (argon2 takes
/// 19 MiB a time; see `crate::argon2_pool`).
async fn password_key(
    password: Option<String>,
    salt: &[u8],
    id: &str,
) -> Result<Option<PasswordKey>, VaultError> {
    let Some(password) = password else {
        return Ok(None);
    };
    let salt = salt.to_vec();
    match argon2_pool::global()
        .run(move |memory| crypto::password_key(memory, &password, &salt))
        .await
    {
        Ok(key) => key.map(Some).map_err(|e| crypto_error(id, e)),
        Err(PoolError::Busy) => Err(VaultError::Busy),
        Err(e) => Err(crypto_error(id, CryptoError::Password(e.to_string()))),
    }
}

fn view(r: &LinkRecord) -> LinkView {
    LinkView {
        id: r.id.clone(),
        file_name: r.file_name.clone(),
        content_type: r.content_type.clone(),
        size: r.size,
        expires_at: r.expires_at,
        protected: r.protected,
    }
}

impl Vault {
    pub fn new(
        store: Arc<dyn Store>,
        files: Arc<dyn DocumentFiles>,
        notice: Option<NoticeHook>,
    ) -> Vault {
        Vault {
            store,
            files,
            notice,
        }
    }

    /// Whether the document store can be reached now (for `/readyz`).
    pub async fn probe(&self) -> Result<(), DocumentError> {
        self.files.probe().await
    }

    /// Encrypts a document and writes it durably. CPU work runs off the
    /// runtime: argon2 for a password on its pool, AES-GCM on the blocking
    /// pool.
    pub async fn seal(&self, doc: Plain, opts: &SealOptions) -> Result<Sealed, VaultError> {
        let id = new_link_id();
        let token = crypto::new_token().map_err(|e| crypto_error(&id, e))?;
        let salt = crypto::new_salt().map_err(|e| crypto_error(&id, e))?;
        let size = doc.data.len() as u64;
        let password = password_key(opts.password.clone(), &salt, &id).await?;
        let (tok, data) = (token.clone(), doc.data);
        let sealed = tokio::task::spawn_blocking(move || {
            DocumentKey::derive(&tok, password.as_ref(), &salt)?.seal(&data)
        })
        .await
        .map_err(|_| crypto_error(&id, CryptoError::Random))?
        .map_err(|e| crypto_error(&id, e))?;
        self.files
            .put(&id, sealed)
            .await
            .map_err(|e| file_error(&id, e))?;
        Ok(Sealed {
            link: NewLink {
                token_hash: crypto::token_hash(&token),
                account: opts.account.clone(),
                file_name: doc.file_name,
                content_type: doc.content_type,
                size,
                created_at: now_ms(),
                expires_at: opts.expires_at,
                salt: salt.to_vec(),
                protected: opts.password.is_some(),
                notify_to: opts.notify_to.clone(),
                id,
            },
            token,
        })
    }

    /// Deletes the files of documents whose message was never committed
    /// (the session failed after sealing).
    pub async fn discard(&self, sealed: &[Sealed]) {
        for s in sealed {
            if let Err(e) = self.files.delete(&s.link.id).await {
                tracing::warn!(link = %s.link.id, error = %e, "cannot delete an unused document");
            }
        }
    }

    /// Revokes a link at once: the row becomes a tombstone, the file goes.
    pub async fn revoke(&self, id: &str) -> Result<(), VaultError> {
        self.store.revoke_link(id).await?;
        self.files.delete(id).await.map_err(|e| file_error(id, e))
    }

    /// Expires due links, deletes their files and any orphan file, and
    /// drops tombstones and download-log entries older than `keep`.
    pub async fn purge(&self, keep: Duration) -> Result<Purged, VaultError> {
        let now = now_ms();
        let mut purged = Purged::default();
        // Expiring is a database write; on a full disk it fails, and then
        // deleting orphan files (below) is what frees space: go on, and
        // report the failure at the end.
        let expired = self.store.expire_links(now).await;
        for id in expired.as_deref().unwrap_or_default() {
            self.files.delete(id).await.map_err(|e| file_error(id, e))?;
            purged.expired += 1;
        }
        // Files first, ids second: a document sealed between the two reads
        // is young and therefore not taken for an orphan.
        let files = self.files.list().await.map_err(|e| file_error("*", e))?;
        let active: std::collections::HashSet<String> =
            self.store.active_link_ids().await?.into_iter().collect();
        let cutoff = SystemTime::now()
            .checked_sub(ORPHAN_AGE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (id, modified) in files {
            if active.contains(&id) || modified > cutoff {
                continue;
            }
            match self.files.delete(&id).await {
                Ok(()) => purged.orphans += 1,
                Err(e) => {
                    tracing::warn!(link = %id, error = %e, "cannot delete an orphan document")
                }
            }
        }
        expired?;
        let before = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        purged.tombstones = self.store.purge_links(before).await?;
        // Spent budgets of wrong passwords: bookkeeping, not reported.
        self.store.purge_guesses(now).await?;
        Ok(purged)
    }

    async fn active(&self, token: &str) -> Result<Result<LinkRecord, Lookup>, VaultError> {
        let Some(record) = self.store.link_by_token(&crypto::token_hash(token)).await? else {
            return Ok(Err(Lookup::Unknown));
        };
        // The purge runs every minute or so: expiry is checked here too, to
        // the millisecond.
        if record.state != LinkState::Active || record.expires_at <= now_ms() {
            return Ok(Err(Lookup::Gone { id: record.id }));
        }
        Ok(Ok(record))
    }
}

impl super::Documents for Vault {
    fn lookup(&self, token: &str) -> BoxFuture<'_, Result<Lookup, VaultError>> {
        let token = token.to_owned();
        Box::pin(async move {
            Ok(match self.active(&token).await? {
                Ok(record) => Lookup::Active(view(&record)),
                Err(other) => other,
            })
        })
    }

    fn open(
        &self,
        token: &str,
        password: Option<&str>,
    ) -> BoxFuture<'_, Result<Opened, VaultError>> {
        let token = token.to_owned();
        let password = password.filter(|p| !p.is_empty()).map(str::to_owned);
        Box::pin(async move {
            let record = match self.active(&token).await? {
                Ok(record) => record,
                Err(Lookup::Gone { id }) => return Ok(Opened::Gone { id }),
                Err(_) => return Ok(Opened::Unknown),
            };
            let view = view(&record);
            if record.protected && password.is_none() {
                return Ok(Opened::WrongPassword { view });
            }
            let Some(file) = self
                .files
                .get(&record.id)
                .await
                .map_err(|e| file_error(&record.id, e))?
            else {
                return Err(VaultError::File {
                    id: record.id,
                    cause: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the document file is missing",
                    ),
                });
            };
            let pw = if record.protected { password } else { None };
            let pw = password_key(pw, &record.salt, &record.id).await?;
            let salt = record.salt.clone();
            let opened = tokio::task::spawn_blocking(move || {
                DocumentKey::derive(&token, pw.as_ref(), &salt)?.open(file)
            })
            .await
            .map_err(|_| VaultError::Damaged(record.id.clone()))?;
            match opened {
                Ok(data) => Ok(Opened::Document { view, data }),
                Err(CryptoError::WrongKey) => Ok(Opened::WrongPassword { view }),
                Err(CryptoError::Damaged | CryptoError::Format) => {
                    Err(VaultError::Damaged(record.id))
                }
                Err(e) => Err(crypto_error(&record.id, e)),
            }
        })
    }

    fn take_guess(
        &self,
        link_id: &str,
        client: IpAddr,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<Result<(), Duration>, VaultError>> {
        let (id, client) = (link_id.to_owned(), client.to_string());
        Box::pin(async move {
            Ok(self
                .store
                .take_guess(&id, &client, policy, now_ms())
                .await?)
        })
    }

    fn give_back_guess(
        &self,
        link_id: &str,
        client: IpAddr,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<(), VaultError>> {
        let (id, client) = (link_id.to_owned(), client.to_string());
        Box::pin(async move { Ok(self.store.give_back_guess(&id, &client, policy).await?) })
    }

    fn record(
        &self,
        link_id: &str,
        outcome: DownloadOutcome,
        ip: Option<IpAddr>,
    ) -> BoxFuture<'_, Result<(), VaultError>> {
        let id = link_id.to_owned();
        crate::metrics::link_download(outcome.as_str());
        Box::pin(async move {
            let notice = self
                .store
                .record_download(&id, outcome.as_str(), ip.map(|ip| ip.to_string()))
                .await?;
            if let (Some(notice), Some(hook)) = (notice, &self.notice) {
                hook(notice);
            }
            Ok(())
        })
    }
}
