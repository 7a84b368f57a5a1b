//! `schleuse store migrate --from OLD.toml`: takes one gateway's state
//! along when a county moves from the embedded store to several instances
//! (SPEC §11): from SQLite and document files under `data_dir` to the
//! PostgreSQL database and the document store (an S3 bucket, or another
//! directory) that `--config` names.
//!
//! # What moves
//!
//! Every row of the embedded store, as it is: messages (ids, states,
//! times, attempt counts, `next_attempt`, last errors, notes) with their
//! recipients (states, replies), attempt log and — while queued or held —
//! contents; links (token hashes, salts, states, expiry, notify address,
//! password flag, download counts) and their download log; the suppression
//! list; the relay's events (their keys de-duplicate Mailjet's retries);
//! limit counters (into shard 0 of the sharded PostgreSQL table); bans.
//! SQLite's `seq` keys become new PostgreSQL `seq`s, assigned in the old
//! order, and recipients and attempts follow their message. No lease is
//! set: the first instance to start delivers the queue.
//!
//! The delivery log's pseudonym key (`data_dir/log.key`) replaces the one
//! in the target's `settings` table (which opening the target may have just
//! created): without it `gdpr export` could no longer match the old log.
//!
//! Every document the source document store lists is copied, bytes
//! unchanged: they are ciphertext under a key derived from the link token
//! and salt, which both move with the link row.
//!
//! # Safety
//!
//! - **The source is only read.** SQLite is opened read-only and read in
//!   one transaction (a consistent snapshot, also of a database a killed
//!   gateway left with its WAL; a cleanly closed one is opened so that not
//!   even SQLite's empty companion files appear, see `source`); the key
//!   file is read, never created; a missing document directory counts as
//!   empty. The gateway on the old config must be stopped all the same:
//!   mail it accepted or delivered after the snapshot would be lost or
//!   sent twice (one that opens the database during the migration is
//!   noticed where it can be, and the transaction is not committed).
//! - **A fresh target only.** A target holding any message, link or relay
//!   event is refused before anything is written (relay events count
//!   because they are pseudonymised under the target's own key, which is
//!   about to be replaced).
//! - **All or nothing.** The documents are copied first, then every row
//!   goes into one PostgreSQL transaction, which locks `messages` and
//!   `links` against writers, checks again that they are empty, and
//!   commits last. A committed link therefore never lacks its document; a
//!   failure leaves the database as it was and at most copied documents
//!   without rows, which the gateways' purge deletes after an hour, or
//!   the next run overwrites.
//! - **Bounded memory.** Rows are read and written in batches of
//!   [`BATCH`] (keyset pagination inside the one read transaction);
//!   message contents and documents one at a time.
//!
//! # Limits
//!
//! Rows move only from the embedded store to PostgreSQL. Between two
//! embedded stores, copy the data directory; between two databases, use
//! `pg_dump`; back from PostgreSQL to SQLite is not supported. When both
//! configs name the same store, only the documents are copied.

mod plan;
mod source;
mod target;

pub use plan::{Plan, describe_store, plan};

use std::path::PathBuf;

use super::StoreError;
use super::document_files::{self, DocumentError, DocumentFiles, LocalFiles};
use super::pseudonym::PseudonymError;
use crate::config::{Config, DocumentBackend};

/// Rows per read from SQLite and per `INSERT` into PostgreSQL.
pub const BATCH: usize = 500;

/// The embedded store's database file under `data_dir` (as
/// `SqliteStore::open` names it; a test below opens one to keep them in
/// step).
const SQLITE_FILE: &str = "queue.db";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Unsupported(String),
    #[error("nothing to migrate: both configs name the same store and the same document store")]
    NothingToDo,
    #[error("no embedded store at {0} (is --from the old gateway's config, with its data_dir?)")]
    NoSource(PathBuf),
    #[error("{path}: not a schleuse store (no messages table)")]
    NotAStore { path: PathBuf },
    #[error("reading the old store {path}: {cause}")]
    Source {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "{0} was opened by another process during the migration (the old gateway?): stop it \
         and run the migration again"
    )]
    SourceInUse(PathBuf),
    #[error("reading a message's content from the old store {path}: {cause}")]
    SourceContent {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("reading the old store's pseudonym key: {0}")]
    Key(#[from] PseudonymError),
    #[error("{0}")]
    Config(String),
    #[error("the new store: {0}")]
    Target(#[from] StoreError),
    #[error(
        "the new store already holds {messages} message(s), {links} link(s) and \
         {events} relay event(s): store migrate only fills a fresh database (nothing was written)"
    )]
    NotEmpty {
        messages: i64,
        links: i64,
        events: i64,
    },
    #[error(
        "the new database is in use (its tables stayed locked for {LOCK_WAIT}): stop every \
         gateway on the new config and run the migration again"
    )]
    TargetBusy,
    #[error("the old store's {what} {value} does not fit the new store")]
    OutOfRange { what: &'static str, value: i64 },
    #[error("reading the old documents: {0}")]
    OldDocuments(DocumentError),
    #[error("writing the new documents: {0}")]
    NewDocuments(DocumentError),
    #[error("{0}; rolled back, the new database is as it was")]
    RolledBack(Box<MigrateError>),
    #[error(
        "committing to the new store: {0}; whether it committed is unknown: run the migration \
         again (it refuses if the rows arrived)"
    )]
    Commit(StoreError),
}

/// How long the transaction waits for the target's tables to be free.
const LOCK_WAIT: &str = "10s";

/// What the command says as it goes (SPEC §10: long admin commands show
/// progress); the caller prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Every check passed (the old store opened, the new one is empty);
    /// copying begins.
    Started,
    /// A step finished: `step: text`, e.g. `messages: 1200 (3 queued, 1 held)`.
    Done { step: &'static str, text: String },
    /// Part of a long step is done.
    Running {
        step: &'static str,
        done: u64,
        total: u64,
    },
}

/// What was moved, for the closing line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Whether store rows were copied (not when both configs share a store).
    pub rows: bool,
    pub messages: u64,
    /// Of `messages`, those still to be delivered.
    pub queued: u64,
    pub held: u64,
    pub links: u64,
    pub documents: u64,
    /// Whether the old pseudonym key now is the new store's.
    pub key: bool,
}

/// Runs the migration `plan(from, to)` calls for, telling `progress` as
/// it goes.
pub async fn run(
    from: &Config,
    to: &Config,
    progress: &mut dyn FnMut(Event),
) -> Result<Summary, MigrateError> {
    let plan = plan(from, to)?;
    let mut summary = Summary::default();
    // Everything that can refuse comes before the first write: the old
    // store must open, the new one must be empty.
    let prepared = if plan.rows {
        let snapshot = source::Snapshot::open(&from.server.data_dir.join(SQLITE_FILE))?;
        let key = super::pseudonym::Pseudonymizer::read_key(&from.server.data_dir)?;
        let target = target::Target::open(to).await?;
        target.check_empty().await?;
        Some((snapshot, key, target))
    } else {
        None
    };
    progress(Event::Started);
    if !plan.rows {
        progress(Event::Done {
            step: "store",
            text: format!(
                "both configs name the same store ({}): no rows to copy",
                describe_store(to)
            ),
        });
    }
    if plan.documents {
        summary.documents = copy_documents(from, to, progress).await?;
    } else {
        progress(Event::Done {
            step: "documents",
            text: format!(
                "both configs keep them in the same place ({}): nothing to copy",
                to.documents.describe(&to.server.data_dir)
            ),
        });
    }
    if let Some((snapshot, key, target)) = prepared {
        let rows = target.fill(&snapshot, key.as_deref(), progress).await?;
        summary.rows = true;
        summary.messages = rows.messages;
        summary.queued = rows.queued;
        summary.held = rows.held;
        summary.links = rows.links;
        summary.key = key.is_some();
    }
    Ok(summary)
}

/// Copies every document the old document store lists into the new one.
async fn copy_documents(
    from: &Config,
    to: &Config,
    progress: &mut dyn FnMut(Event),
) -> Result<u64, MigrateError> {
    let old: std::sync::Arc<dyn DocumentFiles> = match from.documents.backend {
        DocumentBackend::Local => {
            let dir = from.server.data_dir.join("documents");
            // Opening creates a missing directory: that would write to the
            // old data directory, and there is nothing to copy anyway.
            if !dir.is_dir() {
                progress(Event::Done {
                    step: "documents",
                    text: format!("none ({} does not exist)", dir.display()),
                });
                return Ok(0);
            }
            std::sync::Arc::new(LocalFiles::open(&dir).map_err(MigrateError::OldDocuments)?)
        }
        DocumentBackend::S3 => document_files::open(from).map_err(MigrateError::OldDocuments)?,
    };
    let new = document_files::open(to).map_err(MigrateError::NewDocuments)?;
    new.probe().await.map_err(MigrateError::NewDocuments)?;
    // An interrupted write is listed under its document's id too.
    let mut ids: Vec<String> = old
        .list()
        .await
        .map_err(MigrateError::OldDocuments)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids.dedup();
    let total = ids.len() as u64;
    let (mut copied, mut gone) = (0u64, 0u64);
    for id in &ids {
        match old.get(id).await.map_err(MigrateError::OldDocuments)? {
            Some(data) => {
                new.put(id, data)
                    .await
                    .map_err(MigrateError::NewDocuments)?;
                copied += 1;
            }
            // Only the temporary file of an interrupted write: no document.
            None => gone += 1,
        }
        let done = copied + gone;
        if done % 100 == 0 && done < total {
            progress(Event::Running {
                step: "documents",
                done,
                total,
            });
        }
    }
    let mut text = format!("{copied} copied");
    if gone > 0 {
        text.push_str(&format!(
            " ({gone} left out: only an interrupted write's temporary file)"
        ));
    }
    progress(Event::Done {
        step: "documents",
        text,
    });
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewMessage, QueueStore};

    fn message(id: &str, to: &str) -> NewMessage {
        NewMessage {
            id: id.into(),
            account: "via".into(),
            sender: "a@landkreis.example".into(),
            recipients: vec![to.into()],
            content: format!("Subject: {id}\r\n\r\nbody\r\n").into_bytes(),
            ..NewMessage::default()
        }
    }

    /// The reader opens what `SqliteStore` writes, sees a snapshot, and
    /// writes nothing; a missing database is not created.
    #[tokio::test]
    async fn the_old_store_is_read_as_one_snapshot_and_never_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::sqlite::SqliteStore::open(dir.path()).expect("open");
        for n in 0..(BATCH + 3) {
            store
                .enqueue(message(&format!("m{n:04}"), "eltern@example.org"))
                .await
                .expect("enqueue");
        }
        store.hold("m0001").await.expect("hold");
        // A copy taken while the store is open, WAL and all, is what a
        // killed gateway leaves behind.
        let copy = tempfile::tempdir().expect("tempdir");
        for name in ["queue.db", "queue.db-wal", "queue.db-shm", "log.key"] {
            let from = dir.path().join(name);
            if from.exists() {
                std::fs::copy(&from, copy.path().join(name)).expect("copy");
            }
        }
        // Beside the live store: what is written after the snapshot began
        // is not part of it.
        let live = source::Snapshot::open(&dir.path().join(SQLITE_FILE)).expect("snapshot");
        store
            .enqueue(message("late", "x@example.org"))
            .await
            .expect("enqueue");
        assert_eq!(
            live.message_counts().expect("counts").total,
            BATCH as u64 + 3
        );
        drop(live);
        drop(store);

        let db = copy.path().join(SQLITE_FILE);
        let before = std::fs::read(&db).expect("read");
        let snapshot = source::Snapshot::open(&db).expect("snapshot");
        let counts = snapshot.message_counts().expect("counts");
        assert_eq!(counts.total, BATCH as u64 + 3);
        assert_eq!((counts.queued, counts.held), (BATCH as u64 + 2, 1));
        let first = snapshot.messages_after(None, BATCH).expect("page");
        assert_eq!(first.len(), BATCH);
        let rest = snapshot
            .messages_after(first.last().map(|m| m.seq), BATCH)
            .expect("page");
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[2].id, format!("m{:04}", BATCH + 2));
        let seq = first[0].seq;
        let content = snapshot.content(seq).expect("content").expect("some");
        assert!(content.starts_with(b"Subject: m0000"));
        let recipients = snapshot.recipients_between(seq, seq).expect("rcpt");
        assert_eq!(recipients.len(), 1);
        assert_eq!(recipients[0].address, "eltern@example.org");
        drop(snapshot);
        assert_eq!(std::fs::read(&db).expect("read"), before, "unchanged");
        assert!(
            crate::store::pseudonym::Pseudonymizer::read_key(copy.path())
                .expect("key")
                .is_some()
        );

        // Closed cleanly (no WAL files): read without creating any, and a
        // process that opens it meanwhile is noticed.
        let clean_dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::sqlite::SqliteStore::open(clean_dir.path()).expect("open");
        store
            .enqueue(message("only", "x@example.org"))
            .await
            .expect("enqueue");
        drop(store);
        let clean = clean_dir.path().join(SQLITE_FILE);
        let closed = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            !clean_dir.path().join("queue.db-wal").exists()
        });
        assert!(closed, "the store's threads closed the database");
        let snapshot = source::Snapshot::open(&clean).expect("snapshot");
        assert_eq!(snapshot.message_counts().expect("counts").total, 1);
        let listed = |dir: &std::path::Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .expect("read dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(listed(clean_dir.path()), ["log.key", SQLITE_FILE]);
        snapshot.still_alone().expect("nobody else opened it");
        let other = crate::store::sqlite::SqliteStore::open(clean_dir.path()).expect("open");
        assert!(matches!(
            snapshot.still_alone(),
            Err(MigrateError::SourceInUse(_))
        ));
        drop(other);

        let empty = tempfile::tempdir().expect("tempdir");
        let missing = empty.path().join(SQLITE_FILE);
        assert!(matches!(
            source::Snapshot::open(&missing),
            Err(MigrateError::NoSource(_))
        ));
        assert!(!missing.exists(), "a missing store is not created");
        assert!(
            crate::store::pseudonym::Pseudonymizer::read_key(empty.path())
                .expect("no key")
                .is_none()
        );
        assert!(!empty.path().join("log.key").exists());
    }
}
