//! The storage seam (SPEC §11): everything the gateway must not lose.
//!
//! [`Store`] is the one interface the queue, the delivery workers and the
//! admin commands use. The embedded default is [`sqlite::SqliteStore`] (one
//! database file in WAL mode under `data_dir`); [`postgres::PostgresStore`]
//! serves several active instances from one PostgreSQL database. [`open`]
//! picks the one `[store] backend` names.
//!
//! Contract every backend keeps:
//! - [`QueueStore::enqueue`] returns only once the message is durable
//!   (fsync'd): the SMTP `250` depends on it.
//! - Concurrent enqueues are committed together (group commit), so durability
//!   costs one fsync per batch, not per message.
//! - Message content is deleted as soon as a message reaches a final state
//!   (delivered or bounced); the metadata row stays for the delivery log.
//! - `tests/store_suite.rs` runs the same tests against every backend.
//!
//! [`Store`] is the union of one trait per concern, each next to the types
//! it speaks: [`queue`] ([`QueueStore`]), [`links`] ([`LinkStore`]),
//! [`log`] ([`LogStore`]), [`suppression`] ([`SuppressionStore`]) and
//! [`limits`] ([`LimitStore`]). Each backend implements each of them in a
//! file of its own (`sqlite/queue.rs`, `postgres/links.rs`, …).

pub mod document_files;
pub mod guesses;
pub mod limits;
pub mod links;
pub mod log;
pub mod migrate;
pub mod objects;
pub mod postgres;
pub mod private;
pub mod pseudonym;
pub mod queue;
pub mod sqlite;
pub mod suppression;

pub use limits::LimitStore;
pub use links::{DownloadNotice, LinkRecord, LinkState, LinkStore, NewLink};
pub use log::{
    AfterErase, Erased, LogStore, SubjectAttempt, SubjectDownload, SubjectMessage, SubjectRecords,
};
pub use queue::{
    AttemptUpdate, MessageInfo, MessageState, NewMessage, QueueId, QueueStats, QueueStore,
    RecipientInfo, RecipientState, dsn_to_column, dsn_to_of, new_queue_id,
};
pub use suppression::SuppressionStore;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlite::SqliteError),
    #[error("cannot create {path}: {cause}")]
    Io {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read message content: {0}")]
    ContentRead(std::io::Error),
    #[error("no queued message with id {0}")]
    NotFound(String),
    #[error("no link with id {0}")]
    LinkNotFound(String),
    #[error("message {id} is {state}, not {expected}")]
    WrongState {
        id: String,
        state: MessageState,
        expected: &'static str,
    },
    #[error("message {0} was changed by another attempt")]
    Conflict(String),
    #[error("commit failed: {0}")]
    Commit(String),
    /// The disk (or the database's quota) is full: nothing was written.
    #[error("no space left to store: {0}")]
    NoSpace(String),
    #[error("the store has shut down")]
    Closed,
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::PgError),
}

impl StoreError {
    /// Whether the store failed for want of space (SMTP's `452 4.3.1`
    /// rather than a generic temporary failure).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::NoSpace(_) => true,
            StoreError::Db(e) => e.is_out_of_space(),
            StoreError::Io { cause, .. } | StoreError::ContentRead(cause) => io_out_of_space(cause),
            StoreError::Postgres(e) => e.is_out_of_space(),
            _ => false,
        }
    }
}

/// `ENOSPC` (no space) or `EDQUOT` (quota exceeded).
pub fn io_out_of_space(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// The storage interface: every concern's trait, which each backend
/// implements in its own file; see the module docs for the contract.
pub trait Store:
    QueueStore + LinkStore + LogStore + SuppressionStore + LimitStore + Send + Sync + 'static
{
}

impl<T> Store for T where
    T: QueueStore
        + LinkStore
        + LogStore
        + SuppressionStore
        + LimitStore
        + Send
        + Sync
        + 'static
        + ?Sized
{
}

/// Opens the store `[store] backend` names (creating or migrating its
/// schema): the one constructor the gateway and the admin commands use.
pub async fn open(config: &crate::config::Config) -> Result<Arc<dyn Store>, StoreError> {
    use crate::config::StoreBackend;
    match config.store.backend {
        StoreBackend::Embedded => {
            let store = sqlite::SqliteStore::open(&config.server.data_dir)?;
            tracing::info!(
                db = %store.path().display(),
                "queue store opened (SQLite, WAL, fsync per commit)"
            );
            Ok(Arc::new(store))
        }
        StoreBackend::Postgres => {
            let url = config
                .store
                .url()
                .map_err(|e| postgres::PgError::url(e.to_string()))?;
            let store = postgres::PostgresStore::open(&postgres::PgOptions {
                url,
                pool_size: config.store.pool_size,
                lease_time: config.store.lease_time,
                ca_file: config.store.ca_file.clone(),
                instance: None,
            })
            .await?;
            tracing::info!(
                instance = %store.instance(),
                lease_time = ?config.store.lease_time,
                "queue store opened (PostgreSQL, synchronous_commit on)"
            );
            Ok(Arc::new(store))
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
