//! The embedded store: SQLite in WAL mode, `synchronous = FULL`.
//!
//! Why SQLite rather than redb: the admin CLI (`schleuse queue …`) must work
//! while the gateway runs, from another process; SQLite's file locking makes
//! that safe, redb allows one process per file. WAL gives readers a snapshot
//! while the writer commits, and `synchronous = FULL` fsyncs the WAL on every
//! commit, which is what "250 only after fsync" needs.
//!
//! Group commit: every write goes to one writer thread. It takes the first
//! job, then whatever else is already waiting (up to [`MAX_BATCH`]), runs each
//! in its own savepoint inside one transaction, commits once, and only then
//! answers all of them. Under load one fsync covers many messages; a lone
//! message is committed at once, with no added delay.
//!
//! Reads (due, content, list) use a separate connection so a large message
//! being loaded never stalls commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::pseudonym::Pseudonymizer;
use super::{BoxFuture, StoreError};

mod limits;
mod links;
mod liveness;
mod log;
mod queue;
mod suppression;

/// Upper bound of jobs per transaction: keeps one batch's latency bounded.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL,
    account      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    finished_at  INTEGER,
    note         TEXT,
    dsn_to       TEXT
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(state, next_attempt, seq);
CREATE TABLE IF NOT EXISTS recipients (
    message_seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    address     TEXT NOT NULL,
    state       TEXT NOT NULL,
    reply       TEXT,
    PRIMARY KEY (message_seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contents (
    message_seq INTEGER PRIMARY KEY REFERENCES messages(seq) ON DELETE CASCADE,
    data        BLOB NOT NULL
);
-- One row, rewritten by every readiness check: proof that a commit works.
CREATE TABLE IF NOT EXISTS ping (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
";

/// What a writer job hands back: whether its statements succeeded (and if
/// not, why, for the rest of its batch), and the callback that answers the
/// caller once the batch's commit is known.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn WriteJob>;

trait WriteJob: Send {
    /// Runs the statements; the answer waits for the batch's commit.
    fn run(self: Box<Self>, conn: &Connection) -> (Result<(), BatchFailure>, Done);
    /// Answers without running: the batch could not even start.
    fn fail(self: Box<Self>, failure: BatchFailure);
}

struct Write<T, F> {
    f: F,
    answer: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Result<(), BatchFailure>, Done) {
        let Write { f, answer } = *self;
        let result = f(conn);
        let status = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(BatchFailure::of_store(e)),
        };
        let done: Done = Box::new(move |commit| {
            let _ = answer.send(commit.and(result));
        });
        (status, done)
    }

    fn fail(self: Box<Self>, failure: BatchFailure) {
        let _ = self.answer.send(Err(failure.into_error()));
    }
}

/// A SQLite failure ([`StoreError::Db`]). Opaque, so that no caller depends
/// on rusqlite's types; it reads, causes and all, as rusqlite's error does.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SqliteError(rusqlite::Error);

impl SqliteError {
    /// `SQLITE_FULL`: the disk or the file-size limit is reached.
    pub fn is_out_of_space(&self) -> bool {
        out_of_space(&self.0)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(SqliteError(e))
    }
}

/// `SQLITE_FULL`: the disk or the file-size limit is reached.
fn out_of_space(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
}

/// Why a batch failed, given to every job in it: the real cause ("database
/// is locked", "database or disk is full"), never just "shut down".
#[derive(Debug, Clone)]
struct BatchFailure {
    out_of_space: bool,
    text: String,
}

impl BatchFailure {
    fn of(e: &rusqlite::Error) -> BatchFailure {
        BatchFailure {
            out_of_space: out_of_space(e),
            text: e.to_string(),
        }
    }

    fn of_store(e: &StoreError) -> BatchFailure {
        BatchFailure {
            out_of_space: e.is_out_of_space(),
            text: e.to_string(),
        }
    }

    fn into_error(self) -> StoreError {
        if self.out_of_space {
            StoreError::NoSpace(self.text)
        } else {
            StoreError::Commit(self.text)
        }
    }
}

pub struct SqliteStore {
    jobs: Mutex<mpsc::Sender<Job>>,
    reader: Arc<Mutex<Connection>>,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoint_stop: mpsc::Sender<()>,
    path: PathBuf,
    pseudonyms: Pseudonymizer,
    /// `log_recipients = "clear"`: keep recipients in clear once final.
    clear_recipients: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) `DATA_DIR/queue.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        super::private::private_dir(data_dir).map_err(|cause| StoreError::Io {
            path: data_dir.to_owned(),
            cause,
        })?;
        let path = data_dir.join("queue.db");
        // A database from before files were private: SQLite gives its WAL
        // and shared-memory files the database file's mode.
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            super::private::private_file(Path::new(&name)).map_err(|cause| StoreError::Io {
                path: PathBuf::from(&name),
                cause,
            })?;
        }
        let writer = open_connection(&path)?;
        writer.execute_batch(SCHEMA)?;
        writer.execute_batch(links::SCHEMA)?;
        writer.execute_batch(log::SCHEMA)?;
        writer.execute_batch(suppression::SCHEMA)?;
        writer.execute_batch(limits::SCHEMA)?;
        migrate(&writer)?;
        let pseudonyms = Pseudonymizer::load_or_create(data_dir).map_err(|e| StoreError::Io {
            path: data_dir.join(super::pseudonym::KEY_FILE),
            cause: std::io::Error::other(e.to_string()),
        })?;
        let reader = open_connection(&path)?;
        let checkpointer = open_connection(&path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let spawn_err = |cause| StoreError::Io {
            path: path.clone(),
            cause,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(spawn_err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(spawn_err)?;
        Ok(SqliteStore {
            jobs: Mutex::new(tx),
            reader: Arc::new(Mutex::new(reader)),
            _checkpoint_stop: stop,
            path,
            pseudonyms,
            clear_recipients: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next batch and resolves after the commit.
    fn write<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(Write { f, answer: tx });
        let sent = self
            .jobs
            .lock()
            .map_err(|_| StoreError::Closed)
            .and_then(|jobs| jobs.send(job).map_err(|_| StoreError::Closed));
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Runs a read on the reader connection in a blocking thread.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| StoreError::Closed)?;
                f(&conn)
            })
            .await
            .map_err(|_| StoreError::Closed)?
        })
    }
}

/// Columns added after a database may already exist: added in place, so an
/// upgrade keeps the queue.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for column in ["note", "dsn_to"] {
        let has = conn
            .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL + FULL: every commit fsyncs the log before returning.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted message content is overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    // No connection checkpoints on commit: that would stall the group
    // commit (and every waiting 250) for the length of a database fsync.
    // The checkpoint thread does it beside the writer instead.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// WAL frames (pages) after which the log is truncated even under load.
const WAL_TRUNCATE_FRAMES: i64 = 16_384;

/// PASSIVE checkpoints run concurrently with the writer (they never take
/// the write lock), so commits keep their latency. Once one has caught up,
/// a TRUNCATE empties the log file (a writer waits for that only briefly). Under unbroken
/// load it never catches up, so past [`WAL_TRUNCATE_FRAMES`] (64 MB at 4 KB
/// pages) one TRUNCATE checkpoint briefly waits for the writer: a rare
/// latency bump instead of an ever-growing file.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    let mut trouble = CheckpointTrouble::default();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        let result = match passive {
            // Caught up (the queue is idle or between bursts): empty the
            // log file too. Its old frames hold delivered messages, link
            // tokens included, which must not outlive the delivery on disk.
            Ok((frames, done)) if frames > 0 && frames == done => {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            }
            Ok((frames, _)) if frames > WAL_TRUNCATE_FRAMES => {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            }
            other => other.map(|_| ()),
        };
        trouble.note(result.err());
    }
}

/// How often a lasting checkpoint failure is logged again.
const CHECKPOINT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Checkpoint failures as the log tells them: a full disk makes every
/// checkpoint fail, twice a second, and one line a minute says as much.
#[derive(Default)]
struct CheckpointTrouble {
    /// Failures since the last line, and when that line was written.
    failing: Option<(u64, std::time::Instant)>,
}

impl CheckpointTrouble {
    fn note(&mut self, error: Option<rusqlite::Error>) {
        match (error, &mut self.failing) {
            (None, None) => {}
            (None, Some(_)) => {
                self.failing = None;
                tracing::info!("store: WAL checkpoints work again");
            }
            (Some(e), None) => {
                self.failing = Some((0, std::time::Instant::now()));
                tracing::warn!(error = %e, "store: WAL checkpoint failed (repeated failures are logged once a minute)");
            }
            (Some(e), Some((count, logged))) => {
                *count += 1;
                if logged.elapsed() >= CHECKPOINT_LOG_EVERY {
                    tracing::warn!(error = %e, failures = *count, "store: WAL checkpoints still failing");
                    *count = 0;
                    *logged = std::time::Instant::now();
                }
            }
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Nothing of the batch runs; every caller learns why (the session
        // answers 451 or 452, delivery keeps its outcome for later).
        let failure = BatchFailure::of(&e);
        tracing::debug!(error = %e, jobs = batch.len(), "store: cannot begin a transaction");
        batch.into_iter().for_each(|j| j.fail(failure.clone()));
        return;
    }
    let mut dones = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            // Without a savepoint a failing job could not be undone alone:
            // leave it unrun, its caller gets the error.
            job.fail(BatchFailure::of(&e));
            continue;
        }
        let (status, done) = job.run(conn);
        let end = if status.is_ok() {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::debug!(error = %e, "store: cannot end savepoint");
        }
        dones.push(done);
        if conn.is_autocommit() {
            // Some errors (disk full, I/O) make SQLite roll back the whole
            // transaction. Then nothing of this batch is stored: answer every
            // job run so far with the error that did it, and run none of the
            // rest.
            let failure = status.err().unwrap_or_else(|| BatchFailure {
                out_of_space: false,
                text: "the transaction was rolled back by the database".into(),
            });
            for d in dones {
                d(Err(failure.clone().into_error()));
            }
            jobs.for_each(|j| j.fail(failure.clone()));
            tracing::debug!(error = %failure.text, "store: transaction rolled back mid-batch");
            return;
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => dones.into_iter().for_each(|d| d(Ok(()))),
        Err(e) => {
            tracing::debug!(error = %e, "store: commit failed, batch rolled back");
            let _ = conn.execute_batch("ROLLBACK");
            let failure = BatchFailure::of(&e);
            for d in dones {
                d(Err(failure.clone().into_error()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptUpdate, NewMessage, QueueStats, QueueStore, RecipientState, now_ms};

    pub(super) fn msg(n: usize) -> NewMessage {
        NewMessage {
            id: crate::store::new_queue_id(),
            account: "via".into(),
            sender: "a@landkreis.example".into(),
            recipients: vec![format!("r{n}@example.org"), "x@example.org".into()],
            content: format!("Subject: {n}\r\n\r\nbody\r\n").into_bytes(),
            held: false,
            ..NewMessage::default()
        }
    }

    #[test]
    fn sqlite_errors_read_as_rusqlite_says_them() {
        let full = || rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(13), None);
        let text = full().to_string();
        let e = StoreError::from(full());
        assert_eq!(e.to_string(), format!("database: {text}"));
        assert!(e.is_out_of_space());
        let source = std::error::Error::source(&e).expect("the cause");
        assert_eq!(source.to_string(), text);
        let other = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
        assert_eq!(other.to_string(), "database: Query returned no rows");
        assert!(!other.is_out_of_space());
    }

    #[tokio::test]
    async fn concurrent_enqueues_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let mut tasks = Vec::new();
        for n in 0..50 {
            let s = Arc::clone(&store);
            tasks.push(tokio::spawn(async move { s.enqueue(msg(n)).await }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("join").expect("enqueue"));
        }
        drop(store);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let listed = store.list().await.expect("list");
        assert_eq!(listed.len(), 50);
        for id in &ids {
            let content = store.content(id).await.expect("content");
            assert!(content.is_some());
        }
    }

    #[tokio::test]
    async fn ping_writes_and_stats_count_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store.ping().await.expect("ping");
        store.ping().await.expect("ping again (one row, replaced)");
        assert_eq!(store.stats().await.expect("stats"), QueueStats::default());
        let before = now_ms();
        let a = store.enqueue(msg(1)).await.expect("enqueue");
        store.enqueue(msg(2)).await.expect("enqueue");
        let c = store.enqueue(msg(3)).await.expect("enqueue");
        store.hold(&c).await.expect("hold");
        let stats = store.stats().await.expect("stats");
        assert_eq!((stats.queued, stats.held), (2, 1));
        let oldest = stats.oldest_queued_at.expect("oldest");
        assert!(oldest >= before && oldest <= now_ms(), "{oldest}");
        let update = AttemptUpdate {
            expected_attempts: 0,
            recipients: vec![
                (
                    "r1@example.org".into(),
                    RecipientState::Delivered,
                    "250".into(),
                ),
                (
                    "x@example.org".into(),
                    RecipientState::Delivered,
                    "250".into(),
                ),
            ],
            next_attempt: None,
            error: None,
            bounce_notice: None,
        };
        store.record_attempt(&a, update).await.expect("attempt");
        let stats = store.stats().await.expect("stats");
        assert_eq!(
            (stats.queued, stats.held),
            (1, 1),
            "delivered ones are not counted"
        );
    }

    #[tokio::test]
    async fn wal_is_checkpointed_beside_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        for n in 0..20 {
            let mut m = msg(n);
            m.content.extend(std::iter::repeat_n(b'x', 10_000));
            store.enqueue(m).await.expect("enqueue");
        }
        // No connection checkpoints on commit; only the checkpoint thread
        // moves the ~200 KB from the WAL into the database file.
        let db = dir.path().join("queue.db");
        let copied = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::fs::metadata(&db).is_ok_and(|m| m.len() > 200_000)
        });
        assert!(
            copied,
            "the WAL was never checkpointed into {}",
            db.display()
        );
        assert_eq!(store.list().await.expect("list").len(), 20);
    }
}
